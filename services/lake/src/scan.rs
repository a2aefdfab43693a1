//! Planned, pruned, streaming reads of one table version — what the extraction API serves from.
//!
//! A [`ScanPlan`] lists the data files of a version that can hold rows of the request, using
//! the statistics in the Delta log (`minValues`/`maxValues` of the symbol and time columns), so
//! a one-symbol, one-hour query over years of data opens only the files of that hour. Each file
//! is then read row group by row group ([`ScanPlan::stream`]), skipping row groups whose Parquet
//! statistics rule them out and reading only the columns asked for, so memory holds one row
//! group's projected columns at a time however large the result.
//!
//! Every batch carries its [`Position`] (file, row group, first row), so the caller can hand out
//! a cursor that resumes exactly after the last row it sent — on the same version, with files in
//! path order, which is stable for a version.

use std::collections::BTreeSet;
use std::sync::Arc;

use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deltalake::parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, RowSelection, RowSelector,
};
use deltalake::parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use deltalake::parquet::arrow::ProjectionMask;
use deltalake::parquet::errors::ParquetError;
use deltalake::parquet::file::metadata::RowGroupMetaData;
use deltalake::parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};
use deltalake::parquet::file::page_index::column_index::ColumnIndexMetaData;
use deltalake::parquet::file::statistics::Statistics;
use deltalake::DeltaTable;
use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt};
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};

use crate::extract::{row_mask, BooleanArray, GrantRows, RowFilter};
use crate::footers::FooterCache;
use crate::read::{conform, data_files, with_partition_columns, DataFile};
use crate::{LakeError, RecordBatch, Result};

/// The time columns a range applies to: the first one a table has.
pub const TIME_COLUMNS: &[&str] = &[
    "event_time_ns",
    "published_at_ns",
    "window_start_ns",
    "received_at_ns",
];

/// A time column that may be null, and the column whose value stands in for it then: a news
/// item without a published time is placed at its receive time (as news search does), so a
/// time range never silently drops it.
pub const TIME_FALLBACKS: &[(&str, &str)] = &[("published_at_ns", "received_at_ns")];

/// The column standing in for `time_column` where it is null, if any.
pub fn time_fallback(time_column: &str) -> Option<&'static str> {
    TIME_FALLBACKS
        .iter()
        .find(|(column, _)| *column == time_column)
        .map(|(_, fallback)| *fallback)
}

/// Whether rows timed by `column` can fall in the range: by the column's own bounds, or, where
/// it holds nulls (`nulls`, `None`: unknown), by its fallback's.
fn time_column_may_match(
    column: &str,
    nulls: Option<i64>,
    in_range: impl Fn(&str) -> bool,
) -> bool {
    in_range(column)
        || time_fallback(column)
            .is_some_and(|fallback| nulls.is_none_or(|n| n > 0) && in_range(fallback))
}

/// Rows per batch handed to the caller.
const BATCH_ROWS: usize = 8_192;

/// What a scan is for: only used to skip what cannot match (the caller still filters rows).
#[derive(Debug, Clone, Default)]
pub struct ScanRequest {
    /// Rows outside these symbols cannot pass (`None`: any symbol).
    pub symbols: Option<BTreeSet<String>>,
    /// Time range `[from, to)` on the table's time column, UTC ns.
    pub from_ns: Option<i64>,
    pub to_ns: Option<i64>,
    /// Columns to read (`None`: all); the time and symbol/venue columns needed to filter are
    /// always read.
    pub columns: Option<Vec<String>>,
    /// Resume at this position (rows before it, in scan order, are skipped).
    pub resume: Option<Position>,
    /// Text columns to read as Arrow dictionaries (`Int32` keys): Parquet's dictionary pages
    /// are kept rather than expanded to one string per row. Empty: every column as stored.
    pub dictionary: BTreeSet<String>,
}

/// Where a row lies in the scan order of a version: file path, row group, row in the group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Position {
    pub file: String,
    pub row_group: usize,
    pub row: usize,
}

/// One batch of a scan and where its rows lie in their row group.
#[derive(Debug, Clone)]
pub struct ScanBatch {
    pub batch: RecordBatch,
    pub rows: SourceRows,
}

/// Where the rows of a batch lie: their row group, and their rows in it — consecutive, or the
/// ones a narrow request selected within the group (the rows between cannot match it).
#[derive(Debug, Clone)]
pub struct SourceRows {
    /// The position of the batch's first row.
    pub position: Position,
    /// For each row of the batch, its row in the group; `None`: consecutive from `position`.
    pub group_rows: Option<Vec<usize>>,
    pub len: usize,
}

impl SourceRows {
    /// Where a scan resumes after the batch's row `i`.
    pub fn after(&self, i: usize) -> Position {
        let row = self
            .group_rows
            .as_ref()
            .and_then(|rows| rows.get(i).copied())
            .unwrap_or(self.position.row + i);
        Position {
            row: row + 1,
            ..self.position.clone()
        }
    }

