//! The L2 (enriched) record types: what enrichment makes of an L1 record.
//!
//! - [`TradeRow`] → `l2.trades`, one typed row per trade or execution report;
//! - [`NewsRow`] → `l2.news`, one normalised item tagged with the tickers it mentions;
//! - [`QuarantineRow`] → `l2.quarantine`, a record that broke a validation rule (or could not be
//!   parsed), kept with its raw bytes, the rule and the reason.
//!
//! Every row carries its [`Lineage`]: the L1 source position and Kafka coordinates it came from,
//! so any L2 (and L3) row can be traced back to the bytes received.
//! Prices and quantities are scaled integers (see [`crate::decimal`]).

use serde::{Deserialize, Serialize};

/// Where an enriched row came from: the raw record's source position and Kafka coordinates.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Lineage {
    pub source_id: String,
    pub source_uri: String,
    pub source_position: i64,
    pub raw_topic: String,
    pub raw_partition: i32,
    pub raw_offset: i64,
}

/// What a trade row does to the trade it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TradeAction {
    /// A new trade.
    New,
    /// Replaces the trade named by `supersedes` (FIX ExecType G / ExecTransType 2).
    Correct,
    /// Cancels (busts) the trade named by `supersedes` (FIX ExecType H / ExecTransType 1).
    Cancel,
}

impl TradeAction {
    pub fn as_str(self) -> &'static str {
        match self {
            TradeAction::New => "new",
            TradeAction::Correct => "correct",
            TradeAction::Cancel => "cancel",
        }
    }
}

/// One trade (or execution) as `l2.trades` holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeRow {
    /// Stable identity of the trade within the lake: `<source_id>:<trade id>` (FIX ExecID or
    /// TradeID, exchange trade id), or `<source_id>:<uri>#<position>` when the feed has none.
    pub trade_key: String,
    pub action: TradeAction,
    /// `trade_key` of the row this one corrects or cancels (`None` for new trades).
    pub supersedes: Option<String>,
    pub symbol: String,
    pub isin: Option<String>,
    pub figi: Option<String>,
    pub instrument_name: Option<String>,
    pub exchange: Option<String>,
    pub currency: Option<String>,
    /// Price scaled by `10^PRICE_SCALE`.
    pub price: i64,
    /// Quantity scaled by `10^QTY_SCALE`.
    pub quantity: i64,
    /// `buy`, `sell`, `sell_short`, ... when the feed says.
    pub side: Option<String>,
    pub venue: Option<String>,
    pub trade_id: Option<String>,
    pub order_id: Option<String>,
    pub account: Option<String>,
    pub trader: Option<String>,
    /// When the trade happened, UTC ns (from the feed).
    pub event_time_ns: i64,
    /// When marketlake received the bytes, UTC ns.
    pub received_at_ns: i64,
    /// Version of the instrument master used to enrich this row (`None`: no master loaded).
    pub reference_version: Option<i64>,
    /// Names of keep-and-flag validation rules this row broke.
    pub flags: Vec<String>,
    pub lineage: Lineage,
}

/// One news item as `l2.news` holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewsRow {
    /// Stable identity: `<source_id>:<guid, id or link>`.
    pub news_key: String,
    pub headline: String,
    pub body: Option<String>,
    pub link: Option<String>,
    pub publisher: Option<String>,
    /// Published time from the item, UTC ns (`None` when the item has none).
    pub published_at_ns: Option<i64>,
    pub received_at_ns: i64,
    /// BCP-47 language tag when known (`en`).
    pub language: Option<String>,
    /// Upper-case tickers mentioned, sorted and unique.
    pub tickers: Vec<String>,
    pub reference_version: Option<i64>,
    pub flags: Vec<String>,
    pub lineage: Lineage,
}

/// A record kept aside by enrichment: it broke a rejecting rule or could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineRow {
    /// The L2 table it was meant for (`l2.trades`, `l2.news`).
    pub target_table: String,
    /// The rule it broke (`price_positive`, `parse`, ...).
    pub rule: String,
    /// Human-readable reason, naming the field and the value.
    pub reason: String,
    pub payload_format: String,
    pub payload: Vec<u8>,
    pub received_at_ns: i64,
    pub quarantined_at_ns: i64,
    pub lineage: Lineage,
}
