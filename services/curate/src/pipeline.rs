//! The curation service: `enriched.trades` / `enriched.news` → `l3.bars_<interval>`,
//! `l3.late_records` and `l3.news_trade_windows`, in event time, exactly once.
//!
//! The windows hold state (open bars, trade history, pending news), so exactly once needs the
//! state, the consumed offsets and the rows written to agree after any crash. The loop works in
//! numbered **cycles**:
//! 1. consume for a while, feeding the aggregators through a [`Curator`] (which also records
//!    each input for the journal); drain what fired;
//! 2. append the cycle's journal entry — its inputs, the next offset of every partition, and
//!    the rows drained in this cycle (the *outbox*) — and `fdatasync` it ([`StateStore`]; the
//!    whole state is written only by compaction, on its own thread);
//! 3. commit each table's outbox rows with a Delta `txn` (app id `l3-curate:cycle:0`,
//!    version `n`).
//!
//! On start the state directory is recovered (newest snapshot plus the journal after it):
//! tables whose stored cycle is below the recovered cycle get its outbox rows (the crash fell
//! between steps 2 and 3), and consumption resumes at its offsets. A record consumed again
//! after a crash is also filtered by the aggregators' own replay filter (highest raw offset
//! applied per raw partition), which is what makes the at-least-once enriched topics safe to
//! read. One curator runs per lake (it is the single writer of its state directory), and it
//! reads every partition of both topics by assignment, not through a consumer group: its
//! windows span all partitions, so a group's partial assignment could only do harm.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use marketlake_kafka::{KafkaConfig, PartitionKey, Polled, VerifiedConsumer, POLL_BATCH};
use marketlake_lake::{CommitOutcome, ExactlyOnceSink, LakeConfig, OffsetAdvance, TableSpec};
use marketlake_schemas::l2::NewsRow;
use marketlake_schemas::l3::{self, BarRow};
use marketlake_schemas::names::{
    l3_bars, TableName, L3_LATE_RECORDS, L3_NEWS_TRADE_WINDOWS, TOPIC_ENRICHED_NEWS,
    TOPIC_ENRICHED_TRADES,
};
use marketlake_schemas::now_utc_ns;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::persist::{CompactionPolicy, Curator, StateStore};
use crate::state::{CycleEnd, Outbox, StateSizes};
use crate::{BarConfig, CurateError, NewsWindowConfig};

/// The `txn` app id prefix of this service.
pub const SINK_NAME: &str = "l3-curate";
/// The pseudo-partition the cycle number is stored under.
const CYCLE_TOPIC: &str = "cycle";

/// `[curate]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CurateSettings {
    /// The client's `group.id`. The curator joins no group (it assigns itself every
    /// partition); the name only identifies its connections on the broker.
    pub group: String,
    /// A cycle (journal entry + commits) ends at least this often while records flow.
    pub commit_interval_ms: u64,
    /// When no record arrived for this long, the watermark moves to the newest event time seen
    /// (the out-of-orderness allowance is waived: a quiet feed must not hold bars back for ever).
    pub idle_advance_secs: u64,
    /// Where the curator state lives (journal segments and a snapshot, see [`crate::persist`]),
    /// relative to the lake root when relative.
    pub state_dir: PathBuf,
    /// Deprecated and ignored (still accepted so existing configurations load). It spaced out
    /// saves of the whole state; every cycle that consumed records now journals just those
    /// records, which costs little enough to do every cycle.
    pub state_every_secs: u64,
    /// Where curation's counters and state sizes are written as Prometheus text
    /// (textfile-collector format, every 5 s), relative to the lake root when relative.
    pub metrics_file: PathBuf,
    pub bars: BarConfig,
    pub news_windows: NewsWindowConfig,
}

impl Default for CurateSettings {
    fn default() -> Self {
        CurateSettings {
            group: "marketlake-curate".into(),
            commit_interval_ms: 1_000,
            idle_advance_secs: 10,
            state_dir: PathBuf::from("_state/curate"),
            state_every_secs: 30,
            metrics_file: PathBuf::from("_metrics/curate.prom"),
            bars: BarConfig::default(),
            news_windows: NewsWindowConfig::default(),
        }
    }
}