    /// Where a scan resumes after the whole batch.
    pub fn after_all(&self) -> Position {
        match self.len {
            0 => self.position.clone(),
            len => self.after(len - 1),
        }
    }
}

/// The files of a version a request needs, in scan order.
pub struct ScanPlan {
    pub version: Option<i64>,
    /// Files in the version, and how many were kept after pruning by log statistics.
    pub files_in_version: usize,
    pub files: Vec<DataFile>,
    /// Bytes of the kept files.
    pub bytes_planned: i64,
    time_column: Option<String>,
    request: ScanRequest,
    store: deltalake::logstore::ObjectStoreRef,
    /// The layout every batch is given ([`output_schema`] of the version's columns), so a file
    /// written before the table gained a column yields nulls for it.
    output: SchemaRef,
    /// Where the table lives (the footer cache's key).
    table_url: String,
    footers: Option<Arc<FooterCache>>,
}

/// Min/max of one column in a file, from the Delta log's `stats`.
fn log_bounds(
    stats: &serde_json::Value,
    column: &str,
) -> (Option<serde_json::Value>, Option<serde_json::Value>) {
    (
        stats.get("minValues").and_then(|m| m.get(column)).cloned(),
        stats.get("maxValues").and_then(|m| m.get(column)).cloned(),
    )
}

/// Whether a `[min, max]` string range can hold any of `symbols`. Unknown bounds: yes.
fn symbols_may_match(symbols: &BTreeSet<String>, min: Option<&str>, max: Option<&str>) -> bool {
    match (min, max) {
        (Some(min), Some(max)) => symbols
            .range(min.to_string()..)
            .next()
            .is_some_and(|first| first.as_str() <= max),
        _ => true,
    }
}

/// Whether a `[min, max]` time range can meet `[from, to)`. Unknown bounds: yes.
fn time_may_match(from: Option<i64>, to: Option<i64>, min: Option<i64>, max: Option<i64>) -> bool {
    let after_start = match (from, max) {
        (Some(from), Some(max)) => max >= from,
        _ => true,
    };
    let before_end = match (to, min) {
        (Some(to), Some(min)) => min < to,
        _ => true,
    };
    after_start && before_end
}

impl ScanRequest {
    /// Whether a file with these log statistics can hold a row of the request (symbols, and
    /// the time range on `time_column`). Unknown statistics: yes.
    pub fn file_may_match(&self, stats: Option<&str>, time_column: Option<&str>) -> bool {
        let Some(stats) = stats.and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
        else {
            return true;
        };
        if let Some(symbols) = &self.symbols {
            let (min, max) = log_bounds(&stats, "symbol");
            if !symbols_may_match(
                symbols,
                min.as_ref().and_then(|v| v.as_str()),
                max.as_ref().and_then(|v| v.as_str()),
            ) {
                return false;
            }
        }
        if let Some(column) = time_column {
            if self.from_ns.is_some() || self.to_ns.is_some() {
                let in_range = |column: &str| {
                    let (min, max) = log_bounds(&stats, column);
                    time_may_match(
                        self.from_ns,
                        self.to_ns,
                        min.and_then(|v| v.as_i64()),
                        max.and_then(|v| v.as_i64()),
                    )
                };
                let nulls = stats
                    .get("nullCount")
                    .and_then(|n| n.get(column))
                    .and_then(|n| n.as_i64());
                if !time_column_may_match(column, nulls, in_range) {
                    return false;
                }
            }
        }
        true
    }

    /// Whether the request narrows rows by symbol or time (worth selecting rows in a group).
    fn narrows(&self) -> bool {
        self.symbols.is_some() || self.from_ns.is_some() || self.to_ns.is_some()
    }

    /// Which rows of `batch` (holding the symbol and time columns, when the file has them)
    /// can match: the extraction's own row filter, narrowed to what the request asks. A column
    /// the file lacks does not narrow (a partition column is matched from the log, and the
    /// caller filters rows again).
    fn rows_may_match(&self, batch: &RecordBatch) -> Result<BooleanArray> {
        let has_time = TIME_COLUMNS
            .iter()
            .any(|name| batch.column_by_name(name).is_some());
        let filter = RowFilter {
            any_of: vec![GrantRows::default()],
            symbols: self
                .symbols
                .clone()
                .filter(|_| batch.column_by_name("symbol").is_some()),
            from_ns: self.from_ns.filter(|_| has_time),
            to_ns: self.to_ns.filter(|_| has_time),
        };
        row_mask(batch, &filter)
    }

    /// Whether a page with these column-index bounds can hold a row of the request: text
    /// bounds are the symbol column's, integer bounds the time column's.
    fn page_may_match(&self, bounds: PageBounds<'_>) -> bool {
        match bounds {
            PageBounds::Text(min, max) => self
                .symbols
                .as_ref()
                .is_none_or(|symbols| symbols_may_match(symbols, min, max)),
            PageBounds::Int(min, max) => time_may_match(self.from_ns, self.to_ns, min, max),
        }
    }

