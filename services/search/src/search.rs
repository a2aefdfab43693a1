//! The read side: a [`SearchRequest`] becomes one boolean query — the user's text AND the
//! entitlement AND the request's filters — and comes back as ranked [`Hit`]s with snippets.
//!
//! Entitlement and filters are built as structured clauses (term sets over `tickers`, a range
//! over `event_time_ns`), never spliced into the text, so nothing a user types can widen what
//! their grants allow. They score zero, so BM25 alone ranks.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::{Bound, Range};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tantivy::collector::{Count, TopDocs};
use tantivy::directory::MmapDirectory;
use tantivy::query::{
    AllQuery, BooleanQuery, ConstScoreQuery, Occur, Query, RangeQuery, TermSetQuery,
};
use tantivy::schema::Field;
use tantivy::snippet::{collapse_overlapped_ranges, Snippet, SnippetGenerator};
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{
    DocAddress, Index, IndexReader, Order, ReloadPolicy, Score, Searcher, TantivyDocument, Term,
};

use crate::index::{classify, read_payload};
use crate::query::{TextParser, TextQuery};
use crate::schema::{self, NewsFields, EVENT_TIME_NS};
use crate::{Result, SearchError};

/// Most hits one request returns; larger limits are cut to this.
pub const MAX_LIMIT: usize = 1000;
/// Deepest offset served: paging past it is refused (results that deep are noise, and the
/// collector keeps `offset + limit` docs in memory).
pub const MAX_OFFSET: usize = 10_000;
/// Limit of [`SearchRequest::new`].
pub const DEFAULT_LIMIT: usize = 20;
/// Longest body snippet, in characters.
const BODY_SNIPPET_CHARS: usize = 200;

/// What a principal may see of `l2.news`, all its grants combined.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entitled {
    /// One element per grant: `None` lets every item through, `Some(symbols)` only items
    /// tagged with one of those tickers (an untagged item passes no restricted grant). An item
    /// passes when any grant lets it through; an empty list lets nothing through.
    pub any_of: Vec<Option<BTreeSet<String>>>,
}

impl Entitled {
    /// One unrestricted grant.
    pub fn all() -> Self {
        Entitled { any_of: vec![None] }
    }

    /// One grant restricted to `symbols`.
    pub fn symbols<I, S>(symbols: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Entitled {
            any_of: vec![Some(symbols.into_iter().map(Into::into).collect())],
        }
    }

    /// The tickers an item must carry one of; `None` when some grant is unrestricted.
    fn allowed_tickers(&self) -> Option<BTreeSet<&str>> {
        let mut allowed = BTreeSet::new();
        for grant in &self.any_of {
            allowed.extend(grant.as_ref()?.iter().map(String::as_str));
        }
        Some(allowed)
    }
}

/// One search. Deliberately not `Deserialize`: [`Entitled`] comes from the principal's grants,
/// never from the request body; the API builds this from its own query type.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchRequest {
    /// Query text over headline and body: words (all required), `"phrases"`, `AND`/`OR`/`NOT`,
    /// `+`/`-`, `headline:`/`body:`, `^boost`. Blank: every entitled item, newest first.
    pub text: String,
    /// Only items tagged with one of these tickers (exact, upper-case as enrichment tags them).
    /// Narrows what the entitlement allows, never widens it; an empty list matches nothing.
    pub symbols: Option<Vec<String>>,
    /// Event time (`published_at_ns`, else `received_at_ns`) from, inclusive, UTC ns.
    pub from_ns: Option<i64>,
    /// Event time to, exclusive, UTC ns.
    pub to_ns: Option<i64>,
    /// Hits to return, at most [`MAX_LIMIT`]; 0 counts without returning hits.
    pub limit: usize,
    /// Hits to skip, at most [`MAX_OFFSET`].
    pub offset: usize,
    /// Let each word match words one edit away (`aple` → `apple`).
    pub fuzzy: bool,
    pub entitled: Entitled,
}

impl SearchRequest {
    /// `text` for `entitled`, first [`DEFAULT_LIMIT`] hits, no filters, exact words.
    pub fn new(text: impl Into<String>, entitled: Entitled) -> Self {
        SearchRequest {
            text: text.into(),
            symbols: None,
            from_ns: None,
            to_ns: None,
            limit: DEFAULT_LIMIT,
            offset: 0,
            fuzzy: false,
            entitled,
        }
    }
}

