//! The state directory without a broker: a simulated pipeline (records in, cycles, journal,
//! per-table `txn` commits) crashed at every kind of point and restarted, checked against the
//! uninterrupted run and the batch recomputation; bytes per cycle against the open state; the
//! format version and the format-1 files.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use marketlake_schemas::l2::{Lineage, NewsRow, TradeRow};
use marketlake_schemas::l3::{BarRow, LateRecordRow, NewsTradeWindowRow};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::bars::tests::{shuffled_stream, trade, T0};
use crate::batch::{compute_bars, same_bar};
use crate::NS_PER_SEC;

const TRADES: &str = "enriched.trades:0";
const NEWS: &str = "enriched.news:0";
/// Records per cycle of the simulated pipeline.
const CYCLE: usize = 250;
const INTERVALS: [u64; 3] = [60, 300, 3_600];

/// A fresh directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "marketlake-curate-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn bar_config(lateness: u64) -> BarConfig {
    BarConfig {
        intervals_secs: INTERVALS.to_vec(),
        max_out_of_orderness_secs: 2,
        allowed_lateness_secs: lateness,
    }
}

fn news_config(lateness: u64) -> NewsWindowConfig {
    NewsWindowConfig {
        windows_secs: vec![60, 300],
        max_out_of_orderness_secs: 2,
        allowed_lateness_secs: lateness,
        news_grace_secs: 60,
    }
}

#[derive(Debug, Clone)]
enum Input {
    Trade(TradeRow),
    News(NewsRow),
}

#[derive(Debug, Clone)]
struct Record {
    partition: &'static str,
    offset: i64,
    input: Input,
}

/// The first `n` trades of a seeded out-of-order stream (with corrections, cancels and late
/// trades), with a news item on one of its symbols every ~60 records.
fn records(seed: u64, n: usize) -> Vec<Record> {
    let trades = shuffled_stream(seed);
    let mut rng = StdRng::seed_from_u64(seed);
    let symbols = ["AAPL", "IBM", "MSFT", "SPY", "TSLA"];
    let mut out = Vec::new();
    let mut news_offset = 0;
    for (i, t) in trades.into_iter().take(n).enumerate() {
        if rng.gen_range(0..60) == 0 {
            let ticker = symbols[rng.gen_range(0..symbols.len())];
            let anchor = t.event_time_ns - rng.gen_range(0..120) * NS_PER_SEC;
            out.push(Record {
                partition: NEWS,
                offset: news_offset,
                input: Input::News(NewsRow {
                    news_key: format!("rss:{i}"),
                    headline: "h".into(),
                    body: None,
                    link: None,
                    publisher: None,
                    published_at_ns: rng.gen_bool(0.8).then_some(anchor),
                    received_at_ns: anchor + NS_PER_SEC,
                    language: None,
                    tickers: vec![ticker.to_string()],
                    reference_version: None,
                    extra: Default::default(),
                    flags: vec![],
                    lineage: Lineage {
                        source_id: "rss".into(),
                        source_uri: "https://example.test/feed".into(),
                        source_position: news_offset,
                        raw_topic: "raw.news".into(),
                        raw_partition: 0,
                        raw_offset: news_offset,
                    },
                }),
            });
            news_offset += 1;
        }
        out.push(Record {
            partition: TRADES,
            offset: i as i64,
            input: Input::Trade(t),
        });
    }
    out
}

/// Records consumed so far: the global order is fixed, so the offsets say where it stopped.
fn resume_position(offsets: &BTreeMap<String, i64>) -> usize {
    let at = |p: &str| offsets.get(p).copied().unwrap_or(0);
    usize::try_from(at(TRADES) + at(NEWS)).unwrap()
}

/// The L3 tables: rows per table, and the cycle each table's `txn` holds.
#[derive(Debug, Default, PartialEq)]
struct Lake {
    stored: BTreeMap<String, i64>,
    bars: BTreeMap<i64, Vec<BarRow>>,
    late: Vec<LateRecordRow>,
    windows: Vec<NewsTradeWindowRow>,
}

impl Lake {
    /// Commit `outbox` as cycle `cycle` to at most `tables` tables (a crash may stop between
    /// two tables' commits); each table skips a cycle it holds, as the Delta `txn` does.
    fn commit(&mut self, cycle: i64, outbox: &Outbox, tables: usize) {
        let mut committed = 0;
        let mut commit = |name: String, stored: &mut BTreeMap<String, i64>, empty: bool| {
            if empty || committed >= tables || stored.get(&name).is_some_and(|&s| s >= cycle) {
                return false;
            }
            committed += 1;
            stored.insert(name, cycle);
            true
        };
        for secs in INTERVALS {
            let rows: Vec<BarRow> = outbox
                .bars
                .iter()
                .filter(|b| b.interval_secs == secs as i64)
                .cloned()
                .collect();
            if commit(format!("bars_{secs}"), &mut self.stored, rows.is_empty()) {
                self.bars.entry(secs as i64).or_default().extend(rows);
            }
        }
        if commit("late".into(), &mut self.stored, outbox.late.is_empty()) {
            self.late.extend(outbox.late.iter().cloned());
        }
        if commit(
            "windows".into(),
            &mut self.stored,
            outbox.windows.is_empty(),
        ) {
            self.windows.extend(outbox.windows.iter().cloned());
        }
    }
}

