//! End-to-end tests of the crate on small on-disk indexes built from real `l2.news` batches.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use marketlake_schemas::l2::{news_batch, Lineage, NewsRow};
use tempfile::TempDir;

use crate::{
    Entitled, NewsIndex, NewsReader, SearchError, SearchRequest, SearchResponse, MAX_OFFSET,
};

const NS: i64 = 1_000_000_000;
/// 2024-03-01T00:00:00Z.
const T0: i64 = 1_709_251_200 * NS;

/// A row of `l2.news` with the given key, headline, tickers and receive time (no published
/// time, no body).
pub(crate) fn news_row(
    key: &str,
    headline: &str,
    tickers: &[&str],
    received_at_ns: i64,
) -> NewsRow {
    NewsRow {
        news_key: key.to_string(),
        headline: headline.to_string(),
        body: None,
        link: Some(format!("https://news.example/{key}")),
        publisher: Some("Example Wire".into()),
        published_at_ns: None,
        received_at_ns,
        language: Some("en".into()),
        tickers: tickers.iter().map(|t| t.to_string()).collect(),
        reference_version: Some(1),
        extra: Default::default(),
        flags: Vec::new(),
        lineage: Lineage {
            source_id: "wire".into(),
            source_uri: "file:///news.jsonl".into(),
            source_position: 0,
            raw_topic: "raw.news".into(),
            raw_partition: 0,
            raw_offset: 0,
        },
    }
}

fn with_body(mut row: NewsRow, body: &str) -> NewsRow {
    row.body = Some(body.to_string());
    row
}

fn published(mut row: NewsRow, at: i64) -> NewsRow {
    row.published_at_ns = Some(at);
    row
}

/// The shared corpus: each row is there for one or two of the tests below.
fn corpus() -> Vec<NewsRow> {
    vec![
        published(
            with_body(
                news_row(
                    "wire:1",
                    "Apple unveils new iPhone",
                    &["AAPL"],
                    T0 + 10 * NS,
                ),
                "Apple Inc. showed its latest iPhone at an event in Cupertino.",
            ),
            T0 + NS,
        ),
        with_body(
            news_row(
                "wire:2",
                "Microsoft earnings beat estimates",
                &["MSFT"],
                T0 + 2 * NS,
            ),
            "Microsoft reported cloud revenue growth; Azure led the quarter.",
        ),
        with_body(
            news_row("wire:3", "Fed signals rate cut in March", &[], T0 + 3 * NS),
            "The Federal Reserve hinted that a rate cut could come soon.",
        ),
        with_body(
            news_row(
                "wire:4",
                "Cut costs, keep the rate of hiring steady",
                &[],
                T0 + 4 * NS,
            ),
            "Companies cut spending while the hiring rate held.",
        ),
        with_body(
            news_row(
                "wire:5",
                "Apple and Microsoft team up on AI",
                &["AAPL", "MSFT"],
                T0 + 5 * NS,
            ),
            "A partnership between the two largest companies.",
        ),
        with_body(
            news_row(
                "wire:6",
                "Quarterly outlook for chipmakers",
                &["NVDA"],
                T0 + 6 * NS,
            ),
            "Analysts expect apple suppliers to benefit from demand.",
        ),
        news_row(
            "wire:7",
            "<script>alert('x')</script> Tesla recalls cars",
            &["TSLA"],
            T0 + 7 * NS,
        ),
    ]
}

fn open_with(dir: &Path, rows: &[NewsRow], version: i64) -> NewsIndex {
    let mut index = NewsIndex::open(dir).unwrap();
    index.index_batch(&news_batch(rows, 0).unwrap()).unwrap();
    index.commit(version).unwrap();
    index
}

fn fixture() -> (TempDir, NewsIndex) {
    let dir = TempDir::new().unwrap();
    let index = open_with(dir.path(), &corpus(), 1);
    (dir, index)
}

fn request(text: &str) -> SearchRequest {
    SearchRequest::new(text, Entitled::all())
}

fn keys(response: &SearchResponse) -> Vec<&str> {
    response.hits.iter().map(|h| h.news_key.as_str()).collect()
}

