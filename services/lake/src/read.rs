//! Reading a table version back: the files of its snapshot, and their rows with partition
//! columns re-attached (Delta keeps partition values in the log, not in the Parquet files).

use std::sync::Arc;

use deltalake::arrow::array::ArrayRef;
use deltalake::arrow::array::{new_null_array, RecordBatchOptions};
pub use deltalake::arrow::array::{
    Array, BinaryArray, Decimal128Array, Float64Array, Int32Array, Int64Array, StringArray,
};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deltalake::kernel::engine::arrow_conversion::TryIntoArrow;
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
pub use deltalake::DeltaTable;
use deltalake::DeltaTableBuilder;
use futures::TryStreamExt;
use marketlake_schemas::names::TableName;
use object_store::ObjectStoreExt;

use crate::spec::LakeConfig;
use crate::{delta_error, LakeError, RecordBatch, Result};

/// The latest loaded version of each table, for a long-running reader (the API): a request
/// brings the cached table up to date by reading only the log entries committed since, where a
/// fresh load would replay the log from its last checkpoint every time.
#[derive(Default)]
pub struct LatestTables {
    tables: std::sync::Mutex<std::collections::HashMap<TableName, DeltaTable>>,
}

impl LatestTables {
    /// The map; a panic elsewhere cannot leave it half-written (inserts are whole), so a
    /// poisoned lock is used as is.
    fn tables(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<TableName, DeltaTable>> {
        match self.tables.lock() {
            Ok(tables) => tables,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The table at its latest version.
    pub async fn latest(&self, config: &LakeConfig, name: TableName) -> Result<DeltaTable> {
        let cached = self.tables().get(&name).cloned();
        let table = match cached {
            Some(mut table) => {
                refresh(&mut table).await?;
                table
            }
            None => load_table(config, name, None).await?,
        };
        let mut tables = self.tables();
        // Concurrent requests refresh their own copies; the newest one stays.
        if tables
            .get(&name)
            .is_none_or(|cached| cached.version() < table.version())
        {
            tables.insert(name, table.clone());
        }
        Ok(table)
    }

    /// The table as of `as_of`: the latest through the cache, other versions loaded.
    pub async fn as_of(
        &self,
        config: &LakeConfig,
        name: TableName,
        as_of: AsOf,
    ) -> Result<DeltaTable> {
        match as_of {
            AsOf::Latest => self.latest(config, name).await,
            _ => load_table_as_of(config, name, as_of).await,
        }
    }
}

/// One data file of a table version.
#[derive(Debug, Clone, PartialEq)]
pub struct DataFile {
    /// Path relative to the table root, as in the log.
    pub path: String,
    /// Absolute local path when the table is on the local file system.
    pub local_path: Option<std::path::PathBuf>,
    pub size: i64,
    pub partition_values: Vec<(String, Option<String>)>,
    /// The log's statistics of the file (JSON: `numRecords`, `minValues`, `maxValues`, ...).
    pub stats: Option<String>,
}

/// Load a table at `version` (latest when `None`).
pub async fn load_table(
    config: &LakeConfig,
    name: TableName,
    version: Option<i64>,
) -> Result<DeltaTable> {
    let label = name.to_string();
    let url = config.table_url(name)?;
    let mut builder = DeltaTableBuilder::from_url(url).map_err(delta_error(&label))?;
    if let Some(version) = version {
        let version = u64::try_from(version).map_err(|_| LakeError::Read {
            what: label.clone(),
            message: format!("version {version} is negative"),
        })?;
        builder = builder.with_version(version);
    }
    builder.load().await.map_err(delta_error(&label))
}

/// Which version of a table to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    Latest,
    Version(i64),
    /// The version current at this instant, UTC ns (Delta time travel by timestamp).
    Time(i64),
}

/// Load a table as of a version or an instant.
pub async fn load_table_as_of(
    config: &LakeConfig,
    name: TableName,
    as_of: AsOf,
) -> Result<DeltaTable> {
    match as_of {
        AsOf::Latest => load_table(config, name, None).await,
        AsOf::Version(v) => load_table(config, name, Some(v)).await,
        AsOf::Time(ns) => {
            let label = name.to_string();
            let url = config.table_url(name)?;
            let at = chrono::DateTime::from_timestamp_nanos(ns);
            let table = DeltaTableBuilder::from_url(url)
                .map_err(delta_error(&label))?
                .with_timestamp(at)
                .load()
                .await
                .map_err(delta_error(&label))?;
            // Before the first commit, or before the oldest version the log can still rebuild
            // (log cleanup past the retention), delta-rs answers with the oldest version it
            // can load, which was not the table at that instant.
            let version = table.version().and_then(|v| i64::try_from(v).ok());
            let committed_ms = match version {
                Some(v) => Some(commit_timestamp_ms(&table, v).await?),
                None => None,
            };
            if committed_ms.is_some_and(|ms| ms.saturating_mul(1_000_000) > ns) {
                return Err(LakeError::Read {
                    what: label,
                    message: "no version of the table at that instant can be read (before its \
                              first commit, or older than the log keeps)"
                        .into(),
                });
            }
            Ok(table)
        }
    }
}

/// The table's schema as the Delta log writes it (`{"type":"struct","fields":[...]}`), which
/// is also the Delta Sharing `schemaString`.
pub fn delta_schema(table: &DeltaTable) -> Result<serde_json::Value> {
    let label = table.table_url().to_string();
    let snapshot = table.snapshot().map_err(delta_error(&label))?;
    serde_json::to_value(&*snapshot.schema()).map_err(|e| LakeError::Read {
        what: label,
        message: e.to_string(),
    })
}

/// The table's id in the Delta log (`metaData.id`).
pub fn table_id(table: &DeltaTable) -> Result<String> {
    let label = table.table_url().to_string();
    let snapshot = table.snapshot().map_err(delta_error(&label))?;
    Ok(snapshot.metadata().id().to_string())
}

/// Bytes `range` (all when `None`) of one data file, and the file's total size.
pub async fn file_bytes(
    table: &DeltaTable,
    path: &str,
    range: Option<std::ops::Range<u64>>,
) -> Result<bytes::Bytes> {
    let store = table.object_store();
    let location = deltalake::Path::from(path);
    let read_error = |e: object_store::Error| LakeError::Read {
        what: path.to_string(),
        message: e.to_string(),
    };
    match range {
        Some(range) => store.get_range(&location, range).await.map_err(read_error),
        None => store
            .get(&location)
            .await
            .map_err(read_error)?
            .bytes()
            .await
            .map_err(read_error),
    }
}

/// Bring a loaded table up to its latest version (reads only the new log entries).
pub async fn refresh(table: &mut DeltaTable) -> Result<()> {
    let label = table.table_url().to_string();
    table
        .update_incremental(None)
        .await
        .map_err(delta_error(&label))
}

/// The data files of a loaded table version.
pub async fn data_files(table: &DeltaTable) -> Result<Vec<DataFile>> {
    let label = table.table_url().to_string();
    let snapshot = table.snapshot().map_err(delta_error(&label))?;
    let views: Vec<_> = snapshot
        .snapshot()
        .file_views(table.log_store().as_ref(), None)
        .try_collect()
        .await
        .map_err(delta_error(&label))?;
    let root = table.table_url().to_file_path().ok();
    Ok(views
        .into_iter()
        .map(|view| {
            let path = view.path().to_string();
            let mut partition_values: Vec<(String, Option<String>)> =
                view.partition_values_map().into_iter().collect();
            partition_values.sort();
            DataFile {
                local_path: root.as_ref().map(|r| r.join(&path)),
                size: view.size(),
                stats: view.stats(),
                path,
                partition_values,
            }
        })
        .collect())
}

/// When `version` of a loaded table was committed, ms since the epoch. The snapshot knows the
/// commits after its last checkpoint; for older ones (and the checkpointed one) the commit file's
/// modification time in the log is used, as delta-rs itself does.
pub async fn commit_timestamp_ms(table: &DeltaTable, version: i64) -> Result<i64> {
    let label = table.table_url().to_string();
    if let Some(ms) = u64::try_from(version)
        .ok()
        .and_then(|v| table.snapshot().ok().and_then(|s| s.version_timestamp(v)))
    {
        return Ok(ms);
    }
    let path = deltalake::Path::from(format!("_delta_log/{version:020}.json"));
    let meta = table
        .object_store()
        .head(&path)
        .await
        .map_err(|e| LakeError::Read {
            what: label,
            message: format!("commit {version}: {e}"),
        })?;
    Ok(meta.last_modified.timestamp_millis())
}

/// The oldest version the table's log can still rebuild: 0 while the first commit is there;
/// after log cleanup removed the commits older than the log retention, the oldest checkpoint
/// left (the versions before it can no longer be travelled to, though their data is still
/// read through the checkpoint). `None` for an empty log.
pub async fn earliest_readable_version(table: &DeltaTable) -> Result<Option<i64>> {
    let label = table.table_url().to_string();
    let log = deltalake::Path::from("_delta_log");
    let listed: Vec<_> = table
        .object_store()
        .list(Some(&log))
        .try_collect()
        .await
        .map_err(|e| LakeError::Read {
            what: label,
            message: format!("listing the log: {e}"),
        })?;
    // `<20 digits>.json` is a commit; `<20 digits>.checkpoint[...].parquet|json` a checkpoint.
    let version_of = |name: &str| -> Option<(i64, bool)> {
        let (digits, rest) = name.split_at_checked(20)?;
        let version = digits
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| digits.parse::<i64>().ok())??;
        match rest {
            ".json" => Some((version, false)),
            _ if rest.starts_with(".checkpoint.") => Some((version, true)),
            _ => None,
        }
    };
    let entries: Vec<(i64, bool)> = listed
        .iter()
        .filter_map(|meta| meta.location.filename())
        .filter_map(version_of)
        .collect();
    if entries
        .iter()
        .any(|&(version, checkpoint)| version == 0 && !checkpoint)
    {
        return Ok(Some(0));
    }
    let oldest_checkpoint = entries.iter().filter(|(_, c)| *c).map(|(v, _)| *v).min();
    Ok(oldest_checkpoint.or_else(|| entries.iter().map(|(v, _)| *v).min()))
}

/// A table walked forward version by version, as the change feed and the live stream read it:
/// each step forward applies the new commits to the state already loaded, rather than
/// replaying the log from the last checkpoint for every version.
pub struct VersionCursor {
    config: LakeConfig,
    name: TableName,
    table: Option<DeltaTable>,
}

impl VersionCursor {
    pub fn new(config: &LakeConfig, name: TableName) -> Self {
        VersionCursor {
            config: config.clone(),
            name,
            table: None,
        }
    }

