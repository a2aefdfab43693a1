//! `marketlake bench curate-state`: the curator's window state in memory, with no broker and no
//! tables. Trades (several symbols, in event-time order) go through [`CurateState`] beside the
//! reference — the batch recomputation of the same trades' bars ([`compute_bars`]), which is
//! what the crash tests compare the stream with — and then the copy of the live state that a
//! snapshot takes on the hot path is timed. What it isolates: the per-trade cost of the windows
//! (held trades, index, corrections support) and the snapshot's stall, which the end-to-end
//! `bench enrich` mixes with Kafka and Delta.

use std::time::Instant;

use anyhow::Context;
use marketlake_curate::{compute_bars, BarConfig, CurateState, NewsWindowConfig};
use marketlake_schemas::l2::{Lineage, TradeRow};

#[derive(Debug, clap::Args)]
pub struct CurateStateBenchArgs {
    /// Trades to apply per round.
    #[arg(long, default_value_t = 500_000)]
    trades: i64,
    /// Distinct symbols, round robin.
    #[arg(long, default_value_t = 50)]
    symbols: i64,
    /// Event-time step between consecutive trades, microseconds (2000: 500 trades a second).
    #[arg(long, default_value_t = 2_000)]
    step_us: i64,
    /// Bar intervals, seconds, comma-separated.
    #[arg(long, default_value = "60,300,3600", value_delimiter = ',')]
    intervals: Vec<u64>,
    #[arg(long, default_value_t = 3)]
    rounds: u32,
}

/// 2026-01-05T14:30:00Z.
const START_NS: i64 = 1_767_623_400_000_000_000;

fn trade(i: i64, args: &CurateStateBenchArgs) -> TradeRow {
    TradeRow::bare(
        format!("bench-dropcopy:EXEC{i:010}"),
        format!("SYM{}", i % args.symbols.max(1)),
        10_000_000_000 + (i * 7_919) % 50_000_000,
        10_000 * (1 + (i * 104_729) % 300),
        START_NS + i * args.step_us * 1_000,
        Lineage {
            source_id: "bench-dropcopy".into(),
            source_uri: "bench://curate-state".into(),
            source_position: i,
            raw_topic: "raw.trades".into(),
            raw_partition: i32::try_from(i % 3).unwrap_or(0),
            raw_offset: i / 3,
        },
    )
}

pub fn run(args: CurateStateBenchArgs) -> anyhow::Result<()> {
    let bars = BarConfig {
        intervals_secs: args.intervals.clone(),
        ..BarConfig::default()
    };
    let trades: Vec<TradeRow> = (0..args.trades).map(|i| trade(i, &args)).collect();
    println!(
        "{} trades, {} symbols, {} µs apart in event time, intervals {:?} s",
        args.trades, args.symbols, args.step_us, args.intervals
    );
    println!("| round | stream: trades/s | batch reference: trades/s | stream vs batch | held entries | distinct trades held | resident growth while streaming | copy of the live state (snapshot) |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for round in 1..=args.rounds {
        let mut state = CurateState::new(bars.clone(), NewsWindowConfig::default())
            .context("curate state for the bench")?;
        let resident_before = resident_bytes();
        let started = Instant::now();
        for trade in &trades {
            state.apply_trade(trade)?;
        }
        let stream = started.elapsed().as_secs_f64().max(1e-9);
        let growth = resident_before
            .zip(resident_bytes())
            .map_or("n/a".to_string(), |(before, after)| {
                format!("{:.0} MB", after.saturating_sub(before) as f64 / 1e6)
            });
        let started = Instant::now();
        let reference = compute_bars(&trades, &args.intervals)?;
        let batch = started.elapsed().as_secs_f64().max(1e-9);
        let started = Instant::now();
        let copy = state.clone();
        let copied = started.elapsed();
        let held = copy.held_entries();
        let distinct = copy.held_trades();
        drop(copy);
        let n = trades.len() as f64;
        println!(
            "| {round} | {:.0} | {:.0} | {:.0} % | {held} | {distinct} | {growth} | {:.0} ms |",
            n / stream,
            n / batch,
            100.0 * batch / stream,
            copied.as_secs_f64() * 1_000.0
        );
        drop(reference);
    }
    Ok(())
}

/// This process's resident memory (Linux `/proc/self/status`), `None` elsewhere. Growth over
/// the stream is the state's footprint as the allocator sees it (the input is built before).
fn resident_bytes() -> Option<u64> {
    crate::bench::proc_status_kb("self", "VmRSS:").map(|kb| kb * 1_024)
}
