//! How the lake writes Parquet data files: Snappy, page statistics (the column and offset
//! indexes a narrow read prunes pages with), and no dictionary for columns whose values rarely
//! repeat.
//!
//! Every writer (the exactly-once sink, compaction) takes its settings from here, so a file
//! reads the same way whoever wrote it.

use deltalake::parquet::basic::Compression;
use deltalake::parquet::file::properties::{
    EnabledStatistics, WriterProperties, WriterPropertiesBuilder,
};
use deltalake::parquet::schema::types::ColumnPath;

use crate::RecordBatch;

/// The lake's writer settings, with `plain_columns` written without a dictionary.
pub(crate) fn writer_properties(plain_columns: &[String]) -> WriterPropertiesBuilder {
    let mut properties = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_statistics_enabled(EnabledStatistics::Page);
    for column in plain_columns {
        properties =
            properties.set_column_dictionary_enabled(ColumnPath::from(column.as_str()), false);
    }
    properties
}

/// Rows converted at a time when counting a column's distinct values.
const CHUNK_ROWS: usize = 4_096;

/// Rows a sample needs before its repeats say anything about the column.
pub(crate) const SAMPLE_ROWS: usize = 1_000;

/// Top-level columns whose values rarely repeat (trade keys and ids, times, offsets, prices):
/// a dictionary only adds a page that every read of the column chunk, however narrow,
/// decompresses and decodes whole (a 64 Ki-row group of distinct `i64` times has a 512 KB
/// dictionary), so they are written without one.
/// A sample under [`SAMPLE_ROWS`] rows says nothing: none.
pub(crate) fn rarely_repeating_columns(batch: &RecordBatch) -> Vec<String> {
    use deltalake::arrow::array::Array;
    use deltalake::arrow::row::{RowConverter, SortField};
    if batch.num_rows() < SAMPLE_ROWS {
        return Vec::new();
    }
    batch
        .schema()
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, field)| !field.data_type().is_nested())
        .filter_map(|(i, field)| {
            let column = batch.column(i);
            let converter =
                RowConverter::new(vec![SortField::new(field.data_type().clone())]).ok()?;
            // Distinct values past a tenth of the rows decide it: stop there. The column is
            // converted a chunk at a time, so a column of unique values (the usual case for
            // the columns this finds) costs about a tenth of the rows, not all of them.
            let limit = column.len() / 10;
            let mut distinct: std::collections::HashSet<Vec<u8>> = Default::default();
            let mut offset = 0;
            while offset < column.len() && distinct.len() <= limit {
                let len = CHUNK_ROWS.min(column.len() - offset);
                let chunk = column.slice(offset, len);
                let rows = converter
                    .convert_columns(std::slice::from_ref(&chunk))
                    .ok()?;
                for r in (0..len).filter(|&r| chunk.is_valid(r)) {
                    let value = rows.row(r).data();
                    if !distinct.contains(value) {
                        distinct.insert(value.to_vec());
                    }
                }
                offset += len;
            }
            (distinct.len() > limit).then(|| field.name().clone())
        })
        .collect()
}

#[cfg(test)]
mod dictionary_tests {
    use std::sync::Arc;

    use deltalake::arrow::array::{Int64Array, StringArray};
    use deltalake::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn only_columns_whose_values_rarely_repeat_lose_their_dictionary() {
        let rows = 5_000i64;
        let schema = Arc::new(Schema::new(vec![
            Field::new("symbol", DataType::Utf8, false),
            Field::new("trade_id", DataType::Utf8, false),
            Field::new("event_time_ns", DataType::Int64, false),
            Field::new("raw_partition", DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(
                    (0..rows).map(|i| format!("S{}", i % 50)),
                )),
                Arc::new(StringArray::from_iter_values(
                    (0..rows).map(|i| format!("T{i}")),
                )),
                Arc::new(Int64Array::from_iter_values(0..rows)),
                Arc::new(Int64Array::from_iter(
                    (0..rows).map(|i| (i % 3 > 0).then_some(i % 3)),
                )),
            ],
        )
        .unwrap();
        assert_eq!(
            rarely_repeating_columns(&batch),
            vec!["trade_id".to_string(), "event_time_ns".to_string()]
        );
    }
}