fn sorted_keys(response: &SearchResponse) -> Vec<&str> {
    let mut keys = keys(response);
    keys.sort();
    keys
}

fn search(index: &NewsIndex, text: &str) -> Vec<String> {
    let response = index.search(&request(text)).unwrap();
    let mut keys: Vec<String> = keys(&response).into_iter().map(String::from).collect();
    keys.sort();
    keys
}

#[test]
fn phrases_need_adjacent_words_loose_words_do_not() {
    let (_dir, index) = fixture();
    assert_eq!(search(&index, "rate cut"), ["wire:3", "wire:4"]);
    assert_eq!(search(&index, "\"rate cut\""), ["wire:3"]);
    // Loose words are all required, in either field.
    assert_eq!(search(&index, "cupertino iphone"), ["wire:1"]);
    assert_eq!(search(&index, "cupertino microsoft"), Vec::<String>::new());
}

#[test]
fn boolean_operators() {
    let (_dir, index) = fixture();
    assert_eq!(search(&index, "iphone OR azure"), ["wire:1", "wire:2"]);
    assert_eq!(search(&index, "apple AND NOT iphone"), ["wire:5", "wire:6"]);
    assert_eq!(search(&index, "apple -iphone -suppliers"), ["wire:5"]);
    // Exclusions alone exclude from everything.
    assert_eq!(
        search(&index, "-apple"),
        ["wire:2", "wire:3", "wire:4", "wire:7"]
    );
    assert_eq!(
        search(&index, "NOT apple AND NOT rate"),
        ["wire:2", "wire:7"]
    );
    assert_eq!(
        search(&index, "tesla OR NOT (apple OR rate OR cut)"),
        ["wire:2", "wire:7"]
    );
    assert_eq!(search(&index, "+microsoft +earnings"), ["wire:2"]);
    assert_eq!(search(&index, "(iphone OR azure) AND cloud"), ["wire:2"]);
    assert_eq!(search(&index, "headline:apple"), ["wire:1", "wire:5"]);
    assert_eq!(search(&index, "body:apple"), ["wire:1", "wire:6"]);
    // Lower-cased and ASCII-folded.
    assert_eq!(search(&index, "MICRÔSOFT earnings"), ["wire:2"]);
}

#[test]
fn fuzzy_finds_one_edit_away_only_when_asked() {
    let (_dir, index) = fixture();
    let mut exact = request("aple");
    assert_eq!(index.search(&exact).unwrap().total_hits, 0);
    exact.fuzzy = true;
    let fuzzy = index.search(&exact).unwrap();
    assert_eq!(sorted_keys(&fuzzy), ["wire:1", "wire:5", "wire:6"]);
    let hit = fuzzy.hits.iter().find(|h| h.news_key == "wire:1").unwrap();
    assert_eq!(hit.headline_snippet, "<b>Apple</b> unveils new iPhone");
    // Two edits stay out of reach.
    let mut far = request("appppple");
    far.fuzzy = true;
    assert_eq!(index.search(&far).unwrap().total_hits, 0);
}

#[test]
fn symbols_filter_narrows_to_tagged_items() {
    let (_dir, index) = fixture();
    let mut req = request("");
    req.symbols = Some(vec!["MSFT".into()]);
    assert_eq!(
        sorted_keys(&index.search(&req).unwrap()),
        ["wire:2", "wire:5"]
    );
    req.text = "apple".into();
    assert_eq!(keys(&index.search(&req).unwrap()), ["wire:5"]);
    req.symbols = Some(vec!["AAPL".into(), "NVDA".into()]);
    assert_eq!(
        sorted_keys(&index.search(&req).unwrap()),
        ["wire:1", "wire:5", "wire:6"]
    );
    // Exact ticker terms: not tokenized, not case-folded.
    req.symbols = Some(vec!["aapl".into()]);
    assert_eq!(index.search(&req).unwrap().total_hits, 0);
    req.symbols = Some(Vec::new());
    assert_eq!(index.search(&req).unwrap().total_hits, 0);
}

