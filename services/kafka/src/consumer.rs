//! A group consumer that trusts no fetch position it did not verify.
//!
//! Each owned partition has an *expected* next offset (set by the sink from its Delta `txn`
//! offsets). Every record is checked against it:
//! - below: already written, skipped;
//! - equal: delivered, and the expectation moves on;
//! - above: a gap. Some brokers (tansu 0.6) answer a fetch at an offset inside a record batch
//!   with the *next* batch, silently skipping the rest of the batch. So a gap is never taken at
//!   face value: the consumer seeks further back (1, 4, 16, ... offsets before the expectation,
//!   never below offset 0) until a record at or below the expectation arrives — then skips up
//!   to it — or a seek to 0 (which the client turns into the earliest retained offset) still
//!   yields a later record, which proves the gap real (deleted or compacted offsets). Only then does it move past.
//!
//! A partition that stays silent is probed the same way, because a fetch inside the *last* batch
//! returns nothing at all on that broker, and its high watermark cannot be trusted either (tansu
//! 0.6 reports the last batch's base offset + 1, e.g. 1001 for records 0..=1009). When a probe
//! brings back records just below the expectation and then silence, the partition is *confirmed
//! caught up*: that, not the watermark, is what `--until-caught-up` relies on. Idle partitions are
//! re-probed with exponential backoff (1.5 s doubling to 48 s) so the cost stays small.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{BorrowedHeaders, Headers, Message};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::{KafkaConfig, KafkaError, Result};

/// How long a probe seek may stay unanswered before the next, further-back step.
const PROBE_STEP_WAIT: Duration = Duration::from_millis(300);
/// Silent waits at the start of the log (300 ms doubling: about 9 s in all) before giving up.
const MAX_PROBE_REPEATS: u32 = 5;
/// Each probe step seeks this many times further back than the last.
const PROBE_GROWTH: i64 = 4;

/// Records a consuming loop takes per poll: its own checks (due commits, drains, group
/// health) then run once per batch rather than once per record.
pub const POLL_BATCH: usize = 1_024;
/// How long [`VerifiedConsumer::proven_end_offsets`] reads before trusting high watermarks.
const PROVE_ENDS_WITHIN: Duration = Duration::from_secs(30);

/// A partition of a topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionKey {
    pub topic: String,
    pub partition: i32,
}

impl std::fmt::Display for PartitionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}[{}]", self.topic, self.partition)
    }
}

/// One record, copied out of the client's buffers.
#[derive(Debug, Clone, Default)]
pub struct ConsumedRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: RecordHeaders,
}

/// A record's headers in one buffer (two allocations per record instead of two per header:
/// raw records carry a dozen headers, and copying them was a fifth of ingest's time).
#[derive(Debug, Clone, Default)]
pub struct RecordHeaders {
    bytes: Vec<u8>,
    /// Per header: end of its key and end of its value in `bytes`.
    ends: Vec<(u32, u32)>,
}

impl RecordHeaders {
    pub fn push(&mut self, key: &str, value: &[u8]) {
        self.bytes.extend_from_slice(key.as_bytes());
        let key_end = u32::try_from(self.bytes.len()).unwrap_or(u32::MAX);
        self.bytes.extend_from_slice(value);
        let value_end = u32::try_from(self.bytes.len()).unwrap_or(u32::MAX);
        self.ends.push((key_end, value_end));
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// `(key, value)` pairs in the order they were received.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> + Clone + '_ {
        let mut start = 0usize;
        self.ends.iter().map(move |&(key_end, value_end)| {
            let (key_end, value_end) = (key_end as usize, value_end as usize);
            let key = self
                .bytes
                .get(start..key_end)
                .and_then(|k| std::str::from_utf8(k).ok())
                .unwrap_or("");
            let value = self.bytes.get(key_end..value_end).unwrap_or(&[]);
            start = value_end;
            (key, value)
        })
    }
}

impl<'a> FromIterator<(&'a str, &'a [u8])> for RecordHeaders {
    fn from_iter<T: IntoIterator<Item = (&'a str, &'a [u8])>>(iter: T) -> Self {
        let mut headers = RecordHeaders::default();
        for (key, value) in iter {
            headers.push(key, value);
        }
        headers
    }
}

