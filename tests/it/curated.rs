//! L2 and L3 exactly once: enrichment and curation are SIGKILLed at random moments while
//! numbered FIX fills stream in; after a clean catch-up, `l2.trades` holds every fill once and
//! every `l3.bars_1m` window (its highest revision) equals a batch recomputation over the fills;
//! and back-fills finish every partition while another group member holds some of them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use marketlake_connectors::RawSink;
use marketlake_curate::compute_bars;
use marketlake_kafka::{PartitionKey, Polled, RawProducer, VerifiedConsumer};
use marketlake_lake::read::{load_table, read_rows, Array, Decimal128Array, Int32Array};
use marketlake_schemas::l2::{Lineage, TradeRow};
use marketlake_schemas::names::{
    l3_bars, TableName, L2_TRADES, L3_LATE_RECORDS, TOPIC_ENRICHED_NEWS, TOPIC_ENRICHED_TRADES,
    TOPIC_RAW_NEWS, TOPIC_RAW_TRADES,
};
use marketlake_schemas::{FeedClass, PayloadFormat, RawRecord};
use rand::{Rng, SeedableRng};

use crate::exactly_once::create_topics;
use crate::support::{
    i64_column, sigint, sigkill, string_column, wait_output, Lake, LakeOptions, HEAVY,
};

const KILLS: usize = 20;
const FILLS: i64 = 12_000;
const SYMBOLS: i64 = 5;
/// 2026-01-05T14:30:00Z: the first fill; each next one 25 ms later (so 5 minutes in all).
const START_NS: i64 = 1_767_623_400_000_000_000;
const STEP_NS: i64 = 25_000_000;
const DEADLINE: Duration = Duration::from_secs(480);

fn symbol(i: i64) -> String {
    format!("ZZ{}", i % SYMBOLS)
}

/// Price in 1e-8 units and quantity in 1e-4 units of fill `i` (deterministic, varied).
fn price_qty(i: i64) -> (i64, i64) {
    let price_cents = 10_000 + (i * 7919) % 500;
    let qty = 1 + (i * 104_729) % 300;
    (price_cents * 1_000_000, qty * 10_000)
}

