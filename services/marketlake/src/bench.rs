//! `marketlake bench ingest`: connector replay → raw topic → L1 on this machine, beside the
//! broker's own produce and consume rates measured in the same run, then freshness (receipt by
//! a connector → visible in L1) at a paced rate through the FIX drop-copy listener.
//!
//! By default the bench starts its own tansu broker (in-memory storage) on a free loopback port
//! and a temporary lake, so it measures nothing but itself.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use marketlake_connectors::source::{run_source, SourceStats};
use marketlake_connectors::{ConnectorKind, SourceConfig};
use marketlake_ingest::{IngestConfig, IngestJob};
use marketlake_kafka::admin::{ensure_topics, TopicSpec};
use marketlake_kafka::{KafkaConfig, RawProducer};
use marketlake_lake::LakeConfig;
use marketlake_schemas::names::{dead_letter_topic, TOPIC_RAW_NEWS, TOPIC_RAW_TRADES};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Connector replay → raw topic → L1, beside the broker's own produce and consume rates;
    /// then freshness at a paced rate.
    Ingest(IngestBenchArgs),
    /// Replay → L1 (reference) → L2 enrichment → L3 curation in one run; then L2 and bar
    /// freshness at paced rates with every service running.
    Enrich(crate::bench_enrich::EnrichBenchArgs),
    /// The API on a private lake: full extraction (Parquet, NDJSON) beside DuckDB, a narrow
    /// query's latency, news search freshness and latency.
    Api(crate::bench_api::ApiBenchArgs),
    /// The curator's window state in memory: trades applied beside the batch recomputation of
    /// their bars, and the copy a snapshot takes of the live state.
    CurateState(crate::bench_curate::CurateStateBenchArgs),
}

#[derive(Debug, clap::Args)]
pub struct IngestBenchArgs {
    /// FIX execution reports to replay for the throughput phase.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Partitions of the raw topic.
    #[arg(long, default_value_t = 3)]
    partitions: i32,
    /// Records per second for the freshness phase.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Seconds of paced traffic for the freshness phase (0 skips it).
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Use this broker instead of starting a private one (its raw topics must be empty).
    #[arg(long)]
    brokers: Option<String>,
}

pub async fn run(config: Config, command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Ingest(args) => ingest(config, args).await,
        BenchCommand::Enrich(args) => crate::bench_enrich::run(config, args).await,
        BenchCommand::Api(args) => crate::bench_api::run(config, args).await,
        BenchCommand::CurateState(args) => crate::bench_curate::run(args),
    }
}

/// A FIX 4.4 execution report with correct BodyLength and CheckSum.
fn execution_report(seq: u64) -> Vec<u8> {
    execution_report_with_time(seq, "20261123-12:00:00.000")
}

/// [`execution_report`] with TransactTime and SendingTime at `ns` (UTC).
pub(crate) fn execution_report_at(seq: u64, ns: i64) -> Vec<u8> {
    let secs = ns.div_euclid(1_000_000_000);
    let millis = ns.rem_euclid(1_000_000_000) / 1_000_000;
    let date = marketlake_schemas::l1::utc_date_of_ns(ns).replace('-', "");
    let rem = secs.rem_euclid(86_400);
    let time = format!(
        "{date}-{:02}:{:02}:{:02}.{millis:03}",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    );
    execution_report_with_time(seq, &time)
}

fn execution_report_with_time(seq: u64, time: &str) -> Vec<u8> {
    const SYMBOLS: [&str; 8] = [
        "AAPL", "MSFT", "GOOG", "IBM", "TSLA", "AMZN", "NVDA", "META",
    ];
    let symbol = SYMBOLS[(seq % SYMBOLS.len() as u64) as usize];
    let price = 100.0 + (seq % 5_000) as f64 / 100.0;
    let body = format!(
        "35=8\x0149=EXCH\x0156=DESK\x0134={seq}\x0152={time}\x0137=O{seq}\x0117=E{seq}\x01150=F\x0139=2\x0155={symbol}\x0154={}\x0138=100\x0132=100\x0131={price:.2}\x0114=100\x016=0\x0151=0\x0160={time}\x01",
        1 + seq % 2
    );
    let head = format!("8=FIX.4.4\x019={}\x01", body.len());
    let mut message = format!("{head}{body}").into_bytes();
    let checksum = message.iter().map(|b| u32::from(*b)).sum::<u32>() % 256;
    message.extend_from_slice(format!("10={checksum:03}\x01").as_bytes());
    message
}

pub(crate) fn write_fix_file(path: &Path, records: u64) -> anyhow::Result<u64> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut bytes = 0u64;
    for seq in 0..records {
        let message = execution_report(seq);
        bytes += message.len() as u64 + 1;
        file.write_all(&message)?;
        file.write_all(b"\n")?;
    }
    file.flush()?;
    Ok(bytes)
}