#[test]
fn time_range_is_half_open_on_event_time() {
    let (_dir, index) = fixture();
    let mut req = request("");
    // wire:1 was received at +10 s but published at +1 s: its event time is +1 s.
    req.from_ns = Some(T0 + NS);
    req.to_ns = Some(T0 + 3 * NS);
    assert_eq!(keys(&index.search(&req).unwrap()), ["wire:2", "wire:1"]);
    req.from_ns = Some(T0 + 7 * NS);
    req.to_ns = None;
    assert_eq!(keys(&index.search(&req).unwrap()), ["wire:7"]);
    req.from_ns = None;
    req.to_ns = Some(T0 + 2 * NS);
    assert_eq!(keys(&index.search(&req).unwrap()), ["wire:1"]);
    req.from_ns = Some(T0 + 5 * NS);
    req.to_ns = Some(T0 + 5 * NS);
    assert_eq!(index.search(&req).unwrap().total_hits, 0);
    req.from_ns = Some(i64::MIN);
    req.to_ns = Some(i64::MAX);
    assert_eq!(index.search(&req).unwrap().total_hits, 7);
}

#[test]
fn entitlement_cannot_be_widened_by_the_query_text() {
    let (_dir, index) = fixture();
    let aapl = Entitled::symbols(["AAPL"]);
    let texts = [
        "",
        "*",
        "microsoft",
        "microsoft OR apple",
        "(microsoft) OR (NOT apple)",
        "-apple",
        "earnings OR *",
        "headline:microsoft",
        "azure^999",
    ];
    for text in texts {
        let response = index
            .search(&SearchRequest::new(text, aapl.clone()))
            .unwrap();
        for hit in &response.hits {
            assert!(
                hit.tickers.iter().any(|t| t == "AAPL"),
                "{text:?} leaked {} ({:?})",
                hit.news_key,
                hit.tickers
            );
        }
        assert!(response.total_hits <= 2, "{text:?}");
    }
    // Items tagged with an allowed ticker and another are visible; untagged ones are not.
    let all = index.search(&SearchRequest::new("", aapl.clone())).unwrap();
    assert_eq!(sorted_keys(&all), ["wire:1", "wire:5"]);
    // Naming other fields is refused, not obeyed.
    for text in [
        "tickers:MSFT",
        "apple OR tickers:MSFT",
        "news_key:wire:2",
        "tickers:*",
    ] {
        let refused = index.search(&SearchRequest::new(text, aapl.clone()));
        assert!(matches!(refused, Err(SearchError::BadQuery(_))), "{text:?}");
    }
    // The symbols filter narrows within the entitlement, never beyond it.
    let mut asks_msft = SearchRequest::new("", aapl.clone());
    asks_msft.symbols = Some(vec!["MSFT".into()]);
    assert_eq!(keys(&index.search(&asks_msft).unwrap()), ["wire:5"]);
}

#[test]
fn entitlement_grants_combine() {
    let (_dir, index) = fixture();
    let count = |entitled: Entitled| {
        index
            .search(&SearchRequest::new("", entitled))
            .unwrap()
            .total_hits
    };
    assert_eq!(count(Entitled { any_of: Vec::new() }), 0);
    assert_eq!(count(Entitled::default()), 0);
    assert_eq!(count(Entitled::all()), 7);
    assert_eq!(count(Entitled::symbols(Vec::<String>::new())), 0);
    let two = Entitled {
        any_of: vec![
            Some(BTreeSet::from(["TSLA".to_string()])),
            Some(BTreeSet::from(["NVDA".to_string()])),
        ],
    };
    assert_eq!(count(two), 2);
    // One unrestricted grant opens everything, whatever the others say.
    let mixed = Entitled {
        any_of: vec![Some(BTreeSet::from(["TSLA".to_string()])), None],
    };
    assert_eq!(count(mixed), 7);
    // No grant: nothing, even for a query that matches everything.
    let none = index
        .search(&SearchRequest::new("*", Entitled::default()))
        .unwrap();
    assert_eq!(none.total_hits, 0);
}