fn fix_time(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let millis = ns.rem_euclid(1_000_000_000) / 1_000_000;
    let days = secs.div_euclid(86_400);
    let date =
        marketlake_schemas::l1::utc_date_of_ns(days * 86_400 * 1_000_000_000).replace('-', "");
    let rem = secs.rem_euclid(86_400);
    format!(
        "{date}-{:02}:{:02}:{:02}.{millis:03}",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

/// A pipe-delimited FIX 4.4 message around `body` (from `35=` on), with a right body length
/// and checksum.
pub fn fix_message(body: &str) -> Vec<u8> {
    let head = format!("8=FIX.4.4|9={}|", body.len());
    let mut message = format!("{head}{body}").into_bytes();
    let sum: u32 = message
        .iter()
        .map(|b| u32::from(if *b == b'|' { 1 } else { *b }))
        .sum();
    message.extend_from_slice(format!("10={:03}|", sum % 256).as_bytes());
    message
}

/// A valid FIX 4.4 execution report (a fill), pipe-delimited, body length and checksum right.
fn fill_message(i: i64) -> Vec<u8> {
    let (price, qty) = price_qty(i);
    let body = format!(
        "35=8|49=BROKER|56=DESK|34={seq}|52={t}|37=ORD{i}|17=EXEC{i}|150=F|39=2|55={sym}|54=1|31={px}|32={q}|14={q}|6={px}|60={t}|",
        seq = i + 1,
        t = fix_time(START_NS + i * STEP_NS),
        sym = symbol(i),
        px = marketlake_schemas::decimal::format_scaled(price, 8),
        q = marketlake_schemas::decimal::format_scaled(qty, 4),
    );
    fix_message(&body)
}

fn fill_record(i: i64) -> RawRecord {
    fix_record(i, &symbol(i), fill_message(i))
}

/// A raw FIX 4.4 execution report of source `fills` at position `position`, as the drop-copy
/// connector publishes it.
pub fn fix_record(position: i64, symbol: &str, payload: Vec<u8>) -> RawRecord {
    RawRecord {
        source_id: "fills".into(),
        connector: "fix".into(),
        class: FeedClass::Trades,
        format: PayloadFormat::Fix,
        source_uri: "test://fills".into(),
        source_position: position,
        received_at_ns: marketlake_schemas::now_utc_ns(),
        symbol: Some(symbol.to_string()),
        payload,
        attributes: BTreeMap::from([
            ("delimiter".to_string(), "pipe".to_string()),
            ("msg_type".to_string(), "8".to_string()),
            ("begin_string".to_string(), "FIX.4.4".to_string()),
        ]),
    }
}

/// The first `fills` fills as the batch reference sees them.
fn expected_trades(fills: i64) -> Vec<TradeRow> {
    (0..fills)
        .map(|i| {
            let (price, quantity) = price_qty(i);
            let lineage = Lineage {
                source_id: "fills".into(),
                source_uri: "test://fills".into(),
                source_position: i,
                raw_topic: "raw.trades".into(),
                raw_partition: 0,
                raw_offset: i,
            };
            TradeRow {
                received_at_ns: 0,
                ..TradeRow::bare(
                    format!("fills:EXEC{i}"),
                    symbol(i),
                    price,
                    quantity,
                    START_NS + i * STEP_NS,
                    lineage,
                )
            }
        })
        .collect()
}

pub async fn table_batches(
    lake: &Lake,
    table: TableName,
) -> Result<Vec<marketlake_lake::RecordBatch>> {
    match load_table(&lake.lake_config(), table, None).await {
        Ok(loaded) => Ok(read_rows(&loaded).await?),
        Err(_) => Ok(Vec::new()),
    }
}

/// Rows in `table` (0 when it does not exist yet).
async fn table_rows(lake: &Lake, table: TableName) -> Result<usize> {
    Ok(table_batches(lake, table)
        .await?
        .iter()
        .map(|b| b.num_rows())
        .sum())
}

/// Publish fills `range` to `raw.trades` and wait until the broker has acknowledged them all.
async fn publish_fills(producer: &RawProducer, range: std::ops::Range<i64>) -> Result<()> {
    for i in range {
        producer.publish(fill_record(i)).await?;
    }
    producer.flush_deliveries().await?;
    Ok(())
}

fn decimal(batch: &marketlake_lake::RecordBatch, name: &str, row: usize) -> Result<Option<i128>> {
    let column = batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<Decimal128Array>())
        .with_context(|| format!("decimal column {name}"))?;
    Ok((!column.is_null(row)).then(|| column.value(row)))
}

/// `l3.bars_1m` reduced to the highest revision per (symbol, window start):
/// `(open, high, low, close, volume, trade_count)`.
pub type BarValues = (
    Option<i128>,
    Option<i128>,
    Option<i128>,
    Option<i128>,
    Option<i128>,
    i64,
);

pub async fn latest_bars(lake: &Lake) -> Result<BTreeMap<(String, i64), (i32, BarValues)>> {
    let mut latest: BTreeMap<(String, i64), (i32, BarValues)> = BTreeMap::new();
    for batch in table_batches(lake, l3_bars(60)).await? {
        let symbols = string_column(&batch, "symbol")?;
        let starts = i64_column(&batch, "window_start_ns")?;
        let counts = i64_column(&batch, "trade_count")?;
        let revisions = batch
            .column_by_name("revision")
            .and_then(|c| c.as_any().downcast_ref::<Int32Array>())
            .context("revision column")?;
        for row in 0..batch.num_rows() {
            let key = (symbols.value(row).to_string(), starts.value(row));
            let revision = revisions.value(row);
            let values = (
                decimal(&batch, "open", row)?,
                decimal(&batch, "high", row)?,
                decimal(&batch, "low", row)?,
                decimal(&batch, "close", row)?,
                decimal(&batch, "volume", row)?,
                counts.value(row),
            );
            match latest.get(&key) {
                Some((r, _)) if *r > revision => {}
                Some((r, _)) if *r == revision => {
                    bail!("bar {key:?} revision {revision} written twice")
                }
                _ => {
                    latest.insert(key, (revision, values));
                }
            }
        }
    }
    Ok(latest)
}

/// The fills among the first `fills` that `keys` (from [`l2_trade_keys`]) lacks.
fn missing_fills(keys: &BTreeMap<String, usize>, fills: i64) -> Vec<i64> {
    (0..fills)
        .filter(|i| !keys.contains_key(&format!("fills:EXEC{i}")))
        .collect()
}

async fn l2_trade_keys(lake: &Lake) -> Result<BTreeMap<String, usize>> {
    let mut counts = BTreeMap::new();
    for batch in table_batches(lake, L2_TRADES).await? {
        let keys = string_column(&batch, "trade_key")?;
        for row in 0..batch.num_rows() {
            *counts.entry(keys.value(row).to_string()).or_default() += 1;
        }
    }
    Ok(counts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_enrich_and_curate_twenty_times_matches_the_batch_result() -> Result<()> {
    let _heavy = HEAVY.lock().await;
    let lake = Lake::new(LakeOptions {
        extra_toml: "[enrich]\ncommit_interval_ms = 200\nreference_files = []\n\n[curate]\ncommit_interval_ms = 200\nidle_advance_secs = 3600\n\n[curate.bars]\nintervals_secs = [60]\n".into(),
        ..LakeOptions::default()
    })?;
    let kafka = lake.kafka_config(3);
    create_topics(&kafka).await?;
    let producer = RawProducer::new(&kafka)?;
    let started = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let per_round = FILLS / KILLS as i64;
    for round in 0..KILLS {
        if started.elapsed() > DEADLINE {
            bail!("crash test exceeded {DEADLINE:?} at round {round}");
        }
        let mut enrich = lake.spawn(&["enrich"], &format!("enrich-{round}.log"))?;
        let mut curate = lake.spawn(&["curate"], &format!("curate-{round}.log"))?;
        publish_fills(
            &producer,
            round as i64 * per_round..(round as i64 + 1) * per_round,
        )
        .await?;
        let enrich_alive = Duration::from_millis(rng.gen_range(400..2_500));
        let curate_extra = Duration::from_millis(rng.gen_range(800..3_500));
        tokio::time::sleep(enrich_alive).await;
        sigkill(&mut enrich);
        tokio::time::sleep(curate_extra).await;
        sigkill(&mut curate);
        eprintln!(
            "round {round}: enrich killed after {enrich_alive:?}, curate {curate_extra:?} later, at {:?}",
            started.elapsed()
        );
    }
    let before = l2_trade_keys(&lake).await?.len();
    let bars_before = latest_bars(&lake).await?.len();
    eprintln!("after {KILLS} killed rounds: {before} fills in l2.trades, {bars_before} bars");
    assert!(
        before > 0,
        "no killed enrichment ever committed: the test exercised nothing"
    );
    lake.run(&["enrich", "--until-caught-up"], Duration::from_secs(180))?;
    lake.run(&["curate", "--until-caught-up"], Duration::from_secs(180))?;

    let keys = l2_trade_keys(&lake).await?;
    let missing = missing_fills(&keys, FILLS);
    let doubled: Vec<(&String, &usize)> = keys.iter().filter(|(_, c)| **c > 1).collect();
    assert!(
        missing.is_empty() && doubled.is_empty() && keys.len() as i64 == FILLS,
        "l2.trades: {} missing (first {:?}), {} doubled (first {:?})",
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>(),
        doubled.len(),
        doubled.iter().take(5).collect::<Vec<_>>()
    );

    assert_bars_match_batch(&lake, FILLS).await?;
    let late = table_rows(&lake, L3_LATE_RECORDS).await?;
    assert_eq!(
        late, 0,
        "fills arrive in order per symbol: none may be late"
    );
    Ok(())
}

/// Every 1-minute bar (its highest revision) equals the batch result over the first `fills`.
async fn assert_bars_match_batch(lake: &Lake, fills: i64) -> Result<()> {
    let expected = compute_bars(&expected_trades(fills), &[60])?;
    let actual = latest_bars(lake).await?;
    assert_eq!(actual.len(), expected.len(), "number of 1-minute bars");
    for bar in &expected {
        let key = (bar.symbol.clone(), bar.window_start_ns);
        let (_, got) = actual
            .get(&key)
            .with_context(|| format!("bar {key:?} missing"))?;
        let want = (
            bar.open.map(i128::from),
            bar.high.map(i128::from),
            bar.low.map(i128::from),
            bar.close.map(i128::from),
            Some(i128::from(bar.volume)),
            bar.trade_count,
        );
        assert_eq!(got, &want, "bar {key:?}");
    }
    Ok(())
}

/// A member of `group` on `topics` that takes what the group gives it, as a stuck or dying
/// process would (seen on tansu after SIGKILLs: a restarted member got part of the partitions
/// for a minute). Returns once it holds partitions; it keeps them, polling, until `hold` has
/// passed, then leaves. The task answers every assignment it held.
async fn hold_partitions(
    lake: &Lake,
    group: &str,
    topics: &[&str],
    hold: Duration,
) -> Result<tokio::task::JoinHandle<Result<Vec<Vec<PartitionKey>>>>> {
    let mut member = VerifiedConsumer::subscribe(&lake.kafka_config(3), group, topics)?;
    let started = Instant::now();
    let first = loop {
        if started.elapsed() > Duration::from_secs(30) {
            bail!("the holding member of {group} got no partitions within 30 s");
        }
        if let Polled::Assigned(keys) = member.poll(Duration::from_millis(100)).await? {
            if !keys.is_empty() {
                break keys;
            }
        }
    };
    Ok(tokio::spawn(async move {
        let mut held = vec![first];
        while started.elapsed() < hold {
            match member.poll(Duration::from_millis(100)).await? {
                Polled::Assigned(keys) => held.push(keys),
                Polled::Revoked(_) => held.push(Vec::new()),
                _ => {}
            }
        }
        drop(member);
        Ok(held)
    }))
}

/// Real-time consumers of `enriched.trades` get a row when it is enriched, not when the L2
/// commit after it lands: with commits ten minutes apart, every fill is on the topic while
/// `l2.trades` is still empty, and stopping enrichment then commits every one of them.
/// End an enrichment process watched by a test: killed if the watch failed (the error carries
/// its log), else stopped with SIGINT, which must end it cleanly within 60 s.
fn stop_enrich<T>(lake: &Lake, mut enrich: std::process::Child, watched: Result<T>) -> Result<T> {
    let value = match watched {
        Ok(value) => value,
        Err(e) => {
            sigkill(&mut enrich);
            bail!("{e}\n--- enrich.log\n{}", lake.log("enrich.log"));
        }
    };
    sigint(&enrich);
    let stopped = wait_output(enrich, Duration::from_secs(60))?;
    if !stopped.status.success() {
        bail!("enrich did not stop cleanly:\n{}", lake.log("enrich.log"));
    }
    Ok(value)
}

/// Wait until enrichment (started just before) has published `fills` distinct fills on
/// `enriched.trades`: each fill's trade key → its raw partition. Enrichment creates the topic
/// when it starts, so opening the reader is retried for 30 s; the fills get 60 s.
async fn wait_for_enriched_fills(
    kafka: &marketlake_kafka::KafkaConfig,
    fills: i64,
) -> Result<BTreeMap<String, i32>> {
    let started = Instant::now();
    let mut reader = loop {
        match VerifiedConsumer::assign(
            kafka,
            "test-enriched-reader",
            &[TOPIC_ENRICHED_TRADES],
            |_| None,
        )
        .await
        {
            Ok(reader) => break reader,
            Err(e) if started.elapsed() > Duration::from_secs(30) => {
                bail!("{TOPIC_ENRICHED_TRADES} not readable 30 s after enrich started: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let mut published = BTreeMap::new();
    while (published.len() as i64) < fills {
        if started.elapsed() > Duration::from_secs(60) {
            bail!(
                "only {} of {fills} fills on {TOPIC_ENRICHED_TRADES} after 60 s",
                published.len()
            );
        }
        if let Polled::Record(records) =
            reader.poll_batch(Duration::from_millis(200), 1_000).await?
        {
            for record in records {
                let row: TradeRow = serde_json::from_slice(&record.payload)?;
                published
                    .entry(row.trade_key)
                    .or_insert(row.lineage.raw_partition);
            }
        }
    }
    Ok(published)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enriched_rows_are_published_before_their_l2_commit() -> Result<()> {
    let _heavy = HEAVY.lock().await;
    const SOME_FILLS: i64 = 2_000;
    let lake = Lake::new(LakeOptions {
        extra_toml: "[enrich]\ncommit_interval_ms = 600000\noffsets_commit_secs = 3600\nreference_files = []\n".into(),
        ..LakeOptions::default()
    })?;
    let kafka = lake.kafka_config(3);
    create_topics(&kafka).await?;
    let producer = RawProducer::new(&kafka)?;
    publish_fills(&producer, 0..SOME_FILLS).await?;

    let enrich = lake.spawn(&["enrich"], "enrich.log")?;
    // Every early return below kills enrichment first (a child is not killed on drop).
    let watched = async {
        wait_for_enriched_fills(&kafka, SOME_FILLS).await?;
        // Read strictly: enrichment created the table before consuming, so an error here is a
        // failure, not an empty table.
        let table = load_table(&lake.lake_config(), L2_TRADES, None).await?;
        let rows: usize = read_rows(&table).await?.iter().map(|b| b.num_rows()).sum();
        Ok(rows)
    }
    .await;
    let committed_meanwhile = stop_enrich(&lake, enrich, watched)?;
    assert_eq!(
        committed_meanwhile, 0,
        "l2.trades already held rows: publishing was not shown to precede the commit"
    );
    let keys = l2_trade_keys(&lake).await?;
    let missing = missing_fills(&keys, SOME_FILLS);
    assert!(
        missing.is_empty(),
        "{} fills missing from l2.trades after the stop's commit (first {:?})",
        missing.len(),
        missing.first()
    );
    Ok(())
}

/// Another writer stores offsets in `l2.trades` while enrichment holds rows built on older
/// ones (a member that lost its partitions without knowing): enrichment's commit is refused,
/// it drops what it buffered and restarts every partition from what the tables hold. At the
/// end `l2.trades` has each fill once, except the ones the other writer claimed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_refused_for_another_writers_offsets_drops_and_rereads_what_built_on_it(
) -> Result<()> {
    let _heavy = HEAVY.lock().await;
    const FIRST: i64 = 2_000;
    /// Also the batch size: each pass over the topic commits once, at its end.
    const ALL: i64 = 3_000;
    /// The other writer claims the busiest raw.trades partition up to this offset.
    const CLAIMED_UP_TO: i64 = 99;
    let lake = Lake::new(LakeOptions {
        // Commits only when every record is buffered.
        extra_toml: format!("[enrich]\ncommit_interval_ms = 600000\noffsets_commit_secs = 3600\nmax_batch_records = {ALL}\nreference_files = []\n"),
        ..LakeOptions::default()
    })?;
    let kafka = lake.kafka_config(3);
    create_topics(&kafka).await?;
    let producer = RawProducer::new(&kafka)?;
    publish_fills(&producer, 0..FIRST).await?;

    let enrich = lake.spawn(&["enrich"], "enrich.log")?;
    let watched = async {
        // Enrichment has read the stored offsets (none) and buffered the first fills once they
        // are on the enriched topic.
        let mut per_partition: BTreeMap<i32, usize> = BTreeMap::new();
        for partition in wait_for_enriched_fills(&kafka, FIRST).await?.values() {
            *per_partition.entry(*partition).or_default() += 1;
        }
        // Fills go to partitions by symbol: the busiest has at least a third of them.
        let claimed_partition = per_partition
            .iter()
            .max_by_key(|(_, count)| **count)
            .map(|(partition, _)| *partition)
            .context("no partition")?;
        // Nothing is committed yet (else the claim below would be refused, not enrichment).
        let committed = table_rows(&lake, L2_TRADES).await?;
        if committed > 0 {
            bail!("enrichment committed {committed} rows before the other writer's claim");
        }
        // The other writer stores that partition's offsets up to CLAIMED_UP_TO.
        let spec = marketlake_enrich::pipeline::l2_specs()
            .into_iter()
            .find(|spec| spec.name == L2_TRADES)
            .context("l2.trades spec")?;
        let mut other = marketlake_lake::ExactlyOnceSink::open(
            &lake.lake_config(),
            spec,
            marketlake_enrich::pipeline::SINK_NAME,
        )
        .await?;
        let claimed = other
            .commit(
                marketlake_schemas::l2::trades_batch(&[], marketlake_schemas::now_utc_ns())?,
                &[marketlake_lake::OffsetAdvance {
                    topic: TOPIC_RAW_TRADES.into(),
                    partition: claimed_partition,
                    from: None,
                    to: CLAIMED_UP_TO,
                }],
            )
            .await?;
        if !matches!(claimed, marketlake_lake::CommitOutcome::Committed { .. }) {
            bail!("the other writer's commit was refused: {claimed:?}");
        }
        // More fills push enrichment past its batch size: its commit is refused.
        publish_fills(&producer, FIRST..ALL).await?;
        let log_deadline = Instant::now() + Duration::from_secs(60);
        while !lake.log("enrich.log").contains("re-seeking") {
            if Instant::now() > log_deadline {
                bail!("enrichment never reported the refused commit");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The second pass over the topic commits once all of it is buffered again.
        let rows_deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let rows = table_rows(&lake, L2_TRADES).await?;
            if rows > 0 {
                break;
            }
            if Instant::now() > rows_deadline {
                bail!("nothing committed to l2.trades 60 s after the re-seek");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(claimed_partition)
    }
    .await;
    let claimed_partition = stop_enrich(&lake, enrich, watched)?;
    let mut seen = BTreeSet::new();
    let mut rows = 0_usize;
    for batch in table_batches(&lake, L2_TRADES).await? {
        let partitions = batch
            .column_by_name("raw_partition")
            .and_then(|c| c.as_any().downcast_ref::<Int32Array>())
            .context("raw_partition column")?;
        let offsets = i64_column(&batch, "raw_offset")?;
        for row in 0..batch.num_rows() {
            let at = (partitions.value(row), offsets.value(row));
            assert!(
                !(at.0 == claimed_partition && at.1 <= CLAIMED_UP_TO),
                "raw.trades[{claimed_partition}] offset {} is in l2.trades though the other writer claimed it",
                at.1
            );
            assert!(seen.insert(at), "raw record {at:?} in l2.trades twice");
            rows += 1;
        }
    }
    // raw.trades holds exactly ALL records; all but the claimed ones are in, once.
    assert_eq!(
        i64::try_from(rows)?,
        ALL - (CLAIMED_UP_TO + 1),
        "l2.trades rows\n--- enrich.log\n{}",
        lake.log("enrich.log")
    );
    Ok(())
}

/// Back-fills (`--until-caught-up`) while another member of the service's group holds some of
/// the partitions: enrichment waits for them instead of ending on the part it was given, and
/// curation, whose windows span every partition, reads them all without a group. Both used to
/// end early on a partial assignment (curation then fired every window with part of the trades).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_fills_finish_every_partition_while_another_member_holds_some() -> Result<()> {
    let _heavy = HEAVY.lock().await;
    const SOME_FILLS: i64 = 3_000;
    const HOLD: Duration = Duration::from_secs(6);
    let lake = Lake::new(LakeOptions {
        extra_toml: "[enrich]\nreference_files = []\n\n[curate]\nidle_advance_secs = 3600\n\n[curate.bars]\nintervals_secs = [60]\n".into(),
        ..LakeOptions::default()
    })?;
    create_topics(&lake.kafka_config(3)).await?;
    let producer = RawProducer::new(&lake.kafka_config(3))?;
    publish_fills(&producer, 0..SOME_FILLS).await?;

    let holder = hold_partitions(
        &lake,
        "marketlake-enrich",
        &[TOPIC_RAW_TRADES, TOPIC_RAW_NEWS],
        HOLD,
    )
    .await?;
    let enrich_started = Instant::now();
    tokio::task::block_in_place(|| {
        lake.run(&["enrich", "--until-caught-up"], Duration::from_secs(120))
    })?;
    let held = holder.await??;
    eprintln!(
        "enrich caught up after {:?}; the other member held {held:?}",
        enrich_started.elapsed()
    );
    assert!(
        held.iter().skip(1).any(|keys| !keys.is_empty()),
        "the other member kept no partition once enrichment joined: nothing was exercised"
    );
    let keys = l2_trade_keys(&lake).await?;
    let missing = missing_fills(&keys, SOME_FILLS).len();
    assert_eq!(
        missing, 0,
        "fills missing from l2.trades after the back-fill"
    );

    let holder = hold_partitions(
        &lake,
        "marketlake-curate",
        &[TOPIC_ENRICHED_TRADES, TOPIC_ENRICHED_NEWS],
        HOLD,
    )
    .await?;
    tokio::task::block_in_place(|| {
        lake.run(&["curate", "--until-caught-up"], Duration::from_secs(120))
    })?;
    holder.await??;
    assert_bars_match_batch(&lake, SOME_FILLS).await
}
