//! The instrument master: symbol → name, exchange, ISIN, FIGI, currency, CIK.
//!
//! Loaded from the two reference files the lake ships (`data/refdata/`), in either order and
//! merged by symbol:
//! - SEC `company_tickers_exchange.json`: `{"fields": ["cik","name","ticker","exchange"], "data": [[...]]}`
//!   (names, exchanges, CIKs);
//! - a listings identifier CSV with a header naming at least `ticker` (and any of `exchange`,
//!   `isin`, `figi`, `cik`, `name`, `currency`).
//!
//! Both describe US listings, so their currency is USD unless a `currency` column says
//! otherwise. The caller gives the master a `version` (the pipeline stores the master as a
//! versioned dataset) and every enriched row records it.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use serde::Deserialize;

use crate::{EnrichError, Result};

/// One instrument of the master: the row type of the reference dataset `ref.instruments`.
pub use marketlake_schemas::reference::InstrumentRow as Instrument;

/// Fill what `target` lacks from `other` (values already known win).
fn fill_from(target: &mut Instrument, other: Instrument) {
    fn fill(slot: &mut Option<String>, value: Option<String>) {
        if slot.is_none() {
            *slot = value;
        }
    }
    fill(&mut target.name, other.name);
    fill(&mut target.exchange, other.exchange);
    fill(&mut target.isin, other.isin);
    fill(&mut target.figi, other.figi);
    fill(&mut target.currency, other.currency);
    fill(&mut target.cik, other.cik);
}

/// Symbol-keyed instrument reference data of one version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstrumentMaster {
    /// Version of the reference dataset, recorded as `reference_version` on enriched rows.
    pub version: i64,
    by_symbol: HashMap<String, Instrument>,
}

/// Lookup key: upper case, share-class separators unified (`BRK.B`, `BRK/B`, `brk-b` → `BRK-B`).
pub(crate) fn symbol_key(symbol: &str) -> String {
    symbol
        .trim()
        .chars()
        .map(|c| match c {
            '.' | '/' | ' ' => '-',
            other => other.to_ascii_uppercase(),
        })
        .collect()
}

fn non_empty(value: &str) -> Option<String> {
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_owned())
}

/// CIKs are numbers; the SEC writes them ten digits zero-padded.
fn cik_text(value: &str) -> Option<String> {
    let value = value.trim();
    let number: u64 = value.parse().ok()?;
    Some(format!("{number:010}"))
}

impl InstrumentMaster {
    /// A master from instruments (later entries for the same symbol fill what earlier ones lack).
    pub fn from_instruments(
        version: i64,
        instruments: impl IntoIterator<Item = Instrument>,
    ) -> Self {
        let mut master = InstrumentMaster {
            version,
            by_symbol: HashMap::new(),
        };
        for instrument in instruments {
            master.insert(instrument);
        }
        master
    }

    fn insert(&mut self, instrument: Instrument) {
        let key = symbol_key(&instrument.symbol);
        if key.is_empty() {
            return;
        }
        match self.by_symbol.get_mut(&key) {
            Some(existing) => fill_from(existing, instrument),
            None => {
                self.by_symbol.insert(key, instrument);
            }
        }
    }

    /// Merge another master into this one (this one's values win; the version stays).
    pub fn merge(&mut self, other: InstrumentMaster) {
        for (_, instrument) in other.by_symbol {
            self.insert(instrument);
        }
    }

