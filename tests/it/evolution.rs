//! Schema evolution end to end: a JSON news feed gains a field. Unmapped, it keeps flowing (the
//! field is kept in L1's raw bytes); once mapped in `[[enrich.extra_fields]]`, `l2.news` gains a
//! nullable column through a Delta schema change, new rows carry the value, older rows read as
//! null with every reader (ours, the scan the API serves from, delta-rs, DuckDB), a value of
//! another type goes to `l2.quarantine` with rule `field_type`, and a mapping that would change
//! an existing column's type is refused at start-up with a message saying so.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use futures::StreamExt;
use marketlake_connectors::RawSink;
use marketlake_kafka::RawProducer;
use marketlake_lake::read::{evolved_schema, load_table, Array, Float64Array};
use marketlake_lake::scan::{self, ScanRequest};
use marketlake_schemas::names::{L1_NEWS_RAW, L2_NEWS, L2_QUARANTINE};
use marketlake_schemas::{FeedClass, PayloadFormat, RawRecord};

use crate::curated::table_batches;
use crate::exactly_once::create_topics;
use crate::support::{string_column, Lake, LakeOptions};

const MAPPING: &str = "\n[[enrich.extra_fields]]\ntable = \"l2.news\"\ncolumn = \"sentiment\"\nfield = \"sentiment\"\ntype = \"float64\"\n";

fn news_record(i: i64, sentiment: Option<&str>) -> RawRecord {
    let extra = sentiment.map_or(String::new(), |s| format!(",\"sentiment\":{s}"));
    let payload = format!(
        "{{\"id\":\"n{i}\",\"headline\":\"Item {i} about $IBM\",\"published_at\":\"2026-11-23T10:00:{:02}Z\"{extra}}}",
        i % 60
    );
    RawRecord {
        source_id: "wire".into(),
        connector: "news_jsonl".into(),
        class: FeedClass::News,
        format: PayloadFormat::Json,
        source_uri: "test://wire".into(),
        source_position: i,
        received_at_ns: marketlake_schemas::now_utc_ns(),
        symbol: None,
        payload: payload.into_bytes(),
        attributes: BTreeMap::new(),
    }
}

