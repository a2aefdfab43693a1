//! `marketlake bench api`: the API's figures, in one run on a private lake, with `marketlake
//! serve` running as its own process on loopback (as in production) so that its memory is its
//! own, not the client's or the data generator's.
//! - Full extraction of `l2.trades` (Arrow, NDJSON, Parquet; a grant that hashes `account`):
//!   rows/s, MB/s, and the serve process's resident memory before and at its peak — beside DuckDB
//!   reading the same Parquet files in the same run (the reference, best of three).
//! - A one-symbol, one-hour query: p50/p99 latency and the files it read out of the version's,
//!   on the files as written and after `maintain` (clustered by symbol and time).
//! - News search over `--news` documents whose words follow the frequencies of the bundled real
//!   news text: time from an `l2.news` commit to searchable, and p50/p99 over many queries.
//!
//! Large runs (`--rows 50000000 --files 500 --news 1000000`) are written and committed in
//! slices, so the generator's memory stays bounded.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use marketlake_api::auth::mint;
use marketlake_lake::{ExactlyOnceSink, LakeConfig, OffsetAdvance};
use marketlake_schemas::l2::{self, Lineage, NewsRow, TradeRow};
use marketlake_schemas::names::{L2_NEWS, L2_TRADES};
use rand::distributions::{Distribution, WeightedIndex};
use rand::{Rng, SeedableRng};

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
    /// Keep the lake in this directory, and reuse the `l2.trades` already there (no rows
    /// written): for repeated measures on a large table. Default: a private temporary lake.
    #[arg(long)]
    lake: Option<PathBuf>,
    /// Real news text whose word frequencies the generated news follows.
    #[arg(long, default_value = "data/news")]
    news_corpus: PathBuf,
    /// Format of the one-symbol, one-hour queries.
    #[arg(long, default_value = "arrow")]
    narrow_format: String,
    /// Formats of the full extraction, in this order (memory is measured per format, so the
    /// order shows how much the allocator keeps from one to the next).
    #[arg(long, value_delimiter = ',', default_values_t = ["arrow".to_string(), "ndjson".to_string(), "parquet".to_string()])]
    formats: Vec<String>,
}

const DAY_START_NS: i64 = 1_767_603_600_000_000_000; // 2026-01-05T09:00:00Z
const DAY_NS: i64 = 8 * 3_600 * 1_000_000_000;
/// News rows per commit when loading the search corpus.
const NEWS_PER_COMMIT: u64 = 100_000;
/// News items of the freshness measure, committed once the corpus is indexed.
const FRESH_NEWS: u64 = 100;

fn trade(i: u64, symbols: u64, rng: &mut rand::rngs::StdRng, time_ns: i64) -> TradeRow {
    // Drawn in this order, so a seed gives the same trades as it always did.
    let symbol = format!("S{:04}", rng.gen_range(0..symbols));
    let account = format!("ACC-{}", rng.gen_range(0..500));
    let price = rng.gen_range(1_000_000_000..100_000_000_000);
    let quantity = rng.gen_range(1..10_000) * 10_000;
    let trader = format!("trader-{}", rng.gen_range(0..50));
    let lineage = Lineage {
        source_id: "bench-api".into(),
        source_uri: "bench://api".into(),
        source_position: i as i64,
        raw_topic: "raw.trades".into(),
        raw_partition: 0,
        raw_offset: i as i64,
    };
    TradeRow {
        exchange: Some("XNAS".into()),
        currency: Some("USD".into()),
        side: Some(if i.is_multiple_of(2) { "buy" } else { "sell" }.into()),
        venue: Some("XNAS".into()),
        trade_id: Some(format!("T{i}")),
        order_id: Some(format!("O{i}")),
        trader: Some(trader),
        account: Some(account),
        received_at_ns: time_ns + 1_000_000,
        ..TradeRow::bare(
            format!("bench:{i}"),
            symbol,
            price,
            quantity,
            time_ns,
            lineage,
        )
    }
}

/// The words of real news text with their frequencies: generated news drawn from it has the
/// skewed term distribution of the real thing (a few very common words, a long tail).
struct Corpus {
    words: Vec<String>,
    weights: WeightedIndex<u32>,
}

