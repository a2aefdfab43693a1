//! What curation reads of an enriched trade: exactly the fields the state journal keeps
//! (see [`crate::persist`]) and nothing else. Decoding only these from `enriched.trades` —
//! strings borrowed from the payload while parsing, the instrument master's fields, flags and
//! extra columns skipped — costs much less than a full [`TradeRow`] decode (which was the largest
//! single piece of curation's CPU), and live curation sees exactly the row a journal replay
//! rebuilds, so the two cannot diverge on a field only one of them has.

use std::borrow::Cow;

use marketlake_schemas::l2::{Lineage, TradeAction, TradeRow};
use serde::Deserialize;

#[derive(Deserialize)]
struct EnrichedTrade<'a> {
    #[serde(borrow)]
    trade_key: Cow<'a, str>,
    action: TradeAction,
    #[serde(borrow)]
    supersedes: Option<Cow<'a, str>>,
    #[serde(borrow)]
    symbol: Cow<'a, str>,
    price: i64,
    quantity: i64,
    event_time_ns: i64,
    received_at_ns: i64,
    #[serde(borrow)]
    lineage: EnrichedLineage<'a>,
}

#[derive(Deserialize)]
struct EnrichedLineage<'a> {
    #[serde(borrow)]
    source_id: Cow<'a, str>,
    #[serde(borrow)]
    source_uri: Cow<'a, str>,
    source_position: i64,
    #[serde(borrow)]
    raw_topic: Cow<'a, str>,
    raw_partition: i32,
    raw_offset: i64,
}

/// An `enriched.trades` payload (a JSON [`TradeRow`]) as curation holds it: the fields the
/// aggregators read, every other optional field absent.
pub fn decode_enriched_trade(payload: &[u8]) -> serde_json::Result<TradeRow> {
    let t: EnrichedTrade<'_> = serde_json::from_slice(payload)?;
    let lineage = Lineage {
        source_id: t.lineage.source_id.into_owned(),
        source_uri: t.lineage.source_uri.into_owned(),
        source_position: t.lineage.source_position,
        raw_topic: t.lineage.raw_topic.into_owned(),
        raw_partition: t.lineage.raw_partition,
        raw_offset: t.lineage.raw_offset,
    };
    Ok(TradeRow {
        action: t.action,
        supersedes: t.supersedes.map(Cow::into_owned),
        received_at_ns: t.received_at_ns,
        ..TradeRow::bare(
            t.trade_key.into_owned(),
            t.symbol.into_owned(),
            t.price,
            t.quantity,
            t.event_time_ns,
            lineage,
        )
    })
}