/// One verified record as the client holds it, borrowed for the duration of a callback: a sink
/// appends it to its columns without copying it into an owned record first.
pub struct RecordRef<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
    pub key: Option<&'a [u8]>,
    pub payload: &'a [u8],
    headers: Option<&'a BorrowedHeaders>,
}

impl<'a> RecordRef<'a> {
    /// `(name, value)` header pairs in the order received (a header without a value reads as empty).
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        self.headers.into_iter().flat_map(|headers| {
            headers
                .iter()
                .map(|header| (header.key, header.value.unwrap_or_default()))
        })
    }

    /// Copy the record out of the client's buffers.
    pub fn to_owned(&self) -> ConsumedRecord {
        ConsumedRecord {
            topic: self.topic.to_string(),
            partition: self.partition,
            offset: self.offset,
            timestamp_ms: self.timestamp_ms,
            key: self.key.map(<[u8]>::to_vec),
            payload: self.payload.to_vec(),
            headers: self.headers().collect(),
        }
    }
}

/// What one poll produced. [`VerifiedConsumer::poll_each`] reports `Record(count)`.
#[derive(Debug)]
pub enum Polled<R = ConsumedRecord> {
    Record(R),
    /// These partitions are now ours: the caller must call [`VerifiedConsumer::start_partition`]
    /// for each before their records are delivered.
    Assigned(Vec<PartitionKey>),
    /// These partitions are no longer ours: drop anything buffered for them.
    Revoked(Vec<PartitionKey>),
    /// Nothing arrived within the poll timeout.
    Idle,
}

impl<R> Polled<R> {
    /// The same outcome carrying `records` if it is `Record`.
    fn with_records<T>(self, records: T) -> Polled<T> {
        match self {
            Polled::Record(_) => Polled::Record(records),
            Polled::Assigned(keys) => Polled::Assigned(keys),
            Polled::Revoked(keys) => Polled::Revoked(keys),
            Polled::Idle => Polled::Idle,
        }
    }
}

#[derive(Debug)]
enum RebalanceEvent {
    Assigned(Vec<PartitionKey>),
    Revoked(Vec<PartitionKey>),
}

/// Records rebalances so the consuming loop handles them in order with the records.
#[derive(Default)]
pub struct RebalanceRecorder {
    events: Mutex<VecDeque<RebalanceEvent>>,
}

fn keys(tpl: &TopicPartitionList) -> Vec<PartitionKey> {
    tpl.elements()
        .iter()
        .map(|e| PartitionKey {
            topic: e.topic().to_string(),
            partition: e.partition(),
        })
        .collect()
}

impl ClientContext for RebalanceRecorder {}

impl ConsumerContext for RebalanceRecorder {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            if let Ok(mut events) = self.events.lock() {
                events.push_back(RebalanceEvent::Revoked(keys(tpl)));
            }
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                if let Ok(mut events) = self.events.lock() {
                    events.push_back(RebalanceEvent::Assigned(keys(tpl)));
                }
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "consumer group rebalance error"),
            Rebalance::Revoke(_) => {}
        }
    }
}

/// A gap investigation in progress.
#[derive(Debug, Clone, Copy)]
struct Probe {
    /// How far before the expectation the last seek went.
    distance: i64,
    /// The offset of the last seek.
    target: i64,
    low_watermark: i64,
    /// A record below the expectation arrived since the last seek: the seek took effect.
    reached_below: bool,
    /// Silent waits at the start of the log without a new seek (backoff for slow brokers).
    repeats: u32,
}

#[derive(Debug)]
struct Track {
    expected: i64,
    probe: Option<Probe>,
    last_progress: Instant,
    /// Proven to hold nothing at or after `expected` (as of the last probe).
    caught_up: bool,
    /// Consecutive idle probes, for backoff.
    idle_probes: u32,
}

/// Counters a sink can expose as metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerStats {
    /// Records below the expectation that were skipped (already written).
    pub skipped: u64,
    /// Seeks made to investigate a gap.
    pub probe_seeks: u64,
    /// Gaps that turned out to be broker skips and were filled by seeking back.
    pub gaps_filled: u64,
    /// Offsets proven not to exist (after seeking back to the start of the log).
    pub offsets_proven_missing: u64,
}

