//! The L1 (raw) tables: one row per consumed Kafka record, payload bytes untouched.
//!
//! `l1.trades_raw` and `l1.news_raw` share [`raw_schema`]; `l1.dead_letters` uses
//! [`dead_letter_schema`]. Both are partitioned by `received_date` (UTC `YYYY-MM-DD` of the
//! receive time) so time-bounded replays prune whole directories.

use std::sync::Arc;

use arrow_array::builder::{
    ArrayBuilder, BinaryBuilder, Int32Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
pub use arrow_array::RecordBatch;
use arrow_array::{ArrayRef, BooleanArray, Int64Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::names::TOPIC_DEAD_LETTER_PREFIX;
use crate::raw::{DeadLetter, KafkaPosition, PayloadFormat, RawFields, RawRecord};
use crate::Result;

/// The partition column of every L1 table.
pub const PARTITION_COLUMN: &str = "received_date";

/// `Timestamp(Microsecond, "UTC")`, the Delta `timestamp` type beside every `*_ns` column.
pub(crate) fn utc_timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn kafka_fields() -> Vec<Field> {
    vec![
        Field::new("kafka_topic", DataType::Utf8, false),
        Field::new("kafka_partition", DataType::Int32, false),
        Field::new("kafka_offset", DataType::Int64, false),
        Field::new("kafka_timestamp_ms", DataType::Int64, true),
        // When the sink wrote the row (UTC ns); the Delta commit time says when it became visible.
        Field::new("ingested_at_ns", DataType::Int64, false),
    ]
}

/// Schema of `l1.trades_raw` and `l1.news_raw`.
pub fn raw_schema() -> SchemaRef {
    let mut fields = vec![
        Field::new("source_id", DataType::Utf8, false),
        Field::new("connector", DataType::Utf8, false),
        Field::new("payload_format", DataType::Utf8, false),
        Field::new("source_uri", DataType::Utf8, false),
        Field::new("source_position", DataType::Int64, false),
        Field::new("received_at_ns", DataType::Int64, false),
        Field::new("received_at", utc_timestamp(), false),
        Field::new("symbol", DataType::Utf8, true),
        Field::new("payload", DataType::Binary, false),
        // JSON object of source-specific attributes, null when there are none.
        Field::new("attributes", DataType::Utf8, true),
    ];
    fields.extend(kafka_fields());
    fields.push(Field::new(PARTITION_COLUMN, DataType::Utf8, false));
    Arc::new(Schema::new(fields))
}

/// Schema of `l1.dead_letters`.
pub fn dead_letter_schema() -> SchemaRef {
    let mut fields = vec![
        Field::new("source_id", DataType::Utf8, false),
        Field::new("connector", DataType::Utf8, false),
        Field::new("source_uri", DataType::Utf8, false),
        Field::new("source_position", DataType::Int64, false),
        Field::new("received_at_ns", DataType::Int64, false),
        Field::new("received_at", utc_timestamp(), false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("payload", DataType::Binary, false),
    ];
    fields.extend(kafka_fields());
    fields.push(Field::new(PARTITION_COLUMN, DataType::Utf8, false));
    Arc::new(Schema::new(fields))
}

/// UTC calendar date (`YYYY-MM-DD`) of a nanosecond timestamp, without a calendar dependency.
pub fn utc_date_of_ns(ns: i64) -> String {
    let days = ns.div_euclid(NS_PER_DAY);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Where a consumed record sits in Kafka, borrowed from the client: what the row builders take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KafkaCoordinates<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
}

impl KafkaPosition {
    pub fn coordinates(&self) -> KafkaCoordinates<'_> {
        KafkaCoordinates {
            topic: &self.topic,
            partition: self.partition,
            offset: self.offset,
            timestamp_ms: self.timestamp_ms,
        }
    }
}

/// Bytes of the variable-width values one batch held, to size the next one in a single
/// allocation per buffer: growing them row by row copied and page-faulted the whole batch
/// several times over (a large share of ingest time).
#[derive(Debug, Clone, Copy, Default)]
struct Sizes {
    rows: usize,
    ids: usize,
    uris: usize,
    payloads: usize,
    texts: usize,
}

struct KafkaColumns {
    topic: StringBuilder,
    partition: Int32Builder,
    offset: Int64Builder,
    timestamp_ms: Int64Builder,
    received_date: StringBuilder,
    /// The UTC day of the last row and its text: rows arrive in receive order, so the date is
    /// formatted once a day rather than once a row.
    last_day: Option<(i64, String)>,
}

impl KafkaColumns {
    fn with_capacity(rows: usize) -> Self {
        KafkaColumns {
            topic: StringBuilder::with_capacity(rows, rows * 12),
            partition: Int32Builder::with_capacity(rows),
            offset: Int64Builder::with_capacity(rows),
            timestamp_ms: Int64Builder::with_capacity(rows),
            received_date: StringBuilder::with_capacity(rows, rows * 10),
            last_day: None,
        }
    }

    fn append(&mut self, at: KafkaCoordinates<'_>, received_at_ns: i64) {
        self.topic.append_value(at.topic);
        self.partition.append_value(at.partition);
        self.offset.append_value(at.offset);
        self.timestamp_ms.append_option(at.timestamp_ms);
        let day = received_at_ns.div_euclid(NS_PER_DAY);
        match &self.last_day {
            Some((last, text)) if *last == day => self.received_date.append_value(text),
            _ => {
                let text = utc_date_of_ns(received_at_ns);
                self.received_date.append_value(&text);
                self.last_day = Some((day, text));
            }
        }
    }

    /// `ingested_at_ns` is when the sink wrote the rows: the same for every row of a batch.
    fn finish_into(&mut self, columns: &mut Vec<ArrayRef>, ingested_at_ns: i64) {
        let rows = self.partition.len();
        columns.push(Arc::new(self.topic.finish()));
        columns.push(Arc::new(self.partition.finish()));
        columns.push(Arc::new(self.offset.finish()));
        columns.push(Arc::new(self.timestamp_ms.finish()));
        columns.push(Arc::new(Int64Array::from(vec![ingested_at_ns; rows])));
        columns.push(Arc::new(self.received_date.finish()));
    }
}

const NS_PER_DAY: i64 = 86_400_000_000_000;

pub(crate) fn timestamp_builder() -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::new().with_timezone("UTC")
}

/// `source_position`, `received_at_ns` and `received_at`: adjacent in both L1 schemas.
struct SourceTimes {
    position: Int64Builder,
    received_ns: Int64Builder,
    received_ts: TimestampMicrosecondBuilder,
}

impl SourceTimes {
    fn with_capacity(rows: usize) -> Self {
        SourceTimes {
            position: Int64Builder::with_capacity(rows),
            received_ns: Int64Builder::with_capacity(rows),
            received_ts: TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC"),
        }
    }

    fn append(&mut self, source_position: i64, received_at_ns: i64) {
        self.position.append_value(source_position);
        self.received_ns.append_value(received_at_ns);
        self.received_ts
            .append_value(received_at_ns.div_euclid(1_000));
    }

    fn finish_into(&mut self, columns: &mut Vec<ArrayRef>) {
        columns.push(Arc::new(self.position.finish()));
        columns.push(Arc::new(self.received_ns.finish()));
        columns.push(Arc::new(self.received_ts.finish()));
    }
}

/// Rows of `l1.trades_raw` / `l1.news_raw` under construction, appended one consumed record at
/// a time straight from the client's buffers: the ingest buffer of a raw table. Every consumed
/// record becomes a row; one without marketlake's headers (a foreign producer) is kept as
/// received with the reason in its `decode_error` attribute.
pub struct RawColumns {
    source_id: StringBuilder,
    connector: StringBuilder,
    format: StringBuilder,
    uri: StringBuilder,
    times: SourceTimes,
    symbol: StringBuilder,
    payload: BinaryBuilder,
    attributes: StringBuilder,
    kafka: KafkaColumns,
    /// Scratch space for one row's attributes object.
    json: Vec<u8>,
}

impl Default for RawColumns {
    fn default() -> Self {
        Self::with_sizes(Sizes::default())
    }
}

impl RawColumns {
    fn with_sizes(sizes: Sizes) -> Self {
        let n = sizes.rows;
        RawColumns {
            source_id: StringBuilder::with_capacity(n, sizes.ids),
            connector: StringBuilder::with_capacity(n, sizes.ids),
            format: StringBuilder::with_capacity(n, n * 8),
            uri: StringBuilder::with_capacity(n, sizes.uris),
            times: SourceTimes::with_capacity(n),
            symbol: StringBuilder::with_capacity(n, n * 8),
            payload: BinaryBuilder::with_capacity(n, sizes.payloads),
            attributes: StringBuilder::with_capacity(n, sizes.texts),
            kafka: KafkaColumns::with_capacity(n),
            json: Vec::with_capacity(256),
        }
    }

    /// Empty columns with room for as much as these hold now (the next buffer of a stream).
    pub fn successor(&self) -> Self {
        Self::with_sizes(Sizes {
            rows: self.len(),
            ids: self.source_id.values_slice().len() + self.connector.values_slice().len(),
            uris: self.uri.values_slice().len(),
            payloads: self.payload.values_slice().len(),
            texts: self.attributes.values_slice().len(),
        })
    }

    pub fn len(&self) -> usize {
        self.times.position.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Append a record consumed at `at`: its `ml.*` headers, key and value as the client holds
    /// them. `now_ns` stamps the receive time of a record that lacks marketlake's headers.
    pub fn append_consumed<'h>(
        &mut self,
        headers: impl IntoIterator<Item = (&'h str, &'h [u8])>,
        key: Option<&[u8]>,
        payload: &[u8],
        at: KafkaCoordinates<'_>,
        now_ns: impl FnOnce() -> i64,
    ) {
        match RawFields::decode(headers) {
            Ok(fields) => {
                self.source_id.append_value(fields.source_id);
                self.connector.append_value(fields.connector);
                self.format.append_value(fields.format.as_str());
                self.uri.append_value(fields.source_uri);
                self.times
                    .append(fields.source_position, fields.received_at_ns);
                self.symbol
                    .append_option(fields.symbol.map(String::from_utf8_lossy));
                self.payload.append_value(payload);
                self.append_attributes(fields.attributes);
                self.kafka.append(at, fields.received_at_ns);
            }
            Err(e) => {
                let received_at_ns = now_ns();
                self.source_id.append_value("unknown");
                self.connector.append_value("unknown");
                self.format.append_value(PayloadFormat::Unknown.as_str());
                self.uri
                    .append_value(format!("kafka://{}/{}", at.topic, at.partition));
                self.times.append(at.offset, received_at_ns);
                self.symbol.append_option(key.map(String::from_utf8_lossy));
                self.payload.append_value(payload);
                let reason = e.to_string();
                self.append_attributes(vec![("decode_error", reason.as_bytes())]);
                self.kafka.append(at, received_at_ns);
            }
        }
    }

    /// Append a record already decoded (tests, tools, replays).
    pub fn append_record(&mut self, record: &RawRecord, at: KafkaCoordinates<'_>) {
        self.source_id.append_value(&record.source_id);
        self.connector.append_value(&record.connector);
        self.format.append_value(record.format.as_str());
        self.uri.append_value(&record.source_uri);
        self.times
            .append(record.source_position, record.received_at_ns);
        self.symbol.append_option(record.symbol.as_deref());
        self.payload.append_value(&record.payload);
        self.append_attributes(
            record
                .attributes
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_bytes()))
                .collect(),
        );
        self.kafka.append(at, record.received_at_ns);
    }

    /// The attributes as one JSON object, keys sorted, the last of a repeated key kept (as a
    /// map of them would hold them); null when there are none.
    fn append_attributes(&mut self, mut attributes: Vec<(&str, &[u8])>) {
        if attributes.is_empty() {
            self.attributes.append_null();
            return;
        }
        // Stable: among equal keys the last received stays last, and is the one written.
        attributes.sort_by(|a, b| a.0.cmp(b.0));
        self.json.clear();
        self.json.push(b'{');
        let mut first = true;
        for (i, (key, value)) in attributes.iter().enumerate() {
            if attributes.get(i + 1).is_some_and(|next| next.0 == *key) {
                continue;
            }
            if !first {
                self.json.push(b',');
            }
            first = false;
            // Strings always serialise; into a Vec the writer cannot fail.
            let _ = serde_json::to_writer(&mut self.json, key);
            self.json.push(b':');
            let _ = serde_json::to_writer(&mut self.json, &String::from_utf8_lossy(value));
        }
        self.json.push(b'}');
        match std::str::from_utf8(&self.json) {
            Ok(text) => self.attributes.append_value(text),
            Err(_) => self.attributes.append_value("{}"),
        }
    }

    /// The rows so far as one batch (the columns are left empty); `keep`, when given, has one
    /// flag per row and leaves out the rows flagged false.
    pub fn finish(&mut self, ingested_at_ns: i64, keep: Option<&[bool]>) -> Result<RecordBatch> {
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.source_id.finish()),
            Arc::new(self.connector.finish()),
            Arc::new(self.format.finish()),
            Arc::new(self.uri.finish()),
        ];
        self.times.finish_into(&mut columns);
        columns.push(Arc::new(self.symbol.finish()));
        columns.push(Arc::new(self.payload.finish()));
        columns.push(Arc::new(self.attributes.finish()));
        self.kafka.finish_into(&mut columns, ingested_at_ns);
        filtered(RecordBatch::try_new(raw_schema(), columns)?, keep)
    }
}

