//! The curation service: `enriched.trades` / `enriched.news` → `l3.bars_<interval>`,
//! `l3.late_records` and `l3.news_trade_windows`, in event time, exactly once.
//!
//! The windows hold state (open bars, trade history, pending news), so exactly once needs the
//! state, the consumed offsets and the rows written to agree after any crash. The loop works in
//! numbered **cycles**:
//! 1. consume for a while, feeding the aggregators; drain what fired;
//! 2. write a state file `cycle-<n>.json` (write, fsync, rename) holding the aggregators' state,
//!    the next offset of every partition, and the rows drained in this cycle (the *outbox*);
//! 3. commit each table's outbox rows with a Delta `txn` (app id `l3-curate:cycle:0`,
//!    version `n`).
//!
//! On start the newest state file wins: tables whose stored cycle is below it get its outbox
//! rows (the crash fell between steps 2 and 3), the aggregators are restored and consumption
//! resumes at its offsets. A record consumed again after a crash is also filtered by the
//! aggregators' own replay filter (highest raw offset applied per raw partition), which is what
//! makes the at-least-once enriched topics safe to read. One curator runs per lake (it is a
//! single-writer of its state); older state files are pruned, keeping the last few.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use marketlake_kafka::{KafkaConfig, PartitionKey, Polled, VerifiedConsumer};
use marketlake_lake::{CommitOutcome, ExactlyOnceSink, LakeConfig, OffsetAdvance, TableSpec};
use marketlake_schemas::l2::{NewsRow, TradeRow};
use marketlake_schemas::l3::{self, BarRow, LateRecordRow, NewsTradeWindowRow};
use marketlake_schemas::names::{
    l3_bars, TableName, L3_LATE_RECORDS, L3_NEWS_TRADE_WINDOWS, TOPIC_ENRICHED_NEWS,
    TOPIC_ENRICHED_TRADES,
};
use marketlake_schemas::now_utc_ns;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::{
    AggregatorState, BarAggregator, BarConfig, CurateError, NewsTradeWindows, NewsWindowConfig,
    NewsWindowsState,
};

/// The `txn` app id prefix of this service.
pub const SINK_NAME: &str = "l3-curate";
/// The pseudo-partition the cycle number is stored under.
const CYCLE_TOPIC: &str = "cycle";
/// State files kept (the newest is the one that counts; the others help a post-mortem).
const STATE_FILES_KEPT: usize = 3;

/// `[curate]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CurateSettings {
    pub group: String,
    /// A cycle (state file + commits) ends at least this often while records flow.
    pub commit_interval_ms: u64,
    /// When no record arrived for this long, the watermark moves to the newest event time seen
    /// (the out-of-orderness allowance is waived: a quiet feed must not hold bars back for ever).
    pub idle_advance_secs: u64,
    /// Where state files live, relative to the lake root when relative.
    pub state_dir: PathBuf,
    /// A cycle that drained nothing saves no state (nothing to commit) unless the last save is
    /// this old: it bounds how much is re-read from the enriched topics after a crash, while
    /// saving only when rows fire keeps the cost of large window state off the common path.
    pub state_every_secs: u64,
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
        if self.state_every_secs == 0 {
            return Err(bad("state_every_secs", "must be at least 1"));
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
    /// Watermark passing a bar's end → the bar visible in its table, microseconds (event-time
    /// lag excluded: measured from the moment the watermark made the window fire).
    pub bar_visibility_us: Vec<i64>,
    /// Per bar row written: (window end, visible at), UTC ns.
    pub bar_closes: Vec<(i64, i64)>,
}

/// Rows drained in one cycle, per table.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Outbox {
    bars: Vec<BarRow>,
    late: Vec<LateRecordRow>,
    windows: Vec<NewsTradeWindowRow>,
}

/// Everything the curator needs to resume, written before the cycle's commits.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CycleState {
    cycle: i64,
    /// Next offset to consume per `topic:partition`.
    offsets: BTreeMap<String, i64>,
    /// Per symbol.
    bars: BTreeMap<String, AggregatorState>,
    /// Per ticker.
    news: BTreeMap<String, NewsWindowsState>,
    outbox: Outbox,
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

struct StateStore {
    dir: PathBuf,
}

impl StateStore {
    fn path(&self, cycle: i64) -> PathBuf {
        self.dir.join(format!("cycle-{cycle:012}.json"))
    }

