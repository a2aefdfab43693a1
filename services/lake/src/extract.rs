//! Entitled extraction: the row filter, projection and column masks an entitlement imposes,
//! applied to Arrow batches read from a table version, and the encodings the API serves.
//!
//! The filter fails closed: a symbol or venue restriction on a table without that column
//! returns no rows rather than every row.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use deltalake::arrow::array::{Array, ArrayRef, BooleanArray, Int64Array, StringArray};
use deltalake::arrow::compute::{cast, filter_record_batch};
use deltalake::arrow::datatypes::{DataType, Field, Schema};

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
    Json,
    Ndjson,
    Csv,
}

/// The time column a range applies to, first present of these.
const TIME_COLUMNS: &[&str] = &[
    "event_time_ns",
    "published_at_ns",
    "window_start_ns",
    "received_at_ns",
];

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
        let time = TIME_COLUMNS
            .iter()
            .find_map(|name| batch.column_by_name(name))
            .and_then(|c| c.as_any().downcast_ref::<Int64Array>().cloned());
        match time {
            None => keep.iter_mut().for_each(|k| *k = false),
            Some(time) => {
                for (row, k) in keep.iter_mut().enumerate() {
                    let t = time.value(row);
                    *k = *k
                        && !time.is_null(row)
                        && filter.from_ns.is_none_or(|from| t >= from)
                        && filter.to_ns.is_none_or(|to| t < to);
                }
            }
        }
    }
    let filtered = filter_record_batch(batch, &BooleanArray::from(keep)).map_err(error)?;
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
                let values = cast(filtered.column(index), &DataType::Utf8).map_err(error)?;
                let values = values
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .ok_or_else(|| error(format!("column {name} cannot be masked")))?;
                let hashed: StringArray = values.iter().map(|v| v.map(hash)).collect();
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

/// Encode batches; returns the body and its row count.
pub fn encode(batches: &[RecordBatch], format: Format) -> Result<(Vec<u8>, usize)> {
    let rows = batches.iter().map(RecordBatch::num_rows).sum();
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    let body = match format {
        Format::Json => {
            let mut writer = deltalake::arrow::json::ArrayWriter::new(Vec::new());
            writer.write_batches(&refs).map_err(error)?;
            writer.finish().map_err(error)?;
            let mut body = writer.into_inner();
            if body.is_empty() {
                body = b"[]".to_vec();
            }
            body
        }
        Format::Ndjson => {
            let mut writer = deltalake::arrow::json::LineDelimitedWriter::new(Vec::new());
            writer.write_batches(&refs).map_err(error)?;
            writer.finish().map_err(error)?;
            writer.into_inner()
        }
        Format::Csv => {
            let mut out = csv::Writer::from_writer(Vec::new());
            if let Some(first) = batches.first() {
                let names: Vec<String> = first
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect();
                out.write_record(&names).map_err(error)?;
            }
            for batch in batches {
                let columns: Vec<StringArray> = (0..batch.num_columns())
                    .map(|i| {
                        let column = batch.column(i);
                        // Lists and structs are rendered as JSON text by casting is not
                        // supported; fall back to their debug form.
                        match cast(column, &DataType::Utf8) {
                            Ok(values) => values
                                .as_any()
                                .downcast_ref::<StringArray>()
                                .cloned()
                                .unwrap_or_else(|| {
                                    StringArray::from(vec![None::<String>; column.len()])
                                }),
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
            }
            out.into_inner().map_err(error)?
        }
    };
    Ok((body, rows))
}
