//! `marketlake bench api`: the API's figures, in one run on a private lake served on loopback.
//! - Full extraction of `l2.trades` through the API as Parquet and as NDJSON: rows/s, MB/s and
//!   the process's peak resident memory during it — beside DuckDB reading the same Parquet files
//!   into Arrow in the same run (the reference).
//! - A one-symbol, one-hour query: p50/p99 latency and the files it read out of the version's.
//! - News search: time from an `l2.news` commit to searchable, and p50/p99 over many queries.

use std::time::{Duration, Instant};

use anyhow::Context;
use marketlake_api::auth::mint;
use marketlake_api::catalog::{Catalog, Grant};
use marketlake_lake::{ExactlyOnceSink, LakeConfig, OffsetAdvance};
use marketlake_schemas::l2::{self, Lineage, NewsRow, TradeAction, TradeRow};
use marketlake_schemas::names::{L2_NEWS, L2_TRADES};
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;

use crate::config::Config;

#[derive(Debug, clap::Args)]
pub struct ApiBenchArgs {
    /// Rows of `l2.trades`.
    #[arg(long, default_value_t = 2_000_000)]
    rows: u64,
    /// Commits (one file each) the rows are written in, spread evenly over one trading day.
    #[arg(long, default_value_t = 48)]
    files: u64,
    #[arg(long, default_value_t = 100)]
    symbols: u64,
    /// Requests per latency measure.
    #[arg(long, default_value_t = 100)]
    queries: usize,
    /// News items indexed for the search measure.
    #[arg(long, default_value_t = 20_000)]
    news: u64,
    /// Formats of the full extraction, in this order (memory is measured per format, so the
    /// order shows how much the allocator keeps from one to the next).
    #[arg(long, value_delimiter = ',', default_values_t = ["parquet".to_string(), "ndjson".to_string()])]
    formats: Vec<String>,
}

const DAY_START_NS: i64 = 1_767_603_600_000_000_000; // 2026-01-05T09:00:00Z
const DAY_NS: i64 = 8 * 3_600 * 1_000_000_000;
const WORDS: &[&str] = &[
    "earnings",
    "guidance",
    "merger",
    "acquisition",
    "dividend",
    "buyback",
    "downgrade",
    "upgrade",
    "lawsuit",
    "settlement",
    "revenue",
    "margin",
    "outlook",
    "regulator",
    "approval",
    "recall",
    "chip",
    "cloud",
    "battery",
    "pipeline",
    "tariff",
    "strike",
    "forecast",
    "rates",
    "inflation",
    "layoffs",
    "hiring",
    "partnership",
    "contract",
    "patent",
    "launch",
    "delay",
    "investigation",
];

fn trade(i: u64, symbols: u64, rng: &mut rand::rngs::StdRng, time_ns: i64) -> TradeRow {
    let symbol = format!("S{:04}", rng.gen_range(0..symbols));
    let account = format!("ACC-{}", rng.gen_range(0..500));
    TradeRow {
        trade_key: format!("bench:{i}"),
        action: TradeAction::New,
        supersedes: None,
        symbol,
        isin: None,
        figi: None,
        instrument_name: None,
        exchange: Some("XNAS".into()),
        currency: Some("USD".into()),
        price: rng.gen_range(1_000_000_000..100_000_000_000),
        quantity: rng.gen_range(1..10_000) * 10_000,
        side: Some(if i.is_multiple_of(2) { "buy" } else { "sell" }.into()),
        venue: Some("XNAS".into()),
        trade_id: Some(format!("T{i}")),
        order_id: Some(format!("O{i}")),
        trader: Some(format!("trader-{}", rng.gen_range(0..50))),
        account: Some(account),
        event_time_ns: time_ns,
        received_at_ns: time_ns + 1_000_000,
        reference_version: None,
        flags: Vec::new(),
        lineage: Lineage {
            source_id: "bench-api".into(),
            source_uri: "bench://api".into(),
            source_position: i as i64,
            raw_topic: "raw.trades".into(),
            raw_partition: 0,
            raw_offset: i as i64,
        },
    }
}