/// `news_key` → `sentiment` (`None`: null) of every `l2.news` row, read with `read_rows`.
async fn sentiments(lake: &Lake) -> Result<BTreeMap<String, Option<f64>>> {
    let mut out = BTreeMap::new();
    for batch in table_batches(lake, L2_NEWS).await? {
        let keys = string_column(&batch, "news_key")?;
        let values = batch
            .column_by_name("sentiment")
            .and_then(|c| c.as_any().downcast_ref::<Float64Array>())
            .context("every batch has the sentiment column")?;
        for row in 0..batch.num_rows() {
            let value = (!values.is_null(row)).then(|| values.value(row));
            out.insert(keys.value(row).to_string(), value);
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_that_gains_a_field_keeps_flowing_and_a_mapped_field_becomes_a_column() -> Result<()>
{
    let lake = Lake::new(LakeOptions {
        partitions: 1,
        extra_toml: "[enrich]\ncommit_interval_ms = 200\nreference_files = []\npublish = false\n"
            .into(),
        ..LakeOptions::default()
    })?;
    let kafka = lake.kafka_config(1);
    create_topics(&kafka).await?;
    let producer = RawProducer::new(&kafka)?;
    let run = |args: &[&str]| lake.run(args, Duration::from_secs(120));

    // 1. The feed as first seen, then with a new field nobody has mapped yet.
    for i in 0..4 {
        producer.publish(news_record(i, None)).await?;
    }
    for i in 4..8 {
        producer.publish(news_record(i, Some("0.5"))).await?;
    }
    producer.flush().await?;
    run(&["enrich", "--until-caught-up"])?;
    run(&["ingest", "--until-caught-up"])?;
    let table = load_table(&lake.lake_config(), L2_NEWS, None).await?;
    let version_before = table.version().context("l2.news written")?;
    ensure!(
        evolved_schema(&table, &marketlake_schemas::l2::news_schema())?
            .field_with_name("sentiment")
            .is_err(),
        "no column before the field is mapped"
    );
    let rows: usize = table_batches(&lake, L2_NEWS)
        .await?
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(rows, 8, "the unmapped field does not stop the feed");
    // L1 keeps the record as received, new field included.
    let mut l1_with_field = 0;
    for batch in table_batches(&lake, L1_NEWS_RAW).await? {
        let payload = batch
            .column_by_name("payload")
            .and_then(|c| {
                c.as_any()
                    .downcast_ref::<marketlake_lake::read::BinaryArray>()
            })
            .context("l1 payload")?;
        l1_with_field += payload
            .iter()
            .flatten()
            .filter(|p| String::from_utf8_lossy(p).contains("\"sentiment\":0.5"))
            .count();
    }
    assert_eq!(l1_with_field, 4, "L1 keeps the new field in the raw bytes");

    // 2. The operator maps the field; the feed goes on, one record with a changed type.
    let mut config = std::fs::read_to_string(&lake.config_path)?;
    config.push_str(MAPPING);
    std::fs::write(&lake.config_path, &config)?;
    producer.publish(news_record(8, Some("0.25"))).await?;
    producer
        .publish(news_record(9, Some("\"very positive\"")))
        .await?;
    producer.publish(news_record(10, None)).await?;
    producer.flush().await?;
    run(&["enrich", "--until-caught-up"])?;

    let table = load_table(&lake.lake_config(), L2_NEWS, None).await?;
    ensure!(
        table.version() > Some(version_before),
        "the schema change is a new version"
    );
    let schema = evolved_schema(&table, &marketlake_schemas::l2::news_schema())?;
    let field = schema.field_with_name("sentiment")?;
    assert!(field.is_nullable());
    let values = sentiments(&lake).await?;
    assert_eq!(values.len(), 10, "{values:?}");
    for i in 0..8 {
        assert_eq!(
            values.get(&format!("wire:n{i}")),
            Some(&None),
            "rows before the mapping read as null"
        );
    }
    assert_eq!(values.get("wire:n8"), Some(&Some(0.25)));
    assert_eq!(values.get("wire:n10"), Some(&None), "absent is null");
    assert!(
        !values.contains_key("wire:n9"),
        "the changed type is not stored"
    );

    // The changed type is in quarantine with the raw bytes and a reason naming it.
    let mut quarantined = Vec::new();
    for batch in table_batches(&lake, L2_QUARANTINE).await? {
        let rules = string_column(&batch, "rule")?;
        let reasons = string_column(&batch, "reason")?;
        for row in 0..batch.num_rows() {
            quarantined.push((rules.value(row).to_string(), reasons.value(row).to_string()));
        }
    }
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    let (rule, reason) = &quarantined[0];
    assert_eq!(rule, "field_type");
    assert!(
        reason.contains("float64") && reason.contains("very positive"),
        "{reason}"
    );

    // The scan the API serves from gives every batch the new column, old files included.
    let plan = scan::plan(&table, &schema, ScanRequest::default()).await?;
    ensure!(plan.files.len() >= 2, "old and new files are both read");
    let mut stream = Box::pin(plan.stream());
    let mut scanned = 0;
    while let Some(batch) = stream.next().await {
        let batch = batch?.batch;
        ensure!(
            batch.column_by_name("sentiment").is_some(),
            "scan batch without the column: {:?}",
            batch.schema()
        );
        scanned += batch.num_rows();
    }
    assert_eq!(scanned, 10);

    // delta-rs and DuckDB read the evolved table (DuckDB by column name across the files).
    let script = r#"
import sys, json, duckdb
from deltalake import DeltaTable
table = DeltaTable(sys.argv[1] + "/" + sys.argv[2])
arrow = table.to_pyarrow_table()
con = duckdb.connect()
row = con.execute("select count(*), count(sentiment), sum(sentiment) from read_parquet(?, union_by_name = true)", [table.file_uris()]).fetchone()
print(json.dumps({"columns": arrow.column_names, "rows": arrow.num_rows, "nulls": arrow.column("sentiment").null_count, "duckdb": list(row)}))
"#;
    let result = crate::samples::python_readers(&lake, script, &["l2/news"])?;
    assert!(
        result["columns"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c == "sentiment")),
        "{result}"
    );
    assert_eq!(result["rows"], 10, "{result}");
    assert_eq!(result["nulls"], 9, "{result}");
    assert_eq!(
        result["duckdb"],
        serde_json::json!([10, 1, 0.25]),
        "{result}"
    );

    // 3. Remapping the column to another type is refused at start-up, naming the column.
    std::fs::write(&lake.config_path, config.replace("float64", "string"))?;
    let refused = lake
        .command(&["enrich", "--until-caught-up"])
        .output()
        .context("enrich with a retyped column")?;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "a retyped column must not start");
    assert!(
        stderr.contains("sentiment") && stderr.contains("cannot change type"),
        "{stderr}"
    );
    Ok(())
}
