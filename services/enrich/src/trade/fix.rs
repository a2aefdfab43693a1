//! FIX tag=value → trades.
//!
//! - ExecutionReport (35=8) with a fill: LastQty (32) > 0 and, when present, ExecType (150) 1/2/F
//!   (FIX 4.2 ExecTransType (20) 0 or absent) → a new trade keyed `<source_id>:<ExecID 17>`.
//!   ExecType G / ExecTransType 2 → `correct`, ExecType H / ExecTransType 1 → `cancel`, both
//!   superseding `<source_id>:<ExecRefID 19>`; ExecTransType 3 (status) is not a trade.
//!   Price LastPx (31); symbol Symbol (55) + SymbolSfx (65); side (54) as a word; venue LastMkt
//!   (30) else SecurityExchange (207); OrderID (37); Account (1); trader from the parties
//!   (PartyRole 11, 12 or 36) else SenderSubID (50); Currency (15); time TransactTime (60) else
//!   SendingTime (52).
//! - MarketDataIncrementalRefresh / SnapshotFullRefresh (35=X / W): each MDEntries entry with
//!   MDEntryType (269) 2 (trade) → a trade: price 270, size 271, symbol 55 (in the entry, else the
//!   body), time MDEntryDate/MDEntryTime (272/273, the date defaulting to the message's) else
//!   60/52; MDUpdateAction (279) 1/2 → correct/cancel of `<source_id>:<MDEntryID 278 or TradeID 1003>`.
//! - Every other message type is not a trade.

use marketlake_schemas::l2::TradeAction;
use marketlake_schemas::RawRecord;

use super::{Found, TradeFacts};
use crate::record::{self, Bad};
use crate::time;

/// One parsed message: its fields in order, values as raw bytes.
pub(crate) struct Message<'a> {
    fields: Vec<(u32, &'a [u8])>,
}

fn delimiter_of(payload: &[u8], attribute: Option<&String>) -> &'static [u8] {
    match attribute.map(String::as_str) {
        Some("soh") => return b"\x01",
        Some("pipe") => return b"|",
        Some("caret_a") => return b"^A",
        _ => {}
    }
    // Detect it after the BeginString value, as the framer does.
    let value = payload.strip_prefix(b"8=").unwrap_or(payload);
    let end = value
        .iter()
        .position(|b| !(b.is_ascii_alphanumeric() || *b == b'.'))
        .unwrap_or(value.len());
    match value.get(end..).unwrap_or_default() {
        [b'|', ..] => b"|",
        [b'^', b'A', ..] => b"^A",
        _ => b"\x01",
    }
}

/// The pieces of `bytes` between `delimiter`s (a trailing empty piece is dropped).
fn split<'a>(bytes: &'a [u8], delimiter: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = Some(bytes);
    // memchr's substring search, as the connector's framer uses (comparing a window at every
    // byte was a tenth of the FIX parse); one searcher per message, not one per field.
    let finder = memchr::memmem::Finder::new(delimiter);
    std::iter::from_fn(move || {
        let current = rest?;
        match finder.find(current).filter(|_| !delimiter.is_empty()) {
            Some(at) => {
                rest = current.get(at + delimiter.len()..);
                Some(current.get(..at).unwrap_or_default())
            }
            None => {
                rest = None;
                Some(current).filter(|piece| !piece.is_empty())
            }
        }
    })
}

impl<'a> Message<'a> {
    pub(crate) fn parse(raw: &'a RawRecord) -> Result<Self, Bad> {
        let delimiter = delimiter_of(&raw.payload, raw.attributes.get("delimiter"));
        let mut fields = Vec::new();
        for field in split(&raw.payload, delimiter) {
            // A piece without `tag=` is a delimiter inside a text value: not a field.
            let Some(eq) = field.iter().position(|b| *b == b'=') else {
                continue;
            };
            let (tag, value) = (
                field.get(..eq).unwrap_or_default(),
                field.get(eq + 1..).unwrap_or_default(),
            );
            if tag.is_empty() || tag.len() > 9 || !tag.iter().all(u8::is_ascii_digit) {
                continue;
            }
            let tag = tag
                .iter()
                .fold(0u32, |acc, b| acc * 10 + u32::from(b - b'0'));
            fields.push((tag, value));
        }
        if !fields.iter().any(|(tag, _)| *tag == 35) {
            return Err(Bad::missing("fix MsgType (35)"));
        }
        Ok(Message { fields })
    }

