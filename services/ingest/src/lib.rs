//! marketlake-ingest: raw topics → L1 Delta tables, exactly once.
//!
//! One loop per process: poll a verified group consumer, append each record to the buffer of
//! its table (`raw.trades` → `l1.trades_raw`, `raw.news` → `l1.news_raw`, `dlq.*` →
//! `l1.dead_letters`), and commit a buffer with its partitions' offsets when it is big enough or
//! old enough. Scaling out is running more processes in the same consumer group; the Delta `txn`
//! offsets make any overlap during a rebalance harmless (see `marketlake_lake::sink`).

pub mod buffer;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use marketlake_kafka::{
    GroupWatch, KafkaConfig, PartitionKey, Polled, RecordRef, Unowned, VerifiedConsumer, POLL_BATCH,
};
use marketlake_lake::{CommitOutcome, ExactlyOnceSink, LakeConfig, TableSpec};
use marketlake_schemas::l1::{self, DeadLetterColumns, KafkaCoordinates, RawColumns};
use marketlake_schemas::names::{
    TableName, L1_DEAD_LETTERS, L1_NEWS_RAW, L1_TRADES_RAW, TOPIC_DEAD_LETTER_PREFIX,
    TOPIC_RAW_NEWS, TOPIC_RAW_TRADES,
};
use marketlake_schemas::now_utc_ns;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use buffer::TableBuffer;

/// The `txn` app id prefix of this sink: stored offsets are per sink, per topic, per partition.
pub const SINK_NAME: &str = "l1-ingest";

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("invalid setting `{setting}`: {message}")]
    Config { setting: String, message: String },
    #[error(transparent)]
    Kafka(#[from] marketlake_kafka::KafkaError),
    #[error(transparent)]
    Lake(#[from] marketlake_lake::LakeError),
    #[error(transparent)]
    Schema(#[from] marketlake_schemas::SchemaError),
}

pub type Result<T, E = IngestError> = std::result::Result<T, E>;

/// `[ingest]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Consumer group shared by every ingest process.
    pub group: String,
    /// Commit a table's buffer when it holds this many records...
    pub max_batch_records: usize,
    /// ...or this many payload bytes...
    pub max_batch_bytes: usize,
    /// ...or when its oldest record has waited this long (freshness bound).
    pub commit_interval_ms: u64,
    /// Every this many seconds, look at the partitions this process does not own, and rejoin the
    /// group when one of them has had records waiting and no commit for at least this long (a
    /// member can be left with an empty assignment, or a dead member keep partitions, after
    /// crashes).
    pub rejoin_when_idle_secs: u64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            group: "marketlake-ingest".into(),
            max_batch_records: 200_000,
            max_batch_bytes: 64 * 1024 * 1024,
            commit_interval_ms: 1_000,
            rejoin_when_idle_secs: 20,
        }
    }
}

impl IngestConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |setting: &str, message: &str| IngestError::Config {
            setting: format!("ingest.{setting}"),
            message: message.into(),
        };
        if self.group.trim().is_empty() {
            return Err(bad("group", "must not be empty"));
        }
        if self.max_batch_records == 0 {
            return Err(bad("max_batch_records", "must be at least 1"));
        }
        if self.max_batch_bytes < 1024 {
            return Err(bad("max_batch_bytes", "must be at least 1024"));
        }
        if !(10..=600_000).contains(&self.commit_interval_ms) {
            return Err(bad(
                "commit_interval_ms",
                "must be between 10 and 600000 milliseconds",
            ));
        }
        if self.rejoin_when_idle_secs == 0 {
            return Err(bad("rejoin_when_idle_secs", "must be at least 1"));
        }
        Ok(())
    }
}

/// The L1 table specs.
pub fn l1_specs() -> Vec<TableSpec> {
    vec![
        TableSpec {
            name: L1_TRADES_RAW,
            schema: l1::raw_schema(),
            partition_columns: vec![l1::PARTITION_COLUMN.into()],
            description:
                "raw trade-feed records exactly as received, with source and Kafka lineage",
        },
        TableSpec {
            name: L1_NEWS_RAW,
            schema: l1::raw_schema(),
            partition_columns: vec![l1::PARTITION_COLUMN.into()],
            description: "raw news-feed records exactly as received, with source and Kafka lineage",
        },
        TableSpec {
            name: L1_DEAD_LETTERS,
            schema: l1::dead_letter_schema(),
            partition_columns: vec![l1::PARTITION_COLUMN.into()],
            description: "records connectors could not frame, with their bytes and the reason",
        },
    ]
}

