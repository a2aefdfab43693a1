//! marketlake-search: full-text search over `l2.news`, the only crate that links tantivy.
//!
//! - [`doc`]: [`NewsDoc`], what the index keeps of a row, and [`docs_from_batch`] to read rows
//!   of the table as docs.
//! - [`index`]: [`NewsIndex`], the on-disk index — open (or wipe and rebuild), index
//!   idempotently by `news_key`, commit with the `l2.news` version covered.
//! - [`search`]: [`NewsReader`] and [`SearchRequest`] → [`SearchResponse`]: the user's text
//!   AND the principal's entitlement AND the filters, ranked by BM25, with HTML snippets.
//! - `query` and `schema`: the text parser (confined to headline and body) and the index
//!   schema, both internal.
//!
//! The index is a rebuildable cache of `l2.news`: the table stays the record, and every error
//! that means "this directory is not usable" says so ([`SearchError::needs_rebuild`]).

use std::path::PathBuf;

pub mod doc;
pub mod index;
mod query;
mod schema;
pub mod search;
#[cfg(test)]
mod tests;

pub use doc::{docs_from_batch, NewsDoc};
pub use index::{NewsIndex, Opened};
pub use query::{MAX_QUERY_BYTES, MAX_QUERY_WORDS};
pub use search::{
    Entitled, Hit, IndexStats, NewsReader, SearchRequest, SearchResponse, DEFAULT_LIMIT, MAX_LIMIT,
    MAX_OFFSET,
};

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("search index {}: {source}", dir.display())]
    Io {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("search index {} is damaged ({message}); delete it and rebuild from l2.news", dir.display())]
    Corrupt { dir: PathBuf, message: String },
    #[error("search index {} was written by an incompatible version ({message}); delete it and rebuild from l2.news", dir.display())]
    Incompatible { dir: PathBuf, message: String },
    #[error("search index {} is locked by another writer", dir.display())]
    Locked { dir: PathBuf },
    #[error("no search index in {}", dir.display())]
    NotFound { dir: PathBuf },
    #[error("l2.news batch lacks the required column `{column}`")]
    MissingColumn { column: String },
    #[error("l2.news column `{column}`: {message}")]
    BadColumn { column: String, message: String },
    /// The request cannot be served as asked (query syntax, a field that cannot be searched,
    /// paging too deep); the message is meant for the user.
    #[error("bad query: {0}")]
    BadQuery(String),
    #[error("search engine: {0}")]
    Engine(#[source] Box<tantivy::TantivyError>),
}

impl SearchError {
    /// Whether the directory holds an index this build cannot use, which deleting it and
    /// indexing `l2.news` again cures ([`NewsIndex::open_or_rebuild`] does both).
    pub fn needs_rebuild(&self) -> bool {
        matches!(
            self,
            SearchError::Corrupt { .. } | SearchError::Incompatible { .. }
        )
    }
}

impl From<tantivy::TantivyError> for SearchError {
    fn from(error: tantivy::TantivyError) -> Self {
        SearchError::Engine(Box::new(error))
    }
}

pub type Result<T, E = SearchError> = std::result::Result<T, E>;