    /// Move to `version` and list its data files (none before version 0). Moving forward
    /// applies commits; moving back, or the first move, loads the version.
    pub async fn files_at(&mut self, version: i64) -> Result<Vec<DataFile>> {
        if version < 0 {
            self.table = None;
            return Ok(Vec::new());
        }
        let label = self.name.to_string();
        let target = u64::try_from(version).map_err(|_| LakeError::Read {
            what: label.clone(),
            message: format!("version {version} is negative"),
        })?;
        let forward = self
            .table
            .as_ref()
            .and_then(|t| t.version())
            .is_some_and(|current| current <= target);
        match self.table.as_mut() {
            Some(table) if forward => {
                table
                    .update_incremental(Some(target))
                    .await
                    .map_err(delta_error(&label))?;
                // A version past the end leaves the table where it was.
                if table.version() != Some(target) {
                    return Err(LakeError::Read {
                        what: label,
                        message: format!("version {version} does not exist"),
                    });
                }
            }
            _ => self.table = Some(load_table(&self.config, self.name, Some(version)).await?),
        }
        match &self.table {
            Some(table) => data_files(table).await,
            None => Ok(Vec::new()),
        }
    }

    /// The version the cursor is at (`None` before the first move, or before version 0).
    pub fn table(&self) -> Option<&DeltaTable> {
        self.table.as_ref()
    }
}

/// The paths of `files`, as [`appended_files`] compares them.
pub fn file_paths(files: &[DataFile]) -> std::collections::BTreeSet<String> {
    files.iter().map(|f| f.path.clone()).collect()
}

/// The files a version appended: those in its list (`now`) whose paths the previous version's
/// list (`before`) lacks, in path order. `None` for a version that removed files: in an
/// append-only table only compaction does, and it rewrites rows already there, adding none.
pub fn appended_files<'a>(
    before: &std::collections::BTreeSet<String>,
    now: &'a [DataFile],
) -> Option<Vec<&'a DataFile>> {
    let now_paths: std::collections::BTreeSet<&str> = now.iter().map(|f| f.path.as_str()).collect();
    if before.iter().any(|p| !now_paths.contains(p.as_str())) {
        return None;
    }
    let mut appended: Vec<&DataFile> = now.iter().filter(|f| !before.contains(&f.path)).collect();
    appended.sort_by(|a, b| a.path.cmp(&b.path));
    Some(appended)
}

