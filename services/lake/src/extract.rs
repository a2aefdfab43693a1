//! Entitled extraction: the row filter, projection and column masks an entitlement imposes,
//! applied to Arrow batches read from a table version, and the encodings the API serves.
//!
//! The filter fails closed: a symbol or venue restriction on a table without that column
//! returns no rows rather than every row.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use arrow_select::dictionary::garbage_collect_dictionary;
pub use deltalake::arrow::array::BooleanArray;
use deltalake::arrow::array::{
    Array, ArrayRef, Int32DictionaryArray, Int64Array, StringArray, StringBuilder,
};
use deltalake::arrow::compute::{cast, filter_record_batch};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::{LakeError, RecordBatch, Result};

/// The rows one grant lets through: symbol AND venue restrictions (`None`: any).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantRows {
    pub symbols: Option<BTreeSet<String>>,
    pub venues: Option<BTreeSet<String>>,
}

/// Which rows an entitlement (and the request) lets through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowFilter {
    /// A row passes when any one grant's restrictions all hold (grants are never mixed: one
    /// grant's symbols with another's venues). Empty: no row passes.
    pub any_of: Vec<GrantRows>,
    /// The request's own symbol list (narrows, never widens).
    pub symbols: Option<BTreeSet<String>>,
    /// Event-time range `[from, to)`, UTC ns, on the table's time column.
    pub from_ns: Option<i64>,
    pub to_ns: Option<i64>,
}

impl RowFilter {
    /// Everything (one unrestricted grant).
    pub fn all() -> Self {
        RowFilter {
            any_of: vec![GrantRows::default()],
            ..Default::default()
        }
    }

    /// Whether the entitlement keeps some rows out (no grant lets every row through).
    pub fn restricts_rows(&self) -> bool {
        !self
            .any_of
            .iter()
            .any(|grant| grant.symbols.is_none() && grant.venues.is_none())
    }
}

/// `batch` with each dictionary column's values cut down to the ones its rows use. A column
/// read from a Parquet dictionary page carries every value of its row group, including values
/// of rows a filter removed: sent as is, it would reveal them (another desk's symbols or
/// accounts) to a principal whose grant keeps those rows out.
pub fn compact_dictionaries(batch: &RecordBatch) -> Result<RecordBatch> {
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
    for column in batch.columns() {
        match column.as_any().downcast_ref::<Int32DictionaryArray>() {
            // Scans only make `Int32` keys; any other dictionary is refused, never sent whole.
            None if matches!(column.data_type(), DataType::Dictionary(_, _)) => {
                return Err(error(format!(
                    "a {} column cannot be compacted",
                    column.data_type()
                )));
            }
            // Unchanged (the same buffers) when every value is used.
            Some(dictionary) => columns.push(Arc::new(
                garbage_collect_dictionary(dictionary).map_err(error)?,
            )),
            None => columns.push(column.clone()),
        }
    }
    RecordBatch::try_new(batch.schema(), columns).map_err(error)
}

/// What happens to a column a principal may not see in clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mask {
    Hide,
    Hash,
}

/// The output encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The rows as a JSON array of objects (the API wraps it in an envelope).
    Json,
    Ndjson,
    Csv,
    /// Arrow IPC stream format.
    Arrow,
    Parquet,
}

impl Format {
    pub const NAMES: &'static str = "json, ndjson, csv, arrow or parquet";

    pub fn parse(name: &str) -> Option<Format> {
        Some(match name {
            "json" => Format::Json,
            "ndjson" => Format::Ndjson,
            "csv" => Format::Csv,
            "arrow" => Format::Arrow,
            "parquet" => Format::Parquet,
            _ => return None,
        })
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Ndjson => "application/x-ndjson",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Arrow => "application/vnd.apache.arrow.stream",
            Format::Parquet => "application/vnd.apache.parquet",
        }
    }
}

use crate::scan::TIME_COLUMNS;

fn error(message: impl std::fmt::Display) -> LakeError {
    LakeError::Read {
        what: "extraction".into(),
        message: message.to_string(),
    }
}

