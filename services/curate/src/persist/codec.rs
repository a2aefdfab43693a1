//! The binary encoding of the state files: what a journal entry records (the inputs of a cycle
//! and its cycle ends) and how a snapshot stores held trades.
//!
//! Integers are LEB128 varints (signed ones zigzag-encoded), strings are length-prefixed UTF-8;
//! times are stored as differences (event time from the previous record's, receive time from
//! the event time) and trade keys front-coded against the previous key, which is what makes a
//! journaled trade ~35 bytes rather than the ~500 of its JSON. Frames carry a CRC-32 so a torn
//! write is told from a good entry. Decoding never trusts a length: every read is
//! bounds-checked and a malformed file is an error, never a panic.

use foldhash::HashMap;

use marketlake_schemas::l2::{Lineage, NewsRow, TradeAction, TradeRow};

use crate::fill::{Fill, FillOrder, Px, SharedStr};
use crate::state::CycleEnd;
use crate::{CurateError, Result};

/// CRC-32 (IEEE 802.3, reflected), the checksum of every frame.
pub(crate) fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc = CRC_TABLE[usize::from((crc as u8) ^ b)] ^ (crc >> 8);
    }
    !crc
}

const CRC_TABLE: [u32; 256] = crc_table();

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

fn malformed(what: &str) -> CurateError {
    CurateError::State(format!("malformed state data: {what}"))
}

/// An append-only byte buffer with the primitive encodings.
#[derive(Debug, Default, Clone)]
pub(crate) struct Enc {
    buf: Vec<u8>,
}

impl Enc {
    pub fn with_capacity(capacity: usize) -> Self {
        Enc {
            buf: Vec::with_capacity(capacity),
        }
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }

    pub fn into_inner(self) -> Vec<u8> {
        self.buf
    }

    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub fn uvar(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    pub fn usize(&mut self, v: usize) {
        self.uvar(v as u64);
    }

    /// Zigzag: small magnitudes of either sign take few bytes.
    pub fn ivar(&mut self, v: i64) {
        self.uvar((v.wrapping_shl(1) ^ (v >> 63)) as u64);
    }

    pub fn bytes(&mut self, bytes: &[u8]) {
        self.usize(bytes.len());
        self.buf.extend_from_slice(bytes);
    }

    pub fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    pub fn opt_str(&mut self, s: Option<&str>) {
        match s {
            None => self.u8(0),
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
        }
    }

    pub fn opt_ivar(&mut self, v: Option<i64>) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                self.ivar(v);
            }
        }
    }

    /// `key` as (bytes shared with `prev`, the rest), then `prev` becomes `key`.
    fn front_coded(&mut self, prev: &mut String, key: &str) {
        let mut shared = prev
            .bytes()
            .zip(key.bytes())
            .take_while(|(a, b)| a == b)
            .count();
        // Cut on a character boundary so the suffix is valid UTF-8 on its own.
        while !key.is_char_boundary(shared) {
            shared -= 1;
        }
        self.usize(shared);
        self.str(&key[shared..]);
        prev.clear();
        prev.push_str(key);
    }
}

