//! The raw publisher: an idempotent producer (`enable.idempotence`, `acks=all`) that counts
//! every record it queued until [`RawProducer::flush_deliveries`] has seen it acknowledged.
//! Connectors only advance their resume position after that, so no record a source considers
//! published can be missing from the topic.
//!
//! Deliveries are counted, not awaited one by one: each queued record joins the current
//! *generation* (an atomic count, handed to librdkafka as the delivery opaque), and a flush seals
//! it and waits for every sealed generation to reach zero. Per record that is one reference-count
//! increment instead of a future, a channel and a topic copy (those were a tenth of enrichment's
//! CPU). Several sources share one producer: a flush waits for everything queued before it by
//! anyone, and a failed delivery fails every later flush of this producer (sticky), because it
//! cannot tell whose record it was; the sources then stop, and restart from their last
//! confirmed positions.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use marketlake_connectors::{ConnectorError, RawSink};
use marketlake_schemas::names::dead_letter_topic;
use marketlake_schemas::{DeadLetter, RawRecord};
use rdkafka::error::{KafkaError as RdError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use crate::{KafkaConfig, KafkaError, Result};

/// Records queued between two flushes, counted down as librdkafka reports them.
#[derive(Debug, Default)]
struct Generation {
    outstanding: AtomicUsize,
}

/// Delivery bookkeeping, shared with librdkafka's polling thread.
#[derive(Default)]
struct Deliveries {
    /// The generation new records join.
    current: Mutex<Arc<Generation>>,
    /// Sealed generations that may still have records outstanding.
    sealed: Mutex<Vec<Arc<Generation>>>,
    /// The first failed delivery (topic, reason): every later flush reports it.
    failed: Mutex<Option<(String, String)>>,
    /// Woken when a generation reaches zero.
    settled: tokio::sync::Notify,
}

impl Deliveries {
    /// One record of `generation` is settled (reported, or never queued).
    fn count_down(&self, generation: &Generation) {
        if generation.outstanding.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.settled.notify_waiters();
        }
    }
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Arc<Generation>;

    fn delivery(&self, result: &DeliveryResult<'_>, generation: Arc<Generation>) {
        if let Err((e, message)) = result {
            if let Ok(mut failed) = self.failed.lock() {
                failed.get_or_insert_with(|| (message.topic().to_string(), e.to_string()));
            }
        }
        self.count_down(&generation);
    }
}

/// Counts a record down unless librdkafka took it (then its delivery report does).
struct NotQueued<'a> {
    deliveries: &'a Deliveries,
    generation: Option<Arc<Generation>>,
}

impl Drop for NotQueued<'_> {
    fn drop(&mut self) {
        if let Some(generation) = self.generation.take() {
            self.deliveries.count_down(&generation);
        }
    }
}

