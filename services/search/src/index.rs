//! The write side: the on-disk index ([`NewsIndex`]) — opening, refusing or wiping a damaged
//! one, indexing docs idempotently by `news_key`, and commits that record which `l2.news`
//! version they cover.
//!
//! The index is a cache of `l2.news`, never a source of truth: anything wrong with it is
//! answered by deleting it and indexing the table again. So damage is reported as
//! [`SearchError::Corrupt`] / [`SearchError::Incompatible`] (or wiped by
//! [`NewsIndex::open_or_rebuild`]), and the table version indexed lives in the same atomic
//! commit as the docs (tantivy's commit payload, in `meta.json`): after a crash the index says
//! exactly which version to resume after, and re-indexing rows already in it replaces them.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use serde::Deserialize;
use tantivy::directory::error::OpenReadError;
use tantivy::directory::{Directory, MmapDirectory, INDEX_WRITER_LOCK};
use tantivy::store::Compressor;
use tantivy::{
    Index, IndexSettings, IndexWriter, ReloadPolicy, TantivyDocument, TantivyError, Term,
};

use crate::doc::{docs_from_batch, NewsDoc};
use crate::schema::{self, NewsFields};
use crate::search::{IndexStats, NewsReader, SearchRequest, SearchResponse};
use crate::{Result, SearchError};

/// Version of what this crate writes beyond the schema (the payload, the analyzer). An index
/// committed under another format is [`SearchError::Incompatible`].
pub(crate) const FORMAT: u32 = 1;

/// Indexing memory before tantivy flushes a segment. One thread: news arrives in small
/// batches and the machines are shared.
const WRITER_MEMORY_BYTES: usize = 32 << 20;
/// Segment merges run at once. The index lives inside `serve`, beside the searches: tantivy's
/// default of 4 let merges after a large fill take every core of a small machine, and searches
/// waited (phrase p99 51 ms right after a 1 M-item fill, 4 ms once merges were done).
const MERGE_THREADS: usize = 1;

/// What each commit records beside the docs.
#[derive(Debug, Deserialize)]
struct CommitPayload {
    format: u32,
    /// The `l2.news` Delta version whose rows this commit completes.
    l2_news_version: i64,
}

/// What [`NewsIndex::open_or_rebuild`] found.
#[derive(Debug)]
pub struct Opened {
    pub index: NewsIndex,
    /// The directory held a damaged or incompatible index, which was wiped: the index is empty
    /// and [`NewsIndex::indexed_version`] is `None`.
    pub rebuilt: bool,
    /// Why it was wiped.
    pub reason: Option<String>,
}

/// The news index, open for writing (one writer per directory, across processes) and reading.
pub struct NewsIndex {
    dir: PathBuf,
    index: Index,
    writer: IndexWriter<TantivyDocument>,
    reader: NewsReader,
    fields: NewsFields,
    indexed_version: Option<i64>,
}

impl NewsIndex {
    /// Open the index in `dir`, creating the directory and an empty index when there is none.
    ///
    /// Damage is reported, never repaired here: [`SearchError::Corrupt`] or
    /// [`SearchError::Incompatible`] (see [`SearchError::needs_rebuild`]); another writer
    /// holding `dir` is [`SearchError::Locked`].
    pub fn open(dir: &Path) -> Result<NewsIndex> {
        fs::create_dir_all(dir).map_err(|source| SearchError::Io {
            dir: dir.into(),
            source,
        })?;
        let directory = MmapDirectory::open(dir).map_err(|e| classify(dir, e.into()))?;
        let exists = Index::exists(&directory).map_err(|e| classify(dir, e.into()))?;
        let index = if exists {
            Index::open(directory).map_err(|e| classify(dir, e))?
        } else {
            tracing::info!(dir = %dir.display(), "creating an empty news search index");
            let settings = IndexSettings {
                docstore_compression: Compressor::Lz4,
                ..IndexSettings::default()
            };
            Index::create(directory, schema::schema(), settings).map_err(|e| classify(dir, e))?
        };
        let fields = check_schema(dir, &index)?;
        schema::register_tokenizer(&index);
        let writer = index
            .writer_with_options(
                tantivy::indexer::IndexWriterOptions::builder()
                    .num_worker_threads(1)
                    .memory_budget_per_thread(WRITER_MEMORY_BYTES)
                    .num_merge_threads(MERGE_THREADS)
                    .build(),
            )
            .map_err(|e| classify(dir, e))?;
        let indexed_version = read_payload(dir, &index)?;
        // Opening the reader opens every segment: damaged segment files surface here.
        let reader_handle: tantivy::IndexReader = index
            .reader_builder()
            // `commit` reloads itself, so searches see a commit as soon as it returns.
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(|e| classify(dir, e))?;
        let reader = NewsReader::new(dir, index.clone(), reader_handle, fields);
        Ok(NewsIndex {
            dir: dir.into(),
            index,
            writer,
            reader,
            fields,
            indexed_version,
        })
    }

