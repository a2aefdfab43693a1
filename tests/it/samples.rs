//! End to end on the bundled real samples: `marketlake up` replays every sample feed through
//! Kafka into L1; each table holds exactly the framed records of its sources (by unique source
//! position), malformed input sits in the dead letters; Ctrl-C stops cleanly; a second `up`
//! publishes nothing again; delta-rs for Python and DuckDB read the same rows.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use marketlake_schemas::names::{TableName, L1_DEAD_LETTERS, L1_NEWS_RAW, L1_TRADES_RAW};

use crate::support::{eventually, l1_rows, sigint, wait_output, Lake, LakeOptions, HEAVY};

/// Framed records per source in the bundled files (counts from data/PROVENANCE.md).
const EXPECTED: &[(TableName, &str, usize)] = &[
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundled_samples_land_in_l1_exactly() -> Result<()> {
    let _heavy = HEAVY.lock().await;
    let lake = Lake::new(LakeOptions {
        sources_toml: sources_toml()?,
        ..LakeOptions::default()
    })?;
    let up = lake.spawn(&["up"], "up-1.log")?;
    let landed = eventually(Duration::from_secs(240), "sample records in L1", || async {
        Ok(matches_expected(&counts(&lake).await?))
    })
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

    other_engines_read_the_same_rows(&lake, &first)?;
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
    let root = lake.dir.path().join("lake");
    let output = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&root)
        .args(["l1/trades_raw", "l1/news_raw", "l1/dead_letters"])
        .output()
        .context("python3 with deltalake and duckdb (scripts/ensure-tools --with-test-tools)")?;
    if !output.status.success() {
        bail!(
            "python readers failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let result: serde_json::Value = serde_json::from_slice(&output.stdout)?;
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
