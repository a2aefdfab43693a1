//! The L3 (curated) record types and their Arrow schemas, computed by `marketlake-curate` in
//! event time:
//!
//! - [`BarRow`] → `l3.bars`: OHLCV + VWAP per symbol per interval. Append-only in accumulating
//!   mode: a window that changes after it fired (late trade, correction, cancel) gets a new row
//!   with `revision + 1` holding the whole bar; readers keep the highest `revision` per
//!   `(symbol, interval_secs, window_start_ns)`. A revision with `trade_count = 0` (every trade
//!   cancelled) has null prices: the bar no longer exists.
//! - [`LateRecordRow`] → `l3.late_records`: a trade that arrived after its window's state was
//!   dropped (or that corrects/cancels a trade no longer held), one row per interval it missed,
//!   with its lineage — late data is kept, never silently lost.
//! - [`NewsTradeWindowRow`] → `l3.news_trade_windows`: trading activity in a ticker in windows
//!   before and after a news item.
//!
//! Bars and late records are partitioned by `window_date` (UTC date of the window start), news
//! windows by `anchor_date` (UTC date of the news time), so time-bounded reads prune directories.
//! Every `*_ns` column has a `Timestamp(µs, UTC)` twin where other engines filter on it.

use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Decimal128Builder, Float64Builder, Int32Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};

use crate::decimal::{DECIMAL_PRECISION, PRICE_SCALE, QTY_SCALE};
use crate::l1::utc_date_of_ns;
use crate::l2::{Lineage, TradeAction};
use crate::Result;

/// Partition column of `l3.bars` and `l3.late_records`.
pub const WINDOW_PARTITION_COLUMN: &str = "window_date";
/// Partition column of `l3.news_trade_windows`.
pub const ANCHOR_PARTITION_COLUMN: &str = "anchor_date";
/// Scale of notional columns: price × quantity kept exact (`PRICE_SCALE + QTY_SCALE`).
pub const NOTIONAL_SCALE: u32 = PRICE_SCALE + QTY_SCALE;
/// Precision of notional columns (`Decimal128(38, 12)`): a sum of products needs more than 18.
pub const NOTIONAL_PRECISION: u8 = 38;

/// One OHLCV bar revision (`l3.bars`). Prices at `PRICE_SCALE`, volume at `QTY_SCALE`,
/// notional at [`NOTIONAL_SCALE`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BarRow {
    pub symbol: String,
    pub interval_secs: i64,
    /// Window `[start, end)` in UTC ns, aligned to the epoch.
    pub window_start_ns: i64,
    pub window_end_ns: i64,
    /// Open/close: first/last trade by (event time, received time, raw partition, raw offset).
    pub open: Option<i64>,
    pub high: Option<i64>,
    pub low: Option<i64>,
    pub close: Option<i64>,
    pub volume: i64,
    /// `notional / volume` rounded half away from zero; null when the volume is zero.
    pub vwap: Option<i64>,
    /// Exact Σ price × quantity.
    pub notional: i128,
    pub trade_count: i64,
    pub first_trade_ns: Option<i64>,
    pub last_trade_ns: Option<i64>,
    /// 0 at the first firing; each later row for the same window supersedes the previous one.
    pub revision: i32,
    /// Event-time watermark when the row was produced.
    pub watermark_ns: i64,
    /// Processing time when the row was handed to the writer (UTC ns).
    pub fired_at_ns: i64,
}

/// Why a trade went to `l3.late_records` instead of a bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LateReason {
    /// Its window ended more than the allowed lateness before the watermark: the bar is final.
    BeyondAllowedLateness,
    /// A correction or cancel whose original trade is not held in any open window (already
    /// final, never seen, or itself late), so it cannot be applied exactly.
    OriginalNotOpen,
}

impl LateReason {
    pub fn as_str(self) -> &'static str {
        match self {
            LateReason::BeyondAllowedLateness => "beyond_allowed_lateness",
            LateReason::OriginalNotOpen => "original_not_open",
        }
    }
}

/// A trade that could not be applied to the bar of one interval (`l3.late_records`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LateRecordRow {
    pub symbol: String,
    pub interval_secs: i64,
    /// The window the trade's event time falls in.
    pub window_start_ns: i64,
    pub window_end_ns: i64,
    pub event_time_ns: i64,
    pub received_at_ns: i64,
    /// Watermark when the trade was judged late (`i64::MIN` if none yet: an edit arriving
    /// before any trade).
    pub watermark_ns: i64,
    pub reason: LateReason,
    pub trade_key: String,
    pub action: TradeAction,
    pub supersedes: Option<String>,
    pub price: i64,
    pub quantity: i64,
    /// Processing time when the row was handed to the writer (UTC ns).
    pub detected_at_ns: i64,
    pub lineage: Lineage,
}

