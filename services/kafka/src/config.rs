//! Kafka client settings (`[kafka]` in the configuration).

use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

use crate::{KafkaError, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port...]`.
    pub brokers: String,
    /// Partitions of the raw topics when the services create them.
    pub partitions: i32,
    /// Replication factor of created topics (1 for a single local broker).
    pub replication_factor: i32,
    /// Consumer group session timeout: how long a dead member keeps its partitions. Short, so a
    /// crashed sink's partitions move quickly.
    pub session_timeout_ms: u32,
    /// Extra librdkafka properties (e.g. `security.protocol`, `sasl.username`); applied last.
    /// Values of keys containing `password` or `secret` are masked when printed.
    #[serde(default)]
    pub client: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            partitions: 3,
            replication_factor: 1,
            session_timeout_ms: 6_000,
            client: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |setting: &str, message: &str| KafkaError::Config {
            setting: format!("kafka.{setting}"),
            message: message.into(),
        };
        if self.brokers.trim().is_empty()
            || self.brokers.split(',').any(|b| {
                b.rsplit_once(':')
                    .is_none_or(|(_, port)| port.parse::<u16>().is_err())
            })
        {
            return Err(bad(
                "brokers",
                &format!(
                    "`{}` is not a list of host:port addresses, e.g. 127.0.0.1:9092",
                    self.brokers
                ),
            ));
        }
        if !(1..=10_000).contains(&self.partitions) {
            return Err(bad("partitions", "must be between 1 and 10000"));
        }
        if self.replication_factor < 1 {
            return Err(bad("replication_factor", "must be at least 1"));
        }
        if !(1_000..=300_000).contains(&self.session_timeout_ms) {
            return Err(bad(
                "session_timeout_ms",
                "must be between 1000 and 300000 milliseconds",
            ));
        }
        Ok(())
    }

    /// A librdkafka configuration with the brokers and the user's extra properties.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        config.set("client.id", "marketlake");
        for (key, value) in &self.client {
            config.set(key, value);
        }
        config
    }

    /// The same settings with secrets masked, for `config show` and logs.
    pub fn masked(&self) -> Self {
        let mut copy = self.clone();
        for (key, value) in copy.client.iter_mut() {
            let key = key.to_ascii_lowercase();
            if key.contains("password") || key.contains("secret") {
                *value = "***".into();
            }
        }
        copy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_brokers_are_named() {
        KafkaConfig::default().validate().unwrap();
        let config = KafkaConfig {
            brokers: "localhost".into(),
            ..KafkaConfig::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("kafka.brokers"), "{err}");
    }

    #[test]
    fn secrets_are_masked() {
        let mut config = KafkaConfig::default();
        config
            .client
            .insert("sasl.password".into(), "hunter2".into());
        assert_eq!(config.masked().client["sasl.password"], "***");
    }
}
