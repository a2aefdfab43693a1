//! IEX-TP v1 framing (IEX TOPS 1.6, DEEP 1.0) out of pcap and pcapng captures.
//!
//! Owns [`IexTopsSettings`], the [`IexTopsDecoder`] that turns a raw (already gunzipped) capture
//! into one [`Frame`] per IEX-TP message, and [`decode_message`], the pure decoder of the message
//! types enrichment reads (trade reports and security directory entries).
//!
//! Capture layers are peeled here (pcap record or pcapng block → Ethernet/SLL/raw IP → IPv4 →
//! UDP → IEX-TP segment header) because a message's bytes carry none of the per-segment facts
//! (sequence number, send time) that enrichment needs; those travel as frame attributes.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::framing::{Frame, Framed, Malformed, StreamDecoder};
use crate::{ConnectorError, Result};

/// Settings of an `iex-tops` source: a capture file, optionally followed as it grows.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IexTopsSettings {
    pub file: PathBuf,
    #[serde(default)]
    pub follow: bool,
}

impl IexTopsSettings {
    pub fn validate(&self, prefix: &str) -> Result<()> {
        if self.file.as_os_str().is_empty() {
            return Err(ConnectorError::config(
                format!("{prefix}.file"),
                "must name a pcap or pcapng file",
            ));
        }
        Ok(())
    }
}

/// The message types enrichment needs, decoded from one message's bytes (type byte first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IexMessage {
    /// 'T' (0x54) trade report. `price` is in 1e-4 dollars.
    Trade {
        flags: u8,
        timestamp_ns: i64,
        symbol: String,
        size: u32,
        price: i64,
        trade_id: i64,
    },
    /// 'D' (0x44) security directory. `adjusted_poc_price` is in 1e-4 dollars.
    SecurityDirectory {
        flags: u8,
        timestamp_ns: i64,
        symbol: String,
        round_lot_size: u32,
        adjusted_poc_price: i64,
        luld_tier: u8,
    },
    Other {
        message_type: u8,
    },
}

const TRADE_REPORT: u8 = b'T';
const SECURITY_DIRECTORY: u8 = b'D';
const TRADE_REPORT_LEN: usize = 38;
const SECURITY_DIRECTORY_LEN: usize = 31;

/// Decode one IEX-TP message (without its length prefix).
pub fn decode_message(message: &[u8]) -> std::result::Result<IexMessage, String> {
    let Some(&message_type) = message.first() else {
        return Err("empty iex-tp message".to_string());
    };
    let need = |len: usize, what: &str| {
        if message.len() < len {
            Err(format!("{what} is {} bytes, {len} needed", message.len()))
        } else {
            Ok(())
        }
    };
    let field = |at: usize| {
        message
            .get(at)
            .copied()
            .ok_or_else(|| format!("message ends before byte {at}"))
    };
    let symbol = || padded_text(message.get(10..18).unwrap_or_default());
    let short = |at: usize| format!("message ends before byte {at}");
    match message_type {
        TRADE_REPORT => {
            need(TRADE_REPORT_LEN, "trade report")?;
            Ok(IexMessage::Trade {
                flags: field(1)?,
                timestamp_ns: le_i64(message, 2).ok_or_else(|| short(2))?,
                symbol: symbol(),
                size: le_u32(message, 18).ok_or_else(|| short(18))?,
                price: le_i64(message, 22).ok_or_else(|| short(22))?,
                trade_id: le_i64(message, 30).ok_or_else(|| short(30))?,
            })
        }
        SECURITY_DIRECTORY => {
            need(SECURITY_DIRECTORY_LEN, "security directory message")?;
            Ok(IexMessage::SecurityDirectory {
                flags: field(1)?,
                timestamp_ns: le_i64(message, 2).ok_or_else(|| short(2))?,
                symbol: symbol(),
                round_lot_size: le_u32(message, 18).ok_or_else(|| short(18))?,
                adjusted_poc_price: le_i64(message, 22).ok_or_else(|| short(22))?,
                luld_tier: field(30)?,
            })
        }
        other => Ok(IexMessage::Other {
            message_type: other,
        }),
    }
}

fn padded_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .trim_end_matches([' ', '\0'])
        .to_string()
}

/// Message types whose layout is `type, flag/status byte, timestamp (8), symbol (8) at offset 10`
/// in TOPS 1.6 and DEEP 1.0: security directory, trading status, operational halt, short sale
/// price test, quote update, trade report, official price, trade break, auction information,
/// price level update (buy, sell), security event, retail liquidity indicator. System event 'S'
/// has no symbol; anything not listed is left without one rather than guessed.
const SYMBOL_AT_10: &[u8] = b"DHOPQTXBA85EI";

fn message_symbol(message: &[u8]) -> Option<String> {
    let message_type = message.first()?;
    if !SYMBOL_AT_10.contains(message_type) {
        return None;
    }
    let raw = message.get(10..18)?;
    let end = raw
        .iter()
        .rposition(|&b| b != b' ' && b != 0)
        .map_or(0, |i| i.saturating_add(1));
    let trimmed = raw.get(..end)?;
    if trimmed.is_empty() || !trimmed.iter().all(u8::is_ascii_graphic) {
        return None;
    }
    Some(String::from_utf8_lossy(trimmed).into_owned())
}

const PCAP_GLOBAL_HEADER_LEN: usize = 24;
const PCAP_RECORD_HEADER_LEN: usize = 16;
/// Larger captured lengths than this (or the file's snaplen, if bigger) mean the record header is
/// garbage: no link layer we read carries such packets.
const MAX_PACKET_LEN: u32 = 262_144;
const PCAPNG_SHB: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];
const PCAPNG_MIN_BLOCK_LEN: usize = 12;
const MAX_BLOCK_LEN: u32 = 16 * 1024 * 1024;
const PCAPNG_IDB: u32 = 1;
const PCAPNG_SPB: u32 = 3;
const PCAPNG_EPB: u32 = 6;
/// Once framing is lost, the rest of the stream is reported in pieces of this size so a
/// followed file is not buffered forever; pieces are cut at fixed stream offsets, so the output
/// does not depend on how the bytes were chunked.
const LOST_PIECE_LEN: usize = 65_536;
const IEXTP_HEADER_LEN: usize = 40;
const IEXTP_VERSION: u8 = 1;

