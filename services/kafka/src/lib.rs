//! marketlake-kafka: everything that speaks the Kafka protocol.
//!
//! - [`KafkaConfig`]: broker address and client tuning, validated at start-up.
//! - [`admin`]: create the topics the services need (brokers may not auto-create them).
//! - [`producer`]: the idempotent raw publisher behind the connectors' `RawSink`.
//! - [`consumer`]: a group consumer that checks every partition delivers exactly the offsets it
//!   was asked for, and proves any gap before moving past it.
//! - [`group`]: when a group member owns too little and should rejoin.

pub mod admin;
pub mod config;
pub mod consumer;
pub mod group;
pub mod producer;
pub mod reference;

pub use config::KafkaConfig;
pub use consumer::{
    ConsumedRecord, PartitionKey, Polled, RecordHeaders, RecordRef, VerifiedConsumer, POLL_BATCH,
};
pub use group::{GroupWatch, Unowned};
pub use producer::RawProducer;

#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("invalid setting `{setting}`: {message}")]
    Config { setting: String, message: String },
    #[error("cannot reach the kafka broker at `{brokers}` (setting `kafka.brokers`): {message}; start the broker (scripts/broker) or fix the address")]
    Unreachable { brokers: String, message: String },
    #[error("cannot create topic `{topic}`: {message}")]
    CreateTopic { topic: String, message: String },
    #[error("kafka: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error("delivery of a record to `{topic}` failed: {message}")]
    Delivery { topic: String, message: String },
}

pub type Result<T, E = KafkaError> = std::result::Result<T, E>;
