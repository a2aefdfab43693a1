//! The event-time clock: a bounded-out-of-orderness watermark.
//!
//! `watermark = max event time seen − max_out_of_orderness`, never moving back. It asserts "no
//! record older than this is still expected"; a window `[start, end)` is complete once
//! `end <= watermark`. The bound must cover the disorder of everything feeding one operator
//! (feed jitter, several sources and partitions interleaved): a record more than that behind
//! the newest one seen is late.
//!
//! [`Watermark::advance_to`] is the idle hook: when no record arrives for a while, event time
//! stops and windows would wait for ever, so the pipeline may move the watermark from
//! processing time (e.g. `now − max_out_of_orderness − expected feed delay` after N idle
//! seconds). Only for live feeds: during a back-fill processing time is far ahead of event time
//! and it would make every record late.

use serde::{Deserialize, Serialize};

/// A monotonic event-time watermark (UTC ns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watermark {
    max_out_of_orderness_ns: i64,
    max_event_ns: Option<i64>,
    current_ns: Option<i64>,
}

/// The persisted part of a [`Watermark`] (the bound comes from the configuration).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatermarkState {
    pub max_event_ns: Option<i64>,
    pub watermark_ns: Option<i64>,
}

impl Watermark {
    pub fn new(max_out_of_orderness_ns: i64) -> Self {
        Watermark {
            max_out_of_orderness_ns,
            max_event_ns: None,
            current_ns: None,
        }
    }

    /// The watermark, `None` before the first record.
    pub fn current(&self) -> Option<i64> {
        self.current_ns
    }

    /// The watermark as a number: `i64::MIN` ("nothing is complete") before the first record.
    pub fn value(&self) -> i64 {
        self.current_ns.unwrap_or(i64::MIN)
    }

    /// Newest event time seen.
    pub fn max_event_ns(&self) -> Option<i64> {
        self.max_event_ns
    }

    /// Account for one record's event time; returns `(old, new)` when the watermark moved.
    pub fn observe(&mut self, event_time_ns: i64) -> Option<(i64, i64)> {
        let max = self
            .max_event_ns
            .map_or(event_time_ns, |m| m.max(event_time_ns));
        self.max_event_ns = Some(max);
        self.advance_to(max.saturating_sub(self.max_out_of_orderness_ns))
    }

    /// Move the watermark to `ns` if that is ahead (idle advance); returns `(old, new)` when it
    /// moved.
    pub fn advance_to(&mut self, ns: i64) -> Option<(i64, i64)> {
        let old = self.value();
        if self.current_ns.is_some() && ns <= old {
            return None;
        }
        self.current_ns = Some(ns);
        Some((old, ns))
    }

    pub fn state(&self) -> WatermarkState {
        WatermarkState {
            max_event_ns: self.max_event_ns,
            watermark_ns: self.current_ns,
        }
    }

    pub fn restore(&mut self, state: WatermarkState) {
        self.max_event_ns = state.max_event_ns;
        self.current_ns = state.watermark_ns;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trails_the_newest_event_by_the_bound_and_never_moves_back() {
        let mut w = Watermark::new(2);
        assert_eq!(w.current(), None);
        assert_eq!(w.observe(10), Some((i64::MIN, 8)));
        assert_eq!(w.observe(7), None, "an older record does not move it");
        assert_eq!(w.observe(11), Some((8, 9)));
        assert_eq!(w.advance_to(5), None);
        assert_eq!(w.advance_to(20), Some((9, 20)));
        assert_eq!(w.observe(15), None, "idle advance is kept");
        assert_eq!(w.max_event_ns(), Some(15));
        let mut restored = Watermark::new(2);
        restored.restore(w.state());
        assert_eq!(restored, w);
    }
}