#[test]
fn reindexing_the_same_rows_never_duplicates() {
    let dir = TempDir::new().unwrap();
    let rows = corpus();
    let batch = news_batch(&rows, 0).unwrap();
    let mut index = NewsIndex::open(dir.path()).unwrap();
    index.index_batch(&batch).unwrap();
    // The same rows again in the same commit, as a replay before the commit would do.
    index.index_batch(&batch).unwrap();
    index.commit(1).unwrap();
    assert_eq!(index.num_docs(), 7);
    // And again after the commit, as a replay after a crash would do.
    index.index_batch(&batch).unwrap();
    index.commit(2).unwrap();
    assert_eq!(index.num_docs(), 7);
    assert_eq!(search(&index, "iphone"), ["wire:1"]);
    // A changed row replaces the old one.
    let mut changed = rows[0].clone();
    changed.headline = "Apple unveils new iPad".into();
    index
        .index_batch(&news_batch(&[changed], 0).unwrap())
        .unwrap();
    index.commit(3).unwrap();
    assert_eq!(index.num_docs(), 7);
    assert_eq!(search(&index, "headline:iphone"), Vec::<String>::new());
    assert_eq!(search(&index, "ipad"), ["wire:1"]);
    let stats = index.stats();
    assert_eq!(stats.docs, 7);
    assert!(stats.segments >= 1);
}

#[test]
fn commit_version_survives_reopen() {
    let dir = TempDir::new().unwrap();
    {
        let index = NewsIndex::open(dir.path()).unwrap();
        assert_eq!(index.indexed_version(), None);
        assert_eq!(index.num_docs(), 0);
    }
    {
        let mut index = open_with(dir.path(), &corpus()[..3], 41);
        assert_eq!(index.indexed_version(), Some(41));
        // A commit with no new rows still records the version reached.
        index.commit(42).unwrap();
    }
    {
        let mut index = NewsIndex::open(dir.path()).unwrap();
        assert_eq!(index.indexed_version(), Some(42));
        assert_eq!(index.num_docs(), 3);
        // Uncommitted rows are lost with the process: the version says where to resume.
        index
            .index_batch(&news_batch(&corpus()[3..], 0).unwrap())
            .unwrap();
    }
    let index = NewsIndex::open(dir.path()).unwrap();
    assert_eq!(index.indexed_version(), Some(42));
    assert_eq!(index.num_docs(), 3);
}

#[test]
fn commits_are_searchable_at_once() {
    let dir = TempDir::new().unwrap();
    let mut index = NewsIndex::open(dir.path()).unwrap();
    let reader = index.reader();
    for (i, row) in corpus().into_iter().enumerate() {
        index.index_batch(&news_batch(&[row], 0).unwrap()).unwrap();
        let started = Instant::now();
        index.commit(i as i64).unwrap();
        // No waiting: the reader handed out earlier sees the commit when it returns.
        assert_eq!(reader.num_docs(), i as u64 + 1);
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    assert_eq!(reader.search(&request("tesla")).unwrap().total_hits, 1);
}

#[test]
fn a_read_only_reader_follows_another_writer() {
    let dir = TempDir::new().unwrap();
    assert!(matches!(
        NewsReader::open(dir.path()),
        Err(SearchError::NotFound { .. })
    ));
    assert!(matches!(
        NewsReader::open(&dir.path().join("absent")),
        Err(SearchError::NotFound { .. })
    ));
    let mut writer = open_with(dir.path(), &corpus()[..2], 5);
    let reader = NewsReader::open(dir.path()).unwrap();
    assert_eq!(reader.num_docs(), 2);
    assert_eq!(reader.indexed_version().unwrap(), Some(5));
    writer
        .index_batch(&news_batch(&corpus()[2..], 0).unwrap())
        .unwrap();
    writer.commit(6).unwrap();
    reader.reload().unwrap();
    assert_eq!(reader.num_docs(), 7);
    assert_eq!(reader.indexed_version().unwrap(), Some(6));
    // A second writer on the same directory is refused, and it is not damage.
    match NewsIndex::open(dir.path()) {
        Err(e @ SearchError::Locked { .. }) => assert!(!e.needs_rebuild()),
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("opened a locked index"),
    }
}

#[test]
fn corrupt_meta_is_reported_then_rebuilt() {
    let dir = TempDir::new().unwrap();
    drop(open_with(dir.path(), &corpus(), 9));
    fs::write(dir.path().join("meta.json"), b"{ not json").unwrap();
    match NewsIndex::open(dir.path()) {
        Err(e @ SearchError::Corrupt { .. }) => assert!(e.needs_rebuild()),
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("opened a corrupt index"),
    }
    let opened = NewsIndex::open_or_rebuild(dir.path()).unwrap();
    assert!(opened.rebuilt);
    assert!(opened.reason.is_some());
    let mut index = opened.index;
    assert_eq!(index.indexed_version(), None);
    assert_eq!(index.num_docs(), 0);
    index
        .index_batch(&news_batch(&corpus(), 0).unwrap())
        .unwrap();
    index.commit(9).unwrap();
    drop(index);
    let again = NewsIndex::open_or_rebuild(dir.path()).unwrap();
    assert!(!again.rebuilt);
    assert_eq!(again.index.indexed_version(), Some(9));
    assert_eq!(again.index.num_docs(), 7);
}

#[test]
fn damaged_segment_files_are_found_and_rebuilt() {
    for damage in ["truncate", "flip", "delete"] {
        let dir = TempDir::new().unwrap();
        drop(open_with(dir.path(), &corpus(), 3));
        let store = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "store"))
            .unwrap();
        match damage {
            "truncate" => {
                let bytes = fs::read(&store).unwrap();
                fs::write(&store, &bytes[..bytes.len() / 2]).unwrap();
            }
            "flip" => {
                let mut bytes = fs::read(&store).unwrap();
                bytes[0] ^= 0xff;
                fs::write(&store, &bytes).unwrap();
            }
            _ => fs::remove_file(&store).unwrap(),
        }
        let opened = NewsIndex::open_or_rebuild(dir.path()).unwrap();
        assert!(opened.rebuilt, "{damage}");
        assert_eq!(opened.index.num_docs(), 0, "{damage}");
        assert_eq!(opened.index.indexed_version(), None, "{damage}");
    }
}

