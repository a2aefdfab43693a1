//! Trading around news → `l3.news_trade_windows`.
//!
//! For each news item, each ticker it is tagged with, and each configured window length `w`:
//! a `before` row over `[anchor − w, anchor)` and an `after` row over `[anchor, anchor + w)`,
//! with volume, VWAP, trade count, first/last price and `simple_return = last/first − 1` (f64:
//! a ratio, not money; prices stay exact decimals). The anchor is the published time, or the
//! received time when the item has none (`anchor_source = received`).
//!
//! **Event time.** The watermark comes from the trades (news does not move it: a headline says
//! nothing about whether trades are complete). Each row is computed once, when the watermark
//! passes its own window's end + `allowed_lateness` — `before` rows soon after the news time,
//! `after` rows when their window has closed. Waiting the lateness (0 is allowed) means a row
//! sees the same trades as the final bars and never needs a revision, which keeps this table
//! one row per (news, ticker, side, window). Trades arriving after that are not in the row.
//!
//! **History.** Trades are held per symbol from `horizon` on, where
//! `horizon = watermark − allowed_lateness − longest window − news_grace` (moved in whole
//! seconds to bound eviction work): enough for every registered window and for news arriving
//! up to `news_grace` after its anchor. A news item arriving later than that may find part of
//! a window evicted: its row is still written, from what remains, with `incomplete = true`,
//! rather than dropped or silently short. (It cannot know about trades the stream never
//! delivered, e.g. before the pipeline's first offset.)
//!
//! Corrections and cancels edit the history (a correction whose original is not held is kept
//! as a trade, counted in `unmatched_edits`: there is no late output here); rows already
//! written are not revised. Replays are skipped by raw position; `snapshot`/`restore` and
//! `flush_all` work as for bars.

use std::collections::{BTreeMap, BTreeSet};

use foldhash::HashMap;

use marketlake_schemas::l2::{NewsRow, TradeAction, TradeRow};
use marketlake_schemas::l3::{AnchorSource, NewsTradeWindowRow, WindowSide};
use serde::{Deserialize, Serialize};

use crate::dedupe::OffsetDedupe;
use crate::fill::{simple_return, Fill, FillOrder, Px, SharedStr, Summary};
use crate::watermark::{Watermark, WatermarkState};
use crate::{
    secs_to_ns, validate_durations, CurateError, Disposition, Result, NS_PER_SEC, STATE_VERSION,
};

mod history;

use history::TradeHistory;

/// `[curate.news_windows]` settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NewsWindowConfig {
    /// Window lengths in seconds, each measured before and after the news time.
    pub windows_secs: Vec<u64>,
    /// Watermark bound, as for bars (use the same value so both see the same trades as late).
    pub max_out_of_orderness_secs: u64,
    /// Wait this long after a window's end before computing it (as for bars).
    pub allowed_lateness_secs: u64,
    /// Extra trade history kept so news arriving up to this long after its anchor time still
    /// gets complete windows (RSS polling and publisher delays are minutes).
    pub news_grace_secs: u64,
}

impl Default for NewsWindowConfig {
    fn default() -> Self {
        NewsWindowConfig {
            windows_secs: vec![300, 1_800, 3_600],
            max_out_of_orderness_secs: 2,
            allowed_lateness_secs: 60,
            news_grace_secs: 900,
        }
    }
}

impl NewsWindowConfig {
    pub fn validate(&self) -> Result<()> {
        validate_durations("curate.news_windows.windows_secs", &self.windows_secs)?;
        secs_to_ns(
            "curate.news_windows.max_out_of_orderness_secs",
            self.max_out_of_orderness_secs,
        )?;
        secs_to_ns(
            "curate.news_windows.allowed_lateness_secs",
            self.allowed_lateness_secs,
        )?;
        secs_to_ns("curate.news_windows.news_grace_secs", self.news_grace_secs)?;
        Ok(())
    }
}

/// Counters since creation (kept across snapshot/restore).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewsWindowStats {
    pub trades_seen: u64,
    pub news_seen: u64,
    pub duplicates_skipped: u64,
    pub news_without_tickers: u64,
    /// Trades older than the history horizon on arrival: not held.
    pub trades_before_horizon: u64,
    /// Trades more than the allowed lateness behind the watermark: rows already written may
    /// miss them (the bars' late output records them if they missed a bar).
    pub late_trades: u64,
    /// Corrections/cancels whose original is not held.
    pub unmatched_edits: u64,
    pub rows_emitted: u64,
    pub incomplete_rows: u64,
}

