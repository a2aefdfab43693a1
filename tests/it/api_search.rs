//! News search through the API: entitled by the same grants as the rows (symbol-restricted
//! grants see only their tickers, whatever the query text), refused when the text is masked,
//! authenticated and audited; new news becomes searchable without a restart, and a lost index
//! is rebuilt from `l2.news`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use marketlake_api::auth::mint;
use marketlake_api::config::AuthConfig;
use marketlake_lake::{CommitOutcome, ExactlyOnceSink, OffsetAdvance};
use marketlake_schemas::l2::{self, Lineage, NewsRow};

use crate::api::{code, Client};
use crate::support::{free_port, sigint, wait_output, Lake, LakeOptions};

fn news(i: i64, headline: &str, body: &str, tickers: &[&str]) -> NewsRow {
    NewsRow {
        news_key: format!("test:{i}"),
        headline: headline.into(),
        body: Some(body.into()),
        link: Some(format!("https://news.example/{i}")),
        publisher: Some("Example Wire".into()),
        published_at_ns: Some(1_767_623_400_000_000_000 + i * 60_000_000_000),
        received_at_ns: 1_767_623_400_000_000_000 + i * 60_000_000_000,
        language: Some("en".into()),
        tickers: tickers.iter().map(|t| t.to_string()).collect(),
        reference_version: None,
        extra: Default::default(),
        flags: Vec::new(),
        lineage: Lineage {
            source_id: "search-test".into(),
            source_uri: "test://search".into(),
            source_position: i,
            raw_topic: "raw.news".into(),
            raw_partition: 0,
            raw_offset: i,
        },
    }
}

async fn commit(
    sink: &mut ExactlyOnceSink,
    rows: &[NewsRow],
    from: Option<i64>,
    to: i64,
) -> Result<()> {
    let outcome = sink
        .commit(
            l2::news_batch(rows, 0)?,
            &[OffsetAdvance {
                topic: "raw.news".into(),
                partition: 0,
                from,
                to,
            }],
        )
        .await?;
    assert!(matches!(outcome, CommitOutcome::Committed { .. }));
    Ok(())
}

const GRANTS: &str = r#"
[[grants]]
dataset = "l2.news"
principal_kind = "group"
principal = "desk-eq"
symbols = ["AAPL"]

[[grants]]
dataset = "l2.news"
principal_kind = "group"
principal = "compliance"

[[grants]]
dataset = "l2.news"
principal_kind = "group"
principal = "interns"
column_masks = { body = "hide" }

[[grants]]
dataset = "l2.news"
principal_kind = "group"
principal = "venue-desk"
venues = ["XNAS"]
"#;

async fn search(
    client: &Client,
    query: &str,
    token: Option<&str>,
) -> Result<(u16, serde_json::Value)> {
    let (status, body) = client
        .get(&format!("/v1/search/news?{query}"), token)
        .await?;
    let value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    Ok((status, value))
}