#[test]
fn damage_open_cannot_see_is_found_by_verify_and_by_search() {
    let dir = TempDir::new().unwrap();
    drop(open_with(dir.path(), &corpus(), 3));
    let store = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "store"))
        .unwrap();
    let mut bytes = fs::read(&store).unwrap();
    bytes[0] ^= 0xff;
    fs::write(&store, &bytes).unwrap();
    // A flipped byte inside a compressed block leaves every footer intact.
    let index = NewsIndex::open(dir.path()).unwrap();
    assert!(matches!(index.verify(), Err(SearchError::Corrupt { .. })));
    match index.search(&request("apple")) {
        Err(e) => assert!(e.needs_rebuild(), "{e:?}"),
        Ok(response) => panic!("searched a damaged store: {response:?}"),
    }
}

#[test]
fn an_index_of_another_schema_is_incompatible() {
    let dir = TempDir::new().unwrap();
    {
        let mut builder = tantivy::schema::Schema::builder();
        builder.add_text_field("title", tantivy::schema::TEXT);
        tantivy::Index::create_in_dir(dir.path(), builder.build()).unwrap();
    }
    match NewsIndex::open(dir.path()) {
        Err(e @ SearchError::Incompatible { .. }) => assert!(e.needs_rebuild()),
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("opened an index of another schema"),
    }
    let opened = NewsIndex::open_or_rebuild(dir.path()).unwrap();
    assert!(opened.rebuilt);
    // An unknown payload format is incompatible too.
    let dir = TempDir::new().unwrap();
    drop(open_with(dir.path(), &corpus()[..1], 1));
    let meta = fs::read_to_string(dir.path().join("meta.json")).unwrap();
    let bumped = meta.replace("\\\"format\\\":1", "\\\"format\\\":99");
    assert_ne!(meta, bumped, "payload not found in {meta}");
    fs::write(dir.path().join("meta.json"), bumped).unwrap();
    assert!(matches!(
        NewsIndex::open(dir.path()),
        Err(SearchError::Incompatible { .. })
    ));
}