impl Corpus {
    /// Every file under `dir`: markup and URLs dropped, words of letters kept, lower-cased.
    fn load(dir: &Path) -> anyhow::Result<Corpus> {
        let mut counts: HashMap<String, u32> = HashMap::new();
        let entries = std::fs::read_dir(dir)
            .with_context(|| format!("--news-corpus {}: not readable", dir.display()))?;
        for entry in entries {
            let path = entry?.path();
            if !path.is_file() {
                continue;
            }
            let text = String::from_utf8_lossy(&std::fs::read(&path)?).into_owned();
            let mut in_tag = false;
            let mut plain = String::with_capacity(text.len());
            for c in text.chars() {
                match c {
                    '<' => in_tag = true,
                    '>' => in_tag = false,
                    _ if !in_tag => plain.push(c),
                    _ => {}
                }
            }
            for token in plain.split_whitespace() {
                if token.contains("://") || token.starts_with("www.") || token.contains('@') {
                    continue;
                }
                for word in token.split(|c: char| !c.is_ascii_alphabetic()) {
                    if (2..=20).contains(&word.len()) {
                        *counts.entry(word.to_ascii_lowercase()).or_default() += 1;
                    }
                }
            }
        }
        // JSON and feed field names are not news text.
        for noise in [
            "http", "https", "id", "str", "null", "false", "true", "url", "amp", "quot",
        ] {
            counts.remove(noise);
        }
        let mut words: Vec<(String, u32)> = counts.into_iter().collect();
        words.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        anyhow::ensure!(
            words.len() >= 1_000,
            "--news-corpus {}: {} distinct words; need at least 1,000",
            dir.display(),
            words.len()
        );
        let weights = WeightedIndex::new(words.iter().map(|(_, n)| *n))?;
        Ok(Corpus {
            words: words.into_iter().map(|(w, _)| w).collect(),
            weights,
        })
    }

    fn sample<'a>(&'a self, rng: &mut rand::rngs::StdRng) -> &'a str {
        &self.words[self.weights.sample(rng)]
    }

    fn text(&self, rng: &mut rand::rngs::StdRng, words: usize) -> String {
        let mut text = String::with_capacity(words * 8);
        for i in 0..words {
            if i > 0 {
                text.push(' ');
            }
            text.push_str(self.sample(rng));
        }
        text
    }

    /// A content word for a query: past the most common words (which a reader would not
    /// search for), within the vocabulary most documents draw from.
    fn query_word<'a>(&'a self, rng: &mut rand::rngs::StdRng) -> &'a str {
        let top = self.words.len().min(3_000);
        &self.words[rng.gen_range(50.min(top - 1)..top)]
    }
}