/// Which side of the news time a window covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowSide {
    /// `[anchor − window, anchor)`
    Before,
    /// `[anchor, anchor + window)`
    After,
}

impl WindowSide {
    pub fn as_str(self) -> &'static str {
        match self {
            WindowSide::Before => "before",
            WindowSide::After => "after",
        }
    }
}

/// Where a news item's anchor time came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnchorSource {
    /// The item's published time.
    Published,
    /// The item had none: our receive time stands in (later than the news really broke).
    Received,
}

impl AnchorSource {
    pub fn as_str(self) -> &'static str {
        match self {
            AnchorSource::Published => "published",
            AnchorSource::Received => "received",
        }
    }
}

/// Trading in one ticker in one window around one news item (`l3.news_trade_windows`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewsTradeWindowRow {
    pub news_key: String,
    pub ticker: String,
    pub side: WindowSide,
    pub window_secs: i64,
    /// News time the windows are measured from (UTC ns).
    pub anchor_ns: i64,
    pub anchor_source: AnchorSource,
    pub window_start_ns: i64,
    pub window_end_ns: i64,
    pub trade_count: i64,
    pub volume: i64,
    pub notional: i128,
    pub vwap: Option<i64>,
    pub first_price: Option<i64>,
    pub last_price: Option<i64>,
    pub first_trade_ns: Option<i64>,
    pub last_trade_ns: Option<i64>,
    /// `last_price / first_price − 1` (null without trades). A ratio, not money, so `f64`.
    pub simple_return: Option<f64>,
    /// True when trades of the window may have been evicted before the news arrived: the row
    /// is computed from what was still held and must not be read as complete.
    pub incomplete: bool,
    pub watermark_ns: i64,
    /// Processing time when the row was handed to the writer (UTC ns).
    pub emitted_at_ns: i64,
}

fn utc_timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn price_type() -> DataType {
    DataType::Decimal128(DECIMAL_PRECISION, PRICE_SCALE as i8)
}

fn qty_type() -> DataType {
    DataType::Decimal128(DECIMAL_PRECISION, QTY_SCALE as i8)
}

fn notional_type() -> DataType {
    DataType::Decimal128(NOTIONAL_PRECISION, NOTIONAL_SCALE as i8)
}

fn window_fields() -> Vec<Field> {
    vec![
        Field::new("window_start_ns", DataType::Int64, false),
        Field::new("window_end_ns", DataType::Int64, false),
        Field::new("window_start", utc_timestamp(), false),
        Field::new("window_end", utc_timestamp(), false),
    ]
}

/// Schema of `l3.bars`.
pub fn bars_schema() -> SchemaRef {
    let mut fields = vec![
        Field::new("symbol", DataType::Utf8, false),
        Field::new("interval_secs", DataType::Int64, false),
    ];
    fields.extend(window_fields());
    fields.extend([
        Field::new("open", price_type(), true),
        Field::new("high", price_type(), true),
        Field::new("low", price_type(), true),
        Field::new("close", price_type(), true),
        Field::new("volume", qty_type(), false),
        Field::new("vwap", price_type(), true),
        Field::new("notional", notional_type(), false),
        Field::new("trade_count", DataType::Int64, false),
        Field::new("first_trade_ns", DataType::Int64, true),
        Field::new("last_trade_ns", DataType::Int64, true),
        Field::new("revision", DataType::Int32, false),
        Field::new("watermark_ns", DataType::Int64, false),
        Field::new("fired_at_ns", DataType::Int64, false),
        Field::new(WINDOW_PARTITION_COLUMN, DataType::Utf8, false),
    ]);
    Arc::new(Schema::new(fields))
}