#[test]
fn rebuild_refuses_what_is_not_an_index_directory_and_a_locked_one() {
    let dir = TempDir::new().unwrap();
    fs::write(dir.path().join("meta.json"), b"garbage").unwrap();
    fs::create_dir(dir.path().join("precious")).unwrap();
    fs::write(dir.path().join("precious/file.txt"), b"keep me").unwrap();
    assert!(matches!(
        NewsIndex::open_or_rebuild(dir.path()),
        Err(SearchError::Io { .. })
    ));
    assert!(dir.path().join("precious/file.txt").exists());
    assert!(dir.path().join("meta.json").exists());

    // A healthy index another writer holds is neither wiped nor opened.
    let dir = TempDir::new().unwrap();
    let holder = open_with(dir.path(), &corpus(), 4);
    assert!(matches!(
        NewsIndex::open_or_rebuild(dir.path()),
        Err(SearchError::Locked { .. })
    ));
    assert_eq!(holder.num_docs(), 7);
}

#[test]
fn snippets_escape_html_and_mark_matches() {
    let (_dir, index) = fixture();
    let response = index.search(&request("tesla")).unwrap();
    let hit = &response.hits[0];
    assert_eq!(
        hit.headline,
        "<script>alert('x')</script> Tesla recalls cars"
    );
    assert_eq!(
        hit.headline_snippet,
        "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; <b>Tesla</b> recalls cars"
    );
    assert_eq!(hit.body_snippet, "");
    let response = index.search(&request("script")).unwrap();
    assert_eq!(
        response.hits[0].headline_snippet,
        "&lt;<b>script</b>&gt;alert(&#x27;x&#x27;)&lt;/<b>script</b>&gt; Tesla recalls cars"
    );

    let response = index.search(&request("\"rate cut\"")).unwrap();
    let hit = &response.hits[0];
    assert_eq!(
        hit.headline_snippet,
        "Fed signals <b>rate</b> <b>cut</b> in March"
    );
    assert_eq!(
        hit.body_snippet,
        "The Federal Reserve hinted that a <b>rate</b> <b>cut</b> could come soon."
    );
    // A body without the words: its start, unmarked.
    let response = index
        .search(&request("headline:microsoft earnings"))
        .unwrap();
    assert_eq!(
        response.hits[0].body_snippet,
        "Microsoft reported cloud revenue growth; Azure led the quarter."
    );
    // Blank text: nothing to mark, everything escaped.
    let mut newest = request("");
    newest.limit = 1;
    let response = index.search(&newest).unwrap();
    assert_eq!(response.hits[0].news_key, "wire:7");
    assert!(response.hits[0]
        .headline_snippet
        .starts_with("&lt;script&gt;"));
    assert!(!response.hits[0].headline_snippet.contains("<b>"));
}

#[test]
fn long_bodies_get_a_passage() {
    let dir = TempDir::new().unwrap();
    let filler = "lorem ipsum dolor sit amet ".repeat(40);
    let body = format!("{filler} the merger closed on friday {filler}");
    let row = with_body(news_row("long", "Deal news", &[], T0), &body);
    let index = open_with(dir.path(), &[row], 1);
    let hit = &index.search(&request("merger")).unwrap().hits[0];
    assert!(
        hit.body_snippet.contains("<b>merger</b>"),
        "{}",
        hit.body_snippet
    );
    assert!(hit.body_snippet.starts_with('…') && hit.body_snippet.ends_with('…'));
    assert!(hit.body_snippet.chars().count() < 260);
    let hit = &index.search(&request("deal")).unwrap().hits[0];
    assert!(!hit.body_snippet.contains("<b>"));
    assert!(hit.body_snippet.starts_with("lorem ipsum") && hit.body_snippet.ends_with('…'));
}

