//! The enrichment service: `raw.trades` / `raw.news` → `l2.trades`, `l2.news`, `l2.quarantine`
//! (exactly once) and `enriched.trades` / `enriched.news` (at least once, in raw order).
//!
//! Exactly once over three tables. Each table stores, per raw partition, the last raw offset it
//! has *seen* (a Delta `txn`, app id `l2-enrich:<topic>:<partition>`), whether or not that
//! record produced a row for it. On assignment a partition resumes after the smallest of the
//! three, and a record is added to a table only when its offset is above that table's stored
//! offset — so a crash between two tables' commits neither loses nor doubles a row. A table that
//! had nothing to write still commits its offsets (an empty commit) at least every
//! `offsets_commit_secs`, so a quiet table (quarantine) does not hold every restart back.
//!
//! The enriched topics are written before the Delta commits and acknowledged, so every L2 row is
//! also on its topic; after a crash some rows are published again. Each goes to the partition
//! number of its raw record, so per raw partition the topic is in raw-offset order and a
//! consumer drops a repeat by keeping the highest `(raw_partition, raw_offset)` it applied
//! (the curator does).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use marketlake_kafka::{
    ConsumedRecord, GroupWatch, KafkaConfig, PartitionKey, Polled, RawProducer, Unowned,
    VerifiedConsumer, POLL_BATCH,
};
use marketlake_lake::{CommitOutcome, ExactlyOnceSink, LakeConfig, OffsetAdvance, TableSpec};
use marketlake_schemas::l2::{self, Lineage, NewsRow, QuarantineRow, TradeRow};
use marketlake_schemas::names::{
    TableName, L2_NEWS, L2_QUARANTINE, L2_TRADES, TOPIC_ENRICHED_NEWS, TOPIC_ENRICHED_TRADES,
    TOPIC_RAW_NEWS, TOPIC_RAW_TRADES,
};
use marketlake_schemas::{now_utc_ns, KafkaPosition, RawRecord};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::reference::ReferenceDataset;
use crate::{
    EnrichError, Enricher, EnricherConfig, ExtraFieldConfig, ExtraFields, RulesConfig, Table,
};

/// The `txn` app id prefix of this service.
pub const SINK_NAME: &str = "l2-enrich";

/// `[enrich]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnrichSettings {
    /// Consumer group shared by every enrichment process.
    pub group: String,
    /// Commit when this many raw records are buffered...
    pub max_batch_records: usize,
    /// ...or this many while enrichment keeps up: the oldest buffered record was published (its
    /// Kafka timestamp) less than `commit_interval_ms` ago (at most `max_batch_records`)...
    pub fresh_batch_records: usize,
    /// ...or when the oldest buffered record has waited this long.
    pub commit_interval_ms: u64,
    /// A table with nothing to write commits the offsets it has seen at least this often.
    pub offsets_commit_secs: u64,
    /// Every this many seconds, look at the partitions this process does not own, and rejoin the
    /// group when one of them has had records waiting and no commit for at least this long
    /// (after crashes a member was seen left with none, or a part, of the partitions).
    pub rejoin_when_idle_secs: u64,
    /// Instrument master files (SEC `company_tickers_exchange.json`, listings CSV), merged.
    pub reference_files: Vec<PathBuf>,
    /// Look at the reference files again this often while running; changed content becomes a
    /// new version of `ref.instruments` and is used from then on (no restart).
    pub reference_check_secs: u64,
    /// Publish enriched rows to `enriched.trades` / `enriched.news`.
    pub publish: bool,
    /// Where the rule counters are written as Prometheus text (textfile-collector format),
    /// relative to the lake root when relative.
    pub metrics_file: PathBuf,
    /// Validation rules per table.
    pub rules: RulesConfig,
    /// Feed fields mapped to extra nullable L2 columns (schema evolution; see
    /// [`crate::extra`]). Adding one adds the column to the table at the next start.
    pub extra_fields: Vec<ExtraFieldConfig>,
}

impl Default for EnrichSettings {
    fn default() -> Self {
        EnrichSettings {
            group: "marketlake-enrich".into(),
            max_batch_records: 100_000,
            fresh_batch_records: 20_000,
            commit_interval_ms: 1_000,
            offsets_commit_secs: 30,
            rejoin_when_idle_secs: 20,
            reference_files: Vec::new(),
            reference_check_secs: 60,
            publish: true,
            metrics_file: PathBuf::from("_metrics/enrich.prom"),
            rules: RulesConfig::default(),
            extra_fields: Vec::new(),
        }
    }
}