/// One news item found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    pub news_key: String,
    pub headline: String,
    pub body: Option<String>,
    pub link: Option<String>,
    pub publisher: Option<String>,
    pub published_at_ns: Option<i64>,
    pub received_at_ns: i64,
    pub language: Option<String>,
    pub tickers: Vec<String>,
    /// BM25 score (headline matches weigh double); 0 when the text was blank.
    pub score: f32,
    /// The whole headline as HTML: matched words in `<b>`, everything else escaped.
    pub headline_snippet: String,
    /// The best passage of the body (up to 200 characters) as HTML, same rules; the start of
    /// the body when no word matched in it; empty without a body.
    pub body_snippet: String,
}

/// Hits of one page, and how many items match in all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchResponse {
    pub total_hits: usize,
    pub hits: Vec<Hit>,
}

impl SearchResponse {
    fn empty() -> Self {
        SearchResponse {
            total_hits: 0,
            hits: Vec::new(),
        }
    }
}

/// Size of the index, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexStats {
    /// Searchable docs.
    pub docs: u64,
    /// Replaced docs not yet merged away.
    pub deleted_docs: u64,
    pub segments: usize,
}

/// The read side of a news index: cheap to clone and safe to share between request handlers.
///
/// From [`crate::NewsIndex::reader`] it sees each commit as soon as `commit` returns. Opened
/// alone with [`NewsReader::open`] (another process writes) it reloads on its own shortly after
/// each commit, or at once on [`NewsReader::reload`].
#[derive(Clone)]
pub struct NewsReader {
    dir: PathBuf,
    index: Index,
    reader: IndexReader,
    fields: NewsFields,
    parser: TextParser,
}