#[test]
fn headline_matches_outrank_body_matches() {
    let (_dir, index) = fixture();
    // `apple` is in the headlines of wire:1 and wire:5 and the body only of wire:6.
    let response = index.search(&request("apple")).unwrap();
    let ranked = keys(&response);
    assert_eq!(ranked.len(), 3);
    assert_eq!(ranked.last(), Some(&"wire:6"), "{ranked:?}");
    assert!(response.hits.windows(2).all(|w| w[0].score >= w[1].score));
    assert!(response.hits.iter().all(|h| h.score > 0.0));
    // Headline only vs body only, same word, otherwise alike.
    let dir = TempDir::new().unwrap();
    let rows = [
        with_body(
            news_row("body", "Markets today", &[], T0),
            "Oil prices jumped.",
        ),
        with_body(
            news_row("head", "Oil prices jumped", &[], T0),
            "Markets today.",
        ),
    ];
    let index = open_with(dir.path(), &rows, 1);
    let response = index.search(&request("oil")).unwrap();
    assert_eq!(keys(&response), ["head", "body"]);
    assert!(response.hits[0].score > response.hits[1].score);
}

#[test]
fn blank_text_lists_newest_first() {
    let (_dir, index) = fixture();
    let response = index.search(&request("  ")).unwrap();
    assert_eq!(response.total_hits, 7);
    assert_eq!(
        keys(&response),
        ["wire:7", "wire:6", "wire:5", "wire:4", "wire:3", "wire:2", "wire:1"]
    );
    assert!(response.hits.iter().all(|h| h.score == 0.0));
}

#[test]
fn limit_and_offset_page_through_all_hits() {
    let (_dir, index) = fixture();
    let mut req = request("");
    req.limit = 3;
    let mut seen = Vec::new();
    for offset in [0, 3, 6, 9] {
        req.offset = offset;
        let page = index.search(&req).unwrap();
        assert_eq!(page.total_hits, 7);
        seen.extend(keys(&page).into_iter().map(String::from));
    }
    assert_eq!(seen.len(), 7);
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), 7);
    req.limit = 0;
    req.offset = 0;
    let counted = index.search(&req).unwrap();
    assert_eq!((counted.total_hits, counted.hits.len()), (7, 0));
    req.limit = usize::MAX;
    assert_eq!(index.search(&req).unwrap().hits.len(), 7);
    req.offset = MAX_OFFSET + 1;
    assert!(matches!(index.search(&req), Err(SearchError::BadQuery(_))));
    req.offset = usize::MAX;
    assert!(matches!(index.search(&req), Err(SearchError::BadQuery(_))));
    req.offset = MAX_OFFSET;
    assert_eq!(index.search(&req).unwrap().total_hits, 7);
}

#[test]
fn bad_queries_say_what_is_wrong() {
    let (_dir, index) = fixture();
    let message = |text: &str| match index.search(&request(text)) {
        Err(SearchError::BadQuery(message)) => message,
        other => panic!("{text:?}: {other:?}"),
    };
    assert!(message("tickers:MSFT").contains("symbols filter"));
    assert!(message("Q3: results").contains("quotes"));
    assert!(message(&format!("apple^{}", "9".repeat(400))).contains("boost"));
    assert!(message("apple^1001").contains("boost"));
    assert!(message("headline:*").contains("has a value"));
    assert!(!message("\"unbalanced").is_empty());
    assert!(message(&"(".repeat(100)).contains("nests"));
    assert!(message(&"word ".repeat(1000)).contains("bytes"));
    assert!(message(&"word ".repeat(65)).contains("65 words"));
    assert!(message("headline:/app.*/").contains("regular expressions"));
}

/// A small deterministic generator (xorshift), so failures reproduce.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