/// One window waiting for the watermark.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PendingWindow {
    news_key: String,
    ticker: String,
    side: WindowSide,
    window_secs: u64,
    anchor_ns: i64,
    anchor_source: AnchorSource,
    window_start_ns: i64,
    window_end_ns: i64,
}

/// Pending windows by the watermark that closes them, then identity: a news key seen again
/// (an updated item) replaces its windows instead of doubling them.
type PendingKey = (i64, String, String, WindowSide, u64);

/// Streaming news–trade windows; see the module documentation.
#[derive(Debug, Clone)]
pub struct NewsTradeWindows {
    config: NewsWindowConfig,
    windows: Vec<(u64, i64)>,
    lateness_ns: i64,
    /// How far behind the watermark the history reaches.
    keep_ns: i64,
    watermark: Watermark,
    dedupe: OffsetDedupe,
    history: BTreeMap<SharedStr, TradeHistory>,
    /// Trade key → where the trade is: its symbol and event time.
    index: HashMap<SharedStr, (SharedStr, i64)>,
    /// Trades before this have been (or would have been) evicted.
    horizon_ns: i64,
    pending: BTreeMap<PendingKey, PendingWindow>,
    ready: Vec<NewsTradeWindowRow>,
    stats: NewsWindowStats,
}

impl NewsTradeWindows {
    pub fn new(config: NewsWindowConfig) -> Result<Self> {
        config.validate()?;
        let windows = config
            .windows_secs
            .iter()
            .map(|&s| Ok((s, secs_to_ns("curate.news_windows.windows_secs", s)?)))
            .collect::<Result<Vec<_>>>()?;
        let longest = windows.iter().map(|w| w.1).max().unwrap_or(0);
        let lateness_ns = secs_to_ns(
            "curate.news_windows.allowed_lateness_secs",
            config.allowed_lateness_secs,
        )?;
        let grace_ns = secs_to_ns(
            "curate.news_windows.news_grace_secs",
            config.news_grace_secs,
        )?;
        let keep_ns = longest
            .checked_add(lateness_ns)
            .and_then(|v| v.checked_add(grace_ns))
            .ok_or_else(|| CurateError::Config {
                setting: "curate.news_windows".into(),
                message: "longest window + lateness + grace is out of range".into(),
            })?;
        let bound_ns = secs_to_ns(
            "curate.news_windows.max_out_of_orderness_secs",
            config.max_out_of_orderness_secs,
        )?;
        Ok(NewsTradeWindows {
            config,
            windows,
            lateness_ns,
            keep_ns,
            watermark: Watermark::new(bound_ns),
            dedupe: OffsetDedupe::default(),
            history: BTreeMap::new(),
            index: HashMap::default(),
            horizon_ns: i64::MIN,
            pending: BTreeMap::new(),
            ready: Vec::new(),
            stats: NewsWindowStats::default(),
        })
    }

    pub fn config(&self) -> &NewsWindowConfig {
        &self.config
    }

    pub fn watermark_ns(&self) -> Option<i64> {
        self.watermark.current()
    }

    /// The newest trade event time seen (UTC ns), `None` before the first trade.
    pub fn max_event_time_ns(&self) -> Option<i64> {
        self.watermark.max_event_ns()
    }

    pub fn stats(&self) -> NewsWindowStats {
        self.stats
    }

    /// Trades held in the history (all symbols), for metrics.
    pub fn held_trades(&self) -> usize {
        self.index.len()
    }

    /// Windows registered and not yet computed, for metrics.
    pub fn pending_windows(&self) -> usize {
        self.pending.len()
    }

    /// Take one L2 trade into the history; it moves the watermark.
    pub fn process_trade(&mut self, trade: &TradeRow) -> Disposition {
        self.process_ordered(trade, FillOrder::of(trade))
    }