/// Equal lakes, or a panic naming the first difference (the lakes are too big to print).
fn assert_same_lake(got: &Lake, expected: &Lake, context: &str) {
    assert_eq!(got.stored, expected.stored, "{context}: stored cycles");
    fn first_diff<T: PartialEq + std::fmt::Debug>(a: &[T], b: &[T], what: &str, context: &str) {
        if let Some(i) = (0..a.len().min(b.len())).find(|&i| a[i] != b[i]) {
            panic!(
                "{context}: {what} row {i} differs\ngot      {:?}\nexpected {:?}",
                a[i], b[i]
            );
        }
        assert_eq!(a.len(), b.len(), "{context}: {what} rows");
    }
    assert_eq!(
        got.bars.keys().collect::<Vec<_>>(),
        expected.bars.keys().collect::<Vec<_>>(),
        "{context}"
    );
    for (secs, rows) in &got.bars {
        first_diff(rows, &expected.bars[secs], &format!("bars_{secs}"), context);
    }
    first_diff(&got.late, &expected.late, "late", context);
    first_diff(&got.windows, &expected.windows, "windows", context);
}

/// Where one run of the simulated curator stops.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Crash {
    /// Runs to the end of the input and the final flush.
    Never,
    /// After the `n`-th journal append of this run, before any commit of it.
    AfterAppend(u64),
    /// After the `n`-th append, one table committed, the others not.
    MidCommit(u64),
    /// The `n`-th append is cut short half way (never synced, never committed).
    TornAppend(u64),
    /// Right after the `n`-th compaction of this run finished, before it pruned anything.
    AfterCompaction(u64),
    /// Records consumed up to this position, its cycle not ended.
    MidCycle(usize),
    /// A clean stop after the cycle that ends at this position (a restart, e.g. to change the
    /// configuration).
    StopAt(usize),
}

struct Scenario<'a> {
    records: &'a [Record],
    dir: &'a Path,
    policy: CompactionPolicy,
}

/// Processing time stamped on rows: a function of the position, so a run repeated after a
/// crash stamps what the first one did.
fn now_at(position: usize, extra: i64) -> i64 {
    1_000_000 + position as i64 * 10 + extra
}

/// The simulated cycle boundaries and wall-clock decisions, all functions of the position.
fn is_boundary(position: usize, len: usize) -> bool {
    position.is_multiple_of(CYCLE) || position == len
}

fn idle_at(position: usize) -> bool {
    (position / CYCLE) % 5 == 2
}

/// An extra idle cycle end with no records (the feed went quiet) after this boundary.
fn extra_idle_at(position: usize) -> bool {
    (position / CYCLE) % 7 == 3
}

struct Live<'a> {
    store: StateStore,
    curator: Curator,
    lake: &'a mut Lake,
    crash: Crash,
    appends: u64,
    compactions: u64,
}

impl Live<'_> {
    /// End a cycle as the pipeline does; false when the run crashed here.
    fn end(&mut self, end: CycleEnd) -> bool {
        let Some(entry) = self.curator.end_cycle(end) else {
            return true;
        };
        self.appends += 1;
        if self.crash == Crash::TornAppend(self.appends) {
            let keep = encode_entry(&entry).unwrap().len() / 2;
            self.store.append_torn(&entry, keep).unwrap();
            return false;
        }
        let compacting = self.store.compacting_to();
        self.store.append(&entry, &self.curator).unwrap();
        let started = self
            .store
            .compacting_to()
            .is_some_and(|c| Some(c) != compacting);
        if started {
            self.compactions += 1;
            if self.crash == Crash::AfterCompaction(self.compactions) {
                self.store.crash_after_compaction();
                return false;
            }
        }
        match self.crash {
            Crash::AfterAppend(n) if n == self.appends => return false,
            Crash::MidCommit(n) if n == self.appends => {
                self.lake.commit(entry.cycle(), entry.outbox(), 1);
                return false;
            }
            _ => {}
        }
        self.lake.commit(entry.cycle(), entry.outbox(), usize::MAX);
        true
    }

    /// What follows a boundary besides its own cycle end.
    fn extras(&mut self, position: usize) -> bool {
        if extra_idle_at(position) {
            return self.end(CycleEnd {
                idle: true,
                final_fire: false,
                now_ns: now_at(position, 1),
            });
        }
        true
    }
}

