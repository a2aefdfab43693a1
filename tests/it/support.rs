//! Test support: a real tansu broker on a free loopback port, a temporary lake and
//! configuration, and the `marketlake` binary run as a child process. Every wait has a deadline.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use marketlake_lake::LakeConfig;
use marketlake_schemas::names::TableName;

/// Tests that load the machine hard (many processes, a slow durable broker) take this so they
/// do not starve each other on a 2-core CI machine; light tests run beside them.
pub static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tansu_bin() -> PathBuf {
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("tansu");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo/bin/tansu")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn wait_for_port(port: u16, deadline: Duration) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listened on 127.0.0.1:{port} within {deadline:?}")
}

/// A tansu broker on loopback; killed on drop.
pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    storage: String,
    dir: PathBuf,
    log: PathBuf,
    /// Extra environment (the S3 endpoint and credentials of object storage).
    env: Vec<(String, String)>,
}

impl Broker {
    /// In-memory storage: fast, lost on restart.
    pub fn start(dir: &Path) -> Result<Broker> {
        Self::start_with(dir, "memory://tansu/".into(), Vec::new())
    }

    /// Object storage on a local S3 server: the broker keeps nothing itself, so what it
    /// stored survives its restart. (tansu 0.6's SQLite storage stalls fetches: see crash.rs.)
    pub fn start_durable(dir: &Path, s3: &S3Server) -> Result<Broker> {
        Self::start_with(dir, format!("s3://{}/", S3Server::BUCKET), s3.client_env())
    }

    fn start_with(dir: &Path, storage: String, env: Vec<(String, String)>) -> Result<Broker> {
        let mut broker = Broker {
            child: None,
            port: free_port(),
            storage,
            dir: dir.to_path_buf(),
            log: dir.join("tansu.log"),
            env,
        };
        broker.spawn()?;
        Ok(broker)
    }

