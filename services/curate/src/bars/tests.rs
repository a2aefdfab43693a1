//! Bar aggregation: hand-checked bars, lateness and revisions, corrections, and a seeded
//! out-of-order stream checked against the batch recomputation, across crashes and restores.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use marketlake_schemas::decimal::{parse_scaled, PRICE_SCALE, QTY_SCALE};
use marketlake_schemas::l2::{Lineage, TradeAction, TradeRow};
use marketlake_schemas::l3::{BarRow, LateReason};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::batch::{compute_bars, same_bar};
use crate::NS_PER_SEC;

/// 2013-10-07T13:30:00Z: aligned to the minute and to 5 minutes, not to the hour.
pub(crate) const T0: i64 = 1_381_152_600_000_000_000;
const SEC: i64 = NS_PER_SEC;

pub(crate) fn lineage(offset: i64) -> Lineage {
    Lineage {
        source_id: "fix-a".into(),
        source_uri: "file:///drop.log".into(),
        source_position: offset,
        raw_topic: "raw.trades".into(),
        raw_partition: 0,
        raw_offset: offset,
    }
}

/// A new trade; `offset` is its raw offset in partition 0 (and must grow with arrival).
pub(crate) fn trade(
    symbol: &str,
    key: &str,
    t: i64,
    price: i64,
    qty: i64,
    offset: i64,
) -> TradeRow {
    TradeRow {
        received_at_ns: t + 1_000,
        ..TradeRow::bare(key.into(), symbol.into(), price, qty, t, lineage(offset))
    }
}

/// A correction or cancel of `supersedes` (symbol IBM).
pub(crate) fn edit(
    action: TradeAction,
    key: &str,
    supersedes: &str,
    t: i64,
    price: i64,
    qty: i64,
    offset: i64,
) -> TradeRow {
    TradeRow {
        action,
        supersedes: Some(supersedes.into()),
        ..trade("IBM", key, t, price, qty, offset)
    }
}

fn px(text: &str) -> i64 {
    parse_scaled(text, PRICE_SCALE).unwrap()
}

fn qty(text: &str) -> i64 {
    parse_scaled(text, QTY_SCALE).unwrap()
}

fn config(intervals: &[u64], bound: u64, lateness: u64) -> BarConfig {
    BarConfig {
        intervals_secs: intervals.to_vec(),
        max_out_of_orderness_secs: bound,
        allowed_lateness_secs: lateness,
    }
}

fn find<'a>(bars: &'a [BarRow], symbol: &str, interval: i64, start: i64) -> &'a BarRow {
    bars.iter()
        .find(|b| b.symbol == symbol && b.interval_secs == interval && b.window_start_ns == start)
        .unwrap_or_else(|| panic!("no {symbol} {interval}s bar at {start}"))
}