const LINKTYPE_ETHERNET: u32 = 1;
const LINKTYPE_RAW: u32 = 101;
const LINKTYPE_LINUX_SLL: u32 = 113;
const LINKTYPE_IPV4: u32 = 228;

#[derive(Debug, Clone, Copy)]
struct PcapFile {
    big_endian: bool,
    nanos: bool,
    snaplen: u32,
    linktype: u32,
}

#[derive(Debug, Clone, Copy)]
enum TsResolution {
    /// Units of 10^-n seconds.
    Decimal(u8),
    /// Units of 2^-n seconds.
    Binary(u8),
}

impl TsResolution {
    fn to_ns(self, ticks: u64) -> Option<i64> {
        let ns: u128 = match self {
            TsResolution::Decimal(exp) => {
                let exp = u32::from(exp);
                if exp <= 9 {
                    u128::from(ticks).checked_mul(10u128.checked_pow(9 - exp)?)?
                } else {
                    match 10u128.checked_pow(exp - 9) {
                        Some(div) => u128::from(ticks) / div,
                        None => 0,
                    }
                }
            }
            TsResolution::Binary(exp) => {
                let scaled = u128::from(ticks).checked_mul(1_000_000_000)?;
                scaled.checked_shr(u32::from(exp)).unwrap_or(0)
            }
        };
        i64::try_from(ns).ok()
    }
}

#[derive(Debug, Clone, Copy)]
struct Interface {
    /// `None` when the interface description block was unreadable.
    linktype: Option<u32>,
    resolution: TsResolution,
}

#[derive(Debug, Default)]
struct Section {
    big_endian: bool,
    interfaces: Vec<Interface>,
}

#[derive(Debug, Default)]
enum State {
    #[default]
    Start,
    Pcap(PcapFile),
    Pcapng(Section),
    /// Framing is lost (unknown format or a record header that cannot be right): the rest of
    /// the stream can only be reported, with this reason.
    Lost(String),
}

enum Step {
    /// Consumed this many bytes (> 0).
    Advance(usize),
    /// Changed state without consuming.
    Again,
    /// Need more bytes (or nothing is left).
    Wait,
}

/// Frames pcap / pcapng captures of IEX-TP v1 traffic; see the module documentation.
#[derive(Debug, Default)]
pub struct IexTopsDecoder {
    state: State,
}

impl IexTopsDecoder {
    pub fn new() -> Self {
        Self::default()
    }
}

impl StreamDecoder for IexTopsDecoder {
    fn decode(&mut self, buf: &[u8], base: u64, eof: bool, out: &mut Vec<Framed>) -> usize {
        let mut pos = 0usize;
        loop {
            let rest = buf.get(pos..).unwrap_or_default();
            let at = base.saturating_add(pos as u64);
            let step = match &mut self.state {
                State::Start => start(&mut self.state, rest, at, eof, out),
                State::Pcap(file) => {
                    let file = *file;
                    pcap_record(&mut self.state, file, rest, at, eof, out)
                }
                State::Pcapng(_) => pcapng_block(&mut self.state, rest, at, eof, out),
                State::Lost(reason) => lost(reason, rest, at, eof, out),
            };
            match step {
                Step::Advance(n) if n > 0 => pos = pos.saturating_add(n).min(buf.len()),
                Step::Again => {}
                Step::Advance(_) | Step::Wait => break,
            }
        }
        pos
    }
}

fn malformed(out: &mut Vec<Framed>, position: u64, bytes: &[u8], reason: String) {
    out.push(Framed::Malformed(Malformed {
        position,
        bytes: bytes.to_vec(),
        reason,
    }));
}

/// Report everything that is left when eof cut a structure short; `Wait` otherwise.
fn short_input(
    rest: &[u8],
    at: u64,
    eof: bool,
    out: &mut Vec<Framed>,
    reason: impl FnOnce() -> String,
) -> Step {
    if eof && !rest.is_empty() {
        malformed(out, at, rest, reason());
        Step::Advance(rest.len())
    } else {
        Step::Wait
    }
}

fn start(state: &mut State, rest: &[u8], at: u64, eof: bool, out: &mut Vec<Framed>) -> Step {
    let Some(magic) = rest.get(..4) else {
        return short_input(rest, at, eof, out, || {
            format!(
                "truncated capture header: 4 bytes needed for the magic number, {} present",
                rest.len()
            )
        });
    };
    let (big_endian, nanos) = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] => (false, false),
        [0xa1, 0xb2, 0xc3, 0xd4] => (true, false),
        [0x4d, 0x3c, 0xb2, 0xa1] => (false, true),
        [0xa1, 0xb2, 0x3c, 0x4d] => (true, true),
        m if m == PCAPNG_SHB => {
            *state = State::Pcapng(Section::default());
            return Step::Again;
        }
        m => {
            *state = State::Lost(format!(
                "not a pcap or pcapng capture: magic number {:02x}{:02x}{:02x}{:02x}",
                m.first().copied().unwrap_or(0),
                m.get(1).copied().unwrap_or(0),
                m.get(2).copied().unwrap_or(0),
                m.get(3).copied().unwrap_or(0),
            ));
            return Step::Again;
        }
    };
    let Some(header) = rest.get(..PCAP_GLOBAL_HEADER_LEN) else {
        return short_input(rest, at, eof, out, || {
            format!(
                "truncated pcap global header: {PCAP_GLOBAL_HEADER_LEN} bytes needed, {} present",
                rest.len()
            )
        });
    };
    let snaplen = read_u32(header, 16, big_endian).unwrap_or(0);
    // The upper bits of the link-type field carry FCS information, not the link type.
    let linktype = read_u32(header, 20, big_endian).unwrap_or(0) & 0xffff;
    *state = State::Pcap(PcapFile {
        big_endian,
        nanos,
        snaplen,
        linktype,
    });
    Step::Advance(PCAP_GLOBAL_HEADER_LEN)
}

