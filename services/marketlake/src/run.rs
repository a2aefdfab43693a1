//! Subcommand wiring: which services run, on which configuration, until when.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use marketlake_connectors::source::{run_source, SourceReport, SourceStats};
use marketlake_connectors::{ConnectorKind, SourceConfig, SourceSpec};
use marketlake_curate::pipeline::{CurateJob, CurateReport};
use marketlake_enrich::pipeline::{EnrichJob, EnrichReport};
use marketlake_ingest::{IngestJob, IngestReport};
use marketlake_kafka::admin::{check_reachable, ensure_topics, TopicSpec};
use marketlake_kafka::RawProducer;
use marketlake_schemas::names::{
    dead_letter_topic, TableName, TOPIC_ENRICHED_NEWS, TOPIC_ENRICHED_TRADES, TOPIC_RAW_NEWS,
    TOPIC_RAW_TRADES,
};
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// A token cancelled by Ctrl-C or SIGTERM: every service stops at a commit boundary.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(term) => term,
                    Err(_) => {
                        let _ = ctrl_c.await;
                        trigger.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutdown requested; finishing the current commits");
        trigger.cancel();
    });
    token
}

/// Check the broker answers and create every topic the given sources need.
async fn prepare_topics(config: &Config, source_ids: &[String]) -> anyhow::Result<()> {
    // Generous: a busy broker (or a durable one replaying its log) can be slow to answer.
    check_reachable(&config.kafka, Duration::from_secs(20)).await?;
    let mut topics = vec![
        TopicSpec {
            name: TOPIC_RAW_TRADES.into(),
            partitions: config.kafka.partitions,
        },
        TopicSpec {
            name: TOPIC_RAW_NEWS.into(),
            partitions: config.kafka.partitions,
        },
        // Enriched rows go to the partition number of their raw record: same counts.
        TopicSpec {
            name: TOPIC_ENRICHED_TRADES.into(),
            partitions: config.kafka.partitions,
        },
        TopicSpec {
            name: TOPIC_ENRICHED_NEWS.into(),
            partitions: config.kafka.partitions,
        },
    ];
    for id in source_ids {
        topics.push(TopicSpec {
            name: dead_letter_topic(id),
            partitions: 1,
        });
    }
    ensure_topics(&config.kafka, &topics).await?;
    Ok(())
}

pub async fn topics(config: &Config) -> anyhow::Result<()> {
    config.validate()?;
    let ids: Vec<String> = config.sources.iter().map(|s| s.id.clone()).collect();
    prepare_topics(config, &ids).await?;
    println!("topics ready on {}", config.kafka.brokers);
    Ok(())
}

fn ingest_job(config: &Config, until_caught_up: bool) -> IngestJob {
    IngestJob {
        kafka: config.kafka.clone(),
        lake: config.lake.clone(),
        ingest: config.ingest.clone(),
        dead_letter_topics: config
            .sources
            .iter()
            .map(|s| dead_letter_topic(&s.id))
            .collect(),
        until_caught_up,
    }
}

pub fn print_ingest_report(report: &IngestReport) {
    let seconds = report.elapsed.as_secs_f64().max(1e-9);
    println!(
        "ingested {} records ({:.1} MB payload) in {} commits over {:.1}s: {:.0} records/s, {:.2} MB/s; conflicts {}; visibility p50 {} ms, p99 {} ms; consumer {:?}",
        report.records,
        report.payload_bytes as f64 / 1e6,
        report.commits,
        seconds,
        report.records as f64 / seconds,
        report.payload_bytes as f64 / 1e6 / seconds,
        report.conflicts,
        report.latency_ms(0.5).map_or("-".into(), |v| format!("{v:.0}")),
        report.latency_ms(0.99).map_or("-".into(), |v| format!("{v:.0}")),
        report.consumer,
    );
}

pub async fn ingest(config: Config, until_caught_up: bool) -> anyhow::Result<()> {
    config.validate()?;
    let ids: Vec<String> = config.sources.iter().map(|s| s.id.clone()).collect();
    prepare_topics(&config, &ids).await?;
    let shutdown = shutdown_on_signal();
    let report = marketlake_ingest::run(ingest_job(&config, until_caught_up), shutdown).await?;
    print_ingest_report(&report);
    Ok(())
}

pub fn enrich_job(config: &Config, until_caught_up: bool) -> EnrichJob {
    EnrichJob {
        kafka: config.kafka.clone(),
        lake: config.lake.clone(),
        enrich: config.enrich.clone(),
        until_caught_up,
    }
}