    /// A code or number field: must be UTF-8; empty counts as absent.
    fn code(&self, tag: u32) -> Result<Option<&'a str>, Bad> {
        code(&self.fields, tag)
    }

    /// A free-text field (account, trader), decoded leniently.
    pub(crate) fn text(&self, tag: u32) -> Option<String> {
        text(&self.fields, tag)
    }
}

fn find<'a>(fields: &[(u32, &'a [u8])], tag: u32) -> Option<&'a [u8]> {
    fields.iter().find(|(t, _)| *t == tag).map(|(_, v)| *v)
}

fn code<'a>(fields: &[(u32, &'a [u8])], tag: u32) -> Result<Option<&'a str>, Bad> {
    match find(fields, tag) {
        None => Ok(None),
        Some(bytes) => {
            let text = std::str::from_utf8(bytes).map_err(|_| {
                Bad::field(
                    tag_name(tag),
                    &String::from_utf8_lossy(bytes),
                    "not valid utf-8",
                )
            })?;
            Ok(Some(text.trim()).filter(|t| !t.is_empty()))
        }
    }
}

fn text(fields: &[(u32, &[u8])], tag: u32) -> Option<String> {
    find(fields, tag)
        .map(|bytes| String::from_utf8_lossy(bytes).trim().to_owned())
        .filter(|t| !t.is_empty())
}

/// A tag's name in error messages (`fix LastQty (32)`), formatted only when an error is built:
/// most records have none, and every price and quantity names its tag.
#[derive(Debug, Clone, Copy)]
struct TagName(u32);

fn tag_name(tag: u32) -> TagName {
    TagName(tag)
}

impl std::fmt::Display for TagName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tag = self.0;
        let name = match tag {
            1 => "Account",
            15 => "Currency",
            17 => "ExecID",
            19 => "ExecRefID",
            20 => "ExecTransType",
            30 => "LastMkt",
            31 => "LastPx",
            32 => "LastQty",
            35 => "MsgType",
            37 => "OrderID",
            50 => "SenderSubID",
            52 => "SendingTime",
            54 => "Side",
            55 => "Symbol",
            60 => "TransactTime",
            65 => "SymbolSfx",
            150 => "ExecType",
            207 => "SecurityExchange",
            268 => "NoMDEntries",
            269 => "MDEntryType",
            270 => "MDEntryPx",
            271 => "MDEntrySize",
            272 => "MDEntryDate",
            273 => "MDEntryTime",
            275 => "MDMkt",
            278 => "MDEntryID",
            279 => "MDUpdateAction",
            1003 => "TradeID",
            _ => return write!(f, "fix tag {tag}"),
        };
        write!(f, "fix {name} ({tag})")
    }
}

fn message_name(msg_type: &str) -> &'static str {
    match msg_type {
        "0" => "Heartbeat",
        "1" => "TestRequest",
        "2" => "ResendRequest",
        "3" => "Reject",
        "4" => "SequenceReset",
        "5" => "Logout",
        "9" => "OrderCancelReject",
        "A" => "Logon",
        "D" => "NewOrderSingle",
        "F" => "OrderCancelRequest",
        "G" => "OrderCancelReplaceRequest",
        "H" => "OrderStatusRequest",
        "V" => "MarketDataRequest",
        "Y" => "MarketDataRequestReject",
        "AE" => "TradeCaptureReport",
        "AR" => "TradeCaptureReportAck",
        _ => "other",
    }
}

fn exec_type_name(exec_type: &str) -> &'static str {
    match exec_type {
        "0" => "New",
        "3" => "DoneForDay",
        "4" => "Canceled",
        "5" => "Replaced",
        "6" => "PendingCancel",
        "7" => "Stopped",
        "8" => "Rejected",
        "9" => "Suspended",
        "A" => "PendingNew",
        "B" => "Calculated",
        "C" => "Expired",
        "D" => "Restated",
        "E" => "PendingReplace",
        "I" => "OrderStatus",
        _ => "not a fill",
    }
}

