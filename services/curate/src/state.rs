//! The curator's whole window state — one [`BarAggregator`] per symbol, one
//! [`NewsTradeWindows`] per ticker — and the only three things that change it: a trade, a news
//! item, the end of a cycle.
//!
//! The live loop ([`crate::pipeline`]) and the journal replay ([`crate::persist`]) both go
//! through [`CurateState`], so a replay takes exactly the steps of the run it repeats: which
//! aggregators exist, the order they are advanced and drained in, and what a cycle end does with
//! the idle advance and the final flush are defined once, here.

use std::collections::BTreeMap;

use marketlake_schemas::l2::{NewsRow, TradeRow};
use marketlake_schemas::l3::{BarRow, LateRecordRow, NewsTradeWindowRow};
use serde::{Deserialize, Serialize};

use crate::fill::FillOrder;
use crate::{
    AggregatorState, BarAggregator, BarConfig, CurateError, Disposition, NewsTradeWindows,
    NewsWindowConfig, NewsWindowsState, Result,
};

/// Rows drained in one cycle, per table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Outbox {
    pub bars: Vec<BarRow>,
    pub late: Vec<LateRecordRow>,
    pub windows: Vec<NewsTradeWindowRow>,
}

impl Outbox {
    pub fn is_empty(&self) -> bool {
        self.bars.is_empty() && self.late.is_empty() && self.windows.is_empty()
    }

    pub fn extend(&mut self, other: Outbox) {
        self.bars.extend(other.bars);
        self.late.extend(other.late);
        self.windows.extend(other.windows);
    }
}

/// What the end of a cycle does besides draining. Everything here is recorded in the journal,
/// so the wall-clock decisions (is the feed idle? what time is it?) replay as they were taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CycleEnd {
    /// No record for `curate.idle_advance_secs`: every watermark moves to its newest event time.
    pub idle: bool,
    /// End of a back-fill: every window fires for the last time.
    pub final_fire: bool,
    /// Processing time stamped on the drained rows (UTC ns).
    pub now_ns: i64,
}

/// What [`CurateState::sizes`] counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateSizes {
    /// Symbols with a bar aggregator.
    pub symbols: usize,
    /// Trades the bar windows hold (each once, whatever the number of intervals holding it).
    pub bar_trades: usize,
    pub open_bar_windows: usize,
    /// Trades the news windows' histories hold.
    pub history_trades: usize,
    /// News windows registered and waiting for the watermark.
    pub pending_news_windows: usize,
}

/// Every open window of the curator, keyed by symbol (bars) and ticker (news windows).
#[derive(Debug, Clone)]
pub struct CurateState {
    bar_config: BarConfig,
    news_config: NewsWindowConfig,
    /// One aggregator per symbol: each symbol's bars follow that symbol's own event-time clock
    /// (a per-key watermark). Feeds replay different days, years apart; one global watermark
    /// made a whole feed "late" as soon as another feed's newer trades moved it.
    bars: BTreeMap<String, BarAggregator>,
    /// One instance per ticker: trades of a symbol feed its history, news tagged with it
    /// registers windows.
    windows: BTreeMap<String, NewsTradeWindows>,
}

impl CurateState {
    /// An empty state; fails on an invalid configuration.
    pub fn new(bar_config: BarConfig, news_config: NewsWindowConfig) -> Result<Self> {
        bar_config.validate()?;
        news_config.validate()?;
        Ok(CurateState {
            bar_config,
            news_config,
            bars: BTreeMap::new(),
            windows: BTreeMap::new(),
        })
    }

    pub fn bar_config(&self) -> &BarConfig {
        &self.bar_config
    }

    pub fn news_config(&self) -> &NewsWindowConfig {
        &self.news_config
    }

    /// The bar aggregators by symbol.
    pub fn bars(&self) -> &BTreeMap<String, BarAggregator> {
        &self.bars
    }

    /// The news windows by ticker.
    pub fn windows(&self) -> &BTreeMap<String, NewsTradeWindows> {
        &self.windows
    }

    /// Trades held in bar windows and news histories (a trade counts once per interval and once
    /// per history holding it), for metrics and tests.
    pub fn held_entries(&self) -> usize {
        let bars: usize = self.bars.values().map(BarAggregator::held_fills).sum();
        let news: usize = self
            .windows
            .values()
            .map(NewsTradeWindows::held_trades)
            .sum();
        bars + news
    }

    /// Distinct trades stored: the bars' stores (each trade once for all its intervals) plus
    /// the news histories. What curation's memory grows with.
    pub fn held_trades(&self) -> usize {
        let sizes = self.sizes();
        sizes.bar_trades + sizes.history_trades
    }

