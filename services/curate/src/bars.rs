//! OHLCV bars per symbol per interval in event time → `l3.bars` and `l3.late_records`.
//!
//! **Windows** are tumbling and aligned to the UTC epoch: `[k·interval, (k+1)·interval)`, for
//! every configured interval (each divides a day, so bars line up with dates and with each
//! other). Each interval is an independent aggregation fed by the same trades.
//!
//! **Firing.** A window is *due* once the [`Watermark`] reaches its end. Due windows, and due
//! windows changed again (allowed-late trade, correction, cancel), are *pending*;
//! [`BarAggregator::drain`] turns every pending window into one [`BarRow`]. So several changes
//! between two drains (one poll of the pipeline) give one revision, not one per trade.
//!
//! **Allowed lateness `L`, accumulating revisions.** A trade behind the watermark whose window
//! satisfies `end + L > watermark` is still applied and the window refires with `revision + 1`;
//! every revision holds the whole bar and readers keep the highest revision per
//! `(symbol, interval_secs, window_start_ns)`. Accumulating rather than delta or retract+insert
//! rows because `l3.bars` is an append-only Delta table: a reader needs no arithmetic (summing
//! deltas cannot rebuild high/low anyway), any revision is a valid bar as of when it was
//! written (`as_of` reads), and a correction is a new row naming what it supersedes — the same
//! key with a higher revision (DESIGN.md "Reconstructable"). A window's state is dropped once
//! `end + L <= watermark`; its last revision is final.
//!
//! **Late output.** A trade whose window was already dropped is not lost: it becomes a
//! [`LateRecordRow`] (one per interval it missed) with its lineage. Per interval, because a 1h
//! window may still accept what a 1m window refuses.
//!
//! **Corrections and cancels.** The trades of open windows are kept (keyed by `trade_key`),
//! not only aggregates: high/low cannot be un-done. `Correct` replaces the trade named by
//! `supersedes` (moving it if its event time changed), `Cancel` removes it; a due window they
//! touch refires. If the original is not held (its window was dropped, it was itself late, or
//! it never arrived — corrections are assumed to follow their original, as feeds send them) or
//! the correction's own window was dropped, the row goes to the late output and nothing is
//! applied for that interval, so a bar never half-applies a correction. A due window left
//! with no trade refires as an empty revision (`trade_count = 0`, null prices).
//!
//! **Replays** after a crash are skipped by raw position ([`OffsetDedupe`]) and counted.
//!
//! **State** is bounded by the open windows (each keeps its trades until it is final, for the
//! corrections). A trade is stored once for every interval that holds it (`held`: a slab and
//! one key index; windows keep 8-byte handles and order their trades when they fire), not once
//! per interval in an ordered map and an index each: [`BarAggregator::snapshot`] gives a serde value, [`BarAggregator::restore`]
//! resumes from it with nothing counted twice. Processing is deterministic, so
//! [`crate::persist`] stores that value only now and then and journals the inputs in between. [`BarAggregator::flush_all`] ends a bounded back-fill: it advances the
//! watermark past every open window's end + `L`, so everything fires for the last time.

use std::collections::{BTreeMap, BTreeSet};

use foldhash::HashMap;
use std::ops::Bound;

use marketlake_schemas::l2::{TradeAction, TradeRow};
use marketlake_schemas::l3::{BarRow, LateReason, LateRecordRow};
use serde::{Deserialize, Serialize};

use crate::dedupe::OffsetDedupe;
use crate::fill::{Fill, FillOrder, Px, SharedStr, Summary};
use crate::watermark::{Watermark, WatermarkState};
use crate::{secs_to_ns, validate_durations, CurateError, Disposition, Result, STATE_VERSION};

mod held;

use held::{HeldTrades, Member, MAX_INTERVALS};

const SECS_PER_DAY: u64 = 86_400;

/// `[curate.bars]` settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BarConfig {
    /// Bar lengths in seconds; each must divide a day (60, 300, 3600, ...).
    pub intervals_secs: Vec<u64>,
    /// How far behind the newest event time a record may arrive and still be on time.
    pub max_out_of_orderness_secs: u64,
    /// How long after a window fired a late trade still revises it (then it is final).
    pub allowed_lateness_secs: u64,
}