    /// [`Self::process_trade`] with the trade's order already made (see
    /// [`crate::BarAggregator`]'s twin).
    pub(crate) fn process_ordered(&mut self, trade: &TradeRow, order: FillOrder) -> Disposition {
        if !self.dedupe.admit(&trade.lineage, &trade.trade_key) {
            self.stats.duplicates_skipped += 1;
            return Disposition::Duplicate;
        }
        self.stats.trades_seen += 1;
        if trade.event_time_ns.saturating_add(self.lateness_ns) <= self.watermark.value() {
            self.stats.late_trades += 1;
        }
        if trade.action != TradeAction::New {
            let original = trade.supersedes.as_deref().and_then(|k| self.remove(k));
            if original.is_none() {
                self.stats.unmatched_edits += 1;
            }
        }
        if trade.action != TradeAction::Cancel {
            self.insert(trade, order);
        }
        if let Some((_, new)) = self.watermark.observe(trade.event_time_ns) {
            self.on_advance(new);
        }
        Disposition::Applied
    }

    /// Register one news item: `2 × windows × tickers` rows, each computed when its window
    /// closes (at once if it already has).
    pub fn process_news(&mut self, news: &NewsRow) -> Disposition {
        if !self.dedupe.admit(&news.lineage, &news.news_key) {
            self.stats.duplicates_skipped += 1;
            return Disposition::Duplicate;
        }
        self.stats.news_seen += 1;
        let (anchor_ns, anchor_source) = match news.published_at_ns {
            Some(ns) => (ns, AnchorSource::Published),
            None => (news.received_at_ns, AnchorSource::Received),
        };
        let tickers: BTreeSet<&String> = news.tickers.iter().collect();
        if tickers.is_empty() {
            self.stats.news_without_tickers += 1;
        }
        let watermark = self.watermark.value();
        for ticker in tickers {
            for &(window_secs, window_ns) in &self.windows {
                for side in [WindowSide::Before, WindowSide::After] {
                    let (start, end) = match side {
                        WindowSide::Before => (anchor_ns.saturating_sub(window_ns), anchor_ns),
                        WindowSide::After => (anchor_ns, anchor_ns.saturating_add(window_ns)),
                    };
                    let window = PendingWindow {
                        news_key: news.news_key.clone(),
                        ticker: ticker.clone(),
                        side,
                        window_secs,
                        anchor_ns,
                        anchor_source,
                        window_start_ns: start,
                        window_end_ns: end,
                    };
                    let closes_at = end.saturating_add(self.lateness_ns);
                    if closes_at <= watermark {
                        let row = self.compute(&window, watermark);
                        self.ready.push(row);
                    } else {
                        self.pending.insert(pending_key(closes_at, &window), window);
                    }
                }
            }
        }
        Disposition::Applied
    }

    /// Idle hook, as [`crate::BarAggregator::advance_watermark_to`].
    pub fn advance_watermark_to(&mut self, ns: i64) {
        if let Some((_, new)) = self.watermark.advance_to(ns) {
            self.on_advance(new);
        }
    }

    /// End of a bounded input: compute every registered window now. Call [`Self::drain`] next.
    pub fn flush_all(&mut self) {
        if let Some(((closes_at, ..), _)) = self.pending.last_key_value() {
            let closes_at = *closes_at;
            self.advance_watermark_to(closes_at);
        }
    }

    /// Rows computed since the last drain, stamped with `now_ns` (processing time).
    pub fn drain(&mut self, now_ns: i64) -> Vec<NewsTradeWindowRow> {
        let mut rows = std::mem::take(&mut self.ready);
        for row in &mut rows {
            row.emitted_at_ns = now_ns;
            row.simple_return = simple_return(row.first_price, row.last_price);
        }
        self.stats.rows_emitted += rows.len() as u64;
        self.stats.incomplete_rows += rows.iter().filter(|r| r.incomplete).count() as u64;
        rows
    }

    fn insert(&mut self, trade: &TradeRow, order: FillOrder) {
        if trade.event_time_ns < self.horizon_ns {
            self.stats.trades_before_horizon += 1;
            return;
        }
        self.remove(&trade.trade_key);
        let symbol = match self.history.get_key_value(trade.symbol.as_str()) {
            Some((symbol, _)) => symbol.clone(),
            None => SharedStr::from(trade.symbol.as_str()),
        };
        self.index.insert(
            order.trade_key.clone(),
            (symbol.clone(), order.event_time_ns),
        );
        self.history
            .entry(symbol)
            .or_default()
            .insert(order, Px::of(trade));
    }

