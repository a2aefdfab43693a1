//! End to end on the bundled real samples: `marketlake up` replays every sample feed through
//! Kafka into L1; each table holds exactly the framed records of its sources (by unique source
//! position), malformed input sits in the dead letters; Ctrl-C stops cleanly; a second `up`
//! publishes nothing again; delta-rs for Python and DuckDB read the same rows.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use marketlake_schemas::names::{
    TableName, L1_DEAD_LETTERS, L1_NEWS_RAW, L1_TRADES_RAW, L2_NEWS, L2_QUARANTINE, L2_TRADES,
};

use crate::support::{eventually, l1_rows, sigint, wait_output, Lake, LakeOptions, HEAVY};

/// Framed records per source in the bundled files (counts from data/PROVENANCE.md).
const EXPECTED: &[(TableName, &str, usize)] = &[
    (L1_TRADES_RAW, "fix-bad-fills", 5),
    (L1_TRADES_RAW, "fix-sample-sessions", 19),
    (L1_TRADES_RAW, "fix-caret-a", 19),
    (L1_TRADES_RAW, "fix-jse-marketdata", 6_944),
    (L1_TRADES_RAW, "fix-malformed", 4),
    (L1_TRADES_RAW, "ibm-ticks-20131007", 24_293),
    (L1_TRADES_RAW, "aapl-bars-20140605", 686),
    (L1_TRADES_RAW, "iex-tops-20170710", 44_225),
    (L1_NEWS_RAW, "sec-press-releases", 25),
    (L1_NEWS_RAW, "sec-edgar-filings", 5),
    (L1_NEWS_RAW, "stocknet-aapl-tweets", 334),
    (L1_NEWS_RAW, "iex-news-aapl", 10),
    (L1_DEAD_LETTERS, "fix-sample-sessions", 1),
    (L1_DEAD_LETTERS, "fix-caret-a", 1),
    (L1_DEAD_LETTERS, "fix-malformed", 9),
];

fn sources_toml() -> Result<String> {
    // The sources of the embedded defaults (paths relative to the repository root).
    let defaults =
        std::fs::read_to_string(crate::support::repo_root().join("config/default.toml"))?;
    let start = defaults
        .find("[[sources]]")
        .context("default config declares sources")?;
    Ok(defaults[start..].to_string())
}

type Counts = BTreeMap<(String, String), BTreeSet<(String, i64)>>;

async fn counts(lake: &Lake) -> Result<Counts> {
    let mut counts: Counts = BTreeMap::new();
    for table in [L1_TRADES_RAW, L1_NEWS_RAW, L1_DEAD_LETTERS] {
        for (source, position, _, _) in l1_rows(lake, table).await? {
            counts
                .entry((table.to_string(), source.clone()))
                .or_default()
                .insert((source, position));
        }
    }
    Ok(counts)
}

/// Rows in all three L1 tables, duplicates included.
async fn row_count(lake: &Lake) -> Result<usize> {
    let mut rows = 0;
    for table in [L1_TRADES_RAW, L1_NEWS_RAW, L1_DEAD_LETTERS] {
        rows += l1_rows(lake, table).await?.len();
    }
    Ok(rows)
}

fn total_rows(counts: &Counts) -> usize {
    counts.values().map(BTreeSet::len).sum()
}

fn matches_expected(counts: &Counts) -> bool {
    EXPECTED.iter().all(|(table, source, n)| {
        counts
            .get(&(table.to_string(), source.to_string()))
            .map_or(0, BTreeSet::len)
            == *n
    })
}

/// Trades enrichment makes of the samples, per source: every IBM tick; IEX TOPS trade reports
/// (3,089) and trade breaks (2); the FIX fills (ExecType F / 2 with LastQty) of the sessions.
const EXPECTED_TRADES: &[(&str, usize)] = &[
    ("fix-caret-a", 2),
    ("fix-sample-sessions", 2),
    ("ibm-ticks-20131007", 24_293),
    ("iex-tops-20170710", 3_091),
];
/// News items: every RSS item, Atom entry, tweet and IEX news object.
const EXPECTED_NEWS: usize = 25 + 5 + 334 + 10;