impl Default for BarConfig {
    fn default() -> Self {
        BarConfig {
            intervals_secs: vec![60, 300, 3_600],
            max_out_of_orderness_secs: 2,
            allowed_lateness_secs: 60,
        }
    }
}

impl BarConfig {
    pub fn validate(&self) -> Result<()> {
        validate_intervals(&self.intervals_secs)?;
        secs_to_ns(
            "curate.bars.max_out_of_orderness_secs",
            self.max_out_of_orderness_secs,
        )?;
        secs_to_ns(
            "curate.bars.allowed_lateness_secs",
            self.allowed_lateness_secs,
        )?;
        Ok(())
    }
}

/// Bar intervals: positive, unique, each dividing a day.
pub(crate) fn validate_intervals(intervals_secs: &[u64]) -> Result<()> {
    const SETTING: &str = "curate.bars.intervals_secs";
    validate_durations(SETTING, intervals_secs)?;
    if intervals_secs.len() > MAX_INTERVALS {
        return Err(CurateError::Config {
            setting: SETTING.into(),
            message: format!(
                "{} intervals; at most {MAX_INTERVALS} are supported",
                intervals_secs.len()
            ),
        });
    }
    if let Some(s) = intervals_secs
        .iter()
        .find(|&&s| !SECS_PER_DAY.is_multiple_of(s))
    {
        return Err(CurateError::Config {
            setting: SETTING.into(),
            message: format!(
                "{s} does not divide a day ({SECS_PER_DAY} s); use e.g. 60, 300, 3600"
            ),
        });
    }
    Ok(())
}

/// Counters since the aggregator was created (kept across snapshot/restore).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BarStats {
    /// Trades taken in (not replays), late ones included.
    pub trades_seen: u64,
    pub duplicates_skipped: u64,
    /// Late rows produced (one per trade per interval missed).
    pub late_records: u64,
    pub bars_emitted: u64,
    /// Bars emitted with `revision > 0`.
    pub revisions_emitted: u64,
}

/// What [`BarAggregator::drain`] hands to the writer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BarOutput {
    pub bars: Vec<BarRow>,
    pub late: Vec<LateRecordRow>,
}

impl BarOutput {
    pub fn is_empty(&self) -> bool {
        self.bars.is_empty() && self.late.is_empty()
    }
}

/// `(window start ns, symbol)`: windows of one interval ordered by start, so dropping the
/// expired ones is popping a prefix.
type WindowKey = (i64, SharedStr);

#[derive(Debug, Clone, Default)]
struct Window {
    /// Handles to the window's trades in [`HeldTrades`], in arrival order; handles of trades
    /// since removed are skipped, and dropped once they are as many as the live ones.
    members: Vec<Member>,
    /// Trades this window holds now.
    live: usize,
    /// Last revision handed out; `None` until the window first fires.
    emitted_revision: Option<i32>,
}

impl Window {
    /// The window's trades in [`FillOrder`] (handles of removed ones skipped).
    fn fills<'a>(&self, held: &'a HeldTrades, position: usize) -> Vec<(&'a FillOrder, &'a Px)> {
        let mut fills: Vec<(&FillOrder, &Px)> = self
            .members
            .iter()
            .filter_map(|&member| held.get(member, position))
            .map(|(order, px, _)| (order, px))
            .collect();
        // Nearly sorted already (trades arrive roughly in event time): a stable sort finds the
        // runs and is close to linear.
        fills.sort_by(|a, b| a.0.cmp(b.0));
        fills
    }
}

#[derive(Debug, Clone)]
struct IntervalState {
    secs: u64,
    ns: i64,
    /// This interval's bit in [`HeldTrades`] (its position in the configuration).
    position: usize,
    windows: BTreeMap<WindowKey, Window>,
    pending: BTreeSet<WindowKey>,
}

impl IntervalState {
    fn new(secs: u64, ns: i64, position: usize) -> Self {
        IntervalState {
            secs,
            ns,
            position,
            windows: BTreeMap::new(),
            pending: BTreeSet::new(),
        }
    }