    /// Read one reference file, detecting its format: a JSON object in the SEC
    /// `{fields, data}` layout, else a CSV with a header. `what` names the input in errors.
    pub fn from_reader(mut reader: impl Read, version: i64, what: &str) -> Result<Self> {
        let mut bytes = Vec::new();
        reader
            .read_to_end(&mut bytes)
            .map_err(|source| EnrichError::Io {
                path: what.to_owned(),
                source,
            })?;
        let body = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&bytes);
        let first = body.iter().find(|b| !b.is_ascii_whitespace());
        let instruments = if first == Some(&b'{') {
            read_sec_json(body, what)?
        } else {
            read_listings_csv(body, what)?
        };
        Ok(Self::from_instruments(version, instruments))
    }

    /// [`InstrumentMaster::from_reader`] on a file.
    pub fn from_path(path: impl AsRef<Path>, version: i64) -> Result<Self> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|source| EnrichError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_reader(file, version, &path.display().to_string())
    }

    /// Several files merged, earlier files winning where both know a value.
    pub fn from_paths<P: AsRef<Path>>(paths: &[P], version: i64) -> Result<Self> {
        let mut master = Self::from_instruments(version, []);
        for path in paths {
            master.merge(Self::from_path(path, version)?);
        }
        Ok(master)
    }

    /// The instrument of `symbol` (case and share-class separator insensitive).
    pub fn lookup(&self, symbol: &str) -> Option<&Instrument> {
        self.by_symbol.get(&symbol_key(symbol))
    }

    pub fn len(&self) -> usize {
        self.by_symbol.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_symbol.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Instrument> {
        self.by_symbol.values()
    }
}

fn bad(what: &str, reason: impl Into<String>) -> EnrichError {
    EnrichError::Reference {
        what: what.to_owned(),
        reason: reason.into(),
    }
}

#[derive(Deserialize)]
struct SecTickers {
    fields: Vec<String>,
    data: Vec<Vec<serde_json::Value>>,
}