    fn cycles(&self) -> PResult<Vec<i64>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.error(&self.dir, e)),
        };
        let mut cycles: Vec<i64> = entries
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                name.strip_prefix("cycle-")?
                    .strip_suffix(".json")?
                    .parse()
                    .ok()
            })
            .collect();
        cycles.sort_unstable();
        Ok(cycles)
    }

    fn error(&self, path: &Path, e: impl std::fmt::Display) -> PipelineError {
        PipelineError::State {
            path: path.display().to_string(),
            message: e.to_string(),
        }
    }

    fn load_latest(&self) -> PResult<Option<CycleState>> {
        let Some(&latest) = self.cycles()?.last() else {
            return Ok(None);
        };
        let path = self.path(latest);
        let bytes = std::fs::read(&path).map_err(|e| self.error(&path, e))?;
        let state: CycleState = serde_json::from_slice(&bytes).map_err(|e| {
            self.error(
                &path,
                format!("{e}; the file is written atomically, so this is not a torn write: restore it from a backup or move it aside to rebuild from the enriched topics"),
            )
        })?;
        Ok(Some(state))
    }

    /// Write atomically (temp file, fsync, rename, fsync the directory), then prune.
    fn save(&self, state: &CycleState) -> PResult<()> {
        std::fs::create_dir_all(&self.dir).map_err(|e| self.error(&self.dir, e))?;
        let path = self.path(state.cycle);
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec(state).map_err(|e| self.error(&path, e))?;
        let mut file = std::fs::File::create(&tmp).map_err(|e| self.error(&tmp, e))?;
        file.write_all(&bytes).map_err(|e| self.error(&tmp, e))?;
        file.sync_all().map_err(|e| self.error(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| self.error(&path, e))?;
        if let Ok(dir) = std::fs::File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        let cycles = self.cycles()?;
        if cycles.len() > STATE_FILES_KEPT {
            for old in &cycles[..cycles.len() - STATE_FILES_KEPT] {
                let _ = std::fs::remove_file(self.path(*old));
            }
        }
        Ok(())
    }
}

struct Curate {
    job: CurateJob,
    consumer: VerifiedConsumer,
    /// One aggregator per symbol: each symbol's bars follow that symbol's own event-time clock
    /// (a per-key watermark). Feeds replay different days, years apart; one global watermark
    /// made a whole feed "late" as soon as another feed's newer trades moved it.
    bars: BTreeMap<String, BarAggregator>,
    /// One per ticker, fed that ticker's trades and its news items.
    windows: BTreeMap<String, NewsTradeWindows>,
    sinks: BTreeMap<TableName, (ExactlyOnceSink, Option<i64>)>,
    /// Bars table → its interval in seconds.
    bar_tables: BTreeMap<TableName, i64>,
    store: StateStore,
    cycle: i64,
    /// Next offset per partition (what the state file records).
    offsets: BTreeMap<String, i64>,
    report: CurateReport,
    assigned_once: bool,
    last_record: Instant,
    last_save: Instant,
    consumed_since_cycle: u64,
}

impl Curate {
    fn bars_of(&mut self, symbol: &str) -> PResult<&mut BarAggregator> {
        if !self.bars.contains_key(symbol) {
            let aggregator = BarAggregator::new(self.job.curate.bars.clone())?;
            self.bars.insert(symbol.to_string(), aggregator);
        }
        self.bars.get_mut(symbol).ok_or_else(|| {
            PipelineError::Curate(CurateError::State(format!("no aggregator for {symbol}")))
        })
    }

    fn windows_of(&mut self, ticker: &str) -> PResult<&mut NewsTradeWindows> {
        if !self.windows.contains_key(ticker) {
            let windows = NewsTradeWindows::new(self.job.curate.news_windows.clone())?;
            self.windows.insert(ticker.to_string(), windows);
        }
        self.windows.get_mut(ticker).ok_or_else(|| {
            PipelineError::Curate(CurateError::State(format!("no windows for {ticker}")))
        })
    }

    fn on_record(&mut self, record: marketlake_kafka::ConsumedRecord) -> PResult<()> {
        let key = PartitionKey {
            topic: record.topic.clone(),
            partition: record.partition,
        };
        self.offsets
            .insert(partition_label(&key), record.offset + 1);
        self.last_record = Instant::now();
        self.consumed_since_cycle += 1;
        if record.topic == TOPIC_ENRICHED_TRADES {
            match serde_json::from_slice::<TradeRow>(&record.payload) {
                Ok(trade) => {
                    self.report.trades += 1;
                    let disposition = self.bars_of(&trade.symbol)?.process_trade(&trade);
                    if disposition == crate::Disposition::Duplicate {
                        self.report.duplicates += 1;
                    }
                    // Every symbol keeps its recent trades: news about it may come later and
                    // asks for the trading before its published time.
                    self.windows_of(&trade.symbol)?.process_trade(&trade);
                }
                Err(e) => {
                    tracing::warn!(partition = %key, offset = record.offset, error = %e, "enriched trade is not a TradeRow; skipped")
                }
            }
        } else {
            match serde_json::from_slice::<NewsRow>(&record.payload) {
                Ok(news) => {
                    self.report.news += 1;
                    for ticker in &news.tickers {
                        let mut single = news.clone();
                        single.tickers = vec![ticker.clone()];
                        self.windows_of(ticker)?.process_news(&single);
                    }
                }
                Err(e) => {
                    tracing::warn!(partition = %key, offset = record.offset, error = %e, "enriched news is not a NewsRow; skipped")
                }
            }
        }
        Ok(())
    }

