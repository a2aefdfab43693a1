//! Reference measurements of the broker itself, for benchmarks: how fast a plain consumer reads
//! a topic with no processing at all, fetching as the sinks do. Ingest throughput is reported as
//! a ratio to this.

use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::{KafkaConfig, KafkaError, Result};

/// Read `expected` records from every partition of `topic` from the beginning; returns
/// `(records, payload bytes, elapsed)`.
pub async fn consume_all(
    config: &KafkaConfig,
    topic: &str,
    partitions: i32,
    expected: u64,
    timeout: Duration,
) -> Result<(u64, u64, Duration)> {
    let mut client = config.client_config();
    client
        .set(
            "group.id",
            format!("marketlake-reference-{}", std::process::id()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    crate::consumer::fetch_settings(&mut client);
    let consumer: StreamConsumer = client.create()?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let started = Instant::now();
    let (mut records, mut bytes) = (0u64, 0u64);
    while records < expected {
        if started.elapsed() > timeout {
            return Err(KafkaError::Delivery {
                topic: topic.to_string(),
                message: format!(
                    "reference consumer read {records} of {expected} records within {timeout:?}"
                ),
            });
        }
        let message = tokio::select! {
            m = consumer.recv() => m?,
            _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
        };
        records += 1;
        bytes += message.payload().map_or(0, |p| p.len() as u64);
    }
    Ok((records, bytes, started.elapsed()))
}
