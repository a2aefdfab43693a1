//! The L1 (raw) tables: one row per consumed Kafka record, payload bytes untouched.
//!
//! `l1.trades_raw` and `l1.news_raw` share [`raw_schema`]; `l1.dead_letters` uses
//! [`dead_letter_schema`]. Both are partitioned by `received_date` (UTC `YYYY-MM-DD` of the
//! receive time) so time-bounded replays prune whole directories.

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, Int32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::raw::{DeadLetter, KafkaPosition, RawRecord};
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
    let days = ns.div_euclid(86_400_000_000_000);
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

struct KafkaColumns {
    topic: StringBuilder,
    partition: Int32Builder,
    offset: Int64Builder,
    timestamp_ms: Int64Builder,
    ingested_at_ns: Int64Builder,
    received_date: StringBuilder,
}

impl KafkaColumns {
    fn new() -> Self {
        KafkaColumns {
            topic: StringBuilder::new(),
            partition: Int32Builder::new(),
            offset: Int64Builder::new(),
            timestamp_ms: Int64Builder::new(),
            ingested_at_ns: Int64Builder::new(),
            received_date: StringBuilder::new(),
        }
    }

    fn append(&mut self, position: &KafkaPosition, ingested_at_ns: i64, received_at_ns: i64) {
        self.topic.append_value(&position.topic);
        self.partition.append_value(position.partition);
        self.offset.append_value(position.offset);
        self.timestamp_ms.append_option(position.timestamp_ms);
        self.ingested_at_ns.append_value(ingested_at_ns);
        self.received_date
            .append_value(utc_date_of_ns(received_at_ns));
    }

    fn finish_into(mut self, columns: &mut Vec<ArrayRef>) {
        columns.push(Arc::new(self.topic.finish()));
        columns.push(Arc::new(self.partition.finish()));
        columns.push(Arc::new(self.offset.finish()));
        columns.push(Arc::new(self.timestamp_ms.finish()));
        columns.push(Arc::new(self.ingested_at_ns.finish()));
        columns.push(Arc::new(self.received_date.finish()));
    }
}

pub(crate) fn timestamp_builder() -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::new().with_timezone("UTC")
}

/// Build one Arrow batch of L1 rows from consumed raw records.
pub fn raw_batch<'a, I>(rows: I, ingested_at_ns: i64) -> Result<RecordBatch>
where
    I: IntoIterator<Item = (&'a RawRecord, &'a KafkaPosition)>,
    I::IntoIter: Clone,
{
    let rows = rows.into_iter();
    // Size every buffer once: growing them row by row copied and page-faulted the whole
    // batch several times over (a large share of ingest time).
    let (mut n, mut ids, mut uris, mut payloads, mut attrs) = (0usize, 0, 0, 0, 0);
    for (record, _) in rows.clone() {
        n += 1;
        ids += record.source_id.len() + record.connector.len();
        uris += record.source_uri.len();
        payloads += record.payload.len();
        attrs += record
            .attributes
            .iter()
            .map(|(k, v)| k.len() + v.len() + 6)
            .sum::<usize>()
            + 2;
    }
    let mut source_id = StringBuilder::with_capacity(n, ids);
    let mut connector = StringBuilder::with_capacity(n, ids);
    let mut format = StringBuilder::with_capacity(n, n * 8);
    let mut uri = StringBuilder::with_capacity(n, uris);
    let mut position = Int64Builder::with_capacity(n);
    let mut received_ns = Int64Builder::with_capacity(n);
    let mut received_ts = timestamp_builder();
    let mut symbol = StringBuilder::with_capacity(n, n * 8);
    let mut payload = BinaryBuilder::with_capacity(n, payloads);
    let mut attributes = StringBuilder::with_capacity(n, attrs);
    let mut json = Vec::with_capacity(256);
    let mut kafka = KafkaColumns::new();
    for (record, at) in rows {
        source_id.append_value(&record.source_id);
        connector.append_value(&record.connector);
        format.append_value(record.format.as_str());
        uri.append_value(&record.source_uri);
        position.append_value(record.source_position);
        received_ns.append_value(record.received_at_ns);
        received_ts.append_value(record.received_at_ns.div_euclid(1_000));
        symbol.append_option(record.symbol.as_deref());
        payload.append_value(&record.payload);
        if record.attributes.is_empty() {
            attributes.append_null();
        } else {
            // A map of strings always serialises, as UTF-8.
            json.clear();
            let text = serde_json::to_writer(&mut json, &record.attributes)
                .ok()
                .and_then(|()| std::str::from_utf8(&json).ok())
                .unwrap_or("{}");
            attributes.append_value(text);
        }
        kafka.append(at, ingested_at_ns, record.received_at_ns);
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(source_id.finish()),
        Arc::new(connector.finish()),
        Arc::new(format.finish()),
        Arc::new(uri.finish()),
        Arc::new(position.finish()),
        Arc::new(received_ns.finish()),
        Arc::new(received_ts.finish()),
        Arc::new(symbol.finish()),
        Arc::new(payload.finish()),
        Arc::new(attributes.finish()),
    ];
    kafka.finish_into(&mut columns);
    Ok(RecordBatch::try_new(raw_schema(), columns)?)
}

/// Build one Arrow batch of dead-letter rows.
pub fn dead_letter_batch<'a>(
    rows: impl IntoIterator<Item = (&'a DeadLetter, &'a KafkaPosition)>,
    ingested_at_ns: i64,
) -> Result<RecordBatch> {
    let mut source_id = StringBuilder::new();
    let mut connector = StringBuilder::new();
    let mut uri = StringBuilder::new();
    let mut position = Int64Builder::new();
    let mut received_ns = Int64Builder::new();
    let mut received_ts = timestamp_builder();
    let mut reason = StringBuilder::new();
    let mut payload = BinaryBuilder::new();
    let mut kafka = KafkaColumns::new();
    for (letter, at) in rows {
        source_id.append_value(&letter.source_id);
        connector.append_value(&letter.connector);
        uri.append_value(&letter.source_uri);
        position.append_value(letter.source_position);
        received_ns.append_value(letter.received_at_ns);
        received_ts.append_value(letter.received_at_ns.div_euclid(1_000));
        reason.append_value(&letter.reason);
        payload.append_value(&letter.payload);
        kafka.append(at, ingested_at_ns, letter.received_at_ns);
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(source_id.finish()),
        Arc::new(connector.finish()),
        Arc::new(uri.finish()),
        Arc::new(position.finish()),
        Arc::new(received_ns.finish()),
        Arc::new(received_ts.finish()),
        Arc::new(reason.finish()),
        Arc::new(payload.finish()),
    ];
    kafka.finish_into(&mut columns);
    Ok(RecordBatch::try_new(dead_letter_schema(), columns)?)
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
}
