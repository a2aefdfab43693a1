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
//!
//! Each table has its Arrow schema ([`trades_schema`], [`news_schema`], [`quarantine_schema`])
//! and a batch builder beside it. Prices are `Decimal128(18, 8)`, quantities `Decimal128(18, 4)`;
//! every time is kept twice, as UTC nanoseconds (`*_ns`, Int64) and as a Delta `timestamp`
//! (microseconds, UTC) for other engines; lineage is flattened into plain columns; the
//! partition column comes last.

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, Decimal128Builder, Int32Builder, Int64Builder, ListBuilder, StringBuilder,
};
use arrow_array::{ArrayRef, Decimal128Array, RecordBatch};
use arrow_schema::{DataType, Field, FieldRef, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::decimal::{DECIMAL_PRECISION, PRICE_SCALE, QTY_SCALE};
use crate::extra::{extend_fields, extra_arrays, ExtraColumn, Extras};
use crate::l1::{timestamp_builder, utc_date_of_ns, utc_timestamp};
use crate::Result;

/// Partition column of `l2.trades`: UTC `YYYY-MM-DD` of the event time, so event-time queries
/// (bars, as-of windows) prune whole days.
pub const PARTITION_COLUMN_TRADES: &str = "event_date";
/// Partition column of `l2.news`: UTC `YYYY-MM-DD` of the receive time (published times are
/// optional and sometimes wrong).
pub const PARTITION_COLUMN_NEWS: &str = "received_date";
/// Partition column of `l2.quarantine`: UTC `YYYY-MM-DD` of the receive time.
pub const PARTITION_COLUMN_QUARANTINE: &str = "received_date";

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
    /// Values of the table's configured extra columns (see [`crate::extra`]).
    #[serde(default, skip_serializing_if = "Extras::is_empty")]
    pub extra: Extras,
}

impl TradeRow {
    /// A new trade with only what every feed gives — key, symbol, price, quantity, event time
    /// and lineage — received at its event time, every optional field absent. Set the rest
    /// with struct update syntax (`TradeRow { side, ..TradeRow::bare(..) }`).
    pub fn bare(
        trade_key: String,
        symbol: String,
        price: i64,
        quantity: i64,
        event_time_ns: i64,
        lineage: Lineage,
    ) -> Self {
        TradeRow {
            trade_key,
            action: TradeAction::New,
            supersedes: None,
            symbol,
            isin: None,
            figi: None,
            instrument_name: None,
            exchange: None,
            currency: None,
            price,
            quantity,
            side: None,
            venue: None,
            trade_id: None,
            order_id: None,
            account: None,
            trader: None,
            event_time_ns,
            received_at_ns: event_time_ns,
            reference_version: None,
            flags: Vec::new(),
            lineage,
            extra: Extras::default(),
        }
    }
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
    /// Values of the table's configured extra columns (see [`crate::extra`]).
    #[serde(default, skip_serializing_if = "Extras::is_empty")]
    pub extra: Extras,
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

fn price_type() -> DataType {
    DataType::Decimal128(DECIMAL_PRECISION, PRICE_SCALE as i8)
}

fn quantity_type() -> DataType {
    DataType::Decimal128(DECIMAL_PRECISION, QTY_SCALE as i8)
}

/// Element field of the `tickers` and `flags` lists (non-null strings).
fn list_item() -> FieldRef {
    Arc::new(Field::new("item", DataType::Utf8, false))
}

fn string_list(name: &str) -> Field {
    Field::new(name, DataType::List(list_item()), false)
}

fn string_list_builder() -> ListBuilder<StringBuilder> {
    ListBuilder::new(StringBuilder::new()).with_field(list_item())
}

fn append_strings(builder: &mut ListBuilder<StringBuilder>, values: &[String]) {
    for value in values {
        builder.values().append_value(value);
    }
    builder.append(true);
}

/// `*_ns` (Int64) and the same instant as a UTC microsecond timestamp.
fn time_fields(stem: &str, nullable: bool) -> [Field; 2] {
    [
        Field::new(format!("{stem}_ns"), DataType::Int64, nullable),
        Field::new(stem, utc_timestamp(), nullable),
    ]
}

/// The flattened [`Lineage`] columns plus `enriched_at_ns`.
fn lineage_fields() -> Vec<Field> {
    vec![
        Field::new("source_id", DataType::Utf8, false),
        Field::new("source_uri", DataType::Utf8, false),
        Field::new("source_position", DataType::Int64, false),
        Field::new("raw_topic", DataType::Utf8, false),
        Field::new("raw_partition", DataType::Int32, false),
        Field::new("raw_offset", DataType::Int64, false),
        // When enrichment built the row (UTC ns); the Delta commit time says when it became visible.
        Field::new("enriched_at_ns", DataType::Int64, false),
    ]
}

struct LineageColumns {
    source_id: StringBuilder,
    source_uri: StringBuilder,
    source_position: Int64Builder,
    raw_topic: StringBuilder,
    raw_partition: Int32Builder,
    raw_offset: Int64Builder,
    enriched_at_ns: Int64Builder,
}

impl LineageColumns {
    fn new() -> Self {
        LineageColumns {
            source_id: StringBuilder::new(),
            source_uri: StringBuilder::new(),
            source_position: Int64Builder::new(),
            raw_topic: StringBuilder::new(),
            raw_partition: Int32Builder::new(),
            raw_offset: Int64Builder::new(),
            enriched_at_ns: Int64Builder::new(),
        }
    }