    /// [`open`](Self::open), also verifying every file's checksum; a damaged or incompatible
    /// index is wiped and an empty one opened in its place (`rebuilt: true`), for the caller to
    /// fill from `l2.news`. Other errors (I/O, another writer) are returned as they are: wiping
    /// would not cure them.
    pub fn open_or_rebuild(dir: &Path) -> Result<Opened> {
        let damage = match NewsIndex::open(dir).and_then(|index| index.verify().map(|()| index)) {
            Ok(index) => {
                return Ok(Opened {
                    index,
                    rebuilt: false,
                    reason: None,
                })
            }
            Err(e) if e.needs_rebuild() => e,
            Err(e) => return Err(e),
        };
        tracing::warn!(dir = %dir.display(), error = %damage, "wiping the news search index to rebuild it");
        wipe(dir)?;
        Ok(Opened {
            index: NewsIndex::open(dir)?,
            rebuilt: true,
            reason: Some(damage.to_string()),
        })
    }

    /// Check every file of the index against its checksum (reads the whole index).
    pub fn verify(&self) -> Result<()> {
        let damaged = self
            .index
            .validate_checksum()
            .map_err(|e| classify(&self.dir, e))?;
        if damaged.is_empty() {
            return Ok(());
        }
        let mut files: Vec<String> = damaged.iter().map(|p| p.display().to_string()).collect();
        files.sort();
        Err(SearchError::Corrupt {
            dir: self.dir.clone(),
            message: format!("checksum mismatch in {}", files.join(", ")),
        })
    }

    /// Add `docs`, each replacing any doc with the same `news_key` (indexed before, or earlier
    /// in `docs`). Searchable after the next [`commit`](Self::commit).
    pub fn index(&mut self, docs: &[NewsDoc]) -> Result<usize> {
        for doc in docs {
            // Delete-then-add: tantivy applies a delete to docs added before it only, so this
            // keeps exactly the last copy, and replaying rows after a crash never duplicates.
            self.writer
                .delete_term(Term::from_field_text(self.fields.news_key, &doc.news_key));
            self.writer.add_document(self.fields.document(doc))?;
        }
        Ok(docs.len())
    }

    /// [`docs_from_batch`] then [`index`](Self::index).
    pub fn index_batch(&mut self, batch: &RecordBatch) -> Result<usize> {
        let docs = docs_from_batch(batch)?;
        self.index(&docs)
    }

