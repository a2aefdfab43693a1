//! The one typed configuration: embedded defaults → `--config FILE` → `MARKETLAKE__SECTION__KEY`
//! environment variables. Validated as a whole at start-up; every error names the setting.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use figment::providers::{Env, Format, Toml};
use figment::Figment;
use marketlake_connectors::config::validate_sources;
use marketlake_connectors::{SourceConfig, SourceSpec};
use marketlake_curate::pipeline::CurateSettings;
use marketlake_enrich::pipeline::EnrichSettings;
use marketlake_ingest::IngestConfig;
use marketlake_kafka::KafkaConfig;
use marketlake_lake::LakeConfig;
use serde::{Deserialize, Serialize};

pub const DEFAULTS: &str = include_str!("../../../config/default.toml");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where connectors keep their resume state.
    pub state_dir: PathBuf,
    /// Log filter (RUST_LOG syntax); the RUST_LOG variable wins when set.
    pub log: String,
    pub kafka: KafkaConfig,
    pub lake: LakeConfig,
    pub ingest: IngestConfig,
    #[serde(default)]
    pub enrich: EnrichSettings,
    #[serde(default)]
    pub curate: CurateSettings,
    #[serde(default)]
    pub maintain: MaintainConfig,
    #[serde(default)]
    pub api: marketlake_api::ApiConfig,
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
}

/// `[maintain]`: compaction and checkpoints of every table (also run by `up` on this schedule).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaintainConfig {
    /// Seconds between passes in `up` and `maintain --every` (0: `up` does not maintain).
    pub every_secs: u64,
    /// Files smaller than this are compacted with the other small files of their partition.
    pub small_file_mb: u64,
}

impl Default for MaintainConfig {
    fn default() -> Self {
        MaintainConfig {
            every_secs: 3_600,
            small_file_mb: 32,
        }
    }
}

impl Config {
    /// Load defaults, then the file, then the environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        if let Some(file) = file {
            if !file.exists() {
                bail!(
                    "configuration file `{}` (option --config) does not exist",
                    file.display()
                );
            }
            figment = figment.merge(Toml::file(file));
        }
        figment = figment.merge(Env::prefixed("MARKETLAKE__").split("__"));
        let config: Config = figment.extract().map_err(|e| {
            let mut messages = Vec::new();
            for error in e {
                let path = error.path.join(".");
                messages.push(if path.is_empty() {
                    error.to_string()
                } else {
                    format!("setting `{path}`: {error}")
                });
            }
            anyhow::anyhow!(
                "invalid configuration: {}; see README.md (Configuration) for every setting",
                messages.join("; ")
            )
        })?;
        Ok(config)
    }

    /// Check everything that can be checked without a broker.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.kafka.validate()?;
        self.lake.validate()?;
        self.ingest.validate()?;
        self.enrich.validate()?;
        self.curate.validate()?;
        self.api.validate().map_err(|e| anyhow::anyhow!(e))?;
        if self.maintain.small_file_mb == 0 {
            bail!("setting `maintain.small_file_mb`: must be at least 1 (megabytes)");
        }
        std::fs::create_dir_all(&self.state_dir).with_context(|| {
            format!(
                "setting `state_dir`: cannot create `{}`; point it at a writable directory",
                self.state_dir.display()
            )
        })?;
        Ok(())
    }

    /// The declared sources, parsed and validated (only commands that run sources need this).
    pub fn source_specs(&self) -> anyhow::Result<Vec<SourceSpec>> {
        Ok(validate_sources(&self.sources)?)
    }

    /// The effective configuration with secrets masked, as TOML.
    pub fn show(&self) -> anyhow::Result<String> {
        let mut masked = self.clone();
        masked.kafka = self.kafka.masked();
        masked.api.auth.hmac_secret = "***".into();
        masked.api.mask_key = "***".into();
        if masked.api.metrics_token.is_some() {
            masked.api.metrics_token = Some("***".into());
        }
        Ok(toml::to_string_pretty(&masked)?)
    }
}