fn news(i: u64, symbols: u64, rng: &mut rand::rngs::StdRng) -> NewsRow {
    let pick = |rng: &mut rand::rngs::StdRng| WORDS[rng.gen_range(0..WORDS.len())];
    let ticker = format!("S{:04}", rng.gen_range(0..symbols));
    let headline = format!("{ticker} {} {} {}", pick(rng), pick(rng), pick(rng));
    let body = (0..40).map(|_| pick(rng)).collect::<Vec<_>>().join(" ");
    let time = DAY_START_NS + rng.gen_range(0..DAY_NS);
    NewsRow {
        news_key: format!("bench:{i}"),
        headline,
        body: Some(body),
        link: None,
        publisher: Some("Bench Wire".into()),
        published_at_ns: Some(time),
        received_at_ns: time,
        language: Some("en".into()),
        tickers: vec![ticker],
        reference_version: None,
        flags: Vec::new(),
        lineage: Lineage {
            source_id: "bench-api".into(),
            source_uri: "bench://news".into(),
            source_position: i as i64,
            raw_topic: "raw.news".into(),
            raw_partition: 0,
            raw_offset: i as i64,
        },
    }
}

/// Peak resident memory since the last reset, MB (`/proc/self/status` VmHWM).
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Resident memory now, MB (`/proc/self/status` VmRSS).
fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Reset the peak-memory mark (Linux: writing 5 to clear_refs).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn quantile(values: &[i64], q: f64) -> f64 {
    marketlake_schemas::quantile_ms(values, q).unwrap_or(f64::NAN)
}

async fn commit_all(
    lake: &LakeConfig,
    name: marketlake_schemas::names::TableName,
    batches: Vec<marketlake_lake::RecordBatch>,
) -> anyhow::Result<()> {
    let spec = marketlake_enrich::pipeline::l2_specs()
        .into_iter()
        .find(|s| s.name == name)
        .context("an L2 table")?;
    let mut sink = ExactlyOnceSink::open(lake, spec, "bench-api").await?;
    let mut from = None;
    for (i, batch) in batches.into_iter().enumerate() {
        let to = i as i64;
        sink.commit(
            batch,
            &[OffsetAdvance {
                topic: "bench".into(),
                partition: 0,
                from,
                to,
            }],
        )
        .await?;
        from = Some(to);
    }
    Ok(())
}

/// GET `path`, reading the body as it streams; returns (status, bytes, newlines, headers).
async fn fetch(
    http: &reqwest::Client,
    url: &str,
    token: &str,
) -> anyhow::Result<(u16, u64, u64, reqwest::header::HeaderMap)> {
    let mut response = http
        .get(url)
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let (mut bytes, mut lines) = (0u64, 0u64);
    // Lines are counted for NDJSON only: the client shares the machine with the server, and
    // a byte-by-byte pass over an Arrow body would be the client's cost, not the API's.
    let count_lines = url.contains("format=ndjson");
    while let Some(chunk) = response.chunk().await? {
        bytes += chunk.len() as u64;
        if count_lines {
            lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        }
    }
    Ok((status, bytes, lines, headers))
}

