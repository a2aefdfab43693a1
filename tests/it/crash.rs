//! Crash safety: SIGKILL the ingest process at random moments while numbered records stream in,
//! restart it each time, and find every number exactly once in L1.
//!
//! Then the same with the broker itself restarted mid-stream on durable storage: tansu on
//! object storage (a local S3 server, moto). One ingest process keeps running across the
//! restarts and must reconnect, re-seek from the Delta log and end with every number once.
//! (tansu 0.6's SQLite storage cannot host this test: a long-running consumer started on its
//! empty topics got no record in 190 s even without a restart — its first fetch timed out after
//! 60 s — and a restarted broker logged storage `UnableToSend` errors.)

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use marketlake_kafka::RawProducer;
use marketlake_schemas::names::L1_TRADES_RAW;
use rand::{Rng, SeedableRng};

use crate::exactly_once::{assert_exactly_once, create_topics, produce_numbered};
use crate::support::{eventually, l1_rows, sigint, sigkill, wait_output, Lake, LakeOptions, HEAVY};

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

const BROKER_RESTARTS: usize = 6;
const RECORDS_PER_BROKER_ROUND: i64 = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restarted_mid_stream_loses_and_doubles_nothing() -> Result<()> {
    let _heavy = HEAVY.lock().await;
    let mut lake = Lake::new(LakeOptions {
        durable_broker: true,
        ..LakeOptions::default()
    })?;
    let kafka = lake.kafka_config(3);
    create_topics(&kafka).await?;
    let ingest = lake.spawn(&["ingest"], "ingest.log")?;
    let total = (BROKER_RESTARTS as i64 + 1) * RECORDS_PER_BROKER_ROUND;
    let mut interrupted = 0;
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let rounds = async {
        for round in 0..=BROKER_RESTARTS as i64 {
            // A new producer per broker life, flushed before the restart: the test is about
            // the sink, not about producer retries across a restart.
            let producer = RawProducer::new(&kafka)?;
            let produced = (round + 1) * RECORDS_PER_BROKER_ROUND;
            produce_numbered(&producer, round * RECORDS_PER_BROKER_ROUND..produced).await?;
            drop(producer);
            if round as usize == BROKER_RESTARTS {
                break;
            }
            // Take the broker away while the sink works on this round (it commits every
            // 200 ms): before its first commit of the round, or between two.
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..600))).await;
            let written = l1_rows(&lake, L1_TRADES_RAW).await?.len();
            if (written as i64) < produced {
                interrupted += 1;
            }
            let how = lake.broker.restart(Duration::from_secs(10))?;
            eprintln!("broker restart {round}: {how}; {written} of {produced} records in L1");
        }
        // The same ingest process, never restarted, drains everything.
        eventually(
            Duration::from_secs(180),
            "L1 holds every record",
            || async { Ok(l1_rows(&lake, L1_TRADES_RAW).await?.len() as i64 >= total) },
        )
        .await
    }
    .await;
    sigint(&ingest);
    let stopped = tokio::task::spawn_blocking(move || wait_output(ingest, Duration::from_secs(30)));
    if let Err(e) = rounds.and(stopped.await?.map(|_| ())) {
        bail!(
            "{e}\n--- ingest log\n{}\n--- broker log (tail)\n{}",
            tail(&lake.log("ingest.log"), 20_000),
            tail(&lake.broker.log_text(), 4_000)
        );
    }
    assert!(
        interrupted > 0,
        "every restart came after the sink had caught up: the test exercised nothing"
    );
    // A second, clean run finds nothing left to write and doubles nothing.
    lake.run(&["ingest", "--until-caught-up"], Duration::from_secs(120))?;
    assert_exactly_once(&l1_rows(&lake, L1_TRADES_RAW).await?, total);
    Ok(())
}

/// The last `max` bytes of a log, cut at a character boundary.
fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}