impl std::fmt::Debug for NewsReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewsReader")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl NewsReader {
    pub(crate) fn new(dir: &Path, index: Index, reader: IndexReader, fields: NewsFields) -> Self {
        let parser = TextParser::new(&index, &fields);
        NewsReader {
            dir: dir.to_path_buf(),
            index,
            reader,
            fields,
            parser,
        }
    }

    /// Open an index another process writes, read-only. Fails with [`SearchError::NotFound`]
    /// when `dir` holds no index yet, and like [`crate::NewsIndex::open`] when it is damaged.
    pub fn open(dir: &Path) -> Result<NewsReader> {
        if !dir.is_dir() {
            return Err(SearchError::NotFound { dir: dir.into() });
        }
        let directory = MmapDirectory::open(dir).map_err(|e| classify(dir, e.into()))?;
        if !Index::exists(&directory).map_err(|e| classify(dir, e.into()))? {
            return Err(SearchError::NotFound { dir: dir.into() });
        }
        let index = Index::open(directory).map_err(|e| classify(dir, e))?;
        let fields = crate::index::check_schema(dir, &index)?;
        schema::register_tokenizer(&index);
        read_payload(dir, &index)?;
        let reader = index
            .reader_builder()
            // Watches meta.json: another process's commits show up without a call.
            .reload_policy(ReloadPolicy::OnCommitWithDelay)
            .try_into()
            .map_err(|e| classify(dir, e))?;
        Ok(NewsReader::new(dir, index, reader, fields))
    }

    /// See the latest commit now rather than when the watcher notices it.
    pub fn reload(&self) -> Result<()> {
        Ok(self.reader.reload()?)
    }

    /// The `l2.news` version of the latest commit on disk (which a reader opened with
    /// [`NewsReader::open`] may not have loaded yet); `None` for an index never committed.
    pub fn indexed_version(&self) -> Result<Option<i64>> {
        read_payload(&self.dir, &self.index)
    }

    /// Searchable docs.
    pub fn num_docs(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    pub fn stats(&self) -> IndexStats {
        let searcher = self.reader.searcher();
        let segments = searcher.segment_readers();
        IndexStats {
            docs: searcher.num_docs(),
            deleted_docs: segments
                .iter()
                .map(|s| u64::from(s.num_deleted_docs()))
                .sum(),
            segments: segments.len(),
        }
    }

    /// Run `request`. Bad query text or paging → [`SearchError::BadQuery`]; damage found
    /// while reading (a checksum [`crate::NewsIndex::verify`] would have caught) →
    /// [`SearchError::Corrupt`] where tantivy says so.
    pub fn search(&self, request: &SearchRequest) -> Result<SearchResponse> {
        self.run(request).map_err(|e| match e {
            SearchError::Engine(engine) => classify(&self.dir, *engine),
            other => other,
        })
    }

    fn run(&self, request: &SearchRequest) -> Result<SearchResponse> {
        if request.offset > MAX_OFFSET {
            return Err(SearchError::BadQuery(format!(
                "offset {} is past the deepest page served ({MAX_OFFSET})",
                request.offset
            )));
        }
        // Parse first: a malformed query is an error even for a principal who may see nothing.
        let text = self.parser.parse(&request.text, request.fuzzy)?;
        let Some(filters) = self.filters(request) else {
            return Ok(SearchResponse::empty());
        };
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![(
            Occur::Must,
            match &text {
                Some(text) => text.scored.box_clone(),
                None => Box::new(AllQuery),
            },
        )];
        clauses.extend(filters.into_iter().map(|filter| {
            // Zero score: filters decide what matches, not how it ranks.
            let filter: Box<dyn Query> = Box::new(ConstScoreQuery::new(filter, 0.0));
            (Occur::Must, filter)
        }));
        let query = BooleanQuery::new(clauses);

        let searcher = self.reader.searcher();
        let limit = request.limit.min(MAX_LIMIT);
        if limit == 0 {
            return Ok(SearchResponse {
                total_hits: searcher.search(&query, &Count)?,
                hits: Vec::new(),
            });
        }
        let top = TopDocs::with_limit(limit).and_offset(request.offset);
        let (total_hits, found): (usize, Vec<(Score, DocAddress)>) = match &text {
            Some(_) => searcher.search(&query, &(Count, top.order_by_score()))?,
            None => {
                let (total, by_time) = searcher.search(
                    &query,
                    &(
                        Count,
                        top.order_by_fast_field::<i64>(EVENT_TIME_NS, Order::Desc),
                    ),
                )?;
                (
                    total,
                    by_time.into_iter().map(|(_, doc)| (0.0, doc)).collect(),
                )
            }
        };
        let snippets = Snippets::new(&searcher, text.as_ref(), request.fuzzy, self.fields)?;
        let mut hits = Vec::with_capacity(found.len());
        for (score, address) in found {
            let stored: TantivyDocument = searcher.doc(address)?;
            let doc = self.fields.news_doc(&stored);
            let headline_snippet = snippets.headline(&doc.headline);
            let body_snippet = doc
                .body
                .as_deref()
                .map(|body| snippets.body(body))
                .unwrap_or_default();
            hits.push(Hit {
                news_key: doc.news_key,
                headline: doc.headline,
                body: doc.body,
                link: doc.link,
                publisher: doc.publisher,
                published_at_ns: doc.published_at_ns,
                received_at_ns: doc.received_at_ns,
                language: doc.language,
                tickers: doc.tickers,
                score,
                headline_snippet,
                body_snippet,
            });
        }
        Ok(SearchResponse { total_hits, hits })
    }

    /// The required filter clauses; `None` when they can match nothing (no grant, only empty
    /// symbol sets, an empty symbols filter, an empty time range).
    fn filters(&self, request: &SearchRequest) -> Option<Vec<Box<dyn Query>>> {
        if request.entitled.any_of.is_empty() {
            return None;
        }
        let mut filters: Vec<Box<dyn Query>> = Vec::new();
        if let Some(allowed) = request.entitled.allowed_tickers() {
            if allowed.is_empty() {
                return None;
            }
            filters.push(self.tickers_in(allowed));
        }
        if let Some(symbols) = &request.symbols {
            if symbols.is_empty() {
                return None;
            }
            filters.push(self.tickers_in(symbols.iter().map(String::as_str)));
        }
        if request.from_ns.is_some() || request.to_ns.is_some() {
            if let (Some(from), Some(to)) = (request.from_ns, request.to_ns) {
                if from >= to {
                    return None;
                }
            }
            let term = |ns: i64| Term::from_field_i64(self.fields.event_time_ns, ns);
            let lower = request
                .from_ns
                .map_or(Bound::Unbounded, |ns| Bound::Included(term(ns)));
            let upper = request
                .to_ns
                .map_or(Bound::Unbounded, |ns| Bound::Excluded(term(ns)));
            filters.push(Box::new(RangeQuery::new(lower, upper)));
        }
        Some(filters)
    }

    fn tickers_in<'a>(&self, tickers: impl IntoIterator<Item = &'a str>) -> Box<dyn Query> {
        let field = self.fields.tickers;
        Box::new(TermSetQuery::new(
            tickers
                .into_iter()
                .map(|ticker| Term::from_field_text(field, ticker)),
        ))
    }
}

