//! CSV tick lines → trades, read with the column names the connector recorded (`columns`
//! attribute: the file's header, the configured names, or the LEAN layout).
//!
//! - LEAN files (a `file_date` attribute and a `time_ms` column): `time_ms` is milliseconds
//!   after midnight New York on the file date, `price` an integer in 1/10000 dollars, the
//!   `exchange` code is the venue and `suspicious` = 1 is kept as the flag `suspicious`.
//! - Other files: the price and quantity columns are decimal text; the time comes from a
//!   timestamp column (RFC 3339, `YYYY-MM-DD HH:MM:SS[.f]` as UTC, FIX style, or epoch
//!   s/ms/us/ns) or a date column plus a time column.
//! - Files with open/high/low/close columns are bars, not trades.
//!
//! Column names are matched case-insensitively against the aliases below; the trade key is
//! `<source_id>:<trade id column>` when there is one, else `<source_id>:<uri>#<position>`.

use marketlake_schemas::decimal::PRICE_SCALE;
use marketlake_schemas::RawRecord;

use super::{Found, TradeFacts};
use crate::record::{self, Bad};
use crate::time;

const PRICE: &[&str] = &["price", "last", "last_price", "trade_price", "px"];
const QUANTITY: &[&str] = &["quantity", "qty", "size", "shares", "last_qty", "volume"];
const TIMESTAMP: &[&str] = &[
    "timestamp",
    "datetime",
    "date_time",
    "trade_time",
    "event_time",
    "transact_time",
    "time",
];
const DATE: &[&str] = &["date", "trade_date"];
const SYMBOL: &[&str] = &["symbol", "ticker", "sym", "instrument"];
const TRADE_ID: &[&str] = &["trade_id", "tradeid", "exec_id", "id"];
const SIDE: &[&str] = &["side"];
const VENUE: &[&str] = &["exchange", "venue", "market", "mic"];
const CURRENCY: &[&str] = &["currency", "ccy"];
/// Prices of LEAN equity files are integers in 1/10000 dollars.
const LEAN_PRICE_SCALE: u32 = 4;

pub(crate) struct Row<'a> {
    names: Vec<&'a str>,
    values: Vec<String>,
}

impl Row<'_> {
    fn index(&self, aliases: &[&str]) -> Option<usize> {
        aliases.iter().find_map(|alias| {
            self.names
                .iter()
                .position(|n| n.trim().eq_ignore_ascii_case(alias))
        })
    }

    /// `(column name, value)` of the first alias present with a non-empty value.
    pub(crate) fn get(&self, aliases: &[&str]) -> Option<(String, &str)> {
        let index = self.index(aliases)?;
        let value = self.values.get(index)?.trim();
        let name = self.names.get(index).copied().unwrap_or_default().trim();
        (!value.is_empty()).then(|| (format!("csv column `{name}`"), value))
    }

    fn has(&self, name: &str) -> bool {
        self.index(&[name]).is_some()
    }
}

fn column_names(raw: &RawRecord) -> Result<Vec<&str>, Bad> {
    match raw.attributes.get("columns") {
        Some(columns) => Ok(columns.split(',').collect()),
        None => Err(Bad::layout(
            "csv line without a `columns` attribute: the connector could not tell the layout; set `columns` (or `has_header`) on the source",
        )),
    }
}

/// The line's values under the column names the connector recorded.
pub(crate) fn row_of(raw: &RawRecord) -> Result<Row<'_>, Bad> {
    let names = column_names(raw)?;
    let delimiter = match raw.attributes.get("delimiter").map(|d| d.as_bytes()) {
        None => b',',
        Some([byte]) => *byte,
        Some(_) => return Err(Bad::layout("csv `delimiter` attribute is not one byte")),
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .delimiter(delimiter)
        .flexible(true)
        .from_reader(raw.payload.as_slice());
    let mut record = csv::ByteRecord::new();
    match reader.read_byte_record(&mut record) {
        Ok(true) => {}
        Ok(false) => return Err(Bad::layout("empty csv line")),
        Err(e) => return Err(Bad::layout(format!("csv line cannot be read: {e}"))),
    }
    let values: Vec<String> = record
        .iter()
        .map(|field| String::from_utf8_lossy(field).into_owned())
        .collect();
    if values.len() != names.len() {
        return Err(Bad::layout(format!(
            "csv line has {} fields, the layout `{}` has {}",
            values.len(),
            names.join(","),
            names.len()
        )));
    }
    Ok(Row { names, values })
}