impl CurateSettings {
    pub fn validate(&self) -> Result<()> {
        let bad = |setting: &str, message: &str| CurateError::Config {
            setting: format!("curate.{setting}"),
            message: message.into(),
        };
        if self.group.trim().is_empty() {
            return Err(bad("group", "must not be empty"));
        }
        if !(10..=600_000).contains(&self.commit_interval_ms) {
            return Err(bad(
                "commit_interval_ms",
                "must be between 10 and 600000 milliseconds",
            ));
        }
        if self.idle_advance_secs == 0 {
            return Err(bad("idle_advance_secs", "must be at least 1"));
        }
        self.bars.validate().map_err(|e| match e {
            CurateError::Config { setting, message } => CurateError::Config {
                setting: format!("curate.bars.{setting}"),
                message,
            },
            other => other,
        })?;
        self.news_windows.validate().map_err(|e| match e {
            CurateError::Config { setting, message } => CurateError::Config {
                setting: format!("curate.news_windows.{setting}"),
                message,
            },
            other => other,
        })?;
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Curate(#[from] CurateError),
    #[error(transparent)]
    Kafka(#[from] marketlake_kafka::KafkaError),
    #[error(transparent)]
    Lake(#[from] marketlake_lake::LakeError),
    #[error(transparent)]
    Schema(#[from] marketlake_schemas::SchemaError),
    #[error("curator state {path}: {message}")]
    State { path: String, message: String },
    #[error("table {table}: another curator committed cycle {stored:?} (expected {expected:?}); run one curator per lake")]
    Conflict {
        table: String,
        stored: Option<i64>,
        expected: Option<i64>,
    },
}

type Result<T, E = CurateError> = std::result::Result<T, E>;
type PResult<T> = std::result::Result<T, PipelineError>;

#[derive(Debug, Clone)]
pub struct CurateJob {
    pub kafka: KafkaConfig,
    pub lake: LakeConfig,
    pub curate: CurateSettings,
    /// Drain the enriched topics to their ends, fire every window (a back-fill), then exit.
    pub until_caught_up: bool,
}

#[derive(Debug, Clone, Default)]
pub struct CurateReport {
    pub trades: u64,
    pub news: u64,
    pub duplicates: u64,
    pub bars: u64,
    pub late: u64,
    pub windows: u64,
    pub cycles: u64,
    pub elapsed: Duration,
    /// With `until_caught_up`: when every record was consumed and every window fired and
    /// committed (`elapsed` adds the wait for a background state snapshot still being written).
    pub caught_up_after: Option<Duration>,
    /// Watermark passing a bar's end → the bar visible in its table, microseconds (event-time
    /// lag excluded: measured from the moment the watermark made the window fire).
    pub bar_visibility_us: Vec<i64>,
    /// Per bar row written: (window end, visible at), UTC ns.
    pub bar_closes: Vec<(i64, i64)>,
}

const METRICS_EVERY: Duration = Duration::from_secs(5);

/// The textfile [`Curate::write_metrics`] writes.
fn metrics_text(report: &CurateReport, sizes: &StateSizes, cycle: i64) -> String {
    let mut text = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
        text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, value) in samples {
            text.push_str(&format!("{name}{labels} {value}\n"));
        }
    };
    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    metric(
        "marketlake_curate_records_total",
        "counter",
        "Enriched records curated since start (replays included).",
        &[
            ("{kind=\"trade\"}", report.trades),
            ("{kind=\"news\"}", report.news),
        ],
    );
    metric(
        "marketlake_curate_duplicates_total",
        "counter",
        "Replayed trades skipped by raw position since start.",
        &[("", report.duplicates)],
    );
    metric(
        "marketlake_curate_rows_total",
        "counter",
        "Rows committed to the L3 tables since start.",
        &[
            ("{table=\"bars\"}", report.bars),
            ("{table=\"late_records\"}", report.late),
            ("{table=\"news_trade_windows\"}", report.windows),
        ],
    );
    metric(
        "marketlake_curate_cycle",
        "gauge",
        "The curator's last journaled cycle.",
        &[("", u64::try_from(cycle).unwrap_or(0))],
    );
    metric(
        "marketlake_curate_held_trades",
        "gauge",
        "Trades held in memory by the open bar windows (each once, however many intervals hold it) and by the news windows' history. Curation's memory grows with these.",
        &[
            ("{state=\"bars\"}", count(sizes.bar_trades)),
            ("{state=\"news_history\"}", count(sizes.history_trades)),
        ],
    );
    metric(
        "marketlake_curate_open_windows",
        "gauge",
        "Bar windows not yet final, and news windows waiting for the watermark.",
        &[
            ("{kind=\"bar\"}", count(sizes.open_bar_windows)),
            ("{kind=\"news\"}", count(sizes.pending_news_windows)),
        ],
    );
    metric(
        "marketlake_curate_symbols",
        "gauge",
        "Symbols with bar state.",
        &[("", count(sizes.symbols))],
    );
    text
}

fn partition_label(key: &PartitionKey) -> String {
    format!("{}:{}", key.topic, key.partition)
}

/// The L3 table specs for the configured bar intervals.
pub fn l3_specs(settings: &CurateSettings) -> Vec<TableSpec> {
    let mut specs: Vec<TableSpec> = settings
        .bars
        .intervals_secs
        .iter()
        .map(|&secs| TableSpec {
            name: l3_bars(secs),
            schema: l3::bars_schema(),
            partition_columns: vec![l3::WINDOW_PARTITION_COLUMN.into()],
            description:
                "OHLCV/VWAP bars in event time; the highest revision of a window is its value",
        })
        .collect();
    specs.push(TableSpec {
        name: L3_LATE_RECORDS,
        schema: l3::late_records_schema(),
        partition_columns: vec![l3::WINDOW_PARTITION_COLUMN.into()],
        description: "trades that arrived after their bar window was final",
    });
    specs.push(TableSpec {
        name: L3_NEWS_TRADE_WINDOWS,
        schema: l3::news_trade_windows_schema(),
        partition_columns: vec![l3::ANCHOR_PARTITION_COLUMN.into()],
        description: "trading activity before and after each news item, per ticker",
    });
    specs
}

struct Curate {
    job: CurateJob,
    consumer: VerifiedConsumer,
    /// The window state, and the inputs the next journal entry records.
    curator: Curator,
    sinks: BTreeMap<TableName, (ExactlyOnceSink, Option<i64>)>,
    /// Bars table → its interval in seconds.
    bar_tables: BTreeMap<TableName, i64>,
    store: StateStore,
    report: CurateReport,
    last_record: Instant,
    last_metrics: Option<Instant>,
}

impl Curate {
    fn on_record(&mut self, record: marketlake_kafka::ConsumedRecord) -> PResult<()> {
        let key = PartitionKey {
            topic: record.topic.clone(),
            partition: record.partition,
        };
        self.curator
            .consumed(&partition_label(&key), record.offset + 1);
        self.last_record = Instant::now();
        if record.topic == TOPIC_ENRICHED_TRADES {
            match crate::input::decode_enriched_trade(&record.payload) {
                Ok(trade) => {
                    self.report.trades += 1;
                    let disposition = self.curator.trade(&trade)?;
                    if disposition == crate::Disposition::Duplicate {
                        self.report.duplicates += 1;
                    }
                }
                Err(e) => {
                    tracing::warn!(partition = %key, offset = record.offset, error = %e, "enriched trade is not a TradeRow; skipped")
                }
            }
        } else {
            match serde_json::from_slice::<NewsRow>(&record.payload) {
                Ok(news) => {
                    self.report.news += 1;
                    self.curator.news(&news)?;
                }
                Err(e) => {
                    tracing::warn!(partition = %key, offset = record.offset, error = %e, "enriched news is not a NewsRow; skipped")
                }
            }
        }
        Ok(())
    }

    /// Drain, journal the cycle with its outbox, commit the outbox. `final_fire` fires every
    /// window first (end of a back-fill). A cycle that consumed nothing and drained nothing
    /// writes nothing.
    async fn cycle(&mut self, final_fire: bool) -> PResult<()> {
        let end = CycleEnd {
            idle: self.last_record.elapsed()
                >= Duration::from_secs(self.job.curate.idle_advance_secs),
            final_fire,
            now_ns: now_utc_ns(),
        };
        let Some(entry) = self.curator.end_cycle(end) else {
            return Ok(());
        };
        // Encoding and fdatasync block (briefly: the entry is this cycle's input): keep them off
        // the async workers' hot path.
        tokio::task::block_in_place(|| self.store.append(&entry, &self.curator))?;
        self.commit_outbox(entry.cycle(), entry.outbox()).await
    }

    /// Counters and state sizes as Prometheus text, at most every 5 s unless `force`. The held
    /// trades are what curation's memory grows with (README, *Limits*): watch them.
    fn write_metrics(&mut self, force: bool) {
        if !force
            && self
                .last_metrics
                .is_some_and(|t| t.elapsed() < METRICS_EVERY)
        {
            return;
        }
        self.last_metrics = Some(Instant::now());
        let file =
            marketlake_lake::textfile::metrics_path(&self.job.lake, &self.job.curate.metrics_file);
        let text = metrics_text(
            &self.report,
            &self.curator.state().sizes(),
            self.curator.cycle(),
        );
        if let Err(e) =
            tokio::task::block_in_place(|| marketlake_lake::textfile::write_textfile(&file, &text))
        {
            tracing::warn!(path = %file.display(), error = %e, "could not write curation metrics");
        }
    }

    /// Commit the outbox of `cycle` to every table that does not hold that cycle yet.
    async fn commit_outbox(&mut self, cycle: i64, outbox: &Outbox) -> PResult<()> {
        let names: Vec<TableName> = self.sinks.keys().copied().collect();
        for name in names {
            let batch = if name == L3_LATE_RECORDS {
                if outbox.late.is_empty() {
                    continue;
                }
                l3::late_records_batch(&outbox.late)?
            } else if name == L3_NEWS_TRADE_WINDOWS {
                if outbox.windows.is_empty() {
                    continue;
                }
                l3::news_trade_windows_batch(&outbox.windows)?
            } else {
                let interval = self.bar_tables.get(&name).copied();
                let rows: Vec<BarRow> = outbox
                    .bars
                    .iter()
                    .filter(|bar| Some(bar.interval_secs) == interval)
                    .cloned()
                    .collect();
                if rows.is_empty() {
                    continue;
                }
                l3::bars_batch(&rows)?
            };
            let Some((sink, stored)) = self.sinks.get_mut(&name) else {
                continue;
            };
            if stored.is_some_and(|s| s >= cycle) {
                continue;
            }
            let rows = batch.num_rows();
            let advance = OffsetAdvance {
                topic: CYCLE_TOPIC.into(),
                partition: 0,
                from: *stored,
                to: cycle,
            };
            match sink.commit(batch, &[advance]).await? {
                CommitOutcome::Committed { version } => {
                    *stored = Some(cycle);
                    tracing::debug!(table = %name, version, rows, cycle = cycle, "committed");
                    if name == L3_LATE_RECORDS {
                        self.report.late += rows as u64;
                    } else if name == L3_NEWS_TRADE_WINDOWS {
                        self.report.windows += rows as u64;
                    } else {
                        self.report.bars += rows as u64;
                        let visible = now_utc_ns();
                        let interval = self.bar_tables.get(&name).copied();
                        for bar in outbox
                            .bars
                            .iter()
                            .filter(|bar| Some(bar.interval_secs) == interval)
                        {
                            self.report
                                .bar_visibility_us
                                .push((visible - bar.fired_at_ns) / 1_000);
                            self.report.bar_closes.push((bar.window_end_ns, visible));
                        }
                    }
                }
                CommitOutcome::Conflict {
                    stored, expected, ..
                } => {
                    return Err(PipelineError::Conflict {
                        table: name.to_string(),
                        stored,
                        expected,
                    })
                }
            }
        }
        self.report.cycles += 1;
        Ok(())
    }
}

/// Run curation until `shutdown` (ending the current cycle) or, with `until_caught_up`, until
/// the enriched topics are drained and every window has fired.
pub async fn run(job: CurateJob, shutdown: CancellationToken) -> PResult<CurateReport> {
    job.curate.validate()?;
    job.lake.validate()?;
    let started = Instant::now();
    let state_dir = if job.curate.state_dir.is_absolute() {
        job.curate.state_dir.clone()
    } else {
        job.lake.root.join(&job.curate.state_dir)
    };
    let state_error = |path: &std::path::Path, e: std::io::Error| PipelineError::State {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    // One curator per lake: an exclusive lock on the state directory, held for the whole run
    // (released by the OS if the process dies).
    std::fs::create_dir_all(&state_dir).map_err(|e| state_error(&state_dir, e))?;
    let lock_path = state_dir.join(".lock");
    let lock = std::fs::File::create(&lock_path).map_err(|e| state_error(&lock_path, e))?;
    if let Err(e) = lock.try_lock() {
        return Err(PipelineError::State {
            path: lock_path.display().to_string(),
            message: format!(
                "another curator is running on this lake ({e}); run one curator per lake"
            ),
        });
    }
    let mut sinks = BTreeMap::new();
    for spec in l3_specs(&job.curate) {
        let name = spec.name;
        let mut sink = ExactlyOnceSink::open(&job.lake, spec, SINK_NAME).await?;
        sink.refresh().await?;
        let stored = sink.stored_offset(CYCLE_TOPIC, 0).await?;
        sinks.insert(name, (sink, stored));
    }
    // Reading the snapshot and replaying the journal after it blocks for a while.
    let (store, recovered) = tokio::task::block_in_place(|| {
        StateStore::open(
            &state_dir,
            job.curate.bars.clone(),
            job.curate.news_windows.clone(),
            CompactionPolicy::default(),
        )
    })?;
    let cycle = recovered.cycle;
    if cycle > 0 {
        tracing::info!(cycle, "curator state recovered");
    }
    // The tables must not be ahead of the state: a lost or stale state directory (or a second
    // curator) would otherwise skip cycles already committed and emit their windows again.
    let newest_stored = sinks.values().filter_map(|(_, stored)| *stored).max();
    if let Some(stored) = newest_stored {
        if stored > cycle {
            return Err(PipelineError::State {
                path: state_dir.display().to_string(),
                message: format!(
                    "the L3 tables hold cycle {stored} but the curator state ends at cycle {cycle}: the state directory was lost, restored from an older copy, or belongs to another curator; restore it (setting `curate.state_dir`) rather than starting over"
                ),
            });
        }
    }
    let bar_tables = job
        .curate
        .bars
        .intervals_secs
        .iter()
        .map(|&secs| (l3_bars(secs), i64::try_from(secs).unwrap_or(i64::MAX)))
        .collect();
    let crate::Recovered {
        state,
        cycle,
        offsets,
        outbox,
    } = recovered;
    // Every partition, without a consumer group: the windows span all of them, and a group
    // could leave this process a part (after crashes a restarted member was seen holding some
    // partitions for a minute) — a back-fill would then end, and fire every window, on that part.
    let topics = [TOPIC_ENRICHED_TRADES, TOPIC_ENRICHED_NEWS];
    let mut consumer = VerifiedConsumer::assign(&job.kafka, &job.curate.group, &topics, |key| {
        offsets.get(&partition_label(key)).copied()
    })
    .await?;
    if job.until_caught_up {
        consumer.set_stall_after(Duration::from_millis(500));
    }
    let mut curate = Curate {
        job,
        consumer,
        curator: Curator::resume(state, cycle, offsets),
        sinks,
        bar_tables,
        store,
        report: CurateReport::default(),
        last_record: Instant::now(),
        last_metrics: None,
    };
    if cycle > 0 {
        // The crash may have fallen between the journal entry and the commits: finish them.
        curate.commit_outbox(cycle, &outbox).await?;
    }
    let interval = Duration::from_millis(curate.job.curate.commit_interval_ms);
    let mut last_cycle = Instant::now();
    let mut last_drain_check = Instant::now();
    loop {
        if shutdown.is_cancelled() {
            curate.cycle(false).await?;
            tracing::info!("curation stopped on request; state saved");
            break;
        }
        let polled = tokio::select! {
            polled = curate.consumer.poll_batch(Duration::from_millis(100), POLL_BATCH) => polled?,
            _ = shutdown.cancelled() => continue,
        };
        match polled {
            Polled::Record(records) => {
                for record in records {
                    curate.on_record(record)?;
                }
            }
            // Never reported to an assigned (group-less) consumer.
            Polled::Assigned(_) | Polled::Revoked(_) => {}
            Polled::Idle => {}
        }
        if last_cycle.elapsed() >= interval {
            last_cycle = Instant::now();
            curate.cycle(false).await?;
            // Also while idle: the gauges then say the state is idle, not what it was.
            curate.write_metrics(false);
        }
        if curate.job.until_caught_up && last_drain_check.elapsed() >= Duration::from_millis(250) {
            last_drain_check = Instant::now();
            if curate.consumer.drained() {
                curate.cycle(true).await?;
                curate.report.caught_up_after = Some(started.elapsed());
                tracing::info!("curation caught up; every window fired");
                break;
            }
        }
    }
    // A compaction still running finishes under the lock (its snapshot is then the next
    // start's base); waiting costs at most one snapshot write.
    tokio::task::block_in_place(|| curate.store.finish_compaction())?;
    curate.write_metrics(true);
    curate.report.elapsed = started.elapsed();
    drop(lock);
    Ok(curate.report)
}