fn filtered(batch: RecordBatch, keep: Option<&[bool]>) -> Result<RecordBatch> {
    match keep {
        None => Ok(batch),
        Some(keep) => Ok(arrow_select::filter::filter_record_batch(
            &batch,
            &BooleanArray::from(keep.to_vec()),
        )?),
    }
}

/// Build one Arrow batch of L1 rows from consumed raw records.
pub fn raw_batch<'a, I>(rows: I, ingested_at_ns: i64) -> Result<RecordBatch>
where
    I: IntoIterator<Item = (&'a RawRecord, &'a KafkaPosition)>,
    I::IntoIter: Clone,
{
    let rows = rows.into_iter();
    let mut sizes = Sizes::default();
    for (record, _) in rows.clone() {
        sizes.rows += 1;
        sizes.ids += record.source_id.len() + record.connector.len();
        sizes.uris += record.source_uri.len();
        sizes.payloads += record.payload.len();
        sizes.texts += record
            .attributes
            .iter()
            .map(|(k, v)| k.len() + v.len() + 6)
            .sum::<usize>()
            + 2;
    }
    let mut columns = RawColumns::with_sizes(sizes);
    for (record, at) in rows {
        columns.append_record(record, at.coordinates());
    }
    columns.finish(ingested_at_ns, None)
}