fn side_word(code: &str) -> Option<&'static str> {
    Some(match code {
        "1" => "buy",
        "2" => "sell",
        "3" => "buy_minus",
        "4" => "sell_plus",
        "5" => "sell_short",
        "6" => "sell_short_exempt",
        "7" => "undisclosed",
        "8" => "cross",
        "9" => "cross_short",
        "A" => "cross_short_exempt",
        "B" => "as_defined",
        "C" => "opposite",
        "D" => "subscribe",
        "E" => "redeem",
        "F" => "lend",
        "G" => "borrow",
        _ => return None,
    })
}

pub(super) fn parse(raw: &RawRecord) -> Result<Found, Bad> {
    let message = Message::parse(raw)?;
    let msg_type = message
        .code(35)?
        .ok_or_else(|| Bad::missing(tag_name(35)))?;
    match msg_type {
        "8" => execution_report(raw, &message),
        "X" | "W" => market_data(raw, &message),
        other => Ok(Found::NotATrade(format!(
            "fix message type 35={other} ({}) is not a trade",
            message_name(other)
        ))),
    }
}

/// Event time of a message: TransactTime, else SendingTime.
fn message_time(message: &Message) -> Result<i64, Bad> {
    for tag in [60, 52] {
        if let Some(text) = message.code(tag)? {
            return time::fix_timestamp(text).ok_or_else(|| {
                Bad::field(
                    tag_name(tag),
                    text,
                    "not a UTCTimestamp YYYYMMDD-HH:MM:SS[.fff]",
                )
            });
        }
    }
    Err(Bad::missing("fix TransactTime (60) and SendingTime (52)"))
}

fn symbol_of(fields: &[(u32, &[u8])]) -> Result<Option<String>, Bad> {
    let Some(base) = code(fields, 55)? else {
        return Ok(None);
    };
    let full = match code(fields, 65)? {
        Some(suffix) => format!("{base}.{suffix}"),
        None => base.to_owned(),
    };
    record::symbol(tag_name(55), &full).map(Some)
}

fn side_of(message: &Message) -> Result<Option<String>, Bad> {
    match message.code(54)? {
        None => Ok(None),
        Some(code) => side_word(code)
            .map(|w| Some(w.to_owned()))
            .ok_or_else(|| Bad::field(tag_name(54), code, "unknown side code")),
    }
}

/// The trader among the parties (order-origination, executing, entering trader), else
/// SenderSubID.
fn trader_of(message: &Message) -> Option<String> {
    let mut parties: Vec<(String, Option<&[u8]>)> = Vec::new();
    for (tag, value) in &message.fields {
        match tag {
            448 => parties.push((String::from_utf8_lossy(value).trim().to_owned(), None)),
            452 => {
                if let Some(last) = parties.last_mut() {
                    last.1 = Some(value);
                }
            }
            _ => {}
        }
    }
    for role in [&b"11"[..], b"12", b"36"] {
        if let Some((id, _)) = parties
            .iter()
            .find(|(id, r)| *r == Some(role) && !id.is_empty())
        {
            return Some(id.clone());
        }
    }
    message.text(50)
}