/// Highlighting for one search: the query's words per text field, weighted like tantivy's own
/// [`SnippetGenerator::create`] (rarer words weigh more when picking the body passage).
struct Snippets {
    headline: FieldTerms,
    body: FieldTerms,
    fuzzy: bool,
}

struct FieldTerms {
    field: Field,
    terms: BTreeMap<String, Score>,
    tokenizer: TextAnalyzer,
}

impl Snippets {
    fn new(
        searcher: &Searcher,
        text: Option<&TextQuery>,
        fuzzy: bool,
        fields: NewsFields,
    ) -> Result<Self> {
        let terms = |field: Field| -> Result<FieldTerms> {
            let mut terms = BTreeMap::new();
            if let Some(text) = text {
                let mut found: Vec<Term> = Vec::new();
                // The exact query: a fuzzy query names no terms, its words do.
                text.exact.query_terms(&mut |term, _| {
                    if term.field() == field {
                        found.push(term.clone());
                    }
                });
                for term in found {
                    if let Some(word) = term.value().as_str() {
                        let doc_freq = searcher.doc_freq(&term)?;
                        terms.insert(word.to_string(), 1.0 / (1.0 + doc_freq as Score));
                    }
                }
            }
            Ok(FieldTerms {
                field,
                terms,
                tokenizer: searcher.index().tokenizer_for_field(field)?,
            })
        };
        Ok(Snippets {
            headline: terms(fields.headline)?,
            body: terms(fields.body)?,
            fuzzy,
        })
    }

    fn generator(&self, of: &FieldTerms, text: &str, max_chars: usize) -> SnippetGenerator {
        let mut terms = of.terms.clone();
        if self.fuzzy && !terms.is_empty() {
            // Fuzzy words matched words one edit away: find those in this text.
            let mut tokenizer = of.tokenizer.clone();
            let mut stream = tokenizer.token_stream(text);
            while let Some(token) = stream.next() {
                if let Some(weight) = of
                    .terms
                    .iter()
                    .find(|(word, _)| within_one_edit(word, &token.text))
                    .map(|(_, weight)| *weight)
                {
                    terms.entry(token.text.clone()).or_insert(weight);
                }
            }
        }
        SnippetGenerator::new(terms, of.tokenizer.clone(), of.field, max_chars)
    }

    fn headline(&self, headline: &str) -> String {
        // One fragment as long as the headline: the whole of it, highlighted.
        let snippet = self
            .generator(&self.headline, headline, headline.len())
            .snippet(headline);
        if snippet.is_empty() {
            return escape(headline);
        }
        let start = snippet.fragment_range().start;
        let ranges: Vec<Range<usize>> = snippet
            .highlighted()
            .iter()
            .map(|r| r.start + start..r.end + start)
            .collect();
        render(headline, &ranges)
    }

    fn body(&self, body: &str) -> String {
        let snippet: Snippet = self
            .generator(&self.body, body, BODY_SNIPPET_CHARS)
            .snippet(body);
        if snippet.is_empty() {
            let cut = body
                .char_indices()
                .nth(BODY_SNIPPET_CHARS)
                .map_or(body.len(), |(i, _)| i);
            let mut html = escape(&body[..cut]);
            if cut < body.len() {
                html.push('…');
            }
            return html;
        }
        let range = snippet.fragment_range();
        let mut html = String::new();
        if range.start > 0 {
            html.push('…');
        }
        html.push_str(&render(snippet.fragment(), snippet.highlighted()));
        // The fragment stops at its last word: keep trailing punctuation rather than replace
        // it with an ellipsis.
        let tail = body.get(range.end..).unwrap_or_default();
        if tail.chars().any(char::is_alphanumeric) {
            html.push('…');
        } else {
            html.push_str(&escape(tail));
        }
        html
    }
}

