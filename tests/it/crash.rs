//! Crash safety: SIGKILL the ingest process at random moments while numbered records stream in,
//! restart it each time, and find every number exactly once in L1. Then the same with the broker
//! itself restarted mid-stream (durable broker storage).

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use marketlake_kafka::RawProducer;
use marketlake_schemas::names::L1_TRADES_RAW;
use rand::{Rng, SeedableRng};

use crate::exactly_once::{assert_exactly_once, create_topics, produce_numbered};
use crate::support::{l1_rows, sigkill, Lake, LakeOptions};

const KILLS: usize = 20;
const RECORDS: i64 = 30_000;
/// The whole test fails loudly past this, instead of hanging CI.
const DEADLINE: Duration = Duration::from_secs(420);

async fn kill_loop(lake: &mut Lake, restart_broker_at: Option<usize>, seed: u64) -> Result<()> {
    let kafka = lake.kafka_config(3);
    create_topics(&kafka).await?;
    let started = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let per_round = RECORDS / KILLS as i64;
    let producer = RawProducer::new(&kafka)?;
    for round in 0..KILLS {
        if started.elapsed() > DEADLINE {
            bail!("crash test exceeded {DEADLINE:?} at round {round}");
        }
        if Some(round) == restart_broker_at {
            lake.broker.restart()?;
        }
        let mut ingest = lake.spawn(&["ingest"], &format!("ingest-{round}.log"))?;
        // Records keep arriving while the process runs and dies.
        produce_numbered(
            &producer,
            round as i64 * per_round..(round as i64 + 1) * per_round,
        )
        .await?;
        let alive = Duration::from_millis(rng.gen_range(300..2_500));
        tokio::time::sleep(alive).await;
        sigkill(&mut ingest);
    }
    // A last, clean run drains everything.
    let output = lake.run(&["ingest", "--until-caught-up"], Duration::from_secs(180));
    let output = match output {
        Ok(output) => output,
        Err(e) => bail!("final catch-up failed: {e}"),
    };
    let rows = l1_rows(lake, L1_TRADES_RAW).await?;
    if rows.len() as i64 != RECORDS {
        eprintln!(
            "final run stderr:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    assert_exactly_once(&rows, RECORDS);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_ingest_twenty_times_loses_and_doubles_nothing() -> Result<()> {
    let mut lake = Lake::new(LakeOptions::default())?;
    kill_loop(&mut lake, None, 7).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mid_stream_loses_and_doubles_nothing() -> Result<()> {
    let mut lake = Lake::new(LakeOptions {
        durable_broker: true,
        ..LakeOptions::default()
    })?;
    kill_loop(&mut lake, Some(KILLS / 2), 11).await
}