fn pcap_record(
    state: &mut State,
    file: PcapFile,
    rest: &[u8],
    at: u64,
    eof: bool,
    out: &mut Vec<Framed>,
) -> Step {
    let Some(header) = rest.get(..PCAP_RECORD_HEADER_LEN) else {
        return short_input(rest, at, eof, out, || {
            format!(
                "truncated pcap record header: {PCAP_RECORD_HEADER_LEN} bytes needed, {} present",
                rest.len()
            )
        });
    };
    let big = file.big_endian;
    let ts_sec = read_u32(header, 0, big).unwrap_or(0);
    let ts_frac = read_u32(header, 4, big).unwrap_or(0);
    let captured = read_u32(header, 8, big).unwrap_or(0);
    let original = read_u32(header, 12, big).unwrap_or(0);
    let limit = file.snaplen.max(MAX_PACKET_LEN);
    if captured > limit {
        malformed(
            out,
            at,
            header,
            format!(
                "inconsistent pcap record: captured length {captured} exceeds the {limit}-byte limit"
            ),
        );
        *state = State::Lost(format!(
            "unframeable: pcap framing lost after the inconsistent record at byte {at}"
        ));
        return Step::Advance(PCAP_RECORD_HEADER_LEN);
    }
    let total = PCAP_RECORD_HEADER_LEN.saturating_add(captured as usize);
    let Some(record) = rest.get(..total) else {
        return short_input(rest, at, eof, out, || {
            format!(
                "truncated pcap record: header says {captured} bytes, {} present",
                rest.len().saturating_sub(PCAP_RECORD_HEADER_LEN)
            )
        });
    };
    if captured > original {
        malformed(
            out,
            at,
            record,
            format!(
                "inconsistent pcap record: captured length {captured} exceeds original length {original}"
            ),
        );
        return Step::Advance(total);
    }
    let frac_ns = if file.nanos {
        i64::from(ts_frac)
    } else {
        i64::from(ts_frac).saturating_mul(1_000)
    };
    let capture_ns = i64::from(ts_sec)
        .saturating_mul(1_000_000_000)
        .saturating_add(frac_ns);
    let data = record.get(PCAP_RECORD_HEADER_LEN..).unwrap_or_default();
    let data_at = at.saturating_add(PCAP_RECORD_HEADER_LEN as u64);
    packet(file.linktype, data, data_at, Some(capture_ns), out);
    Step::Advance(total)
}

fn pcapng_block(state: &mut State, rest: &[u8], at: u64, eof: bool, out: &mut Vec<Framed>) -> Step {
    let Some(head) = rest.get(..PCAPNG_MIN_BLOCK_LEN) else {
        return short_input(rest, at, eof, out, || {
            format!(
                "truncated pcapng block: {PCAPNG_MIN_BLOCK_LEN} bytes needed for a block header, {} present",
                rest.len()
            )
        });
    };
    let State::Pcapng(section) = state else {
        return Step::Wait;
    };
    let is_shb = head.get(..4) == Some(&PCAPNG_SHB[..]);
    let big = if is_shb {
        match head.get(8..12) {
            Some([0x4d, 0x3c, 0x2b, 0x1a]) => false,
            Some([0x1a, 0x2b, 0x3c, 0x4d]) => true,
            _ => {
                malformed(
                    out,
                    at,
                    head,
                    "inconsistent pcapng section header block: bad byte-order magic".to_string(),
                );
                *state = State::Lost(format!(
                    "unframeable: pcapng framing lost after the bad section header at byte {at}"
                ));
                return Step::Advance(PCAPNG_MIN_BLOCK_LEN);
            }
        }
    } else {
        section.big_endian
    };
    let block_type = read_u32(head, 0, big).unwrap_or(0);
    let total = read_u32(head, 4, big).unwrap_or(0);
    if (total as usize) < PCAPNG_MIN_BLOCK_LEN || !total.is_multiple_of(4) || total > MAX_BLOCK_LEN
    {
        malformed(
            out,
            at,
            head,
            format!(
                "inconsistent pcapng block: total length {total} (type {block_type:#x}) is not a multiple of 4 between {PCAPNG_MIN_BLOCK_LEN} and {MAX_BLOCK_LEN}"
            ),
        );
        *state = State::Lost(format!(
            "unframeable: pcapng framing lost after the inconsistent block at byte {at}"
        ));
        return Step::Advance(PCAPNG_MIN_BLOCK_LEN);
    }
    let total_len = total as usize;
    let Some(block) = rest.get(..total_len) else {
        return short_input(rest, at, eof, out, || {
            format!(
                "truncated pcapng block: header says {total} bytes, {} present",
                rest.len()
            )
        });
    };
    let trailing = read_u32(block, total_len.saturating_sub(4), big).unwrap_or(0);
    if trailing != total {
        malformed(
            out,
            at,
            block,
            format!(
                "inconsistent pcapng block: leading length {total}, trailing length {trailing}"
            ),
        );
        return Step::Advance(total_len);
    }
    let body = block
        .get(8..total_len.saturating_sub(4))
        .unwrap_or_default();
    let body_at = at.saturating_add(8);
    if is_shb {
        *section = Section {
            big_endian: big,
            interfaces: Vec::new(),
        };
        return Step::Advance(total_len);
    }
    match block_type {
        PCAPNG_IDB => {
            let interface = interface_description(body, big);
            if interface.linktype.is_none() {
                malformed(
                    out,
                    at,
                    block,
                    format!(
                        "inconsistent pcapng interface description block: body is {} bytes",
                        body.len()
                    ),
                );
            }
            section.interfaces.push(interface);
        }
        PCAPNG_EPB => enhanced_packet(section, block, body, big, at, body_at, out),
        PCAPNG_SPB => {
            // A simple packet block has no timestamp and always belongs to interface 0.
            let original = read_u32(body, 0, big).unwrap_or(0) as usize;
            let data = body.get(4..).unwrap_or_default();
            let data = data.get(..original.min(data.len())).unwrap_or_default();
            match section.interfaces.first().and_then(|i| i.linktype) {
                Some(linktype) => packet(linktype, data, body_at.saturating_add(4), None, out),
                None => malformed(
                    out,
                    at,
                    block,
                    "pcapng simple packet block without a readable interface 0".to_string(),
                ),
            }
        }
        // Statistics, name resolution, custom and obsolete blocks carry no packets we read.
        _ => {}
    }
    Step::Advance(total_len)
}