fn table_of_topic(topic: &str) -> TableName {
    if topic == TOPIC_RAW_NEWS {
        L1_NEWS_RAW
    } else if topic.starts_with(TOPIC_DEAD_LETTER_PREFIX) {
        L1_DEAD_LETTERS
    } else {
        L1_TRADES_RAW
    }
}

/// What the loop was asked to do.
#[derive(Debug, Clone)]
pub struct IngestJob {
    pub kafka: KafkaConfig,
    pub lake: LakeConfig,
    pub ingest: IngestConfig,
    /// Dead-letter topics to sink (one per configured source).
    pub dead_letter_topics: Vec<String>,
    /// Drain every partition to the end offsets seen at start, then exit.
    pub until_caught_up: bool,
}

impl IngestJob {
    pub fn topics(&self) -> Vec<String> {
        let mut topics = vec![TOPIC_RAW_TRADES.to_string(), TOPIC_RAW_NEWS.to_string()];
        topics.extend(self.dead_letter_topics.iter().cloned());
        topics
    }
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct IngestReport {
    pub records: u64,
    pub payload_bytes: u64,
    pub commits: u64,
    pub conflicts: u64,
    pub elapsed: Duration,
    /// From the start until the last commit with records landed: the time the data took to
    /// reach L1. `elapsed` also counts proving every partition drained (`--until-caught-up`),
    /// which waits for silence and re-asks the broker for its last batch.
    pub last_rows_visible: Option<Duration>,
    /// Receive (connector) → commit (visible in L1) latency samples, microseconds.
    pub visibility_latency_us: Vec<i64>,
    pub consumer: marketlake_kafka::consumer::ConsumerStats,
}

impl IngestReport {
    /// The `q`-quantile (0..=1) of the visibility latency, in milliseconds.
    pub fn latency_ms(&self, q: f64) -> Option<f64> {
        marketlake_schemas::quantile_ms(&self.visibility_latency_us, q)
    }
}

/// Cap on latency samples kept (every record up to this, then none): bounded memory.
const MAX_LATENCY_SAMPLES: usize = 2_000_000;

/// The rows of one table's buffer, as Arrow columns under construction.
// Both variants are large (builders); one lives per table and moves only at a flush.
#[allow(clippy::large_enum_variant)]
enum Columns {
    Raw(RawColumns),
    Dead(DeadLetterColumns),
}

impl Columns {
    fn for_table(name: TableName) -> Self {
        if name == L1_DEAD_LETTERS {
            Columns::Dead(DeadLetterColumns::default())
        } else {
            Columns::Raw(RawColumns::default())
        }
    }

    /// Empty columns for the next buffer, sized like these.
    fn successor(&self) -> Self {
        match self {
            Columns::Raw(columns) => Columns::Raw(columns.successor()),
            Columns::Dead(_) => Columns::Dead(DeadLetterColumns::default()),
        }
    }

    fn append(&mut self, record: &RecordRef<'_>) {
        let at = KafkaCoordinates {
            topic: record.topic,
            partition: record.partition,
            offset: record.offset,
            timestamp_ms: record.timestamp_ms,
        };
        match self {
            Columns::Raw(columns) => columns.append_consumed(
                record.headers(),
                record.key,
                record.payload,
                at,
                now_utc_ns,
            ),
            Columns::Dead(columns) => {
                columns.append_consumed(record.headers(), record.payload, at, now_utc_ns)
            }
        }
    }