    /// Make everything indexed so far durable and searchable, recording `source_version` (the
    /// `l2.news` version it completes) in the same commit. After an error the writer's state is
    /// unknown: drop this index and open it again.
    pub fn commit(&mut self, source_version: i64) -> Result<()> {
        let payload = format!(r#"{{"format":{FORMAT},"l2_news_version":{source_version}}}"#);
        let mut prepared = self.writer.prepare_commit()?;
        prepared.set_payload(&payload);
        prepared.commit()?;
        self.indexed_version = Some(source_version);
        self.reader.reload()?;
        tracing::debug!(dir = %self.dir.display(), l2_news_version = source_version, "news search index committed");
        Ok(())
    }

    /// The `l2.news` version of the last commit; `None` for a new (or wiped) index, which the
    /// caller fills from the table.
    pub fn indexed_version(&self) -> Option<i64> {
        self.indexed_version
    }

    /// A handle for searching, shareable across threads, that sees each commit.
    pub fn reader(&self) -> NewsReader {
        self.reader.clone()
    }

    pub fn search(&self, request: &SearchRequest) -> Result<SearchResponse> {
        self.reader.search(request)
    }

    /// Searchable docs (committed, not replaced).
    pub fn num_docs(&self) -> u64 {
        self.reader.num_docs()
    }

    pub fn stats(&self) -> IndexStats {
        self.reader.stats()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl std::fmt::Debug for NewsIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewsIndex")
            .field("dir", &self.dir)
            .field("indexed_version", &self.indexed_version)
            .finish_non_exhaustive()
    }
}

/// The fields of `index`, refused as incompatible unless its schema is this crate's.
pub(crate) fn check_schema(dir: &Path, index: &Index) -> Result<NewsFields> {
    let found = index.schema();
    if found != schema::schema() {
        let names: Vec<&str> = found.fields().map(|(_, entry)| entry.name()).collect();
        return Err(SearchError::Incompatible {
            dir: dir.into(),
            message: format!("schema differs (fields: {})", names.join(", ")),
        });
    }
    NewsFields::resolve(&found).map_err(|e| classify(dir, e))
}

/// The `l2.news` version the last commit recorded.
pub(crate) fn read_payload(dir: &Path, index: &Index) -> Result<Option<i64>> {
    let metas = index.load_metas().map_err(|e| classify(dir, e))?;
    let Some(payload) = metas.payload else {
        return Ok(None);
    };
    let parsed: CommitPayload =
        serde_json::from_str(&payload).map_err(|e| SearchError::Corrupt {
            dir: dir.into(),
            message: format!("commit payload {payload:?} unreadable: {e}"),
        })?;
    if parsed.format != FORMAT {
        return Err(SearchError::Incompatible {
            dir: dir.into(),
            message: format!("index format {}, this build reads {FORMAT}", parsed.format),
        });
    }
    Ok(Some(parsed.l2_news_version))
}

fn unreadable_data(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
    )
}

/// Sort a tantivy error into what the caller acts on: damage (rebuild), another writer (wait
/// or fail), or anything else.
pub(crate) fn classify(dir: &Path, error: TantivyError) -> SearchError {
    let dir = dir.to_path_buf();
    let message = error.to_string();
    match &error {
        TantivyError::DataCorruption(_) | TantivyError::DeserializeError(_) => {
            SearchError::Corrupt { dir, message }
        }
        TantivyError::OpenReadError(OpenReadError::FileDoesNotExist(_)) => {
            SearchError::Corrupt { dir, message }
        }
        TantivyError::OpenReadError(OpenReadError::IoError { io_error, .. })
            if unreadable_data(io_error) =>
        {
            SearchError::Corrupt { dir, message }
        }
        TantivyError::IoError(io_error) if unreadable_data(io_error) => {
            SearchError::Corrupt { dir, message }
        }
        TantivyError::IncompatibleIndex(_)
        | TantivyError::OpenReadError(OpenReadError::IncompatibleIndex(_))
        | TantivyError::SchemaError(_) => SearchError::Incompatible { dir, message },
        TantivyError::LockFailure(..) => SearchError::Locked { dir },
        _ => SearchError::Engine(Box::new(error)),
    }
}

/// Delete the index files in `dir`, holding the writer lock so a live writer elsewhere is
/// never wiped. Refuses a directory with subdirectories: a tantivy index is flat, so that is
/// not the index directory (a wrong path must not cost someone their files).
fn wipe(dir: &Path) -> Result<()> {
    let io_error = |source: io::Error| SearchError::Io {
        dir: dir.into(),
        source,
    };
    let directory = MmapDirectory::open(dir).map_err(|e| classify(dir, e.into()))?;
    let _lock = directory
        .acquire_lock(&INDEX_WRITER_LOCK)
        .map_err(|_| SearchError::Locked { dir: dir.into() })?;
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error)? {
        let entry = entry.map_err(io_error)?;
        if entry.file_type().map_err(io_error)?.is_dir() {
            return Err(io_error(io::Error::other(format!(
                "holds the subdirectory {:?}, so it is not a search index; not wiped",
                entry.file_name()
            ))));
        }
        if entry.file_name() != INDEX_WRITER_LOCK.filepath.as_os_str() {
            files.push(entry.path());
        }
    }
    for file in files {
        fs::remove_file(&file).map_err(io_error)?;
    }
    Ok(())
}