pub struct RawProducer {
    producer: ThreadedProducer<Deliveries>,
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
            // A failed batch must stop the producer rather than let later records through: a
            // reader that drops repeats by offset (curation, by raw offset) would otherwise
            // drop the failed record when it is published again.
            .set("enable.gapless.guarantee", "true")
            .set("acks", "all")
            // tansu 0.6's CPU follows the number of produce requests more than the records in
            // them: at 40,000 records/s it spent 0.39 cores with 5 ms and 0.23-0.26 with 25 ms,
            // and L2 p99 fell with it (`bench enrich`, README). 25 ms is added to a record's
            // path at most once per producing hop.
            .set("linger.ms", "25")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "500000")
            .set("queue.buffering.max.kbytes", "1048576")
            .set("message.timeout.ms", "120000");
        for (key, value) in &config.client {
            client.set(key, value);
        }
        Ok(RawProducer {
            producer: client.create_with_context(Deliveries::default())?,
        })
    }

    fn deliveries(&self) -> &Deliveries {
        self.producer.context()
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
        let deliveries = self.deliveries();
        // Counted under the lock that sealing takes, so a flush never misses a record queued
        // before it.
        let generation = match deliveries.current.lock() {
            Ok(current) => {
                current.outstanding.fetch_add(1, Ordering::AcqRel);
                Arc::clone(&current)
            }
            Err(_) => return Err(poisoned(topic)),
        };
        // Until librdkafka takes the record, no delivery report will count it down: an error,
        // or this future dropped while it waits for room, must (else every flush would hang).
        let mut not_queued = NotQueued {
            deliveries,
            generation: Some(Arc::clone(&generation)),
        };
        let mut record = BaseRecord::with_opaque_to(topic, generation)
            .key(key)
            .payload(payload);
        if !headers.is_empty() {
            record = record.headers(owned_headers(headers));
        }
        if let Some(partition) = partition {
            record = record.partition(partition);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => {
                    not_queued.generation = None;
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

    /// Wait until every record queued before this call (by any user of this producer) is
    /// acknowledged. Fails if any delivery of this producer ever failed.
    pub async fn flush_deliveries(&self) -> Result<()> {
        let deliveries = self.deliveries();
        let waiting: Vec<Arc<Generation>> = {
            let (Ok(mut current), Ok(mut sealed)) =
                (deliveries.current.lock(), deliveries.sealed.lock())
            else {
                return Err(poisoned("(any)"));
            };
            let done = std::mem::take(&mut *current);
            sealed.push(done);
            sealed.retain(|generation| generation.outstanding.load(Ordering::Acquire) > 0);
            sealed.clone()
        };
        loop {
            let settled = deliveries.settled.notified();
            tokio::pin!(settled);
            // Registered before the check, so a generation reaching zero in between still wakes it.
            settled.as_mut().enable();
            if waiting
                .iter()
                .all(|generation| generation.outstanding.load(Ordering::Acquire) == 0)
            {
                break;
            }
            settled.await;
        }
        match deliveries.failed.lock() {
            Ok(failed) => match failed.as_ref() {
                Some((topic, message)) => Err(KafkaError::Delivery {
                    topic: topic.clone(),
                    message: message.clone(),
                }),
                None => Ok(()),
            },
            Err(_) => Err(poisoned("(any)")),
        }
    }

    /// Flush librdkafka's own queue (on shutdown).
    pub fn close(&self, timeout: Duration) -> Result<()> {
        self.producer.flush(timeout).map_err(KafkaError::from)
    }
}

fn poisoned(topic: &str) -> KafkaError {
    KafkaError::Delivery {
        topic: topic.to_string(),
        message: "delivery bookkeeping lost after a panic; restart the process".into(),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A producer whose broker never answers, with room for one queued record, whose records
    /// fail after a second.
    fn unreachable_producer() -> RawProducer {
        let mut config = KafkaConfig {
            brokers: "127.0.0.1:1".into(),
            ..KafkaConfig::default()
        };
        for (setting, value) in [
            ("queue.buffering.max.messages", "1"),
            ("message.timeout.ms", "1000"),
        ] {
            config.client.insert(setting.into(), value.into());
        }
        RawProducer::new(&config).expect("a producer")
    }

    #[tokio::test]
    async fn a_send_given_up_while_waiting_for_room_does_not_hang_the_flush() {
        let producer = unreachable_producer();
        producer
            .send_to("t", Some(0), "k", b"queued", &[])
            .await
            .expect("room for one");
        let waiting = tokio::time::timeout(
            Duration::from_millis(200),
            producer.send_to("t", Some(0), "k", b"no room", &[]),
        )
        .await;
        assert!(
            waiting.is_err(),
            "the queue holds one record: the send waits"
        );
        let flushed = tokio::time::timeout(Duration::from_secs(20), producer.flush_deliveries())
            .await
            .expect("the flush must end once the queued record fails");
        assert!(flushed.is_err(), "the queued record was never delivered");
    }
}