/// A bounds-checked reader over encoded bytes.
#[derive(Debug)]
pub(crate) struct Dec<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Dec<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Dec { buf, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// Fails unless every byte was read.
    pub fn finish(&self, what: &str) -> Result<()> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(malformed(&format!(
                "{} bytes left over after {what}",
                self.buf.len() - self.pos
            )))
        }
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or_else(|| malformed("truncated"))?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    pub fn uvar(&mut self) -> Result<u64> {
        let mut v = 0u64;
        let mut shift = 0u32;
        loop {
            let b = self.u8()?;
            if shift == 63 && b > 1 {
                return Err(malformed("varint overflows 64 bits"));
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
            shift += 7;
            if shift > 63 {
                return Err(malformed("varint longer than 10 bytes"));
            }
        }
    }

    pub fn usize(&mut self) -> Result<usize> {
        usize::try_from(self.uvar()?).map_err(|_| malformed("length out of range"))
    }

    /// A count of items each at least one byte long: refuses counts the input cannot hold, so a
    /// corrupt count never reserves absurd memory.
    pub fn count(&mut self) -> Result<usize> {
        let n = self.usize()?;
        if n > self.buf.len() - self.pos {
            return Err(malformed("count larger than the data"));
        }
        Ok(n)
    }

    pub fn ivar(&mut self) -> Result<i64> {
        let u = self.uvar()?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }

    pub fn i32(&mut self) -> Result<i32> {
        i32::try_from(self.ivar()?).map_err(|_| malformed("32-bit value out of range"))
    }

    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.usize()?;
        self.take(n)
    }

    pub fn str(&mut self) -> Result<&'a str> {
        std::str::from_utf8(self.bytes()?).map_err(|_| malformed("string is not UTF-8"))
    }

    pub fn string(&mut self) -> Result<String> {
        Ok(self.str()?.to_string())
    }

    pub fn opt_string(&mut self) -> Result<Option<String>> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.string()?)),
            _ => Err(malformed("bad option tag")),
        }
    }

    pub fn opt_ivar(&mut self) -> Result<Option<i64>> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.ivar()?)),
            _ => Err(malformed("bad option tag")),
        }
    }

    /// The inverse of [`Enc::front_coded`].
    fn front_coded(&mut self, prev: &mut String) -> Result<()> {
        let shared = self.usize()?;
        let suffix = self.str()?;
        if shared > prev.len() || !prev.is_char_boundary(shared) {
            return Err(malformed(
                "front-coded key shares more than the previous key",
            ));
        }
        prev.truncate(shared);
        prev.push_str(suffix);
        Ok(())
    }
}

const OP_TRADE: u8 = 1;
const OP_NEWS: u8 = 2;
const OP_END: u8 = 3;

const END_IDLE: u8 = 1;
const END_FINAL: u8 = 2;

/// One recorded step of the curator.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Op {
    Trade(TradeRow),
    News(NewsRow),
    End(CycleEnd),
}

/// The inputs and cycle ends since the last journal entry, encoded as they happen (so the save
/// at the end of a cycle only copies bytes). Strings that repeat on every trade (symbol, source,
/// raw topic) go to a per-entry dictionary; only the fields the aggregators read are kept
/// (instrument master fields, flags, venue... never reach a bar or a window).
#[derive(Debug, Default, Clone)]
pub(crate) struct OpLog {
    dict: HashMap<String, u64>,
    names: Vec<String>,
    ops: Enc,
    count: u64,
    prev_event_ns: i64,
    prev_key: String,
}

fn action_code(action: TradeAction) -> u8 {
    match action {
        TradeAction::New => 0,
        TradeAction::Correct => 1,
        TradeAction::Cancel => 2,
    }
}

fn action_of(code: u8) -> Result<TradeAction> {
    match code {
        0 => Ok(TradeAction::New),
        1 => Ok(TradeAction::Correct),
        2 => Ok(TradeAction::Cancel),
        _ => Err(malformed("unknown trade action")),
    }
}

impl OpLog {
    /// Number of recorded steps.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Encoded size so far (dictionary excluded), for sizing buffers.
    pub fn encoded_len(&self) -> usize {
        self.ops.len()
    }

    fn intern(&mut self, s: &str) -> u64 {
        if let Some(&id) = self.dict.get(s) {
            return id;
        }
        let id = self.names.len() as u64;
        self.names.push(s.to_string());
        self.dict.insert(s.to_string(), id);
        id
    }

    pub fn trade(&mut self, t: &TradeRow) {
        let symbol = self.intern(&t.symbol);
        let source_id = self.intern(&t.lineage.source_id);
        let source_uri = self.intern(&t.lineage.source_uri);
        let raw_topic = self.intern(&t.lineage.raw_topic);
        let ops = &mut self.ops;
        ops.u8(OP_TRADE);
        ops.front_coded(&mut self.prev_key, &t.trade_key);
        ops.u8(action_code(t.action));
        ops.opt_str(t.supersedes.as_deref());
        ops.uvar(symbol);
        ops.ivar(t.event_time_ns.wrapping_sub(self.prev_event_ns));
        self.prev_event_ns = t.event_time_ns;
        ops.ivar(t.received_at_ns.wrapping_sub(t.event_time_ns));
        ops.ivar(t.price);
        ops.ivar(t.quantity);
        ops.uvar(source_id);
        ops.uvar(source_uri);
        ops.ivar(t.lineage.source_position);
        ops.uvar(raw_topic);
        ops.ivar(i64::from(t.lineage.raw_partition));
        ops.ivar(t.lineage.raw_offset);
        self.count += 1;
    }