pub fn curate_job(config: &Config, until_caught_up: bool) -> CurateJob {
    CurateJob {
        kafka: config.kafka.clone(),
        lake: config.lake.clone(),
        curate: config.curate.clone(),
        until_caught_up,
    }
}

pub fn print_enrich_report(report: &EnrichReport) {
    let seconds = report.elapsed.as_secs_f64().max(1e-9);
    println!(
        "enriched {} raw records in {:.1}s ({:.0} records/s): {} trades, {} news, {} quarantined, {} not trades/news; {} commits, {} conflicts; reference version {}; l2.trades visibility p50 {} ms, p99 {} ms",
        report.raw_records,
        seconds,
        report.raw_records as f64 / seconds,
        report.trades,
        report.news,
        report.quarantined,
        report.skipped,
        report.commits,
        report.conflicts,
        report.reference_version.map_or("none".into(), |v| v.to_string()),
        report.latency_ms(0.5).map_or("-".into(), |v| format!("{v:.0}")),
        report.latency_ms(0.99).map_or("-".into(), |v| format!("{v:.0}")),
    );
}

pub fn print_curate_report(report: &CurateReport) {
    println!(
        "curated {} trades and {} news in {:.1}s: {} bar rows, {} late records, {} news-trade windows, {} replayed duplicates skipped, {} cycles",
        report.trades,
        report.news,
        report.elapsed.as_secs_f64(),
        report.bars,
        report.late,
        report.windows,
        report.duplicates,
        report.cycles,
    );
}

pub async fn enrich(config: Config, until_caught_up: bool) -> anyhow::Result<()> {
    config.validate()?;
    prepare_topics(&config, &[]).await?;
    let shutdown = shutdown_on_signal();
    let report =
        marketlake_enrich::pipeline::run(enrich_job(&config, until_caught_up), shutdown).await?;
    print_enrich_report(&report);
    Ok(())
}

pub async fn curate(config: Config, until_caught_up: bool) -> anyhow::Result<()> {
    config.validate()?;
    prepare_topics(&config, &[]).await?;
    let shutdown = shutdown_on_signal();
    let report =
        marketlake_curate::pipeline::run(curate_job(&config, until_caught_up), shutdown).await?;
    print_curate_report(&report);
    Ok(())
}

/// Every table of the lake: L1, L2, the reference dataset and the configured L3 tables.
pub(crate) fn all_specs(config: &Config) -> Vec<marketlake_lake::TableSpec> {
    marketlake_ingest::l1_specs()
        .into_iter()
        .chain(marketlake_enrich::pipeline::l2_specs())
        .chain([marketlake_enrich::reference::reference_spec()])
        .chain(marketlake_curate::pipeline::l3_specs(&config.curate))
        .collect()
}

/// How often consumer lag is measured (`up`).
const LAG_EVERY: Duration = Duration::from_secs(5);