fn execution_report(raw: &RawRecord, message: &Message) -> Result<Found, Bad> {
    let exec_type = message.code(150)?;
    let trans_type = message.code(20)?;
    let action = match (exec_type, trans_type) {
        (Some("G"), _) | (_, Some("2")) => TradeAction::Correct,
        (Some("H"), _) | (_, Some("1")) => TradeAction::Cancel,
        (_, Some("3")) => {
            return Ok(Found::NotATrade(
                "fix execution report is a status report (ExecTransType 3)".to_owned(),
            ))
        }
        _ => TradeAction::New,
    };
    let last_qty = message.code(32)?;
    if action == TradeAction::New {
        if let Some(exec_type) = exec_type.filter(|t| !matches!(*t, "1" | "2" | "F")) {
            return Ok(Found::NotATrade(format!(
                "fix execution report with ExecType {exec_type} ({}) is not a fill",
                exec_type_name(exec_type)
            )));
        }
    }
    let quantity = match last_qty {
        Some(text) => record::quantity(tag_name(32), text)?,
        None if action == TradeAction::Cancel => 0,
        None if action == TradeAction::New => {
            return Ok(Found::NotATrade(
                "fix execution report without a fill (no LastQty (32))".to_owned(),
            ))
        }
        None => return Err(Bad::missing(tag_name(32))),
    };
    if quantity < 0 {
        return Err(Bad::field(
            tag_name(32),
            last_qty.unwrap_or_default(),
            "negative quantity",
        ));
    }
    if quantity == 0 && action == TradeAction::New {
        return Ok(Found::NotATrade(
            "fix execution report without a fill (LastQty (32) is 0)".to_owned(),
        ));
    }
    let price = match message.code(31)? {
        Some(text) => record::price(tag_name(31), text)?,
        None if action == TradeAction::Cancel => 0,
        None => return Err(Bad::missing(tag_name(31))),
    };
    let exec_id = message
        .code(17)?
        .ok_or_else(|| Bad::missing(tag_name(17)))?;
    let symbol = symbol_of(&message.fields)?.ok_or_else(|| Bad::missing(tag_name(55)))?;
    let event_time_ns = message_time(message)?;
    let source = &raw.source_id;
    let mut facts = TradeFacts::new(
        format!("{source}:{exec_id}"),
        symbol,
        price,
        quantity,
        event_time_ns,
    );
    facts.action = action;
    if action != TradeAction::New {
        let reference = message
            .code(19)?
            .ok_or_else(|| Bad::missing(tag_name(19)))?;
        facts.supersedes = Some(format!("{source}:{reference}"));
    }
    facts.side = side_of(message)?;
    facts.venue = message.text(30).or_else(|| message.text(207));
    facts.currency = message.text(15);
    facts.trade_id = message.text(1003).or_else(|| Some(exec_id.to_owned()));
    facts.order_id = message.text(37);
    facts.account = message.text(1);
    facts.trader = trader_of(message);
    Ok(Found::Trades(vec![facts]))
}

/// Event time of a market-data entry: MDEntryDate + MDEntryTime (the date defaulting to the
/// message's), else the message's time.
fn entry_time(entry: &[(u32, &[u8])], message: &Message) -> Result<i64, Bad> {
    let Some(time_text) = code(entry, 273)? else {
        return message_time(message);
    };
    if time_text.contains('-') {
        // Some feeds send a full UTCTimestamp in MDEntryTime.
        return time::fix_timestamp(time_text).ok_or_else(|| {
            Bad::field(tag_name(273), time_text, "not a UTCTimeOnly HH:MM:SS[.fff]")
        });
    }
    let time_of_day = time::fix_time_of_day(time_text)
        .ok_or_else(|| Bad::field(tag_name(273), time_text, "not a UTCTimeOnly HH:MM:SS[.fff]"))?;
    let date = match code(entry, 272)? {
        Some(text) => time::fix_date(text)
            .ok_or_else(|| Bad::field(tag_name(272), text, "not a UTCDateOnly YYYYMMDD"))?,
        None => {
            let message_ns = message_time(message)?;
            chrono::DateTime::from_timestamp_nanos(message_ns).date_naive()
        }
    };
    time::utc_ns(date.and_time(time_of_day))
        .ok_or_else(|| Bad::field(tag_name(273), time_text, "out of range"))
}