    fn finish(&mut self, ingested_at_ns: i64, keep: Option<&[bool]>) -> Result<l1::RecordBatch> {
        Ok(match self {
            Columns::Raw(columns) => columns.finish(ingested_at_ns, keep)?,
            Columns::Dead(columns) => columns.finish(ingested_at_ns, keep)?,
        })
    }
}

struct Table {
    /// `None` while a commit is in flight: the commit task owns the sink until it lands.
    sink: Option<ExactlyOnceSink>,
    /// The commit running beside consumption (one per table at a time).
    inflight: Option<tokio::task::JoinHandle<Landed>>,
    buffer: TableBuffer<Columns>,
}

impl Table {
    fn new(name: TableName, sink: ExactlyOnceSink) -> Self {
        Table {
            sink: Some(sink),
            inflight: None,
            buffer: TableBuffer::new(Columns::for_table(name)),
        }
    }

    /// The settled sink (callers settle in-flight commits first).
    fn sink(&mut self) -> Result<&mut ExactlyOnceSink> {
        self.sink.as_mut().ok_or_else(|| IngestError::Config {
            setting: "internal".into(),
            message: "a table was used while its commit was in flight".into(),
        })
    }
}

/// What a finished commit task hands back.
struct Landed {
    sink: ExactlyOnceSink,
    outcome: Result<CommitOutcome>,
    spans: BTreeMap<PartitionKey, buffer::Span>,
    records: usize,
    payload_bytes: u64,
    /// Receive → visible latencies, microseconds (at most the samples still wanted).
    latencies_us: Vec<i64>,
}

/// Build the Arrow batch of a buffer and commit it with its offsets: runs on its own task so
/// Parquet encoding and the Delta commit overlap with consuming the next buffer.
async fn commit_rows(
    mut sink: ExactlyOnceSink,
    taken: buffer::Taken<Columns>,
    advances: Vec<marketlake_lake::OffsetAdvance>,
    latency_samples_wanted: usize,
) -> Landed {
    let buffer::Taken {
        mut columns,
        keep,
        spans,
        rows: records,
        bytes,
    } = taken;
    let mut received_ns = Vec::new();
    let outcome = match columns.finish(now_utc_ns(), keep.as_deref()) {
        Ok(batch) => {
            received_ns = l1::received_times_ns(&batch, latency_samples_wanted);
            sink.commit(batch, &advances)
                .await
                .map_err(IngestError::from)
        }
        Err(e) => Err(e),
    };
    let mut latencies_us = Vec::new();
    if matches!(outcome, Ok(CommitOutcome::Committed { .. })) {
        let visible_at = now_utc_ns();
        latencies_us = received_ns
            .iter()
            .map(|received| visible_at.saturating_sub(*received) / 1_000)
            .collect();
    }
    Landed {
        sink,
        outcome,
        spans,
        records,
        payload_bytes: bytes as u64,
        latencies_us,
    }
}

struct Ingest {
    job: IngestJob,
    consumer: VerifiedConsumer,
    tables: BTreeMap<TableName, Table>,
    /// Last committed offset per owned partition, as this process knows it.
    stored: HashMap<PartitionKey, Option<i64>>,
    report: IngestReport,
    /// The group assigned this process partitions at least once (the group has settled).
    assigned_once: bool,
    started: Instant,
}

/// Append one consumed record to the buffer of its table.
fn on_record(
    tables: &mut BTreeMap<TableName, Table>,
    stored: &HashMap<PartitionKey, Option<i64>>,
    record: RecordRef<'_>,
) {
    let Some(table) = tables.get_mut(&table_of_topic(record.topic)) else {
        return;
    };
    table.buffer.push(
        record.topic,
        record.partition,
        record.offset,
        record.payload.len(),
        |key| stored.get(key).copied().flatten(),
        |columns| columns.append(&record),
    );
}

impl Ingest {
    async fn on_assigned(&mut self, keys: Vec<PartitionKey>) -> Result<()> {
        // One reload per table (not per partition): the offsets read below are as of now,
        // after any commit still in flight has landed.
        self.settle_all().await?;
        for table in self.tables.values_mut() {
            table.sink()?.refresh().await?;
        }
        for key in keys {
            let name = table_of_topic(&key.topic);
            let Some(table) = self.tables.get_mut(&name) else {
                continue;
            };
            table
                .buffer
                .drop_partitions(std::slice::from_ref(&key), || Columns::for_table(name));
            let stored = table
                .sink()?
                .stored_offset(&key.topic, key.partition)
                .await?;
            self.stored.insert(key.clone(), stored);
            self.consumer
                .start_partition(&key, stored.map(|s| s + 1))
                .await?;
        }
        Ok(())
    }