/// Rows of `l1.dead_letters` under construction (see [`RawColumns`]).
pub struct DeadLetterColumns {
    source_id: StringBuilder,
    connector: StringBuilder,
    uri: StringBuilder,
    times: SourceTimes,
    reason: StringBuilder,
    payload: BinaryBuilder,
    kafka: KafkaColumns,
}

impl Default for DeadLetterColumns {
    fn default() -> Self {
        DeadLetterColumns {
            source_id: StringBuilder::new(),
            connector: StringBuilder::new(),
            uri: StringBuilder::new(),
            times: SourceTimes::with_capacity(0),
            reason: StringBuilder::new(),
            payload: BinaryBuilder::new(),
            kafka: KafkaColumns::with_capacity(0),
        }
    }
}

impl DeadLetterColumns {
    pub fn len(&self) -> usize {
        self.times.position.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Append a dead letter consumed at `at`. One without marketlake's headers is kept with
    /// its bytes, the source id its topic names, and the reason.
    pub fn append_consumed<'h>(
        &mut self,
        headers: impl IntoIterator<Item = (&'h str, &'h [u8])>,
        payload: &[u8],
        at: KafkaCoordinates<'_>,
        now_ns: impl FnOnce() -> i64,
    ) {
        let letter =
            DeadLetter::from_kafka_parts(headers, || payload.to_vec()).unwrap_or_else(|e| {
                DeadLetter {
                    source_id: at
                        .topic
                        .strip_prefix(TOPIC_DEAD_LETTER_PREFIX)
                        .unwrap_or(at.topic)
                        .to_string(),
                    connector: "unknown".into(),
                    source_uri: format!("kafka://{}/{}", at.topic, at.partition),
                    source_position: at.offset,
                    received_at_ns: now_ns(),
                    reason: format!("dead letter without marketlake headers: {e}"),
                    payload: payload.to_vec(),
                }
            });
        self.append_letter(&letter, at);
    }