pub(super) fn parse(raw: &RawRecord) -> Result<Found, Bad> {
    let names = column_names(raw)?;
    if ["open", "high", "low", "close"]
        .iter()
        .all(|c| names.iter().any(|n| n.trim().eq_ignore_ascii_case(c)))
    {
        return Ok(Found::NotATrade(
            "csv trade bars (open/high/low/close/volume per interval), not individual trades"
                .to_owned(),
        ));
    }
    let row = row_of(raw)?;
    let lean = raw.attributes.contains_key("file_date") && row.has("time_ms");

    let (price_name, price_text) = row
        .get(PRICE)
        .ok_or_else(|| Bad::missing("csv price column"))?;
    let price = if lean {
        let units: i64 = price_text.parse().map_err(|_| {
            Bad::field(
                &price_name,
                price_text,
                "not an integer in 1/10000 dollars (LEAN)",
            )
        })?;
        record::rescaled(&price_name, units, LEAN_PRICE_SCALE, PRICE_SCALE)?
    } else {
        record::price(&price_name, price_text)?
    };
    let (quantity_name, quantity_text) = row
        .get(QUANTITY)
        .ok_or_else(|| Bad::missing("csv quantity column"))?;
    let quantity = record::quantity(&quantity_name, quantity_text)?;
    let event_time_ns = if lean {
        lean_time(raw, &row)?
    } else {
        plain_time(&row)?
    };
    let symbol = match row.get(SYMBOL) {
        Some((name, value)) => record::symbol(&name, value)?,
        None => raw
            .symbol
            .as_deref()
            .map(|s| record::symbol("record symbol", s))
            .transpose()?
            .ok_or_else(|| Bad::missing("csv symbol (no symbol column and no source symbol)"))?,
    };
    let source = &raw.source_id;
    let trade_id = row.get(TRADE_ID).map(|(_, id)| id.to_owned());
    let key = match &trade_id {
        Some(id) => format!("{source}:{id}"),
        None => format!("{source}:{}#{}", raw.source_uri, raw.source_position),
    };
    let mut facts = TradeFacts::new(key, symbol, price, quantity, event_time_ns);
    facts.trade_id = trade_id;
    facts.side = row.get(SIDE).map(|(_, s)| s.to_ascii_lowercase());
    facts.venue = row.get(VENUE).map(|(_, v)| v.to_owned());
    facts.currency = row.get(CURRENCY).map(|(_, c)| c.to_ascii_uppercase());
    if row.get(&["suspicious"]).is_some_and(|(_, v)| v == "1") {
        facts.flags.push("suspicious".to_owned());
    }
    Ok(Found::Trades(vec![facts]))
}

fn lean_time(raw: &RawRecord, row: &Row) -> Result<i64, Bad> {
    let file_date = raw
        .attributes
        .get("file_date")
        .map(String::as_str)
        .unwrap_or_default();
    let date = chrono::NaiveDate::parse_from_str(file_date, "%Y-%m-%d").map_err(|_| {
        Bad::field(
            "csv `file_date` attribute",
            file_date,
            "not a YYYY-MM-DD date",
        )
    })?;
    let (name, text) = row
        .get(&["time_ms"])
        .ok_or_else(|| Bad::missing("csv column `time_ms`"))?;
    let ms: i64 = text
        .parse()
        .map_err(|_| Bad::field(&name, text, "not an integer of milliseconds"))?;
    time::new_york_to_utc(date, ms).ok_or_else(|| {
        Bad::field(
            &name,
            text,
            "not within a day (0..86400000 ms after midnight New York)",
        )
    })
}

