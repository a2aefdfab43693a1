//! The reference dataset `ref.instruments`: every version of the instrument master the lake
//! has enriched with, one full snapshot per version.
//!
//! A version is appended only when the reference content changes (compared by the SHA-256 of
//! the files it was loaded from), and its number is what enriched rows record as
//! `reference_version` — so "which instrument data did this row see?" is answered by the rows
//! of `ref.instruments` with that `reference_version`, for as long as the table is kept.

use std::sync::Arc;

use arrow_array::builder::{Int64Builder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::Result;

/// One instrument of one reference version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstrumentRow {
    /// The ticker as the reference data spells it (`BRK-B`).
    pub symbol: String,
    pub name: Option<String>,
    /// Listing exchange, upper case (`NASDAQ`, `NYSE`, `NYSE ARCA`, `OTC`, ...).
    pub exchange: Option<String>,
    pub isin: Option<String>,
    pub figi: Option<String>,
    pub currency: Option<String>,
    /// SEC Central Index Key, ten digits zero-padded.
    pub cik: Option<String>,
}

/// What a version is: its number, the content it came from and when it was loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferenceVersion {
    pub reference_version: i64,
    /// SHA-256 (hex) of the reference files, concatenated in configuration order.
    pub content_sha256: String,
    /// The files, as configured.
    pub sources: String,
    pub loaded_at_ns: i64,
}

/// Schema of `ref.instruments`.
pub fn instruments_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("reference_version", DataType::Int64, false),
        Field::new("content_sha256", DataType::Utf8, false),
        Field::new("sources", DataType::Utf8, false),
        Field::new("loaded_at_ns", DataType::Int64, false),
        Field::new("symbol", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("exchange", DataType::Utf8, true),
        Field::new("isin", DataType::Utf8, true),
        Field::new("figi", DataType::Utf8, true),
        Field::new("currency", DataType::Utf8, true),
        Field::new("cik", DataType::Utf8, true),
    ]))
}

/// One version's snapshot as a batch of `ref.instruments`.
pub fn instruments_batch(
    version: &ReferenceVersion,
    rows: &[InstrumentRow],
) -> Result<RecordBatch> {
    let mut reference_version = Int64Builder::with_capacity(rows.len());
    let mut content = StringBuilder::new();
    let mut sources = StringBuilder::new();
    let mut loaded_at = Int64Builder::with_capacity(rows.len());
    let mut symbol = StringBuilder::new();
    let mut name = StringBuilder::new();
    let mut exchange = StringBuilder::new();
    let mut isin = StringBuilder::new();
    let mut figi = StringBuilder::new();
    let mut currency = StringBuilder::new();
    let mut cik = StringBuilder::new();
    for row in rows {
        reference_version.append_value(version.reference_version);
        content.append_value(&version.content_sha256);
        sources.append_value(&version.sources);
        loaded_at.append_value(version.loaded_at_ns);
        symbol.append_value(&row.symbol);
        name.append_option(row.name.as_deref());
        exchange.append_option(row.exchange.as_deref());
        isin.append_option(row.isin.as_deref());
        figi.append_option(row.figi.as_deref());
        currency.append_option(row.currency.as_deref());
        cik.append_option(row.cik.as_deref());
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(reference_version.finish()),
        Arc::new(content.finish()),
        Arc::new(sources.finish()),
        Arc::new(loaded_at.finish()),
        Arc::new(symbol.finish()),
        Arc::new(name.finish()),
        Arc::new(exchange.finish()),
        Arc::new(isin.finish()),
        Arc::new(figi.finish()),
        Arc::new(currency.finish()),
        Arc::new(cik.finish()),
    ];
    Ok(RecordBatch::try_new(instruments_schema(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_batch_matches_the_schema() {
        let version = ReferenceVersion {
            reference_version: 3,
            content_sha256: "ab".repeat(32),
            sources: "data/refdata/x.csv".into(),
            loaded_at_ns: 1,
        };
        let rows = [
            InstrumentRow {
                symbol: "IBM".into(),
                isin: Some("US4592001014".into()),
                ..InstrumentRow::default()
            },
            InstrumentRow {
                symbol: "AAPL".into(),
                ..InstrumentRow::default()
            },
        ];
        let batch = instruments_batch(&version, &rows).unwrap();
        assert_eq!(batch.schema(), instruments_schema());
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.column(7).null_count(), 1);
    }
}