    /// News is rare: plain strings, no dictionary.
    pub fn news(&mut self, n: &NewsRow) {
        let ops = &mut self.ops;
        ops.u8(OP_NEWS);
        ops.str(&n.news_key);
        ops.opt_ivar(n.published_at_ns);
        ops.ivar(n.received_at_ns);
        ops.usize(n.tickers.len());
        for ticker in &n.tickers {
            ops.str(ticker);
        }
        ops.str(&n.lineage.source_id);
        ops.str(&n.lineage.source_uri);
        ops.ivar(n.lineage.source_position);
        ops.str(&n.lineage.raw_topic);
        ops.ivar(i64::from(n.lineage.raw_partition));
        ops.ivar(n.lineage.raw_offset);
        self.count += 1;
    }

    pub fn end_cycle(&mut self, end: CycleEnd) {
        let mut flags = 0;
        if end.idle {
            flags |= END_IDLE;
        }
        if end.final_fire {
            flags |= END_FINAL;
        }
        self.ops.u8(OP_END);
        self.ops.u8(flags);
        self.ops.ivar(end.now_ns);
        self.count += 1;
    }

    /// Dictionary, step count, steps.
    pub fn encode(&self, out: &mut Enc) {
        out.usize(self.names.len());
        for name in &self.names {
            out.str(name);
        }
        out.uvar(self.count);
        out.bytes(self.ops.as_slice());
    }

    /// Decode what [`Self::encode`] wrote, handing each step to `apply` in order.
    pub fn replay(dec: &mut Dec<'_>, mut apply: impl FnMut(Op) -> Result<()>) -> Result<()> {
        let n = dec.count()?;
        let mut names = Vec::with_capacity(n);
        for _ in 0..n {
            names.push(dec.string()?);
        }
        let name = |id: u64| -> Result<String> {
            usize::try_from(id)
                .ok()
                .and_then(|i| names.get(i))
                .cloned()
                .ok_or_else(|| malformed("dictionary reference out of range"))
        };
        let count = dec.uvar()?;
        let mut ops = Dec::new(dec.bytes()?);
        let mut prev_event_ns = 0i64;
        let mut prev_key = String::new();
        for _ in 0..count {
            let op = match ops.u8()? {
                OP_TRADE => {
                    ops.front_coded(&mut prev_key)?;
                    let trade_key = prev_key.clone();
                    let action = action_of(ops.u8()?)?;
                    let supersedes = ops.opt_string()?;
                    let symbol = name(ops.uvar()?)?;
                    let event_time_ns = prev_event_ns.wrapping_add(ops.ivar()?);
                    prev_event_ns = event_time_ns;
                    let received_at_ns = event_time_ns.wrapping_add(ops.ivar()?);
                    let price = ops.ivar()?;
                    let quantity = ops.ivar()?;
                    let lineage = Lineage {
                        source_id: name(ops.uvar()?)?,
                        source_uri: name(ops.uvar()?)?,
                        source_position: ops.ivar()?,
                        raw_topic: name(ops.uvar()?)?,
                        raw_partition: ops.i32()?,
                        raw_offset: ops.ivar()?,
                    };
                    Op::Trade(TradeRow {
                        action,
                        supersedes,
                        received_at_ns,
                        ..TradeRow::bare(trade_key, symbol, price, quantity, event_time_ns, lineage)
                    })
                }
                OP_NEWS => {
                    let news_key = ops.string()?;
                    let published_at_ns = ops.opt_ivar()?;
                    let received_at_ns = ops.ivar()?;
                    let n = ops.count()?;
                    let mut tickers = Vec::with_capacity(n);
                    for _ in 0..n {
                        tickers.push(ops.string()?);
                    }
                    let lineage = Lineage {
                        source_id: ops.string()?,
                        source_uri: ops.string()?,
                        source_position: ops.ivar()?,
                        raw_topic: ops.string()?,
                        raw_partition: ops.i32()?,
                        raw_offset: ops.ivar()?,
                    };
                    Op::News(NewsRow {
                        news_key,
                        headline: String::new(),
                        body: None,
                        link: None,
                        publisher: None,
                        published_at_ns,
                        received_at_ns,
                        language: None,
                        tickers,
                        reference_version: None,
                        extra: Default::default(),
                        flags: Vec::new(),
                        lineage,
                    })
                }
                OP_END => {
                    let flags = ops.u8()?;
                    if flags & !(END_IDLE | END_FINAL) != 0 {
                        return Err(malformed("unknown cycle-end flags"));
                    }
                    Op::End(CycleEnd {
                        idle: flags & END_IDLE != 0,
                        final_fire: flags & END_FINAL != 0,
                        now_ns: ops.ivar()?,
                    })
                }
                _ => return Err(malformed("unknown journal step")),
            };
            apply(op)?;
        }
        ops.finish("the journal steps")
    }
}