impl EnrichSettings {
    pub fn validate(&self) -> Result<(), PipelineError> {
        let bad = |setting: &str, message: &str| PipelineError::Config {
            setting: format!("enrich.{setting}"),
            message: message.into(),
        };
        if self.group.trim().is_empty() {
            return Err(bad("group", "must not be empty"));
        }
        if self.max_batch_records == 0 {
            return Err(bad("max_batch_records", "must be at least 1"));
        }
        if self.fresh_batch_records == 0 {
            return Err(bad(
                "fresh_batch_records",
                "must be at least 1 (set it to max_batch_records to commit by size only at that bound)",
            ));
        }
        if !(10..=600_000).contains(&self.commit_interval_ms) {
            return Err(bad(
                "commit_interval_ms",
                "must be between 10 and 600000 milliseconds",
            ));
        }
        if self.offsets_commit_secs == 0 {
            return Err(bad("offsets_commit_secs", "must be at least 1"));
        }
        if self.rejoin_when_idle_secs == 0 {
            return Err(bad("rejoin_when_idle_secs", "must be at least 1"));
        }
        if self.reference_check_secs == 0 {
            return Err(bad("reference_check_secs", "must be at least 1"));
        }
        ExtraFields::new(&self.extra_fields)?;
        for file in &self.reference_files {
            if !file.is_file() {
                return Err(bad(
                    "reference_files",
                    &format!(
                        "`{}` is not a readable file; fix the path or remove it from the list",
                        file.display()
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("invalid setting `{setting}`: {message}")]
    Config { setting: String, message: String },
    #[error(transparent)]
    Enrich(#[from] EnrichError),
    #[error(transparent)]
    Kafka(#[from] marketlake_kafka::KafkaError),
    #[error(transparent)]
    Lake(#[from] marketlake_lake::LakeError),
    #[error(transparent)]
    Schema(#[from] marketlake_schemas::SchemaError),
    #[error("writing {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

type Result<T, E = PipelineError> = std::result::Result<T, E>;

/// What the loop was asked to do.
#[derive(Debug, Clone)]
pub struct EnrichJob {
    pub kafka: KafkaConfig,
    pub lake: LakeConfig,
    pub enrich: EnrichSettings,
    /// Drain every raw partition to the end offsets seen at start (those owned by another group
    /// member too: it waits for their commits), then exit.
    pub until_caught_up: bool,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct EnrichReport {
    pub raw_records: u64,
    pub trades: u64,
    pub news: u64,
    pub quarantined: u64,
    pub skipped: u64,
    pub commits: u64,
    pub conflicts: u64,
    pub elapsed: Duration,
    /// Receive (connector) → visible in `l2.trades` latency samples, microseconds.
    pub trade_visibility_us: Vec<i64>,
    pub reference_version: Option<i64>,
}

impl EnrichReport {
    /// The `q`-quantile of the trade visibility latency, milliseconds.
    pub fn latency_ms(&self, q: f64) -> Option<f64> {
        marketlake_schemas::quantile_ms(&self.trade_visibility_us, q)
    }
}

const MAX_LATENCY_SAMPLES: usize = 2_000_000;

/// The L2 table specs.
pub fn l2_specs() -> Vec<TableSpec> {
    l2_specs_with(&ExtraFields::default())
}

/// The L2 tables with the configured extra columns appended.
pub fn l2_specs_with(extra: &ExtraFields) -> Vec<TableSpec> {
    vec![
        TableSpec {
            name: L2_TRADES,
            schema: l2::trades_schema_with(&extra.columns(Table::Trades)),
            partition_columns: vec![l2::PARTITION_COLUMN_TRADES.into()],
            description: "typed, validated, reference-joined trades with lineage to L1",
        },
        TableSpec {
            name: L2_NEWS,
            schema: l2::news_schema_with(&extra.columns(Table::News)),
            partition_columns: vec![l2::PARTITION_COLUMN_NEWS.into()],
            description: "normalised news items tagged with the tickers they mention",
        },
        TableSpec {
            name: L2_QUARANTINE,
            schema: l2::quarantine_schema(),
            partition_columns: vec![l2::PARTITION_COLUMN_QUARANTINE.into()],
            description:
                "records enrichment kept aside, with the rule, the reason and the raw bytes",
        },
    ]
}

/// One output table: its sink, its buffered offsets per raw partition and what it has stored.
struct Output {
    sink: ExactlyOnceSink,
    /// Per raw partition: (stored offset the buffer builds on, last offset seen).
    spans: BTreeMap<PartitionKey, (Option<i64>, i64)>,
    stored: HashMap<PartitionKey, Option<i64>>,
    last_commit: Instant,
}

impl Output {
    fn accepts(&self, key: &PartitionKey, offset: i64) -> bool {
        self.stored
            .get(key)
            .copied()
            .flatten()
            .is_none_or(|stored| offset > stored)
    }

    fn see(&mut self, key: &PartitionKey, offset: i64) {
        // Called for every record and table: look up before cloning the key (its topic name
        // is a `String`), which only the first record of a partition in a batch needs.
        if let Some(span) = self.spans.get_mut(key) {
            span.1 = offset;
            return;
        }
        let stored = self.stored.get(key).copied().flatten();
        self.spans.insert(key.clone(), (stored, offset));
    }

    fn advances(&self) -> Vec<OffsetAdvance> {
        self.spans
            .iter()
            .map(|(key, (from, to))| OffsetAdvance {
                topic: key.topic.clone(),
                partition: key.partition,
                from: *from,
                to: *to,
            })
            .collect()
    }
}

#[derive(Default)]
struct Buffers {
    trades: Vec<TradeRow>,
    news: Vec<NewsRow>,
    quarantine: Vec<QuarantineRow>,
    /// How many of `trades` / `news` are already queued to the enriched topics.
    published_trades: usize,
    published_news: usize,
    records: usize,
    oldest: Option<Instant>,
    /// The earliest Kafka timestamp (when the connector published it) of a buffered record.
    oldest_published_ms: Option<i64>,
}

impl Buffers {
    /// Forget every buffered row. The vectors keep their memory for the next batch: growing
    /// them again from fresh pages cost more than the rows (perf: page faults were a fifth of
    /// enrichment).
    fn clear(&mut self) {
        self.trades.clear();
        self.news.clear();
        self.quarantine.clear();
        self.published_trades = 0;
        self.published_news = 0;
        self.records = 0;
        self.oldest = None;
        self.oldest_published_ms = None;
    }

    /// A buffered record was published at `published_ms` (its Kafka timestamp, if it has one).
    fn note_published(&mut self, published_ms: Option<i64>) {
        self.oldest_published_ms = match (self.oldest_published_ms, published_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    /// How many buffered raw records make a commit due at `now_ns`. While enrichment keeps up —
    /// the oldest buffered record was published less than `commit_interval_ms` ago — that is
    /// `fresh_batch_records`: at high rates a record then waits less in the buffer, and a
    /// smaller commit is done sooner (at 40,000 records/s L2 p99 about halved). A process that is
    /// behind, or back-filling old records, batches up to `max_batch_records`: committing more
    /// often would not help it catch up (at 80,000 records/s on two cores a flat 20,000 bound
    /// looked worse, in 2 runs). A buffer with no timestamped record counts as behind. Clock
    /// skew between the connector and this process only moves where the line falls; nothing
    /// but batch size depends on it.
    fn commit_size(&self, settings: &EnrichSettings, now_ns: i64) -> usize {
        let now_ms = now_ns / 1_000_000;
        let interval_ms = i64::try_from(settings.commit_interval_ms).unwrap_or(i64::MAX);
        let keeping_up = self
            .oldest_published_ms
            .is_some_and(|published| now_ms.saturating_sub(published) < interval_ms);
        let size = if keeping_up {
            settings.fresh_batch_records.min(settings.max_batch_records)
        } else {
            settings.max_batch_records
        };
        // Both are validated to be at least 1; an empty buffer must never be due by size.
        size.max(1)
    }
}

struct Enrich {
    job: EnrichJob,
    enricher: Enricher,
    consumer: VerifiedConsumer,
    producer: Option<RawProducer>,
    /// One JSON buffer for every published row (the producer copies each message).
    payload: Vec<u8>,
    outputs: BTreeMap<TableName, Output>,
    buffers: Buffers,
    report: EnrichReport,
    assigned_once: bool,
    last_metrics: Instant,
}

fn quarantine_undecodable(record: &ConsumedRecord, reason: String) -> QuarantineRow {
    let now = now_utc_ns();
    QuarantineRow {
        target_table: if record.topic == TOPIC_RAW_NEWS {
            crate::TARGET_NEWS.into()
        } else {
            crate::TARGET_TRADES.into()
        },
        rule: crate::RULE_PARSE.into(),
        reason: format!("raw record without marketlake headers: {reason}"),
        payload_format: "unknown".into(),
        payload: record.payload.clone(),
        received_at_ns: now,
        quarantined_at_ns: now,
        lineage: Lineage {
            source_id: "unknown".into(),
            source_uri: format!("kafka://{}/{}", record.topic, record.partition),
            source_position: record.offset,
            raw_topic: record.topic.clone(),
            raw_partition: record.partition,
            raw_offset: record.offset,
        },
    }
}

impl Enrich {
    /// Switch to the reference files' new content, if they changed. Rows enriched so far keep
    /// the version they were enriched with; a file that cannot be read now keeps the current
    /// version (logged), so a half-copied file never stops enrichment.
    async fn reload_reference(&mut self, dataset: &mut ReferenceDataset) {
        match dataset.refresh().await {
            Ok(None) => {}
            Ok(Some(master)) => {
                let version = master.version;
                match self.enricher.set_master(Some(master)) {
                    Ok(()) => {
                        tracing::info!(
                            reference_version = version,
                            "enriching with a new instrument master version"
                        );
                        self.report.reference_version = Some(version);
                    }
                    Err(error) => {
                        tracing::warn!(%error, "new instrument master refused by the rules; keeping the current one")
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "reference files could not be reloaded; keeping the current version")
            }
        }
    }

    fn on_record(&mut self, mut record: ConsumedRecord) {
        let key = PartitionKey {
            topic: record.topic.clone(),
            partition: record.partition,
        };
        let offset = record.offset;
        let published_ms = record.timestamp_ms;
        let at = KafkaPosition {
            topic: record.topic.clone(),
            partition: record.partition,
            offset,
            timestamp_ms: record.timestamp_ms,
        };
        // The payload moves into the record; it is only taken once the headers are valid, so
        // the quarantine path below still has it.
        let decoded = RawRecord::from_kafka_parts(record.headers.iter(), || {
            std::mem::take(&mut record.payload)
        });
        let mut enriched = match decoded {
            Ok(raw) => self.enricher.enrich(&raw, &at, now_utc_ns()),
            Err(e) => crate::Enriched {
                quarantine: vec![quarantine_undecodable(&record, e.to_string())],
                ..Default::default()
            },
        };
        self.report.raw_records += 1;
        if enriched.skipped.is_some() {
            self.report.skipped += 1;
        }
        let buffers = &mut self.buffers;
        for (name, output) in self.outputs.iter_mut() {
            if !output.accepts(&key, offset) {
                continue;
            }
            output.see(&key, offset);
            // Each kind of row has exactly one table: move the rows, no copies.
            if *name == L2_TRADES {
                buffers.trades.append(&mut enriched.trades);
            } else if *name == L2_NEWS {
                buffers.news.append(&mut enriched.news);
            } else {
                buffers.quarantine.append(&mut enriched.quarantine);
            }
        }
        buffers.records += 1;
        buffers.oldest.get_or_insert_with(Instant::now);
        buffers.note_published(published_ms);
    }

    fn due(&self) -> bool {
        self.buffers.records >= self.buffers.commit_size(&self.job.enrich, now_utc_ns())
            || self.buffers.oldest.is_some_and(|t| {
                t.elapsed() >= Duration::from_millis(self.job.enrich.commit_interval_ms)
            })
            || self.offsets_due()
    }

    /// A table holds offsets seen but not stored for `offsets_commit_secs` (nothing was
    /// buffered for it meanwhile). When the feed goes quiet they would otherwise wait for the
    /// next record, and a back-fill beside this process waits for every table's offsets.
    fn offsets_due(&self) -> bool {
        let every = Duration::from_secs(self.job.enrich.offsets_commit_secs);
        self.outputs
            .values()
            .any(|output| !output.spans.is_empty() && output.last_commit.elapsed() >= every)
    }

    /// Every owned partition is proven consumed to its end (true when nothing is owned: then
    /// the stored offsets of the others decide).
    fn owned_drained(&self) -> bool {
        self.consumer
            .owned()
            .iter()
            .all(|key| self.consumer.caught_up(key))
    }

    /// Queue the rows enriched since the last call to the enriched topics, each to the raw
    /// partition's number. Called after every polled batch, not only at a flush: real-time
    /// consumers see a row as soon as it is enriched, and the flush — which holds up
    /// consumption — no longer serialises and queues a whole interval's rows (at 40,000
    /// records/s that was about a third of each flush). A row published but never committed
    /// (a crash, a rebalance) is published again by whoever commits it: the topics are at
    /// least once, and a flush still confirms every delivery before the tables store offsets.
    async fn publish_pending(&mut self) -> Result<()> {
        let Some(producer) = &self.producer else {
            return Ok(());
        };
        let buffers = &mut self.buffers;
        let payload = &mut self.payload;
        for row in buffers.trades.iter().skip(buffers.published_trades) {
            json_into(payload, row);
            producer
                .send_to(
                    TOPIC_ENRICHED_TRADES,
                    Some(row.lineage.raw_partition),
                    &row.symbol,
                    payload,
                    &[],
                )
                .await?;
        }
        buffers.published_trades = buffers.trades.len();
        for row in buffers.news.iter().skip(buffers.published_news) {
            json_into(payload, row);
            let key = row
                .tickers
                .first()
                .map_or(row.news_key.as_str(), String::as_str);
            producer
                .send_to(
                    TOPIC_ENRICHED_NEWS,
                    Some(row.lineage.raw_partition),
                    key,
                    payload,
                    &[],
                )
                .await?;
        }
        buffers.published_news = buffers.news.len();
        Ok(())
    }

    /// Confirm every published row, then commit every table that has rows (or offsets it has
    /// not stored for too long, or all of them when `force`).
    async fn flush(&mut self, force: bool) -> Result<()> {
        self.publish_pending().await?;
        if let Some(producer) = &self.producer {
            producer.flush_deliveries().await?;
        }
        let Buffers {
            trades,
            news,
            quarantine,
            ..
        } = &self.buffers;
        let enriched_at = now_utc_ns();
        let offsets_every = Duration::from_secs(self.job.enrich.offsets_commit_secs);
        let names: Vec<TableName> = self.outputs.keys().copied().collect();
        let mut conflicted = false;
        for name in names {
            let rows = if name == L2_TRADES {
                trades.len()
            } else if name == L2_NEWS {
                news.len()
            } else {
                quarantine.len()
            };
            let Some(output) = self.outputs.get_mut(&name) else {
                continue;
            };
            if output.spans.is_empty() {
                continue;
            }
            if rows == 0 && !force && output.last_commit.elapsed() < offsets_every {
                // Nothing to write: keep accumulating the offsets seen, commit them later.
                continue;
            }
            // Built only for a table that commits now.
            let extra = self.enricher.extra();
            let batch = if name == L2_TRADES {
                l2::trades_batch_with(trades, enriched_at, &extra.columns(Table::Trades))?
            } else if name == L2_NEWS {
                l2::news_batch_with(news, enriched_at, &extra.columns(Table::News))?
            } else {
                l2::quarantine_batch(quarantine, enriched_at)?
            };
            let advances = output.advances();
            match output.sink.commit(batch, &advances).await? {
                CommitOutcome::Committed { version } => {
                    for (key, (_, to)) in std::mem::take(&mut output.spans) {
                        output.stored.insert(key, Some(to));
                    }
                    output.last_commit = Instant::now();
                    self.report.commits += 1;
                    if name == L2_TRADES {
                        self.report.trades += rows as u64;
                        let visible = now_utc_ns();
                        let room = MAX_LATENCY_SAMPLES
                            .saturating_sub(self.report.trade_visibility_us.len());
                        self.report.trade_visibility_us.extend(
                            trades
                                .iter()
                                .take(room)
                                .map(|t| visible.saturating_sub(t.received_at_ns) / 1_000),
                        );
                    } else if name == L2_NEWS {
                        self.report.news += rows as u64;
                    } else {
                        self.report.quarantined += rows as u64;
                    }
                    tracing::debug!(table = %name, version, rows, "committed");
                }
                CommitOutcome::Conflict { .. } => {
                    self.report.conflicts += 1;
                    conflicted = true;
                    break;
                }
            }
        }
        self.buffers.clear();
        if conflicted {
            // Another process owns some of these partitions now: forget everything buffered and
            // restart every owned partition from what the tables hold.
            tracing::warn!("another enrichment process committed these offsets; re-seeking");
            self.restart_owned().await?;
        }
        self.write_metrics(false);
        Ok(())
    }

    /// Reload the stored offsets of every table and (re)start `keys` after the smallest.
    async fn start(&mut self, keys: &[PartitionKey]) -> Result<()> {
        for output in self.outputs.values_mut() {
            output.sink.refresh().await?;
        }
        for key in keys {
            let mut resume: Option<Option<i64>> = None;
            for output in self.outputs.values_mut() {
                output.spans.remove(key);
                let stored = output.sink.stored_offset(&key.topic, key.partition).await?;
                output.stored.insert(key.clone(), stored);
                resume = Some(match resume {
                    None => stored,
                    Some(prev) => match (prev, stored) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        _ => None,
                    },
                });
            }
            let next = resume.flatten().map(|s| s + 1);
            self.consumer.start_partition(key, next).await?;
        }
        Ok(())
    }

    async fn restart_owned(&mut self) -> Result<()> {
        self.buffers.clear();
        let owned: Vec<PartitionKey> = self.consumer.owned().into_iter().collect();
        for output in self.outputs.values_mut() {
            output.spans.clear();
        }
        self.start(&owned).await
    }

    fn on_revoked(&mut self, keys: &[PartitionKey]) {
        // Rows cannot be split by partition cheaply; drop the whole buffer and restart the
        // partitions we keep (rebalances are rare).
        self.buffers.clear();
        for output in self.outputs.values_mut() {
            output.spans.clear();
            for key in keys {
                output.stored.remove(key);
            }
        }
    }

    fn write_metrics(&mut self, force: bool) {
        if !force && self.last_metrics.elapsed() < Duration::from_secs(5) {
            return;
        }
        self.last_metrics = Instant::now();
        let path =
            marketlake_lake::textfile::metrics_path(&self.job.lake, &self.job.enrich.metrics_file);
        let mut text = self.enricher.rules().prometheus_text();
        text.push_str(&format!(
            "# HELP marketlake_enrich_records_total Raw records enriched.\n# TYPE marketlake_enrich_records_total counter\nmarketlake_enrich_records_total {}\n",
            self.report.raw_records
        ));
        if let Err(e) = marketlake_lake::textfile::write_textfile(&path, &text) {
            tracing::warn!(path = %path.display(), error = %e, "could not write enrichment metrics");
        }
    }

    /// The stored offsets of `key` in every table (refresh first): `(smallest, largest)`, where
    /// a table that stored none counts as the smallest.
    async fn stored_range(&mut self, key: &PartitionKey) -> Result<(Option<i64>, Option<i64>)> {
        let mut stored = Vec::with_capacity(self.outputs.len());
        for output in self.outputs.values_mut() {
            stored.push(output.sink.stored_offset(&key.topic, key.partition).await?);
        }
        let smallest = stored.iter().copied().min().flatten();
        Ok((smallest, stored.into_iter().max().flatten()))
    }

    async fn refresh_tables(&mut self) -> Result<()> {
        for output in self.outputs.values_mut() {
            output.sink.refresh().await?;
        }
        Ok(())
    }

    /// True when every raw partition is written up to the end offsets seen at start. An owned
    /// partition must be proven caught up by the consumer (tansu 0.6 under-reports high
    /// watermarks) and committed; one owned by another member (or by nobody: see
    /// [`marketlake_kafka::group`]) must be stored by every table at least up to the end
    /// proven at start. Owning part of the partitions and draining it is not enough.
    async fn caught_up(&mut self, ends: &[(PartitionKey, i64, i64)]) -> Result<bool> {
        if !self.assigned_once || !self.owned_drained() {
            return Ok(false);
        }
        self.flush(true).await?;
        // A conflict in that flush restarts the owned partitions: not caught up after all.
        if self.buffers.records > 0 || !self.owned_drained() {
            return Ok(false);
        }
        let owned = self.consumer.owned();
        let others: Vec<&(PartitionKey, i64, i64)> = ends
            .iter()
            .filter(|(key, low, high)| !owned.contains(key) && high > low)
            .collect();
        if others.is_empty() {
            return Ok(true);
        }
        // Their owners commit meanwhile: what the tables hold now, not at start.
        self.refresh_tables().await?;
        for (key, _, high) in others {
            let (stored_by_all, _) = self.stored_range(key).await?;
            if stored_by_all.is_none_or(|s| s < high - 1) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// What waits on the raw partitions this process does not own, judged by the most advanced
    /// table: `l2.trades` moves at every commit of a live owner, while a table with nothing to
    /// write (quarantine) stores its offsets only every `offsets_commit_secs` — judged by the
    /// least advanced, a healthy owner would look stalled and make every member rejoin.
    async fn unowned(&mut self, topics: &[&str]) -> Result<Unowned> {
        let ends = self.consumer.end_offsets(topics).await?;
        let owned = self.consumer.owned();
        self.refresh_tables().await?;
        let mut unowned = Unowned::default();
        for (key, low, high) in ends {
            if !owned.contains(&key) {
                let (_, stored_by_any) = self.stored_range(&key).await?;
                unowned.add(&key, stored_by_any, low, high);
            }
        }
        Ok(unowned)
    }
}

/// `row` as JSON in `buffer`, replacing what it held (empty if it cannot be serialized).
fn json_into(buffer: &mut Vec<u8>, row: &impl serde::Serialize) {
    buffer.clear();
    if serde_json::to_writer(&mut *buffer, row).is_err() {
        buffer.clear();
    }
}

/// Run enrichment until `shutdown` fires (committing what is buffered) or, with
/// `until_caught_up`, until every raw partition is drained and committed.
pub async fn run(job: EnrichJob, shutdown: CancellationToken) -> Result<EnrichReport> {
    job.enrich.validate()?;
    job.lake.validate()?;
    let started = Instant::now();
    let mut reference = if job.enrich.reference_files.is_empty() {
        None
    } else {
        Some(ReferenceDataset::open(&job.lake, &job.enrich.reference_files).await?)
    };
    let master = match &mut reference {
        Some(dataset) => dataset.refresh().await?,
        None => None,
    };
    let reference_version = master.as_ref().map(|m| m.version);
    let enricher = Enricher::new(
        &EnricherConfig {
            rules: job.enrich.rules.clone(),
            extra_fields: job.enrich.extra_fields.clone(),
        },
        master,
    )?;
    let topics = [TOPIC_RAW_TRADES, TOPIC_RAW_NEWS];
    // A back-fill's ends are proven before joining the group (the member is not polled
    // meanwhile, and would hold up the group's rebalances).
    let ends = if job.until_caught_up {
        let ends =
            VerifiedConsumer::proven_end_offsets(&job.kafka, &job.enrich.group, &topics).await?;
        tracing::info!(
            partitions = ends.len(),
            ?ends,
            "draining to the end offsets seen at start"
        );
        ends
    } else {
        Vec::new()
    };
    let mut consumer = VerifiedConsumer::subscribe(&job.kafka, &job.enrich.group, &topics)?;
    if job.until_caught_up {
        consumer.set_stall_after(Duration::from_millis(500));
    }
    let producer = if job.enrich.publish {
        Some(RawProducer::new(&job.kafka)?)
    } else {
        None
    };
    let mut outputs = BTreeMap::new();
    for spec in l2_specs_with(enricher.extra()) {
        let name = spec.name;
        let sink = ExactlyOnceSink::open(&job.lake, spec, SINK_NAME).await?;
        outputs.insert(
            name,
            Output {
                sink,
                spans: BTreeMap::new(),
                stored: HashMap::new(),
                last_commit: Instant::now(),
            },
        );
    }
    let mut enrich = Enrich {
        job,
        enricher,
        consumer,
        producer,
        payload: Vec::with_capacity(1_024),
        outputs,
        buffers: Buffers::default(),
        report: EnrichReport {
            reference_version,
            ..Default::default()
        },
        assigned_once: false,
        last_metrics: Instant::now(),
    };
    let mut group_watch =
        GroupWatch::new(Duration::from_secs(enrich.job.enrich.rejoin_when_idle_secs));
    let mut last_drain_check = Instant::now();
    let mut last_reference_check = Instant::now();
    let reference_every = Duration::from_secs(enrich.job.enrich.reference_check_secs);
    loop {
        if let Some(dataset) = reference.as_mut() {
            if last_reference_check.elapsed() >= reference_every {
                last_reference_check = Instant::now();
                enrich.reload_reference(dataset).await;
            }
        }
        if shutdown.is_cancelled() {
            enrich.flush(true).await?;
            tracing::info!("enrichment stopped on request; buffers committed");
            break;
        }
        let polled = tokio::select! {
            polled = enrich.consumer.poll_batch(Duration::from_millis(100), POLL_BATCH) => polled?,
            _ = shutdown.cancelled() => continue,
        };
        match polled {
            Polled::Record(records) => {
                for record in records {
                    enrich.on_record(record);
                }
                enrich.publish_pending().await?;
            }
            Polled::Assigned(keys) => {
                tracing::info!(partitions = ?keys, "partitions assigned");
                enrich.assigned_once = true;
                enrich.flush(true).await?;
                enrich.start(&keys).await?;
            }
            Polled::Revoked(keys) => {
                tracing::info!(partitions = ?keys, "partitions revoked");
                enrich.on_revoked(&keys);
                // The buffer held rows of the partitions kept too: re-read them from what the
                // tables hold (an incremental rebalance keeps them flowing).
                enrich.restart_owned().await?;
            }
            Polled::Idle => {}
        }
        if enrich.due() {
            enrich.flush(false).await?;
        }
        if enrich.job.until_caught_up && last_drain_check.elapsed() >= Duration::from_millis(250) {
            last_drain_check = Instant::now();
            if enrich.caught_up(&ends).await? {
                tracing::info!("enrichment caught up");
                break;
            }
        }
        if group_watch.due() {
            let unowned = enrich.unowned(&topics).await;
            if group_watch.should_rejoin(unowned) {
                enrich.flush(true).await?;
                // Rejoining gives up every partition, as a revocation of all of them would.
                let owned = enrich.consumer.owned();
                enrich.on_revoked(&owned);
                enrich
                    .consumer
                    .rejoin(&enrich.job.kafka, &enrich.job.enrich.group, &topics)?;
            }
        }
    }
    enrich.write_metrics(true);
    if let Some(producer) = &enrich.producer {
        producer.close(Duration::from_secs(10))?;
    }
    enrich.report.elapsed = started.elapsed();
    Ok(enrich.report)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;

    fn published(times_ms: &[Option<i64>]) -> Buffers {
        let mut buffers = Buffers::default();
        for &t in times_ms {
            buffers.note_published(t);
        }
        buffers
    }

    #[test]
    fn a_buffer_of_recent_records_commits_at_the_fresh_bound_and_a_lagging_one_at_the_max() {
        let settings = EnrichSettings {
            max_batch_records: 50_000,
            fresh_batch_records: 5_000,
            commit_interval_ms: 1_000,
            ..EnrichSettings::default()
        };
        let now_ms = 1_700_000_000_000;
        let now_ns = now_ms * MS;
        let size = |times: &[Option<i64>]| published(times).commit_size(&settings, now_ns);
        assert_eq!(size(&[Some(now_ms - 400)]), 5_000);
        assert_eq!(size(&[Some(now_ms - 5_000)]), 50_000);
        assert_eq!(
            size(&[Some(now_ms - 1_000)]),
            50_000,
            "one interval old: behind"
        );
        assert_eq!(
            size(&[Some(now_ms + 3_000)]),
            5_000,
            "skewed into the future"
        );
        // The oldest decides, whatever the order; records without a timestamp are ignored
        // beside timestamped ones, and a buffer of only those counts as behind.
        assert_eq!(
            size(&[Some(now_ms - 100), None, Some(now_ms - 4_000), Some(now_ms)]),
            50_000
        );
        assert_eq!(size(&[None, Some(now_ms - 100), None]), 5_000);
        assert_eq!(size(&[None, None]), 50_000);
        assert_eq!(size(&[]), 50_000);
        // Cleared, the buffer forgets its oldest record.
        let mut buffers = published(&[Some(now_ms - 4_000)]);
        buffers.clear();
        buffers.note_published(Some(now_ms - 10));
        assert_eq!(buffers.commit_size(&settings, now_ns), 5_000);
        // The fresh bound never exceeds the hard one.
        let small = EnrichSettings {
            max_batch_records: 3_000,
            ..settings.clone()
        };
        assert_eq!(
            published(&[Some(now_ms)]).commit_size(&small, now_ns),
            3_000
        );
    }

    #[test]
    fn a_zero_fresh_batch_is_refused_naming_the_setting() {
        let settings = EnrichSettings {
            fresh_batch_records: 0,
            ..EnrichSettings::default()
        };
        let error = settings.validate().err().map(|e| e.to_string());
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.contains("enrich.fresh_batch_records")),
            "{error:?}"
        );
    }
}
