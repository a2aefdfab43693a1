//! What the index holds of one `l2.news` row ([`NewsDoc`]) and how rows read back from the
//! table become docs ([`docs_from_batch`]).
//!
//! Columns are found by name, not position: readers re-attach the partition column, may add
//! columns a later schema version brings, and may hand strings back as `LargeUtf8` or
//! `Utf8View` depending on the engine. Only the columns search cannot do without are required.

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{
    Array, ArrayRef, GenericListArray, Int64Array, LargeStringArray, OffsetSizeTrait, RecordBatch,
    StringArray, StringViewArray,
};
use marketlake_schemas::l2::NewsRow;
use serde::{Deserialize, Serialize};

use crate::{Result, SearchError};

/// One news item as the search index stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewsDoc {
    /// Identity in `l2.news`; indexing the same key again replaces the earlier doc.
    pub news_key: String,
    pub headline: String,
    pub body: Option<String>,
    pub link: Option<String>,
    pub publisher: Option<String>,
    pub published_at_ns: Option<i64>,
    pub received_at_ns: i64,
    pub language: Option<String>,
    /// Upper-case tickers, as enrichment tagged them; entitlements match on these.
    pub tickers: Vec<String>,
}

impl NewsDoc {
    /// The time range filters and the "newest first" order use: the item's own time when it has
    /// one, else when marketlake received it (the same rule `l2.news` readers apply).
    pub fn event_time_ns(&self) -> i64 {
        self.published_at_ns.unwrap_or(self.received_at_ns)
    }
}

impl From<&NewsRow> for NewsDoc {
    fn from(row: &NewsRow) -> Self {
        NewsDoc {
            news_key: row.news_key.clone(),
            headline: row.headline.clone(),
            body: row.body.clone(),
            link: row.link.clone(),
            publisher: row.publisher.clone(),
            published_at_ns: row.published_at_ns,
            received_at_ns: row.received_at_ns,
            language: row.language.clone(),
            tickers: row.tickers.clone(),
        }
    }
}

/// A string column in whichever of Arrow's string layouts the reader produced.
enum Strings<'a> {
    Utf8(&'a StringArray),
    Large(&'a LargeStringArray),
    View(&'a StringViewArray),
}

impl<'a> Strings<'a> {
    fn of(array: &'a dyn Array) -> Option<Self> {
        if let Some(a) = array.as_string_opt::<i32>() {
            Some(Strings::Utf8(a))
        } else if let Some(a) = array.as_string_opt::<i64>() {
            Some(Strings::Large(a))
        } else {
            array.as_string_view_opt().map(Strings::View)
        }
    }

    fn get(&self, row: usize) -> Option<&'a str> {
        match self {
            Strings::Utf8(a) => (!a.is_null(row)).then(|| a.value(row)),
            Strings::Large(a) => (!a.is_null(row)).then(|| a.value(row)),
            Strings::View(a) => (!a.is_null(row)).then(|| a.value(row)),
        }
    }
}

/// A list-of-strings column (`tickers`), either list layout.
enum StringLists<'a> {
    List(&'a GenericListArray<i32>, Strings<'a>),
    Large(&'a GenericListArray<i64>, Strings<'a>),
}

impl<'a> StringLists<'a> {
    fn of(array: &'a dyn Array) -> Option<Self> {
        if let Some(list) = array.as_list_opt::<i32>() {
            Some(StringLists::List(
                list,
                Strings::of(list.values().as_ref())?,
            ))
        } else if let Some(list) = array.as_list_opt::<i64>() {
            Some(StringLists::Large(
                list,
                Strings::of(list.values().as_ref())?,
            ))
        } else {
            None
        }
    }

    /// The row's non-null elements; a null list is an empty one.
    fn get(&self, row: usize) -> Vec<String> {
        fn collect<O: OffsetSizeTrait>(
            list: &GenericListArray<O>,
            values: &Strings<'_>,
            row: usize,
        ) -> Vec<String> {
            if list.is_null(row) {
                return Vec::new();
            }
            // Offsets index the shared values array, also for a sliced list.
            let offsets = list.value_offsets();
            let (start, end) = (offsets[row].as_usize(), offsets[row + 1].as_usize());
            (start..end)
                .filter_map(|i| values.get(i).map(str::to_string))
                .collect()
        }
        match self {
            StringLists::List(list, values) => collect(list, values, row),
            StringLists::Large(list, values) => collect(list, values, row),
        }
    }
}