pub struct VerifiedConsumer {
    consumer: Arc<StreamConsumer<RebalanceRecorder>>,
    /// Watermark and metadata lookups go through their own connection: on a broker that serves
    /// one request per connection at a time, they would otherwise queue behind long fetches.
    lookups: Arc<BaseConsumer>,
    tracks: HashMap<PartitionKey, Track>,
    stall_after: Duration,
    last_stall_check: Instant,
    stats: ConsumerStats,
}

/// How sinks fetch, shared with the reference consumer of the benchmarks (so a sink's rate is
/// compared with a plain client fetching the same way). Large fetches and a deep local queue: a
/// sink consumes in bursts (it pauses while it builds a batch), and small fetches left it waiting
/// on round trips — measured on tansu 0.6: 1 MB partition fetches held ingest to ~80k records/s,
/// 16 MB ~115k. Round trips are slow there because tansu 0.6.0 holds every fetch for the rest
/// of `fetch.wait.max.ms` after each pass, one that found records too: the wait is a floor on
/// each hop's latency (and a shorter one costs the broker more idle fetches), the fetch size a
/// ceiling on its rate.
pub(crate) fn fetch_settings(client: &mut rdkafka::ClientConfig) {
    client
        .set("fetch.wait.max.ms", "50")
        .set("max.partition.fetch.bytes", "16777216")
        .set("queued.min.messages", "1000000")
        .set("queued.max.messages.kbytes", "131072");
}

impl VerifiedConsumer {
    /// Join `group` and subscribe to `topics`. Offsets are never auto-committed: the caller's
    /// table is the source of truth, Kafka commits are advisory.
    pub fn subscribe(config: &KafkaConfig, group: &str, topics: &[&str]) -> Result<Self> {
        let consumer = Self::create(config, group)?;
        consumer.consumer.subscribe(topics)?;
        Ok(consumer)
    }

    /// Own every partition of `topics` without joining a group, each started at
    /// `next_offset(partition)` as [`VerifiedConsumer::start_partition`] would. For a service
    /// that must see every partition (one whose state spans them all and that runs as a single
    /// process): group membership can only take partitions away from it, and after crashes a
    /// restarted member was seen holding a part of them for a minute, during which a drain
    /// would have ended on the part it held. No `Assigned` or `Revoked` is ever reported.
    pub async fn assign(
        config: &KafkaConfig,
        group: &str,
        topics: &[&str],
        next_offset: impl Fn(&PartitionKey) -> Option<i64>,
    ) -> Result<Self> {
        let mut consumer = Self::create(config, group)?;
        let mut keys = Vec::new();
        for topic in topics {
            let partitions = consumer.partition_keys(topic).await?;
            if partitions.is_empty() {
                return Err(KafkaError::Config {
                    setting: "kafka.brokers".into(),
                    message: format!(
                        "topic {topic} does not exist on the broker; create the topics first (`marketlake topics`)"
                    ),
                });
            }
            keys.extend(partitions);
        }
        consumer.assign_keys(&keys, next_offset)?;
        Ok(consumer)
    }

    /// Own exactly `keys`, without a group, each started at `next_offset` (0 when `None`).
    fn assign_keys(
        &mut self,
        keys: &[PartitionKey],
        next_offset: impl Fn(&PartitionKey) -> Option<i64>,
    ) -> Result<()> {
        let mut tpl = TopicPartitionList::new();
        for key in keys {
            let expected = next_offset(key).unwrap_or(0);
            tpl.add_partition_offset(&key.topic, key.partition, Offset::Offset(expected))?;
            self.track(key, expected);
        }
        self.consumer.assign(&tpl)?;
        Ok(())
    }

    /// A client with the sink's group and fetch settings, neither subscribed nor assigned.
    fn create(config: &KafkaConfig, group: &str) -> Result<Self> {
        let mut client = config.client_config();
        client
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", config.session_timeout_ms.to_string())
            .set(
                "heartbeat.interval.ms",
                (config.session_timeout_ms / 4).max(250).to_string(),
            )
            .set("enable.partition.eof", "false");
        fetch_settings(&mut client);
        // Settings in `kafka.client` override all of the above.
        for (key, value) in &config.client {
            client.set(key, value);
        }
        let consumer: StreamConsumer<RebalanceRecorder> =
            client.create_with_context(RebalanceRecorder::default())?;
        let lookups: BaseConsumer = config.client_config().create()?;
        Ok(VerifiedConsumer {
            consumer: Arc::new(consumer),
            lookups: Arc::new(lookups),
            tracks: HashMap::new(),
            stall_after: Duration::from_millis(1_500),
            last_stall_check: Instant::now(),
            stats: ConsumerStats::default(),
        })
    }