    fn append(&mut self, lineage: &Lineage, enriched_at_ns: i64) {
        self.source_id.append_value(&lineage.source_id);
        self.source_uri.append_value(&lineage.source_uri);
        self.source_position.append_value(lineage.source_position);
        self.raw_topic.append_value(&lineage.raw_topic);
        self.raw_partition.append_value(lineage.raw_partition);
        self.raw_offset.append_value(lineage.raw_offset);
        self.enriched_at_ns.append_value(enriched_at_ns);
    }

    fn finish_into(mut self, columns: &mut Vec<ArrayRef>) {
        columns.push(Arc::new(self.source_id.finish()));
        columns.push(Arc::new(self.source_uri.finish()));
        columns.push(Arc::new(self.source_position.finish()));
        columns.push(Arc::new(self.raw_topic.finish()));
        columns.push(Arc::new(self.raw_partition.finish()));
        columns.push(Arc::new(self.raw_offset.finish()));
        columns.push(Arc::new(self.enriched_at_ns.finish()));
    }
}

/// A finished decimal column, refused when a value has more digits than the column holds
/// (an `i64` can exceed 18 digits; Parquet stores `Decimal128(18, _)` as INT64).
fn decimal_column(mut builder: Decimal128Builder, data_type: &DataType) -> Result<ArrayRef> {
    let array: Decimal128Array = builder.finish();
    let array = match data_type {
        DataType::Decimal128(precision, scale) => {
            array.with_precision_and_scale(*precision, *scale)?
        }
        _ => array,
    };
    array.validate_decimal_precision(DECIMAL_PRECISION)?;
    Ok(Arc::new(array))
}

/// Schema of `l2.trades`.
pub fn trades_schema() -> SchemaRef {
    trades_schema_with(&[])
}

/// Schema of `l2.trades` with configured extra columns appended.
pub fn trades_schema_with(extra: &[ExtraColumn]) -> SchemaRef {
    let mut fields = vec![
        Field::new("trade_key", DataType::Utf8, false),
        // `new`, `correct` or `cancel` ([`TradeAction::as_str`]).
        Field::new("action", DataType::Utf8, false),
        Field::new("supersedes", DataType::Utf8, true),
        Field::new("symbol", DataType::Utf8, false),
        Field::new("isin", DataType::Utf8, true),
        Field::new("figi", DataType::Utf8, true),
        Field::new("instrument_name", DataType::Utf8, true),
        Field::new("exchange", DataType::Utf8, true),
        Field::new("currency", DataType::Utf8, true),
        Field::new("price", price_type(), false),
        Field::new("quantity", quantity_type(), false),
        Field::new("side", DataType::Utf8, true),
        Field::new("venue", DataType::Utf8, true),
        Field::new("trade_id", DataType::Utf8, true),
        Field::new("order_id", DataType::Utf8, true),
        Field::new("account", DataType::Utf8, true),
        Field::new("trader", DataType::Utf8, true),
    ];
    fields.extend(time_fields("event_time", false));
    fields.extend(time_fields("received_at", false));
    fields.push(Field::new("reference_version", DataType::Int64, true));
    fields.push(string_list("flags"));
    fields.extend(lineage_fields());
    fields.push(Field::new(PARTITION_COLUMN_TRADES, DataType::Utf8, false));
    extend_fields(&mut fields, extra);
    Arc::new(Schema::new(fields))
}

/// Build one Arrow batch of `l2.trades` rows.
pub fn trades_batch(rows: &[TradeRow], enriched_at_ns: i64) -> Result<RecordBatch> {
    trades_batch_with(rows, enriched_at_ns, &[])
}

/// Build one Arrow batch of `l2.trades` rows with the configured extra columns.
pub fn trades_batch_with(
    rows: &[TradeRow],
    enriched_at_ns: i64,
    extra: &[ExtraColumn],
) -> Result<RecordBatch> {
    let mut trade_key = StringBuilder::new();
    let mut action = StringBuilder::new();
    let mut supersedes = StringBuilder::new();
    let mut symbol = StringBuilder::new();
    let mut isin = StringBuilder::new();
    let mut figi = StringBuilder::new();
    let mut instrument_name = StringBuilder::new();
    let mut exchange = StringBuilder::new();
    let mut currency = StringBuilder::new();
    let mut price = Decimal128Builder::with_capacity(rows.len());
    let mut quantity = Decimal128Builder::with_capacity(rows.len());
    let mut side = StringBuilder::new();
    let mut venue = StringBuilder::new();
    let mut trade_id = StringBuilder::new();
    let mut order_id = StringBuilder::new();
    let mut account = StringBuilder::new();
    let mut trader = StringBuilder::new();
    let mut event_ns = Int64Builder::new();
    let mut event_ts = timestamp_builder();
    let mut received_ns = Int64Builder::new();
    let mut received_ts = timestamp_builder();
    let mut reference_version = Int64Builder::new();
    let mut flags = string_list_builder();
    let mut lineage = LineageColumns::new();
    let mut event_date = StringBuilder::new();
    for row in rows {
        trade_key.append_value(&row.trade_key);
        action.append_value(row.action.as_str());
        supersedes.append_option(row.supersedes.as_deref());
        symbol.append_value(&row.symbol);
        isin.append_option(row.isin.as_deref());
        figi.append_option(row.figi.as_deref());
        instrument_name.append_option(row.instrument_name.as_deref());
        exchange.append_option(row.exchange.as_deref());
        currency.append_option(row.currency.as_deref());
        price.append_value(i128::from(row.price));
        quantity.append_value(i128::from(row.quantity));
        side.append_option(row.side.as_deref());
        venue.append_option(row.venue.as_deref());
        trade_id.append_option(row.trade_id.as_deref());
        order_id.append_option(row.order_id.as_deref());
        account.append_option(row.account.as_deref());
        trader.append_option(row.trader.as_deref());
        event_ns.append_value(row.event_time_ns);
        event_ts.append_value(row.event_time_ns.div_euclid(1_000));
        received_ns.append_value(row.received_at_ns);
        received_ts.append_value(row.received_at_ns.div_euclid(1_000));
        reference_version.append_option(row.reference_version);
        append_strings(&mut flags, &row.flags);
        lineage.append(&row.lineage, enriched_at_ns);
        event_date.append_value(utc_date_of_ns(row.event_time_ns));
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(trade_key.finish()),
        Arc::new(action.finish()),
        Arc::new(supersedes.finish()),
        Arc::new(symbol.finish()),
        Arc::new(isin.finish()),
        Arc::new(figi.finish()),
        Arc::new(instrument_name.finish()),
        Arc::new(exchange.finish()),
        Arc::new(currency.finish()),
        decimal_column(price, &price_type())?,
        decimal_column(quantity, &quantity_type())?,
        Arc::new(side.finish()),
        Arc::new(venue.finish()),
        Arc::new(trade_id.finish()),
        Arc::new(order_id.finish()),
        Arc::new(account.finish()),
        Arc::new(trader.finish()),
        Arc::new(event_ns.finish()),
        Arc::new(event_ts.finish()),
        Arc::new(received_ns.finish()),
        Arc::new(received_ts.finish()),
        Arc::new(reference_version.finish()),
        Arc::new(flags.finish()),
    ];
    lineage.finish_into(&mut columns);
    columns.push(Arc::new(event_date.finish()));
    columns.extend(extra_arrays(extra, rows.iter().map(|r| &r.extra)));
    Ok(RecordBatch::try_new(trades_schema_with(extra), columns)?)
}

/// Schema of `l2.news`.
pub fn news_schema() -> SchemaRef {
    news_schema_with(&[])
}

/// Schema of `l2.news` with configured extra columns appended.
pub fn news_schema_with(extra: &[ExtraColumn]) -> SchemaRef {
    let mut fields = vec![
        Field::new("news_key", DataType::Utf8, false),
        Field::new("headline", DataType::Utf8, false),
        Field::new("body", DataType::Utf8, true),
        Field::new("link", DataType::Utf8, true),
        Field::new("publisher", DataType::Utf8, true),
    ];
    // The item's own time is its event time; optional because some items carry none.
    fields.extend(time_fields("published_at", true));
    fields.extend(time_fields("received_at", false));
    fields.push(Field::new("language", DataType::Utf8, true));
    fields.push(string_list("tickers"));
    fields.push(Field::new("reference_version", DataType::Int64, true));
    fields.push(string_list("flags"));
    fields.extend(lineage_fields());
    fields.push(Field::new(PARTITION_COLUMN_NEWS, DataType::Utf8, false));
    extend_fields(&mut fields, extra);
    Arc::new(Schema::new(fields))
}

/// Build one Arrow batch of `l2.news` rows.
pub fn news_batch(rows: &[NewsRow], enriched_at_ns: i64) -> Result<RecordBatch> {
    news_batch_with(rows, enriched_at_ns, &[])
}

/// Build one Arrow batch of `l2.news` rows with the configured extra columns.
pub fn news_batch_with(
    rows: &[NewsRow],
    enriched_at_ns: i64,
    extra: &[ExtraColumn],
) -> Result<RecordBatch> {
    let mut news_key = StringBuilder::new();
    let mut headline = StringBuilder::new();
    let mut body = StringBuilder::new();
    let mut link = StringBuilder::new();
    let mut publisher = StringBuilder::new();
    let mut published_ns = Int64Builder::new();
    let mut published_ts = timestamp_builder();
    let mut received_ns = Int64Builder::new();
    let mut received_ts = timestamp_builder();
    let mut language = StringBuilder::new();
    let mut tickers = string_list_builder();
    let mut reference_version = Int64Builder::new();
    let mut flags = string_list_builder();
    let mut lineage = LineageColumns::new();
    let mut received_date = StringBuilder::new();
    for row in rows {
        news_key.append_value(&row.news_key);
        headline.append_value(&row.headline);
        body.append_option(row.body.as_deref());
        link.append_option(row.link.as_deref());
        publisher.append_option(row.publisher.as_deref());
        published_ns.append_option(row.published_at_ns);
        published_ts.append_option(row.published_at_ns.map(|ns| ns.div_euclid(1_000)));
        received_ns.append_value(row.received_at_ns);
        received_ts.append_value(row.received_at_ns.div_euclid(1_000));
        language.append_option(row.language.as_deref());
        append_strings(&mut tickers, &row.tickers);
        reference_version.append_option(row.reference_version);
        append_strings(&mut flags, &row.flags);
        lineage.append(&row.lineage, enriched_at_ns);
        received_date.append_value(utc_date_of_ns(row.received_at_ns));
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(news_key.finish()),
        Arc::new(headline.finish()),
        Arc::new(body.finish()),
        Arc::new(link.finish()),
        Arc::new(publisher.finish()),
        Arc::new(published_ns.finish()),
        Arc::new(published_ts.finish()),
        Arc::new(received_ns.finish()),
        Arc::new(received_ts.finish()),
        Arc::new(language.finish()),
        Arc::new(tickers.finish()),
        Arc::new(reference_version.finish()),
        Arc::new(flags.finish()),
    ];
    lineage.finish_into(&mut columns);
    columns.push(Arc::new(received_date.finish()));
    columns.extend(extra_arrays(extra, rows.iter().map(|r| &r.extra)));
    Ok(RecordBatch::try_new(news_schema_with(extra), columns)?)
}

/// Schema of `l2.quarantine`.
pub fn quarantine_schema() -> SchemaRef {
    let mut fields = vec![
        Field::new("target_table", DataType::Utf8, false),
        Field::new("rule", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("payload_format", DataType::Utf8, false),
        Field::new("payload", DataType::Binary, false),
    ];
    fields.extend(time_fields("received_at", false));
    fields.extend(time_fields("quarantined_at", false));
    fields.extend(lineage_fields());
    fields.push(Field::new(
        PARTITION_COLUMN_QUARANTINE,
        DataType::Utf8,
        false,
    ));
    Arc::new(Schema::new(fields))
}

/// Build one Arrow batch of `l2.quarantine` rows.
pub fn quarantine_batch(rows: &[QuarantineRow], enriched_at_ns: i64) -> Result<RecordBatch> {
    let mut target_table = StringBuilder::new();
    let mut rule = StringBuilder::new();
    let mut reason = StringBuilder::new();
    let mut payload_format = StringBuilder::new();
    let mut payload = BinaryBuilder::new();
    let mut received_ns = Int64Builder::new();
    let mut received_ts = timestamp_builder();
    let mut quarantined_ns = Int64Builder::new();
    let mut quarantined_ts = timestamp_builder();
    let mut lineage = LineageColumns::new();
    let mut received_date = StringBuilder::new();
    for row in rows {
        target_table.append_value(&row.target_table);
        rule.append_value(&row.rule);
        reason.append_value(&row.reason);
        payload_format.append_value(&row.payload_format);
        payload.append_value(&row.payload);
        received_ns.append_value(row.received_at_ns);
        received_ts.append_value(row.received_at_ns.div_euclid(1_000));
        quarantined_ns.append_value(row.quarantined_at_ns);
        quarantined_ts.append_value(row.quarantined_at_ns.div_euclid(1_000));
        lineage.append(&row.lineage, enriched_at_ns);
        received_date.append_value(utc_date_of_ns(row.received_at_ns));
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(target_table.finish()),
        Arc::new(rule.finish()),
        Arc::new(reason.finish()),
        Arc::new(payload_format.finish()),
        Arc::new(payload.finish()),
        Arc::new(received_ns.finish()),
        Arc::new(received_ts.finish()),
        Arc::new(quarantined_ns.finish()),
        Arc::new(quarantined_ts.finish()),
    ];
    lineage.finish_into(&mut columns);
    columns.push(Arc::new(received_date.finish()));
    Ok(RecordBatch::try_new(quarantine_schema(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Decimal128Type, Int64Type};
    use arrow_array::Array;

    fn lineage() -> Lineage {
        Lineage {
            source_id: "ibm-ticks".into(),
            source_uri: "file:///data/ibm.csv".into(),
            source_position: 42,
            raw_topic: "raw.trades".into(),
            raw_partition: 2,
            raw_offset: 7,
        }
    }

    fn trade() -> TradeRow {
        TradeRow {
            trade_key: "ibm-ticks:1".into(),
            action: TradeAction::New,
            supersedes: None,
            symbol: "IBM".into(),
            isin: None,
            figi: None,
            instrument_name: Some("International Business Machines".into()),
            exchange: Some("NYSE".into()),
            currency: Some("USD".into()),
            price: 18_152_000_000,
            quantity: 2_830_000,
            side: None,
            venue: Some("P".into()),
            trade_id: None,
            order_id: None,
            account: None,
            trader: None,
            // 2013-10-07T23:59:59.999999999Z: the event date is the 7th, received on the 8th.
            event_time_ns: 1_381_190_399_999_999_999,
            received_at_ns: 1_381_190_400_000_000_001,
            reference_version: Some(3),
            extra: Default::default(),
            flags: vec!["suspicious".into()],
            lineage: lineage(),
        }
    }

    fn column<'a>(batch: &'a RecordBatch, name: &str) -> &'a ArrayRef {
        batch.column_by_name(name).unwrap()
    }

    #[test]
    fn trades_batch_matches_schema_with_exact_decimals_and_event_date() {
        let mut cancel = trade();
        cancel.trade_key = "ibm-ticks:2".into();
        cancel.action = TradeAction::Cancel;
        cancel.supersedes = Some("ibm-ticks:1".into());
        cancel.flags.clear();
        let batch = trades_batch(&[trade(), cancel], 99).unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.schema(), trades_schema());
        assert_eq!(
            batch.schema().fields().last().unwrap().name(),
            PARTITION_COLUMN_TRADES
        );
        let price = column(&batch, "price").as_primitive::<Decimal128Type>();
        assert_eq!(price.value_as_string(0), "181.52000000");
        let quantity = column(&batch, "quantity").as_primitive::<Decimal128Type>();
        assert_eq!(quantity.value_as_string(0), "283.0000");
        assert_eq!(
            column(&batch, "event_date").as_string::<i32>().value(0),
            "2013-10-07"
        );
        assert_eq!(
            column(&batch, "action").as_string::<i32>().value(1),
            "cancel"
        );
        assert_eq!(
            column(&batch, "supersedes").as_string::<i32>().value(1),
            "ibm-ticks:1"
        );
        assert!(column(&batch, "supersedes").is_null(0));
        let flags = column(&batch, "flags").as_list::<i32>();
        assert_eq!(flags.value(0).as_string::<i32>().value(0), "suspicious");
        assert_eq!(flags.value(1).len(), 0);
        let event_us = column(&batch, "event_time")
            .as_primitive::<arrow_array::types::TimestampMicrosecondType>();
        assert_eq!(event_us.value(0), 1_381_190_399_999_999);
        assert_eq!(
            column(&batch, "enriched_at_ns")
                .as_primitive::<Int64Type>()
                .value(1),
            99
        );
        assert_eq!(
            column(&batch, "raw_offset")
                .as_primitive::<Int64Type>()
                .value(0),
            7
        );
    }

    #[test]
    fn trades_batch_refuses_prices_beyond_eighteen_digits() {
        let mut huge = trade();
        huge.price = 1_000_000_000_000_000_000;
        assert!(trades_batch(&[huge], 0).is_err());
    }

    #[test]
    fn news_and_quarantine_batches_match_their_schemas() {
        let news = NewsRow {
            news_key: "sec:guid-1".into(),
            headline: "Apple unveils".into(),
            body: None,
            link: Some("https://example.com/a".into()),
            publisher: None,
            published_at_ns: None,
            received_at_ns: 1_381_190_400_000_000_001,
            language: Some("en".into()),
            tickers: vec!["AAPL".into(), "GOOG".into()],
            reference_version: None,
            extra: Default::default(),
            flags: vec![],
            lineage: lineage(),
        };
        let batch = news_batch(&[news], 5).unwrap();
        assert_eq!(batch.schema(), news_schema());
        assert!(column(&batch, "published_at").is_null(0));
        assert_eq!(
            column(&batch, PARTITION_COLUMN_NEWS)
                .as_string::<i32>()
                .value(0),
            "2013-10-08"
        );
        let tickers = column(&batch, "tickers").as_list::<i32>();
        assert_eq!(tickers.value(0).len(), 2);

        let quarantined = QuarantineRow {
            target_table: "l2.trades".into(),
            rule: "price_positive".into(),
            reason: "price 0 is not positive".into(),
            payload_format: "trades_csv".into(),
            payload: b"1,0,1".to_vec(),
            received_at_ns: 0,
            quarantined_at_ns: 10,
            lineage: lineage(),
        };
        let batch = quarantine_batch(&[quarantined.clone(), quarantined], 5).unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.schema(), quarantine_schema());
        assert_eq!(
            column(&batch, PARTITION_COLUMN_QUARANTINE)
                .as_string::<i32>()
                .value(1),
            "1970-01-01"
        );
        assert_eq!(
            column(&batch, "payload").as_binary::<i32>().value(0),
            b"1,0,1"
        );
    }

    #[test]
    fn empty_batches_are_valid() {
        assert_eq!(trades_batch(&[], 0).unwrap().num_rows(), 0);
        assert_eq!(news_batch(&[], 0).unwrap().num_rows(), 0);
        assert_eq!(quarantine_batch(&[], 0).unwrap().num_rows(), 0);
    }
}
