//! Table maintenance: compaction of small files and checkpoints, without blocking writers and
//! without breaking time travel.
//!
//! Freshness makes writers commit small files (one per partition per commit); compaction rewrites
//! the small files of each partition into larger ones in one Delta commit whose `add` and
//! `remove` actions carry `dataChange = false` — allowed on append-only tables, and invisible to
//! change readers. Removed files stay on disk (vacuum is never run here), so every version inside
//! the retention period still reads exactly as before. The commit is made at exactly the next
//! version with no automatic rebase: when a writer commits first, the compaction gives way (its
//! new files are deleted) and the next run tries again; writers never wait for it.

use std::collections::{BTreeMap, HashMap};

use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Remove};
use deltalake::protocol::DeltaOperation;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use object_store::ObjectStoreExt;

use crate::file_format::{rarely_repeating_columns, writer_properties};
use crate::read::{data_files, read_file_as, table_layout, DataFile};
use crate::spec::{open_or_create, LakeConfig, TableSpec};
use crate::{delta_error, LakeError, RecordBatch, Result};

/// What one maintenance pass did to one table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    pub table: String,
    pub files_before: usize,
    pub bytes_before: i64,
    pub files_after: usize,
    pub bytes_after: i64,
    /// Small files rewritten, and the files they became.
    pub rewritten: usize,
    pub written: usize,
    /// The compaction commit's version, when one was made.
    pub compaction_version: Option<i64>,
    /// A writer committed first: nothing was changed, try again later.
    pub gave_way: bool,
    pub checkpoint_version: Option<i64>,
}

/// Rows sorted together when compacting (bounds memory: about this many rows are held).
const CLUSTER_ROWS: usize = 1_000_000;
/// Rows per row group of a compacted file: small enough that one symbol's rows fill few groups,
/// so row-group statistics let a one-symbol query skip the rest.
const CLUSTER_ROW_GROUP: usize = 65_536;
/// Rows per data page of a compacted file: a narrow read decompresses whole pages, and the
/// writer's default (up to 20,000 rows or 1 MB a page) made a one-symbol read decompress far
/// more than it kept. With the offset index, the reader fetches only the pages holding
/// selected rows.
const CLUSTER_PAGE_ROWS: usize = 2_048;

/// Sort rows by symbol, then time (when the table has them), so that compacted files and their
/// row groups cover narrow symbol ranges and a one-symbol query reads little of them.
fn clustered(batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
    let Some(first) = batches.first() else {
        return Ok(Vec::new());
    };
    let schema = first.schema();
    let keys: Vec<usize> = [
        "symbol",
        "event_time_ns",
        "window_start_ns",
        "received_at_ns",
    ]
    .iter()
    .filter_map(|c| schema.index_of(c).ok())
    .collect();
    if !keys.iter().any(|&k| schema.field(k).name() == "symbol") {
        return Ok(batches);
    }
    let error = |e: deltalake::arrow::error::ArrowError| LakeError::Read {
        what: "compaction".into(),
        message: e.to_string(),
    };
    let all = deltalake::arrow::compute::concat_batches(&schema, &batches).map_err(error)?;
    let columns: Vec<deltalake::arrow::compute::SortColumn> = keys
        .iter()
        .map(|&k| deltalake::arrow::compute::SortColumn {
            values: all.column(k).clone(),
            options: None,
        })
        .collect();
    let order = deltalake::arrow::compute::lexsort_to_indices(&columns, None).map_err(error)?;
    let sorted = deltalake::arrow::compute::take_record_batch(&all, &order).map_err(error)?;
    Ok((0..sorted.num_rows())
        .step_by(CLUSTER_ROW_GROUP)
        .map(|start| sorted.slice(start, CLUSTER_ROW_GROUP.min(sorted.num_rows() - start)))
        .collect())
}

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(i64::MAX)
}