fn news(i: u64, symbols: u64, corpus: &Corpus, rng: &mut rand::rngs::StdRng) -> NewsRow {
    let ticker = format!("S{:04}", rng.gen_range(0..symbols));
    let headline_words = rng.gen_range(6..14);
    let body_words = rng.gen_range(30..150);
    let headline = format!("{ticker} {}", corpus.text(rng, headline_words));
    let body = corpus.text(rng, body_words);
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
        extra: Default::default(),
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

/// One field of `/proc/<pid>/status`, MB.
fn proc_status_mb(pid: u32, field: &str) -> f64 {
    crate::bench::proc_status_kb(&pid.to_string(), field).map_or(f64::NAN, |kb| kb as f64 / 1024.0)
}

/// Resident memory of `pid` now, and its peak since the last reset, MB.
fn rss_mb(pid: u32) -> (f64, f64) {
    (proc_status_mb(pid, "VmRSS:"), proc_status_mb(pid, "VmHWM:"))
}

/// Reset the peak-memory mark of `pid` (Linux: writing 5 to clear_refs).
fn reset_peak_rss(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

fn quantile(values: &[i64], q: f64) -> f64 {
    marketlake_schemas::quantile_ms(values, q).unwrap_or(f64::NAN)
}

/// Commits to one L2 table, one batch per commit, with the offsets the sink records.
struct Committer {
    sink: ExactlyOnceSink,
    next: i64,
}

impl Committer {
    async fn open(
        lake: &LakeConfig,
        name: marketlake_schemas::names::TableName,
    ) -> anyhow::Result<Self> {
        let spec = marketlake_enrich::pipeline::l2_specs()
            .into_iter()
            .find(|s| s.name == name)
            .context("an L2 table")?;
        Ok(Committer {
            sink: ExactlyOnceSink::open(lake, spec, "bench-api").await?,
            next: 0,
        })
    }

    async fn commit(&mut self, batch: marketlake_lake::RecordBatch) -> anyhow::Result<()> {
        let to = self.next;
        self.sink
            .commit(
                batch,
                &[OffsetAdvance {
                    topic: "bench".into(),
                    partition: 0,
                    from: (to > 0).then_some(to - 1),
                    to,
                }],
            )
            .await?;
        self.next += 1;
        Ok(())
    }
}

/// `marketlake serve` as a child process on a private lake and catalog; killed on drop.
struct Server {
    child: std::process::Child,
    base: String,
}

impl Server {
    fn start(config: &Config, lake: &LakeConfig, dir: &Path) -> anyhow::Result<Server> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut config = config.clone();
        config.lake = lake.clone();
        config.api.listen = format!("127.0.0.1:{port}");
        config.api.catalog_url = format!("sqlite://{}/catalog.db", dir.display());
        config.api.rate_limit_burst = 1_000_000;
        config.api.rate_limit_per_minute = 1_000_000;
        config.api.stream_timeout_secs = 3_600;
        config.api.search.poll_ms = 100;
        // One grant per dataset to the group `bench`; `account` hashed as for a quant.
        let grants = dir.join("grants.toml");
        std::fs::write(
            &grants,
            "[[grants]]\ndataset = \"l2.trades\"\nprincipal_kind = \"group\"\nprincipal = \"bench\"\ncolumn_masks = { account = \"hash\" }\n\n[[grants]]\ndataset = \"l2.news\"\nprincipal_kind = \"group\"\nprincipal = \"bench\"\n",
        )?;
        config.api.seed_grants_file = Some(grants);
        let file = dir.join("serve.toml");
        std::fs::write(&file, toml::to_string_pretty(&config)?)?;
        let log = std::fs::File::create(dir.join("serve.log"))?;
        let child = std::process::Command::new(std::env::current_exe()?)
            .arg("--config")
            .arg(&file)
            .arg("serve")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting `marketlake serve`")?;
        Ok(Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn wait_ready(&mut self, http: &reqwest::Client) -> anyhow::Result<()> {
        for _ in 0..600 {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("`marketlake serve` exited ({status}); see serve.log");
            }
            if http
                .get(format!("{}/ready", self.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("`marketlake serve` not ready after 30 s")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

/// GET `url` with the token: the status and, for a 200, the JSON body.
async fn get_json(
    http: &reqwest::Client,
    url: &str,
    token: &str,
) -> anyhow::Result<(u16, Option<serde_json::Value>)> {
    let response = http
        .get(url)
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .await?;
    let status = response.status().as_u16();
    if status != 200 {
        return Ok((status, None));
    }
    Ok((
        status,
        Some(serde_json::from_slice(&response.bytes().await?)?),
    ))
}

/// Total hits of a search, when it answered 200.
async fn search_total(
    http: &reqwest::Client,
    base: &str,
    token: &str,
) -> anyhow::Result<Option<u64>> {
    let (_, body) = get_json(http, &format!("{base}/v1/search/news?limit=1"), token).await?;
    Ok(body.and_then(|b| b["total_hits"].as_u64()))
}

/// Wait until the index holds `expected` documents; seconds waited.
async fn wait_searchable(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    expected: u64,
    limit: Duration,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    loop {
        if search_total(http, base, token).await? == Some(expected) {
            return Ok(started.elapsed().as_secs_f64());
        }
        anyhow::ensure!(
            started.elapsed() < limit,
            "the index never reached {expected} documents"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// DuckDB reading `files`, best of three: streamed as Arrow record batches, and (when the
/// result fits in memory) materialized as one Arrow table. Returns (rows, streamed secs,
/// materialized secs) or why it could not run.
fn duckdb_reference(
    files: &[String],
    materialize: bool,
) -> Result<(u64, f64, Option<f64>), String> {
    let script = "import duckdb, sys, time
materialize = sys.argv[1] == '1'
files = sys.argv[2:]
con = duckdb.connect()
con.sql('SET enable_progress_bar = false')
query = f'select * from read_parquet({files})'
def best(run):
    times = []
    for _ in range(3):
        t = time.time()
        n = run()
        times.append(time.time() - t)
    return n, min(times)
def streamed():
    rel = con.sql(query)
    reader = rel.to_arrow_reader(65536) if hasattr(rel, 'to_arrow_reader') else rel.fetch_record_batch(65536)
    return sum(b.num_rows for b in reader)
def whole():
    r = con.sql(query).arrow()
    return r.read_all().num_rows if hasattr(r, 'read_all') else r.num_rows
n, s = best(streamed)
m = best(whole)[1] if materialize else -1
print(n, s, m)
";
    let output = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(if materialize { "1" } else { "0" })
        .args(files)
        .output()
        .map_err(|e| format!("python3 (scripts/ensure-tools --with-test-tools): {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let fields: Vec<&str> = text.split_whitespace().collect();
    let parse = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    match (parse(0), parse(1), parse(2)) {
        (Some(rows), Some(streamed), Some(whole)) => {
            Ok((rows as u64, streamed, (whole >= 0.0).then_some(whole)))
        }
        _ => Err(format!(
            "{} {}",
            text.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        )),
    }
}

pub async fn run(config: Config, args: ApiBenchArgs) -> anyhow::Result<()> {
    let temporary = tempfile::tempdir()?;
    let dir = match &args.lake {
        Some(kept) => {
            std::fs::create_dir_all(kept)?;
            kept.clone()
        }
        None => temporary.path().to_path_buf(),
    };
    let lake = LakeConfig {
        root: dir.join("lake"),
        ..config.lake.clone()
    };
    let reuse = args.lake.is_some() && lake.root.join("l2/trades/_delta_log").exists();
    let corpus = Corpus::load(&args.news_corpus)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);

    let written = Instant::now();
    let files = if reuse { 0 } else { args.files.max(1) };
    if reuse {
        // The news measures start from an empty table and index.
        for stale in ["l2/news", "_index"] {
            let path = lake.root.join(stale);
            if path.exists() {
                std::fs::remove_dir_all(&path)?;
            }
        }
        println!(
            "reusing l2.trades in {} (--rows must match it)",
            lake.root.display()
        );
    } else {
        println!(
            "writing {} rows of l2.trades in {} commits ...",
            args.rows, args.files
        );
    }
    let mut trades = Committer::open(&lake, L2_TRADES).await?;
    let per_file = args.rows.div_ceil(files.max(1));
    let slice = DAY_NS / files.max(1) as i64;
    let mut i = 0u64;
    for file in 0..files {
        let n = per_file.min(args.rows - i);
        if n == 0 {
            break;
        }
        let rows: Vec<TradeRow> = (0..n)
            .map(|k| {
                let t = DAY_START_NS + file as i64 * slice + (k as i64 * slice) / n as i64;
                trade(i + k, args.symbols, &mut rng, t)
            })
            .collect();
        i += n;
        trades.commit(l2::trades_batch(&rows, 0)?).await?;
    }
    drop(trades);
    let write_secs = written.elapsed().as_secs_f64();

    let mut server = Server::start(&config, &lake, &dir)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3_600))
        .build()?;
    server.wait_ready(&http).await?;
    let (base, pid) = (server.base.clone(), server.pid());
    let token = mint(
        &config.api.auth,
        "bench",
        &[],
        &["bench".into()],
        24 * 3_600,
    )?;
    let idle_rss = rss_mb(pid).0;

    // Full extractions, with the serve process's memory.
    let mut extractions = Vec::new();
    for format in args.formats.iter().filter(|f| !f.is_empty()) {
        println!("extracting every row as {format} ...");
        reset_peak_rss(pid);
        let before = rss_mb(pid).0;
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
        extractions.push((format.clone(), secs, bytes, before, rss_mb(pid).1));
    }

    println!("DuckDB reading the same files ...");
    let parquet_files = walk_parquet(&lake.root.join("l2/trades"))?;
    let duck = duckdb_reference(&parquet_files, args.rows <= 10_000_000);

    // One symbol, one hour: as written (files hold every symbol), then after compaction, which
    // clusters rows by symbol and time.
    println!("one-symbol, one-hour queries ...");
    let hour_start = DAY_START_NS + 3 * 3_600 * 1_000_000_000;
    let (narrow, scan_files) = narrow_queries(&http, &base, &token, &args, hour_start).await?;
    let spec = marketlake_enrich::pipeline::l2_specs()
        .into_iter()
        .find(|s| s.name == L2_TRADES)
        .context("l2.trades")?;
    println!("maintain (compaction) ...");
    let compacted = Instant::now();
    let report = marketlake_lake::maintain::maintain_table(&lake, &spec, i64::MAX).await?;
    let compact_secs = compacted.elapsed().as_secs_f64();
    let (narrow_after, scan_after) =
        narrow_queries(&http, &base, &token, &args, hour_start).await?;

    // News: the corpus, indexed by the server as it follows l2.news; then one more commit,
    // timed to searchable; then queries.
    println!("writing {} news items ...", args.news);
    let loaded = Instant::now();
    let mut news_table = Committer::open(&lake, L2_NEWS).await?;
    let mut n = 0u64;
    while n < args.news {
        let k = NEWS_PER_COMMIT.min(args.news - n);
        let rows: Vec<NewsRow> = (n..n + k)
            .map(|i| news(i, args.symbols, &corpus, &mut rng))
            .collect();
        news_table.commit(l2::news_batch(&rows, 0)?).await?;
        n += k;
    }
    wait_searchable(&http, &base, &token, args.news, Duration::from_secs(3_600)).await?;
    let load_secs = loaded.elapsed().as_secs_f64();
    let fresh: Vec<NewsRow> = (args.news..args.news + FRESH_NEWS)
        .map(|i| news(i, args.symbols, &corpus, &mut rng))
        .collect();
    let committed = Instant::now();
    news_table.commit(l2::news_batch(&fresh, 0)?).await?;
    let commit_secs = committed.elapsed().as_secs_f64();
    wait_searchable(
        &http,
        &base,
        &token,
        args.news + FRESH_NEWS,
        Duration::from_secs(120),
    )
    .await?;
    let searchable_after = committed.elapsed().as_secs_f64() - commit_secs;
    let right_after = search_queries(&http, &base, &token, &args, &corpus, &mut rng).await?;
    // The index merges its segments in the background after a large fill; a server in steady
    // state searches the merged index. Measured again once the segment count holds still.
    let (settle_secs, segments) = wait_merges_settled(&http, &base).await?;
    let settled = search_queries(&http, &base, &token, &args, &corpus, &mut rng).await?;
    let (serve_rss, serve_peak) = rss_mb(pid);
    drop(server);

    println!();
    println!(
        "bench api: {} rows of l2.trades in {} files ({} symbols; written in {write_secs:.0} s), {} news items; private lake; `marketlake serve` as its own process on loopback; this machine",
        args.rows, args.files, args.symbols, args.news
    );
    println!("| measure | figure |");
    println!("|---|---|");
    let duck_rate = match &duck {
        Ok((rows, streamed, whole)) => {
            let best = whole.map_or(*streamed, |w| w.min(*streamed));
            println!(
                "| DuckDB reading the same {} Parquet files (reference, best of 3) | streamed as Arrow batches: {:.0} rows/s ({streamed:.2} s){} |",
                parquet_files.len(),
                *rows as f64 / streamed,
                whole.map_or_else(
                    || "; whole-table Arrow not run (result larger than memory allows)".to_string(),
                    |w| format!("; whole table as Arrow: {:.0} rows/s ({w:.2} s)", *rows as f64 / w)
                )
            );
            Some(*rows as f64 / best)
        }
        Err(why) => {
            println!("| DuckDB reference | not measured: {why} |");
            None
        }
    };
    for (format, secs, bytes, before, peak) in &extractions {
        let rate = args.rows as f64 / secs;
        let ratio = duck_rate.map_or_else(String::new, |duck| {
            format!("; {:.0} % of DuckDB's faster rate", 100.0 * rate / duck)
        });
        println!(
            "| full extraction as {format} (account hashed) | {rate:.0} rows/s, {:.1} MB/s ({:.2} GB in {secs:.1} s){ratio}; serve RSS {before:.0} MB before, peak {peak:.0} MB during |",
            *bytes as f64 / 1e6 / secs,
            *bytes as f64 / 1e9,
        );
    }
    println!(
        "| one symbol, one hour ({}, {} rows per symbol-hour on average), files as written | p50 {:.1} ms, p99 {:.1} ms over {} requests; files read/in version {scan_files} |",
        args.narrow_format,
        args.rows / args.symbols.max(1) / 8,
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
        "| news corpus generated, committed and indexed by the server | {} items in {load_secs:.1} s |",
        args.news
    );
    println!(
        "| news commit → searchable ({FRESH_NEWS} items in one commit, over the {} already indexed) | {searchable_after:.2} s (index poll 100 ms) |",
        args.news
    );
    for (when, measured) in [
        (
            "right after the last commit (merges running)".to_string(),
            &right_after,
        ),
        (
            format!("after merges settled ({settle_secs:.0} s later; {segments} segments)"),
            &settled,
        ),
    ] {
        let all = measured.all();
        println!(
            "| news search (words, AND, phrases, fuzzy, word + ticker + time; limit 20), {when} | p50 {:.1} ms, p99 {:.1} ms over {} queries ({:.0} hits on average); p99 by kind: {} |",
            quantile(&all, 0.5),
            quantile(&all, 0.99),
            all.len(),
            measured.hits as f64 / all.len().max(1) as f64,
            measured
                .by_kind
                .iter()
                .map(|(kind, latencies)| format!("{kind} {:.1} ms", quantile(latencies, 0.99)))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!(
        "| serve process memory | {idle_rss:.0} MB idle after start; {serve_rss:.0} MB at the end, peak {serve_peak:.0} MB since the last extraction |"
    );
    Ok(())
}

/// Search latencies (µs) by kind of query, and the hits they found.
struct SearchLatencies {
    by_kind: Vec<(&'static str, Vec<i64>)>,
    hits: u64,
}

impl SearchLatencies {
    /// Every latency, whatever the kind.
    fn all(&self) -> Vec<i64> {
        self.by_kind
            .iter()
            .flat_map(|(_, latencies)| latencies.iter().copied())
            .collect()
    }
}

/// `--queries` searches, the five kinds in turn: a word, two words with AND, a phrase, a
/// fuzzy word, and a word with a ticker and a time range.
async fn search_queries(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    args: &ApiBenchArgs,
    corpus: &Corpus,
    rng: &mut rand::rngs::StdRng,
) -> anyhow::Result<SearchLatencies> {
    let kinds = ["word", "AND", "phrase", "fuzzy", "word+ticker+time"];
    let mut measured = SearchLatencies {
        by_kind: kinds.iter().map(|k| (*k, Vec::new())).collect(),
        hits: 0,
    };
    for q in 0..args.queries {
        let a = corpus.query_word(rng);
        let b = corpus.query_word(rng);
        let kind = q % kinds.len();
        let query = match kind {
            0 => a.to_string(),
            1 => format!("{a}%20AND%20{b}"),
            2 => format!("%22{a}%20{b}%22"),
            3 => format!("{a}&fuzzy=true"),
            _ => {
                let from = DAY_START_NS + rng.gen_range(0..DAY_NS / 2);
                format!(
                    "{a}&symbols=S{:04}&from={from}&to={}",
                    rng.gen_range(0..args.symbols),
                    from + DAY_NS / 4
                )
            }
        };
        let started = Instant::now();
        let (status, body) = get_json(
            http,
            &format!("{base}/v1/search/news?q={query}&limit=20"),
            token,
        )
        .await?;
        let micros = started.elapsed().as_micros() as i64;
        anyhow::ensure!(status == 200, "search {query}: HTTP {status}");
        if let Some((_, latencies)) = measured.by_kind.get_mut(kind) {
            latencies.push(micros);
        }
        measured.hits += body.and_then(|b| b["total_hits"].as_u64()).unwrap_or(0);
    }
    Ok(measured)
}

/// The index's segment count from `/metrics`.
async fn search_segments(http: &reqwest::Client, base: &str) -> anyhow::Result<Option<u64>> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("marketlake_api_search_segments "))
        .and_then(|n| n.trim().parse().ok()))
}

/// Wait until the index's segment count has held still for 5 s (at most 10 minutes): the
/// background merges after a fill are done. Seconds waited and the segments left.
async fn wait_merges_settled(http: &reqwest::Client, base: &str) -> anyhow::Result<(f64, u64)> {
    let started = Instant::now();
    let mut last = search_segments(http, base).await?;
    let mut still_since = Instant::now();
    while still_since.elapsed() < Duration::from_secs(5)
        && started.elapsed() < Duration::from_secs(600)
    {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = search_segments(http, base).await?;
        if now != last {
            last = now;
            still_since = Instant::now();
        }
    }
    Ok((started.elapsed().as_secs_f64(), last.unwrap_or(0)))
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
    let mut total_bytes = 0u64;
    for q in 0..args.queries {
        let symbol = format!("S{:04}", q as u64 % args.symbols);
        let url = format!(
            "{base}/v1/datasets/l2.trades/rows?symbols={symbol}&from={hour_start}&to={}&format={}",
            hour_start + 3_600 * 1_000_000_000,
            args.narrow_format
        );
        let started = Instant::now();
        let (status, bytes, _, headers) = fetch(http, &url, token).await?;
        total_bytes += bytes;
        latencies.push(started.elapsed().as_micros() as i64);
        anyhow::ensure!(status == 200, "narrow query: HTTP {status}");
        scan_files = headers
            .get("x-scan-files")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string();
    }
    let per_query = total_bytes as f64 / 1e6 / args.queries.max(1) as f64;
    Ok((
        latencies,
        format!("{scan_files}; {per_query:.1} MB per answer"),
    ))
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