/// Every row of a loaded table version, one batch per file (and per row group).
pub async fn read_rows(table: &DeltaTable) -> Result<Vec<RecordBatch>> {
    let files = data_files(table).await?;
    let store = table.object_store();
    let layout = table_layout(table)?;
    let mut batches = Vec::new();
    for file in files {
        batches.extend(read_file_as(&store, &file, &layout).await?);
    }
    Ok(batches)
}

/// The columns of a loaded version, in the table's order.
pub fn table_layout(table: &DeltaTable) -> Result<SchemaRef> {
    evolved_schema(table, &Arc::new(Schema::empty()))
}

/// The rows of one data file laid out as `layout` (see [`conform`]): null where the file
/// predates a column.
pub async fn read_file_as(
    store: &deltalake::logstore::ObjectStoreRef,
    file: &DataFile,
    layout: &SchemaRef,
) -> Result<Vec<RecordBatch>> {
    read_file(store, file)
        .await?
        .into_iter()
        .map(|batch| {
            conform(batch, layout, |_| true).map_err(|e| LakeError::Read {
                what: file.path.clone(),
                message: e.to_string(),
            })
        })
        .collect()
}

/// The rows of one data file, partition columns re-attached.
pub async fn read_file(
    store: &deltalake::logstore::ObjectStoreRef,
    file: &DataFile,
) -> Result<Vec<RecordBatch>> {
    let read_error = |e: &dyn std::fmt::Display| LakeError::Read {
        what: file.path.clone(),
        message: e.to_string(),
    };
    let bytes = store
        .get(&deltalake::Path::from(file.path.as_str()))
        .await
        .map_err(|e| read_error(&e))?
        .bytes()
        .await
        .map_err(|e| read_error(&e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| read_error(&e))?
        .build()
        .map_err(|e| read_error(&e))?;
    let mut batches = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| read_error(&e))?;
        batches.push(
            with_partition_columns(batch, &file.partition_values).map_err(|e| read_error(&e))?,
        );
    }
    Ok(batches)
}

