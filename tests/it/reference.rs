//! The instrument master as a versioned dataset: enrichment loads the reference file into
//! `ref.instruments` (version 1), enriches with it and records the version on every row; when
//! the file changes while enrichment runs, a new version is appended and used for the rows
//! that follow, while earlier rows keep version 1 and its snapshot stays readable. A restart on
//! unchanged content appends nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use marketlake_connectors::RawSink;
use marketlake_kafka::RawProducer;
use marketlake_schemas::names::{L2_TRADES, REF_INSTRUMENTS};
use marketlake_schemas::RawRecord;

use crate::curated::{fix_message, fix_record, table_batches};
use crate::exactly_once::create_topics;
use crate::support::{
    eventually, i64_column, sigint, string_column, wait_output, Lake, LakeOptions,
};

const ISIN_V1: &str = "US4592001014";
const ISIN_V2: &str = "US4592009999";

fn listings(ibm_isin: &str) -> String {
    format!("ticker,exchange,isin\nIBM,NYSE,{ibm_isin}\nMSFT,NASDAQ,US5949181045\n")
}

fn ibm_fill(i: i64) -> RawRecord {
    let body = format!(
        "35=8|49=BROKER|56=DESK|34={seq}|52=20261123-10:00:0{i}.000|37=ORD{i}|17=EXEC{i}|150=F|39=2|55=IBM|54=1|31=250.5|32=100|14=100|6=250.5|60=20261123-10:00:0{i}.000|",
        seq = i + 1
    );
    fix_record(i, "IBM", fix_message(&body))
}

/// `trade_key` → (`reference_version`, `isin`) of every `l2.trades` row.
async fn trades(lake: &Lake) -> Result<BTreeMap<String, (Option<i64>, Option<String>)>> {
    let mut out = BTreeMap::new();
    for batch in table_batches(lake, L2_TRADES).await? {
        let keys = string_column(&batch, "trade_key")?;
        let versions = i64_column(&batch, "reference_version")?;
        let isins = string_column(&batch, "isin")?;
        for row in 0..batch.num_rows() {
            use marketlake_lake::read::Array;
            out.insert(
                keys.value(row).to_string(),
                (
                    (!versions.is_null(row)).then(|| versions.value(row)),
                    (!isins.is_null(row)).then(|| isins.value(row).to_string()),
                ),
            );
        }
    }
    Ok(out)
}

/// (`reference_version`, `symbol`) → `isin` of every `ref.instruments` row.
async fn snapshots(lake: &Lake) -> Result<BTreeMap<(i64, String), String>> {
    let mut out = BTreeMap::new();
    for batch in table_batches(lake, REF_INSTRUMENTS).await? {
        let versions = i64_column(&batch, "reference_version")?;
        let symbols = string_column(&batch, "symbol")?;
        let isins = string_column(&batch, "isin")?;
        for row in 0..batch.num_rows() {
            out.insert(
                (versions.value(row), symbols.value(row).to_string()),
                isins.value(row).to_string(),
            );
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_instrument_master_becomes_a_new_version_without_a_restart() -> Result<()> {
    let refdir = tempfile::tempdir()?;
    let file = refdir.path().join("listings.csv");
    std::fs::write(&file, listings(ISIN_V1))?;
    let lake = Lake::new(LakeOptions {
        partitions: 1,
        extra_toml: format!(
            "[enrich]\ncommit_interval_ms = 200\npublish = false\nreference_check_secs = 1\nreference_files = [\"{}\"]\n",
            file.display()
        ),
        ..LakeOptions::default()
    })?;
    let kafka = lake.kafka_config(1);
    create_topics(&kafka).await?;
    let producer = RawProducer::new(&kafka)?;
    let deadline = Duration::from_secs(60);

    let enrich = lake.spawn(&["enrich"], "enrich.log")?;
    producer.publish(ibm_fill(1)).await?;
    producer.flush().await?;
    eventually(deadline, "the first fill in l2.trades", || async {
        Ok(trades(&lake).await?.len() == 1)
    })
    .await
    .with_context(|| lake.log("enrich.log"))?;
    assert_eq!(
        trades(&lake).await?.get("fills:EXEC1"),
        Some(&(Some(1), Some(ISIN_V1.to_string()))),
        "enriched with version 1"
    );

    // The master changes while enrichment runs.
    std::fs::write(&file, listings(ISIN_V2))?;
    eventually(deadline, "version 2 in ref.instruments", || async {
        Ok(snapshots(&lake).await?.keys().any(|(v, _)| *v == 2))
    })
    .await
    .with_context(|| lake.log("enrich.log"))?;
    producer.publish(ibm_fill(2)).await?;
    producer.flush().await?;
    eventually(deadline, "the second fill in l2.trades", || async {
        Ok(trades(&lake).await?.len() == 2)
    })
    .await
    .with_context(|| lake.log("enrich.log"))?;
    let rows = trades(&lake).await?;
    assert_eq!(
        rows.get("fills:EXEC1"),
        Some(&(Some(1), Some(ISIN_V1.to_string()))),
        "earlier rows keep their version"
    );
    assert_eq!(
        rows.get("fills:EXEC2"),
        Some(&(Some(2), Some(ISIN_V2.to_string()))),
        "later rows use the new version, without a restart"
    );
    sigint(&enrich);
    wait_output(enrich, Duration::from_secs(30))?;

    // Each version's snapshot stays readable; a restart on the same content appends nothing.
    lake.run(&["enrich", "--until-caught-up"], Duration::from_secs(120))?;
    let versions = snapshots(&lake).await?;
    assert_eq!(
        versions.len(),
        4,
        "two versions of two instruments: {versions:?}"
    );
    assert_eq!(
        versions.get(&(1, "IBM".to_string())).map(String::as_str),
        Some(ISIN_V1)
    );
    assert_eq!(
        versions.get(&(2, "IBM".to_string())).map(String::as_str),
        Some(ISIN_V2)
    );
    Ok(())
}
