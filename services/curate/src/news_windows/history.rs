//! One symbol's recent trades for the news windows: in [`FillOrder`], bucketed by event-time
//! second.
//!
//! The history is the largest thing curation holds (by default 76 minutes of every symbol's
//! trades). An ordered map of single trades cost about 120 bytes a trade in half-full tree nodes
//! (trades arrive nearly in order, and an ordered map split at the right edge leaves its nodes
//! half full). Here each second's trades are one sorted `Vec`: an insert is a binary search and
//! nearly always a push (out-of-order trades move at most one second's trades of one symbol),
//! a window is a run of whole seconds plus two trimmed ends, and eviction drops whole seconds.

use std::collections::BTreeMap;

use crate::fill::{Fill, FillOrder, Px};
use crate::NS_PER_SEC;

#[derive(Debug, Clone, Default)]
pub(super) struct TradeHistory {
    /// Event-time second → that second's trades, sorted by [`FillOrder`].
    seconds: BTreeMap<i64, Vec<Fill>>,
}

fn second_of(event_time_ns: i64) -> i64 {
    event_time_ns.div_euclid(NS_PER_SEC)
}

impl TradeHistory {
    pub fn is_empty(&self) -> bool {
        self.seconds.is_empty()
    }

    /// Add a trade (its key must not be held: the caller removes a previous version first).
    pub fn insert(&mut self, order: FillOrder, px: Px) {
        let second = second_of(order.event_time_ns);
        // A trade that opens a new last second closes the one before (trades come nearly in
        // order): its trades move to a buffer of exactly their size, giving back the spare room
        // the doubling `Vec` kept (a third of its trades on average), which would otherwise be
        // held for the whole history. Moved rather than `shrink_to_fit`, which mimalloc answers
        // in place (no memory back) while the spare room is under half.
        let mut late = false;
        if let Some(mut last) = self.seconds.last_entry() {
            late = *last.key() > second;
            if *last.key() < second {
                let trades = last.get_mut();
                if trades.len() < trades.capacity() {
                    let mut exact = Vec::with_capacity(trades.len());
                    exact.append(trades);
                    *trades = exact;
                }
            }
        }
        let trades = self.seconds.entry(second).or_default();
        // A late trade into a second already cut to size grows it by an eighth, not by doubling
        // (which would leave it half empty for the rest of the history).
        if late && trades.len() == trades.capacity() {
            trades.reserve_exact(trades.len() / 8 + 1);
        }
        // Trades come nearly in order: most go at the end, and a busy second holds thousands
        // (a binary search over them was the largest cost of curation in a one-second burst).
        if trades.last().is_none_or(|last| last.order < order) {
            trades.push(Fill { order, px });
        } else {
            let at = trades.partition_point(|held| held.order < order);
            trades.insert(at, Fill { order, px });
        }
    }

    /// Remove the trade `trade_key` at `event_time_ns`; its price and quantity if it was held.
    pub fn remove(&mut self, trade_key: &str, event_time_ns: i64) -> Option<Px> {
        let second = second_of(event_time_ns);
        let trades = self.seconds.get_mut(&second)?;
        // Only the trades at exactly this event time are candidates (usually one).
        let first = trades.partition_point(|held| held.order.event_time_ns < event_time_ns);
        let at = first
            + trades
                .get(first..)?
                .iter()
                .take_while(|held| held.order.event_time_ns == event_time_ns)
                .position(|held| &*held.order.trade_key == trade_key)?;
        let removed = trades.remove(at);
        if trades.is_empty() {
            self.seconds.remove(&second);
        }
        Some(removed.px)
    }

    /// Drop every trade before `horizon_ns`, calling `dropped` with each.
    pub fn evict_before(&mut self, horizon_ns: i64, mut dropped: impl FnMut(&FillOrder)) {
        let cut = second_of(horizon_ns);
        while let Some(entry) = self.seconds.first_entry() {
            if *entry.key() < cut {
                for held in entry.remove() {
                    dropped(&held.order);
                }
                continue;
            }
            // The horizon's own second: trim its head (none when the horizon is a whole second).
            if *entry.key() == cut {
                let trades = entry.into_mut();
                let keep_from =
                    trades.partition_point(|held| held.order.event_time_ns < horizon_ns);
                for held in trades.drain(..keep_from) {
                    dropped(&held.order);
                }
                if trades.is_empty() {
                    self.seconds.remove(&cut);
                }
            }
            break;
        }
    }