    pub fn append_letter(&mut self, letter: &DeadLetter, at: KafkaCoordinates<'_>) {
        self.source_id.append_value(&letter.source_id);
        self.connector.append_value(&letter.connector);
        self.uri.append_value(&letter.source_uri);
        self.times
            .append(letter.source_position, letter.received_at_ns);
        self.reason.append_value(&letter.reason);
        self.payload.append_value(&letter.payload);
        self.kafka.append(at, letter.received_at_ns);
    }

    /// As [`RawColumns::finish`].
    pub fn finish(&mut self, ingested_at_ns: i64, keep: Option<&[bool]>) -> Result<RecordBatch> {
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.source_id.finish()),
            Arc::new(self.connector.finish()),
            Arc::new(self.uri.finish()),
        ];
        self.times.finish_into(&mut columns);
        columns.push(Arc::new(self.reason.finish()));
        columns.push(Arc::new(self.payload.finish()));
        self.kafka.finish_into(&mut columns, ingested_at_ns);
        filtered(RecordBatch::try_new(dead_letter_schema(), columns)?, keep)
    }
}

/// The receive times (UTC ns) of a batch's first `limit` rows, for freshness figures.
pub fn received_times_ns(batch: &RecordBatch, limit: usize) -> Vec<i64> {
    batch
        .column_by_name("received_at_ns")
        .and_then(|column| column.as_primitive_opt::<Int64Type>())
        .map(|times| times.values().iter().take(limit).copied().collect())
        .unwrap_or_default()
}