/// `text` as HTML with `ranges` (byte ranges on char boundaries) in `<b>`.
fn render(text: &str, ranges: &[Range<usize>]) -> String {
    let mut html = String::with_capacity(text.len() + 16);
    let mut at = 0;
    for range in collapse_overlapped_ranges(ranges) {
        let (Some(before), Some(word)) = (text.get(at..range.start), text.get(range.clone()))
        else {
            // Not on char boundaries (cannot happen with tokenizer offsets): drop the mark.
            continue;
        };
        html.push_str(&escape(before));
        html.push_str("<b>");
        html.push_str(&escape(word));
        html.push_str("</b>");
        at = range.end;
    }
    html.push_str(&escape(text.get(at..).unwrap_or_default()));
    html
}

/// Minimal HTML escaping, safe in element content and quoted attributes.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

/// Whether `a` and `b` are at most one insertion, deletion, substitution or transposition
/// apart — the distance fuzzy search allows.
fn within_one_edit(a: &str, b: &str) -> bool {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let (short, long) = if a.len() <= b.len() {
        (&a, &b)
    } else {
        (&b, &a)
    };
    if long.len() - short.len() > 1 {
        return false;
    }
    let prefix = short
        .iter()
        .zip(long.iter())
        .take_while(|(x, y)| x == y)
        .count();
    if prefix == short.len() {
        return true; // equal, or one appended
    }
    if short.len() == long.len() {
        let rest = prefix + 1;
        // Substitution, or a transposition of two neighbours.
        short[rest..] == long[rest..]
            || (rest < short.len()
                && short[prefix] == long[rest]
                && short[rest] == long[prefix]
                && short[rest + 1..] == long[rest + 1..])
    } else {
        // One inserted into the longer.
        short[prefix..] == long[prefix + 1..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_and_render() {
        assert_eq!(
            escape("<a href='x'>&\"</a>"),
            "&lt;a href=&#x27;x&#x27;&gt;&amp;&quot;&lt;/a&gt;"
        );
        assert_eq!(
            render("a <b> c", &[0..1, 6..7]),
            "<b>a</b> &lt;b&gt; <b>c</b>"
        );
        assert_eq!(
            render("héllo wörld", std::slice::from_ref(&(7..13))),
            "héllo <b>wörld</b>"
        );
        // Off char boundaries: the mark is dropped, the text kept.
        assert_eq!(render("é", std::slice::from_ref(&(0..1))), "é");
    }

    #[test]
    fn one_edit() {
        for (a, b) in [
            ("apple", "apple"),
            ("aple", "apple"),
            ("apple", "aple"),
            ("appel", "apple"),
            ("apple", "apply"),
            ("apples", "apple"),
            ("", "a"),
        ] {
            assert!(within_one_edit(a, b), "{a} {b}");
        }
        for (a, b) in [
            ("ale", "apple"),
            ("apple", "orange"),
            ("abc", "cab"),
            ("", "ab"),
        ] {
            assert!(!within_one_edit(a, b), "{a} {b}");
        }
    }

    #[test]
    fn entitlement_tickers() {
        assert_eq!(Entitled::all().allowed_tickers(), None);
        let two = Entitled {
            any_of: vec![
                Some(["AAPL".to_string()].into()),
                Some(["MSFT".to_string()].into()),
            ],
        };
        assert_eq!(two.allowed_tickers(), Some(["AAPL", "MSFT"].into()));
        let mixed = Entitled {
            any_of: vec![Some(["AAPL".to_string()].into()), None],
        };
        assert_eq!(mixed.allowed_tickers(), None);
        assert_eq!(Entitled::default().allowed_tickers(), Some(BTreeSet::new()));
    }
}