    /// Drain, save the state with the outbox, commit the outbox. `final_fire` fires every
    /// window first (end of a back-fill).
    async fn cycle(&mut self, final_fire: bool, force_save: bool) -> PResult<()> {
        let idle =
            self.last_record.elapsed() >= Duration::from_secs(self.job.curate.idle_advance_secs);
        let now = now_utc_ns();
        let mut outbox = Outbox::default();
        for aggregator in self.bars.values_mut() {
            if final_fire {
                aggregator.flush_all();
            } else if idle {
                if let Some(max_seen) = aggregator.max_event_time_ns() {
                    aggregator.advance_watermark_to(max_seen);
                }
            }
            let drained = aggregator.drain(now);
            outbox.bars.extend(drained.bars);
            outbox.late.extend(drained.late);
        }
        for windows in self.windows.values_mut() {
            if final_fire {
                windows.flush_all();
            } else if idle {
                if let Some(max_seen) = windows.max_event_time_ns() {
                    windows.advance_watermark_to(max_seen);
                }
            }
            outbox.windows.extend(windows.drain(now));
        }
        let empty = outbox.bars.is_empty() && outbox.late.is_empty() && outbox.windows.is_empty();
        let state_due =
            self.last_save.elapsed() >= Duration::from_secs(self.job.curate.state_every_secs);
        if empty && (self.consumed_since_cycle == 0 || !(state_due || final_fire || force_save)) {
            return Ok(());
        }
        let state = CycleState {
            cycle: self.cycle + 1,
            offsets: self.offsets.clone(),
            bars: self
                .bars
                .iter()
                .map(|(symbol, a)| (symbol.clone(), a.snapshot()))
                .collect(),
            news: self
                .windows
                .iter()
                .map(|(ticker, w)| (ticker.clone(), w.snapshot()))
                .collect(),
            outbox,
        };
        // Serialising and fsyncing the state blocks: keep it off the async workers' hot path.
        tokio::task::block_in_place(|| self.store.save(&state))?;
        self.last_save = Instant::now();
        self.cycle = state.cycle;
        self.consumed_since_cycle = 0;
        self.commit_outbox(&state).await
    }