/// One run of the curator: recover whatever the directory holds, finish the recovered cycle's
/// commits, consume from the recovered position until `crash`. True when it got to the end.
fn run(s: &Scenario<'_>, lake: &mut Lake, config: (u64, u64), crash: Crash) -> bool {
    let (store, recovered) =
        StateStore::open(s.dir, bar_config(config.0), news_config(config.1), s.policy).unwrap();
    if recovered.cycle > 0 {
        lake.commit(recovered.cycle, &recovered.outbox, usize::MAX);
    }
    let mut position = resume_position(&recovered.offsets);
    let mut live = Live {
        store,
        curator: Curator::resume(recovered.state, recovered.cycle, recovered.offsets),
        lake,
        crash,
        appends: 0,
        compactions: 0,
    };
    let len = s.records.len();
    // Resumed at a boundary: what followed it may not have been journaled (idempotent if it
    // was).
    if position > 0 && !live.extras(position) {
        return false;
    }
    while position < len {
        let record = &s.records[position];
        live.curator.consumed(record.partition, record.offset + 1);
        match &record.input {
            Input::Trade(t) => {
                live.curator.trade(t).unwrap();
            }
            Input::News(n) => live.curator.news(n).unwrap(),
        }
        position += 1;
        if crash == Crash::MidCycle(position) {
            return false;
        }
        if is_boundary(position, len) {
            let end = CycleEnd {
                idle: idle_at(position),
                final_fire: false,
                now_ns: now_at(position, 0),
            };
            if !live.end(end) || !live.extras(position) {
                return false;
            }
            if crash == Crash::StopAt(position) {
                live.store.finish_compaction().unwrap();
                return false;
            }
        }
    }
    let end = CycleEnd {
        idle: false,
        final_fire: true,
        now_ns: now_at(len, 5),
    };
    if !live.end(end) {
        return false;
    }
    live.store.finish_compaction().unwrap();
    true
}

/// Runs one after another on one directory until one reaches the end; the lake they built.
fn scenario(records: &[Record], policy: CompactionPolicy, runs: &[((u64, u64), Crash)]) -> Lake {
    let dir = TempDir::new("scenario");
    let s = Scenario {
        records,
        dir: &dir.0,
        policy,
    };
    let mut lake = Lake::default();
    for (i, &(config, crash)) in runs.iter().enumerate() {
        let finished = run(&s, &mut lake, config, crash);
        assert_eq!(
            finished,
            crash == Crash::Never,
            "run {i} ({crash:?}) {}",
            if finished { "never crashed" } else { "crashed" }
        );
    }
    lake
}

/// The streamed final bars equal the batch over the trades not sent to late for that interval.
fn check_against_batch(records: &[Record], lake: &Lake) {
    let trades: Vec<TradeRow> = records
        .iter()
        .filter_map(|r| match &r.input {
            Input::Trade(t) => Some(t.clone()),
            Input::News(_) => None,
        })
        .collect();
    for secs in INTERVALS {
        let late: HashSet<&str> = lake
            .late
            .iter()
            .filter(|l| l.interval_secs == secs as i64)
            .map(|l| l.trade_key.as_str())
            .collect();
        let accepted: Vec<TradeRow> = trades
            .iter()
            .filter(|t| !late.contains(t.trade_key.as_str()))
            .cloned()
            .collect();
        let batch = compute_bars(&accepted, &[secs]).unwrap();
        let mut last: BTreeMap<(String, i64), &BarRow> = BTreeMap::new();
        for bar in lake.bars.get(&(secs as i64)).into_iter().flatten() {
            let key = (bar.symbol.clone(), bar.window_start_ns);
            let expected = last.get(&key).map_or(0, |b| b.revision + 1);
            assert_eq!(bar.revision, expected, "revisions in order for {key:?}");
            last.insert(key, bar);
        }
        for b in &batch {
            let streamed = last.get(&(b.symbol.clone(), b.window_start_ns));
            assert!(
                streamed.is_some_and(|s| same_bar(s, b)),
                "{secs} s\nstream {streamed:?}\nbatch  {b:?}"
            );
        }
        let nonempty = last.values().filter(|b| b.trade_count > 0).count();
        assert_eq!(nonempty, batch.len(), "{secs} s bars");
    }
}

const CONFIG: (u64, u64) = (30, 30);

fn small_policy() -> CompactionPolicy {
    CompactionPolicy {
        min_journal_bytes: 24 << 10,
    }
}