    /// Stop the broker as Ctrl-C would (SIGINT), SIGKILL it when it has not stopped within
    /// `grace`, then start it again on the same port and storage. Returns how it stopped.
    pub fn restart(&mut self, grace: Duration) -> Result<&'static str> {
        let mut how = "was not running";
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let start = Instant::now();
            how = "stopped on SIGINT";
            while child.try_wait()?.is_none() {
                if start.elapsed() > grace {
                    let _ = child.kill();
                    let _ = child.wait();
                    how = "killed (SIGKILL) after SIGINT went unanswered";
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // The port must be free again before the new broker binds it.
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            if start.elapsed() > grace {
                bail!(
                    "127.0.0.1:{} still answers after the broker stopped",
                    self.port
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.spawn()?;
        Ok(how)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn spawn(&mut self) -> Result<()> {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(tansu_bin())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", &self.storage])
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(&self.dir)
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting tansu (install it with scripts/ensure-tools)")?;
        self.child = Some(child);
        wait_for_port(self.port, Duration::from_secs(20))
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A local S3 server (moto, from PyPI, installed by `scripts/ensure-tools --with-test-tools`
/// in its own venv) on a loopback port with one bucket; killed on drop. Its objects live in the
/// server process, so they outlast any broker restart.
pub struct S3Server {
    child: Child,
    port: u16,
}

impl S3Server {
    pub const BUCKET: &'static str = "tansu";

    fn venv() -> PathBuf {
        PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
            .join(".cache/marketlake-moto-venv/bin")
    }

    pub fn start(dir: &Path) -> Result<S3Server> {
        let port = free_port();
        let log = std::fs::File::create(dir.join("s3.log"))?;
        let child = Command::new(Self::venv().join("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context(
                "starting moto_server (install it with scripts/ensure-tools --with-test-tools)",
            )?;
        let server = S3Server { child, port };
        wait_for_port(port, Duration::from_secs(30))?;
        let created = Command::new(Self::venv().join("python"))
            .arg("-c")
            .arg(
                "import boto3, sys; boto3.client('s3', endpoint_url=sys.argv[1], \
                 aws_access_key_id='test', aws_secret_access_key='test', \
                 region_name='us-east-1').create_bucket(Bucket=sys.argv[2])",
            )
            .args([format!("http://127.0.0.1:{port}"), Self::BUCKET.to_string()])
            .output()?;
        if !created.status.success() {
            bail!(
                "creating the test bucket failed: {}",
                String::from_utf8_lossy(&created.stderr)
            );
        }
        Ok(server)
    }

    /// What a client (the broker's object store) needs to reach it.
    fn client_env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT", format!("http://127.0.0.1:{}", self.port)),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_DEFAULT_REGION", "us-east-1".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temporary lake: directory, broker, configuration file.
pub struct Lake {
    pub dir: tempfile::TempDir,
    pub broker: Broker,
    pub config_path: PathBuf,
    /// The durable broker's storage, when it has one (dropped after the broker).
    _s3: Option<S3Server>,
}

pub struct LakeOptions {
    pub partitions: i32,
    pub durable_broker: bool,
    pub session_timeout_ms: u32,
    pub sources_toml: String,
    pub extra_toml: String,
}

impl Default for LakeOptions {
    fn default() -> Self {
        LakeOptions {
            partitions: 3,
            durable_broker: false,
            session_timeout_ms: 3_000,
            sources_toml: "sources = []\n".into(),
            extra_toml: String::new(),
        }
    }
}

impl Lake {
    pub fn new(options: LakeOptions) -> Result<Lake> {
        let dir = tempfile::tempdir()?;
        let (broker, s3) = if options.durable_broker {
            let s3 = S3Server::start(dir.path())?;
            (Broker::start_durable(dir.path(), &s3)?, Some(s3))
        } else {
            (Broker::start(dir.path())?, None)
        };
        let config_path = dir.path().join("marketlake.toml");
        // Every lake gets its own API port and catalog (services under `up` include the API).
        let mut extra = options.extra_toml.clone();
        if !extra.contains("[api]") {
            extra.push_str(&format!(
                "\n[api]\nlisten = \"127.0.0.1:{}\"\ncatalog_url = \"sqlite://{}\"\n",
                free_port(),
                dir.path().join("catalog.db").display()
            ));
        }
        let config = format!(
            r#"state_dir = "{state}"
log = "{log}"
{sources}
[kafka]
brokers = "{brokers}"
partitions = {partitions}
session_timeout_ms = {session_timeout_ms}

[lake]
root = "{root}"

[ingest]
commit_interval_ms = 200
rejoin_when_idle_secs = 8
{extra}
"#,
            state = dir.path().join("state").display(),
            root = dir.path().join("lake").display(),
            brokers = broker.addr(),
            partitions = options.partitions,
            session_timeout_ms = options.session_timeout_ms,
            log = std::env::var("MARKETLAKE_TEST_LOG").unwrap_or_else(|_| {
                "info,rdkafka=warn,deltalake_core=warn,deltalake_core::writer::stats=error,buoyant_kernel=warn".into()
            }),
            sources = options.sources_toml,
            extra = extra,
        );
        std::fs::write(&config_path, config)?;
        Ok(Lake {
            dir,
            broker,
            config_path,
            _s3: s3,
        })
    }

    pub fn lake_config(&self) -> LakeConfig {
        LakeConfig {
            root: self.dir.path().join("lake"),
            ..LakeConfig::default()
        }
    }

    pub fn kafka_config(&self, partitions: i32) -> marketlake_kafka::KafkaConfig {
        marketlake_kafka::KafkaConfig {
            brokers: self.broker.addr(),
            partitions,
            ..marketlake_kafka::KafkaConfig::default()
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_marketlake"));
        command
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .current_dir(repo_root())
            .env_remove("RUST_LOG")
            .env_remove("MARKETLAKE_CONFIG");
        command
    }

    /// Run to completion within `deadline`; error with its output when it fails.
    pub fn run(&self, args: &[&str], deadline: Duration) -> Result<Output> {
        let child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let output = wait_output(child, deadline)?;
        if !output.status.success() {
            bail!(
                "marketlake {args:?} failed with {}:\n--- stdout\n{}\n--- stderr\n{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(output)
    }

    /// Spawn in the background with output to a log file in the lake directory.
    pub fn spawn(&self, args: &[&str], log_name: &str) -> Result<Child> {
        let log = std::fs::File::create(self.dir.path().join(log_name))?;
        Ok(self
            .command(args)
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()?)
    }

    pub fn log(&self, log_name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(log_name)).unwrap_or_default()
    }
}

/// Wait for a child with a deadline; kill it (and fail loudly) when the deadline passes.
pub fn wait_output(mut child: Child, deadline: Duration) -> Result<Output> {
    let start = Instant::now();
    loop {
        if child.try_wait()?.is_some() {
            return Ok(child.wait_with_output()?);
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output()?;
            bail!(
                "process did not finish within {deadline:?}:\n--- stdout\n{}\n--- stderr\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn sigkill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Ask a child to stop as Ctrl-C would.
pub fn sigint(child: &Child) {
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
}

/// Rows of an L1 table: `(source_id, source_position, kafka_partition, kafka_offset)`.
pub async fn l1_rows(lake: &Lake, table: TableName) -> Result<Vec<(String, i64, i32, i64)>> {
    use marketlake_lake::read::{load_table, read_rows};
    let config = lake.lake_config();
    let loaded = match load_table(&config, table, None).await {
        Ok(t) => t,
        Err(_) => return Ok(Vec::new()),
    };
    let batches = read_rows(&loaded).await?;
    let mut rows = Vec::new();
    for batch in batches {
        let ids = string_column(&batch, "source_id")?;
        let positions = i64_column(&batch, "source_position")?;
        let partitions = batch
            .column_by_name("kafka_partition")
            .and_then(|c| {
                c.as_any()
                    .downcast_ref::<marketlake_lake::read::Int32Array>()
            })
            .context("kafka_partition column")?;
        let offsets = i64_column(&batch, "kafka_offset")?;
        for i in 0..batch.num_rows() {
            rows.push((
                ids.value(i).to_string(),
                positions.value(i),
                partitions.value(i),
                offsets.value(i),
            ));
        }
    }
    Ok(rows)
}

pub fn string_column<'a>(
    batch: &'a marketlake_lake::RecordBatch,
    name: &str,
) -> Result<&'a marketlake_lake::read::StringArray> {
    batch
        .column_by_name(name)
        .and_then(|c| {
            c.as_any()
                .downcast_ref::<marketlake_lake::read::StringArray>()
        })
        .with_context(|| format!("string column {name}"))
}

pub fn i64_column<'a>(
    batch: &'a marketlake_lake::RecordBatch,
    name: &str,
) -> Result<&'a marketlake_lake::read::Int64Array> {
    batch
        .column_by_name(name)
        .and_then(|c| {
            c.as_any()
                .downcast_ref::<marketlake_lake::read::Int64Array>()
        })
        .with_context(|| format!("i64 column {name}"))
}

/// Poll `check` until it returns true or `deadline` passes (then fail with `what`).
pub async fn eventually<F, Fut>(deadline: Duration, what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let start = Instant::now();
    loop {
        if check().await? {
            return Ok(());
        }
        if start.elapsed() > deadline {
            bail!("timed out after {deadline:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A throwaway PostgreSQL server on a loopback port (Debian's packages, installed by
/// `scripts/ensure-tools --with-test-tools`), stopped and deleted on drop.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    as_postgres_user: bool,
    pub url: String,
}

fn postgres_bin() -> Result<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL is not installed: run scripts/ensure-tools --with-test-tools")?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort();
    found
        .pop()
        .context("no /usr/lib/postgresql/*/bin/initdb: run scripts/ensure-tools --with-test-tools")
}

impl Postgres {
    pub fn start() -> Result<Postgres> {
        let bin = postgres_bin()?;
        let dir = tempfile::Builder::new().prefix("ml-pg-").tempdir()?;
        // initdb refuses to run as root: the server runs as the `postgres` user then.
        let as_postgres_user = std::env::var("USER").as_deref() == Ok("root")
            || Command::new("id")
                .arg("-u")
                .output()
                .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        if as_postgres_user {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()?;
            anyhow::ensure!(
                status.success(),
                "chown of the PostgreSQL data directory failed"
            );
        }
        let port = free_port();
        let data = dir.path().join("data");
        let run = |program: &str, args: &[&str]| -> Result<()> {
            let mut command = if as_postgres_user {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(bin.join(program));
                c
            } else {
                Command::new(bin.join(program))
            };
            let output = command
                .args(args)
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .output()?;
            anyhow::ensure!(
                output.status.success(),
                "{program} {args:?}: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            Ok(())
        };
        let data_text = data.display().to_string();
        run(
            "initdb",
            &[
                "-D",
                &data_text,
                "-A",
                "trust",
                "-U",
                "marketlake",
                "--no-sync",
            ],
        )?;
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            dir.path().display()
        );
        let log = dir.path().join("server.log").display().to_string();
        run(
            "pg_ctl",
            &[
                "-D", &data_text, "-o", &options, "-l", &log, "-w", "-t", "60", "start",
            ],
        )?;
        Ok(Postgres {
            url: format!("postgres://marketlake@127.0.0.1:{port}/postgres"),
            dir,
            bin,
            as_postgres_user,
        })
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let mut command = if self.as_postgres_user {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"])
                .arg(self.bin.join("pg_ctl"));
            c
        } else {
            Command::new(self.bin.join("pg_ctl"))
        };
        let _ = command
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