    fn remove(&mut self, trade_key: &str) -> Option<Px> {
        let (symbol, event_time_ns) = self.index.remove(trade_key)?;
        let trades = self.history.get_mut(&symbol)?;
        let px = trades.remove(trade_key, event_time_ns);
        if trades.is_empty() {
            self.history.remove(&symbol);
        }
        px
    }

    fn on_advance(&mut self, watermark: i64) {
        // Compute before evicting: a window closing now still has all its trades.
        while let Some(entry) = self.pending.first_entry() {
            if entry.key().0 > watermark {
                break;
            }
            let window = entry.remove();
            let row = self.compute(&window, watermark);
            self.ready.push(row);
        }
        let target = watermark.saturating_sub(self.keep_ns);
        // Whole seconds: one eviction pass per event-time second, not per trade.
        let target = target.div_euclid(NS_PER_SEC).saturating_mul(NS_PER_SEC);
        if target > self.horizon_ns {
            self.horizon_ns = target;
            self.evict();
        }
    }

    fn evict(&mut self) {
        let index = &mut self.index;
        let horizon_ns = self.horizon_ns;
        self.history.retain(|_, trades| {
            trades.evict_before(horizon_ns, |order| {
                index.remove(&order.trade_key);
            });
            !trades.is_empty()
        });
    }

    fn compute(&self, window: &PendingWindow, watermark: i64) -> NewsTradeWindowRow {
        let s = match self.history.get(window.ticker.as_str()) {
            Some(trades) => Summary::of(trades.range(window.window_start_ns, window.window_end_ns)),
            _ => Summary::default(),
        };
        NewsTradeWindowRow {
            news_key: window.news_key.clone(),
            ticker: window.ticker.clone(),
            side: window.side,
            window_secs: i64::try_from(window.window_secs).unwrap_or(i64::MAX),
            anchor_ns: window.anchor_ns,
            anchor_source: window.anchor_source,
            window_start_ns: window.window_start_ns,
            window_end_ns: window.window_end_ns,
            trade_count: s.count,
            volume: s.volume_i64(),
            notional: s.notional,
            vwap: s.vwap(),
            first_price: s.open,
            last_price: s.close,
            first_trade_ns: s.first_ns,
            last_trade_ns: s.last_ns,
            // Derived at drain: state then holds only exact integers, so a snapshot survives
            // a JSON round trip bit for bit.
            simple_return: None,
            incomplete: window.window_start_ns < self.horizon_ns,
            watermark_ns: watermark,
            emitted_at_ns: 0,
        }
    }

    /// Everything needed to resume, undrained rows included; deterministic.
    pub fn snapshot(&self) -> NewsWindowsState {
        NewsWindowsState {
            version: STATE_VERSION,
            windows_secs: self.config.windows_secs.clone(),
            watermark: self.watermark.state(),
            dedupe: self.dedupe.clone(),
            horizon_ns: self.horizon_ns,
            history: self
                .history
                .iter()
                .map(|(symbol, trades)| SymbolHistory {
                    symbol: symbol.to_string(),
                    fills: trades.iter().cloned().collect(),
                })
                .collect(),
            pending: self.pending.values().cloned().collect(),
            undrained: self.ready.clone(),
            stats: self.stats,
        }
    }

    /// Replace this instance's state with a snapshot taken with the same window lengths.
    pub fn restore(&mut self, state: NewsWindowsState) -> Result<()> {
        if state.version != STATE_VERSION {
            return Err(CurateError::State(format!(
                "news window state version {} is not {STATE_VERSION}",
                state.version
            )));
        }
        let as_set = |v: &[u64]| v.iter().copied().collect::<BTreeSet<u64>>();
        if as_set(&state.windows_secs) != as_set(&self.config.windows_secs) {
            return Err(CurateError::State(format!(
                "news window state has windows {:?} but curate.news_windows.windows_secs is {:?}",
                state.windows_secs, self.config.windows_secs
            )));
        }
        self.history.clear();
        self.index.clear();
        for SymbolHistory { symbol, fills } in state.history {
            let symbol = SharedStr::from(symbol);
            let held = self.history.entry(symbol.clone()).or_default();
            for Fill { order, px } in fills {
                let previous = self.index.insert(
                    order.trade_key.clone(),
                    (symbol.clone(), order.event_time_ns),
                );
                if previous.is_some() {
                    return Err(CurateError::State(format!(
                        "trade {} is held twice in the news windows' history",
                        &*order.trade_key
                    )));
                }
                held.insert(order, px);
            }
        }
        self.pending = state
            .pending
            .into_iter()
            .map(|w| {
                let closes_at = w.window_end_ns.saturating_add(self.lateness_ns);
                (pending_key(closes_at, &w), w)
            })
            .collect();
        self.watermark.restore(state.watermark);
        self.dedupe = state.dedupe;
        self.horizon_ns = state.horizon_ns;
        self.ready = state.undrained;
        self.stats = state.stats;
        Ok(())
    }
}