#[test]
fn adversarial_queries_never_panic() {
    let (_dir, index) = fixture();
    let fixed = [
        "\"",
        "\"\"",
        "\"apple",
        "apple\"",
        "'",
        "(",
        ")",
        "((",
        "))",
        "()",
        "[",
        "]",
        "{",
        "}",
        "[* TO *]",
        "{a TO b]",
        "~",
        "~~",
        "apple~",
        "apple~~2",
        "\"apple\"~",
        "\"a b\"~99999999999",
        "\"a b\"~4294967296",
        "apple^",
        "apple^^2",
        "apple^-1",
        "apple^0",
        "^2",
        "*",
        "**",
        "*:*",
        "field:",
        ":",
        "::",
        "headline:",
        "body:\"\"",
        "headline:*",
        "body:[a TO z]",
        "headline:>apple",
        "headline:<=zz",
        "headline: IN [apple iphone]",
        "IN [a b]",
        "-",
        "+",
        "-+",
        "+-apple",
        "--apple",
        "NOT",
        "AND",
        "OR",
        "AND OR NOT",
        "NOT NOT apple",
        "apple AND",
        "OR apple",
        "a AND (b OR",
        "\\",
        "\\\"",
        "apple\\",
        "/regex/",
        "//",
        "99999999999999999999999999",
        "-99999999999999999999",
        "1e309",
        "NaN",
        "inf",
        "\u{0}",
        "\u{202e}gnirts",
        "😀",
        "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
        "日本語 ニュース",
        "ﬁnance",
        "İstanbul",
        "\"a\u{0301}\"",
        "apple\t\nmicrosoft",
        " ",
        "\u{a0}",
        "apple*",
        "\"apple mi\"*",
        "\"a\"*",
        "app*le",
        "?",
        "a?c",
        "&&",
        "||",
        "!",
        "!apple",
        "apple && iphone",
        "headline:apple^2 body:iphone^0.5",
        "(((apple)))",
        "\"((\"",
        "a:b:c",
        "tickers",
        "published_at_ns:1",
        "event_time_ns:[0 TO 1]",
        "HEADLINE:apple",
        "_id:1",
    ];
    let atoms = [
        "apple",
        "iphone",
        "rate",
        "cut",
        "\"",
        "'",
        "(",
        ")",
        "[",
        "]",
        "{",
        "}",
        "~",
        "~1",
        "^",
        "^2",
        "*",
        ":",
        "headline:",
        "body:",
        "tickers:",
        "AND",
        "OR",
        "NOT",
        "+",
        "-",
        "\\",
        "/",
        "TO",
        "IN",
        " ",
        " ",
        " ",
        "é",
        "😀",
        "0",
        "-1",
        "999999999999999999999",
        "<",
        ">",
        "=",
        "!",
        "?",
        ",",
        ".",
        "\u{0}",
    ];
    let mut random = Random(0x9e37_79b9_7f4a_7c15);
    let mut texts: Vec<String> = fixed.iter().map(|s| s.to_string()).collect();
    // Chains the grammar recurses on, at and past the limits.
    for unit in [
        "NOT ", "-", "+", "a AND ", "a OR ", "\"", "(a) ", "a^2 ", "~", "^", "-a",
    ] {
        for times in [crate::MAX_QUERY_WORDS - 1, crate::MAX_QUERY_WORDS + 1, 2000] {
            texts.push(format!("{}apple", unit.repeat(times)));
        }
    }
    texts.push(format!("{}apple{}", "(".repeat(32), ")".repeat(32)));
    texts.push(format!("{}apple{}", "NOT (".repeat(32), ")".repeat(32)));
    for _ in 0..300 {
        let len = 1 + random.next() % 8;
        texts.push((0..len).map(|_| random.pick(&atoms)).collect());
    }
    for _ in 0..50 {
        // Raw random bytes, lossily decoded: control characters and replacement chars too.
        let bytes: Vec<u8> = (0..1 + random.next() % 24)
            .map(|_| random.next() as u8)
            .collect();
        texts.push(String::from_utf8_lossy(&bytes).into_owned());
    }
    let (mut ok, mut refused) = (0, 0);
    for text in &texts {
        for fuzzy in [false, true] {
            let mut req = request(text);
            req.fuzzy = fuzzy;
            match index.search(&req) {
                Ok(response) => {
                    assert!(response.total_hits <= 7, "{text:?}");
                    ok += 1;
                }
                Err(SearchError::BadQuery(message)) => {
                    assert!(!message.is_empty(), "{text:?}");
                    refused += 1;
                }
                Err(other) => panic!("{text:?} (fuzzy {fuzzy}): {other:?}"),
            }
        }
    }
    // Both outcomes occur: the generator is not trivially all-valid or all-invalid.
    assert!(ok > 50 && refused > 50, "ok {ok}, refused {refused}");
}

#[test]
fn handles_can_be_shared_with_request_handlers() {
    fn shared<T: Send + Sync + Clone + 'static>() {}
    fn owned<T: Send + 'static>() {}
    shared::<NewsReader>();
    owned::<NewsIndex>();
}
