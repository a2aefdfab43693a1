//! marketlake-connectors: read feeds, frame them into raw records, hand them to a [`RawSink`].
//!
//! One module per feed format (`fix`, `trades_csv`, `iex_tops`, `rss`, `news_jsonl`) owns its
//! settings and its framing; [`source`] owns the I/O around them (file replay and tail, TCP
//! drop-copy listener, HTTP polling) and the progress state that makes a restart resume instead
//! of re-publishing. Publishing is behind the [`RawSink`] trait so this crate links no Kafka
//! client: the binary wires it to `marketlake-kafka`.

pub mod config;
#[cfg(test)]
#[path = "tests/conformance.rs"]
mod conformance;
pub mod fix;
pub mod framing;
pub mod iex_tops;
pub mod news_jsonl;
pub mod rss;
pub mod sink;
pub mod source;
pub mod state;
pub mod trades_csv;

pub use config::{ConnectorKind, SourceConfig, SourceSpec};
pub use framing::{Frame, Framed, Malformed, StreamDecoder};
pub use sink::RawSink;

/// Errors of this crate. Messages are lower-case and name the setting or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// A source's configuration is invalid; `setting` is the dotted path of the bad key.
    #[error("invalid setting `{setting}`: {message}")]
    Config { setting: String, message: String },
    #[error("i/o error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("http error fetching {url}: {message}")]
    Http { url: String, message: String },
    /// The whole input is unusable (e.g. a feed document that is not XML).
    #[error("cannot read {what}: {reason}")]
    Unreadable { what: String, reason: String },
    #[error("sink error: {0}")]
    Sink(String),
}

impl ConnectorError {
    pub fn config(setting: impl Into<String>, message: impl Into<String>) -> Self {
        ConnectorError::Config {
            setting: setting.into(),
            message: message.into(),
        }
    }
}

pub type Result<T, E = ConnectorError> = std::result::Result<T, E>;