fn strings(batch: &RecordBatch, name: &str) -> Result<Option<StringArray>> {
    let Some(column) = batch.column_by_name(name) else {
        return Ok(None);
    };
    let cast = cast(column, &DataType::Utf8).map_err(error)?;
    Ok(cast.as_any().downcast_ref::<StringArray>().cloned())
}

/// Whether row `row` of `values` is in `allowed`; a restriction on a column the table lacks
/// lets nothing through (fail closed).
fn allowed_value(values: Option<&StringArray>, row: usize, allowed: &BTreeSet<String>) -> bool {
    values.is_some_and(|v| !v.is_null(row) && allowed.contains(v.value(row)))
}

/// Apply `filter`, then project `columns` (all when `None`) minus hidden ones, then hash the
/// masked ones with `hash`.
pub fn apply(
    batch: &RecordBatch,
    filter: &RowFilter,
    columns: Option<&[String]>,
    masks: &BTreeMap<String, Mask>,
    hash: &dyn Fn(&str) -> String,
) -> Result<RecordBatch> {
    let keep = row_mask(batch, filter)?;
    let filtered = filter_record_batch(batch, &keep).map_err(error)?;
    project(&filtered, columns, masks, hash)
}

/// The rows of `batch` where `keep` holds.
pub fn filter_batch(batch: &RecordBatch, keep: &BooleanArray) -> Result<RecordBatch> {
    filter_record_batch(batch, keep).map_err(error)
}

/// Which rows of `batch` pass `filter`.
pub fn row_mask(batch: &RecordBatch, filter: &RowFilter) -> Result<BooleanArray> {
    let symbols = strings(batch, "symbol")?;
    let venues = strings(batch, "venue")?;
    let mut keep: Vec<bool> = (0..batch.num_rows())
        .map(|row| {
            let granted = filter.any_of.iter().any(|grant| {
                grant
                    .symbols
                    .as_ref()
                    .is_none_or(|s| allowed_value(symbols.as_ref(), row, s))
                    && grant
                        .venues
                        .as_ref()
                        .is_none_or(|v| allowed_value(venues.as_ref(), row, v))
            });
            granted
                && filter
                    .symbols
                    .as_ref()
                    .is_none_or(|s| allowed_value(symbols.as_ref(), row, s))
        })
        .collect();
    if filter.from_ns.is_some() || filter.to_ns.is_some() {
        let int64s = |name: &str| {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<Int64Array>().cloned())
        };
        let time_column = TIME_COLUMNS
            .iter()
            .find(|name| batch.column_by_name(name).is_some());
        let time = time_column.and_then(|name| int64s(name));
        let fallback = time_column
            .and_then(|name| crate::scan::time_fallback(name))
            .and_then(int64s);
        match time {
            None => keep.iter_mut().for_each(|k| *k = false),
            Some(time) => {
                for (row, k) in keep.iter_mut().enumerate() {
                    let t = if time.is_valid(row) {
                        Some(time.value(row))
                    } else {
                        fallback
                            .as_ref()
                            .filter(|f| f.is_valid(row))
                            .map(|f| f.value(row))
                    };
                    *k = *k
                        && t.is_some_and(|t| {
                            filter.from_ns.is_none_or(|from| t >= from)
                                && filter.to_ns.is_none_or(|to| t < to)
                        });
                }
            }
        }
    }
    Ok(BooleanArray::from(keep))
}

