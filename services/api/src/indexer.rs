//! Keeps the news search index in step with `l2.news`.
//!
//! The index is a cache of the table: each index commit records the table version it covers.
//! The indexer polls the table (`api.search.poll_ms`), reads the data files that appeared since
//! the version indexed, indexes their rows (idempotently, by `news_key`) and commits with the new
//! version — so news is searchable within a poll of its L2 commit, a restart resumes where the
//! index stopped, and a lost or damaged index is rebuilt from the table. Files rewritten by
//! compaction come back as new files and are indexed again, which changes nothing.
//!
//! One process writes the index (tantivy's lock); another API instance on the same lake opens it
//! read-only and follows the writer's commits.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use marketlake_lake::read::{data_files, load_table, read_file, refresh, DeltaTable};
use marketlake_lake::LakeConfig;
use marketlake_schemas::names::L2_NEWS;
use marketlake_search::{NewsIndex, NewsReader, SearchError};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// `[api.search]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchConfig {
    pub enabled: bool,
    /// Index directory, relative to the lake root when relative.
    pub index_dir: PathBuf,
    /// How often `l2.news` is checked for new versions, milliseconds.
    pub poll_ms: u64,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            enabled: true,
            index_dir: PathBuf::from("_index/news"),
            poll_ms: 250,
        }
    }
}

impl SearchConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.poll_ms == 0 {
            return Err("setting `api.search.poll_ms`: at least 1".into());
        }
        Ok(())
    }

    pub fn dir(&self, lake: &LakeConfig) -> PathBuf {
        if self.index_dir.is_absolute() {
            self.index_dir.clone()
        } else {
            lake.root.join(&self.index_dir)
        }
    }
}

/// The search side of the API: a reader for requests and, in the process that writes the
/// index, the indexer.
pub struct Search {
    pub reader: NewsReader,
    pub writer: Option<NewsIndex>,
}

/// Open the index for writing (wiping and rebuilding a damaged one), or read-only when another
/// process holds the writer lock.
pub fn open(dir: &Path) -> Result<Search, SearchError> {
    match NewsIndex::open_or_rebuild(dir) {
        Ok(opened) => {
            if opened.rebuilt {
                tracing::warn!(dir = %dir.display(), reason = ?opened.reason, "news index rebuilt from l2.news");
            }
            Ok(Search {
                reader: opened.index.reader(),
                writer: Some(opened.index),
            })
        }
        Err(SearchError::Locked { .. }) => {
            tracing::info!(dir = %dir.display(), "news index written by another process; following it read-only");
            Ok(Search {
                reader: NewsReader::open(dir)?,
                writer: None,
            })
        }
        Err(e) => Err(e),
    }
}

/// What failed while indexing (logged; the indexer retries at the next poll).
fn log_failure(what: &str, error: &dyn std::fmt::Display) {
    tracing::warn!(error = %error, "news indexing: {what}; retrying at the next poll");
}

/// Run the indexer until `shutdown`.
pub async fn run(
    mut index: NewsIndex,
    lake: LakeConfig,
    poll: Duration,
    shutdown: CancellationToken,
) {
    // Files of the version the index covers, learnt once at start.
    let mut known: Option<HashSet<String>> = None;
    let mut table = None;
    loop {
        // Until enrichment creates l2.news there is nothing to load (and nothing to log).
        if table.is_none()
            && lake
                .root
                .join(L2_NEWS.relative_path())
                .join("_delta_log")
                .is_dir()
        {
            table = load_table(&lake, L2_NEWS, None).await.ok();
        }
        if let Some(current) = table.as_mut() {
            if let Err(e) = refresh(current).await {
                log_failure("reading l2.news", &e);
            }
            let version = current.version().and_then(|v| i64::try_from(v).ok());
            if known.is_none() {
                known = Some(match index.indexed_version() {
                    // The index is ahead of the table (the lake was recreated): start over.
                    Some(v) if version.is_some_and(|t| v > t) => HashSet::new(),
                    Some(v) => match load_table(&lake, L2_NEWS, Some(v)).await {
                        Ok(old) => match data_files(&old).await {
                            Ok(files) => files.into_iter().map(|f| f.path).collect(),
                            Err(_) => HashSet::new(),
                        },
                        Err(_) => HashSet::new(),
                    },
                    None => HashSet::new(),
                });
            }
            if let (Some(version), Some(seen)) = (version, known.as_mut()) {
                if index.indexed_version() != Some(version) {
                    match catch_up(&mut index, current, version, seen).await {
                        Ok(docs) if docs > 0 => {
                            tracing::debug!(version, docs, "news indexed")
                        }
                        Ok(_) => {}
                        Err(e) => log_failure("indexing", &e),
                    }
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

/// Index the files of `table` not in `seen`, commit with `version`; returns the rows indexed.
async fn catch_up(
    index: &mut NewsIndex,
    table: &DeltaTable,
    version: i64,
    seen: &mut HashSet<String>,
) -> Result<usize, String> {
    let files = data_files(table).await.map_err(|e| e.to_string())?;
    let store = table.object_store();
    let mut docs = 0;
    let mut current = HashSet::with_capacity(files.len());
    for file in files {
        current.insert(file.path.clone());
        if seen.contains(&file.path) {
            continue;
        }
        for batch in read_file(&store, &file).await.map_err(|e| e.to_string())? {
            docs += tokio::task::block_in_place(|| index.index_batch(&batch))
                .map_err(|e| e.to_string())?;
        }
    }
    tokio::task::block_in_place(|| index.commit(version)).map_err(|e| e.to_string())?;
    *seen = current;
    Ok(docs)
}
