//! The instrument master as a versioned dataset: the reference files are loaded into the Delta
//! table `ref.instruments`, one full snapshot per version, and enrichment uses (and records on
//! every row) the version number of the snapshot it enriches with.
//!
//! A new version is appended only when the files' content changes (SHA-256 over the files in
//! configuration order), so restarts and several enrichment processes on the same files share
//! one version. The append goes through the exactly-once sink with the version number as its
//! `txn` (app id `reference:instruments:0`): two processes that see new content at once cannot
//! both append the same number — the second finds the first's snapshot and uses it when the
//! content matches, or appends the next number when it does not. The files are looked at again
//! every `enrich.reference_check_secs` while enrichment runs, so a new instrument master takes
//! effect without a restart; rows already enriched keep the version they were enriched with.

use std::path::PathBuf;
use std::sync::Arc;

use marketlake_lake::read::{data_files, read_file_as, table_layout};
use marketlake_lake::{CommitOutcome, ExactlyOnceSink, LakeConfig, OffsetAdvance, TableSpec};
use marketlake_schemas::names::REF_INSTRUMENTS;
use marketlake_schemas::reference::{
    instruments_batch, instruments_schema, InstrumentRow, ReferenceVersion,
};
use sha2::{Digest, Sha256};

use crate::pipeline::PipelineError;
use crate::{EnrichError, InstrumentMaster};

/// `txn` app id prefix of the reference loader.
const SINK_NAME: &str = "reference";
/// The `txn` "topic" and "partition" the version number is stored under.
const VERSION_KEY: (&str, i32) = ("instruments", 0);
/// Attempts when another process appends versions at the same moment.
const MAX_APPEND_ATTEMPTS: usize = 5;

/// The table spec of `ref.instruments`.
pub fn reference_spec() -> TableSpec {
    TableSpec {
        name: REF_INSTRUMENTS,
        schema: instruments_schema(),
        partition_columns: Vec::new(),
        description: "every version of the instrument master enrichment used; reference_version = the number enriched rows record",
    }
}

/// The reference files and their dataset.
pub struct ReferenceDataset {
    files: Vec<PathBuf>,
    sink: ExactlyOnceSink,
    /// Hash of the content the current master was loaded from.
    loaded: Option<String>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let digest = Sha256::digest(bytes);
    digest.iter().fold(String::with_capacity(64), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

impl ReferenceDataset {
    /// Open (or create) `ref.instruments` for these files.
    pub async fn open(lake: &LakeConfig, files: &[PathBuf]) -> Result<Self, PipelineError> {
        let sink = ExactlyOnceSink::open(lake, reference_spec(), SINK_NAME).await?;
        Ok(ReferenceDataset {
            files: files.to_vec(),
            sink,
            loaded: None,
        })
    }

    /// Read the files; when their content differs from what was last loaded, return the master
    /// at its dataset version (appending a version when the dataset does not hold this content
    /// as its latest). `None`: unchanged.
    pub async fn refresh(&mut self) -> Result<Option<Arc<InstrumentMaster>>, PipelineError> {
        // Each file is read once: its bytes are hashed, and parsed only when they changed.
        let mut files = Vec::with_capacity(self.files.len());
        let mut content = Vec::new();
        for file in &self.files {
            let bytes = std::fs::read(file).map_err(|source| PipelineError::Io {
                path: file.display().to_string(),
                source,
            })?;
            content.extend_from_slice(&Sha256::digest(&bytes));
            files.push((file, bytes));
        }
        // One hash per file, hashed again: the same files in the same order, the same content.
        let content_sha256 = sha256_hex(&content);
        if self.loaded.as_deref() == Some(content_sha256.as_str()) {
            return Ok(None);
        }
        let mut master = InstrumentMaster::from_instruments(0, []);
        for (file, bytes) in &files {
            master.merge(InstrumentMaster::from_reader(
                bytes.as_slice(),
                0,
                &file.display().to_string(),
            )?);
        }
        if master.is_empty() {
            return Err(EnrichError::Reference {
                what: format!("{:?}", self.files),
                reason: "no instrument in the reference files".into(),
            }
            .into());
        }
        let sources = self
            .files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(",");
        for _ in 0..MAX_APPEND_ATTEMPTS {
            let latest = self
                .sink
                .stored_offsets(&[(VERSION_KEY.0.to_string(), VERSION_KEY.1)])
                .await?
                .into_values()
                .next()
                .flatten();
            if let Some(latest) = latest {
                if self.content_of(latest).await?.as_deref() == Some(content_sha256.as_str()) {
                    master.version = latest;
                    tracing::info!(
                        reference_version = latest,
                        instruments = master.len(),
                        "instrument master: the dataset's latest version has this content"
                    );
                    self.loaded = Some(content_sha256);
                    return Ok(Some(Arc::new(master)));
                }
            }
            let next = latest.map_or(1, |v| v + 1);
            let version = ReferenceVersion {
                reference_version: next,
                content_sha256: content_sha256.clone(),
                sources: sources.clone(),
                loaded_at_ns: marketlake_schemas::now_utc_ns(),
            };
            let mut rows: Vec<InstrumentRow> = master.iter().cloned().collect();
            rows.sort_by(|a, b| a.symbol.cmp(&b.symbol));
            let batch = instruments_batch(&version, &rows)?;
            let advance = OffsetAdvance {
                topic: VERSION_KEY.0.to_string(),
                partition: VERSION_KEY.1,
                from: latest,
                to: next,
            };
            match self.sink.commit(batch, &[advance]).await? {
                CommitOutcome::Committed { .. } => {
                    master.version = next;
                    tracing::info!(
                        reference_version = next,
                        instruments = master.len(),
                        "instrument master: new version appended to ref.instruments"
                    );
                    self.loaded = Some(content_sha256);
                    return Ok(Some(Arc::new(master)));
                }
                // Another process appended first: look at what it appended.
                CommitOutcome::Conflict { .. } => continue,
            }
        }
        Err(EnrichError::Reference {
            what: REF_INSTRUMENTS.to_string(),
            reason: "other processes kept appending versions; try again".into(),
        }
        .into())
    }

    /// The content hash of version `version`, read from the files whose log statistics say
    /// they hold it (one snapshot's files, not the table's history).
    async fn content_of(&self, version: i64) -> Result<Option<String>, PipelineError> {
        // The sink's table, brought up to date by `stored_offsets` just before.
        let table = self.sink.table();
        let layout = table_layout(table)?;
        let store = table.object_store();
        for file in data_files(table).await? {
            let holds = file
                .stats
                .as_deref()
                .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
                .is_none_or(|stats| {
                    let bound = |which: &str| {
                        stats
                            .get(which)
                            .and_then(|m| m.get("reference_version"))
                            .and_then(serde_json::Value::as_i64)
                    };
                    bound("minValues").is_none_or(|min| min <= version)
                        && bound("maxValues").is_none_or(|max| max >= version)
                });
            if !holds {
                continue;
            }
            for batch in read_file_as(&store, &file, &layout).await? {
                let versions = batch.column_by_name("reference_version").and_then(|c| {
                    c.as_any()
                        .downcast_ref::<marketlake_lake::read::Int64Array>()
                });
                let hashes = batch.column_by_name("content_sha256").and_then(|c| {
                    c.as_any()
                        .downcast_ref::<marketlake_lake::read::StringArray>()
                });
                if let (Some(versions), Some(hashes)) = (versions, hashes) {
                    for row in 0..batch.num_rows() {
                        if versions.value(row) == version {
                            return Ok(Some(hashes.value(row).to_string()));
                        }
                    }
                }
            }
        }
        Ok(None)
    }
}