/// Project `columns` (all when `None`) minus hidden ones, and hash the masked ones with `hash`.
pub fn project(
    filtered: &RecordBatch,
    columns: Option<&[String]>,
    masks: &BTreeMap<String, Mask>,
    hash: &dyn Fn(&str) -> String,
) -> Result<RecordBatch> {
    let schema = filtered.schema();
    let mut fields = Vec::new();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    for (index, field) in schema.fields().iter().enumerate() {
        let name = field.name();
        if columns.is_some_and(|wanted| !wanted.iter().any(|w| w == name)) {
            continue;
        }
        match masks.get(name.as_str()) {
            Some(Mask::Hide) => continue,
            Some(Mask::Hash) => {
                if let DataType::Dictionary(_, _) = field.data_type() {
                    // A dictionary column: its distinct values are hashed, its keys kept.
                    let dictionary = filtered
                        .column(index)
                        .as_any()
                        .downcast_ref::<Int32DictionaryArray>()
                        .ok_or_else(|| error(format!("column {name} cannot be masked")))?;
                    let hashed = hash_dictionary(dictionary, hash)?;
                    fields.push(Field::new(name, hashed.data_type().clone(), true));
                    arrays.push(hashed);
                    continue;
                }
                let values = cast(filtered.column(index), &DataType::Utf8).map_err(error)?;
                let values = values
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .ok_or_else(|| error(format!("column {name} cannot be masked")))?;
                // Masked columns (accounts, traders) repeat a few values many times: each
                // distinct value is hashed once per batch.
                let mut seen: HashMap<&str, String> = HashMap::new();
                let mut hashed = StringBuilder::with_capacity(values.len(), values.len() * 64);
                for value in values.iter() {
                    match value {
                        None => hashed.append_null(),
                        Some(value) => {
                            hashed.append_value(seen.entry(value).or_insert_with(|| hash(value)))
                        }
                    }
                }
                let hashed = hashed.finish();
                fields.push(Field::new(name, DataType::Utf8, true));
                arrays.push(Arc::new(hashed));
            }
            None => {
                fields.push(field.as_ref().clone());
                arrays.push(filtered.column(index).clone());
            }
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).map_err(error)
}

/// A dictionary column of text with its values hashed by `hash` and its keys unchanged.
fn hash_dictionary(
    dictionary: &Int32DictionaryArray,
    hash: &dyn Fn(&str) -> String,
) -> Result<ArrayRef> {
    let values = cast(dictionary.values(), &DataType::Utf8).map_err(error)?;
    let values = values
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| error("dictionary values are not text"))?;
    let hashed: StringArray = values.iter().map(|v| v.map(hash)).collect();
    let hashed = Int32DictionaryArray::try_new(dictionary.keys().clone(), Arc::new(hashed))
        .map_err(error)?;
    Ok(Arc::new(hashed))
}

/// A growable buffer the Arrow IPC and Parquet writers write into, drained after every batch so
/// that encoded bytes leave as soon as they exist.
#[derive(Clone, Default)]
struct SharedBuffer(Arc<std::sync::Mutex<Vec<u8>>>);

impl SharedBuffer {
    /// Room for `bytes` more: a batch's encoding otherwise grows the emptied buffer by
    /// doubling, copying what it holds at every step.
    fn reserve(&self, bytes: usize) {
        match self.0.lock() {
            Ok(mut buffer) => buffer.reserve(bytes),
            Err(poisoned) => poisoned.into_inner().reserve(bytes),
        }
    }

    fn take(&self) -> Vec<u8> {
        match self.0.lock() {
            Ok(mut bytes) => std::mem::take(&mut *bytes),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        }
    }
}