    fn row_group_may_match(&self, group: &RowGroupMetaData, time_column: Option<&str>) -> bool {
        let stats_of = |name: &str| {
            group
                .columns()
                .iter()
                .find(|c| c.column_path().string() == name)
                .and_then(|c| c.statistics())
        };
        if let Some(symbols) = &self.symbols {
            if let Some(Statistics::ByteArray(s)) = stats_of("symbol") {
                let min = s.min_opt().and_then(|v| v.as_utf8().ok());
                let max = s.max_opt().and_then(|v| v.as_utf8().ok());
                // Truncated statistics are only bounds when they say so; the writer keeps
                // short values (symbols) whole, and an unreadable bound counts as unknown.
                if !symbols_may_match(symbols, min, max) {
                    return false;
                }
            }
        }
        if let Some(column) = time_column {
            let in_range = |column: &str| match stats_of(column) {
                Some(Statistics::Int64(s)) => time_may_match(
                    self.from_ns,
                    self.to_ns,
                    s.min_opt().copied(),
                    s.max_opt().copied(),
                ),
                _ => true,
            };
            let nulls = stats_of(column)
                .and_then(|s| s.null_count_opt())
                .and_then(|n| i64::try_from(n).ok());
            if !time_column_may_match(column, nulls, in_range) {
                return false;
            }
        }
        true
    }
}

/// Plan a scan of a loaded table version: its files in path order, pruned by log statistics
/// and by the resume position.
pub async fn plan(
    table: &DeltaTable,
    schema: &SchemaRef,
    request: ScanRequest,
) -> Result<ScanPlan> {
    let mut files = data_files(table).await?;
    let files_in_version = files.len();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let time_column = TIME_COLUMNS
        .iter()
        .find(|c| schema.field_with_name(c).is_ok())
        .map(|c| c.to_string());
    let label = table.table_url().to_string();
    let partition_columns = table
        .snapshot()
        .map_err(crate::delta_error(&label))?
        .metadata()
        .partition_columns()
        .to_vec();
    let output = dictionary_schema(
        &output_schema(schema, &partition_columns),
        &request.dictionary,
    );
    files.retain(|f| {
        request
            .resume
            .as_ref()
            .is_none_or(|p| f.path.as_str() >= p.file.as_str())
            && request.file_may_match(f.stats.as_deref(), time_column.as_deref())
    });
    Ok(ScanPlan {
        version: table.version().and_then(|v| i64::try_from(v).ok()),
        files_in_version,
        bytes_planned: files.iter().map(|f| f.size).sum(),
        files,
        time_column,
        request,
        store: table.object_store(),
        output,
        table_url: label,
        footers: None,
    })
}

fn read_error(file: &str, e: impl std::fmt::Display) -> LakeError {
    LakeError::Read {
        what: file.to_string(),
        message: e.to_string(),
    }
}

impl ScanPlan {
    /// Take files' footers from `cache` when there, and keep the ones read in it.
    pub fn with_footers(mut self, cache: Arc<FooterCache>) -> ScanPlan {
        self.footers = Some(cache);
        self
    }

    /// The batches of the plan, in order. Each file's row groups are read one at a time.
    pub fn stream(self) -> impl Stream<Item = Result<ScanBatch>> + Send {
        let ScanPlan {
            files,
            time_column,
            request,
            store,
            output,
            table_url,
            footers,
            ..
        } = self;
        let request = Arc::new(request);
        let table_url = Arc::new(table_url);
        futures::stream::iter(files)
            .then(move |file| {
                let source = FileSource {
                    store: store.clone(),
                    table_url: table_url.clone(),
                    footers: footers.clone(),
                };
                let request = request.clone();
                let time_column = time_column.clone();
                let output = output.clone();
                async move { read_planned_file(source, file, request, time_column, output).await }
            })
            .flat_map(|result| match result {
                Ok(batches) => batches,
                Err(e) => futures::stream::iter(vec![Err(e)]).boxed(),
            })
    }
}

/// Byte ranges of one data file from the table's object store, for the Parquet reader.
#[derive(Clone)]
struct StoreReader {
    store: deltalake::logstore::ObjectStoreRef,
    path: deltalake::Path,
    size: u64,
}