/// Schema of `l3.late_records`.
pub fn late_records_schema() -> SchemaRef {
    let mut fields = vec![
        Field::new("symbol", DataType::Utf8, false),
        Field::new("interval_secs", DataType::Int64, false),
    ];
    fields.extend(window_fields());
    fields.extend([
        Field::new("event_time_ns", DataType::Int64, false),
        Field::new("event_time", utc_timestamp(), false),
        Field::new("received_at_ns", DataType::Int64, false),
        Field::new("watermark_ns", DataType::Int64, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("trade_key", DataType::Utf8, false),
        Field::new("action", DataType::Utf8, false),
        Field::new("supersedes", DataType::Utf8, true),
        Field::new("price", price_type(), false),
        Field::new("quantity", qty_type(), false),
        Field::new("detected_at_ns", DataType::Int64, false),
        Field::new("source_id", DataType::Utf8, false),
        Field::new("source_uri", DataType::Utf8, false),
        Field::new("source_position", DataType::Int64, false),
        Field::new("raw_topic", DataType::Utf8, false),
        Field::new("raw_partition", DataType::Int32, false),
        Field::new("raw_offset", DataType::Int64, false),
        Field::new(WINDOW_PARTITION_COLUMN, DataType::Utf8, false),
    ]);
    Arc::new(Schema::new(fields))
}

/// Schema of `l3.news_trade_windows`.
pub fn news_trade_windows_schema() -> SchemaRef {
    let mut fields = vec![
        Field::new("news_key", DataType::Utf8, false),
        Field::new("ticker", DataType::Utf8, false),
        Field::new("side", DataType::Utf8, false),
        Field::new("window_secs", DataType::Int64, false),
        Field::new("anchor_ns", DataType::Int64, false),
        Field::new("anchor", utc_timestamp(), false),
        Field::new("anchor_source", DataType::Utf8, false),
    ];
    fields.extend(window_fields());
    fields.extend([
        Field::new("trade_count", DataType::Int64, false),
        Field::new("volume", qty_type(), false),
        Field::new("notional", notional_type(), false),
        Field::new("vwap", price_type(), true),
        Field::new("first_price", price_type(), true),
        Field::new("last_price", price_type(), true),
        Field::new("first_trade_ns", DataType::Int64, true),
        Field::new("last_trade_ns", DataType::Int64, true),
        Field::new("simple_return", DataType::Float64, true),
        Field::new("incomplete", DataType::Boolean, false),
        Field::new("watermark_ns", DataType::Int64, false),
        Field::new("emitted_at_ns", DataType::Int64, false),
        Field::new(ANCHOR_PARTITION_COLUMN, DataType::Utf8, false),
    ]);
    Arc::new(Schema::new(fields))
}

fn timestamp_builder() -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::new().with_timezone("UTC")
}

fn micros(ns: i64) -> i64 {
    ns.div_euclid(1_000)
}

fn decimal_builder(precision: u8, scale: u32) -> Result<Decimal128Builder> {
    Ok(Decimal128Builder::new().with_precision_and_scale(precision, scale as i8)?)
}

/// The four window columns every L3 table shares.
struct WindowColumns {
    start_ns: Int64Builder,
    end_ns: Int64Builder,
    start: TimestampMicrosecondBuilder,
    end: TimestampMicrosecondBuilder,
}

impl WindowColumns {
    fn new() -> Self {
        WindowColumns {
            start_ns: Int64Builder::new(),
            end_ns: Int64Builder::new(),
            start: timestamp_builder(),
            end: timestamp_builder(),
        }
    }

    fn append(&mut self, start_ns: i64, end_ns: i64) {
        self.start_ns.append_value(start_ns);
        self.end_ns.append_value(end_ns);
        self.start.append_value(micros(start_ns));
        self.end.append_value(micros(end_ns));
    }

    fn finish_into(mut self, columns: &mut Vec<ArrayRef>) {
        columns.push(Arc::new(self.start_ns.finish()));
        columns.push(Arc::new(self.end_ns.finish()));
        columns.push(Arc::new(self.start.finish()));
        columns.push(Arc::new(self.end.finish()));
    }
}

