//! marketlake-curate: L2 trades and news → L3 tables in event time.
//!
//! The window logic is pure and I/O-free; [`persist`] keeps it durable in a state directory and
//! [`pipeline`], the Kafka/Delta loop around it, feeds records in, drains rows out and journals
//! each cycle before its Delta commits.
//!
//! - [`bars`]: OHLCV/VWAP bars per symbol per interval with a bounded-out-of-orderness
//!   watermark, allowed lateness (accumulating revisions), corrections/cancels, replay
//!   de-duplication and snapshot/restore → `l3.bars`, `l3.late_records`.
//! - [`news_windows`]: trading before/after each news item per ticker → `l3.news_trade_windows`.
//! - [`batch`]: the same bars recomputed from a finite set of trades (final values only), the
//!   reference the stream is checked against.
//! - [`input`]: what curation decodes of an enriched trade (the fields its journal keeps).
//! - [`watermark`], [`dedupe`]: the event-time clock and the replay filter both streams share.
//! - [`state`]: all of the curator's aggregators and the one code path that feeds them, live
//!   and in replay.
//! - [`persist`]: the state directory — a journal of each cycle's inputs written before the
//!   cycle's commits, compacted into snapshots off the hot path, replayed on recovery.
//! - [`pipeline`]: the service around it — enriched topics → L3 Delta tables, exactly once,
//!   with the state journaled before every commit.
//!
//! Row types and Arrow schemas live in [`marketlake_schemas::l3`].

pub mod bars;
pub mod batch;
pub mod dedupe;
mod fill;
pub mod input;
pub mod news_windows;
pub mod persist;
pub mod pipeline;
pub mod state;
pub mod watermark;

pub use bars::{AggregatorState, BarAggregator, BarConfig, BarOutput, BarStats};
pub use batch::{compute_bars, final_trades, same_bar};
pub use news_windows::{NewsTradeWindows, NewsWindowConfig, NewsWindowStats, NewsWindowsState};
pub use persist::{CompactionPolicy, Curator, JournalEntry, Recovered, StateStore, FORMAT_VERSION};
pub use state::{CurateState, CycleEnd, Outbox};
pub use watermark::Watermark;

/// Version of the serialised aggregator states ([`AggregatorState`], [`NewsWindowsState`]);
/// the state directory's own layout is versioned by [`FORMAT_VERSION`].
pub const STATE_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CurateError {
    #[error("invalid setting `{setting}`: {message}")]
    Config { setting: String, message: String },
    #[error("saved state cannot be restored: {0}")]
    State(String),
    /// A state file that cannot be read or written; the message says what to do about it.
    #[error("curator state {path}: {message} (setting `curate.state_dir`)")]
    StateFile { path: String, message: String },
    #[error(transparent)]
    Schema(#[from] marketlake_schemas::SchemaError),
}

pub type Result<T, E = CurateError> = std::result::Result<T, E>;

/// What happened to one input record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Taken into state.
    Applied,
    /// A replay of a raw position already applied (redelivery after a crash): skipped.
    Duplicate,
    /// Sent to the late output for this many intervals; applied to the other intervals.
    Late { intervals: usize },
}

const NS_PER_SEC: i64 = 1_000_000_000;

/// `secs` as nanoseconds, refusing what does not fit an `i64` (about 292 years).
fn secs_to_ns(setting: &str, secs: u64) -> Result<i64> {
    i64::try_from(secs)
        .ok()
        .and_then(|s| s.checked_mul(NS_PER_SEC))
        .ok_or_else(|| CurateError::Config {
            setting: setting.to_string(),
            message: format!("{secs} seconds is out of range"),
        })
}

/// Shared check of a list of window lengths: non-empty, positive, no repeats.
fn validate_durations(setting: &str, secs: &[u64]) -> Result<()> {
    let bad = |message: String| CurateError::Config {
        setting: setting.to_string(),
        message,
    };
    if secs.is_empty() {
        return Err(bad("give at least one duration, e.g. [60, 300]".into()));
    }
    let mut seen = std::collections::BTreeSet::new();
    for &s in secs {
        if s == 0 {
            return Err(bad("durations must be > 0 seconds".into()));
        }
        if !seen.insert(s) {
            return Err(bad(format!("{s} is listed twice")));
        }
        secs_to_ns(setting, s)?;
    }
    Ok(())
}
