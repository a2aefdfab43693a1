//! Exactly-once into L1: resuming inside a broker record batch, and two ingest processes
//! sharing one consumer group.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use marketlake_connectors::RawSink;
use marketlake_kafka::admin::{ensure_topics, TopicSpec};
use marketlake_kafka::{KafkaConfig, PartitionKey, RawProducer, VerifiedConsumer};
use marketlake_lake::{CommitOutcome, ExactlyOnceSink, OffsetAdvance};
use marketlake_schemas::names::{L1_TRADES_RAW, TOPIC_RAW_NEWS, TOPIC_RAW_TRADES};
use marketlake_schemas::{l1, FeedClass, KafkaPosition, PayloadFormat, RawRecord};

use crate::support::{eventually, l1_rows, sigkill, Lake, LakeOptions};

pub const NUMBERED_SOURCE: &str = "numbered";

pub fn numbered(i: i64) -> RawRecord {
    RawRecord {
        source_id: NUMBERED_SOURCE.into(),
        connector: "test".into(),
        class: FeedClass::Trades,
        format: PayloadFormat::Fix,
        source_uri: "test://numbered".into(),
        source_position: i,
        received_at_ns: marketlake_schemas::now_utc_ns(),
        symbol: Some(format!("SYM{}", i % 7)),
        payload: format!("record {i:08}").into_bytes(),
        attributes: BTreeMap::new(),
    }
}

pub async fn create_topics(kafka: &KafkaConfig) -> Result<()> {
    ensure_topics(
        kafka,
        &[
            TopicSpec {
                name: TOPIC_RAW_TRADES.into(),
                partitions: kafka.partitions,
            },
            TopicSpec {
                name: TOPIC_RAW_NEWS.into(),
                partitions: kafka.partitions,
            },
        ],
    )
    .await?;
    Ok(())
}

pub async fn produce_numbered(producer: &RawProducer, range: std::ops::Range<i64>) -> Result<()> {
    for i in range {
        producer.publish(numbered(i)).await?;
    }
    producer.flush_deliveries().await?;
    Ok(())
}

/// Every number in `0..n` exactly once among the numbered rows.
pub fn assert_exactly_once(rows: &[(String, i64, i32, i64)], n: i64) {
    let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
    for (source, position, _, _) in rows {
        if source == NUMBERED_SOURCE {
            *counts.entry(*position).or_default() += 1;
        }
    }
    let missing: Vec<i64> = (0..n).filter(|i| !counts.contains_key(i)).collect();
    let doubled: Vec<(i64, usize)> = counts
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(i, c)| (*i, *c))
        .collect();
    assert!(
        missing.is_empty() && doubled.is_empty(),
        "{} missing (first {:?}), {} doubled (first {:?}) of {n}",
        missing.len(),
        missing.iter().take(10).collect::<Vec<_>>(),
        doubled.len(),
        doubled.iter().take(10).collect::<Vec<_>>()
    );
    assert_eq!(counts.len() as i64, n);
}