fn interface_description(body: &[u8], big: bool) -> Interface {
    let mut interface = Interface {
        linktype: None,
        resolution: TsResolution::Decimal(6),
    };
    let Some(linktype) = read_u16(body, 0, big) else {
        return interface;
    };
    if body.len() < 8 {
        return interface;
    }
    interface.linktype = Some(u32::from(linktype));
    let mut cursor = 8usize;
    while let (Some(code), Some(len)) = (
        read_u16(body, cursor, big),
        read_u16(body, cursor.saturating_add(2), big),
    ) {
        if code == 0 {
            break;
        }
        let value_at = cursor.saturating_add(4);
        if code == 9 && len >= 1 {
            if let Some(&resol) = body.get(value_at) {
                interface.resolution = if resol & 0x80 == 0 {
                    TsResolution::Decimal(resol)
                } else {
                    TsResolution::Binary(resol & 0x7f)
                };
            }
        }
        let padded = usize::from(len).saturating_add(3) & !3;
        cursor = value_at.saturating_add(padded);
    }
    interface
}

fn enhanced_packet(
    section: &Section,
    block: &[u8],
    body: &[u8],
    big: bool,
    at: u64,
    body_at: u64,
    out: &mut Vec<Framed>,
) {
    let fields = (
        read_u32(body, 0, big),
        read_u32(body, 4, big),
        read_u32(body, 8, big),
        read_u32(body, 12, big),
        read_u32(body, 16, big),
    );
    let (Some(iface), Some(ts_high), Some(ts_low), Some(captured), Some(original)) = fields else {
        malformed(
            out,
            at,
            block,
            format!(
                "inconsistent pcapng enhanced packet block: body is {} bytes, 20 needed",
                body.len()
            ),
        );
        return;
    };
    let data = body.get(20..).and_then(|d| d.get(..captured as usize));
    let Some(data) = data else {
        malformed(
            out,
            at,
            block,
            format!(
                "inconsistent pcapng enhanced packet block: captured length {captured} exceeds the {}-byte block body",
                body.len().saturating_sub(20)
            ),
        );
        return;
    };
    if captured > original {
        malformed(
            out,
            at,
            block,
            format!(
                "inconsistent pcapng enhanced packet block: captured length {captured} exceeds original length {original}"
            ),
        );
        return;
    }
    let interface = section.interfaces.get(iface as usize);
    let Some((linktype, resolution)) =
        interface.and_then(|i| i.linktype.map(|l| (l, i.resolution)))
    else {
        malformed(
            out,
            at,
            block,
            format!(
                "pcapng enhanced packet block names interface {iface}, {} readable ones described",
                section
                    .interfaces
                    .iter()
                    .filter(|i| i.linktype.is_some())
                    .count()
            ),
        );
        return;
    };
    let ticks = (u64::from(ts_high) << 32) | u64::from(ts_low);
    let capture_ns = resolution.to_ns(ticks);
    packet(linktype, data, body_at.saturating_add(20), capture_ns, out);
}

/// Peel link layer, IPv4 and UDP off one captured packet and frame its IEX-TP messages.
/// Anything that is not an unfragmented IPv4/UDP datagram carrying IEX-TP v1 is other traffic
/// on the wire and is skipped.
fn packet(
    linktype: u32,
    data: &[u8],
    data_at: u64,
    capture_ns: Option<i64>,
    out: &mut Vec<Framed>,
) {
    let ip_offset = match linktype {
        LINKTYPE_ETHERNET => {
            let ethertype = read_u16(data, 12, true);
            match ethertype {
                Some(0x0800) => 14,
                Some(0x8100) if read_u16(data, 16, true) == Some(0x0800) => 18,
                _ => return,
            }
        }
        LINKTYPE_LINUX_SLL if read_u16(data, 14, true) == Some(0x0800) => 16,
        LINKTYPE_RAW | LINKTYPE_IPV4 => 0,
        _ => return,
    };
    let Some(ip) = data.get(ip_offset..) else {
        return;
    };
    let Some(&version_ihl) = ip.first() else {
        return;
    };
    if version_ihl >> 4 != 4 {
        return;
    }
    let ihl = usize::from(version_ihl & 0x0f).saturating_mul(4);
    let total = read_u16(ip, 2, true).map_or(0, usize::from);
    let fragment = read_u16(ip, 6, true).unwrap_or(0);
    if ihl < 20 || total < ihl || ip.get(9) != Some(&17) || fragment & 0x3fff != 0 {
        return;
    }
    // Ethernet pads short frames; the IP total length says where the datagram really ends.
    let ip = ip.get(..total.min(ip.len())).unwrap_or_default();
    let Some(udp) = ip.get(ihl..) else {
        return;
    };
    let Some(udp_len) = read_u16(udp, 4, true).map(usize::from) else {
        return;
    };
    if udp_len < 8 {
        return;
    }
    let payload = udp.get(8..udp_len.min(udp.len())).unwrap_or_default();
    let payload_at = data_at.saturating_add(ip_offset.saturating_add(ihl).saturating_add(8) as u64);
    segment(payload, payload_at, capture_ns, out);
}