impl AsyncFileReader for StoreReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'_, deltalake::parquet::errors::Result<bytes::Bytes>> {
        let store = self.store.clone();
        let path = self.path.clone();
        async move {
            store
                .get_range(&path, range)
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))
        }
        .boxed()
    }

    /// All the ranges of one read at once: the store coalesces near ones and a local file is
    /// opened once, where one request per page would pay for each.
    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, deltalake::parquet::errors::Result<Vec<bytes::Bytes>>> {
        let store = self.store.clone();
        let path = self.path.clone();
        async move {
            store
                .get_ranges(&path, &ranges)
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, deltalake::parquet::errors::Result<Arc<ParquetMetaData>>> {
        let size = self.size;
        let mut reader = ParquetMetaDataReader::new();
        if let Some(options) = options {
            reader = reader
                .with_offset_index_policy(options.offset_index_policy())
                .with_column_index_policy(options.column_index_policy());
        }
        async move {
            let metadata = reader.load_and_finish(&mut *self, size).await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

/// Where a plan's files are read from.
struct FileSource {
    store: deltalake::logstore::ObjectStoreRef,
    table_url: Arc<String>,
    footers: Option<Arc<FooterCache>>,
}

impl FileSource {
    /// A file's footer: from the cache, or read (and cached). A narrow request reads the page
    /// indexes too: with the column index it skips pages whose symbol or time bounds rule them
    /// out, and with the offset index the reader fetches only the pages holding selected rows.
    async fn footer(
        &self,
        reader: &mut StoreReader,
        file: &DataFile,
        narrow: bool,
    ) -> Result<ArrowReaderMetadata> {
        let cached = self
            .footers
            .as_ref()
            .and_then(|cache| cache.get(&self.table_url, &file.path, reader.size, narrow));
        if let Some(metadata) = cached {
            return Ok(metadata);
        }
        let index = if narrow {
            PageIndexPolicy::Optional
        } else {
            PageIndexPolicy::Skip
        };
        let options = ArrowReaderOptions::new()
            .with_offset_index_policy(index)
            .with_column_index_policy(index);
        let metadata = ArrowReaderMetadata::load_async(reader, options)
            .await
            .map_err(|e| read_error(&file.path, e))?;
        if let Some(cache) = &self.footers {
            cache.put(&self.table_url, &file.path, reader.size, &metadata, narrow);
        }
        Ok(metadata)
    }
}

/// The row groups of one file a request needs, as a stream of batches (lazy: nothing is read
/// until polled).
async fn read_planned_file(
    source: FileSource,
    file: DataFile,
    request: Arc<ScanRequest>,
    time_column: Option<String>,
    output: SchemaRef,
) -> Result<futures::stream::BoxStream<'static, Result<ScanBatch>>> {
    let path = deltalake::Path::from(file.path.as_str());
    let size =
        u64::try_from(file.size).map_err(|_| read_error(&file.path, "negative size in the log"))?;
    let mut reader = StoreReader {
        store: source.store.clone(),
        path: path.clone(),
        size,
    };
    let metadata = source.footer(&mut reader, &file, request.narrows()).await?;
    // Rows are read with the dictionary columns hinted; the narrowing pass reads the symbol
    // and time columns as stored.
    let read_metadata = if request.dictionary.is_empty() {
        metadata.clone()
    } else {
        let hinted = dictionary_schema(metadata.schema(), &request.dictionary);
        ArrowReaderMetadata::try_new(
            metadata.metadata().clone(),
            ArrowReaderOptions::new().with_schema(hinted),
        )
        .map_err(|e| read_error(&file.path, e))?
    };
    let store = source.store;
    let projection = match &request.columns {
        None => ProjectionMask::all(),
        Some(wanted) => {
            let mut names: BTreeSet<&str> = wanted.iter().map(String::as_str).collect();
            names.extend(["symbol", "venue"]);
            names.extend(time_column.as_deref());
            names.extend(time_column.as_deref().and_then(time_fallback));
            columns_named(&metadata, &names)
        }
    };
    let resume = request
        .resume
        .as_ref()
        .filter(|p| p.file == file.path)
        .cloned();
    let groups: Vec<(usize, usize)> = metadata
        .metadata()
        .row_groups()
        .iter()
        .enumerate()
        .filter(|(i, _)| resume.as_ref().is_none_or(|p| *i >= p.row_group))
        .filter(|(_, g)| request.row_group_may_match(g, time_column.as_deref()))
        .map(|(i, g)| (i, usize::try_from(g.num_rows()).unwrap_or(0)))
        .collect();
    // A narrow request first reads only the symbol and time columns of a group, then the
    // columns asked for at the rows those can match (pages without such rows are not read).
    let narrowing = request.narrows().then(|| {
        let mut names: BTreeSet<&str> = ["symbol"].into();
        names.extend(time_column.as_deref());
        names.extend(time_column.as_deref().and_then(time_fallback));
        columns_named(&metadata, &names)
    });
    let partition_values = Arc::new(file.partition_values.clone());
    let path_text = Arc::new(file.path.clone());
    let stream = futures::stream::iter(groups)
        .then(move |(group, rows)| {
            let reader = StoreReader {
                store: store.clone(),
                path: path.clone(),
                size,
            };
            let metadata = metadata.clone();
            let read_metadata = read_metadata.clone();
            let projection = projection.clone();
            let narrowing = narrowing.clone();
            let request = request.clone();
            let partition_values = partition_values.clone();
            let path_text = path_text.clone();
            let output = output.clone();
            let time_column = time_column.clone();
            let skip = resume
                .as_ref()
                .filter(|p| p.row_group == group)
                .map_or(0, |p| p.row.min(rows));
            async move {
                let selected = match narrowing {
                    None => None,
                    Some(columns) => Some(
                        select_rows(
                            reader.clone(),
                            metadata.clone(),
                            (group, rows, skip),
                            columns,
                            (&request, time_column.as_deref()),
                        )
                        .await
                        .map_err(|e| read_error(&path_text, e))?,
                    ),
                };
                let selection = match &selected {
                    Some(chosen) if chosen.is_empty() => {
                        return Ok(futures::stream::empty().boxed());
                    }
                    Some(chosen) => Some(selection_of(chosen, rows)),
                    None => rows_from(skip, rows),
                };
                let mut builder =
                    ParquetRecordBatchStreamBuilder::new_with_metadata(reader, read_metadata)
                        .with_row_groups(vec![group])
                        .with_projection(projection)
                        .with_batch_size(BATCH_ROWS);
                if let Some(selection) = selection {
                    builder = builder.with_row_selection(selection);
                }
                let stream = builder.build().map_err(|e| read_error(&path_text, e))?;
                let mut emitted = 0usize;
                let batches = stream.map(move |batch| {
                    let batch = batch.map_err(|e| read_error(&path_text, e))?;
                    let len = batch.num_rows();
                    let (first, group_rows) = match &selected {
                        None => (skip + emitted, None),
                        Some(chosen) => {
                            let rows = chosen.get(emitted..emitted + len).ok_or_else(|| {
                                read_error(&path_text, "more rows than were selected")
                            })?;
                            (rows.first().copied().unwrap_or(0), Some(rows.to_vec()))
                        }
                    };
                    emitted += len;
                    let batch = with_partition_columns(batch, &partition_values)
                        .and_then(|batch| {
                            conform(batch, &output, |name| {
                                request
                                    .columns
                                    .as_ref()
                                    .is_none_or(|wanted| wanted.iter().any(|w| w == name))
                            })
                        })
                        .map_err(|e| read_error(&path_text, e))?;
                    Ok(ScanBatch {
                        batch,
                        rows: SourceRows {
                            position: Position {
                                file: path_text.to_string(),
                                row_group: group,
                                row: first,
                            },
                            group_rows,
                            len,
                        },
                    })
                });
                Ok::<_, LakeError>(batches.boxed())
            }
        })
        .flat_map(|result| match result {
            Ok(batches) => batches,
            Err(e) => futures::stream::iter(vec![Err(e)]).boxed(),
        });
    Ok(stream.boxed())
}

/// The rows of one row group (`(group, rows, skip)`: rows before `skip` excluded) that can
/// match `request`, read from the symbol and time columns only — and of those, only in the
/// pages whose column-index bounds can match; ascending.
async fn select_rows(
    reader: StoreReader,
    metadata: ArrowReaderMetadata,
    (group, rows, skip): (usize, usize, usize),
    columns: ProjectionMask,
    (request, time_column): (&ScanRequest, Option<&str>),
) -> std::result::Result<Vec<usize>, String> {
    // The symbol and time columns' pages whose bounds can match, when the request narrows them.
    // A time column with a fallback is not judged by pages: its null rows lie outside its bounds.
    let time_column = time_column
        .filter(|_| request.from_ns.is_some() || request.to_ns.is_some())
        .filter(|column| time_fallback(column).is_none());
    let narrowed = request.symbols.as_ref().map(|_| "symbol");
    let mut candidates = one_range(skip..rows);
    for column in narrowed.into_iter().chain(time_column) {
        let pages = page_rows(metadata.metadata(), group, rows, column, |bounds| {
            request.page_may_match(bounds)
        });
        candidates = intersect_ranges(&candidates, &pages);
    }
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let mut builder = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, metadata)
        .with_row_groups(vec![group])
        .with_projection(columns)
        .with_batch_size(BATCH_ROWS * 8);
    builder = builder.with_row_selection(selection_of_ranges(&candidates, rows));
    let mut stream = builder.build().map_err(|e| e.to_string())?;
    let mut chosen = Vec::new();
    // The group rows the batches hold, in order.
    let mut positions = candidates.into_iter().flatten();
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| e.to_string())?;
        let keep = request.rows_may_match(&batch).map_err(|e| e.to_string())?;
        let batch_rows: Vec<usize> = positions.by_ref().take(batch.num_rows()).collect();
        if batch_rows.len() != batch.num_rows() {
            return Err("the reader returned more rows than were selected".into());
        }
        chosen.extend(
            keep.values()
                .set_indices()
                .filter_map(|i| batch_rows.get(i).copied()),
        );
    }
    Ok(chosen)
}

