//! `marketlake bench enrich`: the L2/L3 figures. In one run, on a private broker and lake:
//! connector replay → `raw.trades`; L1 ingest (the reference); enrichment into L2 (records/s,
//! records per CPU-second, ratio to L1); curation into L3. Then freshness at a paced rate with
//! every service running: receipt by the FIX drop-copy listener → visible in `l2.trades`, and a
//! 1-minute bar's visibility after its window closed.

use std::sync::Arc;
use std::time::Duration;

use marketlake_connectors::source::{run_source, SourceStats};
use marketlake_connectors::{ConnectorKind, SourceConfig};
use marketlake_curate::pipeline::{CurateJob, CurateSettings};
use marketlake_enrich::pipeline::{EnrichJob, EnrichSettings};
use marketlake_ingest::{IngestConfig, IngestJob};
use marketlake_kafka::admin::{ensure_topics, TopicSpec};
use marketlake_kafka::{KafkaConfig, RawProducer};
use marketlake_lake::LakeConfig;
use marketlake_schemas::names::{
    dead_letter_topic, TOPIC_ENRICHED_NEWS, TOPIC_ENRICHED_TRADES, TOPIC_RAW_NEWS, TOPIC_RAW_TRADES,
};
use tokio_util::sync::CancellationToken;

use crate::bench::{
    process_cpu_seconds, send_paced, start_dropcopy, start_private_broker, write_fix_file,
    CpuConditions, DROPCOPY_SOURCE,
};
use crate::config::Config;

#[derive(Debug, clap::Args)]
pub struct EnrichBenchArgs {
    /// FIX execution reports to replay for the throughput phase.
    #[arg(long, default_value_t = 500_000)]
    records: u64,
    #[arg(long, default_value_t = 3)]
    partitions: i32,
    /// Records per second for the freshness phase (several values: `--rate 10000 --rate 100000`).
    #[arg(long, default_values_t = [10_000u64])]
    rate: Vec<u64>,
    /// Seconds of paced traffic per rate (0 skips freshness).
    #[arg(long, default_value_t = 90)]
    seconds: u64,
}

fn quantile(values: &[i64], q: f64) -> f64 {
    marketlake_schemas::quantile_ms(values, q).unwrap_or(f64::NAN)
}

