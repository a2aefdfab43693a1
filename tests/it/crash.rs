//! Crash safety: SIGKILL the ingest process at random moments while numbered records stream in,
//! restart it each time, and find every number exactly once in L1.
//!
//! Not here yet: the same with the broker itself restarted mid-stream on durable storage. tansu
//! 0.6 with SQLite storage does not survive it in our runs (a SIGKILLed broker leaves its store
//! unusable for the next start, a SIGTERMed one panics in UpdateGroup, and after consumer-group
//! churn its fetches stall past 10 s), so such a test fails on the broker, not on the sink.
//! Tried again on 2026-12-07: a long-running `ingest` started on empty topics of a SQLite-backed
//! tansu got no record in 190 s, even with no restart at all (its first fetch timed out after
//! 60 s, heartbeats after 30 s, and the rejoined member fared no better), while
//! `ingest --until-caught-up` over the same broker drained 20,000 records in 1.8 s. After a
//! restart the broker logged storage `UnableToSend` errors. The sink cannot be tested there.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use marketlake_kafka::RawProducer;
use marketlake_schemas::names::L1_TRADES_RAW;
use rand::{Rng, SeedableRng};

use crate::exactly_once::{assert_exactly_once, create_topics, produce_numbered};
use crate::support::{l1_rows, sigkill, Lake, LakeOptions, HEAVY};

const KILLS: usize = 20;
const RECORDS: i64 = 30_000;
/// The whole test fails loudly past this, instead of hanging CI.
const DEADLINE: Duration = Duration::from_secs(420);

async fn kill_loop(lake: &Lake, seed: u64) -> Result<()> {
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
        eprintln!(
            "round {round}: killed after {alive:?}, at {:?}",
            started.elapsed()
        );
    }
    // The kills must have interrupted real work, not an idle process.
    let before_final = l1_rows(lake, L1_TRADES_RAW).await?.len();
    eprintln!("rows written across {KILLS} killed runs: {before_final} of {RECORDS}");
    assert!(
        before_final > 0,
        "no killed run ever committed: the test exercised nothing"
    );
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
    let _heavy = HEAVY.lock().await;
    let lake = Lake::new(LakeOptions::default())?;
    kill_loop(&lake, 7).await
}