/// A feed of four fills, each breaking one rule, and one good fill.
fn bad_fills(dir: &std::path::Path) -> Result<(String, BTreeMap<String, usize>)> {
    use crate::curated::fix_message;
    let fill = |exec: &str, px: &str, qty: &str, time: &str| {
        fix_message(&format!(
            "35=8|49=B|56=D|34=1|52=20240102-15:00:00|37=O{exec}|17={exec}|150=F|39=2|55=ZZBAD|54=1|31={px}|32={qty}|60={time}|"
        ))
    };
    let mut file = Vec::new();
    for message in [
        fill("GOOD1", "100.5", "10", "20240102-15:00:00"),
        fill("ZEROPX", "0", "10", "20240102-15:00:01"),
        fill("NEGQTY", "100.5", "-5", "20240102-15:00:02"),
        fill("FUTURE", "100.5", "10", "20990101-00:00:00"),
        fill("BADPX", "abc", "10", "20240102-15:00:03"),
    ] {
        file.extend_from_slice(&message);
        file.push(b'\n');
    }
    let path = dir.join("bad_fills.fix");
    std::fs::write(&path, file)?;
    let source = format!(
        "[[sources]]\nid = \"fix-bad-fills\"\nkind = \"fix\"\nsettings = {{ file = \"{}\" }}\n\n",
        path.display()
    );
    // A negative LastQty is not a readable fill (parse); a zero one is no fill at all.
    let expected = BTreeMap::from([
        ("price_positive".to_string(), 1),
        ("not_in_future".to_string(), 1),
        ("parse".to_string(), 2),
    ]);
    Ok((source, expected))
}

async fn per_source(lake: &Lake, table: TableName) -> Result<BTreeMap<String, usize>> {
    let mut counts = BTreeMap::new();
    for batch in crate::curated::table_batches(lake, table).await? {
        let sources = crate::support::string_column(&batch, "source_id")?;
        for row in 0..batch.num_rows() {
            *counts.entry(sources.value(row).to_string()).or_default() += 1;
        }
    }
    Ok(counts)
}

async fn l2_complete(lake: &Lake) -> Result<bool> {
    let trades = per_source(lake, L2_TRADES).await?;
    let news: usize = per_source(lake, L2_NEWS).await?.values().sum();
    Ok(EXPECTED_TRADES
        .iter()
        .all(|(source, n)| trades.get(*source).copied().unwrap_or(0) == *n)
        && news == EXPECTED_NEWS)
}

/// The IBM ticks file read directly: `(event time ns, price 1e-8, quantity 1e-4)` in file order.
/// LEAN: milliseconds after midnight New York time (EDT, UTC-4, on 2013-10-07), price x 10,000.
fn ibm_ticks() -> Result<Vec<(i64, i64, i64)>> {
    let text = std::fs::read_to_string(
        crate::support::repo_root().join("data/marketdata/csv/20131007_ibm_Trade_Tick.csv"),
    )?;
    let midnight_utc_ns: i64 = 1_381_104_000_000_000_000 + 4 * 3_600_000_000_000;
    let mut ticks = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split(',').collect();
        let ms: i64 = fields[0].trim().parse()?;
        let price: i64 = fields[1].trim().parse()?;
        let qty: i64 = fields[2].trim().parse()?;
        ticks.push((
            midnight_utc_ns + ms * 1_000_000,
            price * 10_000,
            qty * 10_000,
        ));
    }
    Ok(ticks)
}