/// Build one Arrow batch of dead-letter rows.
pub fn dead_letter_batch<'a>(
    rows: impl IntoIterator<Item = (&'a DeadLetter, &'a KafkaPosition)>,
    ingested_at_ns: i64,
) -> Result<RecordBatch> {
    let mut columns = DeadLetterColumns::default();
    for (letter, at) in rows {
        columns.append_letter(letter, at.coordinates());
    }
    columns.finish(ingested_at_ns, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw::{FeedClass, PayloadFormat};
    use std::collections::BTreeMap;

    #[test]
    fn utc_date_matches_known_days() {
        assert_eq!(utc_date_of_ns(0), "1970-01-01");
        // 2013-10-07T13:30:00Z
        assert_eq!(utc_date_of_ns(1_381_152_600_000_000_000), "2013-10-07");
        // 2024-02-29T23:59:59Z, a leap day
        assert_eq!(utc_date_of_ns(1_709_251_199_000_000_000), "2024-02-29");
        assert_eq!(utc_date_of_ns(-1), "1969-12-31");
    }

    #[test]
    fn raw_batch_has_one_row_per_record_and_the_declared_schema() {
        let record = RawRecord {
            source_id: "s".into(),
            connector: "fix".into(),
            class: FeedClass::Trades,
            format: PayloadFormat::Fix,
            source_uri: "file:///x".into(),
            source_position: 3,
            received_at_ns: 1_381_152_600_000_000_000,
            symbol: None,
            payload: b"8=FIX.4.2".to_vec(),
            attributes: BTreeMap::new(),
        };
        let at = KafkaPosition {
            topic: "raw.trades".into(),
            partition: 1,
            offset: 9,
            timestamp_ms: None,
        };
        let batch = raw_batch([(&record, &at), (&record, &at)], 5).unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.schema(), raw_schema());
    }

    #[test]
    fn consumed_records_build_the_same_rows_as_decoded_ones() {
        let mut attributes = BTreeMap::new();
        attributes.insert("msg_type".to_string(), "8".to_string());
        attributes.insert("delimiter".to_string(), "pipe \"quoted\"".to_string());
        let record = RawRecord {
            source_id: "fix-1".into(),
            connector: "fix".into(),
            class: FeedClass::Trades,
            format: PayloadFormat::Fix,
            source_uri: "tcp://127.0.0.1:9000".into(),
            source_position: 42,
            received_at_ns: 1_381_152_600_000_000_000,
            symbol: Some("AAPL".into()),
            payload: b"8=FIX.4.4|35=8|".to_vec(),
            attributes,
        };
        let plain = RawRecord {
            symbol: None,
            attributes: BTreeMap::new(),
            received_at_ns: 1_709_251_199_000_000_000,
            ..record.clone()
        };
        let at = |offset| KafkaPosition {
            topic: "raw.trades".into(),
            partition: 2,
            offset,
            timestamp_ms: Some(7),
        };
        let (a, b) = (at(10), at(11));
        let expected = raw_batch([(&record, &a), (&plain, &b)], 99).unwrap();

        let mut columns = RawColumns::default();
        for (r, position) in [(&record, &a), (&plain, &b)] {
            let headers = r.headers();
            columns.append_consumed(
                crate::raw::header_pairs(&headers),
                Some(b"key".as_slice()),
                &r.payload,
                position.coordinates(),
                || unreachable!("valid headers carry the receive time"),
            );
        }
        assert_eq!(columns.finish(99, None).unwrap(), expected);

        // A record without marketlake's headers is kept with the reason; `keep` filters rows.
        let mut columns = columns.successor();
        columns.append_consumed([], Some(b"IBM".as_slice()), b"x", a.coordinates(), || 5);
        columns.append_consumed([], None, b"y", b.coordinates(), || 6);
        let batch = columns.finish(1, Some(&[false, true])).unwrap();
        assert_eq!(batch.num_rows(), 1);
        let text = |name: &str| {
            batch
                .column_by_name(name)
                .unwrap()
                .as_string::<i32>()
                .value(0)
                .to_string()
        };
        assert_eq!(text("source_uri"), "kafka://raw.trades/2");
        assert_eq!(text("payload_format"), "unknown");
        assert!(
            text("attributes").contains("decode_error"),
            "{}",
            text("attributes")
        );
        assert_eq!(received_times_ns(&batch, 10), vec![6]);
    }
}
