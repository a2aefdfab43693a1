//! IEX-TP messages (TOPS 1.6, DEEP 1.0) → trades. Little-endian layout shared by both:
//!
//! | offset | size | trade report `T` (0x54) / trade break `B` (0x42) |
//! |---:|---:|---|
//! | 0 | 1 | message type |
//! | 1 | 1 | sale condition flags |
//! | 2 | 8 | timestamp, ns since the epoch |
//! | 10 | 8 | symbol, ASCII, space padded |
//! | 18 | 4 | size (shares) |
//! | 22 | 8 | price, 1/10000 dollars |
//! | 30 | 8 | trade id |
//!
//! A trade report is a new trade keyed `<source_id>:<trade date>:<trade id>` (IEX trade ids are
//! unique within a trading day, so the New York trading date is part of the key); a trade break
//! cancels the trade with that id. Venue is IEX's MIC `IEXG`, currency USD. Every other message
//! type (quotes, price levels, status, directory, ...) is not a trade.

use marketlake_schemas::decimal::{PRICE_SCALE, QTY_SCALE};
use marketlake_schemas::l2::TradeAction;
use marketlake_schemas::RawRecord;

use super::{Found, TradeFacts};
use crate::record::{self, Bad};
use crate::time;

const TRADE_REPORT: u8 = b'T';
const TRADE_BREAK: u8 = b'B';
const TRADE_LEN: usize = 38;
const IEX_PRICE_SCALE: u32 = 4;

fn message_name(message_type: u8) -> &'static str {
    match message_type {
        b'S' => "system event",
        b'D' => "security directory",
        b'H' => "trading status",
        b'I' => "retail liquidity indicator",
        b'O' => "operational halt status",
        b'P' => "short sale price test status",
        b'E' => "security event",
        b'Q' => "quote update",
        b'8' => "price level update (buy)",
        b'5' => "price level update (sell)",
        b'X' => "official price",
        b'A' => "auction information",
        _ => "unknown type",
    }
}

fn le_i64(bytes: &[u8], at: usize) -> Option<i64> {
    let raw: [u8; 8] = bytes.get(at..at + 8)?.try_into().ok()?;
    Some(i64::from_le_bytes(raw))
}

fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let raw: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_le_bytes(raw))
}

pub(super) fn parse(raw: &RawRecord) -> Result<Found, Bad> {
    let message = raw.payload.as_slice();
    let Some(&message_type) = message.first() else {
        return Err(Bad::layout("empty iex-tp message"));
    };
    if message_type != TRADE_REPORT && message_type != TRADE_BREAK {
        return Ok(Found::NotATrade(format!(
            "iex-tp message type `{}` (0x{message_type:02x}, {}) is not a trade",
            char::from(message_type).escape_default(),
            message_name(message_type)
        )));
    }
    let what = if message_type == TRADE_REPORT {
        "iex trade report"
    } else {
        "iex trade break"
    };
    let (Some(timestamp_ns), Some(size), Some(price_units), Some(trade_id)) = (
        le_i64(message, 2),
        le_u32(message, 18),
        le_i64(message, 22),
        le_i64(message, 30),
    ) else {
        return Err(Bad::layout(format!(
            "{what} is {} bytes, {TRADE_LEN} needed",
            message.len()
        )));
    };
    let symbol_bytes = message.get(10..18).unwrap_or_default();
    let symbol_text = String::from_utf8_lossy(symbol_bytes);
    let trimmed = symbol_text.trim_end_matches([' ', '\0']);
    if trimmed.is_empty() || !trimmed.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Bad::field(
            format!("{what} symbol"),
            &symbol_text,
            "not ascii text",
        ));
    }
    let symbol = record::symbol(&format!("{what} symbol"), trimmed)?;
    let price = record::rescaled(
        &format!("{what} price"),
        price_units,
        IEX_PRICE_SCALE,
        PRICE_SCALE,
    )?;
    let quantity = record::rescaled(&format!("{what} size"), i64::from(size), 0, QTY_SCALE)?;
    let trade_date = time::new_york_date(timestamp_ns)
        .ok_or_else(|| {
            Bad::field(
                format!("{what} timestamp"),
                &timestamp_ns.to_string(),
                "out of range",
            )
        })?
        .format("%Y%m%d");
    let source = &raw.source_id;
    let traded = format!("{source}:{trade_date}:{trade_id}");
    let mut facts = if message_type == TRADE_REPORT {
        TradeFacts::new(traded, symbol, price, quantity, timestamp_ns)
    } else {
        let mut cancel = TradeFacts::new(
            format!("{traded}:break"),
            symbol,
            price,
            quantity,
            timestamp_ns,
        );
        cancel.action = TradeAction::Cancel;
        cancel.supersedes = Some(traded);
        cancel
    };
    facts.trade_id = Some(trade_id.to_string());
    facts.venue = Some("IEXG".to_owned());
    facts.currency = Some("USD".to_owned());
    Ok(Found::Trades(vec![facts]))
}