/// The table says offsets up to 550 of partition 0 are written; partition 0 holds 1000 records
/// produced in one burst, so 551 lies inside a record batch. Ingest must deliver 551..999 — the
/// local broker answers a fetch at 551 from the next batch, or with nothing at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_inside_a_record_batch_loses_nothing() -> Result<()> {
    let lake = Lake::new(LakeOptions {
        partitions: 1,
        ..LakeOptions::default()
    })?;
    let kafka = lake.kafka_config(1);
    create_topics(&kafka).await?;
    let producer = RawProducer::new(&kafka)?;
    produce_numbered(&producer, 0..1000).await?;

    // A back-fill waits for others to store up to the end it saw at start: the end proven by
    // reading, whatever high watermark the broker reports (tansu 0.6: the last batch's base + 1).
    let looker = VerifiedConsumer::subscribe(&kafka, "end-looker", &[TOPIC_RAW_TRADES])?;
    let trades_partition = |ends: Vec<(PartitionKey, i64, i64)>| {
        ends.into_iter()
            .find(|(key, _, _)| key.topic == TOPIC_RAW_TRADES)
            .map(|(_, low, end)| (low, end))
    };
    let reported = trades_partition(looker.end_offsets(&[TOPIC_RAW_TRADES]).await?);
    let proven = trades_partition(
        VerifiedConsumer::proven_end_offsets(&kafka, "end-looker", &[TOPIC_RAW_TRADES]).await?,
    );
    assert_eq!(
        proven,
        Some((0, 1000)),
        "reported by the broker: {reported:?}"
    );
    drop(looker);

    // Write offsets 0..=550 as an earlier ingest run would have.
    let spec = marketlake_ingest::l1_specs()
        .into_iter()
        .find(|s| s.name == L1_TRADES_RAW)
        .expect("trades spec");
    let mut sink =
        ExactlyOnceSink::open(&lake.lake_config(), spec, marketlake_ingest::SINK_NAME).await?;
    let rows: Vec<(RawRecord, KafkaPosition)> = (0..=550)
        .map(|i| {
            (
                numbered(i),
                KafkaPosition {
                    topic: TOPIC_RAW_TRADES.into(),
                    partition: 0,
                    offset: i,
                    timestamp_ms: None,
                },
            )
        })
        .collect();
    let outcome = sink
        .commit(
            l1::raw_batch(rows.iter().map(|(r, p)| (r, p)), 0)?,
            &[OffsetAdvance {
                topic: TOPIC_RAW_TRADES.into(),
                partition: 0,
                from: None,
                to: 550,
            }],
        )
        .await?;
    assert!(matches!(outcome, CommitOutcome::Committed { .. }));

    let output = lake.run(&["ingest", "--until-caught-up"], Duration::from_secs(120))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    let rows = l1_rows(&lake, L1_TRADES_RAW).await?;
    if rows.len() != 1000 || std::env::var_os("MARKETLAKE_TEST_VERBOSE").is_some() {
        eprintln!("ingest stderr:\n{stderr}");
    }
    assert_exactly_once(&rows, 1000);
    // The offsets in the table are the Kafka offsets, each once.
    let mut offsets: Vec<i64> = rows.iter().map(|r| r.3).collect();
    offsets.sort_unstable();
    offsets.dedup();
    assert_eq!(offsets.len(), 1000, "{stderr}");
    Ok(())
}