    fn on_revoked(&mut self, keys: &[PartitionKey]) {
        for (name, table) in self.tables.iter_mut() {
            let dropped = table
                .buffer
                .drop_partitions(keys, || Columns::for_table(*name));
            if dropped > 0 {
                tracing::info!(table = %name, dropped, "revoked partitions: buffered records dropped (the new owner re-reads them)");
            }
        }
        for key in keys {
            self.stored.remove(key);
        }
    }

    fn due(&self, name: TableName) -> bool {
        let Some(table) = self.tables.get(&name) else {
            return false;
        };
        let buffer = &table.buffer;
        !buffer.is_empty()
            && (buffer.len() >= self.job.ingest.max_batch_records
                || buffer.bytes >= self.job.ingest.max_batch_bytes
                || buffer.oldest.is_some_and(|t| {
                    t.elapsed() >= Duration::from_millis(self.job.ingest.commit_interval_ms)
                }))
    }

    /// Start committing a table's buffer on its own task (after the previous commit of that
    /// table has landed). The partitions' offsets are advanced optimistically so the next
    /// buffer builds on them; a commit that does not land drops that next buffer and re-seeks.
    async fn flush(&mut self, name: TableName) -> Result<()> {
        self.settle(name).await?;
        let wanted = MAX_LATENCY_SAMPLES.saturating_sub(self.report.visibility_latency_us.len());
        let Some(table) = self.tables.get_mut(&name) else {
            return Ok(());
        };
        if table.buffer.is_empty() {
            return Ok(());
        }
        // The sink first: without it nothing may be taken from the buffer or advanced.
        let Some(sink) = table.sink.take() else {
            return Err(IngestError::Config {
                setting: "internal".into(),
                message: format!("{name} was flushed while its commit was in flight"),
            });
        };
        let next = table.buffer.columns().successor();
        let taken = table.buffer.take(next);
        let advances = taken.advances();
        for (key, span) in &taken.spans {
            self.stored.insert(key.clone(), Some(span.to));
        }
        table.inflight = Some(tokio::spawn(commit_rows(sink, taken, advances, wanted)));
        Ok(())
    }