fn segment(payload: &[u8], payload_at: u64, capture_ns: Option<i64>, out: &mut Vec<Framed>) {
    let Some(header) = payload.get(..IEXTP_HEADER_LEN) else {
        return;
    };
    // IEX's message protocol ids (TOPS 0x8003, DEEP 0x8004, ...) all sit in 0x80xx.
    let protocol = read_u16(header, 2, false).unwrap_or(0);
    if header.first() != Some(&IEXTP_VERSION) || protocol & 0xff00 != 0x8000 {
        return;
    }
    let payload_len = read_u16(header, 12, false).map_or(0, usize::from);
    let count = read_u16(header, 14, false).unwrap_or(0);
    let first_seq = le_i64(header, 24).unwrap_or(0);
    let send_time = le_i64(header, 32).unwrap_or(0);
    let body = payload.get(IEXTP_HEADER_LEN..).unwrap_or_default();
    let body_at = payload_at.saturating_add(IEXTP_HEADER_LEN as u64);
    let Some(body) = body.get(..payload_len) else {
        malformed(
            out,
            body_at,
            body,
            format!(
                "truncated iex-tp segment: header says {payload_len} payload bytes, {} captured",
                body.len()
            ),
        );
        return;
    };
    let mut cursor = 0usize;
    for index in 0..count {
        let rest = body.get(cursor..).unwrap_or_default();
        let rest_at = body_at.saturating_add(cursor as u64);
        let Some(len) = read_u16(rest, 0, false).map(usize::from) else {
            malformed(
                out,
                rest_at,
                rest,
                format!(
                    "truncated iex-tp segment: message {} of {count} has no length prefix",
                    index.saturating_add(1)
                ),
            );
            return;
        };
        let Some(message) = rest.get(2..len.saturating_add(2)) else {
            malformed(
                out,
                rest_at,
                rest,
                format!(
                    "truncated iex-tp segment: message {} of {count} declares {len} bytes, {} present",
                    index.saturating_add(1),
                    rest.len().saturating_sub(2)
                ),
            );
            return;
        };
        cursor = cursor.saturating_add(2).saturating_add(len);
        let Some(&message_type) = message.first() else {
            malformed(
                out,
                rest_at,
                rest.get(..2).unwrap_or_default(),
                format!(
                    "empty iex-tp message {} of {count}",
                    index.saturating_add(1)
                ),
            );
            continue;
        };
        let mut attributes = BTreeMap::new();
        attributes.insert(
            "seq".to_string(),
            first_seq.saturating_add(i64::from(index)).to_string(),
        );
        attributes.insert("send_time_ns".to_string(), send_time.to_string());
        if let Some(ns) = capture_ns {
            attributes.insert("capture_time_ns".to_string(), ns.to_string());
        }
        attributes.insert(
            "message_type".to_string(),
            char::from(message_type).to_string(),
        );
        out.push(Framed::Record(Frame {
            position: rest_at.saturating_add(2),
            bytes: message.to_vec(),
            symbol: message_symbol(message),
            attributes,
        }));
    }
    if let Some(extra) = body.get(cursor..).filter(|b| !b.is_empty()) {
        malformed(
            out,
            body_at.saturating_add(cursor as u64),
            extra,
            format!(
                "inconsistent iex-tp segment: {} bytes follow its {count} messages",
                extra.len()
            ),
        );
    }
}

fn lost(reason: &str, rest: &[u8], at: u64, eof: bool, out: &mut Vec<Framed>) -> Step {
    if let Some(piece) = rest.get(..LOST_PIECE_LEN) {
        malformed(out, at, piece, reason.to_string());
        return Step::Advance(LOST_PIECE_LEN);
    }
    short_input(rest, at, eof, out, || reason.to_string())
}

fn read_u16(bytes: &[u8], at: usize, big: bool) -> Option<u16> {
    let raw: [u8; 2] = bytes.get(at..at.checked_add(2)?)?.try_into().ok()?;
    Some(if big {
        u16::from_be_bytes(raw)
    } else {
        u16::from_le_bytes(raw)
    })
}

fn read_u32(bytes: &[u8], at: usize, big: bool) -> Option<u32> {
    let raw: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(if big {
        u32::from_be_bytes(raw)
    } else {
        u32::from_le_bytes(raw)
    })
}

fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    read_u32(bytes, at, false)
}

fn le_i64(bytes: &[u8], at: usize) -> Option<i64> {
    let raw: [u8; 8] = bytes.get(at..at.checked_add(8)?)?.try_into().ok()?;
    Some(i64::from_le_bytes(raw))
}