/// A second commit built on offsets another writer already moved is refused, and its files
/// never become part of the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_writer_cannot_commit_offsets_twice() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = marketlake_lake::LakeConfig {
        root: dir.path().to_path_buf(),
        ..Default::default()
    };
    let spec = || {
        marketlake_ingest::l1_specs()
            .into_iter()
            .find(|s| s.name == L1_TRADES_RAW)
            .expect("trades spec")
    };
    let mut first = ExactlyOnceSink::open(&config, spec(), "s").await?;
    let mut second = ExactlyOnceSink::open(&config, spec(), "s").await?;
    let batch = |range: std::ops::Range<i64>| {
        let rows: Vec<(RawRecord, KafkaPosition)> = range
            .map(|i| {
                (
                    numbered(i),
                    KafkaPosition {
                        topic: "t".into(),
                        partition: 0,
                        offset: i,
                        timestamp_ms: None,
                    },
                )
            })
            .collect();
        l1::raw_batch(rows.iter().map(|(r, p)| (r, p)), 0)
    };
    let advance = |to| OffsetAdvance {
        topic: "t".into(),
        partition: 0,
        from: None,
        to,
    };
    let a = first.commit(batch(0..10)?, &[advance(9)]).await?;
    assert!(matches!(a, CommitOutcome::Committed { .. }));
    let b = second.commit(batch(0..5)?, &[advance(4)]).await?;
    assert!(
        matches!(
            b,
            CommitOutcome::Conflict {
                stored: Some(9),
                ..
            }
        ),
        "{b:?}"
    );
    let table = marketlake_lake::read::load_table(&config, L1_TRADES_RAW, None).await?;
    let rows: usize = marketlake_lake::read::read_rows(&table)
        .await?
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(rows, 10);
    // No orphan Parquet file of the refused commit is left beside the table's files.
    let files = marketlake_lake::read::data_files(&table).await?;
    let mut on_disk = 0;
    for entry in walk(&dir.path().join("l1/trades_raw")) {
        if entry.extension().is_some_and(|e| e == "parquet")
            && !entry.to_string_lossy().contains("_delta_log")
        {
            on_disk += 1;
        }
    }
    assert_eq!(on_disk, files.len());
    Ok(())
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// Two ingest processes in one consumer group split the partitions and write each record once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_ingest_processes_share_partitions_and_write_once() -> Result<()> {
    let lake = Lake::new(LakeOptions {
        partitions: 4,
        ..LakeOptions::default()
    })?;
    let kafka = lake.kafka_config(4);
    create_topics(&kafka).await?;
    let mut a = lake.spawn(&["ingest"], "ingest-a.log")?;
    let mut b = lake.spawn(&["ingest"], "ingest-b.log")?;
    let producer = RawProducer::new(&kafka)?;
    const N: i64 = 20_000;
    // A steady stream for ~16 s: long enough for the group to settle with both members.
    for chunk in 0..40 {
        produce_numbered(&producer, chunk * 500..(chunk + 1) * 500).await?;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let waited = eventually(
        Duration::from_secs(120),
        "all records in l1.trades_raw",
        || async { Ok(l1_rows(&lake, L1_TRADES_RAW).await?.len() as i64 >= N) },
    )
    .await;
    // Let any in-flight commit land, then stop both.
    tokio::time::sleep(Duration::from_secs(2)).await;
    sigkill(&mut a);
    sigkill(&mut b);
    let logs = format!(
        "--- a\n{}\n--- b\n{}",
        lake.log("ingest-a.log"),
        lake.log("ingest-b.log")
    );
    waited.map_err(|e| anyhow::anyhow!("{e}\n{logs}"))?;
    let rows = l1_rows(&lake, L1_TRADES_RAW).await?;
    assert_exactly_once(&rows, N);
    assert!(
        lake.log("ingest-a.log").contains("partition started")
            && lake.log("ingest-b.log").contains("partition started"),
        "both processes should own partitions at some point:\n{logs}"
    );
    Ok(())
}

/// A failed delivery fails the flush that waited for it and every later flush of that producer:
/// sources share one producer, which cannot tell whose record failed, so each source stops
/// before advancing its position past a record that may be the lost one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delivery_fails_every_later_flush() -> Result<()> {
    let lake = Lake::new(LakeOptions {
        partitions: 1,
        ..LakeOptions::default()
    })?;
    let mut kafka = lake.kafka_config(1);
    // Fail a record for a topic the broker does not have within seconds, not minutes.
    for (setting, value) in [
        ("topic.metadata.propagation.max.ms", "200"),
        ("message.timeout.ms", "5000"),
    ] {
        kafka.client.insert(setting.into(), value.into());
    }
    create_topics(&kafka).await?;
    let producer = RawProducer::new(&kafka)?;
    produce_numbered(&producer, 0..10).await?;

    producer.send("no.such.topic", "key", b"lost", &[]).await?;
    produce_numbered(&producer, 10..20)
        .await
        .expect_err("the flush after a failed delivery must fail");
    producer.publish(numbered(20)).await?;
    let later = tokio::time::timeout(Duration::from_secs(30), producer.flush()).await?;
    let error = later.expect_err("a later flush must fail too").to_string();
    assert!(error.contains("no.such.topic"), "{error}");
    Ok(())
}