pub(crate) struct PrivateBroker(Child);

impl PrivateBroker {
    pub(crate) fn pid(&self) -> u32 {
        self.0.id()
    }
}

/// CPU seconds (user + system) a process has used, from `/proc/<pid>/stat` (`"self"` for this
/// process); NaN where that cannot be read.
pub(crate) fn process_cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // Fields after the command name (which is in parentheses and may hold spaces).
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return f64::NAN;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    // Clock ticks are 1/100 s on every Linux this runs on (USER_HZ).
    (ticks(11) + ticks(12)) / 100.0
}

/// One field of `/proc/<pid>/status` (`"self"` for this process), in the kB it is given in;
/// `None` where that cannot be read.
pub(crate) fn proc_status_kb(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Machine-wide CPU time from `/proc/stat`, in clock ticks.
#[derive(Debug, Clone, Copy)]
struct MachineTicks {
    /// idle + iowait.
    idle: f64,
    steal: f64,
    total: f64,
    /// The CPUs these ticks cover (one `cpuN` line each; a CPU quota or affinity would make
    /// `available_parallelism` count fewer).
    cpus: usize,
}

fn machine_ticks() -> Option<MachineTicks> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let values: Vec<f64> = line
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    let at = |i: usize| values.get(i).copied().unwrap_or(0.0);
    let cpus = stat
        .lines()
        .filter(|line| {
            line.strip_prefix("cpu")
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
        .count();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    Some(MachineTicks {
        idle: at(3) + at(4),
        steal: at(7),
        total: (0..8).map(at).sum(),
        cpus,
    })
}

/// What the machine was doing while a figure was measured: the cores this process and the
/// broker used, and the share of the machine left idle or taken by the hypervisor (steal). A
/// latency figure from a machine with no idle time left says "saturated", not "slow code".
pub(crate) struct CpuConditions {
    started: Instant,
    this: f64,
    broker: f64,
    broker_pid: Option<u32>,
    machine: Option<MachineTicks>,
}

impl CpuConditions {
    pub(crate) fn start(broker_pid: Option<u32>) -> Self {
        CpuConditions {
            started: Instant::now(),
            this: process_cpu_seconds("self"),
            broker: broker_pid.map_or(f64::NAN, |pid| process_cpu_seconds(&pid.to_string())),
            broker_pid,
            machine: machine_ticks(),
        }
    }

    /// One line: cores used by this process and the broker since `start`, machine idle and
    /// steal shares.
    pub(crate) fn summary(&self) -> String {
        let seconds = self.started.elapsed().as_secs_f64().max(1e-9);
        let this = (process_cpu_seconds("self") - self.this) / seconds;
        let broker = self.broker_pid.map_or(f64::NAN, |pid| {
            (process_cpu_seconds(&pid.to_string()) - self.broker) / seconds
        });
        let end = machine_ticks();
        let (idle, steal) = match (self.machine, end) {
            (Some(start), Some(end)) if end.total > start.total => {
                let total = end.total - start.total;
                (
                    100.0 * (end.idle - start.idle) / total,
                    100.0 * (end.steal - start.steal) / total,
                )
            }
            _ => (f64::NAN, f64::NAN),
        };
        let cores = end.map_or(0, |end| end.cpus);
        format!(
            "this process {this:.2} cores, broker {broker:.2} cores; machine ({cores} cores) idle {idle:.0} %, steal {steal:.0} %"
        )
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn start_private_broker(dir: &Path) -> anyhow::Result<(PrivateBroker, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let url = format!("tcp://127.0.0.1:{port}");
    let log = std::fs::File::create(dir.join("tansu.log"))?;
    let child = Command::new("tansu")
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "memory://tansu/"])
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .spawn()
        .context("starting tansu for the bench (scripts/ensure-tools installs it)")?;
    let broker = PrivateBroker(child);
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if started.elapsed() > Duration::from_secs(20) {
            bail!("the bench broker did not start within 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((broker, format!("127.0.0.1:{port}")))
}

struct Row {
    measure: String,
    records: u64,
    bytes: u64,
    elapsed: Duration,
}

impl Row {
    fn rate(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    fn mb_rate(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

fn print_table(rows: &[Row], reference: f64) {
    println!();
    println!(
        "| measure | records | MB | seconds | records/s | MB/s | vs broker consume of raw.trades |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        println!(
            "| {} | {} | {:.1} | {:.2} | {:.0} | {:.2} | {:.0} % |",
            row.measure,
            row.records,
            row.bytes as f64 / 1e6,
            row.elapsed.as_secs_f64(),
            row.rate(),
            row.mb_rate(),
            100.0 * row.rate() / reference.max(1e-9)
        );
    }
}

/// A plain consumer reading `(partitions, records)` of `topic` from the start.
async fn plain_consume(
    kafka: &KafkaConfig,
    topic: &str,
    (partitions, records): (i32, u64),
    measure: &str,
) -> anyhow::Result<Row> {
    let (records, bytes, elapsed) = marketlake_kafka::reference::consume_all(
        kafka,
        topic,
        partitions,
        records,
        Duration::from_secs(1_800),
    )
    .await?;
    Ok(Row {
        measure: measure.into(),
        records,
        bytes,
        elapsed,
    })
}

async fn ingest(config: Config, args: IngestBenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (_broker, brokers) = match &args.brokers {
        Some(brokers) => (None, brokers.clone()),
        None => {
            let (broker, addr) = start_private_broker(dir.path())?;
            (Some(broker), addr)
        }
    };
    let kafka = KafkaConfig {
        brokers,
        partitions: args.partitions,
        ..config.kafka.clone()
    };
    let lake = LakeConfig {
        root: dir.path().join("lake"),
        ..config.lake.clone()
    };
    let ingest_config = IngestConfig {
        group: "marketlake-bench".into(),
        ..config.ingest.clone()
    };
    let source_id = "bench-fix";
    let baseline_topic = "bench.baseline";
    ensure_topics(
        &kafka,
        &[
            TopicSpec {
                name: TOPIC_RAW_TRADES.into(),
                partitions: args.partitions,
            },
            TopicSpec {
                name: TOPIC_RAW_NEWS.into(),
                partitions: args.partitions,
            },
            TopicSpec {
                name: dead_letter_topic(source_id),
                partitions: 1,
            },
            TopicSpec {
                name: baseline_topic.into(),
                partitions: args.partitions,
            },
        ],
    )
    .await?;
    println!(
        "bench ingest: {} FIX execution reports, {} partitions, broker {}, lake {}",
        args.records,
        args.partitions,
        kafka.brokers,
        lake.root.display()
    );
    let fix_file: PathBuf = dir.path().join("executions.fix");
    let file_bytes = write_fix_file(&fix_file, args.records)?;
    let mut rows = Vec::new();

    // 1. The broker's own produce rate: the same payloads, no connector.
    let producer = RawProducer::new(&kafka)?;
    let started = Instant::now();
    let mut bytes = 0u64;
    for seq in 0..args.records {
        let payload = execution_report(seq);
        bytes += payload.len() as u64;
        producer
            .send(baseline_topic, &format!("k{}", seq % 64), &payload, &[])
            .await?;
    }
    producer.flush_deliveries().await?;
    rows.push(Row {
        measure: "broker produce (plain producer)".into(),
        records: args.records,
        bytes,
        elapsed: started.elapsed(),
    });

    // 2. The broker's own consume rate of bare payloads: a plain consumer reading that topic.
    rows.push(
        plain_consume(
            &kafka,
            baseline_topic,
            (args.partitions, args.records),
            "broker consume (plain consumer)",
        )
        .await?,
    );

    // 3. Connector replay: frame, verify checksums, publish with metadata headers.
    let spec = SourceConfig {
        id: source_id.into(),
        kind: ConnectorKind::Fix,
        settings: serde_json::json!({ "file": fix_file }),
    }
    .validate("bench")?;
    let producer = Arc::new(RawProducer::new(&kafka)?);
    let stats = Arc::new(SourceStats::default());
    let report = run_source(
        spec,
        producer.clone(),
        dir.path().join("state"),
        CancellationToken::new(),
        stats,
    )
    .await?;
    rows.push(Row {
        measure: "connector replay (fix file → raw.trades)".into(),
        records: report.records,
        bytes: file_bytes,
        elapsed: report.elapsed,
    });

    // 4. The broker's consume rate of exactly what ingest reads: the plain consumer over
    // raw.trades (the connector's batches, with the metadata headers).
    let raw_consume = plain_consume(
        &kafka,
        TOPIC_RAW_TRADES,
        (args.partitions, report.records),
        "broker consume of raw.trades (plain consumer)",
    )
    .await?;
    // The reference of the ratios: the broker's rate for exactly these records.
    let reference = raw_consume.rate();
    rows.push(raw_consume);

    // 5. Ingest into L1, draining to the end offsets.
    let job = IngestJob {
        kafka: kafka.clone(),
        lake: lake.clone(),
        ingest: ingest_config.clone(),
        dead_letter_topics: vec![dead_letter_topic(source_id)],
        until_caught_up: true,
    };
    let ingest_report = marketlake_ingest::run(job, CancellationToken::new()).await?;
    rows.push(Row {
        measure: "ingest raw.trades → l1.trades_raw".into(),
        records: ingest_report.records,
        bytes: ingest_report.payload_bytes,
        // Until the last record was in L1, as the reference counts until its last record.
        elapsed: ingest_report
            .last_rows_visible
            .unwrap_or(ingest_report.elapsed),
    });
    print_table(&rows, reference);
    println!(
        "\ningest: every record in L1 after {:.2} s; --until-caught-up then proved every partition drained and exited at {:.2} s ({:.0} records/s over that whole time)",
        ingest_report
            .last_rows_visible
            .unwrap_or(ingest_report.elapsed)
            .as_secs_f64(),
        ingest_report.elapsed.as_secs_f64(),
        ingest_report.records as f64 / ingest_report.elapsed.as_secs_f64().max(1e-9),
    );
    println!(
        "ingest commits: {}, conflicts: {}, consumer: {:?}",
        ingest_report.commits, ingest_report.conflicts, ingest_report.consumer
    );

    if args.seconds > 0 {
        freshness(&kafka, &lake, &ingest_config, &args, dir.path()).await?;
    }
    Ok(())
}

/// The source id of the benches' FIX drop-copy listener.
pub(crate) const DROPCOPY_SOURCE: &str = "bench-dropcopy";

type SourceTask = tokio::task::JoinHandle<
    Result<marketlake_connectors::source::SourceReport, marketlake_connectors::ConnectorError>,
>;

/// A FIX drop-copy listener on a free loopback port, publishing until `stop`.
pub(crate) fn start_dropcopy(
    kafka: &KafkaConfig,
    state_dir: &Path,
    stop: CancellationToken,
) -> anyhow::Result<(String, SourceTask)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let listen = format!("127.0.0.1:{port}");
    let spec = SourceConfig {
        id: DROPCOPY_SOURCE.into(),
        kind: ConnectorKind::Fix,
        settings: serde_json::json!({ "listen": listen }),
    }
    .validate("bench")?;
    let producer = Arc::new(RawProducer::new(kafka)?);
    let task = tokio::spawn(run_source(
        spec,
        producer,
        state_dir.to_path_buf(),
        stop,
        Arc::new(SourceStats::default()),
    ));
    Ok((listen, task))
}

/// Send `rate` execution reports a second for `seconds` to a drop-copy listener, in 10 ms
/// ticks; with `now_times` each carries the send time as its event time. Returns how many were
/// sent and how long sending took.
pub(crate) async fn send_paced(
    listen: &str,
    rate: u64,
    seconds: u64,
    first_seq: u64,
    now_times: bool,
) -> anyhow::Result<(u64, Duration)> {
    let mut stream = tokio::net::TcpStream::connect(listen).await?;
    let total = rate * seconds;
    let started = Instant::now();
    let tick = Duration::from_millis(10);
    let per_tick = (rate / 100).max(1);
    let mut sent = 0u64;
    let mut next = tokio::time::Instant::now();
    while sent < total {
        let mut chunk = Vec::new();
        let now = marketlake_schemas::now_utc_ns();
        for _ in 0..per_tick.min(total - sent) {
            let seq = first_seq + sent;
            chunk.extend_from_slice(&if now_times {
                execution_report_at(seq, now)
            } else {
                execution_report(seq)
            });
            sent += 1;
        }
        stream.write_all(&chunk).await?;
        next += tick;
        tokio::time::sleep_until(next).await;
    }
    stream.shutdown().await?;
    Ok((sent, started.elapsed()))
}

/// Paced FIX traffic into the drop-copy listener while ingest runs; receipt → visible latency.
async fn freshness(
    kafka: &KafkaConfig,
    lake: &LakeConfig,
    ingest_config: &IngestConfig,
    args: &IngestBenchArgs,
    dir: &Path,
) -> anyhow::Result<()> {
    let source_id = DROPCOPY_SOURCE;
    ensure_topics(
        kafka,
        &[TopicSpec {
            name: dead_letter_topic(source_id),
            partitions: 1,
        }],
    )
    .await?;
    let stop = CancellationToken::new();
    let (listen, connector) = start_dropcopy(kafka, &dir.join("state"), stop.clone())?;
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
    // Let the ingest join its group before traffic starts.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (sent, sending) = send_paced(&listen, args.rate, args.seconds, 10_000_000, false).await?;
    // Give the last commit time to land, then stop both.
    tokio::time::sleep(Duration::from_millis(
        ingest_config.commit_interval_ms * 3 + 2_000,
    ))
    .await;
    stop.cancel();
    let report = ingest.await??;
    connector.await??;
    println!(
        "\nfreshness at {} records/s for {:.1}s ({} records sent, {} visible in l1.trades_raw): receipt → visible p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms (commit interval {} ms)",
        args.rate,
        sending.as_secs_f64(),
        sent,
        report.records,
        report.latency_ms(0.5).unwrap_or(f64::NAN),
        report.latency_ms(0.99).unwrap_or(f64::NAN),
        report.latency_ms(1.0).unwrap_or(f64::NAN),
        ingest_config.commit_interval_ms
    );
    Ok(())
}