fn required<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    batch
        .column_by_name(name)
        .ok_or_else(|| SearchError::MissingColumn {
            column: name.to_string(),
        })
}

fn bad_type(name: &str, column: &ArrayRef, expected: &str) -> SearchError {
    SearchError::BadColumn {
        column: name.to_string(),
        message: format!("expected {expected}, found {}", column.data_type()),
    }
}

fn as_strings<'a>(name: &str, column: &'a ArrayRef) -> Result<Strings<'a>> {
    Strings::of(column.as_ref()).ok_or_else(|| bad_type(name, column, "a string column"))
}

fn as_int64s<'a>(name: &str, column: &'a ArrayRef) -> Result<&'a Int64Array> {
    column
        .as_primitive_opt::<Int64Type>()
        .ok_or_else(|| bad_type(name, column, "Int64"))
}

/// An optional string column: absent reads as all nulls.
fn optional_strings<'a>(batch: &'a RecordBatch, name: &str) -> Result<Option<Strings<'a>>> {
    batch
        .column_by_name(name)
        .map(|c| as_strings(name, c))
        .transpose()
}

fn null_in(name: &str, row: usize) -> SearchError {
    SearchError::BadColumn {
        column: name.to_string(),
        message: format!("null in row {row} of a required column"),
    }
}

