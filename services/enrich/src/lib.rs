//! marketlake-enrich: L1 raw records → L2 rows, as pure functions (no Kafka, no Delta).
//!
//! - [`trade`]: FIX execution reports and market-data trades, CSV ticks and IEX TOPS/DEEP trade
//!   reports → [`TradeRow`]s (corrections and busts name the trade they supersede).
//! - [`news`]: RSS items, Atom entries and JSON posts (tweets, IEX news) → [`NewsRow`]s.
//! - [`instruments`]: the instrument master (SEC tickers + listing identifiers) joined to trades.
//! - [`tagger`]: cashtags, company names and explicit tickers → the tickers a news item is about.
//! - [`extra`]: fields a feed gained later, mapped to nullable extra L2 columns (schema
//!   evolution); a field that changes type is quarantined with rule `field_type`.
//! - [`rules`]: validation rules per table (reject to quarantine, or keep and flag) and their
//!   counters.
//! - [`enricher`]: [`Enricher::enrich`], one raw record → trades, news and quarantine rows.
//! - [`reference`]: the instrument master as the versioned dataset `ref.instruments`.
//! - [`pipeline`]: the service around it — raw topics → L2 Delta tables exactly once, and the
//!   enriched topics.
//!
//! Nothing here panics on input: a record that cannot be read becomes a quarantine row with rule
//! `parse` and a reason naming the field and the value.

pub mod enricher;
pub mod extra;
pub mod instruments;
pub mod news;
pub mod pipeline;
mod record;
pub mod reference;
pub mod rules;
pub mod tagger;
mod text;
mod time;
pub mod trade;

#[cfg(test)]
mod samples;

pub use enricher::{Enriched, Enricher, EnricherConfig};
pub use extra::{ExtraFieldConfig, ExtraFields};
pub use instruments::{Instrument, InstrumentMaster};
pub use marketlake_schemas::l2::{Lineage, NewsRow, QuarantineRow, TradeAction, TradeRow};
pub use news::{parse_news, NewsParse};
pub use rules::{Action, Bound, Check, RuleConfig, RuleCount, Rules, RulesConfig, Table, Verdict};
pub use tagger::TickerTagger;
pub use trade::{parse_trade, TradeParse};

/// `target_table` of quarantined trade records (the logical name of the L2 trades table).
pub const TARGET_TRADES: &str = "l2.trades";
/// `target_table` of quarantined news records (the logical name of the L2 news table).
pub const TARGET_NEWS: &str = "l2.news";
/// Quarantine rule of records that could not be parsed at all.
pub const RULE_PARSE: &str = "parse";

/// Errors of this crate (configuration and reference data; record-level problems are never
/// errors, they become quarantine rows). Messages are lower-case and name what is at fault.
#[derive(Debug, thiserror::Error)]
pub enum EnrichError {
    /// A validation rule's configuration is invalid.
    #[error("rule `{rule}` of {table}: {message}")]
    Rule {
        table: &'static str,
        rule: String,
        message: String,
    },
    /// A setting is invalid (named as in the configuration file).
    #[error("invalid setting `{setting}`: {message}")]
    Config { setting: String, message: String },
    /// Instrument reference data could not be read.
    #[error("cannot read instrument master from {what}: {reason}")]
    Reference { what: String, reason: String },
    #[error("i/o error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = EnrichError> = std::result::Result<T, E>;