impl std::io::Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.0.lock() {
            Ok(mut bytes) => bytes.extend_from_slice(buf),
            Err(poisoned) => poisoned.into_inner().extend_from_slice(buf),
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Rows per Parquet row group in a Parquet response: bounds what the writer buffers.
const PARQUET_ROWS_PER_GROUP: usize = 65_536;

enum EncoderState {
    Json { first: bool },
    Ndjson,
    Csv { header: bool },
    Arrow(Box<deltalake::arrow::ipc::writer::StreamWriter<SharedBuffer>>),
    Parquet(Box<deltalake::parquet::arrow::ArrowWriter<SharedBuffer>>),
}

/// An incremental encoder: `begin`, then `batch` per batch, then `finish`; each returns the
/// bytes to send next. Every batch must have the schema given to `new`.
pub struct Encoder {
    schema: SchemaRef,
    state: EncoderState,
    buffer: SharedBuffer,
    rows: usize,
}

impl Encoder {
    pub fn new(format: Format, schema: SchemaRef) -> Result<Encoder> {
        let buffer = SharedBuffer::default();
        let state = match format {
            Format::Json => EncoderState::Json { first: true },
            Format::Ndjson => EncoderState::Ndjson,
            Format::Csv => EncoderState::Csv { header: false },
            Format::Arrow => EncoderState::Arrow(Box::new(
                deltalake::arrow::ipc::writer::StreamWriter::try_new(buffer.clone(), &schema)
                    .map_err(error)?,
            )),
            Format::Parquet => {
                let properties = deltalake::parquet::file::properties::WriterProperties::builder()
                    .set_max_row_group_row_count(Some(PARQUET_ROWS_PER_GROUP))
                    .set_compression(deltalake::parquet::basic::Compression::SNAPPY)
                    .build();
                EncoderState::Parquet(Box::new(
                    deltalake::parquet::arrow::ArrowWriter::try_new(
                        buffer.clone(),
                        schema.clone(),
                        Some(properties),
                    )
                    .map_err(error)?,
                ))
            }
        };
        Ok(Encoder {
            schema,
            state,
            buffer,
            rows: 0,
        })
    }

    /// Rows encoded so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The bytes before the first row.
    pub fn begin(&mut self) -> Result<Vec<u8>> {
        Ok(match &mut self.state {
            EncoderState::Json { .. } => b"[".to_vec(),
            EncoderState::Csv { header } => {
                *header = true;
                let mut out = csv::Writer::from_writer(Vec::new());
                let names: Vec<&str> = self
                    .schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect();
                out.write_record(&names).map_err(error)?;
                out.into_inner().map_err(error)?
            }
            // The IPC writer has written the schema message when it was made.
            _ => self.buffer.take(),
        })
    }

    /// The bytes of one batch.
    pub fn batch(&mut self, batch: &RecordBatch) -> Result<Vec<u8>> {
        if batch.num_rows() == 0 {
            return Ok(Vec::new());
        }
        // The binary formats carry one schema for the whole response; files differ from the
        // table's schema in details (a list's item field name, nullability) that a cast
        // reconciles. A real type difference fails the cast and the response.
        let binary = matches!(
            self.state,
            EncoderState::Arrow(_) | EncoderState::Parquet(_)
        );
        let batch = if !binary || batch.schema() == self.schema {
            batch.clone()
        } else {
            // Matched by name, never by position.
            let columns = self
                .schema
                .fields()
                .iter()
                .map(|field| {
                    let column = batch.column_by_name(field.name()).ok_or_else(|| {
                        error(format!(
                            "a file of this version lacks column {}",
                            field.name()
                        ))
                    })?;
                    if column.data_type() == field.data_type() {
                        Ok(column.clone())
                    } else {
                        cast(column, field.data_type()).map_err(error)
                    }
                })
                .collect::<Result<Vec<_>>>()?;
            RecordBatch::try_new(self.schema.clone(), columns).map_err(error)?
        };
        self.rows += batch.num_rows();
        match &mut self.state {
            EncoderState::Json { first } => {
                let mut writer = deltalake::arrow::json::LineDelimitedWriter::new(Vec::new());
                writer.write(&batch).map_err(error)?;
                writer.finish().map_err(error)?;
                let lines = writer.into_inner();
                // Serialized objects never hold a raw newline (JSON escapes it): the line
                // breaks are exactly the separators.
                let mut out = Vec::with_capacity(lines.len() + 1);
                for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                    if !*first {
                        out.push(b',');
                    }
                    *first = false;
                    out.extend_from_slice(line);
                }
                Ok(out)
            }
            EncoderState::Ndjson => {
                let mut writer = deltalake::arrow::json::LineDelimitedWriter::new(Vec::new());
                writer.write(&batch).map_err(error)?;
                writer.finish().map_err(error)?;
                Ok(writer.into_inner())
            }
            EncoderState::Csv { .. } => csv_rows(&batch),
            EncoderState::Arrow(writer) => {
                // The IPC message is the batch's buffers plus a small header and padding.
                self.buffer
                    .reserve(batch.get_array_memory_size().saturating_add(4_096));
                writer.write(&batch).map_err(error)?;
                Ok(self.buffer.take())
            }
            EncoderState::Parquet(writer) => {
                writer.write(&batch).map_err(error)?;
                Ok(self.buffer.take())
            }
        }
    }