/// Decode rows of `l2.news` into docs.
///
/// Required: `news_key`, `headline`, `received_at_ns`, `tickers` (missing → [`SearchError::MissingColumn`],
/// wrong type or a null key, headline or receive time → [`SearchError::BadColumn`]). Everything
/// else is optional: a missing column reads as null, extra columns are ignored.
pub fn docs_from_batch(batch: &RecordBatch) -> Result<Vec<NewsDoc>> {
    const NEWS_KEY: &str = "news_key";
    const HEADLINE: &str = "headline";
    const RECEIVED: &str = "received_at_ns";
    const TICKERS: &str = "tickers";

    // Required columns first, so a wrong table fails on them rather than on an optional one.
    let news_key = as_strings(NEWS_KEY, required(batch, NEWS_KEY)?)?;
    let headline = as_strings(HEADLINE, required(batch, HEADLINE)?)?;
    let received = as_int64s(RECEIVED, required(batch, RECEIVED)?)?;
    let tickers_column = required(batch, TICKERS)?;
    let tickers = StringLists::of(tickers_column.as_ref())
        .ok_or_else(|| bad_type(TICKERS, tickers_column, "a list of strings"))?;
    let body = optional_strings(batch, "body")?;
    let link = optional_strings(batch, "link")?;
    let publisher = optional_strings(batch, "publisher")?;
    let language = optional_strings(batch, "language")?;
    let published = batch
        .column_by_name("published_at_ns")
        .map(|c| as_int64s("published_at_ns", c))
        .transpose()?;

    let optional = |column: &Option<Strings<'_>>, row: usize| {
        column.as_ref().and_then(|c| c.get(row)).map(str::to_string)
    };
    let mut docs = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let key = news_key.get(row).ok_or_else(|| null_in(NEWS_KEY, row))?;
        let head = headline.get(row).ok_or_else(|| null_in(HEADLINE, row))?;
        if received.is_null(row) {
            return Err(null_in(RECEIVED, row));
        }
        docs.push(NewsDoc {
            news_key: key.to_string(),
            headline: head.to_string(),
            body: optional(&body, row),
            link: optional(&link, row),
            publisher: optional(&publisher, row),
            published_at_ns: published.and_then(|p| (!p.is_null(row)).then(|| p.value(row))),
            received_at_ns: received.value(row),
            language: optional(&language, row),
            tickers: tickers.get(row),
        });
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::builder::{ListBuilder, StringBuilder};
    use arrow_array::{Int32Array, StringViewArray};
    use arrow_schema::{DataType, Field, Schema};
    use marketlake_schemas::l2::{news_batch, news_schema};

    use super::*;
    use crate::tests::news_row;

    fn without(batch: &RecordBatch, name: &str) -> RecordBatch {
        let schema = batch.schema();
        let keep: Vec<usize> = (0..schema.fields().len())
            .filter(|&i| schema.field(i).name() != name)
            .collect();
        batch.project(&keep).unwrap()
    }

    fn replaced(batch: &RecordBatch, name: &str, field: Field, array: ArrayRef) -> RecordBatch {
        let schema = batch.schema();
        let mut fields: Vec<Field> = Vec::new();
        let mut columns = Vec::new();
        for (i, f) in schema.fields().iter().enumerate() {
            if f.name() == name {
                fields.push(field.clone());
                columns.push(array.clone());
            } else {
                fields.push(f.as_ref().clone());
                columns.push(batch.column(i).clone());
            }
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
    }

    #[test]
    fn decodes_a_real_news_batch() {
        let mut full = news_row("k1", "Apple beats", &["AAPL", "MSFT"], 5);
        full.body = Some("Body text".into());
        full.link = Some("https://example.com/1".into());
        full.publisher = Some("Wire".into());
        full.language = Some("en".into());
        full.published_at_ns = Some(4);
        let mut bare = news_row("k2", "No body", &[], 7);
        bare.body = None;
        bare.published_at_ns = None;
        let batch = news_batch(&[full.clone(), bare.clone()], 9).unwrap();
        assert_eq!(batch.schema(), news_schema());
        let docs = docs_from_batch(&batch).unwrap();
        assert_eq!(docs, vec![NewsDoc::from(&full), NewsDoc::from(&bare)]);
        assert_eq!(docs[0].event_time_ns(), 4);
        assert_eq!(docs[1].event_time_ns(), 7);
        assert!(docs[1].tickers.is_empty());
    }

    #[test]
    fn decodes_a_sliced_batch() {
        let rows = [
            news_row("a", "one", &["A"], 1),
            news_row("b", "two", &["B", "BB"], 2),
            news_row("c", "three", &["C"], 3),
        ];
        let batch = news_batch(&rows, 0).unwrap().slice(1, 2);
        let docs = docs_from_batch(&batch).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].tickers, vec!["B", "BB"]);
        assert_eq!(docs[1].news_key, "c");
    }

    #[test]
    fn missing_required_columns_are_named() {
        let batch = news_batch(&[news_row("k", "h", &["A"], 1)], 0).unwrap();
        for name in ["news_key", "headline", "received_at_ns", "tickers"] {
            match docs_from_batch(&without(&batch, name)) {
                Err(SearchError::MissingColumn { column }) => assert_eq!(column, name),
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn missing_optional_and_extra_columns_are_tolerated() {
        let batch = news_batch(&[news_row("k", "h", &["A"], 1)], 0).unwrap();
        let mut trimmed = batch.clone();
        for name in [
            "body",
            "link",
            "publisher",
            "language",
            "published_at_ns",
            "source_id",
            "received_date",
        ] {
            trimmed = without(&trimmed, name);
        }
        let docs = docs_from_batch(&trimmed).unwrap();
        assert_eq!(docs[0].body, None);
        assert_eq!(docs[0].published_at_ns, None);
        assert_eq!(docs[0].event_time_ns(), 1);
        // The full batch has lineage, timestamps and the partition column besides: ignored.
        assert_eq!(docs_from_batch(&batch).unwrap().len(), 1);
    }

    #[test]
    fn wrong_types_and_null_keys_are_refused() {
        let batch = news_batch(&[news_row("k", "h", &["A"], 1)], 0).unwrap();
        let ints = replaced(
            &batch,
            "headline",
            Field::new("headline", DataType::Int32, false),
            Arc::new(Int32Array::from(vec![1])),
        );
        assert!(matches!(
            docs_from_batch(&ints),
            Err(SearchError::BadColumn { column, .. }) if column == "headline"
        ));
        let null_key = replaced(
            &batch,
            "news_key",
            Field::new("news_key", DataType::Utf8, true),
            Arc::new(StringArray::from(vec![None::<&str>])),
        );
        assert!(matches!(
            docs_from_batch(&null_key),
            Err(SearchError::BadColumn { column, .. }) if column == "news_key"
        ));
    }

    #[test]
    fn string_views_and_null_lists_decode() {
        let batch = news_batch(&[news_row("k", "h", &["A"], 1)], 0).unwrap();
        let view = replaced(
            &batch,
            "headline",
            Field::new("headline", DataType::Utf8View, false),
            Arc::new(StringViewArray::from(vec!["viewed headline"])),
        );
        let mut lists = ListBuilder::new(StringBuilder::new());
        lists.append(false);
        let lists = lists.finish();
        let null_tickers = replaced(
            &view,
            "tickers",
            Field::new("tickers", lists.data_type().clone(), true),
            Arc::new(lists),
        );
        let docs = docs_from_batch(&null_tickers).unwrap();
        assert_eq!(docs[0].headline, "viewed headline");
        assert!(docs[0].tickers.is_empty());
    }
}
