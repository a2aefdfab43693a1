//! A trade as event-time state holds it, its deterministic order, and the OHLCV/VWAP summary of
//! a run of them — one definition shared by the stream, the batch and the news windows, so they
//! cannot disagree on what "open" or "vwap" means.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::sync::Arc;

use marketlake_schemas::decimal::{PRICE_SCALE, QTY_SCALE};
use marketlake_schemas::l2::TradeRow;
use marketlake_schemas::l3::{BarRow, NOTIONAL_SCALE};
use serde::{Deserialize, Serialize};

/// A string several parts of the window state hold at once: a trade's key in its window's fills
/// and in the index, a window's symbol in its key and in the index. Cloning one — several times
/// per trade on the hot path, and for every held trade when a snapshot copies the live state —
/// counts a reference instead of allocating and copying. Ordered, hashed and compared as the
/// `str` it holds, so maps keyed by it are looked up with a `&str`.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct SharedStr(Arc<str>);

impl Borrow<str> for SharedStr {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for SharedStr {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for SharedStr {
    fn from(s: &str) -> Self {
        SharedStr(Arc::from(s))
    }
}

impl From<String> for SharedStr {
    fn from(s: String) -> Self {
        SharedStr(Arc::from(s))
    }
}

impl Serialize for SharedStr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SharedStr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(SharedStr::from)
    }
}

/// Total order of trades: event time, then (received time, raw partition, raw offset) so ties
/// resolve the same whatever the arrival order, then the trade key to make it total.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(crate) struct FillOrder {
    pub event_time_ns: i64,
    pub received_at_ns: i64,
    pub raw_partition: i32,
    pub raw_offset: i64,
    pub trade_key: SharedStr,
}

impl FillOrder {
    pub fn of(trade: &TradeRow) -> Self {
        FillOrder {
            event_time_ns: trade.event_time_ns,
            received_at_ns: trade.received_at_ns,
            raw_partition: trade.lineage.raw_partition,
            raw_offset: trade.lineage.raw_offset,
            trade_key: SharedStr::from(trade.trade_key.as_str()),
        }
    }
}

/// Price (`PRICE_SCALE`) and quantity (`QTY_SCALE`) of a held trade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct Px {
    pub price: i64,
    pub quantity: i64,
}

impl Px {
    pub fn of(trade: &TradeRow) -> Self {
        Px {
            price: trade.price,
            quantity: trade.quantity,
        }
    }
}

/// A held trade as persisted in snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Fill {
    #[serde(flatten)]
    pub(crate) order: FillOrder,
    #[serde(flatten)]
    pub(crate) px: Px,
}

pub(crate) type Fills = BTreeMap<FillOrder, Px>;

/// OHLCV, notional and VWAP of trades added in [`FillOrder`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Summary {
    pub count: i64,
    pub volume: i128,
    /// Σ price × quantity at `NOTIONAL_SCALE`, exact.
    pub notional: i128,
    pub open: Option<i64>,
    pub high: Option<i64>,
    pub low: Option<i64>,
    pub close: Option<i64>,
    pub first_ns: Option<i64>,
    pub last_ns: Option<i64>,
}

impl Summary {
    pub fn of<'a>(fills: impl IntoIterator<Item = (&'a FillOrder, &'a Px)>) -> Self {
        let mut s = Summary::default();
        for (order, px) in fills {
            s.count += 1;
            s.volume += i128::from(px.quantity);
            // i64 × i64 always fits i128; a sum overflowing it would need ~1e11 extreme trades.
            s.notional = s
                .notional
                .saturating_add(i128::from(px.price) * i128::from(px.quantity));
            s.open.get_or_insert(px.price);
            s.first_ns.get_or_insert(order.event_time_ns);
            s.high = Some(s.high.map_or(px.price, |h| h.max(px.price)));
            s.low = Some(s.low.map_or(px.price, |l| l.min(px.price)));
            s.close = Some(px.price);
            s.last_ns = Some(order.event_time_ns);
        }
        s
    }

    /// Volume as the `Decimal128(18, 4)` column holds it. Saturates: 9.2e14 shares in one
    /// window is beyond any feed, and the exact VWAP is computed from the i128 sum anyway.
    pub fn volume_i64(&self) -> i64 {
        i64::try_from(self.volume).unwrap_or(if self.volume < 0 { i64::MIN } else { i64::MAX })
    }

    /// The bar row of window `[start_ns, start_ns + secs)`; `revision`, `watermark_ns` and
    /// `fired_at_ns` are the caller's (the stream stamps them, the batch leaves them 0).
    pub fn bar(
        &self,
        symbol: String,
        secs: u64,
        start_ns: i64,
        revision: i32,
        watermark_ns: i64,
    ) -> BarRow {
        let ns = i64::try_from(secs)
            .unwrap_or(i64::MAX)
            .saturating_mul(1_000_000_000);
        BarRow {
            symbol,
            interval_secs: i64::try_from(secs).unwrap_or(i64::MAX),
            window_start_ns: start_ns,
            window_end_ns: start_ns.saturating_add(ns),
            open: self.open,
            high: self.high,
            low: self.low,
            close: self.close,
            volume: self.volume_i64(),
            vwap: self.vwap(),
            notional: self.notional,
            trade_count: self.count,
            first_trade_ns: self.first_ns,
            last_trade_ns: self.last_ns,
            revision,
            watermark_ns,
            fired_at_ns: 0,
        }
    }

    /// `notional / volume` at `PRICE_SCALE`, rounded half away from zero; `None` for no volume.
    pub fn vwap(&self) -> Option<i64> {
        // notional is at PRICE_SCALE + QTY_SCALE and volume at QTY_SCALE: the quotient is at
        // PRICE_SCALE with no rescaling.
        const _: () = assert!(NOTIONAL_SCALE == PRICE_SCALE + QTY_SCALE);
        divide_half_away(self.notional, self.volume).and_then(|v| i64::try_from(v).ok())
    }
}

/// `last / first − 1` (a ratio, so `f64`); `None` without trades or with a zero first price.
pub(crate) fn simple_return(first: Option<i64>, last: Option<i64>) -> Option<f64> {
    match (first, last) {
        (Some(first), Some(last)) if first != 0 => {
            Some((i128::from(last) - i128::from(first)) as f64 / first as f64)
        }
        _ => None,
    }
}

/// `n / d` rounded half away from zero; `None` when `d` is 0.
pub(crate) fn divide_half_away(n: i128, d: i128) -> Option<i128> {
    if d == 0 {
        return None;
    }
    let quotient = n / d;
    let remainder = n % d;
    if remainder.unsigned_abs() * 2 >= d.unsigned_abs() {
        let away = if (n < 0) == (d < 0) { 1 } else { -1 };
        Some(quotient + away)
    } else {
        Some(quotient)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn divides_rounding_half_away_from_zero() {
        assert_eq!(divide_half_away(7, 2), Some(4));
        assert_eq!(divide_half_away(-7, 2), Some(-4));
        assert_eq!(divide_half_away(7, -2), Some(-4));
        assert_eq!(divide_half_away(5, 3), Some(2));
        assert_eq!(divide_half_away(4, 3), Some(1));
        assert_eq!(divide_half_away(1, 0), None);
    }
}
