//! marketlake-lake: the Delta Lake side of every service.
//!
//! - [`LakeConfig`] / [`TableSpec`]: where tables live and what they look like; tables are
//!   created append-only with retention measured in years.
//! - [`ExactlyOnceSink`]: commit a batch together with the Kafka offsets it covers as Delta `txn`
//!   actions, refusing the commit when another writer moved those offsets first.
//! - [`extract`]: entitlement row filters, projections and masks on Arrow batches; JSON/NDJSON/CSV.
//! - [`maintain`]: compaction of small files and checkpoints, without blocking writers.
//! - [`footers`]: parsed Parquet footers and page indexes kept across scans (files never change).
//! - [`scan`]: pruned, streaming, resumable reads of a version (what the API serves from).
//! - [`read`]: read a table (or one version of it) back as Arrow batches, for tests, tools and
//!   as-of reads.

pub mod extract;
mod file_format;
pub mod footers;
pub mod maintain;
pub mod read;
pub mod scan;
pub mod sink;
pub mod spec;
pub mod textfile;

pub use deltalake::arrow::datatypes::Schema;
pub use deltalake::arrow::record_batch::RecordBatch;
pub use sink::{CommitOutcome, ExactlyOnceSink, OffsetAdvance};
pub use spec::{open_or_create, LakeConfig, TableSpec};

#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    #[error("invalid setting `{setting}`: {message}")]
    Config { setting: String, message: String },
    #[error("delta table {table}: {source}")]
    Delta {
        table: String,
        #[source]
        source: Box<deltalake::DeltaTableError>,
    },
    #[error(
        "table {table} has a different schema than this version of marketlake expects: {message}"
    )]
    SchemaMismatch { table: String, message: String },
    #[error("reading {what}: {message}")]
    Read { what: String, message: String },
}

pub type Result<T, E = LakeError> = std::result::Result<T, E>;

pub(crate) fn delta_error(table: &str) -> impl Fn(deltalake::DeltaTableError) -> LakeError + '_ {
    move |source| LakeError::Delta {
        table: table.to_string(),
        source: Box::new(source),
    }
}