#[test]
fn a_crash_anywhere_recovers_to_the_uninterrupted_run_and_the_batch() {
    // 18 minutes of the stream: the hour bars split at 14:00.
    let records = records(3, 12_000);
    let baseline = scenario(&records, small_policy(), &[(CONFIG, Crash::Never)]);
    let bars: usize = baseline.bars.values().map(Vec::len).sum();
    println!(
        "{bars} bar rows, {} late, {} windows, cycles {:?}",
        baseline.late.len(),
        baseline.windows.len(),
        baseline.stored
    );
    assert!(bars > 150, "{bars} bar rows");
    assert!(!baseline.late.is_empty() && !baseline.windows.is_empty());
    assert!(
        baseline.bars.values().flatten().any(|b| b.revision > 0),
        "late trades within lateness refire"
    );
    check_against_batch(&records, &baseline);

    // The same input without compaction: compaction changes files, never results.
    let uncompacted = scenario(
        &records,
        CompactionPolicy {
            min_journal_bytes: u64::MAX,
        },
        &[(CONFIG, Crash::Never)],
    );
    assert_same_lake(&uncompacted, &baseline, "without compaction");

    let crashes: Vec<Vec<Crash>> = vec![
        vec![Crash::AfterAppend(3)],
        vec![Crash::MidCommit(2), Crash::MidCommit(5)],
        vec![Crash::TornAppend(4)],
        vec![Crash::MidCycle(1_234)],
        vec![Crash::AfterCompaction(1)],
        vec![Crash::AfterCompaction(2), Crash::TornAppend(1)],
        // Crashes before anything was committed, right after a restart, and repeatedly.
        vec![
            Crash::TornAppend(1),
            Crash::AfterAppend(1),
            Crash::MidCycle(2_100),
            Crash::AfterCompaction(1),
            Crash::MidCommit(7),
            Crash::TornAppend(3),
        ],
    ];
    for plan in crashes {
        let mut runs: Vec<((u64, u64), Crash)> = plan.iter().map(|&c| (CONFIG, c)).collect();
        runs.push((CONFIG, Crash::Never));
        let lake = scenario(&records, small_policy(), &runs);
        assert_same_lake(&lake, &baseline, &format!("after crashes {plan:?}"));
    }
}

#[test]
fn a_restart_under_another_lateness_replays_each_segment_under_its_own() {
    let records = records(5, 5_000);
    let (before, after) = ((30, 30), (10, 0));
    let baseline = scenario(
        &records,
        small_policy(),
        &[(before, Crash::StopAt(2_000)), (after, Crash::Never)],
    );
    check_against_batch(&records, &baseline);
    // Crashes after the change make recovery replay entries written under both
    // configurations, and snapshots copy states reconfigured on the way.
    let lake = scenario(
        &records,
        small_policy(),
        &[
            (before, Crash::StopAt(2_000)),
            (after, Crash::AfterAppend(2)),
            (after, Crash::MidCycle(3_300)),
            (after, Crash::AfterCompaction(1)),
            (after, Crash::Never),
        ],
    );
    assert_same_lake(&lake, &baseline, "lateness changed");
}

/// Feed `records[range]` through `curator` in cycles, appending to `store`.
fn feed(
    curator: &mut Curator,
    store: &mut StateStore,
    records: &[Record],
    range: std::ops::Range<usize>,
) {
    for position in range {
        let record = &records[position];
        curator.consumed(record.partition, record.offset + 1);
        match &record.input {
            Input::Trade(t) => {
                curator.trade(t).unwrap();
            }
            Input::News(n) => curator.news(n).unwrap(),
        }
        if (position + 1) % CYCLE == 0 {
            let end = CycleEnd {
                idle: false,
                final_fire: false,
                now_ns: now_at(position + 1, 0),
            };
            if let Some(entry) = curator.end_cycle(end) {
                store.append(&entry, curator).unwrap();
            }
        }
    }
}

/// A snapshot of everything appended so far, waited for.
fn compact_now(store: &mut StateStore) {
    store.finish_compaction().unwrap();
    store.start_compaction().unwrap();
    store.finish_compaction().unwrap();
}

fn no_compaction() -> CompactionPolicy {
    CompactionPolicy {
        min_journal_bytes: u64::MAX,
    }
}

fn assert_same_state(a: &CurateState, b: &CurateState) {
    assert_eq!(a.bars().len(), b.bars().len());
    for ((sa, x), (sb, y)) in a.bars().iter().zip(b.bars()) {
        assert_eq!(sa, sb);
        assert_eq!(x.snapshot(), y.snapshot(), "bars of {sa}");
    }
    assert_eq!(a.windows().len(), b.windows().len());
    for ((ta, x), (tb, y)) in a.windows().iter().zip(b.windows()) {
        assert_eq!(ta, tb);
        assert_eq!(x.snapshot(), y.snapshot(), "news windows of {ta}");
    }
}