/// Bars of the IBM ticks computed by hand: per minute, open/high/low/close/volume/count.
fn ibm_minute_bars() -> Result<BTreeMap<i64, crate::curated::BarValues>> {
    let mut bars: BTreeMap<i64, crate::curated::BarValues> = BTreeMap::new();
    for (t, price, qty) in ibm_ticks()? {
        let start = t.div_euclid(60_000_000_000) * 60_000_000_000;
        let p = Some(i128::from(price));
        let bar = bars.entry(start).or_insert((p, p, p, p, Some(0), 0));
        bar.1 = bar.1.max(p);
        bar.2 = bar.2.min(p);
        bar.3 = p;
        bar.4 = bar.4.map(|v| v + i128::from(qty));
        bar.5 += 1;
    }
    Ok(bars)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundled_samples_land_in_l1_exactly() -> Result<()> {
    let _heavy = HEAVY.lock().await;
    let dir = tempfile::tempdir()?;
    let (bad_source, expected_quarantine) = bad_fills(dir.path())?;
    let lake = Lake::new(LakeOptions {
        sources_toml: format!("{bad_source}{}", sources_toml()?),
        ..LakeOptions::default()
    })?;
    let up = lake.spawn(&["up"], "up-1.log")?;
    let landed = eventually(
        Duration::from_secs(300),
        "sample records in L1 and L2",
        || async { Ok(matches_expected(&counts(&lake).await?) && l2_complete(&lake).await?) },
    )
    .await;
    sigint(&up);
    let exit = wait_output(up, Duration::from_secs(60));
    if let Err(e) = landed {
        bail!(
            "{e}\ncounts: {:#?}\nlog:\n{}",
            counts(&lake).await?,
            lake.log("up-1.log")
        );
    }
    let exit = exit?;
    assert!(
        exit.status.success(),
        "up did not stop cleanly on Ctrl-C: {}\n{}",
        exit.status,
        lake.log("up-1.log")
    );
    let first = counts(&lake).await?;
    // No row beyond the expected ones (nothing doubled: same set size as row count).
    let rows = row_count(&lake).await?;
    assert_eq!(
        rows,
        total_rows(&first),
        "duplicate (source, position) rows"
    );
    let expected_total: usize = EXPECTED.iter().map(|(_, _, n)| n).sum();
    assert_eq!(rows, expected_total);

    // A second `up` resumes every replay at its end: nothing is published twice.
    let again = lake.spawn(&["up"], "up-2.log")?;
    tokio::time::sleep(Duration::from_secs(8)).await;
    sigint(&again);
    let exit = wait_output(again, Duration::from_secs(60))?;
    assert!(exit.status.success(), "{}", lake.log("up-2.log"));
    let after = row_count(&lake).await?;
    assert_eq!(
        after,
        rows,
        "a replay was published twice:\n{}",
        lake.log("up-2.log")
    );
    // `up` reports consumer lag from the tables' exactly-once offsets (for /metrics): L1 has
    // caught up with every raw partition.
    let lag = std::fs::read_to_string(lake.lake_config().root.join("_metrics/lag.prom"))
        .with_context(|| lake.log("up-2.log"))?;
    let l1: Vec<&str> = lag
        .lines()
        .filter(|l| l.starts_with("marketlake_consumer_lag{consumer=\"l1-ingest\""))
        .collect();
    assert!(
        l1.iter().any(|l| l.contains("topic=\"raw.trades\""))
            && l1.iter().any(|l| l.contains("topic=\"raw.news\"")),
        "{lag}"
    );
    assert!(l1.iter().all(|l| l.ends_with(" 0")), "L1 caught up: {lag}");
    assert!(
        lag.contains("consumer=\"l2-enrich\",table=\"l2.trades\""),
        "{lag}"
    );

    // Curation writes its counters and what it holds (for /metrics) when it stops.
    let curate = std::fs::read_to_string(lake.lake_config().root.join("_metrics/curate.prom"))
        .with_context(|| lake.log("up-2.log"))?;
    let value = |series: &str| -> Option<f64> {
        curate
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    };
    assert!(
        value("marketlake_curate_cycle").is_some_and(|c| c > 0.0),
        "the second run resumed the first one's cycles: {curate}"
    );
    for series in [
        "marketlake_curate_held_trades{state=\"bars\"}",
        "marketlake_curate_held_trades{state=\"news_history\"}",
        "marketlake_curate_open_windows{kind=\"bar\"}",
        "marketlake_curate_records_total{kind=\"trade\"}",
    ] {
        assert!(value(series).is_some(), "{series} missing: {curate}");
    }
    assert!(
        value("marketlake_curate_held_trades{state=\"news_history\"}").is_some_and(|n| n > 0.0),
        "the resumed state holds the samples' recent trades: {curate}"
    );

    other_engines_read_the_same_rows(&lake, &first)?;
    enriched_and_curated(&lake, &expected_quarantine).await
}

/// L2 on the samples: trades and news per source, the quarantine holding exactly the fills that
/// break each rule; L3: after a back-fill run fires every window, the IBM 1-minute bars equal
/// bars computed by hand from the CSV file.
async fn enriched_and_curated(
    lake: &Lake,
    expected_quarantine: &BTreeMap<String, usize>,
) -> Result<()> {
    assert!(
        l2_complete(lake).await?,
        "{:?}",
        per_source(lake, L2_TRADES).await?
    );
    let mut rules: BTreeMap<String, usize> = BTreeMap::new();
    for batch in crate::curated::table_batches(lake, L2_QUARANTINE).await? {
        let sources = crate::support::string_column(&batch, "source_id")?;
        let names = crate::support::string_column(&batch, "rule")?;
        for row in 0..batch.num_rows() {
            assert_eq!(
                sources.value(row),
                "fix-bad-fills",
                "only the bad fills are quarantined"
            );
            *rules.entry(names.value(row).to_string()).or_default() += 1;
        }
    }
    assert_eq!(&rules, expected_quarantine, "quarantine by rule");
    assert_eq!(
        per_source(lake, L2_TRADES).await?.get("fix-bad-fills"),
        Some(&1),
        "the good fill of the bad feed is kept"
    );
    lake.run(&["curate", "--until-caught-up"], Duration::from_secs(180))?;
    let bars = crate::curated::latest_bars(lake).await?;
    let expected = ibm_minute_bars()?;
    let ibm: BTreeMap<i64, crate::curated::BarValues> = bars
        .iter()
        .filter(|((symbol, _), _)| symbol == "IBM")
        .map(|((_, start), (_, values))| (*start, *values))
        .collect();
    assert_eq!(
        ibm.len(),
        expected.len(),
        "one IBM bar per minute with ticks"
    );
    for (start, want) in &expected {
        assert_eq!(ibm.get(start), Some(want), "IBM bar at {start}");
    }
    // Spot-check by hand: the first minute with ticks.
    let (first_start, first) = expected.iter().next().context("IBM bars")?;
    eprintln!("first IBM bar {first_start}: {first:?}");
    let trades: i64 = expected.values().map(|b| b.5).sum();
    assert_eq!(trades, 24_293);
    other_engines_read_l2_and_l3(lake).await
}

/// delta-rs for Python and DuckDB (over the snapshot's Parquet files, decimals included) count
/// the same rows and the same sums as marketlake's own reader, for every L2 and L3 table.
async fn other_engines_read_l2_and_l3(lake: &Lake) -> Result<()> {
    let script = r#"
import sys, json, duckdb
from deltalake import DeltaTable
out = {}
for name in sys.argv[2:]:
    table = DeltaTable(sys.argv[1] + "/" + name)
    arrow = table.to_pyarrow_table()
    con = duckdb.connect()
    rows = con.execute("select count(*) from read_parquet(?, hive_partitioning = true)", [table.file_uris()]).fetchone()
    out[name] = {"deltalake_rows": arrow.num_rows, "duckdb_rows": rows[0]}
    if name == "l2/trades":
        volume = con.execute("select sum(quantity)::varchar from read_parquet(?, hive_partitioning = true)", [table.file_uris()]).fetchone()
        out[name]["duckdb_quantity_sum"] = volume[0]
print(json.dumps(out))
"#;
    let tables = [
        (L2_TRADES, "l2/trades"),
        (L2_NEWS, "l2/news"),
        (L2_QUARANTINE, "l2/quarantine"),
        (marketlake_schemas::names::l3_bars(60), "l3/bars_1m"),
        (marketlake_schemas::names::l3_bars(3_600), "l3/bars_1h"),
        (
            marketlake_schemas::names::L3_NEWS_TRADE_WINDOWS,
            "l3/news_trade_windows",
        ),
    ];
    let paths: Vec<&str> = tables.iter().map(|(_, path)| *path).collect();
    let result = python_readers(lake, script, &paths)?;
    for (table, path) in tables {
        let ours: usize = crate::curated::table_batches(lake, table)
            .await?
            .iter()
            .map(|b| b.num_rows())
            .sum();
        let theirs = &result[path];
        assert_eq!(
            theirs["deltalake_rows"].as_u64(),
            Some(ours as u64),
            "{path}: {theirs}"
        );
        assert_eq!(
            theirs["duckdb_rows"].as_u64(),
            Some(ours as u64),
            "{path}: {theirs}"
        );
    }
    // Exact decimals survive the trip: DuckDB's sum of l2.trades.quantity is ours to the digit.
    let mut ours: i128 = 0;
    for batch in crate::curated::table_batches(lake, L2_TRADES).await? {
        let column = batch
            .column_by_name("quantity")
            .and_then(|c| {
                c.as_any()
                    .downcast_ref::<marketlake_lake::read::Decimal128Array>()
            })
            .context("quantity column")?;
        ours += column.iter().flatten().sum::<i128>();
    }
    let theirs = result["l2/trades"]["duckdb_quantity_sum"]
        .as_str()
        .context("duckdb quantity sum")?;
    let ours_text = format!("{}.{:04}", ours / 10_000, ours % 10_000);
    assert_eq!(
        theirs, ours_text,
        "l2.trades quantity sum, DuckDB vs marketlake"
    );
    Ok(())
}

/// delta-rs for Python reads each table; DuckDB reads the Parquet files of the latest snapshot.
fn other_engines_read_the_same_rows(lake: &Lake, counts: &Counts) -> Result<()> {
    let script = r#"
import sys, json, duckdb
from deltalake import DeltaTable
out = {}
for name in sys.argv[2:]:
    table = DeltaTable(sys.argv[1] + "/" + name)
    arrow = table.to_pyarrow_table(columns=["source_id", "source_position"])
    files = table.file_uris()
    con = duckdb.connect()
    rows = con.execute(
        "select count(*), count(distinct (source_id, source_position)), sum(source_position) "
        "from read_parquet(?, hive_partitioning = true)", [files]).fetchone()
    out[name] = {
        "deltalake_rows": arrow.num_rows,
        "deltalake_position_sum": int(sum(arrow.column("source_position").to_pylist())),
        "duckdb_rows": rows[0],
        "duckdb_distinct": rows[1],
        "duckdb_position_sum": int(rows[2] or 0),
    }
print(json.dumps(out))
"#;
    let result = python_readers(
        lake,
        script,
        &["l1/trades_raw", "l1/news_raw", "l1/dead_letters"],
    )?;
    for (table, path) in [
        (L1_TRADES_RAW, "l1/trades_raw"),
        (L1_NEWS_RAW, "l1/news_raw"),
        (L1_DEAD_LETTERS, "l1/dead_letters"),
    ] {
        let ours: Vec<&BTreeSet<(String, i64)>> = counts
            .iter()
            .filter(|((t, _), _)| *t == table.to_string())
            .map(|(_, set)| set)
            .collect();
        let rows: usize = ours.iter().map(|s| s.len()).sum();
        let position_sum: i64 = ours.iter().flat_map(|s| s.iter().map(|(_, p)| *p)).sum();
        let theirs = &result[path];
        assert_eq!(
            theirs["deltalake_rows"].as_u64(),
            Some(rows as u64),
            "{path}: {theirs}"
        );
        assert_eq!(
            theirs["duckdb_rows"].as_u64(),
            Some(rows as u64),
            "{path}: {theirs}"
        );
        assert_eq!(
            theirs["duckdb_distinct"].as_u64(),
            Some(rows as u64),
            "{path}: {theirs}"
        );
        assert_eq!(
            theirs["deltalake_position_sum"].as_i64(),
            Some(position_sum),
            "{path}"
        );
        assert_eq!(
            theirs["duckdb_position_sum"].as_i64(),
            Some(position_sum),
            "{path}"
        );
    }
    Ok(())
}

/// Run a Python reader script over tables of the lake (argv: lake root, then table paths) and
/// parse the JSON it prints.
pub(crate) fn python_readers(
    lake: &Lake,
    script: &str,
    tables: &[&str],
) -> Result<serde_json::Value> {
    let output = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(lake.dir.path().join("lake"))
        .args(tables)
        .output()
        .context("python3 with deltalake and duckdb (scripts/ensure-tools --with-test-tools)")?;
    if !output.status.success() {
        bail!(
            "python readers failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(serde_json::from_slice(&output.stdout)?)
}
