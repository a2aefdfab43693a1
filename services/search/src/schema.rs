//! The tantivy schema of the news index, its field handles, the text analyzer, and the mapping
//! between [`NewsDoc`] and tantivy documents.
//!
//! The schema is part of the on-disk format: an index whose schema differs from [`schema`] is
//! refused as incompatible (and rebuilt by the caller), so change a field here only together
//! with [`crate::index::FORMAT`].

use tantivy::schema::{
    Field, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions, Value,
    STORED, STRING,
};
use tantivy::tokenizer::{
    AsciiFoldingFilter, LowerCaser, RemoveLongFilter, SimpleTokenizer, TextAnalyzer,
};
use tantivy::{Index, TantivyDocument};

use crate::doc::NewsDoc;

/// Analyzer of `headline` and `body`. Tokenizers are not persisted with the index, so every
/// open registers it again under this name ([`register_tokenizer`]).
pub(crate) const NEWS_TOKENIZER: &str = "marketlake_news";

/// Tokens longer than this (base64 blobs, URLs glued to words) are dropped rather than indexed.
const MAX_TOKEN_BYTES: usize = 40;

pub(crate) const NEWS_KEY: &str = "news_key";
pub(crate) const HEADLINE: &str = "headline";
pub(crate) const BODY: &str = "body";
pub(crate) const TICKERS: &str = "tickers";
pub(crate) const LINK: &str = "link";
pub(crate) const PUBLISHER: &str = "publisher";
pub(crate) const LANGUAGE: &str = "language";
pub(crate) const PUBLISHED_AT_NS: &str = "published_at_ns";
pub(crate) const RECEIVED_AT_NS: &str = "received_at_ns";
pub(crate) const EVENT_TIME_NS: &str = "event_time_ns";

/// Handles of every field, resolved once from the schema.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewsFields {
    pub news_key: Field,
    pub headline: Field,
    pub body: Field,
    pub tickers: Field,
    pub link: Field,
    pub publisher: Field,
    pub language: Field,
    pub published_at_ns: Field,
    pub received_at_ns: Field,
    pub event_time_ns: Field,
}

/// The news index schema.
pub(crate) fn schema() -> Schema {
    let text = TextOptions::default()
        .set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(NEWS_TOKENIZER)
                // Positions make phrase queries (`"rate cut"`) possible.
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        )
        .set_stored();
    let time = NumericOptions::default()
        .set_indexed()
        .set_fast()
        .set_stored();
    let mut builder = Schema::builder();
    builder.add_text_field(NEWS_KEY, STRING | STORED);
    builder.add_text_field(HEADLINE, text.clone());
    builder.add_text_field(BODY, text);
    // Raw (untokenized) terms: entitlement and symbol filters match whole tickers exactly.
    builder.add_text_field(TICKERS, STRING | STORED);
    builder.add_text_field(LINK, STORED);
    builder.add_text_field(PUBLISHER, STORED);
    builder.add_text_field(LANGUAGE, STORED);
    builder.add_i64_field(PUBLISHED_AT_NS, time.clone());
    builder.add_i64_field(RECEIVED_AT_NS, time);
    // Derived, so it is filtered and sorted on but not stored.
    builder.add_i64_field(
        EVENT_TIME_NS,
        NumericOptions::default().set_indexed().set_fast(),
    );
    builder.build()
}

impl NewsFields {
    /// Resolve the handles; fails only if `schema` is not [`schema()`] (checked at open).
    pub(crate) fn resolve(schema: &Schema) -> tantivy::Result<Self> {
        Ok(NewsFields {
            news_key: schema.get_field(NEWS_KEY)?,
            headline: schema.get_field(HEADLINE)?,
            body: schema.get_field(BODY)?,
            tickers: schema.get_field(TICKERS)?,
            link: schema.get_field(LINK)?,
            publisher: schema.get_field(PUBLISHER)?,
            language: schema.get_field(LANGUAGE)?,
            published_at_ns: schema.get_field(PUBLISHED_AT_NS)?,
            received_at_ns: schema.get_field(RECEIVED_AT_NS)?,
            event_time_ns: schema.get_field(EVENT_TIME_NS)?,
        })
    }

    pub(crate) fn document(self, doc: &NewsDoc) -> TantivyDocument {
        let mut out = TantivyDocument::new();
        out.add_text(self.news_key, &doc.news_key);
        out.add_text(self.headline, &doc.headline);
        let optional = [
            (self.body, &doc.body),
            (self.link, &doc.link),
            (self.publisher, &doc.publisher),
            (self.language, &doc.language),
        ];
        for (field, value) in optional {
            if let Some(value) = value {
                out.add_text(field, value);
            }
        }
        for ticker in &doc.tickers {
            out.add_text(self.tickers, ticker);
        }
        if let Some(published) = doc.published_at_ns {
            out.add_i64(self.published_at_ns, published);
        }
        out.add_i64(self.received_at_ns, doc.received_at_ns);
        out.add_i64(self.event_time_ns, doc.event_time_ns());
        out
    }

    /// The stored fields back as a [`NewsDoc`]; fields a damaged doc lacks read as empty.
    pub(crate) fn news_doc(self, doc: &TantivyDocument) -> NewsDoc {
        let text = |field: Field| {
            doc.get_first(field)
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        let int = |field: Field| doc.get_first(field).and_then(|v| v.as_i64());
        NewsDoc {
            news_key: text(self.news_key).unwrap_or_default(),
            headline: text(self.headline).unwrap_or_default(),
            body: text(self.body),
            link: text(self.link),
            publisher: text(self.publisher),
            published_at_ns: int(self.published_at_ns),
            received_at_ns: int(self.received_at_ns).unwrap_or_default(),
            language: text(self.language),
            tickers: doc
                .get_all(self.tickers)
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
        }
    }
}

/// Register [`NEWS_TOKENIZER`] on `index`: words split on non-alphanumerics, lower-cased and
/// folded to ASCII, so `Société` matches `societe` and `APPLE` matches `apple`. No stemming:
/// tickers and names in news do not stem well, and exact words keep snippets predictable.
pub(crate) fn register_tokenizer(index: &Index) {
    let analyzer = TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .build();
    index.tokenizers().register(NEWS_TOKENIZER, analyzer);
}