    fn start_of(&self, event_time_ns: i64) -> i64 {
        event_time_ns.div_euclid(self.ns).saturating_mul(self.ns)
    }

    fn end_of(&self, start: i64) -> i64 {
        start.saturating_add(self.ns)
    }

    fn is_final(&self, start: i64, final_through_ns: i64) -> bool {
        self.end_of(start) <= final_through_ns
    }

    /// Apply one trade to this interval, or say why it is late here. `stored` is the trade's
    /// entry in `held` once an earlier interval has stored it (every interval shares it).
    fn apply(
        &mut self,
        trade: &TradeRow,
        incoming: &Incoming,
        stored: &mut Option<Member>,
        held: &mut HeldTrades,
        watermark: i64,
        final_through_ns: i64,
    ) -> Result<(), LateReason> {
        let start = self.start_of(trade.event_time_ns);
        let original = match trade.action {
            TradeAction::New => None,
            TradeAction::Correct | TradeAction::Cancel => Some(
                trade
                    .supersedes
                    .as_deref()
                    .and_then(|key| held.find(key, self.position))
                    .ok_or(LateReason::OriginalNotOpen)?,
            ),
        };
        let inserts = trade.action != TradeAction::Cancel;
        if inserts && self.is_final(start, final_through_ns) {
            return Err(LateReason::BeyondAllowedLateness);
        }
        if let Some(member) = original {
            self.remove(member, held, watermark);
        }
        if inserts {
            self.insert(trade, incoming, stored, held, start, watermark);
        }
        Ok(())
    }

    fn mark_if_due(&mut self, key: &WindowKey, watermark: i64) {
        if self.end_of(key.0) <= watermark {
            self.pending.insert(key.clone());
        }
    }

    fn insert(
        &mut self,
        trade: &TradeRow,
        incoming: &Incoming,
        stored: &mut Option<Member>,
        held: &mut HeldTrades,
        start: i64,
        watermark: i64,
    ) {
        // A trade key is held once per interval: a re-sent `New` with the same key replaces
        // the first.
        if let Some(previous) = held.find(&trade.trade_key, self.position) {
            self.remove(previous, held, watermark);
        }
        let member = *stored.get_or_insert_with(|| {
            held.add(incoming.order.clone(), incoming.px, incoming.symbol.clone())
        });
        held.hold(member, self.position);
        let key = (start, incoming.symbol.clone());
        let window = self.windows.entry(key.clone()).or_default();
        window.members.push(member);
        window.live += 1;
        self.mark_if_due(&key, watermark);
    }

    fn remove(&mut self, member: Member, held: &mut HeldTrades, watermark: i64) {
        let Some((order, _, symbol)) = held.get(member, self.position) else {
            return;
        };
        let key = (self.start_of(order.event_time_ns), symbol.clone());
        held.release(member, self.position);
        let Some(window) = self.windows.get_mut(&key) else {
            return;
        };
        window.live = window.live.saturating_sub(1);
        // Handles of removed trades are dropped once they outnumber the live ones, so a window
        // edited again and again (corrections of old trades) holds about twice its trades.
        if window.members.len() > 2 * window.live + 16 {
            window
                .members
                .retain(|&member| held.get(member, self.position).is_some());
        }
        if window.live == 0 && window.emitted_revision.is_none() {
            // Never shown to anyone: nothing to retract.
            self.windows.remove(&key);
            self.pending.remove(&key);
        } else {
            self.mark_if_due(&key, watermark);
        }
    }