    /// Commit the outbox of `state` to every table that does not hold that cycle yet.
    async fn commit_outbox(&mut self, state: &CycleState) -> PResult<()> {
        let names: Vec<TableName> = self.sinks.keys().copied().collect();
        for name in names {
            let batch = if name == L3_LATE_RECORDS {
                if state.outbox.late.is_empty() {
                    continue;
                }
                l3::late_records_batch(&state.outbox.late)?
            } else if name == L3_NEWS_TRADE_WINDOWS {
                if state.outbox.windows.is_empty() {
                    continue;
                }
                l3::news_trade_windows_batch(&state.outbox.windows)?
            } else {
                let interval = self.bar_tables.get(&name).copied();
                let rows: Vec<BarRow> = state
                    .outbox
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
            if stored.is_some_and(|s| s >= state.cycle) {
                continue;
            }
            let rows = batch.num_rows();
            let advance = OffsetAdvance {
                topic: CYCLE_TOPIC.into(),
                partition: 0,
                from: *stored,
                to: state.cycle,
            };
            match sink.commit(batch, &[advance]).await? {
                CommitOutcome::Committed { version } => {
                    *stored = Some(state.cycle);
                    tracing::debug!(table = %name, version, rows, cycle = state.cycle, "committed");
                    if name == L3_LATE_RECORDS {
                        self.report.late += rows as u64;
                    } else if name == L3_NEWS_TRADE_WINDOWS {
                        self.report.windows += rows as u64;
                    } else {
                        self.report.bars += rows as u64;
                        let visible = now_utc_ns();
                        let interval = self.bar_tables.get(&name).copied();
                        for bar in state
                            .outbox
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

    fn drained(&self) -> bool {
        self.assigned_once && self.consumer.drained()
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
    let store = StateStore { dir: state_dir };
    // One curator per lake: an exclusive lock on the state directory, held for the whole run
    // (released by the OS if the process dies).
    std::fs::create_dir_all(&store.dir).map_err(|e| store.error(&store.dir, e))?;
    let lock_path = store.dir.join(".lock");
    let lock = std::fs::File::create(&lock_path).map_err(|e| store.error(&lock_path, e))?;
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
    let mut bars = BTreeMap::new();
    let mut windows = BTreeMap::new();
    let mut cycle = 0;
    let mut offsets = BTreeMap::new();
    let recovered = store.load_latest()?;
    if let Some(state) = &recovered {
        for (symbol, saved) in &state.bars {
            let mut aggregator = BarAggregator::new(job.curate.bars.clone())?;
            aggregator.restore(saved.clone())?;
            bars.insert(symbol.clone(), aggregator);
        }
        for (ticker, saved) in &state.news {
            let mut ticker_windows = NewsTradeWindows::new(job.curate.news_windows.clone())?;
            ticker_windows.restore(saved.clone())?;
            windows.insert(ticker.clone(), ticker_windows);
        }
        cycle = state.cycle;
        offsets = state.offsets.clone();
        tracing::info!(cycle, "curator state restored");
    }
    // The tables must not be ahead of the state: a lost or stale state directory (or a second
    // curator) would otherwise skip cycles already committed and emit their windows again.
    let newest_stored = sinks.values().filter_map(|(_, stored)| *stored).max();
    if let Some(stored) = newest_stored {
        if stored > cycle {
            return Err(PipelineError::State {
                path: store.dir.display().to_string(),
                message: format!(
                    "the L3 tables hold cycle {stored} but the newest state file is cycle {cycle}: the state directory was lost, restored from an older copy, or belongs to another curator; restore it (setting `curate.state_dir`) rather than starting over"
                ),
            });
        }
    }
    let topics = [TOPIC_ENRICHED_TRADES, TOPIC_ENRICHED_NEWS];
    let mut consumer = VerifiedConsumer::subscribe(&job.kafka, &job.curate.group, &topics)?;
    if job.until_caught_up {
        consumer.set_stall_after(Duration::from_millis(500));
    }
    let bar_tables = job
        .curate
        .bars
        .intervals_secs
        .iter()
        .map(|&secs| (l3_bars(secs), i64::try_from(secs).unwrap_or(i64::MAX)))
        .collect();
    let mut curate = Curate {
        job,
        consumer,
        bars,
        windows,
        sinks,
        bar_tables,
        store,
        cycle,
        offsets,
        report: CurateReport::default(),
        assigned_once: false,
        last_record: Instant::now(),
        last_save: Instant::now(),
        consumed_since_cycle: 0,
    };
    if let Some(state) = &recovered {
        // The crash may have fallen between the state file and the commits: finish them.
        curate.commit_outbox(state).await?;
    }
    let interval = Duration::from_millis(curate.job.curate.commit_interval_ms);
    let mut last_cycle = Instant::now();
    let mut last_drain_check = Instant::now();
    loop {
        if shutdown.is_cancelled() {
            curate.cycle(false, true).await?;
            tracing::info!("curation stopped on request; state saved");
            break;
        }
        let polled = tokio::select! {
            polled = curate.consumer.poll(Duration::from_millis(100)) => polled?,
            _ = shutdown.cancelled() => continue,
        };
        match polled {
            Polled::Record(record) => curate.on_record(record)?,
            Polled::Assigned(keys) => {
                tracing::info!(partitions = ?keys, "partitions assigned");
                curate.assigned_once = true;
                for key in keys {
                    let next = curate.offsets.get(&partition_label(&key)).copied();
                    curate.consumer.start_partition(&key, next).await?;
                }
            }
            Polled::Revoked(keys) => {
                tracing::warn!(partitions = ?keys, "partitions revoked: another curator joined the group; run one curator per lake");
            }
            Polled::Idle => {}
        }
        if last_cycle.elapsed() >= interval {
            last_cycle = Instant::now();
            curate.cycle(false, false).await?;
        }
        if curate.job.until_caught_up && last_drain_check.elapsed() >= Duration::from_millis(250) {
            last_drain_check = Instant::now();
            if curate.drained() {
                curate.cycle(true, true).await?;
                tracing::info!("curation caught up; every window fired");
                break;
            }
        }
    }
    curate.report.elapsed = started.elapsed();
    drop(lock);
    Ok(curate.report)
}
