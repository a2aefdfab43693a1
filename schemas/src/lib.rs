//! marketlake-schemas: the vocabulary every other crate shares.
//!
//! - [`names`]: Kafka topic and Delta table names, so no crate spells them twice.
//! - [`raw`]: the raw envelope a connector publishes (bytes as received + source metadata) and
//!   its dead-letter twin, with their encoding as Kafka headers.
//! - [`l1`]: the Arrow schema of the L1 raw tables and the conversion from consumed records.
//! - [`decimal`]: exact prices and quantities as scaled integers.
//! - [`l2`]: the enriched record types (trades, news, quarantine) and their Arrow schemas.
//! - [`extra`]: configured extra L2 columns (fields a feed gained later; schema evolution).
//! - [`reference`]: `ref.instruments`, every version of the instrument master.
//! - [`l3`]: the curated record types (bars, news–trade windows) and their Arrow schemas.
//!
//! This crate is deliberately light (serde, arrow-schema/array/select only) so connectors and tests can
//! depend on it without pulling in Kafka or Delta.

pub mod decimal;
pub mod extra;
pub mod l1;
pub mod l2;
pub mod l3;
pub mod names;
pub mod raw;
pub mod reference;

pub use raw::{DeadLetter, FeedClass, KafkaPosition, PayloadFormat, RawRecord};

/// Errors raised while decoding shared record types.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("kafka header `{0}` is missing")]
    MissingHeader(&'static str),
    #[error("kafka header `{name}` has an invalid value: {reason}")]
    InvalidHeader { name: &'static str, reason: String },
    #[error("arrow error: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
}

pub type Result<T, E = SchemaError> = std::result::Result<T, E>;

/// Text columns whose values repeat across rows (a few hundred symbols, accounts or venues in
/// millions of rows). An extraction that asks for dictionaries serves them as Arrow
/// dictionary columns, each distinct value once per batch or row group instead of once per
/// row: the file's dictionary pages are kept as they are, and a column written without one
/// is dictionary-encoded as it is read. A column named here means the same thing in every
/// table that has it.
pub const CATEGORICAL_COLUMNS: &[&str] = &[
    "account",
    "action",
    "anchor_source",
    "cik",
    "connector",
    "currency",
    "exchange",
    "figi",
    "instrument_name",
    "isin",
    "kafka_topic",
    "language",
    "payload_format",
    "publisher",
    "raw_topic",
    "rule",
    "side",
    "source_id",
    "source_uri",
    "symbol",
    "target_table",
    "ticker",
    "trader",
    "venue",
];

/// Current time as UTC nanoseconds since the Unix epoch (the unit of every `*_ns` column).
pub fn now_utc_ns() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_nanos()).unwrap_or(i64::MAX)
}

/// The `q`-quantile (0..=1, nearest rank) of latency samples in microseconds, as milliseconds;
/// `None` without samples. Shared by every service report and bench.
pub fn quantile_ms(samples_us: &[i64], q: f64) -> Option<f64> {
    if samples_us.is_empty() {
        return None;
    }
    let mut sorted = samples_us.to_vec();
    sorted.sort_unstable();
    let index = ((sorted.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
    sorted.get(index).map(|us| *us as f64 / 1_000.0)
}