    /// Mark pending the windows whose end the watermark just passed: `old < end <= new`.
    fn fire_due(&mut self, old: i64, new: i64) {
        let ns = i128::from(self.ns);
        let clamp = |v: i128| i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX });
        let lowest_start = clamp(i128::from(old) - ns + 1);
        let highest_start = i128::from(new) - ns;
        let due: Vec<WindowKey> = self
            .windows
            .range((
                Bound::Included((lowest_start, SharedStr::default())),
                Bound::Unbounded,
            ))
            .map(|(key, _)| key)
            .take_while(|key| i128::from(key.0) <= highest_start)
            .cloned()
            .collect();
        self.pending.extend(due);
    }

    /// Drop the windows that became final, emitting those still pending.
    fn drop_final(
        &mut self,
        held: &mut HeldTrades,
        final_through_ns: i64,
        watermark: i64,
        out: &mut Vec<BarRow>,
    ) {
        while let Some(((start, _), _)) = self.windows.first_key_value() {
            if !self.is_final(*start, final_through_ns) {
                break;
            }
            let Some((key, mut window)) = self.windows.pop_first() else {
                break;
            };
            if self.pending.remove(&key) {
                out.push(materialize(
                    self.secs,
                    self.position,
                    &key,
                    &mut window,
                    held,
                    watermark,
                ));
            }
            for member in window.members {
                held.release(member, self.position);
            }
        }
    }

    fn drain_pending(&mut self, held: &HeldTrades, watermark: i64, out: &mut Vec<BarRow>) {
        for key in std::mem::take(&mut self.pending) {
            if let Some(window) = self.windows.get_mut(&key) {
                let (secs, position) = (self.secs, self.position);
                out.push(materialize(secs, position, &key, window, held, watermark));
            }
        }
    }

    /// The window's trades as a snapshot stores them, in [`FillOrder`].
    fn snapshot_fills(&self, window: &Window, held: &HeldTrades) -> Vec<Fill> {
        window
            .fills(held, self.position)
            .into_iter()
            .map(|(order, px)| Fill {
                order: order.clone(),
                px: *px,
            })
            .collect()
    }
}

/// The next revision of a window as a row (`fired_at_ns` is stamped by `drain`).
fn materialize(
    secs: u64,
    position: usize,
    key: &WindowKey,
    window: &mut Window,
    held: &HeldTrades,
    watermark: i64,
) -> BarRow {
    let revision = window.emitted_revision.map_or(0, |r| r.saturating_add(1));
    window.emitted_revision = Some(revision);
    Summary::of(window.fills(held, position)).bar(
        key.1.to_string(),
        secs,
        key.0,
        revision,
        watermark,
    )
}

/// What every interval stores of one incoming trade, made once per trade.
struct Incoming {
    order: FillOrder,
    px: Px,
    symbol: SharedStr,
}

/// Streaming event-time bar aggregation; see the module documentation for the semantics.
#[derive(Debug, Clone)]
pub struct BarAggregator {
    config: BarConfig,
    lateness_ns: i64,
    watermark: Watermark,
    /// Windows ending at or before this are final and dropped: the running max of
    /// `watermark − L`. Kept, not recomputed, so a lateness raised across a restore never
    /// re-opens a final window (whose new rows would restart at revision 0).
    final_through_ns: i64,
    dedupe: OffsetDedupe,
    intervals: Vec<IntervalState>,
    /// The trades of every interval's open windows, each stored once.
    held: HeldTrades,
    /// The symbol of the last trade, shared by the next one (an aggregator serves one symbol,
    /// so this is one allocation for all its trades instead of one per trade).
    symbol: SharedStr,
    /// Rows made when a pending window was dropped before a drain.
    ready: Vec<BarRow>,
    late: Vec<LateRecordRow>,
    stats: BarStats,
}