fn market_data(raw: &RawRecord, message: &Message) -> Result<Found, Bad> {
    let Some(group_at) = message.fields.iter().position(|(tag, _)| *tag == 268) else {
        return Ok(Found::NotATrade(
            "fix market data without entries (no NoMDEntries (268))".to_owned(),
        ));
    };
    let body = message.fields.get(..group_at).unwrap_or_default();
    let group = message.fields.get(group_at + 1..).unwrap_or_default();
    // Each entry starts with the group's first tag (279 in X, 269 in W).
    let Some(&(first_tag, _)) = group.first() else {
        return Ok(Found::NotATrade(
            "fix market data with an empty entry group".to_owned(),
        ));
    };
    let mut entries: Vec<&[(u32, &[u8])]> = Vec::new();
    let mut start = 0;
    for (i, (tag, _)) in group.iter().enumerate().skip(1) {
        if *tag == first_tag {
            entries.push(group.get(start..i).unwrap_or_default());
            start = i;
        }
    }
    entries.push(group.get(start..).unwrap_or_default());

    let source = &raw.source_id;
    let mut trades = Vec::new();
    let mut other_types = std::collections::BTreeSet::new();
    for (index, entry) in entries.iter().enumerate() {
        let entry_type = code(entry, 269)?.unwrap_or("none");
        if entry_type != "2" {
            other_types.insert(entry_type.to_owned());
            continue;
        }
        let symbol = match symbol_of(entry)? {
            Some(symbol) => symbol,
            None => symbol_of(body)?.ok_or_else(|| Bad::missing(tag_name(55)))?,
        };
        let price_text = code(entry, 270)?.ok_or_else(|| Bad::missing(tag_name(270)))?;
        let size_text = code(entry, 271)?.ok_or_else(|| Bad::missing(tag_name(271)))?;
        let price = record::price(tag_name(270), price_text)?;
        let quantity = record::quantity(tag_name(271), size_text)?;
        let event_time_ns = entry_time(entry, message)?;
        let entry_id = text(entry, 1003).or_else(|| text(entry, 278));
        let positional = format!(
            "{source}:{}#{}/{index}",
            raw.source_uri, raw.source_position
        );
        let action = match code(entry, 279)? {
            None | Some("0") => TradeAction::New,
            Some("1") => TradeAction::Correct,
            Some("2") => TradeAction::Cancel,
            Some(other) => return Err(Bad::field(tag_name(279), other, "unknown update action")),
        };
        let key = match (&action, &entry_id) {
            (TradeAction::New, Some(id)) => format!("{source}:{id}"),
            _ => positional,
        };
        let mut facts = TradeFacts::new(key, symbol, price, quantity, event_time_ns);
        if action != TradeAction::New {
            let id = entry_id.clone().ok_or_else(|| {
                Bad::missing(
                    "fix MDEntryID (278) or TradeID (1003) of a changed or deleted trade entry",
                )
            })?;
            facts.supersedes = Some(format!("{source}:{id}"));
        }
        facts.action = action;
        facts.trade_id = entry_id;
        facts.venue = text(entry, 275)
            .or_else(|| text(entry, 30))
            .or_else(|| text(entry, 207))
            .or_else(|| message.text(207));
        facts.currency = text(entry, 15).or_else(|| text(body, 15));
        trades.push(facts);
    }
    if trades.is_empty() {
        let types: Vec<String> = other_types.into_iter().collect();
        return Ok(Found::NotATrade(format!(
            "fix market data without trade entries (269=2); entry types: {}",
            types.join(", ")
        )));
    }
    Ok(Found::Trades(trades))
}

#[cfg(test)]
mod tests {
    use super::super::tests::trades_of;
    use super::super::{parse_trade, TradeParse};
    use crate::samples::*;
    use marketlake_schemas::l2::TradeAction;
    use marketlake_schemas::RawRecord;