fn read_sec_json(bytes: &[u8], what: &str) -> Result<Vec<Instrument>> {
    let parsed: SecTickers = serde_json::from_slice(bytes)
        .map_err(|e| bad(what, format!("not a {{fields, data}} json document: {e}")))?;
    let column = |name: &str| {
        parsed
            .fields
            .iter()
            .position(|f| f.eq_ignore_ascii_case(name))
    };
    let ticker = column("ticker").ok_or_else(|| bad(what, "`fields` has no `ticker`"))?;
    let (name, exchange, cik) = (column("name"), column("exchange"), column("cik"));
    let text = |row: &[serde_json::Value], index: Option<usize>| -> Option<String> {
        match row.get(index?)? {
            serde_json::Value::String(s) => non_empty(s),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    };
    let mut instruments = Vec::with_capacity(parsed.data.len());
    for (i, row) in parsed.data.iter().enumerate() {
        let Some(symbol) = text(row, Some(ticker)) else {
            return Err(bad(what, format!("data row {i} has no ticker")));
        };
        instruments.push(Instrument {
            symbol,
            name: text(row, name),
            exchange: text(row, exchange).map(|e| e.to_ascii_uppercase()),
            cik: text(row, cik).and_then(|c| cik_text(&c)),
            currency: Some("USD".to_owned()),
            ..Instrument::default()
        });
    }
    Ok(instruments)
}

fn read_listings_csv(bytes: &[u8], what: &str) -> Result<Vec<Instrument>> {
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(bytes);
    let headers = reader
        .headers()
        .map_err(|e| bad(what, format!("csv header: {e}")))?
        .clone();
    let column = |names: &[&str]| {
        headers
            .iter()
            .position(|h| names.iter().any(|n| h.trim().eq_ignore_ascii_case(n)))
    };
    let ticker = column(&["ticker", "symbol"])
        .ok_or_else(|| bad(what, "csv header has no `ticker` or `symbol` column"))?;
    let (name, exchange, isin, figi, cik, currency) = (
        column(&["name", "company_name"]),
        column(&["exchange"]),
        column(&["isin"]),
        column(&["figi"]),
        column(&["cik"]),
        column(&["currency"]),
    );
    let mut instruments = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| bad(what, format!("csv row {}: {e}", i + 1)))?;
        let get = |index: Option<usize>| index.and_then(|i| record.get(i)).and_then(non_empty);
        let Some(symbol) = get(Some(ticker)) else {
            continue;
        };
        instruments.push(Instrument {
            symbol,
            name: get(name),
            exchange: get(exchange).map(|e| e.to_ascii_uppercase()),
            isin: get(isin),
            figi: get(figi),
            currency: get(currency).or_else(|| Some("USD".to_owned())),
            cik: get(cik).and_then(|c| cik_text(&c)),
        });
    }
    Ok(instruments)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::samples::{bundled_master as bundled, data_path};

    #[test]
    fn bundled_reference_files_merge_by_symbol() {
        let sec = InstrumentMaster::from_path(
            data_path("refdata/sec_company_tickers_exchange_2025-01.json"),
            1,
        )
        .unwrap();
        assert_eq!(sec.len(), 10_015);
        let listings =
            InstrumentMaster::from_path(data_path("refdata/us_listings_identifiers.csv"), 1)
                .unwrap();
        assert_eq!(listings.len(), 10_848);

        let master = bundled(7).unwrap();
        assert_eq!(master.version, 7);
        assert!(master.len() >= 10_848);
        let apple = master.lookup("aapl").unwrap();
        assert_eq!(apple.name.as_deref(), Some("Apple Inc."));
        assert_eq!(apple.exchange.as_deref(), Some("NASDAQ"));
        assert_eq!(apple.isin.as_deref(), Some("US0378331005"));
        assert_eq!(apple.cik.as_deref(), Some("0000320193"));
        assert_eq!(apple.currency.as_deref(), Some("USD"));
        let berkshire = master.lookup("BRK.B").unwrap();
        assert_eq!(berkshire.symbol, "BRK-B");
        assert!(master.lookup("NOPE1").is_none());
        // A listing-only instrument keeps its FIGI.
        assert!(master.iter().any(|i| i.figi.is_some()));
    }

    #[test]
    fn formats_are_detected_and_errors_name_the_input() {
        let json =
            br#" {"fields":["cik","name","ticker","exchange"],"data":[[1,"X Corp","XX",null]]}"#;
        let master = InstrumentMaster::from_reader(&json[..], 2, "inline").unwrap();
        assert_eq!(
            master.lookup("xx").unwrap().cik.as_deref(),
            Some("0000000001")
        );
        let csv = b"ticker,isin,currency\nABC,US0000000001,\nSAP,DE0007164600,EUR\n";
        let master = InstrumentMaster::from_reader(&csv[..], 2, "inline.csv").unwrap();
        assert_eq!(
            master.lookup("SAP").unwrap().currency.as_deref(),
            Some("EUR")
        );
        assert_eq!(
            master.lookup("ABC").unwrap().currency.as_deref(),
            Some("USD")
        );

        let err = InstrumentMaster::from_reader(&b"{\"rows\": []}"[..], 1, "x.json").unwrap_err();
        assert!(err.to_string().contains("x.json"), "{err}");
        let err = InstrumentMaster::from_reader(&b"a,b\n1,2\n"[..], 1, "y.csv").unwrap_err();
        assert!(err.to_string().contains("no `ticker`"), "{err}");
        let err = InstrumentMaster::from_path("/nonexistent/master.csv", 1).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/master.csv"), "{err}");
    }

    #[test]
    fn from_instruments_fills_gaps_without_overwriting() {
        let master = InstrumentMaster::from_instruments(
            1,
            [
                Instrument {
                    symbol: "IBM".into(),
                    name: Some("IBM".into()),
                    ..Instrument::default()
                },
                Instrument {
                    symbol: "ibm".into(),
                    name: Some("Other".into()),
                    isin: Some("US4592001014".into()),
                    ..Instrument::default()
                },
            ],
        );
        let ibm = master.lookup("IBM").unwrap();
        assert_eq!(ibm.name.as_deref(), Some("IBM"));
        assert_eq!(ibm.isin.as_deref(), Some("US4592001014"));
        assert_eq!(master.len(), 1);
    }
}