/// A page's bounds in the column index, as the request compares them.
enum PageBounds<'a> {
    Text(Option<&'a str>, Option<&'a str>),
    Int(Option<i64>, Option<i64>),
}

/// The rows of a row group (ascending, disjoint ranges) in the pages of `column` that
/// `may_match` keeps, judged by the column index. Without a usable index (none loaded, a type
/// it cannot compare, pages not matching the offset index): every row.
fn page_rows(
    metadata: &ParquetMetaData,
    group: usize,
    rows: usize,
    column: &str,
    may_match: impl Fn(PageBounds<'_>) -> bool,
) -> Vec<std::ops::Range<usize>> {
    let every_row = one_range(0..rows);
    let Some(leaf) = metadata.row_groups().get(group).and_then(|g| {
        g.columns()
            .iter()
            .position(|c| c.column_path().string() == column)
    }) else {
        return every_row;
    };
    let (Some(index), Some(offsets)) = (
        metadata
            .column_index()
            .and_then(|i| i.get(group)?.get(leaf)),
        metadata
            .offset_index()
            .and_then(|i| i.get(group)?.get(leaf)),
    ) else {
        return every_row;
    };
    let keep: Vec<bool> = match index {
        ColumnIndexMetaData::BYTE_ARRAY(index) => index
            .min_values_iter()
            .zip(index.max_values_iter())
            .map(|(min, max)| {
                // A bound that is not text counts as unknown (matches).
                may_match(PageBounds::Text(utf8(min), utf8(max)))
            })
            .collect(),
        ColumnIndexMetaData::INT64(index) => index
            .min_values_iter()
            .zip(index.max_values_iter())
            .map(|(min, max)| may_match(PageBounds::Int(min.copied(), max.copied())))
            .collect(),
        _ => return every_row,
    };
    let pages = offsets.page_locations();
    if keep.len() != pages.len() {
        return every_row;
    }
    let mut ranges: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, page) in pages.iter().enumerate() {
        if !keep[i] {
            continue;
        }
        let start = usize::try_from(page.first_row_index).unwrap_or(0).min(rows);
        let end = pages
            .get(i + 1)
            .and_then(|next| usize::try_from(next.first_row_index).ok())
            .unwrap_or(rows)
            .min(rows);
        match ranges.last_mut() {
            Some(last) if last.end == start => last.end = end,
            _ if start < end => ranges.push(start..end),
            _ => {}
        }
    }
    ranges
}