/// Held trades of one window or history, in their order.
pub(crate) fn encode_fills(out: &mut Enc, fills: &[Fill]) {
    out.usize(fills.len());
    let mut prev_key = String::new();
    let mut prev_event_ns = 0i64;
    for Fill { order, px } in fills {
        out.front_coded(&mut prev_key, &order.trade_key);
        out.ivar(order.event_time_ns.wrapping_sub(prev_event_ns));
        prev_event_ns = order.event_time_ns;
        out.ivar(order.received_at_ns.wrapping_sub(order.event_time_ns));
        out.ivar(i64::from(order.raw_partition));
        out.ivar(order.raw_offset);
        out.ivar(px.price);
        out.ivar(px.quantity);
    }
}

pub(crate) fn decode_fills(dec: &mut Dec<'_>) -> Result<Vec<Fill>> {
    let n = dec.count()?;
    let mut fills = Vec::with_capacity(n);
    let mut prev_key = String::new();
    let mut prev_event_ns = 0i64;
    for _ in 0..n {
        dec.front_coded(&mut prev_key)?;
        let event_time_ns = prev_event_ns.wrapping_add(dec.ivar()?);
        prev_event_ns = event_time_ns;
        let order = FillOrder {
            event_time_ns,
            received_at_ns: event_time_ns.wrapping_add(dec.ivar()?),
            raw_partition: dec.i32()?,
            raw_offset: dec.ivar()?,
            trade_key: SharedStr::from(prev_key.as_str()),
        };
        let px = Px {
            price: dec.ivar()?,
            quantity: dec.ivar()?,
        };
        fills.push(Fill { order, px });
    }
    Ok(fills)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bars::tests::{edit, trade, T0};

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn varints_round_trip_at_the_edges() {
        let values = [0, 1, -1, 63, -64, 64, i64::MAX, i64::MIN, T0, -T0];
        let mut e = Enc::default();
        for v in values {
            e.ivar(v);
        }
        e.uvar(u64::MAX);
        let bytes = e.into_inner();
        let mut d = Dec::new(&bytes);
        for v in values {
            assert_eq!(d.ivar().unwrap(), v);
        }
        assert_eq!(d.uvar().unwrap(), u64::MAX);
        d.finish("test").unwrap();
        // Truncated and overlong inputs are errors, not panics.
        assert!(Dec::new(&[0x80]).uvar().is_err());
        assert!(Dec::new(&[0xff; 11]).uvar().is_err());
        assert!(Dec::new(&[5, b'a']).str().is_err());
        assert!(Dec::new(&[200]).count().is_err());
    }

    #[test]
    fn ops_round_trip_every_field_the_aggregators_read() {
        let mut t = trade("IBM", "fix-a:123", T0 + 5, 1_234_500_000, 10_000, 77);
        t.received_at_ns = T0 - 3;
        t.lineage.raw_partition = -2;
        t.lineage.source_position = 9;
        let mut u = trade("MSFT", "fix-a:124é", T0 - 1_000, -5, 1, 78);
        u.lineage.raw_topic = "raw.other".into();
        let c = edit(TradeAction::Cancel, "fix-a:1245", "fix-a:123", T0, 0, 0, 79);
        let news = NewsRow {
            news_key: "rss:1".into(),
            headline: String::new(),
            body: None,
            link: None,
            publisher: None,
            published_at_ns: Some(T0),
            received_at_ns: T0 + 1,
            language: None,
            tickers: vec!["IBM".into(), "MSFT".into()],
            reference_version: None,
            extra: Default::default(),
            flags: vec![],
            lineage: crate::bars::tests::lineage(4),
        };
        let end = CycleEnd {
            idle: true,
            final_fire: false,
            now_ns: -7,
        };
        let mut log = OpLog::default();
        log.trade(&t);
        log.news(&news);
        log.trade(&u);
        log.end_cycle(end);
        log.trade(&c);
        let mut e = Enc::default();
        log.encode(&mut e);
        let bytes = e.into_inner();
        let mut got = Vec::new();
        let mut d = Dec::new(&bytes);
        OpLog::replay(&mut d, |op| {
            got.push(op);
            Ok(())
        })
        .unwrap();
        d.finish("test").unwrap();
        assert_eq!(
            got,
            vec![
                Op::Trade(t),
                Op::News(news),
                Op::Trade(u),
                Op::End(end),
                Op::Trade(c)
            ]
        );
    }

    /// Live curation decodes from `enriched.trades` only what the journal keeps, so a replayed
    /// cycle sees the very rows the live one did — whatever else the enriched row carries.
    #[test]
    fn live_input_is_exactly_what_the_journal_replays() {
        use marketlake_schemas::extra::ExtraValue;
        let mut full = edit(
            TradeAction::Correct,
            "fix-a:\"12\\4\"",
            "fix-a:123",
            T0 + 5,
            1_234_500_000,
            10_000,
            77,
        );
        full.received_at_ns = T0 + 9;
        full.isin = Some("US4592001014".into());
        full.figi = Some("BBG000BLNNH6".into());
        full.instrument_name = Some("International Business Machines".into());
        full.exchange = Some("NYSE".into());
        full.currency = Some("USD".into());
        full.side = Some("buy".into());
        full.venue = Some("XNYS".into());
        full.trade_id = Some("T1".into());
        full.order_id = Some("O1".into());
        full.account = Some("ACC".into());
        full.trader = Some("TR".into());
        full.reference_version = Some(3);
        full.flags = vec!["price_band".into()];
        full.extra
            .insert("exec_broker".into(), ExtraValue::String("GS".into()));
        full.lineage.source_uri = "tcp://127.0.0.1:9/é@1".into();
        full.lineage.raw_partition = 2;
        let payload = serde_json::to_vec(&full).unwrap();
        let live = crate::input::decode_enriched_trade(&payload).unwrap();

        let mut log = OpLog::default();
        log.trade(&full);
        let mut e = Enc::default();
        log.encode(&mut e);
        let bytes = e.into_inner();
        let mut replayed = Vec::new();
        OpLog::replay(&mut Dec::new(&bytes), |op| {
            replayed.push(op);
            Ok(())
        })
        .unwrap();
        assert_eq!(replayed, vec![Op::Trade(live.clone())]);

        // The kept fields are the enriched row's; nothing else is.
        let kept = TradeRow {
            action: full.action,
            supersedes: full.supersedes.clone(),
            received_at_ns: full.received_at_ns,
            ..TradeRow::bare(
                full.trade_key.clone(),
                full.symbol.clone(),
                full.price,
                full.quantity,
                full.event_time_ns,
                full.lineage.clone(),
            )
        };
        assert_eq!(live, kept);
        // Not a trade: an error, not a panic.
        assert!(crate::input::decode_enriched_trade(b"{\"news_key\":\"x\"}").is_err());
        assert!(crate::input::decode_enriched_trade(&payload[..payload.len() / 2]).is_err());
    }

    #[test]
    fn fills_round_trip() {
        let fills: Vec<Fill> = (0..50)
            .map(|i| {
                let t = trade(
                    "IBM",
                    &format!("k{}", 1000 - i * 7),
                    T0 + i * 3 - 40,
                    i,
                    -i,
                    i,
                );
                Fill {
                    order: FillOrder::of(&t),
                    px: Px::of(&t),
                }
            })
            .collect();
        let mut e = Enc::default();
        encode_fills(&mut e, &fills);
        let bytes = e.into_inner();
        let mut d = Dec::new(&bytes);
        assert_eq!(decode_fills(&mut d).unwrap(), fills);
        d.finish("test").unwrap();
    }
}