    /// Wait for a table's in-flight commit (if any) and apply its outcome.
    async fn settle(&mut self, name: TableName) -> Result<()> {
        let Some(table) = self.tables.get_mut(&name) else {
            return Ok(());
        };
        let Some(handle) = table.inflight.take() else {
            return Ok(());
        };
        let landed = handle.await.map_err(|e| IngestError::Config {
            setting: "internal".into(),
            message: format!("the commit task of {name} failed: {e}"),
        })?;
        table.sink = Some(landed.sink);
        match landed.outcome? {
            CommitOutcome::Committed { version } => {
                self.report.records += landed.records as u64;
                self.report.payload_bytes += landed.payload_bytes;
                self.report.commits += 1;
                if landed.records > 0 {
                    self.report.last_rows_visible = Some(self.started.elapsed());
                }
                self.report
                    .visibility_latency_us
                    .extend_from_slice(&landed.latencies_us);
                let advisory: Vec<(PartitionKey, i64)> = landed
                    .spans
                    .iter()
                    .map(|(key, span)| (key.clone(), span.to + 1))
                    .collect();
                self.consumer.commit_advisory(&advisory);
                tracing::debug!(table = %name, version, records = landed.records, "committed");
            }
            CommitOutcome::Conflict { .. } => {
                self.report.conflicts += 1;
                // Another writer owns these offsets now. Whatever was buffered since for them
                // built on offsets that never landed: drop it, restart from what is stored.
                let keys: Vec<PartitionKey> = landed.spans.keys().cloned().collect();
                table
                    .buffer
                    .drop_partitions(&keys, || Columns::for_table(name));
                let owned = self.consumer.owned();
                for key in keys {
                    let stored = table
                        .sink()?
                        .stored_offset(&key.topic, key.partition)
                        .await?;
                    self.stored.insert(key.clone(), stored);
                    if owned.contains(&key) {
                        self.consumer
                            .start_partition(&key, stored.map(|s| s + 1))
                            .await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Settle every in-flight commit.
    async fn settle_all(&mut self) -> Result<()> {
        let names: Vec<TableName> = self.tables.keys().copied().collect();
        for name in names {
            self.settle(name).await?;
        }
        Ok(())
    }

    /// Settle the commits that already finished, without waiting for the others.
    async fn settle_finished(&mut self) -> Result<()> {
        let finished: Vec<TableName> = self
            .tables
            .iter()
            .filter(|(_, t)| t.inflight.as_ref().is_some_and(|h| h.is_finished()))
            .map(|(name, _)| *name)
            .collect();
        for name in finished {
            self.settle(name).await?;
        }
        Ok(())
    }

    /// Commit every buffer and wait until all commits have landed.
    async fn flush_all(&mut self) -> Result<()> {
        let names: Vec<TableName> = self.tables.keys().copied().collect();
        for name in names {
            self.flush(name).await?;
        }
        self.settle_all().await
    }

    /// End offsets (high watermarks) of every partition of every topic.
    async fn end_offsets(&self) -> Result<Vec<(PartitionKey, i64, i64)>> {
        let topics = self.job.topics();
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        Ok(self.consumer.end_offsets(&topics).await?)
    }

    /// True when everything up to the end is stored. An owned partition must be proven caught
    /// up by the consumer (brokers' high watermarks are not trusted: tansu 0.6 under-reports
    /// them) with nothing left in the buffer; a partition owned by another group member must
    /// have its stored offset at least at the end proven at start.
    async fn caught_up(&mut self, ends: &[(PartitionKey, i64, i64)]) -> Result<bool> {
        if !self.assigned_once {
            return Ok(false);
        }
        self.settle_all().await?;
        let owned = self.consumer.owned();
        for (key, low, high) in ends {
            let name = table_of_topic(&key.topic);
            let Some(table) = self.tables.get_mut(&name) else {
                continue;
            };
            if owned.contains(key) {
                if !self.consumer.caught_up(key) || !table.buffer.is_empty() {
                    return Ok(false);
                }
                let stored = table
                    .sink()?
                    .stored_offset(&key.topic, key.partition)
                    .await?;
                let expected = self.consumer.expected(key).unwrap_or(0);
                if stored.map_or(expected > *low, |s| s + 1 < expected) {
                    return Ok(false);
                }
                continue;
            }
            if high <= low {
                continue;
            }
            let stored = table
                .sink()?
                .stored_offset(&key.topic, key.partition)
                .await?;
            if stored.is_none_or(|s| s < high - 1) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// What waits on the partitions this process does not own (see [`GroupWatch`]).
    async fn unowned(&mut self) -> Result<Unowned> {
        let ends = self.end_offsets().await?;
        let owned = self.consumer.owned();
        self.settle_all().await?;
        for table in self.tables.values_mut() {
            table.sink()?.refresh().await?;
        }
        let mut unowned = Unowned::default();
        for (key, low, high) in ends {
            if owned.contains(&key) {
                continue;
            }
            let name = table_of_topic(&key.topic);
            let Some(table) = self.tables.get_mut(&name) else {
                continue;
            };
            let stored = table
                .sink()?
                .stored_offset(&key.topic, key.partition)
                .await?;
            unowned.add(&key, stored, low, high);
        }
        Ok(unowned)
    }
}

/// Retry a broker lookup a few times with backoff: a broker restarting or busy is normal.
async fn retry<T, F, Fut>(what: &str, mut call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut attempt = 0u32;
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(e) if attempt < 5 => {
                attempt += 1;
                tracing::warn!(attempt, error = %e, "{what} lookup failed; retrying");
                tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Run the ingest loop until `shutdown` fires (committing what is buffered) or, with
/// `until_caught_up`, until every partition is stored up to the end offsets seen at start.
pub async fn run(job: IngestJob, shutdown: CancellationToken) -> Result<IngestReport> {
    job.ingest.validate()?;
    job.lake.validate()?;
    let started = Instant::now();
    let topics = job.topics();
    let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    // A back-fill's ends are proven before joining the group (the member is not polled
    // meanwhile, and would hold up the group's rebalances).
    let ends = if job.until_caught_up {
        let ends = retry("end offsets", || async {
            Ok(
                VerifiedConsumer::proven_end_offsets(&job.kafka, &job.ingest.group, &topic_refs)
                    .await?,
            )
        })
        .await?;
        tracing::info!(
            partitions = ends.len(),
            ?ends,
            "draining to the end offsets seen at start"
        );
        Some(ends)
    } else {
        None
    };
    let mut consumer = VerifiedConsumer::subscribe(&job.kafka, &job.ingest.group, &topic_refs)?;
    if job.until_caught_up {
        consumer.set_stall_after(Duration::from_millis(500));
    }
    let mut tables = BTreeMap::new();
    for spec in l1_specs() {
        let name = spec.name;
        let sink = ExactlyOnceSink::open(&job.lake, spec, SINK_NAME).await?;
        tables.insert(name, Table::new(name, sink));
    }
    let mut ingest = Ingest {
        job,
        consumer,
        tables,
        stored: HashMap::new(),
        report: IngestReport::default(),
        assigned_once: false,
        started,
    };
    let mut last_caught_up_check = Instant::now();
    let mut group_watch =
        GroupWatch::new(Duration::from_secs(ingest.job.ingest.rejoin_when_idle_secs));
    loop {
        if shutdown.is_cancelled() {
            ingest.flush_all().await?;
            tracing::info!("ingest stopped on request; buffers committed");
            break;
        }
        let polled = tokio::select! {
            polled = ingest.consumer.poll_each(
                Duration::from_millis(100),
                POLL_BATCH,
                |record| on_record(&mut ingest.tables, &ingest.stored, record),
            ) => polled?,
            _ = shutdown.cancelled() => continue,
        };
        match polled {
            Polled::Record(_) => {}
            Polled::Assigned(keys) => {
                tracing::info!(partitions = ?keys, "partitions assigned");
                ingest.assigned_once = true;
                ingest.on_assigned(keys).await?;
            }
            Polled::Revoked(keys) => {
                tracing::info!(partitions = ?keys, "partitions revoked");
                ingest.on_revoked(&keys);
            }
            Polled::Idle => {}
        }
        ingest.settle_finished().await?;
        let names: Vec<TableName> = ingest.tables.keys().copied().collect();
        for name in names {
            if ingest.due(name) {
                ingest.flush(name).await?;
            }
        }
        if let Some(ends) = &ends {
            if last_caught_up_check.elapsed() >= Duration::from_millis(250) {
                last_caught_up_check = Instant::now();
                // While still consuming, size and age decide the commits (small commits would
                // only slow the drain down). Once everything owned is consumed, commit what is
                // buffered and check the end.
                let owned = ingest.consumer.owned();
                let drained =
                    ingest.assigned_once && owned.iter().all(|key| ingest.consumer.caught_up(key));
                if drained {
                    ingest.flush_all().await?;
                    for table in ingest.tables.values_mut() {
                        table.sink()?.refresh().await?;
                    }
                    if ingest.caught_up(ends).await? {
                        tracing::info!("caught up with the end offsets seen at start");
                        break;
                    }
                }
            }
        }
        // Group health: rejoin when records wait on partitions nobody is consuming.
        if group_watch.due() {
            let unowned = ingest.unowned().await;
            if group_watch.should_rejoin(unowned) {
                ingest.flush_all().await?;
                ingest
                    .consumer
                    .rejoin(&ingest.job.kafka, &ingest.job.ingest.group, &topic_refs)?;
                ingest.stored.clear();
                for (name, table) in ingest.tables.iter_mut() {
                    table.buffer = TableBuffer::new(Columns::for_table(*name));
                }
            }
        }
    }
    ingest.report.elapsed = started.elapsed();
    ingest.report.consumer = ingest.consumer.stats();
    Ok(ingest.report)
}