    /// The bytes after the last row.
    pub fn finish(self) -> Result<Vec<u8>> {
        match self.state {
            EncoderState::Json { .. } => Ok(b"]".to_vec()),
            EncoderState::Ndjson | EncoderState::Csv { .. } => Ok(Vec::new()),
            EncoderState::Arrow(mut writer) => {
                writer.finish().map_err(error)?;
                Ok(self.buffer.take())
            }
            EncoderState::Parquet(writer) => {
                writer.close().map_err(error)?;
                Ok(self.buffer.take())
            }
        }
    }
}

/// The rows of a batch as JSON objects, one string per row.
pub fn json_rows(batch: &RecordBatch) -> Result<Vec<String>> {
    let mut writer = deltalake::arrow::json::LineDelimitedWriter::new(Vec::new());
    writer.write(batch).map_err(error)?;
    writer.finish().map_err(error)?;
    let text = String::from_utf8(writer.into_inner()).map_err(error)?;
    Ok(text.lines().map(str::to_owned).collect())
}

/// CSV lines of a batch: scalars as text; lists and structs, which have no cast to text, in
/// their Arrow debug form.
fn csv_rows(batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut out = csv::Writer::from_writer(Vec::new());
    let columns: Vec<StringArray> = (0..batch.num_columns())
        .map(|i| {
            let column = batch.column(i);
            match cast(column, &DataType::Utf8) {
                Ok(values) => values
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .cloned()
                    .unwrap_or_else(|| StringArray::from(vec![None::<String>; column.len()])),
                Err(_) => (0..column.len())
                    .map(|row| Some(format!("{:?}", column.slice(row, 1))))
                    .collect(),
            }
        })
        .collect();
    for row in 0..batch.num_rows() {
        let record: Vec<&str> = columns
            .iter()
            .map(|c| if c.is_null(row) { "" } else { c.value(row) })
            .collect();
        out.write_record(&record).map_err(error)?;
    }
    out.into_inner().map_err(error)
}

/// Encode batches in one piece (tests and tools); returns the body and its row count.
pub fn encode(
    schema: SchemaRef,
    batches: &[RecordBatch],
    format: Format,
) -> Result<(Vec<u8>, usize)> {
    let mut encoder = Encoder::new(format, schema)?;
    let mut body = encoder.begin()?;
    for batch in batches {
        body.extend(encoder.batch(batch)?);
    }
    let rows = encoder.rows();
    body.extend(encoder.finish()?);
    Ok((body, rows))
}