fn pending_key(closes_at: i64, w: &PendingWindow) -> PendingKey {
    (
        closes_at,
        w.news_key.clone(),
        w.ticker.clone(),
        w.side,
        w.window_secs,
    )
}

/// A [`NewsTradeWindows`]' persisted state (serde; opaque to callers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewsWindowsState {
    version: u32,
    windows_secs: Vec<u64>,
    watermark: WatermarkState,
    dedupe: OffsetDedupe,
    horizon_ns: i64,
    history: Vec<SymbolHistory>,
    pending: Vec<PendingWindow>,
    undrained: Vec<NewsTradeWindowRow>,
    stats: NewsWindowStats,
}

impl NewsWindowsState {
    /// Move the held trades out, one list per symbol history (see
    /// [`crate::AggregatorState`]'s twin).
    pub(crate) fn take_fill_lists(&mut self) -> Vec<Vec<Fill>> {
        self.history
            .iter_mut()
            .map(|h| std::mem::take(&mut h.fills))
            .collect()
    }

    /// Put back what [`Self::take_fill_lists`] took.
    pub(crate) fn put_fill_lists(&mut self, lists: Vec<Vec<Fill>>) -> Result<()> {
        if lists.len() != self.history.len() {
            return Err(CurateError::State(format!(
                "news window state has {} histories but {} trade lists",
                self.history.len(),
                lists.len()
            )));
        }
        for (history, fills) in self.history.iter_mut().zip(lists) {
            history.fills = fills;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SymbolHistory {
    symbol: String,
    fills: Vec<Fill>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bars::tests::{edit, lineage, trade, T0};
    use marketlake_schemas::decimal::parse_scaled;

    const MIN: i64 = 60 * NS_PER_SEC;

    fn news(
        key: &str,
        published: Option<i64>,
        received: i64,
        tickers: &[&str],
        offset: i64,
    ) -> NewsRow {
        NewsRow {
            news_key: key.into(),
            headline: "h".into(),
            body: None,
            link: None,
            publisher: None,
            published_at_ns: published,
            received_at_ns: received,
            language: None,
            tickers: tickers.iter().map(|t| t.to_string()).collect(),
            reference_version: None,
            extra: Default::default(),
            flags: vec![],
            lineage: Lineage {
                raw_topic: "raw.news".into(),
                ..lineage(offset)
            },
        }
    }
    use marketlake_schemas::l2::Lineage;

    fn config() -> NewsWindowConfig {
        NewsWindowConfig {
            windows_secs: vec![60, 300],
            max_out_of_orderness_secs: 0,
            allowed_lateness_secs: 0,
            news_grace_secs: 60,
        }
    }

    fn px(s: &str) -> i64 {
        parse_scaled(s, 8).unwrap()
    }

    fn row(rows: &[NewsTradeWindowRow], side: WindowSide, secs: i64) -> &NewsTradeWindowRow {
        rows.iter()
            .find(|r| r.side == side && r.window_secs == secs)
            .unwrap()
    }

    /// News at T0 + 10 min on IBM; trades around it, hand-checked per window.
    #[test]
    fn hand_checked_windows_before_and_after_the_news() {
        let mut w = NewsTradeWindows::new(config()).unwrap();
        let n = T0 + 10 * MIN;
        let trades = [
            trade("IBM", "t1", n - 4 * MIN, px("100"), 10_0000, 1), // before 5m only
            trade("IBM", "t2", n - 30 * NS_PER_SEC, px("101"), 20_0000, 2), // before 1m and 5m
            trade("MSFT", "m1", n - 20 * NS_PER_SEC, px("300"), 5_0000, 3), // other symbol
            trade("IBM", "t3", n, px("102"), 10_0000, 4), // after: the anchor is in `after`
            trade("IBM", "t4", n + 2 * MIN, px("99"), 30_0000, 5), // after 5m only
            trade("IBM", "t5", n + 5 * MIN, px("50"), 1_0000, 6), // outside every window
        ];
        for t in &trades[..3] {
            w.process_trade(t);
        }
        w.process_news(&news("rss:1", Some(n), n + 3 * MIN, &["IBM"], 1));
        assert!(
            w.drain(1).is_empty(),
            "nothing closed: watermark is before the news"
        );
        w.process_trade(&trades[3]);
        let before = w.drain(2);
        assert_eq!(
            before.len(),
            2,
            "both before windows close at the news time"
        );
        let b1 = row(&before, WindowSide::Before, 60);
        assert_eq!((b1.trade_count, b1.volume), (1, 20_0000));
        assert_eq!(
            (b1.first_price, b1.last_price),
            (Some(px("101")), Some(px("101")))
        );
        assert_eq!((b1.window_start_ns, b1.window_end_ns), (n - MIN, n));
        let b5 = row(&before, WindowSide::Before, 300);
        assert_eq!((b5.trade_count, b5.volume), (2, 30_0000));
        // (100×10 + 101×20) / 30 = 100.666666666… → 100.66666667
        assert_eq!(b5.vwap, Some(px("100.66666667")));
        assert_eq!(b5.simple_return, Some(0.01));
        assert_eq!(b5.anchor_source, AnchorSource::Published);
        assert!(!b5.incomplete);
        assert_eq!(b5.emitted_at_ns, 2);

        w.process_trade(&trades[4]);
        let after1 = w.drain(3);
        assert_eq!(after1.len(), 1);
        let a1 = row(&after1, WindowSide::After, 60);
        assert_eq!(
            (a1.trade_count, a1.first_price, a1.simple_return),
            (1, Some(px("102")), Some(0.0))
        );
        w.process_trade(&trades[5]);
        let after5 = w.drain(4);
        let a5 = row(&after5, WindowSide::After, 300);
        assert_eq!((a5.trade_count, a5.volume), (2, 40_0000));
        // (102×10 + 99×30) / 40 = 99.75
        assert_eq!(a5.vwap, Some(px("99.75")));
        assert_eq!(a5.last_price, Some(px("99")));
        let r = a5.simple_return.unwrap();
        assert!((r - (99.0 / 102.0 - 1.0)).abs() < 1e-12);
        assert_eq!(w.pending_windows(), 0);
    }

    #[test]
    fn late_news_is_flagged_incomplete_and_received_time_stands_in() {
        let mut w = NewsTradeWindows::new(config()).unwrap();
        for i in 0..40 {
            w.process_trade(&trade(
                "IBM",
                &format!("t{i}"),
                T0 + i * MIN,
                px("100"),
                1_0000,
                i,
            ));
        }
        // keep = 5 min + 0 + 60 s: trades before T0 + 33 min are evicted.
        assert!(w.held_trades() <= 7);
        // Anchor T0 + 20 min, received long after: its windows closed and were evicted.
        w.process_news(&news("rss:late", None, T0 + 20 * MIN, &["IBM", "IBM"], 1));
        let rows = w.drain(9);
        assert_eq!(
            rows.len(),
            4,
            "one ticker (deduplicated), two windows, two sides"
        );
        assert!(rows
            .iter()
            .all(|r| r.incomplete && r.anchor_source == AnchorSource::Received));
        // Arriving one minute (the grace) after its anchor: complete.
        w.process_news(&news(
            "rss:fresh",
            Some(T0 + 38 * MIN),
            T0 + 39 * MIN,
            &["IBM"],
            2,
        ));
        let rows = w.drain(10);
        assert_eq!(
            rows.len(),
            3,
            "the before windows and the 1m after window have closed"
        );
        assert!(rows.iter().all(|r| !r.incomplete));
        assert_eq!(row(&rows, WindowSide::Before, 60).trade_count, 1);
        assert_eq!(row(&rows, WindowSide::Before, 300).trade_count, 5);
        assert_eq!(row(&rows, WindowSide::After, 60).trade_count, 1);
        w.flush_all();
        let rows = w.drain(11);
        assert_eq!(rows.len(), 1);
        assert!(rows.iter().all(|r| !r.incomplete));
        assert_eq!(w.stats().incomplete_rows, 4);
        // News without tickers makes no rows but is counted.
        w.process_news(&news("rss:none", Some(T0), T0, &[], 3));
        assert!(w.drain(12).is_empty());
        assert_eq!(w.stats().news_without_tickers, 1);
    }

    #[test]
    fn corrections_cancels_and_replays_edit_the_history() {
        let mut w = NewsTradeWindows::new(config()).unwrap();
        let n = T0 + 10 * MIN;
        w.process_news(&news("rss:1", Some(n), n, &["IBM"], 1));
        w.process_trade(&trade("IBM", "a", n + 1, px("100"), 10_0000, 1));
        w.process_trade(&trade("IBM", "b", n + 2, px("100"), 10_0000, 2));
        assert_eq!(
            w.process_trade(&trade("IBM", "b", n + 2, px("100"), 10_0000, 2)),
            Disposition::Duplicate
        );
        w.process_trade(&edit(
            TradeAction::Correct,
            "a2",
            "a",
            n + 1,
            px("110"),
            10_0000,
            3,
        ));
        w.process_trade(&edit(TradeAction::Cancel, "b-x", "b", n + 3, 0, 0, 4));
        w.process_trade(&edit(TradeAction::Cancel, "q", "nope", n + 3, 0, 0, 5));
        w.flush_all();
        let rows = w.drain(1);
        let a5 = row(&rows, WindowSide::After, 300);
        assert_eq!((a5.trade_count, a5.first_price), (1, Some(px("110"))));
        assert_eq!(w.stats().unmatched_edits, 1);
        assert_eq!(w.stats().duplicates_skipped, 1);
    }

    #[test]
    fn snapshot_restore_resumes_identically() {
        let mut whole = NewsTradeWindows::new(config()).unwrap();
        let mut first = NewsTradeWindows::new(config()).unwrap();
        enum Event {
            Trade(TradeRow),
            News(NewsRow),
        }
        let events: Vec<Event> = (0..200)
            .map(|i| {
                if i % 17 == 0 {
                    Event::News(news(
                        &format!("n{i}"),
                        Some(T0 + i * 5 * NS_PER_SEC),
                        T0,
                        &["IBM", "MSFT"],
                        i,
                    ))
                } else {
                    let sym = if i % 3 == 0 { "MSFT" } else { "IBM" };
                    Event::Trade(trade(
                        sym,
                        &format!("t{i}"),
                        T0 + i * 5 * NS_PER_SEC,
                        px("100") + i,
                        1_0000,
                        i,
                    ))
                }
            })
            .collect();
        let feed = |w: &mut NewsTradeWindows, e: &Event| match e {
            Event::Trade(t) => w.process_trade(t),
            Event::News(n) => w.process_news(n),
        };
        let mut expected = Vec::new();
        let mut got = Vec::new();
        for (i, e) in events.iter().enumerate() {
            feed(&mut whole, e);
            if i % 10 == 0 {
                expected.extend(whole.drain(i as i64));
            }
        }
        whole.flush_all();
        expected.extend(whole.drain(-1));

        for (i, e) in events[..100].iter().enumerate() {
            feed(&mut first, e);
            if i % 10 == 0 {
                got.extend(first.drain(i as i64));
            }
        }
        let json = serde_json::to_string(&first.snapshot()).unwrap();
        let mut second = NewsTradeWindows::new(config()).unwrap();
        second
            .restore(serde_json::from_str(&json).unwrap())
            .unwrap();
        assert_eq!(second.snapshot(), first.snapshot());
        for (i, e) in events.iter().enumerate().skip(90) {
            feed(&mut second, e); // 90..100 are replays
            if i % 10 == 0 && i >= 100 {
                got.extend(second.drain(i as i64));
            }
        }
        second.flush_all();
        got.extend(second.drain(-1));
        assert_eq!(got, expected);
        assert!(expected.iter().any(|r| r.trade_count > 0));
        assert_eq!(second.stats().duplicates_skipped, 10);
    }
}