#[test]
fn the_recovered_state_is_the_live_state_from_snapshot_journal_or_both() {
    let records = records(9, 4_000);
    let dir = TempDir::new("live-state");
    let open =
        || StateStore::open(&dir.0, bar_config(30), news_config(30), small_policy()).unwrap();
    let (mut store, recovered) = open();
    let mut curator = Curator::resume(recovered.state, 0, recovered.offsets);
    // Journal, and the snapshots copied from the live state on the way.
    feed(&mut curator, &mut store, &records, 0..1_000);
    store.finish_compaction().unwrap();
    assert!(
        store.counters().live_snapshots > 0,
        "{:?}",
        store.counters()
    );
    let (_, again) = open();
    assert_same_state(&again.state, curator.state());
    assert_eq!(again.cycle, curator.cycle());
    assert_eq!(&again.offsets, curator.offsets());
    // The open above truncated nothing and pruned nothing the live store still needs.
    feed(&mut curator, &mut store, &records, 1_000..3_000);
    // Snapshot exactly at the last cycle, nothing after it.
    compact_now(&mut store);
    assert!(store.counters().snapshots >= 2);
    assert_eq!(
        store.snapshot.as_ref().map(|s| s.cycle),
        Some(curator.cycle())
    );
    let (_, again) = open();
    assert_same_state(&again.state, curator.state());
    // Snapshot plus journal, and an interrupted snapshot write left behind.
    feed(&mut curator, &mut store, &records, 3_000..4_000);
    std::fs::write(dir.0.join("snapshot-000000009999.bin.tmp"), b"partial").unwrap();
    store.finish_compaction().unwrap();
    drop(store);
    let (store, again) = open();
    assert_same_state(&again.state, curator.state());
    assert_eq!(again.cycle, curator.cycle());
    assert!(!dir.0.join("snapshot-000000009999.bin.tmp").exists());
    // One snapshot and the journal after it: nothing else is kept.
    let files = std::fs::read_dir(&dir.0).unwrap().count();
    assert_eq!(files, 1 + store.segments.len(), "{store:?}");
}

/// `n` trades of 50 symbols over the first 55 minutes of one hour, in order: every one of
/// them stays in an open 1h window (and in the news history).
fn hour_of_trades(n: usize, first_offset: i64) -> Vec<TradeRow> {
    let hour = T0 - T0.rem_euclid(3_600 * NS_PER_SEC) + 3_600 * NS_PER_SEC;
    let step = 55 * 60 * NS_PER_SEC / n as i64;
    (0..n)
        .map(|i| {
            let offset = first_offset + i as i64;
            let mut t = trade(
                &format!("SYM{:02}", offset % 50),
                &format!("fix-a:{offset}"),
                hour + offset * step,
                10_000_000_000 + (offset % 997) * 1_000_000,
                (1 + offset % 50) * 10_000,
                offset,
            );
            t.received_at_ns = t.event_time_ns + 1_500_000;
            t
        })
        .collect()
}

/// One cycle of `trades` through `curator`; the entry's bytes once appended.
fn cycle_of(curator: &mut Curator, store: &mut StateStore, trades: &[TradeRow], now: i64) -> u64 {
    for t in trades {
        curator.consumed(TRADES, t.lineage.raw_offset + 1);
        curator.trade(t).unwrap();
    }
    let end = CycleEnd {
        idle: false,
        final_fire: false,
        now_ns: now,
    };
    let entry = curator.end_cycle(end).unwrap();
    store.append(&entry, curator).unwrap()
}

#[test]
fn bytes_written_per_cycle_follow_the_cycle_input_not_the_open_state() {
    let dir = TempDir::new("bytes");
    let (mut store, recovered) = StateStore::open(
        &dir.0,
        BarConfig::default(),
        NewsWindowConfig::default(),
        no_compaction(),
    )
    .unwrap();
    let mut curator = Curator::resume(recovered.state, 0, recovered.offsets);
    let total = 201_000;
    let trades = hour_of_trades(total, 0);
    // A 1k-trade cycle on a small open state...
    for (i, chunk) in trades[..10_000].chunks(10_000).enumerate() {
        cycle_of(&mut curator, &mut store, chunk, i as i64);
    }
    let small_state = curator.state().held_entries();
    let small = cycle_of(&mut curator, &mut store, &trades[10_000..11_000], 1);
    // ... and on 200k trades held in open 1h windows (and the news history).
    for chunk in trades[11_000..200_000].chunks(10_000) {
        cycle_of(&mut curator, &mut store, chunk, 2);
    }
    let large_state = curator.state().held_entries();
    assert!(large_state >= 2 * 200_000, "held {large_state}");
    let large = cycle_of(&mut curator, &mut store, &trades[200_000..201_000], 3);
    println!(
        "1k-trade cycle: {small} B with {small_state} held entries, {large} B with {large_state}"
    );
    assert!(large < 100_000, "a 1k-trade cycle wrote {large} bytes");
    assert!(
        large.abs_diff(small) * 10 < small,
        "{small} vs {large} bytes: the entry depends on the open state"
    );
    // The whole state, for scale: what one save cost before (format 1 wrote it every cycle).
    compact_now(&mut store);
    let snapshot = store.snapshot.as_ref().map_or(0, |s| s.bytes);
    println!("snapshot of that state: {snapshot} B");
    assert!(large * 50 < snapshot, "{large} vs snapshot {snapshot}");
}