/// A list of row ranges holding one range.
fn one_range(rows: std::ops::Range<usize>) -> Vec<std::ops::Range<usize>> {
    std::iter::once(rows).collect()
}

fn utf8(bytes: Option<&[u8]>) -> Option<&str> {
    bytes.and_then(|v| std::str::from_utf8(v).ok())
}

/// The rows in both `a` and `b` (each ascending and disjoint).
fn intersect_ranges(
    a: &[std::ops::Range<usize>],
    b: &[std::ops::Range<usize>],
) -> Vec<std::ops::Range<usize>> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while let (Some(x), Some(y)) = (a.get(i), b.get(j)) {
        let start = x.start.max(y.start);
        let end = x.end.min(y.end);
        if start < end {
            out.push(start..end);
        }
        if x.end <= y.end {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// A selection of `rows` rows reading exactly `ranges` (ascending, disjoint).
fn selection_of_ranges(ranges: &[std::ops::Range<usize>], rows: usize) -> RowSelection {
    let mut selectors = Vec::new();
    let mut at = 0usize;
    for range in ranges {
        if range.start > at {
            selectors.push(RowSelector::skip(range.start - at));
        }
        selectors.push(RowSelector::select(range.end - range.start));
        at = range.end;
    }
    if rows > at {
        selectors.push(RowSelector::skip(rows - at));
    }
    RowSelection::from(selectors)
}

/// The selection of a group's rows from `skip` on (`None`: all of them).
fn rows_from(skip: usize, rows: usize) -> Option<RowSelection> {
    (skip > 0).then(|| {
        RowSelection::from(vec![
            RowSelector::skip(skip),
            RowSelector::select(rows - skip),
        ])
    })
}

/// The projection of a file's top-level columns named in `names`.
fn columns_named(metadata: &ArrowReaderMetadata, names: &BTreeSet<&str>) -> ProjectionMask {
    let roots: Vec<usize> = metadata
        .schema()
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| names.contains(f.name().as_str()))
        .map(|(i, _)| i)
        .collect();
    ProjectionMask::roots(metadata.parquet_schema(), roots)
}

/// A selection of `rows` rows reading exactly `chosen` (ascending).
fn selection_of(chosen: &[usize], rows: usize) -> RowSelection {
    let mut ranges: Vec<std::ops::Range<usize>> = Vec::new();
    for &row in chosen {
        match ranges.last_mut() {
            Some(last) if last.end == row => last.end = row + 1,
            _ => ranges.push(row..row + 1),
        }
    }
    selection_of_ranges(&ranges, rows)
}

/// `schema` with its text columns named in `columns` as dictionaries of `Int32` keys (other
/// columns, and named columns of another type, unchanged).
pub fn dictionary_schema(schema: &SchemaRef, columns: &BTreeSet<String>) -> SchemaRef {
    if columns.is_empty() {
        return schema.clone();
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|field| match field.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 if columns.contains(field.name()) => {
                field.as_ref().clone().with_data_type(DataType::Dictionary(
                    Box::new(DataType::Int32),
                    Box::new(field.data_type().clone()),
                ))
            }
            _ => field.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// The schema a table's rows come back with (partition columns last, always nullable), for
/// encoders that must write a schema before the first batch or when there is none.
pub fn output_schema(schema: &SchemaRef, partition_columns: &[String]) -> SchemaRef {
    let mut fields: Vec<Field> = schema
        .fields()
        .iter()
        .filter(|f| !partition_columns.contains(f.name()))
        .map(|f| f.as_ref().clone())
        .collect();
    for name in partition_columns {
        fields.push(Field::new(name, DataType::Utf8, true));
    }
    Arc::new(Schema::new(fields))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbol_ranges_prune_only_what_cannot_match() {
        let set: BTreeSet<String> = ["IBM".to_string(), "MSFT".to_string()].into();
        assert!(symbols_may_match(&set, Some("AAPL"), Some("JPM")));
        assert!(symbols_may_match(&set, Some("IBM"), Some("IBM")));
        assert!(!symbols_may_match(&set, Some("AAPL"), Some("GOOG")));
        assert!(!symbols_may_match(&set, Some("JPM"), Some("MA")));
        assert!(!symbols_may_match(&set, Some("NVDA"), Some("ZZ")));
        assert!(symbols_may_match(&set, None, Some("A")));
    }

    #[test]
    fn selections_read_exactly_the_chosen_rows() {
        let selectors: Vec<RowSelector> = selection_of(&[2, 3, 4, 9], 12).into();
        assert_eq!(
            selectors,
            vec![
                RowSelector::skip(2),
                RowSelector::select(3),
                RowSelector::skip(4),
                RowSelector::select(1),
                RowSelector::skip(2),
            ]
        );
        let selectors: Vec<RowSelector> = selection_of(&[0, 1], 2).into();
        assert_eq!(selectors, vec![RowSelector::select(2)]);
        let rows = SourceRows {
            position: Position {
                file: "f".into(),
                row_group: 1,
                row: 2,
            },
            group_rows: Some(vec![2, 3, 9]),
            len: 3,
        };
        assert_eq!(rows.after(1).row, 4);
        assert_eq!(rows.after_all().row, 10);
        let consecutive = SourceRows {
            group_rows: None,
            ..rows
        };
        assert_eq!(consecutive.after_all().row, 5);
    }

    #[test]
    fn time_ranges_are_half_open() {
        assert!(time_may_match(Some(10), Some(20), Some(19), Some(30)));
        assert!(!time_may_match(Some(10), Some(20), Some(20), Some(30)));
        assert!(time_may_match(Some(10), Some(20), Some(0), Some(10)));
        assert!(!time_may_match(Some(10), Some(20), Some(0), Some(9)));
        assert!(time_may_match(None, None, None, None));
    }

    #[test]
    fn null_times_are_placed_by_their_fallback() {
        let request = ScanRequest {
            from_ns: Some(100),
            to_ns: Some(200),
            ..ScanRequest::default()
        };
        let stats = |nulls: Option<i64>| {
            let mut stats = serde_json::json!({
                "minValues": {"published_at_ns": 10, "received_at_ns": 150},
                "maxValues": {"published_at_ns": 20, "received_at_ns": 160},
                "nullCount": {}
            });
            if let Some(nulls) = nulls {
                stats["nullCount"]["published_at_ns"] = nulls.into();
            }
            stats.to_string()
        };
        let news = Some("published_at_ns");
        // Published times all before the range: only null ones can still fall in it.
        assert!(!request.file_may_match(Some(&stats(Some(0))), news));
        assert!(request.file_may_match(Some(&stats(Some(3))), news));
        assert!(request.file_may_match(Some(&stats(None)), news));
        // A column without a fallback prunes on its own bounds.
        let trades = serde_json::json!({
            "minValues": {"event_time_ns": 10}, "maxValues": {"event_time_ns": 20},
            "nullCount": {"event_time_ns": 3}
        })
        .to_string();
        assert!(!request.file_may_match(Some(&trades), Some("event_time_ns")));
        // Rows: a null published time is judged by the receive time.
        let batch = RecordBatch::try_from_iter([
            (
                "published_at_ns",
                Arc::new(deltalake::arrow::array::Int64Array::from(vec![
                    Some(150),
                    None,
                    None,
                    Some(10),
                ])) as deltalake::arrow::array::ArrayRef,
            ),
            (
                "received_at_ns",
                Arc::new(deltalake::arrow::array::Int64Array::from(vec![
                    10, 150, 300, 150,
                ])),
            ),
        ])
        .expect("batch");
        let keep = request.rows_may_match(&batch).expect("mask");
        assert_eq!(
            keep.iter().collect::<Vec<_>>(),
            vec![Some(true), Some(true), Some(false), Some(false)]
        );
    }

    #[test]
    fn row_groups_with_null_times_are_judged_by_their_fallback() {
        use deltalake::arrow::array::Int64Array;
        use deltalake::parquet::arrow::ArrowWriter;
        use deltalake::parquet::file::reader::{FileReader, SerializedFileReader};
        // One group: published times 10..20 or null, receive times 150..160.
        let group = |published: Vec<Option<i64>>| {
            let schema = Arc::new(Schema::new(vec![
                Field::new("published_at_ns", DataType::Int64, true),
                Field::new("received_at_ns", DataType::Int64, false),
            ]));
            let received: Vec<i64> = (150..150 + published.len() as i64).collect();
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from(published)),
                    Arc::new(Int64Array::from(received)),
                ],
            )
            .unwrap();
            let mut bytes = Vec::new();
            let mut writer = ArrowWriter::try_new(&mut bytes, schema, None).unwrap();
            writer.write(&batch).unwrap();
            writer.close().unwrap();
            let reader = SerializedFileReader::new(bytes::Bytes::from(bytes)).unwrap();
            reader.metadata().row_group(0).clone()
        };
        let request = ScanRequest {
            from_ns: Some(100),
            to_ns: Some(200),
            ..ScanRequest::default()
        };
        let news = Some("published_at_ns");
        assert!(!request.row_group_may_match(&group(vec![Some(10), Some(20)]), news));
        assert!(request.row_group_may_match(&group(vec![Some(10), None]), news));
        let later = ScanRequest {
            from_ns: Some(500),
            ..ScanRequest::default()
        };
        assert!(!later.row_group_may_match(&group(vec![Some(10), None]), news));
    }

    #[test]
    fn ranges_intersect() {
        assert_eq!(
            intersect_ranges(&one_range(0..10), &[2..4, 6..12]),
            vec![2..4, 6..10]
        );
        assert_eq!(
            intersect_ranges(&[0..3, 5..8], &one_range(3..5)),
            Vec::<std::ops::Range<usize>>::new()
        );
        assert_eq!(
            intersect_ranges(&one_range(1..9), &[0..2, 3..4, 8..20]),
            vec![1..2, 3..4, 8..9]
        );
    }

    /// A file of symbols A..E (200 rows each, sorted) with times 0..1000, pages of 50 rows.
    fn paged_file() -> bytes::Bytes {
        use deltalake::arrow::array::{Int64Array, StringArray};
        use deltalake::parquet::arrow::ArrowWriter;
        use deltalake::parquet::file::properties::{EnabledStatistics, WriterProperties};
        let schema = Arc::new(Schema::new(vec![
            Field::new("symbol", DataType::Utf8, false),
            Field::new("event_time_ns", DataType::Int64, false),
        ]));
        let symbols: Vec<String> = (0..1000)
            .map(|i| ["A", "B", "C", "D", "E"][i / 200].to_string())
            .collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(symbols)),
                Arc::new(Int64Array::from_iter_values(0..1000)),
            ],
        )
        .unwrap();
        let properties = WriterProperties::builder()
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_data_page_row_count_limit(50)
            .set_write_batch_size(50)
            .set_dictionary_enabled(false)
            .build();
        let mut bytes = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut bytes, schema, Some(properties)).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        bytes::Bytes::from(bytes)
    }

    #[test]
    fn page_bounds_narrow_the_rows_read_and_not_the_rows_chosen() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let store: deltalake::logstore::ObjectStoreRef =
                Arc::new(object_store::memory::InMemory::new());
            let path = deltalake::Path::from("f.parquet");
            let data = paged_file();
            let size = data.len() as u64;
            store.put(&path, data.into()).await.unwrap();
            let reader = StoreReader { store, path, size };
            let request = ScanRequest {
                symbols: Some(["B".to_string()].into()),
                from_ns: Some(230),
                to_ns: Some(390),
                ..ScanRequest::default()
            };
            // The rows of group 0 chosen from row `skip` on, the page indexes read or not.
            let choose = |policy: PageIndexPolicy, skip: usize| {
                let reader = reader.clone();
                let request = request.clone();
                async move {
                    let options = ArrowReaderOptions::new()
                        .with_offset_index_policy(policy)
                        .with_column_index_policy(policy);
                    let metadata = ArrowReaderMetadata::load_async(&mut reader.clone(), options)
                        .await
                        .unwrap();
                    if policy == PageIndexPolicy::Optional {
                        // Symbol B lies in rows 200..400.
                        let pages = page_rows(metadata.metadata(), 0, 1000, "symbol", |b| {
                            request.page_may_match(b)
                        });
                        assert_eq!(pages, one_range(200..400));
                    }
                    let columns = columns_named(&metadata, &["symbol", "event_time_ns"].into());
                    select_rows(
                        reader,
                        metadata,
                        (0, 1000, skip),
                        columns,
                        (&request, Some("event_time_ns")),
                    )
                    .await
                    .unwrap()
                }
            };
            let expected: Vec<usize> = (230..390).collect();
            assert_eq!(
                choose(PageIndexPolicy::Optional, 0).await,
                expected,
                "with the page index"
            );
            assert_eq!(
                choose(PageIndexPolicy::Skip, 0).await,
                expected,
                "without it"
            );
            // A resume position inside the range is honoured with the index too.
            assert_eq!(
                choose(PageIndexPolicy::Optional, 301).await,
                (301..390).collect::<Vec<_>>()
            );
        });
    }
}