#[test]
fn config_is_validated_with_the_setting_named() {
    assert!(BarConfig::default().validate().is_ok());
    for bad in [vec![], vec![0], vec![7], vec![60, 60], vec![172_800]] {
        let err = BarAggregator::new(config(&bad, 2, 60)).unwrap_err();
        assert!(
            err.to_string().contains("curate.bars.intervals_secs"),
            "{err}"
        );
    }
    let divisors: Vec<u64> = (1..=86_400).filter(|d| 86_400 % d == 0).collect();
    assert!(BarAggregator::new(config(&divisors[..64], 2, 60)).is_ok());
    let err = BarAggregator::new(config(&divisors[..65], 2, 60)).unwrap_err();
    assert!(err.to_string().contains("at most 64"), "{err}");
    let err = BarAggregator::new(config(&[60], u64::MAX, 60)).unwrap_err();
    assert!(err.to_string().contains("max_out_of_orderness_secs"));
    let parsed: BarConfig =
        serde_json::from_str(r#"{"intervals_secs":[60],"allowed_lateness_secs":5}"#).unwrap();
    assert_eq!(
        parsed.max_out_of_orderness_secs, 2,
        "unset fields take defaults"
    );
    assert!(serde_json::from_str::<BarConfig>(r#"{"interval":[60]}"#).is_err());
}

/// Golden bars, worked by hand:
/// - IBM minute 0: 100.00×10 @10s, 101.50×5 @20s, 99.75×20 @40s → O 100, H 101.5, L 99.75,
///   C 99.75, V 35, notional 3502.5, VWAP 100.0714285714… → 100.07142857;
/// - IBM minute 1: 100.25×1 @65s → the 5m bar: V 36, notional 3602.75,
///   VWAP 100.0763888… → 100.07638889;
/// - HALF minute 0: 1.00000001×1 and 1.00000002×1 → VWAP 1.000000015 → 1.00000002 (half away
///   from zero).
#[test]
fn golden_bars_fire_when_the_watermark_passes_their_end() {
    let mut agg = BarAggregator::new(config(&[60, 300], 2, 0)).unwrap();
    let trades = [
        trade("IBM", "1", T0 + 10 * SEC, px("100"), qty("10"), 1),
        trade("IBM", "2", T0 + 20 * SEC, px("101.5"), qty("5"), 2),
        trade("HALF", "h1", T0 + 21 * SEC, px("1.00000001"), qty("1"), 3),
        trade("HALF", "h2", T0 + 22 * SEC, px("1.00000002"), qty("1"), 4),
        trade("IBM", "3", T0 + 40 * SEC, px("99.75"), qty("20"), 5),
        trade("IBM", "4", T0 + 65 * SEC, px("100.25"), qty("1"), 6),
    ];
    for t in &trades[..5] {
        assert_eq!(agg.process_trade(t), Disposition::Applied);
    }
    assert!(agg.drain(1).is_empty(), "watermark 38 s: nothing due");
    agg.process_trade(&trades[5]);
    assert_eq!(agg.watermark_ns(), Some(T0 + 63 * SEC));
    let out = agg.drain(7);
    assert_eq!(out.bars.len(), 2, "minute 0 of IBM and HALF");
    let ibm = find(&out.bars, "IBM", 60, T0);
    let expected = BarRow {
        symbol: "IBM".into(),
        interval_secs: 60,
        window_start_ns: T0,
        window_end_ns: T0 + 60 * SEC,
        open: Some(px("100")),
        high: Some(px("101.5")),
        low: Some(px("99.75")),
        close: Some(px("99.75")),
        volume: qty("35"),
        vwap: Some(px("100.07142857")),
        notional: 3_502_500_000_000_000,
        trade_count: 3,
        first_trade_ns: Some(T0 + 10 * SEC),
        last_trade_ns: Some(T0 + 40 * SEC),
        revision: 0,
        watermark_ns: T0 + 63 * SEC,
        fired_at_ns: 7,
    };
    assert_eq!(*ibm, expected);
    assert_eq!(find(&out.bars, "HALF", 60, T0).vwap, Some(px("1.00000002")));

    agg.flush_all();
    let out = agg.drain(8);
    assert_eq!(out.bars.len(), 3, "IBM minute 1, IBM and HALF 5 minutes");
    let five = find(&out.bars, "IBM", 300, T0);
    assert_eq!((five.volume, five.trade_count), (qty("36"), 4));
    assert_eq!(five.vwap, Some(px("100.07638889")));
    assert_eq!(
        (five.open, five.close),
        (Some(px("100")), Some(px("100.25")))
    );
    assert_eq!(agg.open_windows(), 0, "flush releases every window");

    // The batch recomputation agrees on every bar.
    let batch = compute_bars(&trades, &[60, 300]).unwrap();
    assert_eq!(batch.len(), 5);
    assert!(same_bar(&expected, find(&batch, "IBM", 60, T0)));
    assert!(same_bar(five, find(&batch, "IBM", 300, T0)));
}

#[test]
fn open_and_close_ties_resolve_by_receive_time_then_raw_position_whatever_the_arrival_order() {
    let t = T0 + 5 * SEC;
    let mut early = trade("IBM", "early", t, px("10"), qty("1"), 1);
    early.received_at_ns = T0 + 6 * SEC;
    let mut late = trade("IBM", "late", t, px("20"), qty("1"), 2);
    late.received_at_ns = T0 + 9 * SEC;
    let mut p0 = trade("IBM", "p0", t, px("30"), qty("1"), 3);
    p0.received_at_ns = T0 + 9 * SEC;
    p0.lineage.raw_partition = 1;
    for order in [[&early, &late, &p0], [&p0, &late, &early]] {
        let mut agg = BarAggregator::new(config(&[60], 0, 0)).unwrap();
        for (offset, row) in order.into_iter().enumerate() {
            let mut row = row.clone();
            // Arrival order decides raw offsets; keep the partition-1 row's offset fixed.
            if row.lineage.raw_partition == 0 {
                row.lineage.raw_offset = offset as i64;
            }
            agg.process_trade(&row);
        }
        agg.flush_all();
        let bars = agg.drain(0).bars;
        assert_eq!(bars[0].open, Some(px("10")), "earliest received opens");
        assert_eq!(
            bars[0].close,
            Some(px("30")),
            "same receive time: higher partition closes"
        );
    }
}

#[test]
fn allowed_lateness_refires_with_accumulating_revisions_then_late_records() {
    let mut agg = BarAggregator::new(config(&[60], 0, 30)).unwrap();
    agg.process_trade(&trade("IBM", "a", T0 + 10 * SEC, px("100"), qty("1"), 1));
    agg.process_trade(&trade("IBM", "b", T0 + 70 * SEC, px("100"), qty("1"), 2));
    let out = agg.drain(1);
    assert_eq!(out.bars.len(), 1);
    assert_eq!((out.bars[0].revision, out.bars[0].trade_count), (0, 1));

    // Two late trades within lateness between drains: one new revision holding both.
    let c = trade("IBM", "c", T0 + 20 * SEC, px("90"), qty("1"), 3);
    assert_eq!(agg.process_trade(&c), Disposition::Applied);
    agg.process_trade(&trade("IBM", "c2", T0 + 21 * SEC, px("95"), qty("1"), 4));
    let out = agg.drain(2);
    assert_eq!(out.bars.len(), 1);
    let rev1 = &out.bars[0];
    assert_eq!(
        (rev1.revision, rev1.trade_count, rev1.low),
        (1, 3, Some(px("90")))
    );
    assert_eq!(rev1.watermark_ns, T0 + 70 * SEC);

    // Another late trade, then the watermark passes end + lateness before the next drain:
    // the revision is made when the window is dropped, not lost.
    agg.process_trade(&trade("IBM", "d", T0 + 30 * SEC, px("80"), qty("1"), 5));
    agg.process_trade(&trade("IBM", "e", T0 + 95 * SEC, px("100"), qty("1"), 6));
    let out = agg.drain(3);
    assert_eq!(out.bars.len(), 1);
    assert_eq!((out.bars[0].revision, out.bars[0].trade_count), (2, 4));
    assert_eq!(out.bars[0].watermark_ns, T0 + 95 * SEC);

    // Beyond the allowed lateness: a late record, never silently dropped.
    let f = trade("IBM", "f", T0 + 40 * SEC, px("1"), qty("1"), 7);
    assert_eq!(agg.process_trade(&f), Disposition::Late { intervals: 1 });
    let out = agg.drain(4);
    assert!(out.bars.is_empty());
    assert_eq!(out.late.len(), 1);
    let late = &out.late[0];
    assert_eq!(late.reason, LateReason::BeyondAllowedLateness);
    assert_eq!(
        (late.window_start_ns, late.window_end_ns),
        (T0, T0 + 60 * SEC)
    );
    assert_eq!((late.watermark_ns, late.detected_at_ns), (T0 + 95 * SEC, 4));
    assert_eq!((late.trade_key.as_str(), late.lineage.raw_offset), ("f", 7));
    let stats = agg.stats();
    assert_eq!(
        (
            stats.late_records,
            stats.bars_emitted,
            stats.revisions_emitted
        ),
        (1, 3, 2)
    );
}

#[test]
fn late_is_decided_per_interval() {
    let mut agg = BarAggregator::new(config(&[60, 3_600], 0, 10)).unwrap();
    agg.process_trade(&trade("IBM", "a", T0 + 200 * SEC, px("1"), qty("1"), 1));
    // Minute window [T0, T0+60) is dropped (60 + 10 <= 200); the hour is still open.
    let b = trade("IBM", "b", T0 + 5 * SEC, px("2"), qty("1"), 2);
    assert_eq!(agg.process_trade(&b), Disposition::Late { intervals: 1 });
    agg.flush_all();
    let out = agg.drain(0);
    assert_eq!(out.late.len(), 1);
    assert_eq!(out.late[0].interval_secs, 60);
    let hour_start = T0.div_euclid(3_600 * SEC) * 3_600 * SEC;
    assert_eq!(find(&out.bars, "IBM", 3_600, hour_start).trade_count, 2);
}

#[test]
fn corrections_and_cancels_revise_the_bar() {
    let mut agg = BarAggregator::new(config(&[60], 0, 120)).unwrap();
    let mut rows = vec![
        trade("IBM", "a", T0 + 10 * SEC, px("100"), qty("10"), 1),
        trade("IBM", "b", T0 + 20 * SEC, px("105"), qty("10"), 2),
        trade("IBM", "c", T0 + 30 * SEC, px("95"), qty("10"), 3),
        trade("IBM", "x", T0 + 61 * SEC, px("100"), qty("1"), 4),
    ];
    for r in &rows {
        agg.process_trade(r);
    }
    let bar = agg.drain(1).bars.remove(0);
    assert_eq!(
        (bar.high, bar.low, bar.revision),
        (Some(px("105")), Some(px("95")), 0)
    );

    // Correct b's price, cancel c: high and low move back, which aggregates alone cannot do.
    rows.push(edit(
        TradeAction::Correct,
        "b2",
        "b",
        T0 + 20 * SEC,
        px("102"),
        qty("10"),
        5,
    ));
    rows.push(edit(
        TradeAction::Cancel,
        "c-x",
        "c",
        T0 + 62 * SEC,
        0,
        0,
        6,
    ));
    for r in &rows[4..] {
        assert_eq!(agg.process_trade(r), Disposition::Applied);
    }
    let bar = agg.drain(2).bars.remove(0);
    assert_eq!(bar.revision, 1);
    assert_eq!(
        (bar.open, bar.high, bar.low, bar.close),
        (
            Some(px("100")),
            Some(px("102")),
            Some(px("100")),
            Some(px("102"))
        )
    );
    assert_eq!((bar.trade_count, bar.volume), (2, qty("20")));

    // A correction moving a's event time into minute 1 (not yet due) leaves minute 0 with b2.
    rows.push(edit(
        TradeAction::Correct,
        "a2",
        "a",
        T0 + 65 * SEC,
        px("100"),
        qty("10"),
        7,
    ));
    agg.process_trade(&rows[6]);
    let bar = agg.drain(3).bars.remove(0);
    assert_eq!(
        (bar.revision, bar.trade_count, bar.open),
        (2, 1, Some(px("102")))
    );

    // Cancelling the last trade: an empty revision retracts the bar.
    rows.push(edit(
        TradeAction::Cancel,
        "b-x",
        "b2",
        T0 + 66 * SEC,
        0,
        0,
        8,
    ));
    agg.process_trade(&rows[7]);
    let bar = agg.drain(4).bars.remove(0);
    assert_eq!((bar.revision, bar.trade_count, bar.volume), (3, 0, 0));
    assert_eq!((bar.open, bar.vwap, bar.first_trade_ns), (None, None, None));

    // An edit naming a trade never seen is late (nothing to apply it to).
    let unknown = edit(TradeAction::Cancel, "q", "nope", T0 + 66 * SEC, 0, 0, 9);
    assert_eq!(
        agg.process_trade(&unknown),
        Disposition::Late { intervals: 1 }
    );
    let out = agg.drain(5);
    assert_eq!(out.late[0].reason, LateReason::OriginalNotOpen);
    assert_eq!(out.late[0].supersedes.as_deref(), Some("nope"));

    // Once minute 1 is final (end 120 + 120 <= 300), editing its trades is late too.
    rows.push(trade("IBM", "y", T0 + 300 * SEC, px("1"), qty("1"), 10));
    agg.process_trade(&rows[8]);
    let edit_final = edit(
        TradeAction::Correct,
        "x2",
        "x",
        T0 + 61 * SEC,
        px("1"),
        qty("1"),
        11,
    );
    assert_eq!(
        agg.process_trade(&edit_final),
        Disposition::Late { intervals: 1 }
    );
    agg.flush_all();
    let out = agg.drain(6);
    assert_eq!(out.late[0].reason, LateReason::OriginalNotOpen);
    let minute1 = find(&out.bars, "IBM", 60, T0 + 60 * SEC);
    assert_eq!((minute1.trade_count, minute1.revision), (2, 0), "x and a2");

    // The batch over what was applied agrees with the last revisions (minute 0 has no bar).
    let batch = compute_bars(&rows, &[60]).unwrap();
    assert!(batch.iter().all(|b| b.window_start_ns != T0));
    assert!(same_bar(find(&batch, "IBM", 60, T0 + 60 * SEC), minute1));
}

#[test]
fn restore_checks_intervals_and_version_and_keeps_final_windows_final() {
    let mut agg = BarAggregator::new(config(&[60, 300], 2, 10)).unwrap();
    agg.process_trade(&trade("IBM", "a", T0, px("1"), qty("1"), 1));
    agg.process_trade(&trade("IBM", "b", T0 + 100 * SEC, px("1"), qty("1"), 2));
    let state = agg.snapshot();
    assert_eq!(state.watermark_ns(), Some(T0 + 98 * SEC));
    let mut other = BarAggregator::new(config(&[60], 2, 10)).unwrap();
    assert!(matches!(
        other.restore(state.clone()),
        Err(CurateError::State(_))
    ));
    let mut json: serde_json::Value = serde_json::to_value(&state).unwrap();
    json["version"] = 99.into();
    let bad: AggregatorState = serde_json::from_value(json).unwrap();
    let mut fresh = BarAggregator::new(config(&[60, 300], 2, 10)).unwrap();
    assert!(fresh.restore(bad).is_err());

    // A longer lateness after restart: minute 0 (final at 60 + 10 <= 98) stays final, the
    // 5-minute window takes the trade.
    let mut longer = BarAggregator::new(config(&[300, 60], 2, 600)).unwrap();
    longer.restore(state.clone()).unwrap();
    let c = trade("IBM", "c", T0 + 5 * SEC, px("2"), qty("1"), 3);
    assert_eq!(longer.process_trade(&c), Disposition::Late { intervals: 1 });
    let out = longer.drain(0);
    assert_eq!(out.late[0].interval_secs, 60);
    // The snapshot's undrained output comes out once: minute 0, final before the snapshot.
    assert_eq!(out.bars.len(), 1);
    assert_eq!((out.bars[0].window_start_ns, out.bars[0].revision), (T0, 0));

    // A shorter one: minute 1 (end 120) is not final yet at 98 either way; lateness 0 with
    // the watermark moved to 125 finalises it at once.
    let mut shorter = BarAggregator::new(config(&[60, 300], 2, 0)).unwrap();
    shorter.restore(state).unwrap();
    shorter.advance_watermark_to(T0 + 125 * SEC);
    let out = shorter.drain(0);
    assert_eq!(find(&out.bars, "IBM", 60, T0 + 60 * SEC).trade_count, 1);
    assert_eq!(
        shorter.open_windows(),
        1,
        "only the 5-minute window is left"
    );
}

// ---- a seeded out-of-order stream -------------------------------------------------------

const BOUND_SECS: u64 = 2;
const LATENESS_SECS: u64 = 30;
const INTERVALS: [u64; 3] = [60, 300, 3_600];

/// ~20,000 trades of 5 symbols over 30 minutes (crossing an hour), in arrival order: most within
/// the watermark bound, some behind it but within the allowed lateness, some beyond it; ~5%
/// are later corrected or cancelled. Event times in whole milliseconds so exact ties occur.
pub(crate) fn shuffled_stream(seed: u64) -> Vec<TradeRow> {
    let mut rng = StdRng::seed_from_u64(seed);
    let symbols = ["AAPL", "IBM", "MSFT", "SPY", "TSLA"];
    let start = T0 + 15 * 60 * SEC; // 13:45, so hour bars split at 14:00
    let mut prices: Vec<i64> = vec![px("180"), px("140"), px("330"), px("430"), px("250")];
    let mut events: Vec<(i64, TradeRow)> = Vec::new(); // (arrival time, row)
    for n in 0..20_000 {
        let s = rng.gen_range(0..symbols.len());
        prices[s] += rng.gen_range(-5_000_000..=5_000_000); // ±0.05
        let t = start + rng.gen_range(0..1_800_000) * 1_000_000;
        let delay_ms: i64 = match rng.gen_range(0..100) {
            0..=95 => rng.gen_range(0..1_500),
            96..=97 => rng.gen_range(3_000..50_000),
            _ => rng.gen_range(100_000..400_000),
        };
        let quantity = rng.gen_range(1..10_000) * 100 + if rng.gen_bool(0.1) { 5 } else { 0 };
        let mut row = trade(symbols[s], &format!("fix-a:{n}"), t, prices[s], quantity, 0);
        let arrival = t + delay_ms * 1_000_000;
        row.received_at_ns = arrival;
        if rng.gen_bool(0.05) {
            let edit_arrival = arrival + rng.gen_range(1..20_000) * 1_000_000;
            let mut e = row.clone();
            e.trade_key = format!("fix-a:{n}:edit");
            e.supersedes = Some(row.trade_key.clone());
            e.received_at_ns = edit_arrival;
            if rng.gen_bool(0.5) {
                e.action = TradeAction::Correct;
                e.price += rng.gen_range(-1_000_000..=1_000_000);
                e.quantity = rng.gen_range(1..100) * 10_000;
                e.event_time_ns += rng.gen_range(-5_000..=5_000) * 1_000_000;
            } else {
                e.action = TradeAction::Cancel;
                e.event_time_ns = edit_arrival; // a bust is stamped when it is sent
            }
            events.push((edit_arrival, e));
        }
        events.push((arrival, row));
    }
    events.sort_by_key(|(arrival, row)| (*arrival, row.trade_key.clone()));
    // Raw offsets follow arrival per raw partition, as the enriched stream preserves them.
    let mut next_offset: HashMap<i32, i64> = HashMap::new();
    events
        .into_iter()
        .map(|(_, mut row)| {
            let partition = (row.symbol.len() % 3) as i32;
            let offset = next_offset.entry(partition).or_default();
            row.lineage.raw_partition = partition;
            row.lineage.raw_offset = *offset;
            row.lineage.source_position = *offset;
            *offset += 1;
            row
        })
        .collect()
}

/// Feed `rows` (positions `from..` of the stream), draining every 500 positions like a pipeline
/// committing every poll.
fn feed(agg: &mut BarAggregator, rows: &[TradeRow], from: usize, out: &mut BarOutput) {
    for (i, row) in rows.iter().enumerate() {
        let position = from + i;
        agg.process_trade(row);
        if position % 500 == 499 {
            let o = agg.drain(position as i64);
            out.bars.extend(o.bars);
            out.late.extend(o.late);
        }
    }
}

fn finish(agg: &mut BarAggregator, out: &mut BarOutput) {
    agg.flush_all();
    let o = agg.drain(i64::MAX);
    out.bars.extend(o.bars);
    out.late.extend(o.late);
}

/// An independent model of which (trade, interval) pairs are late, and why: a plain map of
/// live trades per interval and the watermark formula, no window state.
fn expected_late(rows: &[TradeRow]) -> BTreeSet<(String, u64, LateReason)> {
    let bound = BOUND_SECS as i64 * SEC;
    let lateness = LATENESS_SECS as i64 * SEC;
    let mut late = BTreeSet::new();
    for secs in INTERVALS {
        let ns = secs as i64 * SEC;
        let end_of = |t: i64| t.div_euclid(ns) * ns + ns;
        let mut live: HashMap<&str, i64> = HashMap::new(); // key → window end
        let mut watermark = i64::MIN;
        for row in rows {
            let dropped = |end: i64| end + lateness <= watermark;
            let original = row
                .supersedes
                .as_deref()
                .and_then(|k| live.get(k).map(|end| (k, *end)))
                .filter(|(_, end)| !dropped(*end));
            let verdict = match row.action {
                TradeAction::New if dropped(end_of(row.event_time_ns)) => {
                    Some(LateReason::BeyondAllowedLateness)
                }
                TradeAction::New => {
                    live.insert(row.trade_key.as_str(), end_of(row.event_time_ns));
                    None
                }
                _ if original.is_none() => Some(LateReason::OriginalNotOpen),
                TradeAction::Correct if dropped(end_of(row.event_time_ns)) => {
                    Some(LateReason::BeyondAllowedLateness)
                }
                _ => {
                    if let Some((k, _)) = original {
                        live.remove(k);
                    }
                    if row.action == TradeAction::Correct {
                        live.insert(row.trade_key.as_str(), end_of(row.event_time_ns));
                    }
                    None
                }
            };
            if let Some(reason) = verdict {
                late.insert((row.trade_key.clone(), secs, reason));
            }
            watermark = watermark.max(row.event_time_ns - bound);
        }
    }
    late
}

#[test]
fn out_of_order_stream_matches_the_batch_over_what_was_not_late() {
    let rows = shuffled_stream(7);
    assert!(rows.len() > 20_000);
    let mut agg = BarAggregator::new(config(&INTERVALS, BOUND_SECS, LATENESS_SECS)).unwrap();
    // (records fed, watermark, output) at every drain; the last after flush_all.
    let mut checkpoints: Vec<(usize, i64, BarOutput)> = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        agg.process_trade(row);
        if i % 500 == 499 {
            let watermark = agg.watermark_ns().unwrap();
            checkpoints.push((i + 1, watermark, agg.drain(i as i64)));
        }
    }
    agg.flush_all();
    checkpoints.push((rows.len(), i64::MAX, agg.drain(i64::MAX)));

    // Late records are exactly those the model says, for the reasons it says.
    let all_late: Vec<&LateRecordRow> = checkpoints.iter().flat_map(|c| &c.2.late).collect();
    let late: BTreeSet<(String, u64, LateReason)> = all_late
        .iter()
        .map(|l| (l.trade_key.clone(), l.interval_secs as u64, l.reason))
        .collect();
    assert_eq!(
        late.len(),
        all_late.len(),
        "one late row per trade per interval"
    );
    assert_eq!(late, expected_late(&rows));
    let beyond = late
        .iter()
        .filter(|l| l.2 == LateReason::BeyondAllowedLateness)
        .count();
    assert!(
        beyond > 200,
        "the stream exercises records beyond lateness ({beyond})"
    );
    assert!(late.iter().any(|l| l.2 == LateReason::OriginalNotOpen));

    // After every drain, the latest revision of every due window equals the batch over exactly
    // the records received so far that were not sent to late for that interval (so no change
    // is left unfired, and the final bars equal the batch over all accepted records).
    let late_by_interval: BTreeMap<u64, HashSet<&str>> = INTERVALS
        .iter()
        .map(|&secs| {
            let keys = late
                .iter()
                .filter(|l| l.1 == secs)
                .map(|l| l.0.as_str())
                .collect();
            (secs, keys)
        })
        .collect();
    let mut last: BTreeMap<(i64, String, i64), BarRow> = BTreeMap::new();
    for (fed, watermark, output) in &checkpoints {
        for bar in &output.bars {
            let key = (bar.interval_secs, bar.symbol.clone(), bar.window_start_ns);
            // Revisions come out in order 0, 1, 2, ...; never before the window is due.
            let expected_revision = last.get(&key).map_or(0, |b| b.revision + 1);
            assert_eq!(bar.revision, expected_revision, "{key:?}");
            assert!(bar.window_end_ns <= bar.watermark_ns && bar.watermark_ns <= *watermark);
            last.insert(key, bar.clone());
        }
        for secs in INTERVALS {
            let accepted: Vec<TradeRow> = rows[..*fed]
                .iter()
                .filter(|r| !late_by_interval[&secs].contains(r.trade_key.as_str()))
                .cloned()
                .collect();
            let batch = compute_bars(&accepted, &[secs]).unwrap();
            let mut due_batch = 0;
            for b in batch.iter().filter(|b| b.window_end_ns <= *watermark) {
                due_batch += 1;
                let key = (b.interval_secs, b.symbol.clone(), b.window_start_ns);
                let streamed = last.get(&key);
                assert!(
                    streamed.is_some_and(|s| same_bar(s, b)),
                    "after {fed} records\nstream {streamed:?}\nbatch  {b:?}"
                );
            }
            let due_streamed = last
                .values()
                .filter(|s| s.interval_secs == secs as i64 && s.trade_count > 0)
                .count();
            assert_eq!(
                due_streamed, due_batch,
                "{secs} s windows after {fed} records"
            );
        }
    }
    let stats = agg.stats();
    assert!(
        stats.revisions_emitted > 30,
        "late data within lateness refires ({stats:?})"
    );
    assert_eq!(stats.duplicates_skipped, 0);
}

#[test]
fn snapshot_restore_and_replay_after_a_crash_change_nothing() {
    let rows = shuffled_stream(11);
    let cfg = config(&INTERVALS, BOUND_SECS, LATENESS_SECS);
    let mut whole = BarAggregator::new(cfg.clone()).unwrap();
    let mut expected = BarOutput::default();
    feed(&mut whole, &rows, 0, &mut expected);
    finish(&mut whole, &mut expected);
    assert!(expected.bars.len() > 200 && !expected.late.is_empty());

    // Half the stream, snapshot (after the drain of position 9,999, as the pipeline commits),
    // through JSON into a new aggregator, then the rest.
    let half = 10_000;
    let mut first = BarAggregator::new(cfg.clone()).unwrap();
    let mut got = BarOutput::default();
    feed(&mut first, &rows[..half], 0, &mut got);
    let json = serde_json::to_string(&first.snapshot()).unwrap();
    let mut second = BarAggregator::new(cfg.clone()).unwrap();
    second
        .restore(serde_json::from_str(&json).unwrap())
        .unwrap();
    assert_eq!(
        serde_json::to_string(&second.snapshot()).unwrap(),
        json,
        "deterministic"
    );
    feed(&mut second, &rows[half..], half, &mut got);
    finish(&mut second, &mut got);
    assert_eq!(got, expected);

    // Crash: the process runs on past the snapshot, its output never committed, and the
    // restarted one re-reads from an older offset. Replays are skipped; the result is the same.
    let mut crashed = BarAggregator::new(cfg.clone()).unwrap();
    let mut committed = BarOutput::default();
    feed(&mut crashed, &rows[..half], 0, &mut committed);
    let saved = serde_json::to_string(&crashed.snapshot()).unwrap();
    feed(
        &mut crashed,
        &rows[half..half + 2_345],
        half,
        &mut BarOutput::default(),
    );
    drop(crashed);
    let mut restarted = BarAggregator::new(cfg).unwrap();
    restarted
        .restore(serde_json::from_str(&saved).unwrap())
        .unwrap();
    let replay_from = half - 1_000;
    for row in &rows[replay_from..half] {
        assert_eq!(restarted.process_trade(row), Disposition::Duplicate);
    }
    assert!(restarted.drain(0).is_empty(), "replays change nothing");
    feed(&mut restarted, &rows[half..], half, &mut committed);
    finish(&mut restarted, &mut committed);
    assert_eq!(restarted.stats().duplicates_skipped, 1_000);
    assert_eq!(committed, expected);
}

/// A re-sent `New` can be late for one interval and on time for another: each interval then
/// holds its own version of the key (the trades are stored once for all intervals, so this is
/// the case that sharing must not blur), a cancel removes each interval's own version, and a
/// snapshot taken in between restores to the same state.
#[test]
fn a_resent_trade_late_for_one_interval_replaces_it_only_where_on_time() {
    let latest = |bars: &[BarRow], interval: i64, start: i64| -> BarRow {
        bars.iter()
            .filter(|b| b.interval_secs == interval && b.window_start_ns == start)
            .max_by_key(|b| b.revision)
            .cloned()
            .unwrap_or_else(|| panic!("no {interval}s bar at {start}"))
    };
    let hour = T0.div_euclid(3_600 * SEC) * 3_600 * SEC;
    let minute = T0 + 180 * SEC;
    let mut live = BarAggregator::new(config(&[60, 3_600], 0, 10)).unwrap();
    let mut bars = Vec::new();
    // Watermark T0+245: the minute [T0+180, T0+240) is due and still open (240 + 10 > 245).
    live.process_trade(&trade("IBM", "x", T0 + 245 * SEC, px("5"), qty("1"), 1));
    live.process_trade(&trade("IBM", "a", T0 + 195 * SEC, px("1"), qty("1"), 2));
    // Same key, event time in a minute already final (60 + 10 <= 245) but in the open hour.
    let resent = trade("IBM", "a", T0 + 5 * SEC, px("2"), qty("1"), 3);
    assert_eq!(
        live.process_trade(&resent),
        Disposition::Late { intervals: 1 }
    );
    assert_eq!(live.held_trades(), 3, "x shared; a's two versions");
    assert_eq!(live.held_fills(), 4);

    let json = serde_json::to_string(&live.snapshot()).unwrap();
    let mut restored = BarAggregator::new(config(&[60, 3_600], 0, 10)).unwrap();
    restored
        .restore(serde_json::from_str(&json).unwrap())
        .unwrap();
    assert_eq!(serde_json::to_string(&restored.snapshot()).unwrap(), json);
    assert_eq!(restored.held_trades(), 3, "a restore shares x again");

    let bust = edit(TradeAction::Cancel, "a-bust", "a", T0 + 246 * SEC, 0, 0, 4);
    let mut outputs = Vec::new();
    for agg in [&mut live, &mut restored] {
        let mut out = agg.drain(0);
        assert_eq!(
            latest(&out.bars, 60, minute).low,
            Some(px("1")),
            "v1 in 1 m"
        );
        assert_eq!(latest(&out.bars, 60, minute).trade_count, 1);
        // The hour is not due yet: v2 replaced v1 there.
        assert_eq!(agg.process_trade(&bust), Disposition::Applied);
        agg.flush_all();
        let rest = agg.drain(1);
        out.bars.extend(rest.bars);
        out.late.extend(rest.late);
        assert_eq!(
            latest(&out.bars, 60, minute).trade_count,
            0,
            "bust removed v1"
        );
        let hour_bar = latest(&out.bars, 3_600, hour);
        assert_eq!(
            (hour_bar.trade_count, hour_bar.low),
            (1, Some(px("5"))),
            "bust removed v2, which had replaced v1"
        );
        assert_eq!(agg.held_trades(), 0, "flush releases every trade");
        outputs.push(out);
    }
    bars.extend(outputs[0].bars.clone());
    assert_eq!(outputs[0], outputs[1], "restored state behaves the same");
    assert!(!bars.is_empty());
}

/// A window edited again and again before it fires (each correction replacing the last) keeps
/// a bounded list of handles, not one per edit.
#[test]
fn repeated_corrections_before_a_window_fires_keep_its_handles_bounded() {
    let mut agg = BarAggregator::new(config(&[60, 3_600], 0, 10)).unwrap();
    agg.process_trade(&trade("IBM", "k0", T0 + 5 * SEC, px("1"), qty("1"), 0));
    for i in 1..2_000 {
        let correction = edit(
            TradeAction::Correct,
            &format!("k{i}"),
            &format!("k{}", i - 1),
            T0 + 5 * SEC,
            px("1") + i,
            qty("1"),
            i,
        );
        assert_eq!(agg.process_trade(&correction), Disposition::Applied);
    }
    assert_eq!(agg.held_trades(), 1);
    for interval in &agg.intervals {
        for window in interval.windows.values() {
            assert_eq!(window.live, 1);
            assert!(window.members.len() <= 2 + 16, "{}", window.members.len());
        }
    }
    agg.flush_all();
    let out = agg.drain(0);
    let last = out.bars.iter().find(|b| b.interval_secs == 60).unwrap();
    assert_eq!((last.trade_count, last.close), (1, Some(px("1") + 1_999)));
}

/// A damaged snapshot is refused rather than restored into a state that could not find its
/// trades again: a trade outside its window, a window listed twice.
#[test]
fn restore_refuses_a_trade_outside_its_window_and_a_window_listed_twice() {
    let mut agg = BarAggregator::new(config(&[60], 0, 10)).unwrap();
    agg.process_trade(&trade("IBM", "a", T0 + 5 * SEC, px("1"), qty("1"), 1));
    agg.process_trade(&trade("IBM", "b", T0 + 65 * SEC, px("1"), qty("1"), 2));
    let good = serde_json::to_value(agg.snapshot()).unwrap();
    let restore = |state: serde_json::Value| {
        let mut fresh = BarAggregator::new(config(&[60], 0, 10)).unwrap();
        fresh
            .restore(serde_json::from_value(state).unwrap())
            .map_err(|e| e.to_string())
    };
    assert!(restore(good.clone()).is_ok());

    let mut moved = good.clone();
    moved["windows"][0]["fills"][0]["event_time_ns"] = (T0 + 70 * SEC).into();
    let err = restore(moved).unwrap_err();
    assert!(err.contains("not its own"), "{err}");

    let mut twice = good.clone();
    let first = twice["windows"][0].clone();
    twice["windows"][1] = first;
    let err = restore(twice).unwrap_err();
    assert!(err.contains("twice"), "{err}");
}