#[test]
fn compaction_keeps_the_directory_bounded_and_the_bytes_proportional() {
    let dir = TempDir::new("bounded");
    let policy = CompactionPolicy {
        min_journal_bytes: 64 << 10,
    };
    let (mut store, recovered) = StateStore::open(
        &dir.0,
        BarConfig::default(),
        NewsWindowConfig::default(),
        policy,
    )
    .unwrap();
    let mut curator = Curator::resume(recovered.state, 0, recovered.offsets);
    let trades = hour_of_trades(30_000, 0);
    let mut largest_dir = 0;
    for (i, chunk) in trades.chunks(500).enumerate() {
        cycle_of(&mut curator, &mut store, chunk, i as i64);
        let on_disk: u64 = std::fs::read_dir(&dir.0)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        largest_dir = largest_dir.max(on_disk);
    }
    store.finish_compaction().unwrap();
    let c = store.counters();
    let snapshot = store.snapshot.as_ref().map_or(0, |s| s.bytes);
    println!("{c:?}; newest snapshot {snapshot} B; largest directory {largest_dir} B");
    assert!(c.snapshots >= 3, "{c:?}");
    // The journal is cut back at each compaction: one snapshot and about one more of journal,
    // plus what was written while the last compaction ran.
    assert!(
        largest_dir <= 4 * snapshot.max(policy.min_journal_bytes),
        "{largest_dir} on disk, snapshot {snapshot}"
    );
    // Snapshots happen when the journal outgrows the snapshot: at most about as many bytes
    // of snapshot as of journal, over the run.
    assert!(c.snapshot_bytes <= 2 * c.entry_bytes + snapshot, "{c:?}");
}

fn set_version(path: &Path, version: u32) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[8..12].copy_from_slice(&version.to_le_bytes());
    std::fs::write(path, bytes).unwrap();
}

fn names(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .collect();
    v.sort();
    v
}

#[test]
fn an_unknown_format_version_is_refused_naming_the_setting() {
    let records = records(13, 1_000);
    let dir = TempDir::new("version");
    let open = || StateStore::open(&dir.0, bar_config(30), news_config(30), small_policy());
    let (mut store, recovered) = open().unwrap();
    let mut curator = Curator::resume(recovered.state, 0, recovered.offsets);
    feed(&mut curator, &mut store, &records, 0..1_000);
    compact_now(&mut store);
    drop(store);
    let snapshot = names(&dir.0, "snapshot-").pop().unwrap();
    set_version(&snapshot, 3);
    let err = open().unwrap_err().to_string();
    assert!(
        err.contains("version 3") && err.contains("curate.state_dir"),
        "{err}"
    );
    assert!(err.contains(&snapshot.display().to_string()), "{err}");
    set_version(&snapshot, FORMAT_VERSION);
    open().unwrap();

    // A journal segment too, and a file that is not ours at all.
    let (mut store, recovered) = open().unwrap();
    let mut curator = Curator::resume(recovered.state, recovered.cycle, recovered.offsets);
    let trades = hour_of_trades(10, 10_000);
    cycle_of(&mut curator, &mut store, &trades, 1);
    drop(store);
    let segment = names(&dir.0, "journal-").pop().unwrap();
    set_version(&segment, 0);
    let err = open().unwrap_err().to_string();
    assert!(
        err.contains("version 0") && err.contains("curate.state_dir"),
        "{err}"
    );
    std::fs::write(&segment, b"{\"cycle\": 1}").unwrap();
    let err = open().unwrap_err().to_string();
    assert!(err.contains("not a curator state file"), "{err}");
}