    /// The trades in `[start_ns, end_ns)`, in [`FillOrder`].
    pub fn range(&self, start_ns: i64, end_ns: i64) -> impl Iterator<Item = (&FillOrder, &Px)> {
        // No seconds at all for an empty range (`range` refuses `start > end`).
        (start_ns < end_ns)
            .then(|| {
                self.seconds
                    .range(second_of(start_ns)..=second_of(end_ns.saturating_sub(1)))
            })
            .into_iter()
            .flatten()
            .flat_map(|(_, trades)| trades.iter())
            .filter(move |held| (start_ns..end_ns).contains(&held.order.event_time_ns))
            .map(|held| (&held.order, &held.px))
    }

    /// Every trade, in [`FillOrder`] (for snapshots).
    pub fn iter(&self) -> impl Iterator<Item = &Fill> {
        self.seconds.values().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(key: &str, t: i64) -> FillOrder {
        FillOrder {
            event_time_ns: t,
            received_at_ns: 0,
            raw_partition: 0,
            raw_offset: 0,
            trade_key: key.into(),
        }
    }

    fn keys<'a>(fills: impl Iterator<Item = (&'a FillOrder, &'a Px)>) -> Vec<String> {
        fills.map(|(o, _)| o.trade_key.to_string()).collect()
    }

    #[test]
    fn a_closed_second_is_cut_to_size_and_a_late_trade_grows_it_by_an_eighth() {
        let mut h = TradeHistory::default();
        let s = NS_PER_SEC;
        let px = Px {
            price: 1,
            quantity: 1,
        };
        for i in 0..9 {
            h.insert(order(&format!("a{i}"), s + 10 * i), px);
        }
        assert!(h.seconds[&1].capacity() > 9, "a growing second has room");
        h.insert(order("b", 2 * s), px);
        assert_eq!(
            h.seconds[&1].capacity(),
            9,
            "cut when the next second opened"
        );
        h.insert(order("late", s + 15), px);
        let first = &h.seconds[&1];
        assert_eq!(first.len(), 10);
        assert!(
            first.capacity() <= 11,
            "grew by an eighth: {}",
            first.capacity()
        );
        let keys: Vec<String> = h.iter().map(|f| f.order.trade_key.to_string()).collect();
        assert_eq!(keys[..3], ["a0", "a1", "late"]);
        assert_eq!(keys.last().map(String::as_str), Some("b"));
    }

    #[test]
    fn keeps_fill_order_across_seconds_and_out_of_order_inserts() {
        let mut h = TradeHistory::default();
        let s = NS_PER_SEC;
        for (key, t) in [
            ("c", 2 * s + 5),
            ("a", s),
            ("d", 3 * s),
            ("b", 2 * s + 1),
            ("b0", 2 * s + 1),
        ] {
            h.insert(
                order(key, t),
                Px {
                    price: 1,
                    quantity: 1,
                },
            );
        }
        let all: Vec<String> = h.iter().map(|f| f.order.trade_key.to_string()).collect();
        assert_eq!(all, ["a", "b", "b0", "c", "d"]);
        assert_eq!(keys(h.range(2 * s + 1, 3 * s)), ["b", "b0", "c"]);
        assert_eq!(keys(h.range(2 * s + 2, 3 * s + 1)), ["c", "d"]);
        assert!(keys(h.range(3 * s, 3 * s)).is_empty());
        assert!(keys(h.range(4 * s, s)).is_empty());

        assert_eq!(h.remove("b", 2 * s + 1).map(|p| p.price), Some(1));
        assert_eq!(h.remove("b", 2 * s + 1), None);
        assert_eq!(h.remove("a", 2 * s), None, "a is held at another time");

        let mut dropped = Vec::new();
        h.evict_before(2 * s + 3, |o| dropped.push(o.trade_key.to_string()));
        assert_eq!(dropped, ["a", "b0"]);
        assert_eq!(keys(h.range(i64::MIN, i64::MAX)), ["c", "d"]);
        h.evict_before(10 * s, |_| {});
        assert!(h.is_empty());
    }
}