pub async fn run(config: Config, args: EnrichBenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (broker, brokers) = start_private_broker(dir.path())?;
    let kafka = KafkaConfig {
        brokers,
        partitions: args.partitions,
        ..config.kafka.clone()
    };
    let lake = LakeConfig {
        root: dir.path().join("lake"),
        ..config.lake.clone()
    };
    let source_id = "bench-fix";
    let mut topics = vec![
        dead_letter_topic(source_id),
        dead_letter_topic("bench-dropcopy"),
    ]
    .into_iter()
    .map(|name| TopicSpec {
        name,
        partitions: 1,
    })
    .collect::<Vec<_>>();
    for name in [
        TOPIC_RAW_TRADES,
        TOPIC_RAW_NEWS,
        TOPIC_ENRICHED_TRADES,
        TOPIC_ENRICHED_NEWS,
    ] {
        topics.push(TopicSpec {
            name: name.into(),
            partitions: args.partitions,
        });
    }
    ensure_topics(&kafka, &topics).await?;
    let ingest_config = IngestConfig {
        group: "bench-ingest".into(),
        ..config.ingest.clone()
    };
    let enrich_settings = EnrichSettings {
        group: "bench-enrich".into(),
        ..config.enrich.clone()
    };
    let curate_settings = CurateSettings {
        group: "bench-curate".into(),
        ..config.curate.clone()
    };
    println!(
        "bench enrich: {} FIX execution reports, {} partitions, broker {}, lake {}",
        args.records,
        args.partitions,
        kafka.brokers,
        lake.root.display()
    );
    let fix_file = dir.path().join("executions.fix");
    write_fix_file(&fix_file, args.records)?;
    let spec = SourceConfig {
        id: source_id.into(),
        kind: ConnectorKind::Fix,
        settings: serde_json::json!({ "file": fix_file }),
    }
    .validate("bench")?;
    let producer = Arc::new(RawProducer::new(&kafka)?);
    run_source(
        spec,
        producer,
        dir.path().join("state"),
        CancellationToken::new(),
        Arc::new(SourceStats::default()),
    )
    .await?;

    let cpu = process_cpu_seconds("self");
    let ingest = marketlake_ingest::run(
        IngestJob {
            kafka: kafka.clone(),
            lake: lake.clone(),
            ingest: ingest_config.clone(),
            dead_letter_topics: vec![dead_letter_topic(source_id)],
            until_caught_up: true,
        },
        CancellationToken::new(),
    )
    .await?;
    let ingest_cpu = process_cpu_seconds("self") - cpu;
    let cpu = process_cpu_seconds("self");
    let enrich = marketlake_enrich::pipeline::run(
        EnrichJob {
            kafka: kafka.clone(),
            lake: lake.clone(),
            enrich: enrich_settings.clone(),
            until_caught_up: true,
        },
        CancellationToken::new(),
    )
    .await?;
    let enrich_cpu = process_cpu_seconds("self") - cpu;
    let cpu = process_cpu_seconds("self");
    let curate = marketlake_curate::pipeline::run(
        CurateJob {
            kafka: kafka.clone(),
            lake: lake.clone(),
            curate: curate_settings.clone(),
            until_caught_up: true,
        },
        CancellationToken::new(),
    )
    .await?;
    let curate_cpu = process_cpu_seconds("self") - cpu;
    let ingest_rate = ingest.records as f64 / ingest.elapsed.as_secs_f64().max(1e-9);
    let enrich_rate = enrich.raw_records as f64 / enrich.elapsed.as_secs_f64().max(1e-9);
    // Curation's work ends when it has caught up; at exit it then waits for a background state
    // snapshot still being written (reported below, not counted in its rate).
    let curate_work = curate.caught_up_after.unwrap_or(curate.elapsed);
    let curate_rate = curate.trades as f64 / curate_work.as_secs_f64().max(1e-9);
    println!();
    println!("| stage | records | seconds | records/s | CPU s (this process) | records per CPU-second | vs L1 ingest |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (stage, records, elapsed, rate, cpu) in [
        (
            "ingest raw.trades → l1.trades_raw (reference)",
            ingest.records,
            ingest.elapsed,
            ingest_rate,
            ingest_cpu,
        ),
        (
            "enrich raw.trades → l2.trades + enriched.trades",
            enrich.raw_records,
            enrich.elapsed,
            enrich_rate,
            enrich_cpu,
        ),
        (
            "curate enriched.trades → l3 bars (1m, 5m, 1h)",
            curate.trades,
            curate_work,
            curate_rate,
            curate_cpu,
        ),
    ] {
        println!(
            "| {stage} | {records} | {:.2} | {rate:.0} | {cpu:.1} | {:.0} | {:.0} % |",
            elapsed.as_secs_f64(),
            records as f64 / cpu.max(1e-9),
            100.0 * rate / ingest_rate.max(1e-9)
        );
    }
    println!(
        "\nenrich: {} trades, {} quarantined, {} commits; curate: {} bar rows, {} late, {} cycles; curate then waited {:.2} s at exit for the background state snapshot",
        enrich.trades,
        enrich.quarantined,
        enrich.commits,
        curate.bars,
        curate.late,
        curate.cycles,
        curate.elapsed.saturating_sub(curate_work).as_secs_f64()
    );
    for rate in &args.rate {
        if args.seconds > 0 {
            freshness(
                &kafka,
                &lake,
                &ingest_config,
                &enrich_settings,
                &curate_settings,
                *rate,
                args.seconds,
                dir.path(),
                Some(broker.pid()),
            )
            .await?;
        }
    }
    file_counts(&lake, &curate_settings, &config.maintain).await
}

/// Files per table after the run, then after one maintenance pass.
async fn file_counts(
    lake: &LakeConfig,
    curate: &CurateSettings,
    maintain: &crate::config::MaintainConfig,
) -> anyhow::Result<()> {
    let specs: Vec<_> = marketlake_ingest::l1_specs()
        .into_iter()
        .chain(marketlake_enrich::pipeline::l2_specs())
        .chain(marketlake_curate::pipeline::l3_specs(curate))
        .collect();
    let small = i64::try_from(maintain.small_file_mb * 1024 * 1024).unwrap_or(i64::MAX);
    println!("\n| table | files | avg file KB | files after compaction | avg KB after |");
    println!("|---|---:|---:|---:|---:|");
    for spec in specs {
        if !lake
            .root
            .join(spec.name.relative_path())
            .join("_delta_log")
            .exists()
        {
            continue;
        }
        let report = marketlake_lake::maintain::maintain_table(lake, &spec, small).await?;
        let avg = |bytes: i64, files: usize| bytes as f64 / 1024.0 / files.max(1) as f64;
        println!(
            "| {} | {} | {:.0} | {} | {:.0} |",
            report.table,
            report.files_before,
            avg(report.bytes_before, report.files_before),
            report.files_after,
            avg(report.bytes_after, report.files_after),
        );
    }
    Ok(())
}