#[test]
fn format_1_files_are_read_once_and_rewritten_as_a_snapshot() {
    let records = records(17, 2_000);
    // The state a format-1 curator would have saved at some cycle.
    let dir = TempDir::new("legacy");
    let (mut store, recovered) =
        StateStore::open(&dir.0, bar_config(30), news_config(30), small_policy()).unwrap();
    let mut curator = Curator::resume(recovered.state, 0, recovered.offsets);
    feed(&mut curator, &mut store, &records, 0..1_500);
    drop(store);
    let outbox = Outbox::default();
    let legacy = LegacyCycleState::of(curator.state(), curator.cycle(), curator.offsets(), &outbox);
    let old = TempDir::new("legacy-v1");
    let older = LegacyCycleState {
        cycle: legacy.cycle - 1,
        ..legacy.clone()
    };
    for state in [&older, &legacy] {
        std::fs::write(
            legacy_path(&old.0, state.cycle),
            serde_json::to_vec(state).unwrap(),
        )
        .unwrap();
    }
    let (store, recovered) =
        StateStore::open(&old.0, bar_config(30), news_config(30), small_policy()).unwrap();
    assert_eq!(recovered.cycle, curator.cycle());
    assert_eq!(&recovered.offsets, curator.offsets());
    assert_same_state(&recovered.state, curator.state());
    assert!(names(&old.0, "cycle-").is_empty(), "format-1 files removed");
    assert_eq!(names(&old.0, "snapshot-").len(), 1);
    assert_eq!(store.counters().snapshots, 1);
    drop(store);
    // Read again: from the snapshot now.
    let (_, again) =
        StateStore::open(&old.0, bar_config(30), news_config(30), small_policy()).unwrap();
    assert_same_state(&again.state, curator.state());

    // A format-1 file of an unknown aggregator version is refused with its name.
    let bad = TempDir::new("legacy-bad");
    let mut json = serde_json::to_value(&legacy).unwrap();
    let symbol = curator.state().bars().keys().next().unwrap().clone();
    json["bars"][&symbol]["version"] = 99.into();
    let path = legacy_path(&bad.0, 5);
    std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
    let err = StateStore::open(&bad.0, bar_config(30), news_config(30), small_policy())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("version 99") && err.contains("curate.state_dir"),
        "{err}"
    );
    assert!(err.contains(&path.display().to_string()), "{err}");
}

#[test]
fn a_torn_last_entry_is_cut_but_damage_elsewhere_is_refused() {
    let records = records(19, 1_500);
    let dir = TempDir::new("damage");
    let open = || StateStore::open(&dir.0, bar_config(30), news_config(30), no_compaction());
    let (mut store, recovered) = open().unwrap();
    let mut curator = Curator::resume(recovered.state, 0, recovered.offsets);
    feed(&mut curator, &mut store, &records, 0..1_500);
    let cycle = curator.cycle();
    let segment = store.segments.last().unwrap().path.clone();
    drop(store);
    let whole = std::fs::read(&segment).unwrap();

    // Zeros a file system left after the last entry: cut, the state is intact.
    let mut bytes = whole.clone();
    bytes.extend([0u8; 64]);
    std::fs::write(&segment, &bytes).unwrap();
    let (_, recovered) = open().unwrap();
    assert_eq!(recovered.cycle, cycle);
    assert_eq!(std::fs::read(&segment).unwrap(), whole);

    // The last entry cut short: recovery resumes one cycle earlier.
    std::fs::write(&segment, &whole[..whole.len() - 10]).unwrap();
    let (_, recovered) = open().unwrap();
    assert_eq!(recovered.cycle, cycle - 1);

    // A flipped byte in an entry followed by others is damage, not a crash.
    let (mut store, recovered) = open().unwrap();
    let mut curator = Curator::resume(recovered.state, recovered.cycle, recovered.offsets);
    let trades = hour_of_trades(20, 50_000);
    cycle_of(&mut curator, &mut store, &trades[..10], 1);
    cycle_of(&mut curator, &mut store, &trades[10..], 2);
    let segment = store.segments.last().unwrap().path.clone();
    drop(store);
    let mut bytes = std::fs::read(&segment).unwrap();
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[FILE_HEADER_LEN..FILE_HEADER_LEN + 4]);
    let first_entry = FILE_HEADER_LEN + FRAME_HEADER_LEN + u32::from_le_bytes(word) as usize;
    bytes[first_entry + FRAME_HEADER_LEN + 5] ^= 0xff;
    std::fs::write(&segment, &bytes).unwrap();
    let err = open().unwrap_err().to_string();
    assert!(
        err.contains("checksum") && err.contains("curate.state_dir"),
        "{err}"
    );
}