/// Build one Arrow batch of `l3.bars` rows.
pub fn bars_batch(rows: &[BarRow]) -> Result<RecordBatch> {
    let mut symbol = StringBuilder::new();
    let mut interval = Int64Builder::new();
    let mut window = WindowColumns::new();
    let mut open = decimal_builder(DECIMAL_PRECISION, PRICE_SCALE)?;
    let mut high = decimal_builder(DECIMAL_PRECISION, PRICE_SCALE)?;
    let mut low = decimal_builder(DECIMAL_PRECISION, PRICE_SCALE)?;
    let mut close = decimal_builder(DECIMAL_PRECISION, PRICE_SCALE)?;
    let mut volume = decimal_builder(DECIMAL_PRECISION, QTY_SCALE)?;
    let mut vwap = decimal_builder(DECIMAL_PRECISION, PRICE_SCALE)?;
    let mut notional = decimal_builder(NOTIONAL_PRECISION, NOTIONAL_SCALE)?;
    let mut trade_count = Int64Builder::new();
    let mut first_trade = Int64Builder::new();
    let mut last_trade = Int64Builder::new();
    let mut revision = Int32Builder::new();
    let mut watermark = Int64Builder::new();
    let mut fired_at = Int64Builder::new();
    let mut date = StringBuilder::new();
    for row in rows {
        symbol.append_value(&row.symbol);
        interval.append_value(row.interval_secs);
        window.append(row.window_start_ns, row.window_end_ns);
        open.append_option(row.open.map(i128::from));
        high.append_option(row.high.map(i128::from));
        low.append_option(row.low.map(i128::from));
        close.append_option(row.close.map(i128::from));
        volume.append_value(i128::from(row.volume));
        vwap.append_option(row.vwap.map(i128::from));
        notional.append_value(row.notional);
        trade_count.append_value(row.trade_count);
        first_trade.append_option(row.first_trade_ns);
        last_trade.append_option(row.last_trade_ns);
        revision.append_value(row.revision);
        watermark.append_value(row.watermark_ns);
        fired_at.append_value(row.fired_at_ns);
        date.append_value(utc_date_of_ns(row.window_start_ns));
    }
    let mut columns: Vec<ArrayRef> = vec![Arc::new(symbol.finish()), Arc::new(interval.finish())];
    window.finish_into(&mut columns);
    columns.extend([
        Arc::new(open.finish()) as ArrayRef,
        Arc::new(high.finish()),
        Arc::new(low.finish()),
        Arc::new(close.finish()),
        Arc::new(volume.finish()),
        Arc::new(vwap.finish()),
        Arc::new(notional.finish()),
        Arc::new(trade_count.finish()),
        Arc::new(first_trade.finish()),
        Arc::new(last_trade.finish()),
        Arc::new(revision.finish()),
        Arc::new(watermark.finish()),
        Arc::new(fired_at.finish()),
        Arc::new(date.finish()),
    ]);
    Ok(RecordBatch::try_new(bars_schema(), columns)?)
}

/// Build one Arrow batch of `l3.late_records` rows.
pub fn late_records_batch(rows: &[LateRecordRow]) -> Result<RecordBatch> {
    let mut symbol = StringBuilder::new();
    let mut interval = Int64Builder::new();
    let mut window = WindowColumns::new();
    let mut event_ns = Int64Builder::new();
    let mut event_ts = timestamp_builder();
    let mut received = Int64Builder::new();
    let mut watermark = Int64Builder::new();
    let mut reason = StringBuilder::new();
    let mut trade_key = StringBuilder::new();
    let mut action = StringBuilder::new();
    let mut supersedes = StringBuilder::new();
    let mut price = decimal_builder(DECIMAL_PRECISION, PRICE_SCALE)?;
    let mut quantity = decimal_builder(DECIMAL_PRECISION, QTY_SCALE)?;
    let mut detected = Int64Builder::new();
    let mut source_id = StringBuilder::new();
    let mut source_uri = StringBuilder::new();
    let mut source_position = Int64Builder::new();
    let mut raw_topic = StringBuilder::new();
    let mut raw_partition = Int32Builder::new();
    let mut raw_offset = Int64Builder::new();
    let mut date = StringBuilder::new();
    for row in rows {
        symbol.append_value(&row.symbol);
        interval.append_value(row.interval_secs);
        window.append(row.window_start_ns, row.window_end_ns);
        event_ns.append_value(row.event_time_ns);
        event_ts.append_value(micros(row.event_time_ns));
        received.append_value(row.received_at_ns);
        watermark.append_value(row.watermark_ns);
        reason.append_value(row.reason.as_str());
        trade_key.append_value(&row.trade_key);
        action.append_value(row.action.as_str());
        supersedes.append_option(row.supersedes.as_deref());
        price.append_value(i128::from(row.price));
        quantity.append_value(i128::from(row.quantity));
        detected.append_value(row.detected_at_ns);
        source_id.append_value(&row.lineage.source_id);
        source_uri.append_value(&row.lineage.source_uri);
        source_position.append_value(row.lineage.source_position);
        raw_topic.append_value(&row.lineage.raw_topic);
        raw_partition.append_value(row.lineage.raw_partition);
        raw_offset.append_value(row.lineage.raw_offset);
        date.append_value(utc_date_of_ns(row.window_start_ns));
    }
    let mut columns: Vec<ArrayRef> = vec![Arc::new(symbol.finish()), Arc::new(interval.finish())];
    window.finish_into(&mut columns);
    columns.extend([
        Arc::new(event_ns.finish()) as ArrayRef,
        Arc::new(event_ts.finish()),
        Arc::new(received.finish()),
        Arc::new(watermark.finish()),
        Arc::new(reason.finish()),
        Arc::new(trade_key.finish()),
        Arc::new(action.finish()),
        Arc::new(supersedes.finish()),
        Arc::new(price.finish()),
        Arc::new(quantity.finish()),
        Arc::new(detected.finish()),
        Arc::new(source_id.finish()),
        Arc::new(source_uri.finish()),
        Arc::new(source_position.finish()),
        Arc::new(raw_topic.finish()),
        Arc::new(raw_partition.finish()),
        Arc::new(raw_offset.finish()),
        Arc::new(date.finish()),
    ]);
    Ok(RecordBatch::try_new(late_records_schema(), columns)?)
}