#[cfg(test)]
mod tests {
    use super::super::tests::trades_of;
    use super::super::{parse_trade, TradeParse};
    use crate::samples::*;
    use marketlake_schemas::l2::TradeAction;

    #[test]
    fn tops_sample_trades_and_breaks() {
        let records = iex_records("marketdata/iex/iex_tops16_sample_part1.pcap.gz").unwrap();
        assert_eq!(records.len(), 44_225);
        let rows = trades_of(&records, None);
        let new: Vec<_> = rows
            .iter()
            .filter(|r| r.action == TradeAction::New)
            .collect();
        assert_eq!(new.len(), 3089);
        let shares: i64 = new.iter().map(|r| r.quantity).sum();
        assert_eq!(shares, 707_492 * 10_000);
        // First trade 2017-07-10T14:33:46.594103Z AAPL 283 @ 148.91.
        let first = new[0];
        assert_eq!(
            (first.symbol.as_str(), first.quantity, first.price),
            ("AAPL", 2_830_000, 14_891_000_000)
        );
        assert_eq!(first.event_time_ns / 1_000, 1_499_697_226_594_103);
        assert_eq!(first.venue.as_deref(), Some("IEXG"));
        assert!(first.trade_key.starts_with("iex-tops-sample:20170710:"));
        let last = new.last().unwrap();
        assert_eq!(
            (last.symbol.as_str(), last.quantity, last.price),
            ("AAPL", 760_000, 14_893_000_000)
        );

        let breaks: Vec<_> = rows
            .iter()
            .filter(|r| r.action == TradeAction::Cancel)
            .collect();
        assert_eq!(breaks.len(), 2);
        for cancel in breaks {
            let target = cancel.supersedes.as_deref().unwrap();
            assert_eq!(cancel.trade_key, format!("{target}:break"));
        }
    }

    #[test]
    fn deep_sample_trades() {
        let records =
            iex_records("marketdata/iex/iex_deep10_20231002_premarket_5000pkts.pcap.gz").unwrap();
        let rows = trades_of(&records, None);
        assert_eq!(rows.len(), 37);
        let shares: i64 = rows.iter().map(|r| r.quantity).sum();
        assert_eq!(shares, 2947 * 10_000);
        assert_eq!(
            (rows[0].symbol.as_str(), rows[0].quantity, rows[0].price),
            ("TSLA", 100_000, 25_064_000_000)
        );
        assert_eq!(rows[0].event_time_ns / 1_000, 1_696_248_001_047_749);
        let last = rows.last().unwrap();
        assert_eq!(
            (last.symbol.as_str(), last.quantity, last.price),
            ("SOXL", 500_000, 1_900_000_000)
        );
    }

    #[test]
    fn short_and_other_messages() {
        let mut raw = iex_records("marketdata/iex/iex_deep10_20231002_premarket_5000pkts.pcap.gz")
            .unwrap()
            .remove(0);
        raw.payload = vec![b'T', 0, 1, 2];
        assert!(matches!(
            parse_trade(&raw, &at(), None),
            TradeParse::Malformed { rule: "bad_layout", reason } if reason.contains("4 bytes, 38 needed")
        ));
        raw.payload = vec![b'Q'; 42];
        assert!(matches!(
            parse_trade(&raw, &at(), None),
            TradeParse::NotATrade { reason } if reason.contains("quote update")
        ));
        raw.payload = Vec::new();
        assert!(matches!(
            parse_trade(&raw, &at(), None),
            TradeParse::Malformed { .. }
        ));
        let mut report = vec![b'T', 0];
        report.extend_from_slice(&1_696_248_001_047_749_000_i64.to_le_bytes());
        report.extend_from_slice(b"\x01\x02      ");
        report.extend_from_slice(&[0; 20]);
        raw.payload = report;
        let parsed = parse_trade(&raw, &at(), None);
        assert!(
            matches!(&parsed, TradeParse::Malformed { rule: "bad_field", reason } if reason.contains("symbol")),
            "{parsed:?}"
        );
    }
}