#[test]
fn a_journal_that_does_not_reproduce_its_rows_is_refused() {
    let records = records(23, 3_000);
    let dir = TempDir::new("diverge");
    let open = || StateStore::open(&dir.0, bar_config(30), news_config(30), no_compaction());
    let (mut store, recovered) = open().unwrap();
    let mut curator = Curator::resume(recovered.state, 0, recovered.offsets);
    feed(&mut curator, &mut store, &records, 0..2_000);
    // An entry whose recorded rows are not what its steps produce.
    for record in &records[2_000..3_000] {
        curator.consumed(record.partition, record.offset + 1);
        if let Input::Trade(t) = &record.input {
            curator.trade(t).unwrap();
        }
    }
    let end = CycleEnd {
        idle: true,
        final_fire: false,
        now_ns: 1,
    };
    let mut entry = curator.end_cycle(end).unwrap();
    assert!(!entry.outbox.bars.is_empty());
    entry.outbox.bars[0].close = Some(1);
    store.append(&entry, &curator).unwrap();
    drop(store);
    let err = open().unwrap_err().to_string();
    assert!(err.contains("other rows than it recorded"), "{err}");
}

/// Save cost for an open state held in 1m/5m/1h windows and the news history, with the default
/// configuration: format 1 (the whole state as JSON, every cycle) against format 2 (a journal
/// entry per cycle; the snapshot on the compaction thread). Asserts on bytes, prints timings.
/// 60k trades by default; the README's figures use 600k:
/// `MARKETLAKE_SAVE_COST_TRADES=600000 cargo test -p marketlake-curate --release save_cost -- --nocapture`
#[test]
fn save_cost_of_a_realistic_state() {
    let dir = TempDir::new("bench");
    let open = || {
        StateStore::open(
            &dir.0,
            BarConfig::default(),
            NewsWindowConfig::default(),
            no_compaction(),
        )
        .unwrap()
    };
    let (mut store, recovered) = open();
    let mut curator = Curator::resume(recovered.state, 0, recovered.offsets);
    let total: usize = std::env::var("MARKETLAKE_SAVE_COST_TRADES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60_000);
    let trades = hour_of_trades(total + 11_000, 0);
    let started = Instant::now();
    for chunk in trades[..total].chunks(10_000) {
        cycle_of(&mut curator, &mut store, chunk, 0);
    }
    println!(
        "fed {total} trades in {:.1?}; {} entries held (bars per interval + news history)",
        started.elapsed(),
        curator.state().held_entries()
    );

    let started = Instant::now();
    let copy = curator.state().clone();
    println!("clone of the live state: {:.1?}", started.elapsed());
    drop(copy);

    // Format 1: serialise the whole state, write, fsync, rename (as the old StateStore::save).
    let started = Instant::now();
    let legacy = LegacyCycleState::of(
        curator.state(),
        curator.cycle(),
        curator.offsets(),
        &Outbox::default(),
    );
    let json = serde_json::to_vec(&legacy).unwrap();
    let whole_state_bytes = json.len();
    let path = dir.0.join("legacy.json");
    write_atomic(&path, &[&json]).unwrap();
    println!(
        "format 1 save (whole state): {} bytes in {:.1?}",
        json.len(),
        started.elapsed()
    );
    drop((json, legacy));
    std::fs::remove_file(&path).unwrap();

    // Format 2: the entry of a 10k-trade (1 s at 10k/s) and of a 1k-trade cycle.
    for range in [total..total + 10_000, total + 10_000..total + 11_000] {
        let n = range.len();
        for t in &trades[range] {
            curator.consumed(TRADES, t.lineage.raw_offset + 1);
            curator.trade(t).unwrap();
        }
        let end = CycleEnd {
            idle: false,
            final_fire: false,
            now_ns: 1,
        };
        let entry = curator.end_cycle(end).unwrap();
        let started = Instant::now();
        let bytes = store.append(&entry, &curator).unwrap();
        println!(
            "format 2 save of a {n}-trade cycle: {bytes} bytes in {:.1?}",
            started.elapsed()
        );
        // A cycle writes its own input (tens of bytes a trade), not the open state.
        assert!(bytes < n as u64 * 100, "{bytes} bytes for {n} trades");
        assert!(
            bytes * 5 < whole_state_bytes as u64,
            "{bytes} vs {whole_state_bytes}"
        );
    }
    let journal = store.journal_bytes();
    drop(store);
    drop(curator);

    let started = Instant::now();
    let (mut store, recovered) = open();
    println!(
        "recovery replaying {journal} bytes of journal ({} cycles): {:.1?}",
        recovered.cycle,
        started.elapsed()
    );
    let cycles = recovered.cycle;
    drop(recovered);
    let started = Instant::now();
    compact_now(&mut store);
    println!(
        "compaction on its thread (replay the journal + write the snapshot): {} bytes in {:.1?}",
        store.counters().snapshot_bytes,
        started.elapsed()
    );
    drop(store);
    let started = Instant::now();
    let (_, from_snapshot) = open();
    println!("recovery from the snapshot: {:.1?}", started.elapsed());
    assert_eq!(
        from_snapshot.cycle, cycles,
        "the snapshot covers every cycle"
    );
}