/// Consumer lag per table, topic and partition, from what each sink committed (its Delta
/// `txn` offsets, the exactly-once position — not a consumer group's advisory offsets), written
/// every few seconds to `<lake>/_metrics/lag.prom` for the API's `/metrics`.
async fn report_lag(config: Config, stop: CancellationToken) {
    use marketlake_schemas::names::{
        L1_NEWS_RAW, L1_TRADES_RAW, L2_NEWS, L2_TRADES, TOPIC_RAW_NEWS, TOPIC_RAW_TRADES,
    };
    let consumers = [
        (
            marketlake_ingest::SINK_NAME,
            L1_TRADES_RAW,
            TOPIC_RAW_TRADES,
        ),
        (marketlake_ingest::SINK_NAME, L1_NEWS_RAW, TOPIC_RAW_NEWS),
        (
            marketlake_enrich::pipeline::SINK_NAME,
            L2_TRADES,
            TOPIC_RAW_TRADES,
        ),
        (
            marketlake_enrich::pipeline::SINK_NAME,
            L2_NEWS,
            TOPIC_RAW_NEWS,
        ),
    ];
    let specs = all_specs(&config);
    let mut sinks: std::collections::HashMap<String, marketlake_lake::ExactlyOnceSink> =
        std::collections::HashMap::new();
    let file = config.lake.root.join("_metrics/lag.prom");
    loop {
        tokio::select! {
            _ = tokio::time::sleep(LAG_EVERY) => {}
            _ = stop.cancelled() => return,
        }
        let mut text = String::from(
            "# HELP marketlake_consumer_lag Records on the topic not yet committed to the table (from the table's exactly-once offsets).\n# TYPE marketlake_consumer_lag gauge\n",
        );
        for (consumer, table, topic) in consumers {
            let Ok(ends) = marketlake_kafka::admin::watermarks(&config.kafka, topic).await else {
                continue;
            };
            let key = format!("{consumer}/{table}");
            if !sinks.contains_key(&key) {
                let Some(spec) = specs.iter().find(|s| s.name == table) else {
                    continue;
                };
                // The table may not exist yet: try again next round.
                if let Ok(sink) =
                    marketlake_lake::ExactlyOnceSink::open(&config.lake, spec.clone(), consumer)
                        .await
                {
                    sinks.insert(key.clone(), sink);
                }
            }
            let Some(sink) = sinks.get_mut(&key) else {
                continue;
            };
            let partitions: Vec<(String, i32)> =
                ends.iter().map(|(p, ..)| (topic.to_string(), *p)).collect();
            let Ok(stored) = sink.stored_offsets(&partitions).await else {
                continue;
            };
            for (partition, low, high) in ends {
                let next = stored
                    .get(&(topic.to_string(), partition))
                    .copied()
                    .flatten()
                    .map_or(low, |last| last + 1);
                let lag = (high - next).max(0);
                text.push_str(&format!(
                    "marketlake_consumer_lag{{consumer=\"{consumer}\",table=\"{table}\",topic=\"{topic}\",partition=\"{partition}\"}} {lag}\n"
                ));
            }
        }
        if let Err(e) = marketlake_lake::textfile::write_textfile(&file, &text) {
            tracing::warn!(error = %e, file = %file.display(), "could not write consumer lag");
        }
    }
}

/// One maintenance pass over every table that exists.
async fn maintain_once(config: &Config) -> anyhow::Result<()> {
    let small = i64::try_from(config.maintain.small_file_mb.saturating_mul(1024 * 1024))
        .unwrap_or(i64::MAX);
    for spec in all_specs(config) {
        if !config
            .lake
            .root
            .join(spec.name.relative_path())
            .join("_delta_log")
            .exists()
        {
            continue;
        }
        let report = marketlake_lake::maintain::maintain_table(&config.lake, &spec, small)
            .await
            .with_context(|| format!("maintaining {}", spec.name))?;
        println!(
            "{}: {} files ({:.1} MB) → {} files ({:.1} MB); {} small files rewritten into {}{}; checkpoint at version {}",
            report.table,
            report.files_before,
            report.bytes_before as f64 / 1e6,
            report.files_after,
            report.bytes_after as f64 / 1e6,
            report.rewritten,
            report.written,
            if report.gave_way { " (gave way to a writer; next pass retries)" } else { "" },
            report.checkpoint_version.map_or("-".into(), |v| v.to_string()),
        );
    }
    Ok(())
}

/// Start the API: catalog (migrated, seeded when empty), token keys, news index.
async fn start_api(config: &Config) -> anyhow::Result<marketlake_api::http::Api> {
    Ok(
        marketlake_api::http::Api::start(
            config.api.clone(),
            config.lake.clone(),
            all_specs(config),
        )
        .await?,
    )
}

/// `marketlake grants ...`: the catalog's grants, changed as `cli:<user>`.
pub async fn grants(config: &Config, command: crate::GrantsCommand) -> anyhow::Result<()> {
    use marketlake_api::catalog::{validate_grant, Catalog, Grant};
    let catalog = Catalog::connect(&config.api.catalog_url).await?;
    let actor = format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    );
    match command {
        crate::GrantsCommand::List => {
            for grant in catalog.list_grants().await? {
                println!("{}", serde_json::to_string(&grant)?);
            }
        }
        crate::GrantsCommand::History => {
            for change in catalog.grant_changes().await? {
                println!("{}", serde_json::to_string(&change)?);
            }
        }
        crate::GrantsCommand::Add {
            dataset,
            user,
            group,
            symbols,
            venues,
            masks,
        } => {
            let specs = all_specs(config);
            let Some(spec) = specs.iter().find(|s| s.name.to_string() == dataset) else {
                anyhow::bail!("no dataset `{dataset}` (see `marketlake inspect` for table names)");
            };
            let (principal_kind, principal) = match (user, group) {
                (Some(user), None) => ("user", user),
                (None, Some(group)) => ("group", group),
                _ => anyhow::bail!("give exactly one of --user or --group"),
            };
            let mut column_masks = std::collections::BTreeMap::new();
            for mask in masks {
                let (column, how) = mask
                    .split_once('=')
                    .with_context(|| format!("--mask {mask}: use column=hide or column=hash"))?;
                // A misspelt column would mask nothing.
                if spec.schema.field_with_name(column).is_err() {
                    anyhow::bail!("--mask {mask}: {dataset} has no column `{column}`");
                }
                column_masks.insert(column.to_string(), how.to_string());
            }
            let grant = Grant {
                grant_id: String::new(),
                dataset,
                principal_kind: principal_kind.into(),
                principal,
                symbols,
                venues,
                column_masks,
            };
            validate_grant(&grant).map_err(|e| anyhow::anyhow!(e))?;
            let created = catalog.grant(&grant, &actor, None).await?;
            println!("{}", serde_json::to_string(&created)?);
        }
        crate::GrantsCommand::Revoke { grant_id } => {
            match catalog.revoke(&grant_id, &actor, None).await? {
                Some(revoked) => println!("revoked {}", serde_json::to_string(&revoked)?),
                None => anyhow::bail!("no grant `{grant_id}` (see `marketlake grants list`)"),
            }
        }
    }
    Ok(())
}