#[cfg(test)]
// A failed unwrap is a failed test, which is what a test should do.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Read;

    const DEEP: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../data/marketdata/iex/iex_deep10_20231002_premarket_5000pkts.pcap.gz"
    );
    const TOPS: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../data/marketdata/iex/iex_tops16_sample_part1.pcap.gz"
    );

    fn gunzip(path: &str) -> Vec<u8> {
        let file = std::fs::File::open(path).unwrap();
        let mut data = Vec::new();
        flate2::read::MultiGzDecoder::new(file)
            .read_to_end(&mut data)
            .unwrap();
        data
    }

    fn decode_all(data: &[u8]) -> Vec<Framed> {
        let mut out = Vec::new();
        let consumed = IexTopsDecoder::new().decode(data, 0, true, &mut out);
        assert_eq!(consumed, data.len());
        out
    }

    /// Feed like the runtime does: keep the unconsumed tail, append the next chunk.
    fn decode_chunked(data: &[u8], seed: u64) -> Vec<Framed> {
        let mut decoder = IexTopsDecoder::new();
        let mut out = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut base = 0u64;
        let mut rng = seed;
        let mut fed = 0usize;
        while fed < data.len() {
            rng = rng
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let size = ((rng >> 33) % 4096 + 1) as usize;
            let end = (fed + size).min(data.len());
            pending.extend_from_slice(&data[fed..end]);
            fed = end;
            let consumed = decoder.decode(&pending, base, false, &mut out);
            assert!(consumed <= pending.len());
            pending.drain(..consumed);
            base += consumed as u64;
        }
        let consumed = decoder.decode(&pending, base, true, &mut out);
        assert_eq!(consumed, pending.len());
        out
    }

    fn records(out: &[Framed]) -> Vec<&Frame> {
        out.iter()
            .filter_map(|f| match f {
                Framed::Record(frame) => Some(frame),
                Framed::Malformed(_) => None,
            })
            .collect()
    }

    fn type_counts(frames: &[&Frame]) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for frame in frames {
            *counts
                .entry(frame.attributes["message_type"].clone())
                .or_insert(0) += 1;
        }
        counts
    }

    fn trades(frames: &[&Frame]) -> Vec<IexMessage> {
        frames
            .iter()
            .map(|f| decode_message(&f.bytes).unwrap())
            .filter(|m| matches!(m, IexMessage::Trade { .. }))
            .collect()
    }

    #[test]
    fn deep_sample_frames_every_message() {
        let data = gunzip(DEEP);
        let out = decode_all(&data);
        assert_eq!(out.len(), 48_325, "no malformed items expected");
        let frames = records(&out);
        assert_eq!(frames.len(), 48_325);
        let counts = type_counts(&frames);
        let expected: BTreeMap<String, usize> = [
            ("5", 1226),
            ("8", 1526),
            ("D", 3),
            ("H", 11311),
            ("I", 11309),
            ("O", 11317),
            ("P", 11594),
            ("S", 2),
            ("T", 37),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(counts, expected);
        let trades = trades(&frames);
        assert_eq!(trades.len(), 37);
        let IexMessage::Trade {
            timestamp_ns,
            symbol,
            size,
            price,
            ..
        } = &trades[0]
        else {
            panic!("not a trade");
        };
        assert_eq!(symbol, "TSLA");
        assert_eq!(*size, 10);
        assert_eq!(*price, 2_506_400);
        // 2023-10-02T12:00:01.047749Z
        assert_eq!(timestamp_ns / 1_000, 1_696_248_001_047_749);
        let total: u64 = trades
            .iter()
            .map(|t| match t {
                IexMessage::Trade { size, .. } => u64::from(*size),
                _ => 0,
            })
            .sum();
        assert_eq!(total, 2947);
        let symbols: std::collections::BTreeSet<_> = trades
            .iter()
            .filter_map(|t| match t {
                IexMessage::Trade { symbol, .. } => Some(symbol.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(symbols.len(), 15);
        // The frame's symbol is the trimmed symbol field; system events have none.
        let first_trade = frames.iter().find(|f| f.bytes[0] == b'T').unwrap();
        assert_eq!(first_trade.symbol.as_deref(), Some("TSLA"));
        assert_eq!(first_trade.attributes["message_type"], "T");
        assert!(first_trade.attributes.contains_key("seq"));
        assert!(first_trade.attributes.contains_key("send_time_ns"));
        assert!(first_trade.attributes.contains_key("capture_time_ns"));
        assert!(frames
            .iter()
            .filter(|f| f.bytes[0] == b'S')
            .all(|f| f.symbol.is_none()));
        // Positions point at the message bytes in the stream.
        for frame in frames.iter().take(500) {
            let at = frame.position as usize;
            assert_eq!(&data[at..at + frame.bytes.len()], frame.bytes.as_slice());
        }
    }

    #[test]
    fn tops_sample_frames_every_message() {
        let data = gunzip(TOPS);
        let out = decode_all(&data);
        let frames = records(&out);
        assert_eq!(out.len(), 44_225);
        assert_eq!(frames.len(), 44_225);
        let counts = type_counts(&frames);
        assert_eq!(counts["T"], 3089);
        assert_eq!(counts["Q"], 17_360);
        assert_eq!(counts["D"], 10);
        let trades = trades(&frames);
        assert_eq!(trades.len(), 3089);
        let IexMessage::Trade {
            symbol,
            size,
            price,
            timestamp_ns,
            ..
        } = &trades[0]
        else {
            panic!("not a trade");
        };
        assert_eq!((symbol.as_str(), *size, *price), ("AAPL", 283, 1_489_100));
        // 2017-07-10T14:33:46.594103Z
        assert_eq!(timestamp_ns / 1_000, 1_499_697_226_594_103);
        let shares: u64 = trades
            .iter()
            .map(|t| match t {
                IexMessage::Trade { size, .. } => u64::from(*size),
                _ => 0,
            })
            .sum();
        assert_eq!(shares, 707_492);
        // Sequence numbers are consecutive within the capture.
        let seqs: Vec<i64> = frames
            .iter()
            .map(|f| f.attributes["seq"].parse().unwrap())
            .collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1));
        let directory = frames
            .iter()
            .map(|f| decode_message(&f.bytes).unwrap())
            .find(|m| matches!(m, IexMessage::SecurityDirectory { .. }))
            .unwrap();
        let IexMessage::SecurityDirectory {
            symbol,
            round_lot_size,
            ..
        } = directory
        else {
            panic!("not a directory entry");
        };
        assert!(!symbol.is_empty());
        assert!(round_lot_size > 0);
    }

    #[test]
    fn chunk_boundaries_do_not_change_the_output() {
        let data = gunzip(TOPS);
        let whole = decode_all(&data);
        for seed in [1, 7, 42] {
            assert_eq!(decode_chunked(&data, seed), whole);
        }
    }

    #[test]
    fn truncated_capture_ends_with_one_malformed_record() {
        let data = gunzip(DEEP);
        let whole = decode_all(&data);
        // Find a record boundary near the middle by walking the pcap records.
        let mut at = PCAP_GLOBAL_HEADER_LEN;
        while at < data.len() / 2 {
            let len = u32::from_le_bytes(data[at + 8..at + 12].try_into().unwrap()) as usize;
            at += PCAP_RECORD_HEADER_LEN + len;
        }
        let record_start = at;
        let cut = record_start + 40;
        let truncated = &data[..cut];
        for out in [decode_all(truncated), decode_chunked(truncated, 3)] {
            let (last, before) = out.split_last().unwrap();
            let Framed::Malformed(bad) = last else {
                panic!("expected a malformed tail, got {last:?}");
            };
            assert_eq!(bad.position, record_start as u64);
            assert_eq!(bad.bytes, &data[record_start..cut]);
            assert!(
                bad.reason.starts_with("truncated pcap record: header says"),
                "{}",
                bad.reason
            );
            let expected: Vec<&Framed> = whole
                .iter()
                .filter(|f| f.position() < record_start as u64)
                .collect();
            assert_eq!(before.iter().collect::<Vec<_>>(), expected);
            assert!(before.iter().all(|f| matches!(f, Framed::Record(_))));
        }
        // Without eof a partial record is left unconsumed.
        let mut out = Vec::new();
        let consumed = IexTopsDecoder::new().decode(truncated, 0, false, &mut out);
        assert_eq!(consumed, record_start);
    }

    struct Packet {
        ts_sec: u32,
        ts_usec: u32,
        data: Vec<u8>,
    }

    fn pcap_packets(data: &[u8], limit: usize) -> Vec<Packet> {
        let mut packets = Vec::new();
        let mut at = PCAP_GLOBAL_HEADER_LEN;
        while packets.len() < limit && at + 16 <= data.len() {
            let word = |o: usize| u32::from_le_bytes(data[at + o..at + o + 4].try_into().unwrap());
            let len = word(8) as usize;
            packets.push(Packet {
                ts_sec: word(0),
                ts_usec: word(4),
                data: data[at + 16..at + 16 + len].to_vec(),
            });
            at += 16 + len;
        }
        packets
    }

    fn put32(out: &mut Vec<u8>, value: u32, big: bool) {
        out.extend_from_slice(&if big {
            value.to_be_bytes()
        } else {
            value.to_le_bytes()
        });
    }

    fn put16(out: &mut Vec<u8>, value: u16, big: bool) {
        out.extend_from_slice(&if big {
            value.to_be_bytes()
        } else {
            value.to_le_bytes()
        });
    }

    fn block(out: &mut Vec<u8>, block_type: u32, body: &[u8], big: bool) {
        let total = (12 + body.len()) as u32;
        put32(out, block_type, big);
        put32(out, total, big);
        out.extend_from_slice(body);
        put32(out, total, big);
    }

    /// Section header, one Ethernet interface (nanosecond or default resolution), a name
    /// resolution block to skip, and one enhanced packet block per packet.
    fn pcapng(packets: &[Packet], big: bool, nanos: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut shb = Vec::new();
        put32(&mut shb, 0x1a2b_3c4d, big);
        put16(&mut shb, 1, big);
        put16(&mut shb, 0, big);
        shb.extend_from_slice(&(-1i64).to_le_bytes());
        block(&mut out, 0x0a0d_0d0a, &shb, big);
        let mut idb = Vec::new();
        put16(&mut idb, 1, big);
        put16(&mut idb, 0, big);
        put32(&mut idb, 65_535, big);
        if nanos {
            put16(&mut idb, 9, big);
            put16(&mut idb, 1, big);
            idb.extend_from_slice(&[9, 0, 0, 0]);
            put16(&mut idb, 0, big);
            put16(&mut idb, 0, big);
        }
        block(&mut out, 1, &idb, big);
        block(&mut out, 4, &[0, 0, 0, 0], big);
        for packet in packets {
            let mut epb = Vec::new();
            let ticks = if nanos {
                u64::from(packet.ts_sec) * 1_000_000_000 + u64::from(packet.ts_usec) * 1_000
            } else {
                u64::from(packet.ts_sec) * 1_000_000 + u64::from(packet.ts_usec)
            };
            put32(&mut epb, 0, big);
            put32(&mut epb, (ticks >> 32) as u32, big);
            put32(&mut epb, ticks as u32, big);
            put32(&mut epb, packet.data.len() as u32, big);
            put32(&mut epb, packet.data.len() as u32, big);
            epb.extend_from_slice(&packet.data);
            while !epb.len().is_multiple_of(4) {
                epb.push(0);
            }
            block(&mut out, 6, &epb, big);
        }
        out
    }

    fn pcap(packets: &[Packet], big: bool, nanos: bool) -> Vec<u8> {
        let mut out = Vec::new();
        put32(&mut out, if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 }, big);
        put16(&mut out, 2, big);
        put16(&mut out, 4, big);
        put32(&mut out, 0, big);
        put32(&mut out, 0, big);
        put32(&mut out, 65_535, big);
        put32(&mut out, 1, big);
        for packet in packets {
            put32(&mut out, packet.ts_sec, big);
            put32(
                &mut out,
                if nanos {
                    packet.ts_usec * 1_000
                } else {
                    packet.ts_usec
                },
                big,
            );
            put32(&mut out, packet.data.len() as u32, big);
            put32(&mut out, packet.data.len() as u32, big);
            out.extend_from_slice(&packet.data);
        }
        out
    }

    type Content = (Vec<u8>, Option<String>, BTreeMap<String, String>);

    /// What must not depend on the container: bytes, symbol and attributes of each message.
    fn content(out: &[Framed]) -> Vec<Content> {
        records(out)
            .into_iter()
            .map(|f| (f.bytes.clone(), f.symbol.clone(), f.attributes.clone()))
            .collect()
    }

    #[test]
    fn pcapng_and_pcap_variants_decode_to_the_same_messages() {
        let data = gunzip(TOPS);
        let packets = pcap_packets(&data, 60);
        let reference = decode_all(&pcap(&packets, false, false));
        assert!(reference.len() > 60);
        assert!(reference.iter().all(|f| matches!(f, Framed::Record(_))));
        let expected = content(&reference);
        // The rebuilt little-endian microsecond pcap is a byte-exact prefix of the sample.
        let prefix_len = pcap(&packets, false, false).len();
        assert_eq!(content(&decode_all(&data[..prefix_len])), expected);
        for big in [false, true] {
            for nanos in [false, true] {
                let capture = pcapng(&packets, big, nanos);
                let out = decode_all(&capture);
                assert_eq!(content(&out), expected, "pcapng big={big} nanos={nanos}");
                for frame in records(&out) {
                    let at = frame.position as usize;
                    assert_eq!(&capture[at..at + frame.bytes.len()], frame.bytes.as_slice());
                }
                assert_eq!(decode_chunked(&capture, 9), out);
                let capture = pcap(&packets, big, nanos);
                assert_eq!(
                    content(&decode_all(&capture)),
                    expected,
                    "pcap big={big} nanos={nanos}"
                );
            }
        }
    }

    #[test]
    fn truncated_pcapng_block_is_malformed() {
        let data = gunzip(TOPS);
        let packets = pcap_packets(&data, 5);
        let capture = pcapng(&packets, false, false);
        let cut = capture.len() - 7;
        let out = decode_all(&capture[..cut]);
        let Some(Framed::Malformed(bad)) = out.last() else {
            panic!("expected a malformed tail");
        };
        assert!(
            bad.reason.starts_with("truncated pcapng block"),
            "{}",
            bad.reason
        );
        assert_eq!(
            out.iter()
                .filter(|f| matches!(f, Framed::Malformed(_)))
                .count(),
            1
        );
    }

    #[test]
    fn inconsistent_lengths_are_reported() {
        let data = gunzip(TOPS);
        let mut packets = pcap_packets(&data, 3);
        let mut capture = pcap(&packets, false, false);
        // Second record: captured length larger than the original length.
        let second = PCAP_GLOBAL_HEADER_LEN + 16 + packets[0].data.len();
        capture[second + 12..second + 16].copy_from_slice(&1u32.to_le_bytes());
        let out = decode_all(&capture);
        let bad: Vec<&Malformed> = out
            .iter()
            .filter_map(|f| match f {
                Framed::Malformed(m) => Some(m),
                Framed::Record(_) => None,
            })
            .collect();
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].position, second as u64);
        assert_eq!(bad[0].bytes.len(), 16 + packets[1].data.len());
        // A captured length no capture could have loses framing: the rest is reported.
        packets.truncate(2);
        let mut capture = pcap(&packets, false, false);
        let second = PCAP_GLOBAL_HEADER_LEN + 16 + packets[0].data.len();
        capture[second + 8..second + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        let out = decode_all(&capture);
        let consumed: usize = out
            .iter()
            .filter_map(|f| match f {
                Framed::Malformed(m) => Some(m.bytes.len()),
                Framed::Record(_) => None,
            })
            .sum();
        assert_eq!(consumed, capture.len() - second);
    }

    #[test]
    fn non_iex_traffic_is_skipped() {
        let data = gunzip(TOPS);
        let mut packets = pcap_packets(&data, 2);
        // Turn the first packet into TCP and the second into IPv6.
        packets[0].data[14 + 9] = 6;
        packets[1].data[12] = 0x86;
        packets[1].data[13] = 0xdd;
        let out = decode_all(&pcap(&packets, false, false));
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let tops = gunzip(TOPS);
        let sample = &tops[..20_000];
        for round in 0..300 {
            let len = (next() % 3000) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Valid headers followed by noise, and real captures with flipped bytes.
            match round % 3 {
                0 => {
                    let magic: &[u8] = if round % 2 == 0 {
                        &sample[..PCAP_GLOBAL_HEADER_LEN]
                    } else {
                        &[0x0a, 0x0d, 0x0d, 0x0a, 28, 0, 0, 0, 0x4d, 0x3c, 0x2b, 0x1a]
                    };
                    bytes.splice(0..0, magic.iter().copied());
                }
                1 => {
                    bytes = sample.to_vec();
                    for _ in 0..20 {
                        let at = (next() as usize) % bytes.len();
                        bytes[at] = next() as u8;
                    }
                }
                _ => {}
            }
            let whole = decode_all(&bytes);
            let total: usize = whole
                .iter()
                .filter_map(|f| match f {
                    Framed::Malformed(m) => Some(m.bytes.len()),
                    Framed::Record(_) => None,
                })
                .sum();
            assert!(total <= bytes.len());
            assert_eq!(decode_chunked(&bytes, round), whole);
            for frame in records(&whole) {
                let _ = decode_message(&frame.bytes);
            }
        }
        for len in 0..64 {
            let _ = decode_message(&vec![b'T'; len]);
            let _ = decode_message(&vec![b'D'; len]);
        }
    }

    #[test]
    fn settings_require_a_file() {
        let ok = IexTopsSettings {
            file: "x.pcap".into(),
            follow: false,
        };
        assert!(ok.validate("sources[0].settings").is_ok());
        let bad = IexTopsSettings {
            file: PathBuf::new(),
            follow: true,
        };
        let err = bad.validate("sources[0].settings").unwrap_err().to_string();
        assert!(err.contains("sources[0].settings.file"), "{err}");
        let parsed: std::result::Result<IexTopsSettings, _> =
            serde_json::from_value(serde_json::json!({"file": "a", "nope": 1}));
        assert!(parsed.is_err());
    }
}