fn plain_time(row: &Row) -> Result<i64, Bad> {
    let stamp = row.get(TIMESTAMP);
    if let Some((name, text)) = &stamp {
        if let Some(ns) = time::any_text(text) {
            return Ok(ns);
        }
        if let Some((_, date)) = row.get(DATE) {
            if let Some(ns) = time::any_text(&format!("{date} {text}"))
                .or_else(|| time::any_text(&format!("{date}-{text}")))
            {
                return Ok(ns);
            }
        }
        return Err(Bad::field(name, text, "not a timestamp"));
    }
    match row.get(DATE) {
        Some((name, text)) => {
            time::any_text(text).ok_or_else(|| Bad::field(&name, text, "not a timestamp"))
        }
        None => Err(Bad::missing("csv time column")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::trades_of;
    use super::super::{parse_trade, TradeParse};
    use crate::samples::*;
    use marketlake_schemas::RawRecord;

    #[test]
    fn ibm_ticks_match_provenance() {
        let records = csv_records("marketdata/csv/20131007_ibm_Trade_Tick.csv").unwrap();
        let rows = trades_of(&records, None);
        assert_eq!(rows.len(), 24_293);
        let quantity: i64 = rows.iter().map(|r| r.quantity).sum();
        assert_eq!(quantity, 3_960_352 * 10_000);
        let low = rows.iter().map(|r| r.price).min().unwrap();
        let high = rows.iter().map(|r| r.price).max().unwrap();
        assert_eq!((low, high), (18_135_000_000, 18_331_000_000));
        assert!(rows.iter().all(|r| r.symbol == "IBM" && r.flags.is_empty()));
        // First tick 14430270 ms = 04:00:30.270 EDT = 08:00:30.270Z; 1815200 = $181.52.
        assert_eq!(rows[0].event_time_ns, 1_381_132_830_270_000_000);
        assert_eq!(rows[0].price, 18_152_000_000);
        assert_eq!(rows[0].venue.as_deref(), Some("P"));
        assert!(rows[0].trade_key.starts_with("trades-csv-sample:file://"));
        // time_ms 69967550 = 19:26:07.550 EDT, the last tick.
        let last = rows.iter().map(|r| r.event_time_ns).max().unwrap();
        assert_eq!(last, 1_381_188_367_550_000_000);
    }

    #[test]
    fn vendor_bars_are_not_trades() {
        for file in [
            "marketdata/csv/20140605_aapl_minute_trade.csv",
            "marketdata/csv/20151224_goog_minute_trade.csv",
        ] {
            let records = csv_records(file).unwrap();
            assert!(!records.is_empty());
            for raw in &records {
                match parse_trade(raw, &at(), None) {
                    TradeParse::NotATrade { reason } => {
                        assert!(reason.contains("bars"), "{reason}")
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
    }

    fn line(columns: &str, payload: &str) -> RawRecord {
        let mut raw = csv_records("marketdata/csv/20131007_ibm_Trade_Tick.csv")
            .unwrap()
            .remove(0);
        raw.attributes.clear();
        raw.attributes.insert("columns".into(), columns.into());
        raw.payload = payload.as_bytes().to_vec();
        raw.symbol = None;
        raw
    }

    #[test]
    fn headered_files_with_decimal_prices() {
        let raw = line(
            "Symbol,Timestamp,Price,Size,Side,Trade_ID",
            "AAPL,2024-01-02T14:30:00.5Z,185.6400,\"1,000\",BUY,T-9",
        );
        match parse_trade(&raw, &at(), None) {
            TradeParse::Malformed { reason, .. } => {
                assert!(reason.contains("csv column `Size` `1,000`"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        let raw = line(
            "Symbol,Timestamp,Price,Size,Side,Trade_ID",
            "AAPL,2024-01-02T14:30:00.5Z,185.6400,100,BUY,T-9",
        );
        let TradeParse::Trades(rows) = parse_trade(&raw, &at(), None) else {
            panic!()
        };
        assert_eq!(rows[0].trade_key, "trades-csv-sample:T-9");
        assert_eq!(
            (rows[0].price, rows[0].quantity),
            (18_564_000_000, 1_000_000)
        );
        assert_eq!(rows[0].event_time_ns, 1_704_205_800_500_000_000);
        assert_eq!(rows[0].side.as_deref(), Some("buy"));
        let raw = line(
            "date,time,symbol,price,qty",
            "2024-01-02,14:30:00,MSFT,1.5,2",
        );
        let TradeParse::Trades(rows) = parse_trade(&raw, &at(), None) else {
            panic!()
        };
        assert_eq!(rows[0].event_time_ns, 1_704_205_800_000_000_000);
    }

    #[test]
    fn unreadable_lines_name_the_column() {
        for (columns, payload, needle) in [
            (
                "symbol,time,price,qty",
                "X,2024-01-02T00:00:00Z,abc,1",
                "`price` `abc`",
            ),
            (
                "symbol,time,price,qty",
                "X,yesterday,1,1",
                "`time` `yesterday`",
            ),
            (
                "symbol,time,price,qty",
                "X,2024-01-02T00:00:00Z,1",
                "has 3 fields",
            ),
            ("time,price,qty", "2024-01-02T00:00:00Z,1,1", "csv symbol"),
            (
                "symbol,time,qty",
                "X,2024-01-02T00:00:00Z,1",
                "price column is missing",
            ),
        ] {
            match parse_trade(&line(columns, payload), &at(), None) {
                TradeParse::Malformed { reason, .. } => {
                    assert!(reason.contains(needle), "{payload}: {reason}")
                }
                other => panic!("{payload}: {other:?}"),
            }
        }
        let mut no_layout = line("a", "1");
        no_layout.attributes.clear();
        assert!(matches!(
            parse_trade(&no_layout, &at(), None),
            TradeParse::Malformed {
                rule: "bad_layout",
                ..
            }
        ));
        let mut lean = csv_records("marketdata/csv/20131007_ibm_Trade_Tick.csv")
            .unwrap()
            .remove(0);
        lean.payload = b"99999999999,1815200,283,P,20002020,1".to_vec();
        assert!(
            matches!(parse_trade(&lean, &at(), None), TradeParse::Malformed { reason, .. } if reason.contains("time_ms"))
        );
        lean.payload = b"14430270,1815200,283,P,20002020,1".to_vec();
        let TradeParse::Trades(rows) = parse_trade(&lean, &at(), None) else {
            panic!()
        };
        assert_eq!(rows[0].flags, ["suspicious"]);
    }
}