/// `marketlake serve`: the entitled, audited API until Ctrl-C.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    config.lake.validate()?;
    config.api.validate().map_err(|e| anyhow::anyhow!(e))?;
    let api = start_api(&config).await?;
    println!(
        "marketlake API on http://{} (Ctrl-C stops it)",
        config.api.listen
    );
    api.serve(shutdown_on_signal()).await.with_context(|| {
        format!(
            "setting `api.listen`: cannot serve on {}",
            config.api.listen
        )
    })?;
    Ok(())
}

/// `marketlake token`: a local HS256 token signed with `api.auth.hmac_secret`.
pub fn token(
    config: &Config,
    sub: &str,
    roles: &[String],
    groups: &[String],
    ttl: i64,
) -> anyhow::Result<()> {
    let token = marketlake_api::auth::mint(&config.api.auth, sub, roles, groups, ttl)?;
    println!("{token}");
    Ok(())
}

/// `marketlake maintain [--every SECS]`: one pass, or passes on a schedule until Ctrl-C.
pub async fn maintain(config: Config, every: Option<u64>) -> anyhow::Result<()> {
    config.lake.validate()?;
    let shutdown = shutdown_on_signal();
    loop {
        maintain_once(&config).await?;
        let Some(every) = every.filter(|s| *s > 0) else {
            return Ok(());
        };
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(every)) => {}
            _ = shutdown.cancelled() => return Ok(()),
        }
    }
}

fn print_source_report(report: &SourceReport) {
    let seconds = report.elapsed.as_secs_f64().max(1e-9);
    println!(
        "source {}: {} records, {} dead letters, {:.2} MB in {:.1}s ({:.0} records/s)",
        report.source_id,
        report.records,
        report.dead_letters,
        report.bytes as f64 / 1e6,
        seconds,
        report.records as f64 / seconds,
    );
}

/// Run sources to completion (or shutdown) on one shared producer.
async fn run_sources(
    config: &Config,
    specs: Vec<SourceSpec>,
    producer: Arc<RawProducer>,
    shutdown: CancellationToken,
) -> anyhow::Result<Vec<SourceReport>> {
    let mut tasks = tokio::task::JoinSet::new();
    for spec in specs {
        let producer = producer.clone();
        let state_dir = config.state_dir.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let id = spec.id.clone();
            let stats = Arc::new(SourceStats::default());
            run_source(spec, producer, state_dir, shutdown, stats)
                .await
                .with_context(|| format!("source `{id}`"))
        });
    }
    let mut reports = Vec::new();
    let mut failure = None;
    while let Some(joined) = tasks.join_next().await {
        match joined.context("source task panicked")? {
            Ok(report) => {
                print_source_report(&report);
                reports.push(report);
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "source failed");
                failure.get_or_insert(e);
            }
        }
    }
    producer.flush_deliveries().await?;
    match failure {
        Some(e) => Err(e),
        None => Ok(reports),
    }
}

/// Run a service on its own task; when it fails, log it and cancel `shutdown` for the others.
fn spawn_service<T, E>(
    name: &'static str,
    service: impl std::future::Future<Output = Result<T, E>> + Send + 'static,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<Result<T, E>>
where
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    tokio::spawn(async move {
        let result = service.await;
        if let Err(e) = &result {
            tracing::error!(service = name, error = %e, "service failed; stopping the others");
            shutdown.cancel();
        }
        result
    })
}

