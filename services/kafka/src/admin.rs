//! Topic administration. Services create what they use at start, because the local broker (and
//! many production clusters) do not auto-create topics.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use crate::{KafkaConfig, KafkaError, Result};

/// A topic to create if missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
}

/// Check that the broker answers within `timeout`; the error names the setting and the fix.
pub async fn check_reachable(config: &KafkaConfig, timeout: Duration) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = config.client_config().create()?;
    let brokers = config.brokers.clone();
    tokio::task::spawn_blocking(move || {
        admin
            .inner()
            .fetch_metadata(None, timeout)
            .map(|_| ())
            .map_err(|e| KafkaError::Unreachable {
                brokers,
                message: e.to_string(),
            })
    })
    .await
    .map_err(|e| KafkaError::Unreachable {
        brokers: config.brokers.clone(),
        message: e.to_string(),
    })?
}

/// Create every topic that does not exist yet; existing topics are left as they are.
pub async fn ensure_topics(config: &KafkaConfig, topics: &[TopicSpec]) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = config.client_config().create()?;
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| {
            NewTopic::new(
                &t.name,
                t.partitions,
                TopicReplication::Fixed(config.replication_factor),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin.create_topics(new_topics.iter(), &options).await?;
    for result in results {
        match result {
            Ok(name) => tracing::info!(topic = %name, "topic created"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KafkaError::CreateTopic {
                    topic,
                    message: code.to_string(),
                })
            }
        }
    }
    Ok(())
}

/// Low and high watermark of every partition of `topic`: `(partition, low, high)`.
pub async fn watermarks(config: &KafkaConfig, topic: &str) -> Result<Vec<(i32, i64, i64)>> {
    let consumer: rdkafka::consumer::BaseConsumer = config.client_config().create()?;
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::Consumer;
        let timeout = Duration::from_secs(10);
        let metadata = consumer.fetch_metadata(Some(&topic), timeout)?;
        let mut out = Vec::new();
        for t in metadata.topics() {
            for p in t.partitions() {
                let (low, high) = consumer.fetch_watermarks(&topic, p.id(), timeout)?;
                out.push((p.id(), low, high));
            }
        }
        out.sort_unstable();
        Ok(out)
    })
    .await
    .map_err(|e| KafkaError::Config {
        setting: "kafka".into(),
        message: format!("watermark lookup task failed: {e}"),
    })?
}