    pub fn stats(&self) -> ConsumerStats {
        self.stats
    }

    /// Partitions this consumer has started and not lost.
    pub fn owned(&self) -> Vec<PartitionKey> {
        let mut owned: Vec<_> = self.tracks.keys().cloned().collect();
        owned.sort();
        owned
    }

    /// The next offset expected from `key`, if owned.
    pub fn expected(&self, key: &PartitionKey) -> Option<i64> {
        self.tracks.get(key).map(|t| t.expected)
    }

    /// Low and high watermark of a partition, asked of the broker.
    pub async fn watermarks(&self, key: &PartitionKey) -> Result<(i64, i64)> {
        let consumer = self.lookups.clone();
        let key = key.clone();
        tokio::task::spawn_blocking(move || {
            consumer
                .fetch_watermarks(&key.topic, key.partition, Duration::from_secs(10))
                .map_err(KafkaError::from)
        })
        .await
        .map_err(|e| KafkaError::Config {
            setting: "kafka".into(),
            message: format!("watermark lookup task failed: {e}"),
        })?
    }

    /// Number of partitions of `topic`, asked of the broker.
    pub async fn partition_count(&self, topic: &str) -> Result<usize> {
        let consumer = self.lookups.clone();
        let topic = topic.to_string();
        tokio::task::spawn_blocking(move || {
            let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
            Ok(metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic)
                .map(|t| t.partitions().len())
                .unwrap_or(0))
        })
        .await
        .map_err(|e| KafkaError::Config {
            setting: "kafka".into(),
            message: format!("metadata lookup task failed: {e}"),
        })?
    }

    /// Low and high watermark of every partition of `topics`, asked of the broker.
    pub async fn end_offsets(&self, topics: &[&str]) -> Result<Vec<(PartitionKey, i64, i64)>> {
        let mut ends = Vec::new();
        for topic in topics {
            for key in self.partition_keys(topic).await? {
                let (low, high) = self.watermarks(&key).await?;
                ends.push((key, low, high));
            }
        }
        Ok(ends)
    }

    /// Low watermark and *end* of every partition of `topics`, the end proven by reading rather
    /// than taken from the broker's high watermark (tansu 0.6 reports the last batch's base
    /// offset + 1, so a back-fill waiting for another member to store up to it could end up to
    /// one batch early). A client of its own, with no group, reads each partition from one
    /// before its high watermark — the last batch's base on that broker — and a partition's end
    /// is where the client's probing first confirms it caught up. Every offset below the read
    /// position was read in order, so a partition not confirmed within [`PROVE_ENDS_WITHIN`]
    /// ends there (never below the high watermark), with a warning. Call it before joining a
    /// group: the group's member is not polled meanwhile.
    pub async fn proven_end_offsets(
        config: &KafkaConfig,
        group: &str,
        topics: &[&str],
    ) -> Result<Vec<(PartitionKey, i64, i64)>> {
        let mut reader = Self::create(config, group)?;
        let reported = reader.end_offsets(topics).await?;
        if reported.is_empty() {
            return Ok(reported);
        }
        let keys: Vec<PartitionKey> = reported.iter().map(|(key, _, _)| key.clone()).collect();
        let starts: HashMap<&PartitionKey, i64> = reported
            .iter()
            .map(|(key, low, high)| (key, (high - 1).max(*low)))
            .collect();
        reader.assign_keys(&keys, |key| starts.get(key).copied())?;
        reader.set_stall_after(Duration::from_millis(200));
        // A live partition stays caught up only until its next record: each end is latched
        // the first time it is confirmed.
        let mut proven: HashMap<PartitionKey, i64> = HashMap::new();
        let deadline = Instant::now() + PROVE_ENDS_WITHIN;
        while proven.len() < keys.len() && Instant::now() < deadline {
            reader
                .poll_each(Duration::from_millis(100), POLL_BATCH, |_| {})
                .await?;
            for key in &keys {
                if !proven.contains_key(key) && reader.caught_up(key) {
                    if let Some(end) = reader.expected(key) {
                        proven.insert(key.clone(), end);
                    }
                }
            }
        }
        Ok(reported
            .into_iter()
            .map(|(key, low, high)| {
                let end = match proven.get(&key) {
                    Some(&end) => end.max(high),
                    None => {
                        let read_to = reader.expected(&key).unwrap_or(high).max(high);
                        tracing::warn!(partition = %key, high, read_to, "end offset not confirmed by reading in time; using how far it was read");
                        read_to
                    }
                };
                (key, low, end)
            })
            .collect())
    }

    /// Every partition of `topic` (none when it does not exist), asked of the broker.
    async fn partition_keys(&self, topic: &str) -> Result<Vec<PartitionKey>> {
        let partitions = self.partition_count(topic).await?;
        Ok((0..partitions)
            .map(|partition| PartitionKey {
                topic: topic.to_string(),
                partition: i32::try_from(partition).unwrap_or(i32::MAX),
            })
            .collect())
    }

    /// Leave the group and join it again with a new client (see [`crate::group`]). Every
    /// partition is forgotten; the next `Assigned` starts them again. The stall wait is kept.
    pub fn rejoin(&mut self, config: &KafkaConfig, group: &str, topics: &[&str]) -> Result<()> {
        let stall_after = self.stall_after;
        *self = Self::subscribe(config, group, topics)?;
        self.stall_after = stall_after;
        Ok(())
    }

    fn seek(&mut self, key: &PartitionKey, offset: i64) {
        // A zero timeout makes the seek asynchronous; records fetched before it are discarded
        // by the client, and whatever arrives next is checked against the expectation anyway.
        if let Err(e) = self.consumer.seek(
            &key.topic,
            key.partition,
            Offset::Offset(offset),
            Duration::ZERO,
        ) {
            tracing::debug!(partition = %key, offset, error = %e, "seek not accepted yet");
        }
    }

    /// Start delivering `key` from `next_offset` (the offset after the last one the caller has
    /// durably written), or from the start of the log when the caller has written nothing.
    pub async fn start_partition(
        &mut self,
        key: &PartitionKey,
        next_offset: Option<i64>,
    ) -> Result<()> {
        // Nothing written yet: expect offset 0. If retention removed the start of the log, the
        // first record's gap is proven real by the probe (a seek to 0 restarts at the earliest).
        let expected = next_offset.unwrap_or(0);
        self.track(key, expected);
        self.seek(key, expected);
        Ok(())
    }

    /// Verify `key`'s records from `expected` on.
    fn track(&mut self, key: &PartitionKey, expected: i64) {
        tracing::info!(partition = %key, expected, "partition started");
        self.tracks.insert(
            key.clone(),
            Track {
                expected,
                probe: None,
                last_progress: Instant::now(),
                caught_up: false,
                idle_probes: 0,
            },
        );
    }

    /// Forget a partition (revoked, or its buffered records were dropped and it must restart).
    pub fn stop_partition(&mut self, key: &PartitionKey) {
        self.tracks.remove(key);
    }

    /// Record `next_offset`s in the group's committed offsets. Advisory only: it lets a restarted
    /// member begin fetching near where the table already is.
    pub fn commit_advisory(&self, offsets: &[(PartitionKey, i64)]) {
        let mut tpl = TopicPartitionList::new();
        for (key, next) in offsets {
            if tpl
                .add_partition_offset(&key.topic, key.partition, Offset::Offset(*next))
                .is_err()
            {
                return;
            }
        }
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            tracing::debug!(error = %e, "advisory offset commit failed");
        }
    }

    /// One step of a gap investigation on `key`; `seen` is the offset that arrived instead of the
    /// expected one (None when the partition is silent). Returns the offset to accept when the
    /// gap is proven real.
    async fn probe_step(&mut self, key: &PartitionKey, seen: Option<i64>) -> Result<Option<i64>> {
        let Some(track) = self.tracks.get(key) else {
            return Ok(None);
        };
        let expected = track.expected;
        // The broker's high watermark, when asked (silent partitions only).
        let mut reported_high = None;
        if seen.is_none() && track.probe.is_none() {
            // Silent partition: when the broker's high watermark is exactly the expectation it
            // is caught up, with no seek (a broker that reports it exactly needs no probing;
            // one that under-reports it, like tansu 0.6 in memory, gets probed below).
            if let Ok((_, high)) = self.watermarks(key).await {
                reported_high = Some(high);
                if high == expected {
                    if let Some(track) = self.tracks.get_mut(key) {
                        track.caught_up = true;
                        track.idle_probes = track.idle_probes.saturating_add(1);
                        track.last_progress = Instant::now();
                    }
                    return Ok(None);
                }
            }
        }
        let next = match track.probe {
            None => {
                // No low-watermark lookup: seeking below it makes the client restart at the
                // earliest offset (auto.offset.reset), which proves the same thing, and some
                // brokers stall every client while answering ListOffsets.
                let low = 0;
                if seen.is_some() {
                    tracing::warn!(
                        partition = %key, expected, first_seen = ?seen,
                        "partition did not deliver the offset asked for; seeking back to check the gap"
                    );
                }
                // A gap is first re-asked at the expectation itself; silence is asked one
                // offset earlier, since re-asking the same position would change nothing.
                // A broker that under-reports its high watermark as the base offset of its
                // last record batch + 1 (tansu 0.6 in memory) is asked at that base: the
                // whole last batch comes back at once instead of after several doubling steps.
                let distance = match reported_high {
                    Some(high) if seen.is_none() && high >= 1 && high < expected => {
                        expected - (high - 1)
                    }
                    _ => i64::from(seen.is_none()),
                };
                Probe {
                    distance,
                    target: (expected - distance).max(low),
                    low_watermark: low,
                    reached_below: false,
                    repeats: 0,
                }
            }
            Some(probe) if probe.target <= probe.low_watermark => {
                if let Some(seen) = seen {
                    // Even the oldest retained offset leads past the expectation: the gap is real.
                    tracing::warn!(
                        partition = %key, expected, next = seen,
                        "offsets from {expected} up to {seen} do not exist on the broker (deleted or compacted); continuing"
                    );
                    self.stats.offsets_proven_missing +=
                        u64::try_from(seen - expected).unwrap_or(0);
                    if let Some(track) = self.tracks.get_mut(key) {
                        track.probe = None;
                        track.expected = seen;
                    }
                    return Ok(Some(seen));
                }
                // Silent even from the start of the log. A slow broker may just need longer:
                // wait without re-seeking (a new seek would cancel its fetch). After that, put
                // the position back where it was and fall back to the broker's high watermark.
                if probe.repeats < MAX_PROBE_REPEATS {
                    if let Some(track) = self.tracks.get_mut(key) {
                        track.probe = Some(Probe {
                            repeats: probe.repeats + 1,
                            ..probe
                        });
                        track.last_progress = Instant::now();
                    }
                    return Ok(None);
                }
                self.seek(key, expected);
                let high = match self.watermarks(key).await {
                    Ok((_, high)) => Some(high),
                    Err(e) => {
                        tracing::warn!(partition = %key, error = %e, "watermark lookup failed");
                        None
                    }
                };
                if let Some(track) = self.tracks.get_mut(key) {
                    track.probe = None;
                    track.idle_probes = track.idle_probes.saturating_add(1);
                    track.last_progress = Instant::now();
                    track.caught_up = high.is_some_and(|high| high <= expected);
                    if !track.caught_up {
                        tracing::warn!(partition = %key, expected, ?high, "the broker answered no seek back; position restored, will probe again");
                    }
                }
                return Ok(None);
            }
            Some(probe) => {
                let distance = probe.distance.saturating_mul(PROBE_GROWTH).max(1);
                Probe {
                    distance,
                    target: expected.saturating_sub(distance).max(probe.low_watermark),
                    low_watermark: probe.low_watermark,
                    reached_below: false,
                    repeats: 0,
                }
            }
        };
        if seen.is_none() && next.target >= expected {
            // Nothing can precede the expectation: an empty (or fully deleted) partition.
            if let Some(track) = self.tracks.get_mut(key) {
                track.probe = None;
                track.caught_up = true;
                track.idle_probes = track.idle_probes.saturating_add(1);
                track.last_progress = Instant::now();
            }
            return Ok(None);
        }
        if let Some(track) = self.tracks.get_mut(key) {
            track.probe = Some(next);
            track.last_progress = Instant::now();
        }
        self.stats.probe_seeks += 1;
        tracing::debug!(partition = %key, expected, target = next.target, seen = ?seen, "probe seek");
        self.seek(key, next.target);
        Ok(None)
    }

    /// How long a partition may stay silent before it is probed for records the broker did not
    /// deliver (default 1.5 s). A drain (`--until-caught-up`) uses a shorter wait: it ends on
    /// silence, and a probe costs one re-fetch of the last record batch.
    pub fn set_stall_after(&mut self, wait: Duration) {
        self.stall_after = wait;
    }

    /// This process owns partitions and every one is proven caught up (end of a drain).
    pub fn drained(&self) -> bool {
        !self.tracks.is_empty() && self.tracks.values().all(|t| t.caught_up)
    }

    /// Whether every owned partition is proven to hold nothing beyond what was delivered.
    pub fn caught_up(&self, key: &PartitionKey) -> bool {
        self.tracks.get(key).is_some_and(|t| t.caught_up)
    }

    async fn check_stalls(&mut self) -> Result<()> {
        if self.last_stall_check.elapsed() < PROBE_STEP_WAIT / 2 {
            return Ok(());
        }
        self.last_stall_check = Instant::now();
        let stall_after = self.stall_after;
        let stalled: Vec<(PartitionKey, bool)> = self
            .tracks
            .iter()
            .filter(|(_, t)| {
                let wait = if let Some(probe) = t.probe {
                    // A seek is answered within a fetch round trip (fetch.wait.max.ms = 50);
                    // waits at the start of the log back off for slow brokers.
                    PROBE_STEP_WAIT * (1u32 << probe.repeats.min(5))
                } else {
                    stall_after * (1u32 << t.idle_probes.min(5))
                };
                t.last_progress.elapsed() >= wait
            })
            .map(|(k, t)| (k.clone(), t.probe.is_some_and(|p| p.reached_below)))
            .collect();
        for (key, probe_reached_below) in stalled {
            if probe_reached_below {
                // The seek delivered what lies just below the expectation, then nothing more.
                if let Some(track) = self.tracks.get_mut(&key) {
                    track.probe = None;
                    track.caught_up = true;
                    track.idle_probes = track.idle_probes.saturating_add(1);
                    track.last_progress = Instant::now();
                }
            } else {
                self.probe_step(&key, None).await?;
            }
        }
        Ok(())
    }

    fn event_waiting(&self) -> bool {
        self.consumer
            .context()
            .events
            .lock()
            .is_ok_and(|events| !events.is_empty())
    }

    fn pop_event(&self) -> Option<RebalanceEvent> {
        self.consumer
            .context()
            .events
            .lock()
            .ok()
            .and_then(|mut events| events.pop_front())
    }

    /// The next verified record, rebalance, or `Idle` after `timeout` without either.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Polled> {
        Ok(match self.poll_batch(timeout, 1).await? {
            Polled::Record(mut records) => records.pop().map_or(Polled::Idle, Polled::Record),
            other => other.with_records(ConsumedRecord::default()),
        })
    }

    /// Up to `max` verified records copied out of the client, as [`VerifiedConsumer::poll_each`]
    /// hands them over: a consuming loop runs its own checks once per batch.
    pub async fn poll_batch(
        &mut self,
        timeout: Duration,
        max: usize,
    ) -> Result<Polled<Vec<ConsumedRecord>>> {
        let mut records = Vec::new();
        let polled = self
            .poll_each(timeout, max, |found| records.push(found.to_owned()))
            .await?;
        Ok(polled.with_records(records))
    }

    /// Hand verified records to `each`, borrowed from the client's buffers: all that are already
    /// waiting, up to `max`, or else the first to arrive within `timeout`. Returns
    /// `Record(count)` with the number handed over, a rebalance (which ends a batch: records
    /// after it are handed over by the next call), or `Idle`. The per-call work (stall checks,
    /// timers, clock reads) is shared by the whole batch.
    pub async fn poll_each(
        &mut self,
        timeout: Duration,
        max: usize,
        mut each: impl FnMut(RecordRef<'_>),
    ) -> Result<Polled<usize>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let consumer = self.consumer.clone();
        let mut delivered = 0usize;
        let mut now = Instant::now();
        loop {
            if self.event_waiting() {
                if delivered > 0 {
                    return Ok(Polled::Record(delivered));
                }
                match self.pop_event() {
                    Some(RebalanceEvent::Assigned(keys)) => return Ok(Polled::Assigned(keys)),
                    Some(RebalanceEvent::Revoked(keys)) => {
                        for key in &keys {
                            self.tracks.remove(key);
                        }
                        return Ok(Polled::Revoked(keys));
                    }
                    None => {}
                }
            }
            if delivered == 0 {
                self.check_stalls().await?;
                // The checks may have waited on the broker: progress is stamped after them.
                now = Instant::now();
            }
            // Fast path: a record already waiting needs no timer (one per record is costly).
            let received = match consumer.recv().now_or_never() {
                Some(received) => received,
                None if delivered > 0 => return Ok(Polled::Record(delivered)),
                None => {
                    let received = tokio::select! {
                        received = consumer.recv() => received,
                        _ = tokio::time::sleep_until(deadline) => return Ok(Polled::Idle),
                    };
                    now = Instant::now();
                    received
                }
            };
            let message = match received {
                Ok(message) => message,
                Err(e) => {
                    tracing::warn!(error = %e, "consumer error; continuing");
                    if delivered > 0 {
                        return Ok(Polled::Record(delivered));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    now = Instant::now();
                    continue;
                }
            };
            let (topic, partition, offset) =
                (message.topic(), message.partition(), message.offset());
            let Some(track) = track_of(&mut self.tracks, topic, partition) else {
                // Not (yet) started: its records are delivered once the caller starts it.
                continue;
            };
            if offset < track.expected {
                self.stats.skipped += 1;
                if let Some(probe) = track.probe.as_mut() {
                    probe.reached_below = true;
                    track.last_progress = now;
                }
                continue;
            }
            if offset > track.expected {
                let key = PartitionKey {
                    topic: topic.to_string(),
                    partition,
                };
                if self.probe_step(&key, Some(offset)).await?.is_none() {
                    continue;
                }
                now = Instant::now();
            }
            let Some(track) = track_of(&mut self.tracks, topic, partition) else {
                continue;
            };
            if track.probe.take().is_some() {
                self.stats.gaps_filled += 1;
                tracing::info!(%topic, partition, offset, "resumed at the expected offset after seeking back");
            }
            track.expected = offset + 1;
            track.last_progress = now;
            track.caught_up = false;
            track.idle_probes = 0;
            let headers = message.headers().filter(|headers| {
                let readable = headers_readable(headers);
                if !readable {
                    tracing::warn!(%topic, partition, offset, "a header name is not UTF-8: the record is kept without its headers");
                }
                readable
            });
            each(RecordRef {
                topic,
                partition,
                offset,
                timestamp_ms: message.timestamp().to_millis(),
                key: message.key(),
                payload: message.payload().unwrap_or_default(),
                headers,
            });
            delivered += 1;
            if delivered >= max {
                return Ok(Polled::Record(delivered));
            }
        }
    }
}

/// Whether every header name is UTF-8. rdkafka 0.39 panics reading a header whose name is not
/// (`BorrowedHeaders::try_get` unwraps the conversion), and any producer can write one: the
/// consume loop must not die on such a record (nor on its re-delivery after a restart), so the
/// names are read once under `catch_unwind` and a record failing it is handed over without its
/// headers (a raw record then lands as undecodable, bytes kept, rather than crash the sink).
fn headers_readable(headers: &BorrowedHeaders) -> bool {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        (0..headers.count()).all(|index| headers.try_get(index).is_some())
    }))
    .unwrap_or(false)
}

/// The track of a partition, found without building a key (a linear look over the few owned
/// partitions costs less than allocating a topic name per record).
fn track_of<'t>(
    tracks: &'t mut HashMap<PartitionKey, Track>,
    topic: &str,
    partition: i32,
) -> Option<&'t mut Track> {
    tracks
        .iter_mut()
        .find(|(key, _)| key.partition == partition && key.topic == topic)
        .map(|(_, track)| track)
}