pub async fn up(config: Config) -> anyhow::Result<()> {
    config.validate()?;
    let specs = config.source_specs()?;
    let ids: Vec<String> = specs.iter().map(|s| s.id.clone()).collect();
    prepare_topics(&config, &ids).await?;
    let shutdown = shutdown_on_signal();
    // Any service failing stops the others at once: a half-running lake is worse than a
    // stopped one.
    let ingest = spawn_service(
        "ingest",
        marketlake_ingest::run(ingest_job(&config, false), shutdown.clone()),
        shutdown.clone(),
    );
    let enrich = spawn_service(
        "enrichment",
        marketlake_enrich::pipeline::run(enrich_job(&config, false), shutdown.clone()),
        shutdown.clone(),
    );
    let curate = spawn_service(
        "curation",
        marketlake_curate::pipeline::run(curate_job(&config, false), shutdown.clone()),
        shutdown.clone(),
    );
    if config.maintain.every_secs > 0 {
        let maintenance = config.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(maintenance.maintain.every_secs)) => {}
                    _ = stop.cancelled() => return,
                }
                if let Err(e) = maintain_once(&maintenance).await {
                    tracing::warn!(error = %format!("{e:#}"), "maintenance pass failed; next pass retries");
                }
            }
        });
    }
    tokio::spawn(report_lag(config.clone(), shutdown.clone()));
    let api_service = start_api(&config).await?;
    let api = spawn_service("API", api_service.serve(shutdown.clone()), shutdown.clone());
    let producer = Arc::new(RawProducer::new(&config.kafka)?);
    let root = std::fs::canonicalize(&config.lake.root).unwrap_or(config.lake.root.clone());
    println!(
        "API on http://{} (token: marketlake token --sub alice --groups desk-eq)",
        config.api.listen
    );
    println!(
        "marketlake is up: broker {}, {} sources, tables under {} (l1: trades_raw, news_raw, dead_letters; l2: trades, news, quarantine; l3: bars_*, late_records, news_trade_windows). Ctrl-C stops it.",
        config.kafka.brokers,
        specs.len(),
        root.display()
    );
    let sources = run_sources(&config, specs, producer, shutdown.clone());
    // Sources that replay files finish; the services keep running until Ctrl-C.
    let sources_result = sources.await;
    if sources_result.is_err() {
        shutdown.cancel();
    } else {
        println!(
            "all replays published; ingest, enrichment and curation keep running (Ctrl-C to stop)"
        );
    }
    // Any service failing stops the others: a half-running lake is worse than a stopped one.
    let mut failure: Option<anyhow::Error> = sources_result.err();
    let ingested = ingest.await.context("ingest task panicked")?;
    if ingested.is_err() {
        shutdown.cancel();
    }
    let enriched = enrich.await.context("enrichment task panicked")?;
    let curated = curate.await.context("curation task panicked")?;
    match ingested {
        Ok(report) => print_ingest_report(&report),
        Err(e) => {
            failure.get_or_insert(anyhow::Error::from(e).context("ingest"));
        }
    }
    match enriched {
        Ok(report) => print_enrich_report(&report),
        Err(e) => {
            failure.get_or_insert(anyhow::Error::from(e).context("enrichment"));
        }
    }
    match curated {
        Ok(report) => print_curate_report(&report),
        Err(e) => {
            failure.get_or_insert(anyhow::Error::from(e).context("curation"));
        }
    }
    shutdown.cancel();
    match api.await.context("API task panicked")? {
        Ok(()) => {}
        Err(e) => {
            failure.get_or_insert(anyhow::Error::from(e).context("API (setting api.listen)"));
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[derive(Debug, clap::Args)]
pub struct ConnectArgs {
    /// Connector kind: fix, trades-csv, iex-tops, rss, news-jsonl. Omit with --source.
    kind: Option<String>,
    /// Run the source with this id from the configuration.
    #[arg(long, conflicts_with = "kind")]
    source: Option<String>,
    /// Source id for an ad-hoc source (names its dead-letter topic and resume state).
    #[arg(long)]
    id: Option<String>,
    /// Input file (fix, trades-csv, iex-tops, rss, news-jsonl).
    #[arg(long)]
    file: Option<PathBuf>,
    /// Keep reading the file as it grows (tail).
    #[arg(long)]
    follow: bool,
    /// TCP address to accept FIX drop-copy sessions on (fix).
    #[arg(long)]
    listen: Option<String>,
    /// Feed URL to poll (rss).
    #[arg(long)]
    url: Option<String>,
    /// Any other setting of the kind, as key=value (value parsed as JSON when it is JSON).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    settings: Vec<String>,
}

fn parse_kind(name: &str) -> anyhow::Result<ConnectorKind> {
    ConnectorKind::ALL
        .into_iter()
        .find(|k| k.name() == name)
        .with_context(|| {
            let names: Vec<&str> = ConnectorKind::ALL.iter().map(|k| k.name()).collect();
            format!(
                "unknown connector kind `{name}`; use one of {}",
                names.join(", ")
            )
        })
}

impl ConnectArgs {
    fn source_config(&self, config: &Config) -> anyhow::Result<SourceConfig> {
        if let Some(id) = &self.source {
            return config
                .sources
                .iter()
                .find(|s| &s.id == id)
                .cloned()
                .with_context(|| format!("no source with id `{id}` in the configuration"));
        }
        let Some(kind) = &self.kind else {
            bail!("name a connector kind (e.g. `connect fix --file x.log`) or --source ID");
        };
        let kind = parse_kind(kind)?;
        let mut settings = BTreeMap::new();
        let path = |p: &PathBuf| serde_json::Value::String(p.display().to_string());
        if let Some(file) = &self.file {
            settings.insert("file".to_string(), path(file));
        }
        if self.follow {
            settings.insert("follow".to_string(), serde_json::Value::Bool(true));
        }
        if let Some(listen) = &self.listen {
            settings.insert(
                "listen".to_string(),
                serde_json::Value::String(listen.clone()),
            );
        }
        if let Some(url) = &self.url {
            settings.insert("url".to_string(), serde_json::Value::String(url.clone()));
        }
        for pair in &self.settings {
            let Some((key, value)) = pair.split_once('=') else {
                bail!("--set `{pair}` is not KEY=VALUE");
            };
            let value = serde_json::from_str(value)
                .unwrap_or_else(|_| serde_json::Value::String(value.to_string()));
            settings.insert(key.to_string(), value);
        }
        let id = self
            .id
            .clone()
            .unwrap_or_else(|| format!("{}-adhoc", kind.name()));
        Ok(SourceConfig {
            id,
            kind,
            settings: serde_json::to_value(settings)?,
        })
    }
}

pub async fn connect(config: Config, args: ConnectArgs) -> anyhow::Result<()> {
    config.validate()?;
    let source = args.source_config(&config)?;
    let spec = source.validate("connect")?;
    prepare_topics(&config, std::slice::from_ref(&spec.id)).await?;
    let producer = Arc::new(RawProducer::new(&config.kafka)?);
    let shutdown = shutdown_on_signal();
    run_sources(&config, vec![spec], producer, shutdown).await?;
    Ok(())
}

fn parse_table(config: &Config, name: &str) -> anyhow::Result<TableName> {
    let mut known: Vec<TableName> = all_specs(config).into_iter().map(|s| s.name).collect();
    known.sort();
    known
        .iter()
        .copied()
        .find(|t| t.to_string() == name)
        .with_context(|| {
            let names: Vec<String> = known.iter().map(ToString::to_string).collect();
            format!("unknown table `{name}`; known: {}", names.join(", "))
        })
}

pub async fn inspect(config: &Config, table: &str, version: Option<i64>) -> anyhow::Result<()> {
    let name = parse_table(config, table)?;
    let loaded = marketlake_lake::read::load_table(&config.lake, name, version).await?;
    let files = marketlake_lake::read::data_files(&loaded).await?;
    let batches = marketlake_lake::read::read_rows(&loaded).await?;
    let mut per_source: BTreeMap<String, u64> = BTreeMap::new();
    let mut rows = 0u64;
    for batch in &batches {
        rows += batch.num_rows() as u64;
        if let Some(column) = batch.column_by_name("source_id") {
            if let Some(ids) = column
                .as_any()
                .downcast_ref::<marketlake_lake::read::StringArray>()
            {
                for id in ids.iter().flatten() {
                    *per_source.entry(id.to_string()).or_default() += 1;
                }
            }
        }
    }
    println!(
        "{name}: version {}, {} files, {} bytes, {} rows",
        loaded
            .version()
            .map_or("none".to_string(), |v| v.to_string()),
        files.len(),
        files.iter().map(|f| f.size).sum::<i64>(),
        rows
    );
    for (source, count) in per_source {
        println!("  {source}: {count}");
    }
    Ok(())
}