/// Build one Arrow batch of `l3.news_trade_windows` rows.
pub fn news_trade_windows_batch(rows: &[NewsTradeWindowRow]) -> Result<RecordBatch> {
    let mut news_key = StringBuilder::new();
    let mut ticker = StringBuilder::new();
    let mut side = StringBuilder::new();
    let mut window_secs = Int64Builder::new();
    let mut anchor_ns = Int64Builder::new();
    let mut anchor_ts = timestamp_builder();
    let mut anchor_source = StringBuilder::new();
    let mut window = WindowColumns::new();
    let mut trade_count = Int64Builder::new();
    let mut volume = decimal_builder(DECIMAL_PRECISION, QTY_SCALE)?;
    let mut notional = decimal_builder(NOTIONAL_PRECISION, NOTIONAL_SCALE)?;
    let mut vwap = decimal_builder(DECIMAL_PRECISION, PRICE_SCALE)?;
    let mut first_price = decimal_builder(DECIMAL_PRECISION, PRICE_SCALE)?;
    let mut last_price = decimal_builder(DECIMAL_PRECISION, PRICE_SCALE)?;
    let mut first_trade = Int64Builder::new();
    let mut last_trade = Int64Builder::new();
    let mut simple_return = Float64Builder::new();
    let mut incomplete = BooleanBuilder::new();
    let mut watermark = Int64Builder::new();
    let mut emitted = Int64Builder::new();
    let mut date = StringBuilder::new();
    for row in rows {
        news_key.append_value(&row.news_key);
        ticker.append_value(&row.ticker);
        side.append_value(row.side.as_str());
        window_secs.append_value(row.window_secs);
        anchor_ns.append_value(row.anchor_ns);
        anchor_ts.append_value(micros(row.anchor_ns));
        anchor_source.append_value(row.anchor_source.as_str());
        window.append(row.window_start_ns, row.window_end_ns);
        trade_count.append_value(row.trade_count);
        volume.append_value(i128::from(row.volume));
        notional.append_value(row.notional);
        vwap.append_option(row.vwap.map(i128::from));
        first_price.append_option(row.first_price.map(i128::from));
        last_price.append_option(row.last_price.map(i128::from));
        first_trade.append_option(row.first_trade_ns);
        last_trade.append_option(row.last_trade_ns);
        simple_return.append_option(row.simple_return);
        incomplete.append_value(row.incomplete);
        watermark.append_value(row.watermark_ns);
        emitted.append_value(row.emitted_at_ns);
        date.append_value(utc_date_of_ns(row.anchor_ns));
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(news_key.finish()),
        Arc::new(ticker.finish()),
        Arc::new(side.finish()),
        Arc::new(window_secs.finish()),
        Arc::new(anchor_ns.finish()),
        Arc::new(anchor_ts.finish()),
        Arc::new(anchor_source.finish()),
    ];
    window.finish_into(&mut columns);
    columns.extend([
        Arc::new(trade_count.finish()) as ArrayRef,
        Arc::new(volume.finish()),
        Arc::new(notional.finish()),
        Arc::new(vwap.finish()),
        Arc::new(first_price.finish()),
        Arc::new(last_price.finish()),
        Arc::new(first_trade.finish()),
        Arc::new(last_trade.finish()),
        Arc::new(simple_return.finish()),
        Arc::new(incomplete.finish()),
        Arc::new(watermark.finish()),
        Arc::new(emitted.finish()),
        Arc::new(date.finish()),
    ]);
    Ok(RecordBatch::try_new(news_trade_windows_schema(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::Decimal128Type;
    use arrow_array::Array;

    // 2013-10-07T13:30:00Z
    const T0: i64 = 1_381_152_600_000_000_000;

    fn lineage() -> Lineage {
        Lineage {
            source_id: "s".into(),
            source_uri: "file:///x".into(),
            source_position: 1,
            raw_topic: "raw.trades".into(),
            raw_partition: 0,
            raw_offset: 7,
        }
    }

    fn bar() -> BarRow {
        BarRow {
            symbol: "IBM".into(),
            interval_secs: 60,
            window_start_ns: T0,
            window_end_ns: T0 + 60_000_000_000,
            open: Some(18_231_000_000),
            high: Some(18_300_000_000),
            low: Some(18_200_000_000),
            close: Some(18_250_000_000),
            volume: 1_500_000,
            vwap: Some(18_240_000_000),
            notional: 27_360_000_000_000_000,
            trade_count: 3,
            first_trade_ns: Some(T0 + 1),
            last_trade_ns: Some(T0 + 2),
            revision: 0,
            watermark_ns: T0 + 61_000_000_000,
            fired_at_ns: T0 + 62_000_000_000,
        }
    }

    #[test]
    fn bars_batch_keeps_exact_decimals_nulls_and_the_window_date() {
        let empty = BarRow {
            open: None,
            high: None,
            low: None,
            close: None,
            vwap: None,
            volume: 0,
            notional: 0,
            trade_count: 0,
            first_trade_ns: None,
            last_trade_ns: None,
            revision: 1,
            ..bar()
        };
        let batch = bars_batch(&[bar(), empty]).unwrap();
        assert_eq!(batch.schema(), bars_schema());
        assert_eq!(batch.num_rows(), 2);
        let open = batch
            .column_by_name("open")
            .unwrap()
            .as_primitive::<Decimal128Type>();
        assert_eq!(open.value(0), 18_231_000_000);
        assert!(open.is_null(1));
        assert_eq!(open.value_as_string(0), "182.31000000");
        let notional = batch
            .column_by_name("notional")
            .unwrap()
            .as_primitive::<Decimal128Type>();
        assert_eq!(notional.value_as_string(0), "27360.000000000000");
        let date = batch
            .column_by_name("window_date")
            .unwrap()
            .as_string::<i32>();
        assert_eq!(date.value(0), "2013-10-07");
    }

    #[test]
    fn late_and_news_batches_match_their_schemas() {
        let late = LateRecordRow {
            symbol: "IBM".into(),
            interval_secs: 60,
            window_start_ns: T0,
            window_end_ns: T0 + 60_000_000_000,
            event_time_ns: T0 + 5,
            received_at_ns: T0 + 900_000_000_000,
            watermark_ns: T0 + 800_000_000_000,
            reason: LateReason::BeyondAllowedLateness,
            trade_key: "s:1".into(),
            action: TradeAction::New,
            supersedes: None,
            price: 1,
            quantity: 2,
            detected_at_ns: T0 + 900_000_000_001,
            lineage: lineage(),
        };
        let batch = late_records_batch(&[late]).unwrap();
        assert_eq!(batch.schema(), late_records_schema());
        let reason = batch.column_by_name("reason").unwrap().as_string::<i32>();
        assert_eq!(reason.value(0), "beyond_allowed_lateness");

        let news = NewsTradeWindowRow {
            news_key: "rss:1".into(),
            ticker: "IBM".into(),
            side: WindowSide::After,
            window_secs: 300,
            anchor_ns: T0,
            anchor_source: AnchorSource::Received,
            window_start_ns: T0,
            window_end_ns: T0 + 300_000_000_000,
            trade_count: 0,
            volume: 0,
            notional: 0,
            vwap: None,
            first_price: None,
            last_price: None,
            first_trade_ns: None,
            last_trade_ns: None,
            simple_return: None,
            incomplete: false,
            watermark_ns: T0 + 301_000_000_000,
            emitted_at_ns: T0 + 302_000_000_000,
        };
        let batch = news_trade_windows_batch(&[news.clone(), news]).unwrap();
        assert_eq!(batch.schema(), news_trade_windows_schema());
        assert_eq!(batch.num_rows(), 2);
        let side = batch.column_by_name("side").unwrap().as_string::<i32>();
        assert_eq!(side.value(1), "after");
    }
}