impl BarAggregator {
    /// A fresh aggregator; fails on an invalid configuration.
    pub fn new(config: BarConfig) -> Result<Self> {
        config.validate()?;
        let lateness_ns = secs_to_ns(
            "curate.bars.allowed_lateness_secs",
            config.allowed_lateness_secs,
        )?;
        let bound_ns = secs_to_ns(
            "curate.bars.max_out_of_orderness_secs",
            config.max_out_of_orderness_secs,
        )?;
        let intervals = config
            .intervals_secs
            .iter()
            .enumerate()
            .map(|(position, &secs)| {
                Ok(IntervalState::new(
                    secs,
                    secs_to_ns("curate.bars.intervals_secs", secs)?,
                    position,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(BarAggregator {
            config,
            lateness_ns,
            watermark: Watermark::new(bound_ns),
            final_through_ns: i64::MIN,
            dedupe: OffsetDedupe::default(),
            intervals,
            held: HeldTrades::default(),
            symbol: SharedStr::default(),
            ready: Vec::new(),
            late: Vec::new(),
            stats: BarStats::default(),
        })
    }

    pub fn config(&self) -> &BarConfig {
        &self.config
    }

    /// The event-time watermark (UTC ns), `None` before the first trade.
    pub fn watermark_ns(&self) -> Option<i64> {
        self.watermark.current()
    }

    /// The newest event time seen (UTC ns), `None` before the first trade.
    pub fn max_event_time_ns(&self) -> Option<i64> {
        self.watermark.max_event_ns()
    }

    pub fn stats(&self) -> BarStats {
        self.stats
    }

    /// Number of windows held (all intervals), for metrics.
    pub fn open_windows(&self) -> usize {
        self.intervals.iter().map(|i| i.windows.len()).sum()
    }

    /// Trades held in open windows, counted once per interval, for metrics.
    pub fn held_fills(&self) -> usize {
        self.intervals
            .iter()
            .flat_map(|i| i.windows.values())
            .map(|w| w.live)
            .sum()
    }

    /// Distinct trades held (one held by several intervals counts once), for metrics.
    pub fn held_trades(&self) -> usize {
        self.held.len()
    }

    /// Take one L2 trade (any action). Its effects come out of the next [`Self::drain`].
    pub fn process_trade(&mut self, trade: &TradeRow) -> Disposition {
        self.process_ordered(trade, FillOrder::of(trade))
    }

    /// [`Self::process_trade`] with the trade's order already made: the curator makes it once
    /// for the bars and the news windows, which then share its key.
    pub(crate) fn process_ordered(&mut self, trade: &TradeRow, order: FillOrder) -> Disposition {
        if !self.dedupe.admit(&trade.lineage, &trade.trade_key) {
            self.stats.duplicates_skipped += 1;
            return Disposition::Duplicate;
        }
        self.stats.trades_seen += 1;
        // Lateness is judged against the watermark before this record moves it.
        let watermark = self.watermark.value();
        let mut late = 0;
        if *self.symbol != *trade.symbol {
            self.symbol = SharedStr::from(trade.symbol.as_str());
        }
        let incoming = Incoming {
            order,
            px: Px::of(trade),
            symbol: self.symbol.clone(),
        };
        let mut stored = None;
        for interval in &mut self.intervals {
            if let Err(reason) = interval.apply(
                trade,
                &incoming,
                &mut stored,
                &mut self.held,
                watermark,
                self.final_through_ns,
            ) {
                late += 1;
                self.late.push(late_row(trade, interval, reason, watermark));
            }
        }
        self.stats.late_records += late as u64;
        if let Some((old, new)) = self.watermark.observe(trade.event_time_ns) {
            self.on_advance(old, new);
        }
        if late == 0 {
            Disposition::Applied
        } else {
            Disposition::Late { intervals: late }
        }
    }

    /// Idle hook: move the watermark to `ns` (if ahead) without a record, so windows fire when
    /// a feed goes quiet. See [`crate::watermark`] for when the pipeline may call it.
    pub fn advance_watermark_to(&mut self, ns: i64) {
        if let Some((old, new)) = self.watermark.advance_to(ns) {
            self.on_advance(old, new);
        }
    }

    /// End of a bounded input: advance the watermark past every open window's end + allowed
    /// lateness, so every window fires for the last time and all state is released. Records
    /// after this are late, as they would be in a stream. Call [`Self::drain`] next.
    pub fn flush_all(&mut self) {
        let last = self
            .intervals
            .iter()
            .filter_map(|i| {
                let ((start, _), _) = i.windows.last_key_value()?;
                Some(i.end_of(*start).saturating_add(self.lateness_ns))
            })
            .max();
        if let Some(ns) = last {
            self.advance_watermark_to(ns);
        }
    }

    /// Everything produced since the last drain: one row per pending window (next revision)
    /// and the late rows, stamped with `now_ns` (processing time, UTC ns).
    pub fn drain(&mut self, now_ns: i64) -> BarOutput {
        let watermark = self.watermark.value();
        let mut bars = std::mem::take(&mut self.ready);
        for interval in &mut self.intervals {
            interval.drain_pending(&self.held, watermark, &mut bars);
        }
        for bar in &mut bars {
            bar.fired_at_ns = now_ns;
        }
        let mut late = std::mem::take(&mut self.late);
        for row in &mut late {
            row.detected_at_ns = now_ns;
        }
        self.stats.bars_emitted += bars.len() as u64;
        self.stats.revisions_emitted += bars.iter().filter(|b| b.revision > 0).count() as u64;
        BarOutput { bars, late }
    }

    fn on_advance(&mut self, old: i64, new: i64) {
        for interval in &mut self.intervals {
            interval.fire_due(old, new);
        }
        self.finalize();
    }

    /// Move `final_through_ns` with the watermark and drop what became final.
    fn finalize(&mut self) {
        let watermark = self.watermark.value();
        self.final_through_ns = self
            .final_through_ns
            .max(watermark.saturating_sub(self.lateness_ns));
        for interval in &mut self.intervals {
            interval.drop_final(
                &mut self.held,
                self.final_through_ns,
                watermark,
                &mut self.ready,
            );
        }
    }

    /// Everything needed to resume, undrained output included. Deterministic: equal
    /// aggregators give equal (and equally serialised) states.
    pub fn snapshot(&self) -> AggregatorState {
        let mut windows = Vec::new();
        for interval in &self.intervals {
            for (key, window) in &interval.windows {
                windows.push(WindowState {
                    interval_secs: interval.secs,
                    symbol: key.1.to_string(),
                    window_start_ns: key.0,
                    emitted_revision: window.emitted_revision,
                    pending: interval.pending.contains(key),
                    fills: interval.snapshot_fills(window, &self.held),
                });
            }
        }
        AggregatorState {
            version: STATE_VERSION,
            intervals_secs: self.config.intervals_secs.clone(),
            watermark: self.watermark.state(),
            final_through_ns: self.final_through_ns,
            dedupe: self.dedupe.clone(),
            windows,
            undrained_bars: self.ready.clone(),
            undrained_late: self.late.clone(),
            stats: self.stats,
        }
    }

    /// Replace this aggregator's state with a snapshot. The intervals must be the ones the
    /// snapshot was taken with; the out-of-orderness bound and lateness may have changed (a
    /// shorter lateness finalises what it no longer keeps; a longer one applies to windows
    /// not yet final).
    pub fn restore(&mut self, state: AggregatorState) -> Result<()> {
        if state.version != STATE_VERSION {
            return Err(CurateError::State(format!(
                "bar state version {} is not {STATE_VERSION}",
                state.version
            )));
        }
        let mut mine = self.config.intervals_secs.clone();
        let mut theirs = state.intervals_secs.clone();
        mine.sort_unstable();
        theirs.sort_unstable();
        if mine != theirs {
            return Err(CurateError::State(format!(
                "bar state has intervals {:?} but curate.bars.intervals_secs is {:?}",
                state.intervals_secs, self.config.intervals_secs
            )));
        }
        let mut intervals: Vec<IntervalState> = self
            .intervals
            .iter()
            .map(|i| IntervalState::new(i.secs, i.ns, i.position))
            .collect();
        let mut held = HeldTrades::default();
        // A trade several intervals hold is in each of their windows in the snapshot: store it
        // once again, as the live aggregator did.
        let mut stored: HashMap<(FillOrder, Px, SharedStr), Member> = HashMap::default();
        let mut symbol = SharedStr::default();
        for w in state.windows {
            let Some(interval) = intervals.iter_mut().find(|i| i.secs == w.interval_secs) else {
                return Err(CurateError::State(format!(
                    "window of unknown interval {} s",
                    w.interval_secs
                )));
            };
            if w.window_start_ns.rem_euclid(interval.ns) != 0 {
                return Err(CurateError::State(format!(
                    "window start {} is not aligned to {} s",
                    w.window_start_ns, w.interval_secs
                )));
            }
            if *symbol != *w.symbol {
                symbol = SharedStr::from(w.symbol);
            }
            let key = (w.window_start_ns, symbol.clone());
            if interval.windows.contains_key(&key) {
                return Err(CurateError::State(format!(
                    "the {} s bar of {} at {} is in the state twice",
                    w.interval_secs, &*symbol, w.window_start_ns
                )));
            }
            let mut window = Window {
                members: Vec::with_capacity(w.fills.len()),
                live: 0,
                emitted_revision: w.emitted_revision,
            };
            for Fill { order, px } in w.fills {
                // A trade is found again by its event time's window: it must be in that one.
                if interval.start_of(order.event_time_ns) != w.window_start_ns {
                    return Err(CurateError::State(format!(
                        "trade {} at {} is held by the {} s bar at {}, not its own",
                        &*order.trade_key, order.event_time_ns, w.interval_secs, w.window_start_ns
                    )));
                }
                if held.find(&order.trade_key, interval.position).is_some() {
                    return Err(CurateError::State(format!(
                        "trade {} is held twice by the {} s bars",
                        &*order.trade_key, w.interval_secs
                    )));
                }
                let member = *stored
                    .entry((order.clone(), px, symbol.clone()))
                    .or_insert_with(|| held.add(order, px, symbol.clone()));
                held.hold(member, interval.position);
                window.members.push(member);
                window.live += 1;
            }
            if w.pending {
                interval.pending.insert(key.clone());
            }
            interval.windows.insert(key, window);
        }
        self.held = held;
        self.symbol = symbol;
        self.intervals = intervals;
        self.watermark.restore(state.watermark);
        self.dedupe = state.dedupe;
        self.ready = state.undrained_bars;
        self.late = state.undrained_late;
        self.stats = state.stats;
        self.final_through_ns = state.final_through_ns;
        // A lateness lowered since the snapshot finalises windows now.
        self.finalize();
        Ok(())
    }
}

fn late_row(
    trade: &TradeRow,
    interval: &IntervalState,
    reason: LateReason,
    watermark: i64,
) -> LateRecordRow {
    let start = interval.start_of(trade.event_time_ns);
    LateRecordRow {
        symbol: trade.symbol.clone(),
        interval_secs: i64::try_from(interval.secs).unwrap_or(i64::MAX),
        window_start_ns: start,
        window_end_ns: interval.end_of(start),
        event_time_ns: trade.event_time_ns,
        received_at_ns: trade.received_at_ns,
        watermark_ns: watermark,
        reason,
        trade_key: trade.trade_key.clone(),
        action: trade.action,
        supersedes: trade.supersedes.clone(),
        price: trade.price,
        quantity: trade.quantity,
        detected_at_ns: 0,
        lineage: trade.lineage.clone(),
    }
}

/// A [`BarAggregator`]'s persisted state (serde; opaque to callers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregatorState {
    version: u32,
    intervals_secs: Vec<u64>,
    watermark: WatermarkState,
    final_through_ns: i64,
    dedupe: OffsetDedupe,
    /// Per interval (config order), by window start then symbol.
    windows: Vec<WindowState>,
    undrained_bars: Vec<BarRow>,
    undrained_late: Vec<LateRecordRow>,
    stats: BarStats,
}

impl AggregatorState {
    /// The watermark the state was taken at.
    pub fn watermark_ns(&self) -> Option<i64> {
        self.watermark.watermark_ns
    }

    /// Move the held trades out, one list per window in window order (the snapshot file stores
    /// them in a compact binary section; the rest stays serde).
    pub(crate) fn take_fill_lists(&mut self) -> Vec<Vec<Fill>> {
        self.windows
            .iter_mut()
            .map(|w| std::mem::take(&mut w.fills))
            .collect()
    }

    /// Put back what [`Self::take_fill_lists`] took.
    pub(crate) fn put_fill_lists(&mut self, lists: Vec<Vec<Fill>>) -> Result<()> {
        if lists.len() != self.windows.len() {
            return Err(CurateError::State(format!(
                "bar state has {} windows but {} trade lists",
                self.windows.len(),
                lists.len()
            )));
        }
        for (window, fills) in self.windows.iter_mut().zip(lists) {
            window.fills = fills;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowState {
    interval_secs: u64,
    symbol: String,
    window_start_ns: i64,
    emitted_revision: Option<i32>,
    pending: bool,
    fills: Vec<Fill>,
}

#[cfg(test)]
pub(crate) mod tests;