/// Every service running; paced FIX fills with event time = now into the drop-copy listener.
#[allow(clippy::too_many_arguments)]
async fn freshness(
    kafka: &KafkaConfig,
    lake: &LakeConfig,
    ingest_config: &IngestConfig,
    enrich_settings: &EnrichSettings,
    curate_settings: &CurateSettings,
    rate: u64,
    seconds: u64,
    dir: &std::path::Path,
    broker_pid: Option<u32>,
) -> anyhow::Result<()> {
    let source_id = DROPCOPY_SOURCE;
    let stop = CancellationToken::new();
    let (listen, connector) =
        start_dropcopy(kafka, &dir.join(format!("state-{rate}")), stop.clone())?;
    let ingest = tokio::spawn(marketlake_ingest::run(
        IngestJob {
            kafka: kafka.clone(),
            lake: lake.clone(),
            ingest: ingest_config.clone(),
            dead_letter_topics: vec![dead_letter_topic(source_id)],
            until_caught_up: false,
        },
        stop.clone(),
    ));
    let enrich = tokio::spawn(marketlake_enrich::pipeline::run(
        EnrichJob {
            kafka: kafka.clone(),
            lake: lake.clone(),
            enrich: enrich_settings.clone(),
            until_caught_up: false,
        },
        stop.clone(),
    ));
    let curate = tokio::spawn(marketlake_curate::pipeline::run(
        CurateJob {
            kafka: kafka.clone(),
            lake: lake.clone(),
            curate: curate_settings.clone(),
            until_caught_up: false,
        },
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(4)).await;
    let conditions = CpuConditions::start(broker_pid);
    let (sent, sending) =
        send_paced(&listen, rate, seconds, 20_000_000 + rate * 1_000, true).await?;
    let conditions = conditions.summary();
    tokio::time::sleep(Duration::from_secs(6)).await;
    stop.cancel();
    let ingest = ingest.await??;
    let enrich = enrich.await??;
    let curate = curate.await??;
    connector.await??;
    let bound_ns =
        i64::try_from(curate_settings.bars.max_out_of_orderness_secs).unwrap_or(0) * 1_000_000_000;
    // A bar's wait after its window closed (window end + the out-of-orderness allowance) in wall
    // time: event time is the send time here, so this is what a user waiting for the bar sees.
    let after_close: Vec<i64> = curate
        .bar_closes
        .iter()
        .map(|(end, visible)| (visible - end - bound_ns) / 1_000)
        .collect();
    println!(
        "\nfreshness at {rate} records/s for {:.1}s ({sent} sent; {} in L1, {} in l2.trades):\n  while sending: {conditions}\n  receipt → visible in l1.trades_raw: p50 {:.0} ms, p99 {:.0} ms\n  receipt → visible in l2.trades:    p50 {:.0} ms, p99 {:.0} ms\n  1-minute..1-hour bars fired: {}; fired (watermark passed, drained) → visible: p50 {:.0} ms, p99 {:.0} ms\n  window end + {}s allowance → bar visible (wall clock): p50 {:.0} ms, p99 {:.0} ms",
        sending.as_secs_f64(),
        ingest.records,
        enrich.trades,
        ingest.latency_ms(0.5).unwrap_or(f64::NAN),
        ingest.latency_ms(0.99).unwrap_or(f64::NAN),
        enrich.latency_ms(0.5).unwrap_or(f64::NAN),
        enrich.latency_ms(0.99).unwrap_or(f64::NAN),
        curate.bar_visibility_us.len(),
        quantile(&curate.bar_visibility_us, 0.5),
        quantile(&curate.bar_visibility_us, 0.99),
        curate_settings.bars.max_out_of_orderness_secs,
        quantile(&after_close, 0.5),
        quantile(&after_close, 0.99),
    );
    Ok(())
}