    /// How much the state holds, for metrics (a walk over the symbols, each O(1)).
    pub fn sizes(&self) -> StateSizes {
        StateSizes {
            symbols: self.bars.len(),
            bar_trades: self.bars.values().map(BarAggregator::held_trades).sum(),
            open_bar_windows: self.bars.values().map(BarAggregator::open_windows).sum(),
            history_trades: self
                .windows
                .values()
                .map(NewsTradeWindows::held_trades)
                .sum(),
            pending_news_windows: self
                .windows
                .values()
                .map(NewsTradeWindows::pending_windows)
                .sum(),
        }
    }

    fn bars_of(&mut self, symbol: &str) -> Result<&mut BarAggregator> {
        if !self.bars.contains_key(symbol) {
            let aggregator = BarAggregator::new(self.bar_config.clone())?;
            self.bars.insert(symbol.to_string(), aggregator);
        }
        self.bars
            .get_mut(symbol)
            .ok_or_else(|| CurateError::State(format!("no aggregator for {symbol}")))
    }

    fn windows_of(&mut self, ticker: &str) -> Result<&mut NewsTradeWindows> {
        if !self.windows.contains_key(ticker) {
            let windows = NewsTradeWindows::new(self.news_config.clone())?;
            self.windows.insert(ticker.to_string(), windows);
        }
        self.windows
            .get_mut(ticker)
            .ok_or_else(|| CurateError::State(format!("no news windows for {ticker}")))
    }

    /// One enriched trade: into its symbol's bars and its symbol's trade history. The
    /// disposition is the bars' (replays are skipped by both).
    pub fn apply_trade(&mut self, trade: &TradeRow) -> Result<Disposition> {
        let order = FillOrder::of(trade);
        let disposition = self
            .bars_of(&trade.symbol)?
            .process_ordered(trade, order.clone());
        // Every symbol keeps its recent trades: news about it may come later and asks for the
        // trading before its published time.
        self.windows_of(&trade.symbol)?
            .process_ordered(trade, order);
        Ok(disposition)
    }

    /// One enriched news item: its windows registered with each ticker it names.
    pub fn apply_news(&mut self, news: &NewsRow) -> Result<()> {
        for ticker in &news.tickers {
            let mut single = news.clone();
            single.tickers = vec![ticker.clone()];
            self.windows_of(ticker)?.process_news(&single);
        }
        Ok(())
    }

    /// End a cycle: idle advance or final flush, then drain everything that fired. Also says
    /// whether the state changed (a watermark moved or rows came out): a cycle end that changed
    /// nothing need not be journaled, since replaying it would do nothing either.
    pub fn end_cycle(&mut self, end: CycleEnd) -> (Outbox, bool) {
        let mut outbox = Outbox::default();
        let mut moved = false;
        for aggregator in self.bars.values_mut() {
            let before = aggregator.watermark_ns();
            if end.final_fire {
                aggregator.flush_all();
            } else if end.idle {
                if let Some(max_seen) = aggregator.max_event_time_ns() {
                    aggregator.advance_watermark_to(max_seen);
                }
            }
            moved |= aggregator.watermark_ns() != before;
            let drained = aggregator.drain(end.now_ns);
            outbox.bars.extend(drained.bars);
            outbox.late.extend(drained.late);
        }
        for windows in self.windows.values_mut() {
            let before = windows.watermark_ns();
            if end.final_fire {
                windows.flush_all();
            } else if end.idle {
                if let Some(max_seen) = windows.max_event_time_ns() {
                    windows.advance_watermark_to(max_seen);
                }
            }
            moved |= windows.watermark_ns() != before;
            outbox.windows.extend(windows.drain(end.now_ns));
        }
        let changed = moved || !outbox.is_empty();
        (outbox, changed)
    }

    /// The same windows under another configuration, through each aggregator's own
    /// snapshot/restore (which refuses changed intervals and applies a changed lateness).
    pub fn reconfigure(
        &self,
        bar_config: &BarConfig,
        news_config: &NewsWindowConfig,
    ) -> Result<Self> {
        let mut next = CurateState::new(bar_config.clone(), news_config.clone())?;
        for (symbol, aggregator) in &self.bars {
            next.restore_bars(symbol.clone(), aggregator.snapshot())?;
        }
        for (ticker, windows) in &self.windows {
            next.restore_windows(ticker.clone(), windows.snapshot())?;
        }
        Ok(next)
    }

    /// Add a symbol's bar aggregator from its saved state.
    pub(crate) fn restore_bars(&mut self, symbol: String, saved: AggregatorState) -> Result<()> {
        let mut aggregator = BarAggregator::new(self.bar_config.clone())?;
        aggregator.restore(saved)?;
        self.bars.insert(symbol, aggregator);
        Ok(())
    }

    /// Add a ticker's news windows from their saved state.
    pub(crate) fn restore_windows(
        &mut self,
        ticker: String,
        saved: NewsWindowsState,
    ) -> Result<()> {
        let mut windows = NewsTradeWindows::new(self.news_config.clone())?;
        windows.restore(saved)?;
        self.windows.insert(ticker, windows);
        Ok(())
    }
}
