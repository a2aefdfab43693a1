//! The raw publisher: an idempotent producer (`enable.idempotence`, `acks=all`) that keeps the
//! delivery receipt of every record it queued until [`RawProducer::flush_deliveries`] has seen it
//! acknowledged. Connectors only advance their resume position after that, so no record a source
//! considers published can be missing from the topic.

use std::sync::Mutex;
use std::time::Duration;

use futures::future::join_all;
use marketlake_connectors::{ConnectorError, RawSink};
use marketlake_schemas::names::dead_letter_topic;
use marketlake_schemas::{DeadLetter, RawRecord};
use rdkafka::error::{KafkaError as RdError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use crate::{KafkaConfig, KafkaError, Result};

pub struct RawProducer {
    producer: FutureProducer,
    pending: Mutex<Vec<(String, DeliveryFuture)>>,
}

fn owned_headers(headers: &[(String, Vec<u8>)]) -> OwnedHeaders {
    headers.iter().fold(
        OwnedHeaders::new_with_capacity(headers.len()),
        |acc, (key, value)| {
            acc.insert(Header {
                key,
                value: Some(value),
            })
        },
    )
}

impl RawProducer {
    pub fn new(config: &KafkaConfig) -> Result<Self> {
        let mut client = config.client_config();
        client
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "500000")
            .set("queue.buffering.max.kbytes", "1048576")
            .set("message.timeout.ms", "120000");
        for (key, value) in &config.client {
            client.set(key, value);
        }
        Ok(RawProducer {
            producer: client.create()?,
            pending: Mutex::new(Vec::new()),
        })
    }

    /// Queue one message, waiting while the local queue is full.
    pub async fn send(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
        headers: &[(String, Vec<u8>)],
    ) -> Result<()> {
        self.send_to(topic, None, key, payload, headers).await
    }

    /// [`RawProducer::send`] to a chosen partition (`None`: by key).
    pub async fn send_to(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: &str,
        payload: &[u8],
        headers: &[(String, Vec<u8>)],
    ) -> Result<()> {
        let mut record = FutureRecord::to(topic)
            .key(key)
            .payload(payload)
            .headers(owned_headers(headers));
        if let Some(partition) = partition {
            record = record.partition(partition);
        }
        loop {
            match self.producer.send_result(record) {
                Ok(delivery) => {
                    if let Ok(mut pending) = self.pending.lock() {
                        pending.push((topic.to_string(), delivery));
                    }
                    return Ok(());
                }
                Err((RdError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }

    /// Wait for every queued message to be acknowledged; the first failure is returned.
    pub async fn flush_deliveries(&self) -> Result<()> {
        let pending = match self.pending.lock() {
            Ok(mut pending) => std::mem::take(&mut *pending),
            Err(_) => Vec::new(),
        };
        let (topics, futures): (Vec<String>, Vec<DeliveryFuture>) = pending.into_iter().unzip();
        let results = join_all(futures).await;
        for (topic, result) in topics.into_iter().zip(results) {
            match result {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => {
                    return Err(KafkaError::Delivery {
                        topic,
                        message: e.to_string(),
                    })
                }
                Err(_) => {
                    return Err(KafkaError::Delivery {
                        topic,
                        message: "producer dropped before delivery was confirmed".into(),
                    })
                }
            }
        }
        Ok(())
    }

    /// Flush librdkafka's own queue (on shutdown).
    pub fn close(&self, timeout: Duration) -> Result<()> {
        self.producer.flush(timeout).map_err(KafkaError::from)
    }
}

fn sink_error(e: KafkaError) -> ConnectorError {
    ConnectorError::Sink(e.to_string())
}

impl RawSink for RawProducer {
    async fn publish(&self, record: RawRecord) -> marketlake_connectors::Result<()> {
        self.send(
            record.class.raw_topic(),
            record.kafka_key(),
            &record.payload,
            &record.headers(),
        )
        .await
        .map_err(sink_error)
    }

    async fn dead_letter(&self, letter: DeadLetter) -> marketlake_connectors::Result<()> {
        self.send(
            &dead_letter_topic(&letter.source_id),
            &letter.source_id,
            &letter.payload,
            &letter.headers(),
        )
        .await
        .map_err(sink_error)
    }

    async fn flush(&self) -> marketlake_connectors::Result<()> {
        self.flush_deliveries().await.map_err(sink_error)
    }
}
