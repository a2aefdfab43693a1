//! Bars recomputed from a finite set of trades: final values only, corrections and cancels
//! applied. The reference the streaming [`crate::BarAggregator`] is tested against, and what a
//! reconciliation job runs over `l2.trades` to check `l3.bars`.

use std::collections::{BTreeMap, HashMap};

use marketlake_schemas::l2::{TradeAction, TradeRow};
use marketlake_schemas::l3::BarRow;

use crate::bars::validate_intervals;
use crate::fill::{FillOrder, Fills, Px, Summary};
use crate::{Result, NS_PER_SEC};

/// The trades that stand once every correction and cancel is applied.
///
/// `New` rows are live (a repeated `trade_key`: the later row wins). A `Correct` replaces the
/// live trade named by `supersedes`, a `Cancel` removes it; chains (a correction of a
/// correction) resolve whatever their order in the slice. A correction or cancel whose original
/// is not in the slice, or is already superseded by an earlier one, is ignored — as the stream
/// sends it to the late output.
pub fn final_trades(trades: &[TradeRow]) -> Vec<&TradeRow> {
    let mut live: HashMap<&str, &TradeRow> = HashMap::new();
    let mut waiting: Vec<&TradeRow> = Vec::new();
    for trade in trades {
        match trade.action {
            TradeAction::New => {
                live.insert(&trade.trade_key, trade);
            }
            TradeAction::Correct | TradeAction::Cancel => waiting.push(trade),
        }
    }
    // Apply what can be applied until nothing changes: an edit whose original is itself an
    // edit applies once that one has.
    loop {
        let before = waiting.len();
        waiting.retain(|edit| {
            let original = edit.supersedes.as_deref().and_then(|k| live.remove(k));
            if original.is_none() {
                return true;
            }
            if edit.action == TradeAction::Correct {
                live.insert(&edit.trade_key, edit);
            }
            false
        });
        if waiting.len() == before {
            break;
        }
    }
    let mut rows: Vec<&TradeRow> = live.into_values().collect();
    rows.sort_by_cached_key(|t| FillOrder::of(t));
    rows
}

/// Final bars of `trades` for each interval, sorted by (symbol, interval, window start).
/// Rows carry `revision = 0`, `watermark_ns = fired_at_ns = 0`; compare them to streamed bars
/// with [`same_bar`].
pub fn compute_bars(trades: &[TradeRow], intervals_secs: &[u64]) -> Result<Vec<BarRow>> {
    validate_intervals(intervals_secs)?;
    let live = final_trades(trades);
    let mut windows: BTreeMap<(String, u64, i64), Fills> = BTreeMap::new();
    for &secs in intervals_secs {
        // Validated: fits and is positive.
        let ns = i64::try_from(secs)
            .unwrap_or(i64::MAX)
            .saturating_mul(NS_PER_SEC);
        for trade in &live {
            let start = trade.event_time_ns.div_euclid(ns).saturating_mul(ns);
            windows
                .entry((trade.symbol.clone(), secs, start))
                .or_default()
                .insert(FillOrder::of(trade), Px::of(trade));
        }
    }
    Ok(windows
        .into_iter()
        .map(|((symbol, secs, start), fills)| Summary::of(&fills).bar(symbol, secs, start, 0, 0))
        .collect())
}

/// True when two rows describe the same bar values, ignoring emission metadata
/// (`revision`, `watermark_ns`, `fired_at_ns`).
pub fn same_bar(a: &BarRow, b: &BarRow) -> bool {
    BarRow {
        revision: 0,
        watermark_ns: 0,
        fired_at_ns: 0,
        ..a.clone()
    } == BarRow {
        revision: 0,
        watermark_ns: 0,
        fired_at_ns: 0,
        ..b.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bars::tests::{edit, trade};

    #[test]
    fn edits_resolve_in_any_order_and_unmatched_ones_are_ignored() {
        let a = trade("IBM", "a", 1, 100, 1, 0);
        let b = edit(TradeAction::Correct, "b", "a", 2, 101, 1, 1);
        let c = edit(TradeAction::Correct, "c", "b", 3, 102, 1, 2);
        let d = edit(TradeAction::Cancel, "d", "zzz", 4, 0, 0, 3);
        let x = trade("IBM", "x", 5, 100, 1, 4);
        let y = edit(TradeAction::Cancel, "y", "x", 6, 0, 0, 5);
        // c names b, which comes after it in the slice.
        let rows = [c.clone(), x, a, b, d, y];
        let live = final_trades(&rows);
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].trade_key, "c");
        assert_eq!(live[0].price, 102);
    }

    #[test]
    fn refuses_intervals_that_do_not_divide_a_day() {
        assert!(compute_bars(&[], &[60, 7]).is_err());
        assert!(compute_bars(&[], &[]).is_err());
        assert!(compute_bars(&[], &[60, 60]).is_err());
        assert_eq!(compute_bars(&[], &[60, 86_400]).unwrap(), vec![]);
    }
}