    #[test]
    fn splits_on_one_and_two_byte_delimiters() {
        let pieces = |text: &'static str, delimiter: &'static str| {
            super::split(text.as_bytes(), delimiter.as_bytes())
                .map(|piece| String::from_utf8_lossy(piece).into_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(pieces("8=FIX.4.2|35=8|", "|"), ["8=FIX.4.2", "35=8"]);
        assert_eq!(pieces("a||b", "|"), ["a", "", "b"]);
        assert_eq!(pieces("58=x^y^A35=8^A^", "^A"), ["58=x^y", "35=8", "^"]);
        assert_eq!(pieces("^A^A", "^A"), ["", ""]);
        assert!(pieces("", "|").is_empty());
        assert_eq!(pieces("ab^", "^A"), ["ab^"]);
    }

    fn message(text: &str) -> RawRecord {
        let mut raw = fix_records("fix/fix42_pipe_delimited.log")
            .unwrap()
            .remove(0);
        raw.payload = text.as_bytes().to_vec();
        raw.attributes.insert("delimiter".into(), "pipe".into());
        raw
    }

    fn parse(text: &str) -> TradeParse {
        parse_trade(&message(text), &at(), None)
    }

    #[test]
    fn execution_reports_in_the_sample_logs() {
        // file, trades (fills only; orders, acks, rejects and cancels are not trades)
        for (file, want) in [
            ("fix/fix42_pipe_delimited.log", 2),
            ("fix/edge/fix42_caretA_delimited.log", 2),
            ("fix/fix41_banzai_exec_session.fix", 2),
            ("fix/fixt11_order_session_store.fix", 0),
            (
                "fix/log4fixj/FIX42-CoyTrade-BCExchange-SenderAndTargetInSameLogFile.log",
                0,
            ),
            (
                "fix/log4fixj/FIX42-CoyTrade-BCExchange-TargetMessagePerLineNoExtraLoggingInfo.log",
                0,
            ),
            ("fix/malformed/derived_defects.fix", 0),
        ] {
            let records = fix_records(file).unwrap();
            assert!(!records.is_empty(), "{file}");
            assert_eq!(trades_of(&records, None).len(), want, "{file}");
        }
    }

    #[test]
    fn hand_checked_fills() {
        // 8=FIX.4.2|...|35=8|...|52=20040521-13:27:25.000|...|17=4|...|31=43.2|32=100|37=2|...|54=1|55=DELL|150=2
        let rows = trades_of(&fix_records("fix/fix42_pipe_delimited.log").unwrap(), None);
        let dell = &rows[0];
        assert_eq!(dell.trade_key, "fix-sample:4");
        assert_eq!(dell.action, TradeAction::New);
        assert_eq!(dell.symbol, "DELL");
        assert_eq!(dell.price, 4_320_000_000);
        assert_eq!(dell.quantity, 1_000_000);
        assert_eq!(dell.side.as_deref(), Some("buy"));
        assert_eq!(dell.order_id.as_deref(), Some("2"));
        // 2004-05-21T13:27:25Z, from SendingTime (no TransactTime).
        assert_eq!(dell.event_time_ns, 1_085_146_045_000_000_000);
        assert_eq!(rows[1].side.as_deref(), Some("sell"));
        assert_eq!(rows[1].trade_key, "fix-sample:5");

        // The same session with `^A` delimiters reads the same.
        let caret = trades_of(
            &fix_records("fix/edge/fix42_caretA_delimited.log").unwrap(),
            None,
        );
        assert_eq!(
            caret
                .iter()
                .map(|r| (r.price, r.quantity, r.event_time_ns))
                .collect::<Vec<_>>(),
            rows.iter()
                .map(|r| (r.price, r.quantity, r.event_time_ns))
                .collect::<Vec<_>>()
        );

        // 35=8|...|52=20121105-23:24:42|...|17=2|...|31=12.3|32=10000|37=2|...|54=1|55=MSFT|150=2
        let banzai = trades_of(
            &fix_records("fix/fix41_banzai_exec_session.fix").unwrap(),
            None,
        );
        let msft = &banzai[0];
        assert_eq!(
            (msft.symbol.as_str(), msft.price, msft.quantity),
            ("MSFT", 1_230_000_000, 100_000_000)
        );
        assert_eq!(msft.side.as_deref(), Some("buy"));
        assert_eq!(msft.event_time_ns, 1_352_157_882_000_000_000);
        assert_eq!(banzai[1].symbol, "ORCL");
    }

    #[test]
    fn non_fills_say_why() {
        let records = fix_records(
            "fix/log4fixj/FIX42-CoyTrade-BCExchange-TargetMessagePerLineNoExtraLoggingInfo.log",
        )
        .unwrap();
        let reasons: Vec<String> = records
            .iter()
            .map(|raw| match parse_trade(raw, &at(), None) {
                TradeParse::NotATrade { reason } => reason,
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(reasons[0].contains("35=0 (Heartbeat)"), "{reasons:?}");
        assert!(reasons[1].contains("LastQty (32) is 0"), "{reasons:?}");
        let order = parse("8=FIX.4.2|9=5|35=D|55=X|10=000|");
        assert!(
            matches!(order, TradeParse::NotATrade { reason } if reason.contains("NewOrderSingle"))
        );
    }

    #[test]
    fn corrections_and_cancels_supersede_by_exec_ref_id() {
        let correct = "8=FIX.4.4|9=5|35=8|17=E2|19=E1|150=G|31=10.5|32=200|54=2|55=IBM|60=20240102-15:00:00.123456|10=000|";
        let TradeParse::Trades(rows) = parse(correct) else {
            panic!()
        };
        assert_eq!(rows[0].action, TradeAction::Correct);
        assert_eq!(rows[0].trade_key, "fix-sample:E2");
        assert_eq!(rows[0].supersedes.as_deref(), Some("fix-sample:E1"));
        assert_eq!(rows[0].event_time_ns, 1_704_207_600_123_456_000);

        let bust = "8=FIX.4.4|9=5|35=8|17=E3|19=E1|150=H|55=IBM|60=20240102-15:00:01|10=000|";
        let TradeParse::Trades(rows) = parse(bust) else {
            panic!()
        };
        assert_eq!(
            (rows[0].action, rows[0].price, rows[0].quantity),
            (TradeAction::Cancel, 0, 0)
        );
        assert_eq!(rows[0].supersedes.as_deref(), Some("fix-sample:E1"));

        // FIX 4.2 spells them with ExecTransType.
        let cancel42 =
            "8=FIX.4.2|9=5|35=8|17=9|19=4|20=1|31=43.2|32=100|55=DELL|52=20040521-13:30:00|10=000|";
        let TradeParse::Trades(rows) = parse(cancel42) else {
            panic!()
        };
        assert_eq!(rows[0].action, TradeAction::Cancel);
        let correct42 = "8=FIX.4.2|9=5|35=8|17=10|19=4|20=2|31=43.25|32=100|55=DELL|52=20040521-13:30:00|10=000|";
        let TradeParse::Trades(rows) = parse(correct42) else {
            panic!()
        };
        assert_eq!(
            (rows[0].action, rows[0].price),
            (TradeAction::Correct, 4_325_000_000)
        );
        let status =
            "8=FIX.4.2|9=5|35=8|17=11|20=3|31=43.2|32=100|55=DELL|52=20040521-13:30:00|10=000|";
        assert!(matches!(parse(status), TradeParse::NotATrade { .. }));

        let no_ref = "8=FIX.4.4|9=5|35=8|17=E3|150=H|55=IBM|60=20240102-15:00:01|10=000|";
        assert!(
            matches!(parse(no_ref), TradeParse::Malformed { rule: "missing_field", reason } if reason.contains("ExecRefID (19)"))
        );
    }

    #[test]
    fn optional_fields_and_parties() {
        let fill = "8=FIX.4.4|9=5|35=8|1=ACC-9|15=EUR|17=X1|30=XETR|31=101.25|32=7.5|37=O-1|54=5|55=BRK|65=B|60=20240102-15:00:00|453=2|448=DESK|452=1|448=JSMITH|452=11|10=000|";
        let TradeParse::Trades(rows) = parse(fill) else {
            panic!()
        };
        let row = &rows[0];
        assert_eq!(row.symbol, "BRK.B");
        assert_eq!(row.account.as_deref(), Some("ACC-9"));
        assert_eq!(row.currency.as_deref(), Some("EUR"));
        assert_eq!(row.venue.as_deref(), Some("XETR"));
        assert_eq!(row.side.as_deref(), Some("sell_short"));
        assert_eq!(row.trader.as_deref(), Some("JSMITH"));
        assert_eq!(row.order_id.as_deref(), Some("O-1"));
        assert_eq!(row.quantity, 75_000);
        let via_sub_id =
            "8=FIX.4.2|9=5|35=8|17=X2|31=1|32=1|50=TRADER7|55=IBM|52=20240102-15:00:00|10=000|";
        let TradeParse::Trades(rows) = parse(via_sub_id) else {
            panic!()
        };
        assert_eq!(rows[0].trader.as_deref(), Some("TRADER7"));
    }

    #[test]
    fn bad_fields_are_named_with_their_value() {
        for (text, rule, needle) in [
            (
                "8=FIX.4.2|35=8|17=1|31=abc|32=1|55=X|52=20240102-15:00:00|",
                "bad_field",
                "LastPx (31) `abc`",
            ),
            (
                "8=FIX.4.2|35=8|17=1|31=1|32=1|55=X|52=2024-01-02|",
                "bad_field",
                "SendingTime (52) `2024-01-02`",
            ),
            (
                "8=FIX.4.2|35=8|17=1|31=1|32=1|55=X|",
                "missing_field",
                "TransactTime (60)",
            ),
            (
                "8=FIX.4.2|35=8|17=1|31=1|32=1|52=20240102-15:00:00|",
                "missing_field",
                "Symbol (55)",
            ),
            (
                "8=FIX.4.2|35=8|31=1|32=1|55=X|52=20240102-15:00:00|",
                "missing_field",
                "ExecID (17)",
            ),
            (
                "8=FIX.4.2|35=8|17=1|32=1|55=X|52=20240102-15:00:00|",
                "missing_field",
                "LastPx (31)",
            ),
            (
                "8=FIX.4.2|35=8|17=1|31=1|32=-5|55=X|52=20240102-15:00:00|",
                "bad_field",
                "negative",
            ),
            (
                "8=FIX.4.2|35=8|17=1|31=1|32=1|54=Z|55=X|52=20240102-15:00:00|",
                "bad_field",
                "Side (54) `Z`",
            ),
            (
                "8=FIX.4.2|35=8|17=1|31=0.000000001|32=1|55=X|52=20240102-15:00:00|",
                "bad_field",
                "more than 8 digits",
            ),
            ("8=FIX.4.2|9=5|10=000|", "missing_field", "MsgType (35)"),
        ] {
            match parse(text) {
                TradeParse::Malformed { rule: got, reason } => {
                    assert_eq!(got, rule, "{text}: {reason}");
                    assert!(reason.contains(needle), "{text}: {reason}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    /// MDEntries with MDEntryType 2, counted by a plain scan of the bytes.
    fn scanned_trade_entries(records: &[RawRecord]) -> usize {
        records
            .iter()
            .map(|raw| {
                raw.payload
                    .windows(6)
                    .filter(|w| *w == b"\x01269=2")
                    .count()
            })
            .sum()
    }

    #[test]
    fn jse_market_data_trades_match_an_independent_scan() {
        let records = fix_records("fix/jse_indices_fixt11_marketdata_part1.fix").unwrap();
        assert_eq!(records.len(), 6944);
        let rows = trades_of(&records, None);
        assert_eq!(rows.len(), scanned_trade_entries(&records));
        // This index feed carries index values (269=3) and statistics, no trades.
        assert_eq!(rows.len(), 0);
        let x = records
            .iter()
            .find(|r| r.attributes["msg_type"] == "X")
            .unwrap();
        assert!(matches!(
            parse_trade(x, &at(), None),
            TradeParse::NotATrade { reason } if reason.contains("entry types: 3, x")
        ));
    }

    #[test]
    fn market_data_trade_entries() {
        let soh = |text: &str| text.replace('|', "\x01");
        let incremental = soh("8=FIXT.1.1|9=5|35=X|52=20111124-06:29:10.994|268=3|279=0|55=JA00|269=3|270=76.51|273=06:30:15.000|279=0|55=NPN|269=2|270=1523.5|271=300|273=06:30:16.250|278=T77|279=2|55=NPN|269=2|270=1523|271=100|278=T70|10=000|");
        let mut raw = fix_records("fix/jse_indices_fixt11_marketdata_part1.fix")
            .unwrap()
            .remove(0);
        raw.payload = incremental.into_bytes();
        let TradeParse::Trades(rows) = parse_trade(&raw, &at(), None) else {
            panic!()
        };
        assert_eq!(
            rows.len(),
            scanned_trade_entries(std::slice::from_ref(&raw))
        );
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].symbol, "NPN");
        assert_eq!(rows[0].trade_key, "fix-sample:T77");
        assert_eq!(
            (rows[0].price, rows[0].quantity),
            (152_350_000_000, 3_000_000)
        );
        // 2011-11-24T06:30:16.250Z: the entry time on the message's date.
        assert_eq!(rows[0].event_time_ns, 1_322_116_216_250_000_000);
        assert_eq!(rows[1].action, TradeAction::Cancel);
        assert_eq!(rows[1].supersedes.as_deref(), Some("fix-sample:T70"));

        let snapshot = soh("8=FIX.4.4|9=5|35=W|55=VOD|15=GBP|52=20240102-08:00:00|268=2|269=0|270=70|271=5|269=2|270=71.25|271=10|272=20240102|273=07:59:59|10=000|");
        raw.payload = snapshot.into_bytes();
        let TradeParse::Trades(rows) = parse_trade(&raw, &at(), None) else {
            panic!()
        };
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].symbol, "VOD");
        assert_eq!(rows[0].currency.as_deref(), Some("GBP"));
        assert!(rows[0].trade_key.ends_with("/1"));
        assert_eq!(rows[0].event_time_ns, 1_704_182_399_000_000_000);
    }
}