pub async fn run(config: Config, args: ApiBenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let lake = LakeConfig {
        root: dir.path().join("lake"),
        ..config.lake.clone()
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    println!(
        "writing {} rows of l2.trades in {} commits ...",
        args.rows, args.files
    );
    let per_file = args.rows.div_ceil(args.files.max(1));
    let mut batches = Vec::new();
    let mut i = 0u64;
    let slice = DAY_NS / args.files.max(1) as i64;
    for file in 0..args.files {
        let rows: Vec<TradeRow> = (0..per_file.min(args.rows - i))
            .map(|k| {
                let t = DAY_START_NS + file as i64 * slice + (k as i64 * slice) / per_file as i64;
                trade(i + k, args.symbols, &mut rng, t)
            })
            .collect();
        i += rows.len() as u64;
        batches.push(l2::trades_batch(&rows, 0)?);
    }
    commit_all(&lake, L2_TRADES, batches).await?;

    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut api_config = config.api.clone();
    api_config.listen = format!("127.0.0.1:{port}");
    api_config.catalog_url = format!("sqlite://{}/catalog.db", dir.path().display());
    api_config.seed_grants_file = None;
    api_config.rate_limit_burst = 1_000_000;
    api_config.rate_limit_per_minute = 1_000_000;
    api_config.search.poll_ms = 100;
    let api = marketlake_api::http::Api::start(
        api_config.clone(),
        lake.clone(),
        crate::run::all_specs(&config),
    )
    .await?;
    let catalog = Catalog::connect(&api_config.catalog_url).await?;
    for dataset in [L2_TRADES, L2_NEWS] {
        catalog
            .grant(
                &Grant {
                    grant_id: String::new(),
                    dataset: dataset.to_string(),
                    principal_kind: "group".into(),
                    principal: "bench".into(),
                    symbols: None,
                    venues: None,
                    column_masks: [("account".to_string(), "hash".to_string())].into(),
                },
                "bench",
                None,
            )
            .await?;
    }
    let token = mint(&api_config.auth, "bench", &[], &["bench".into()], 3_600)?;
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(api.serve(shutdown.clone()));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()?;
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if http.get(format!("{base}/health")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Full extraction, two formats, with the peak memory of this process (server + client).
    let mut table = Vec::new();
    for format in &args.formats {
        let format = format.as_str();
        reset_peak_rss();
        let before = rss_mb();
        let started = Instant::now();
        let (status, bytes, lines, _) = fetch(
            &http,
            &format!("{base}/v1/datasets/l2.trades/rows?format={format}"),
            &token,
        )
        .await?;
        let secs = started.elapsed().as_secs_f64();
        anyhow::ensure!(status == 200, "extraction as {format}: HTTP {status}");
        if format == "ndjson" {
            anyhow::ensure!(
                lines == args.rows,
                "ndjson returned {lines} rows of {}",
                args.rows
            );
        }
        table.push((format, secs, bytes, before, peak_rss_mb()));
    }

    // DuckDB reading the same files into Arrow (the reference).
    let files: Vec<String> = walk_parquet(&lake.root.join("l2/trades"))?;
    // Three runs in one process; the best is the reference (the hardest one to reach).
    let script = "import duckdb, sys, time\nfiles = sys.argv[1:]\nduckdb.sql('SET enable_progress_bar = false')\nbest = None\nfor _ in range(3):\n    t = time.time()\n    r = duckdb.sql(f'select * from read_parquet({files})').arrow()\n    n = r.read_all().num_rows if hasattr(r, 'read_all') else r.num_rows\n    s = time.time() - t\n    best = s if best is None else min(best, s)\nprint(n, best)\n";
    let duck = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(&files)
        .output()
        .context("python3 with duckdb (scripts/ensure-tools --with-test-tools)")?;
    let duck_text = String::from_utf8_lossy(&duck.stdout).to_string();
    let duck_secs: Option<f64> = duck_text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok());

    // One symbol, one hour: as written (files hold every symbol), then after compaction, which
    // clusters rows by symbol and time.
    let hour_start = DAY_START_NS + 3 * 3_600 * 1_000_000_000;
    let (narrow, scan_files) = narrow_queries(&http, &base, &token, &args, hour_start).await?;
    let spec = marketlake_enrich::pipeline::l2_specs()
        .into_iter()
        .find(|s| s.name == L2_TRADES)
        .context("l2.trades")?;
    let compacted = Instant::now();
    let report = marketlake_lake::maintain::maintain_table(&lake, &spec, i64::MAX).await?;
    let compact_secs = compacted.elapsed().as_secs_f64();
    let (narrow_after, scan_after) =
        narrow_queries(&http, &base, &token, &args, hour_start).await?;

    // News: commit, time to searchable, then query latency.
    let news_rows: Vec<NewsRow> = (0..args.news)
        .map(|i| news(i, args.symbols, &mut rng))
        .collect();
    let committed = Instant::now();
    commit_all(&lake, L2_NEWS, vec![l2::news_batch(&news_rows, 0)?]).await?;
    let commit_secs = committed.elapsed().as_secs_f64();
    let searchable_after = loop {
        let (status, body) = {
            let response = http
                .get(format!("{base}/v1/search/news?limit=1"))
                .header("Authorization", format!("Bearer {token}"))
                .send()
                .await?;
            (response.status().as_u16(), response.text().await?)
        };
        let total = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["total_hits"].as_u64());
        if status == 200 && total == Some(args.news) {
            break committed.elapsed().as_secs_f64() - commit_secs;
        }
        anyhow::ensure!(
            committed.elapsed() < Duration::from_secs(600),
            "news never searchable"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut searches = Vec::new();
    for q in 0..args.queries {
        let a = WORDS[q % WORDS.len()];
        let b = WORDS[(q * 7 + 3) % WORDS.len()];
        let query = match q % 4 {
            0 => a.to_string(),
            1 => format!("{a} AND {b}"),
            2 => format!("%22{a}%20{b}%22"),
            _ => format!("{}&fuzzy=true", &a[..a.len() - 1]),
        };
        let started = Instant::now();
        let (status, _, _, _) = fetch(
            &http,
            &format!("{base}/v1/search/news?q={query}&limit=20"),
            &token,
        )
        .await?;
        searches.push(started.elapsed().as_micros() as i64);
        anyhow::ensure!(status == 200, "search {query}: HTTP {status}");
    }
    shutdown.cancel();
    let _ = server.await;

    println!();
    println!(
        "bench api: {} rows of l2.trades in {} files ({} symbols), {} news items; private lake, API on loopback, this machine",
        args.rows, args.files, args.symbols, args.news
    );
    println!("| measure | figure |");
    println!("|---|---|");
    let duck_rate = duck_secs.map(|secs| args.rows as f64 / secs);
    if let (Some(rate), Some(secs)) = (duck_rate, duck_secs) {
        println!(
            "| DuckDB reading the same Parquet files into Arrow (reference, best of 3) | {rate:.0} rows/s ({secs:.2} s) |"
        );
    } else {
        println!(
            "| DuckDB reference | not measured: {} {} |",
            duck_text.trim(),
            String::from_utf8_lossy(&duck.stderr).trim()
        );
    }
    for (format, secs, bytes, before, peak) in &table {
        let rate = args.rows as f64 / secs;
        let ratio = duck_rate.map_or_else(String::new, |duck| {
            format!("; {:.0} % of DuckDB", 100.0 * rate / duck)
        });
        println!(
            "| full extraction as {format} | {rate:.0} rows/s, {:.1} MB/s ({} MB in {secs:.1} s){ratio}; process RSS {before:.0} MB before, peak {peak:.0} MB during (growth {:.0} MB) |",
            *bytes as f64 / 1e6 / secs,
            bytes / 1_000_000,
            peak - before
        );
    }
    println!(
        "| one symbol, one hour (ndjson), files as written | p50 {:.1} ms, p99 {:.1} ms over {} requests; files read/in version {scan_files} |",
        quantile(&narrow, 0.5),
        quantile(&narrow, 0.99),
        narrow.len()
    );
    println!(
        "| same, after `maintain` (clustered by symbol and time; {} → {} files in {compact_secs:.1} s) | p50 {:.1} ms, p99 {:.1} ms; files read/in version {scan_after} |",
        report.files_before,
        report.files_after,
        quantile(&narrow_after, 0.5),
        quantile(&narrow_after, 0.99),
    );
    println!(
        "| news commit → searchable ({} items in one commit) | {:.2} s (index poll 100 ms) |",
        args.news, searchable_after
    );
    println!(
        "| news search (words, AND, phrases, fuzzy; limit 20) | p50 {:.1} ms, p99 {:.1} ms over {} queries |",
        quantile(&searches, 0.5),
        quantile(&searches, 0.99),
        searches.len()
    );
    Ok(())
}

/// `--queries` one-symbol, one-hour requests; latencies (µs) and the last X-Scan-Files.
async fn narrow_queries(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    args: &ApiBenchArgs,
    hour_start: i64,
) -> anyhow::Result<(Vec<i64>, String)> {
    let mut latencies = Vec::new();
    let mut scan_files = String::new();
    for q in 0..args.queries {
        let symbol = format!("S{:04}", q as u64 % args.symbols);
        let url = format!(
            "{base}/v1/datasets/l2.trades/rows?symbols={symbol}&from={hour_start}&to={}&format=ndjson",
            hour_start + 3_600 * 1_000_000_000
        );
        let started = Instant::now();
        let (status, _, _, headers) = fetch(http, &url, token).await?;
        latencies.push(started.elapsed().as_micros() as i64);
        anyhow::ensure!(status == 200, "narrow query: HTTP {status}");
        scan_files = headers
            .get("x-scan-files")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string();
    }
    Ok((latencies, scan_files))
}

fn walk_parquet(dir: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            if !path.ends_with("_delta_log") {
                out.extend(walk_parquet(&path)?);
            }
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.push(path.display().to_string());
        }
    }
    Ok(out)
}