fn keys(found: &serde_json::Value) -> Vec<String> {
    let mut keys: Vec<String> = found["hits"]
        .as_array()
        .map(|hits| {
            hits.iter()
                .filter_map(|h| h["news_key"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    keys.sort();
    keys
}

/// Wait until compliance's match-all search counts `want` items.
async fn until_indexed(client: &Client, token: &str, want: u64, lake: &Lake) -> Result<Duration> {
    let started = Instant::now();
    loop {
        // The server may still be starting: connection errors are retried.
        if let Ok((200, found)) = search(client, "limit=1", Some(token)).await {
            if found["total_hits"].as_u64() == Some(want) {
                return Ok(started.elapsed());
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "not indexed after 20 s:\n{}",
            lake.log("serve.log")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn news_search_is_entitled_fresh_and_rebuildable() -> Result<()> {
    let port = free_port();
    let grants = tempfile::NamedTempFile::new()?;
    std::fs::write(grants.path(), GRANTS)?;
    let catalog_dir = std::env::temp_dir().join(format!("ml-api-search-{port}"));
    let lake = Lake::new(LakeOptions {
        extra_toml: format!(
            "[api]\nlisten = \"127.0.0.1:{port}\"\ncatalog_url = \"sqlite://{}/catalog.db\"\nseed_grants_file = \"{}\"\n[api.search]\npoll_ms = 100\n",
            catalog_dir.display(),
            grants.path().display()
        ),
        ..LakeOptions::default()
    })?;
    let spec = marketlake_enrich::pipeline::l2_specs()
        .into_iter()
        .find(|s| s.name == marketlake_schemas::names::L2_NEWS)
        .context("l2.news spec")?;
    let mut sink = ExactlyOnceSink::open(&lake.lake_config(), spec, "search-test").await?;
    let first = vec![
        news(
            0,
            "Apple unveils a new iPhone",
            "Cupertino showed the phone to analysts.",
            &["AAPL"],
        ),
        news(
            1,
            "Microsoft cloud revenue beats estimates",
            "Azure grew faster than Apple services.",
            &["MSFT"],
        ),
        // No published time: placed at its receive time, by search and by the rows API alike.
        NewsRow {
            published_at_ns: None,
            ..news(
                2,
                "Pineapple prices soar",
                "Tropical fruit markets are tight.",
                &[],
            )
        },
        news(
            3,
            "Apple and Microsoft settle patent case",
            "The companies agreed terms.",
            &["AAPL", "MSFT"],
        ),
    ];
    commit(&mut sink, &first, None, 3).await?;

    let client = Client {
        base: format!("http://127.0.0.1:{port}"),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()?,
    };
    let start = |lake: &Lake| lake.spawn(&["serve"], "serve.log");
    let mut server = start(&lake)?;
    let auth = AuthConfig::default();
    let quant = mint(&auth, "alice", &["quant".into()], &["desk-eq".into()], 600)?;
    let compliance = mint(&auth, "carol", &[], &["compliance".into()], 600)?;
    let intern = mint(&auth, "ivan", &[], &["interns".into()], 600)?;
    let venue_desk = mint(&auth, "vera", &[], &["venue-desk".into()], 600)?;
    let nobody = mint(&auth, "bob", &[], &["desk-fx".into()], 600)?;
    let expired = mint(&auth, "carol", &[], &["compliance".into()], -3_600)?;
    until_indexed(&client, &compliance, 4, &lake).await?;

    // Authentication and entitlement, as on every data route.
    for (who, token, status, want) in [
        ("no token", None, 401, "token_missing"),
        ("expired", Some(expired.as_str()), 401, "token_expired"),
        (
            "forged",
            Some("eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl"),
            401,
            "bad_signature",
        ),
        ("no grant", Some(nobody.as_str()), 404, "dataset_not_found"),
        (
            "masked body",
            Some(intern.as_str()),
            403,
            "search_not_entitled",
        ),
    ] {
        let (got, body) = client.get("/v1/search/news?q=apple", token).await?;
        assert_eq!(got, status, "{who}: {}", String::from_utf8_lossy(&body));
        assert_eq!(code(&body), want, "{who}");
    }

    // Word boundaries and the grant: "apple" never matches "Pineapple"; the quant sees only
    // AAPL news whatever the text asks for.
    let (_, found) = search(&client, "q=apple", Some(&compliance)).await?;
    assert_eq!(keys(&found), ["test:0", "test:1", "test:3"]);
    let (_, found) = search(&client, "q=apple", Some(&quant)).await?;
    assert_eq!(keys(&found), ["test:0", "test:3"]);
    let (_, found) = search(&client, "q=microsoft", Some(&quant)).await?;
    assert_eq!(
        keys(&found),
        ["test:3"],
        "MSFT-only news stays out of reach"
    );
    let (status, found) = search(&client, "q=tickers:MSFT", Some(&quant)).await?;
    assert_eq!(status, 400, "{found}");
    assert_eq!(found["error"]["code"], "bad_search_query");
    let (_, found) = search(&client, "q=azure&symbols=MSFT", Some(&quant)).await?;
    assert_eq!(
        found["total_hits"], 0,
        "asking for more than the grant gives no more"
    );
    let (_, found) = search(&client, "q=apple", Some(&venue_desk)).await?;
    assert_eq!(found["total_hits"], 0, "a venue grant on news fails closed");

    // Phrases, fuzzy, snippets, time filter.
    let (_, found) = search(&client, "q=%22patent%20case%22", Some(&compliance)).await?;
    assert_eq!(keys(&found), ["test:3"]);
    let (_, found) = search(&client, "q=mircosoft", Some(&compliance)).await?;
    assert_eq!(found["total_hits"], 0);
    let (_, found) = search(&client, "q=microsft&fuzzy=true", Some(&compliance)).await?;
    assert_eq!(keys(&found), ["test:1", "test:3"]);
    let (_, found) = search(&client, "q=iphone", Some(&compliance)).await?;
    let snippet = found["hits"][0]["headline_snippet"]
        .as_str()
        .context("snippet")?;
    assert!(snippet.contains("<b>iPhone</b>"), "{snippet}");
    let from = 1_767_623_400_000_000_000i64 + 60_000_000_000;
    let (_, found) = search(
        &client,
        &format!("from={from}&to={}", from + 120_000_000_000),
        Some(&compliance),
    )
    .await?;
    assert_eq!(keys(&found), ["test:1", "test:2"]);
    let rows = client
        .http
        .get(format!(
            "{}/v1/datasets/l2.news/rows?from={from}&to={}&columns=news_key&format=ndjson",
            client.base,
            from + 120_000_000_000
        ))
        .bearer_auth(&compliance)
        .send()
        .await?;
    assert_eq!(rows.status().as_u16(), 200);
    let mut in_range: Vec<String> = rows
        .text()
        .await?
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|row| row["news_key"].as_str().map(str::to_owned))
        .collect();
    in_range.sort();
    assert_eq!(in_range, ["test:1", "test:2"]);

    // New news is searchable without a restart.
    commit(
        &mut sink,
        &[news(
            4,
            "Apple opens a store in Mumbai",
            "Retail expansion.",
            &["AAPL"],
        )],
        Some(3),
        4,
    )
    .await?;
    let waited = until_indexed(&client, &compliance, 5, &lake).await?;
    eprintln!(
        "news searchable {} ms after its commit (poll 100 ms)",
        waited.as_millis()
    );
    let (_, found) = search(&client, "q=mumbai", Some(&quant)).await?;
    assert_eq!(keys(&found), ["test:4"]);

    // A lost index is rebuilt from l2.news at the next start.
    sigint(&server);
    let exit = wait_output(server, Duration::from_secs(20))?;
    assert!(exit.status.success(), "{}", lake.log("serve.log"));
    std::fs::remove_dir_all(lake.lake_config().root.join("_index/news"))?;
    server = start(&lake)?;
    until_indexed(&client, &compliance, 5, &lake).await?;
    let (_, found) = search(&client, "q=apple", Some(&quant)).await?;
    assert_eq!(keys(&found), ["test:0", "test:3", "test:4"]);
    sigint(&server);
    let exit = wait_output(server, Duration::from_secs(20))?;
    assert!(exit.status.success(), "{}", lake.log("serve.log"));

    // Every search was audited with its query.
    let catalog = marketlake_api::catalog::Catalog::connect(&format!(
        "sqlite://{}/catalog.db",
        catalog_dir.display()
    ))
    .await?;
    let events = catalog.audit_of("alice").await?;
    assert_eq!(
        events.iter().filter(|e| e.0 == "/v1/search/news").count(),
        5,
        "{events:?}"
    );
    let _ = std::fs::remove_dir_all(&catalog_dir);
    Ok(())
}