/// Decode an Arrow IPC stream or a Parquet body back into batches (clients, tests, tools).
pub fn decode(format: Format, body: Vec<u8>) -> Result<Vec<RecordBatch>> {
    match format {
        Format::Arrow => {
            let reader = deltalake::arrow::ipc::reader::StreamReader::try_new(
                std::io::Cursor::new(body),
                None,
            )
            .map_err(error)?;
            reader.map(|b| b.map_err(error)).collect()
        }
        Format::Parquet => {
            let reader =
                deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                    bytes::Bytes::from(body),
                )
                .map_err(error)?
                .build()
                .map_err(error)?;
            reader.map(|b| b.map_err(error)).collect()
        }
        other => Err(error(format!(
            "{other:?} bodies are text; read them as such"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::Int32Array;
    use marketlake_schemas::l2::{trades_batch, Lineage, TradeRow};

    #[test]
    fn compacted_dictionaries_keep_only_the_values_their_rows_use() {
        let values = Arc::new(StringArray::from(vec!["AAPL", "MSFT", "IBM"]));
        let keys = Int32Array::from(vec![Some(2), None, Some(2), Some(0)]);
        let column = Int32DictionaryArray::try_new(keys, values.clone()).unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new(
            "symbol",
            column.data_type().clone(),
            true,
        )]));
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(column)]).unwrap();
        let compacted = compact_dictionaries(&batch).unwrap();
        let column = compacted
            .column(0)
            .as_any()
            .downcast_ref::<Int32DictionaryArray>()
            .unwrap();
        let kept = column
            .values()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(kept.iter().collect::<Vec<_>>(), [Some("AAPL"), Some("IBM")]);
        let rows = cast(column, &DataType::Utf8).unwrap();
        let rows = rows.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(
            rows.iter().collect::<Vec<_>>(),
            [Some("IBM"), None, Some("IBM"), Some("AAPL")]
        );
        // A dictionary whose values are all used is left as it is.
        let keys = Int32Array::from(vec![0, 1, 2]);
        let full = Int32DictionaryArray::try_new(keys, values).unwrap();
        let batch = RecordBatch::try_new(schema, vec![Arc::new(full)]).unwrap();
        let same = compact_dictionaries(&batch).unwrap();
        assert!(same.column(0).to_data().ptr_eq(&batch.column(0).to_data()));
    }

    fn trades(n: i64) -> RecordBatch {
        let rows: Vec<TradeRow> = (0..n)
            .map(|i| {
                let lineage = Lineage {
                    source_id: "s".into(),
                    source_uri: "u".into(),
                    source_position: i,
                    raw_topic: "raw.trades".into(),
                    raw_partition: 0,
                    raw_offset: i,
                };
                TradeRow {
                    exchange: Some("XNAS".into()),
                    currency: Some("USD".into()),
                    side: Some("buy".into()),
                    venue: Some("XNAS".into()),
                    trade_id: Some(format!("T{i}")),
                    order_id: Some(format!("O{i}")),
                    account: Some(format!("A{i}")),
                    trader: Some("t".into()),
                    flags: vec!["f".into()],
                    ..TradeRow::bare(
                        format!("k{i}"),
                        format!("S{}", i % 100),
                        1_000_000_000 + i,
                        10_000,
                        i,
                        lineage,
                    )
                }
            })
            .collect();
        trades_batch(&rows, 0).unwrap()
    }

    /// The encoders hold at most one row group: a Parquet response emits its bytes every
    /// `PARQUET_ROWS_PER_GROUP` rows (the footer alone is left for the end), the text formats
    /// with every batch; and what they emit reads back as the rows given.
    #[test]
    fn encoders_emit_as_they_go_and_read_back() {
        let batch = trades(8_192);
        let batches = 24; // 196,608 rows: three Parquet row groups
        for format in [Format::Parquet, Format::Arrow, Format::Ndjson] {
            let mut encoder = Encoder::new(format, batch.schema()).unwrap();
            let mut body = encoder.begin().unwrap();
            let mut silent_rows = 0usize;
            for _ in 0..batches {
                let chunk = encoder.batch(&batch).unwrap();
                silent_rows = if chunk.is_empty() {
                    silent_rows + batch.num_rows()
                } else {
                    0
                };
                assert!(
                    silent_rows < PARQUET_ROWS_PER_GROUP,
                    "{format:?} held {silent_rows} rows without emitting"
                );
                body.extend(chunk);
            }
            let emitted = body.len();
            let tail = encoder.finish().unwrap();
            assert!(
                tail.len() < emitted / 10,
                "{format:?}: {} bytes were left for the end (of {emitted})",
                tail.len()
            );
            body.extend(tail);
            let rows: usize = match format {
                Format::Ndjson => body
                    .split(|b| *b == b'\n')
                    .filter(|l| !l.is_empty())
                    .count(),
                binary => decode(binary, body)
                    .unwrap()
                    .iter()
                    .map(RecordBatch::num_rows)
                    .sum(),
            };
            assert_eq!(rows, batches * batch.num_rows(), "{format:?}");
        }
    }
}