/// The columns of a loaded version as Arrow: `base` (the spec, with the exact Arrow types the
/// writers use) followed by the columns the table gained beyond it (configured extra columns,
/// added by a schema change), so a reader serves what the version holds.
pub fn evolved_schema(table: &DeltaTable, base: &SchemaRef) -> Result<SchemaRef> {
    let label = table.table_url().to_string();
    let snapshot = table.snapshot().map_err(delta_error(&label))?;
    let kernel = snapshot.schema();
    let table_schema: Schema = kernel
        .as_ref()
        .try_into_arrow()
        .map_err(|e| LakeError::Read {
            what: label.clone(),
            message: format!("schema not readable as Arrow: {e}"),
        })?;
    let mut fields: Vec<Field> = base.fields().iter().map(|f| f.as_ref().clone()).collect();
    for field in table_schema.fields() {
        if base.field_with_name(field.name()).is_err() {
            fields.push(field.as_ref().clone().with_nullable(true));
        }
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// `batch` laid out as `target`: its columns in `target`'s order, with a null column for each
/// nullable `target` column the batch lacks and `include_missing` accepts (a file written
/// before the table gained that column). Columns `target` does not know are kept at the end.
pub fn conform(
    batch: RecordBatch,
    target: &SchemaRef,
    include_missing: impl Fn(&str) -> bool,
) -> std::result::Result<RecordBatch, deltalake::arrow::error::ArrowError> {
    let source = batch.schema();
    let mut fields: Vec<Field> = Vec::with_capacity(target.fields().len());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(target.fields().len());
    let mut changed = false;
    for field in target.fields() {
        match source.index_of(field.name()) {
            Ok(index) => {
                fields.push(source.field(index).clone());
                columns.push(batch.column(index).clone());
            }
            Err(_) if field.is_nullable() && include_missing(field.name()) => {
                fields.push(field.as_ref().clone());
                columns.push(new_null_array(field.data_type(), batch.num_rows()));
                changed = true;
            }
            Err(_) => {}
        }
    }
    for (index, field) in source.fields().iter().enumerate() {
        if target.field_with_name(field.name()).is_err() {
            fields.push(field.as_ref().clone());
            columns.push(batch.column(index).clone());
        }
    }
    let reordered = fields
        .iter()
        .zip(source.fields().iter())
        .any(|(a, b)| a.name() != b.name());
    if !changed && !reordered {
        return Ok(batch);
    }
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(Arc::new(Schema::new(fields)), columns, &options)
}

/// Partition columns come back as nullable text, whatever the file, so that every batch of a
/// scan has one schema.
pub(crate) fn with_partition_columns(
    batch: RecordBatch,
    values: &[(String, Option<String>)],
) -> std::result::Result<RecordBatch, deltalake::arrow::error::ArrowError> {
    if values.is_empty() {
        return Ok(batch);
    }
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    for (name, value) in values {
        fields.push(Field::new(name, DataType::Utf8, true));
        columns.push(Arc::new(StringArray::from(vec![
            value.clone();
            batch.num_rows()
        ])));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}
