//! The marketlake binary: parses the command line and the configuration, then wires connectors,
//! Kafka and the lake together. No data logic lives here.

mod bench;
mod bench_api;
mod bench_curate;
mod bench_enrich;
mod config;
mod run;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Config;

// mimalloc: ingest allocates and frees millions of small strings per second and large batch
// buffers per commit; glibc's allocator spent a fifth of ingest's time there and in returning
// pages to the kernel (measured with perf). Built without transparent huge pages (`no_thp`):
// with them, each commit's freed batch memory came back as 2 MB pages the kernel zeroed again
// on the next batch, a fifth of the consumer thread's time (ingest 56 % -> 67 % of the broker's
// consume rate, `bench ingest`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "marketlake",
    version,
    about = "A finance data lake: feeds → Kafka → Delta, exactly once"
)]
struct Cli {
    /// Configuration file (TOML) merged over the embedded defaults.
    #[arg(long, global = true, env = "MARKETLAKE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every service in one process: create topics, run every declared source, ingest into
    /// L1, enrich into L2, curate into L3. Stops cleanly on Ctrl-C.
    Up,
    /// Run one connector on its own, publishing to Kafka.
    Connect(run::ConnectArgs),
    /// Consume the raw topics into the L1 Delta tables, exactly once.
    Ingest {
        /// Drain every partition to the end offsets seen at start, then exit.
        #[arg(long)]
        until_caught_up: bool,
    },
    /// Enrich the raw topics into the L2 tables (and the enriched topics), exactly once.
    Enrich {
        /// Drain every raw partition to its end, then exit.
        #[arg(long)]
        until_caught_up: bool,
    },
    /// Curate the enriched topics into the L3 tables in event time, exactly once.
    Curate {
        /// Drain the enriched topics, fire every window (a back-fill), then exit.
        #[arg(long)]
        until_caught_up: bool,
    },
    /// Compact small files and write checkpoints of every table (time travel keeps working).
    Maintain {
        /// Repeat every this many seconds until Ctrl-C (default: one pass).
        #[arg(long)]
        every: Option<u64>,
    },
    /// Serve the entitled, audited REST API (JWT bearer tokens, grants from the catalog).
    Serve,
    /// Mint a local HS256 token for the demo API.
    Token {
        #[arg(long)]
        sub: String,
        /// Comma-separated roles.
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
        /// Comma-separated groups.
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: i64,
    },
    /// Manage grants in the catalog (the same changes as the admin API, recorded as `cli:<user>`).
    Grants {
        #[command(subcommand)]
        command: GrantsCommand,
    },
    /// Create the topics the services use (they also do it at start).
    Topics,
    /// Show a table: version, files, rows per source.
    Inspect {
        /// Table name, e.g. l1.trades_raw.
        table: String,
        /// Table version to read (default: latest).
        #[arg(long)]
        version: Option<i64>,
    },
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Benchmarks (measure on this machine; never part of the tests).
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum GrantsCommand {
    /// Every grant.
    List,
    /// Grant a dataset to a user or a group.
    Add {
        /// Dataset, e.g. l2.trades.
        #[arg(long)]
        dataset: String,
        /// The token `sub` to grant to.
        #[arg(long, conflicts_with = "group", required_unless_present = "group")]
        user: Option<String>,
        /// The group to grant to.
        #[arg(long)]
        group: Option<String>,
        /// Only these symbols (comma-separated).
        #[arg(long, value_delimiter = ',')]
        symbols: Option<Vec<String>>,
        /// Only these venues (comma-separated).
        #[arg(long, value_delimiter = ',')]
        venues: Option<Vec<String>>,
        /// Column masks, `column=hide` or `column=hash` (repeatable).
        #[arg(long = "mask")]
        masks: Vec<String>,
    },
    /// Revoke a grant by id.
    Revoke { grant_id: String },
    /// Who granted or revoked what, when.
    History,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration (defaults, file, environment) with secrets masked.
    Show,
    /// Validate the configuration, including every declared source.
    Check,
}

fn init_logging(filter: &str) {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| filter.to_string());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    init_logging(&config.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(dispatch(cli.command, config));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Config {
            command: ConfigCommand::Show,
        } => {
            print!("{}", config.show()?);
            Ok(())
        }
        Command::Config {
            command: ConfigCommand::Check,
        } => {
            config.validate()?;
            let specs = config.source_specs()?;
            println!("configuration is valid ({} sources)", specs.len());
            Ok(())
        }
        Command::Up => run::up(config).await,
        Command::Connect(args) => run::connect(config, args).await,
        Command::Ingest { until_caught_up } => run::ingest(config, until_caught_up).await,
        Command::Enrich { until_caught_up } => run::enrich(config, until_caught_up).await,
        Command::Curate { until_caught_up } => run::curate(config, until_caught_up).await,
        Command::Maintain { every } => run::maintain(config, every).await,
        Command::Serve => run::serve(config).await,
        Command::Token {
            sub,
            roles,
            groups,
            ttl,
        } => run::token(&config, &sub, &roles, &groups, ttl),
        Command::Grants { command } => run::grants(&config, command).await,
        Command::Topics => run::topics(&config).await,
        Command::Inspect { table, version } => run::inspect(&config, &table, version).await,
        Command::Bench { command } => bench::run(config, command).await,
    }
}