/// Compact the files smaller than `small_file_bytes` of each partition (when a partition has
/// at least two), then write a checkpoint of the latest version.
pub async fn maintain_table(
    config: &LakeConfig,
    spec: &TableSpec,
    small_file_bytes: i64,
) -> Result<MaintenanceReport> {
    let name = spec.name.to_string();
    let mut table = open_or_create(config, spec).await?;
    let files = data_files(&table).await?;
    let mut report = MaintenanceReport {
        table: name.clone(),
        files_before: files.len(),
        bytes_before: files.iter().map(|f| f.size).sum(),
        ..Default::default()
    };
    let mut groups: BTreeMap<Vec<(String, Option<String>)>, Vec<&DataFile>> = BTreeMap::new();
    for file in files.iter().filter(|f| f.size < small_file_bytes) {
        groups
            .entry(file.partition_values.clone())
            .or_default()
            .push(file);
    }
    groups.retain(|_, files| files.len() >= 2);
    if !groups.is_empty() {
        let store = table.object_store();
        // Files written before a column was added are read with nulls for it.
        let layout = table_layout(&table)?;
        // The first file is read once: its first batch decides the dictionaries, and the
        // loop below takes its batches from here.
        let mut first_read = match groups.values().next().and_then(|files| files.first()) {
            Some(file) => Some((
                file.path.clone(),
                read_file_as(&store, file, &layout).await?,
            )),
            None => None,
        };
        let plain = first_read
            .as_ref()
            .and_then(|(_, batches)| batches.first())
            .map(rarely_repeating_columns)
            .unwrap_or_default();
        let properties = writer_properties(&plain)
            .set_max_row_group_row_count(Some(CLUSTER_ROW_GROUP))
            .set_data_page_row_count_limit(CLUSTER_PAGE_ROWS)
            .set_write_batch_size(CLUSTER_PAGE_ROWS)
            .build();
        let mut writer = RecordBatchWriter::for_table(&table)
            .map_err(delta_error(&name))?
            .with_writer_properties(properties)
            .with_target_file_size(config.target_file_size_mb.saturating_mul(1024 * 1024));
        let mut removes = Vec::new();
        for files in groups.values() {
            let mut pending: Vec<RecordBatch> = Vec::new();
            let mut pending_rows = 0usize;
            for file in files {
                let batches = match first_read.take_if(|(path, _)| *path == file.path) {
                    Some((_, batches)) => batches,
                    None => read_file_as(&store, file, &layout).await?,
                };
                for batch in batches {
                    pending_rows += batch.num_rows();
                    pending.push(batch);
                }
                if pending_rows >= CLUSTER_ROWS {
                    for batch in clustered(std::mem::take(&mut pending))? {
                        writer.write(batch).await.map_err(delta_error(&name))?;
                    }
                    pending_rows = 0;
                }
                removes.push(Remove {
                    path: file.path.clone(),
                    data_change: false,
                    deletion_timestamp: Some(now_ms()),
                    extended_file_metadata: Some(true),
                    partition_values: Some(
                        file.partition_values
                            .iter()
                            .cloned()
                            .collect::<HashMap<_, _>>(),
                    ),
                    size: Some(file.size),
                    tags: None,
                    deletion_vector: None,
                    base_row_id: None,
                    default_row_commit_version: None,
                });
            }
            for batch in clustered(pending)? {
                writer.write(batch).await.map_err(delta_error(&name))?;
            }
        }
        let mut adds = writer.flush().await.map_err(delta_error(&name))?;
        for add in &mut adds {
            add.data_change = false;
        }
        report.rewritten = removes.len();
        report.written = adds.len();
        let mut actions: Vec<Action> = adds.iter().cloned().map(Action::Add).collect();
        actions.extend(removes.into_iter().map(Action::Remove));
        let snapshot = table.snapshot().map_err(delta_error(&name))?;
        let committed = CommitBuilder::from(CommitProperties::default().with_max_retries(0))
            .with_actions(actions)
            .build(
                Some(snapshot),
                table.log_store(),
                DeltaOperation::Optimize {
                    predicate: None,
                    target_size: small_file_bytes,
                },
            )
            .await;
        match committed {
            Ok(finalized) => {
                report.compaction_version = i64::try_from(finalized.version()).ok();
            }
            Err(e) => {
                // An error can come back for a commit that landed: look before deleting
                // anything, or the table would point at files that are gone.
                table.update_state().await.map_err(delta_error(&name))?;
                let live: std::collections::HashSet<String> = data_files(&table)
                    .await?
                    .into_iter()
                    .map(|f| f.path)
                    .collect();
                if adds.iter().any(|a| live.contains(&a.path)) {
                    tracing::warn!(table = %name, error = %e, "the compaction commit reported an error but landed");
                    report.compaction_version = table.version().and_then(|v| i64::try_from(v).ok());
                } else {
                    tracing::info!(table = %name, error = %e, "a writer committed during compaction; compaction gave way and will run again");
                    report.gave_way = true;
                    for add in &adds {
                        let _ = store
                            .delete(&deltalake::Path::from(add.path.as_str()))
                            .await;
                    }
                }
            }
        }
        table.update_state().await.map_err(delta_error(&name))?;
    }
    if table.version().is_some_and(|v| v > 0) {
        deltalake::checkpoints::create_checkpoint(&table, None)
            .await
            .map_err(delta_error(&name))?;
        report.checkpoint_version = table.version().and_then(|v| i64::try_from(v).ok());
    }
    let after = data_files(&table).await?;
    report.files_after = after.len();
    report.bytes_after = after.iter().map(|f| f.size).sum();
    Ok(report)
}

#[cfg(test)]
mod clustering_tests {
    use std::sync::Arc;

    use deltalake::arrow::array::{Array, Int64Array, StringArray};
    use deltalake::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn compaction_sorts_by_symbol_then_time_and_keeps_every_row() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("symbol", DataType::Utf8, false),
            Field::new("event_time_ns", DataType::Int64, false),
        ]));
        let batch = |symbols: &[&str], times: &[i64]| {
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(StringArray::from(symbols.to_vec())),
                    Arc::new(Int64Array::from(times.to_vec())),
                ],
            )
            .unwrap()
        };
        let out = clustered(vec![
            batch(&["MSFT", "AAPL", "IBM"], &[3, 2, 1]),
            batch(&["AAPL", "MSFT"], &[1, 0]),
        ])
        .unwrap();
        let rows: Vec<(String, i64)> = out
            .iter()
            .flat_map(|b| {
                let s = b
                    .column(0)
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .unwrap()
                    .clone();
                let t = b
                    .column(1)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .clone();
                (0..b.num_rows())
                    .map(move |i| (s.value(i).to_string(), t.value(i)))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(
            rows,
            vec![
                ("AAPL".into(), 1),
                ("AAPL".into(), 2),
                ("IBM".into(), 1),
                ("MSFT".into(), 0),
                ("MSFT".into(), 3)
            ]
        );
        // A table without a symbol column is left in its order.
        let plain = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let b = RecordBatch::try_new(plain, vec![Arc::new(Int64Array::from(vec![2, 1]))]).unwrap();
        let out = clustered(vec![b.clone()]).unwrap();
        assert_eq!(out, vec![b]);
        assert!(out[0].column(0).len() == 2);
    }
}
