//! The exactly-once commit.
//!
//! A sink buffers records from Kafka partitions and commits them in one Delta transaction that
//! also carries, per partition, a `txn` action (`appId` = `<sink>:<topic>:<partition>`,
//! `version` = last offset written). On start and after every rebalance the sink reads those
//! versions back and resumes from the next offset, so the Delta log alone decides what is
//! written.
//!
//! delta-rs does not refuse a second commit that carries the same `txn`, and a commit can fail
//! after it actually landed. So every commit is guarded:
//! 1. reload the table and check that each partition's stored offset is still the one the buffer
//!    was built on — if not, another writer got there first: drop the buffer ([`CommitOutcome::Conflict`]);
//! 2. commit at exactly the next table version with no automatic conflict resolution (a racing
//!    writer makes ours fail rather than be rebased on top of theirs);
//! 3. on error, reload and look: our offsets stored means it landed; the old offsets mean retry
//!    (bounded, with backoff); anything else is a conflict. Files written for a commit that did
//!    not land are deleted so nothing ever reads them.
//!
//! **Stored offsets are cached.** delta-rs answers "the `txn` version of this app id" by
//! replaying the log since the last checkpoint, every time; a commit asks once or twice per
//! partition, so at one commit a second that replay was a growing share of every commit. The
//! sink keeps the versions it has read as of one table version and, on every reload, reads
//! just the commits added since (its own and other writers'), where the newest `txn` of an app
//! id is its stored offset. Anything it cannot read that way (a missing commit file, a line it
//! cannot parse, a jump of many versions) empties the cache and falls back to delta-rs.
//! (Tables here never set `delta.setTransactionRetentionDuration`, under which delta-rs would
//! forget old `txn`s; the cache does not apply it.)

use std::collections::HashMap;
use std::sync::PoisonError;
use std::time::Duration;

use deltalake::arrow::array::{Array, StringArray};
use deltalake::kernel::scalars::ScalarExt;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add, Transaction};
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter, WriteMode};
use deltalake::DeltaTable;
use object_store::ObjectStoreExt;

use crate::file_format::{rarely_repeating_columns, writer_properties, SAMPLE_ROWS};
use crate::spec::{open_or_create, LakeConfig, TableSpec};
use crate::{delta_error, LakeError, RecordBatch, Result};

const MAX_COMMIT_ATTEMPTS: u32 = 6;

/// The partition values every row of `batch` shares, as delta-rs would compute them for its
/// first row; `None` when the rows differ, or a partition column is not a non-null string
/// column (then delta-rs splits the batch itself). Generic over the map and scalar types so
/// the writer's signature picks them (deltalake does not re-export either).
fn single_partition<M, S>(batch: &RecordBatch, partition_columns: &[String]) -> Option<M>
where
    M: FromIterator<(String, S)>,
    S: ScalarExt,
{
    if batch.num_rows() == 0 || partition_columns.is_empty() {
        return None;
    }
    partition_columns
        .iter()
        .map(|name| {
            let column = batch.column_by_name(name)?;
            let strings = column.as_any().downcast_ref::<StringArray>()?;
            if strings.null_count() > 0 {
                return None;
            }
            let first = strings.value(0);
            if (1..strings.len()).any(|row| strings.value(row) != first) {
                return None;
            }
            Some((name.clone(), S::from_array(column.as_ref(), 0)?))
        })
        .collect()
}

/// What one commit covers for one Kafka partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetAdvance {
    pub topic: String,
    pub partition: i32,
    /// The stored offset the buffer was built on (`None`: nothing stored yet).
    pub from: Option<i64>,
    /// The last offset in the buffer; stored as the new `txn` version.
    pub to: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    Committed {
        version: i64,
    },
    /// Another writer advanced this partition first; nothing of ours was committed.
    Conflict {
        topic: String,
        partition: i32,
        stored: Option<i64>,
        expected: Option<i64>,
    },
}

pub struct ExactlyOnceSink {
    table: DeltaTable,
    spec: TableSpec,
    app_prefix: String,
    target_file_size: u64,
    commits: u64,
    /// The writer settings, decided on the first batch large enough to tell which columns to
    /// write without a dictionary (see [`crate::file_format`]): the values of keys, times and
    /// offsets rarely repeat, and a dictionary of them costs the writer and every narrow reader.
    properties: std::sync::OnceLock<WriterProperties>,
    /// Stored offsets read so far (see the module documentation).
    stored: std::sync::Mutex<StoredOffsets>,
    /// Stored offsets asked of delta-rs (cache misses), for tests.
    offset_scans: std::sync::atomic::AtomicU64,
}

/// `txn` versions by app id, valid as of table version `at`.
#[derive(Debug, Default)]
struct StoredOffsets {
    at: Option<i64>,
    by_app: HashMap<String, Option<i64>>,
}

impl StoredOffsets {
    /// The cache describes table version `version`.
    fn holds(&self, version: Option<i64>) -> bool {
        self.at.is_some() && self.at == version
    }
}

/// More new commits than this at one reload (a sink that sat idle while others wrote): ask
/// delta-rs again, which replays at most a checkpoint interval, instead of reading each one.
const MAX_COMMITS_READ: i64 = 64;

/// The `txn` actions of one commit file (one JSON action per line); `None` if a line is not
/// JSON (the caller then stops trusting its cache).
fn commit_transactions(commit: &[u8]) -> Option<Vec<(String, i64)>> {
    #[derive(serde::Deserialize)]
    struct Line {
        txn: Option<Txn>,
    }
    #[derive(serde::Deserialize)]
    struct Txn {
        #[serde(rename = "appId")]
        app_id: String,
        version: i64,
    }
    let mut found = Vec::new();
    for line in commit.split(|&b| b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let line: Line = serde_json::from_slice(line).ok()?;
        if let Some(txn) = line.txn {
            found.push((txn.app_id, txn.version));
        }
    }
    Some(found)
}

impl ExactlyOnceSink {
    /// Open (or create) the table; `app_prefix` names this sink in the `txn` app ids.
    pub async fn open(config: &LakeConfig, spec: TableSpec, app_prefix: &str) -> Result<Self> {
        let table = open_or_create(config, &spec).await?;
        Ok(ExactlyOnceSink {
            table,
            spec,
            app_prefix: app_prefix.to_string(),
            target_file_size: config.target_file_size_mb.saturating_mul(1024 * 1024),
            commits: 0,
            properties: std::sync::OnceLock::new(),
            stored: std::sync::Mutex::new(StoredOffsets::default()),
            offset_scans: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The table as of the last refresh or commit.
    pub fn table(&self) -> &DeltaTable {
        &self.table
    }

    pub fn table_name(&self) -> String {
        self.spec.name.to_string()
    }

    pub fn app_id(&self, topic: &str, partition: i32) -> String {
        format!("{}:{}:{}", self.app_prefix, topic, partition)
    }

    /// Current table version (after the last refresh or commit).
    pub fn version(&self) -> Option<i64> {
        self.table.version().and_then(|v| i64::try_from(v).ok())
    }

    pub fn commits(&self) -> u64 {
        self.commits
    }

    /// Reload the table to its latest version.
    pub async fn refresh(&mut self) -> Result<()> {
        let name = self.table_name();
        self.table
            .update_state()
            .await
            .map_err(delta_error(&name))?;
        self.catch_up_stored().await;
        Ok(())
    }

    /// Bring the stored-offset cache to the loaded version by reading the commits added since.
    async fn catch_up_stored(&mut self) {
        let now = self.version();
        let at = self
            .stored
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .at;
        let learned = match (at, now) {
            (Some(at), Some(now)) if at <= now && now - at <= MAX_COMMITS_READ => {
                self.transactions_between(at, now).await
            }
            _ => None,
        };
        let cache = self
            .stored
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        match learned {
            // In commit order, so the newest `txn` of an app id wins.
            Some(learned) => cache.by_app.extend(
                learned
                    .into_iter()
                    .map(|(app, version)| (app, Some(version))),
            ),
            // Part of the new commits unread: what they changed is unknown.
            None => cache.by_app.clear(),
        }
        cache.at = now;
    }

    /// This sink's commit at `version` stored `advances`: the cache moves onto it directly (it
    /// was at the version the commit was built on, one before), so the reload after the commit
    /// reads back only other writers' commits, not the one just written.
    fn learn_own_commit(&mut self, version: i64, advances: &[OffsetAdvance]) {
        let app_ids: Vec<String> = advances
            .iter()
            .map(|a| self.app_id(&a.topic, a.partition))
            .collect();
        let cache = self
            .stored
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if !cache.holds(version.checked_sub(1)) {
            return;
        }
        for (app_id, advance) in app_ids.into_iter().zip(advances) {
            cache.by_app.insert(app_id, Some(advance.to));
        }
        cache.at = Some(version);
    }

    /// The `txn` actions of commits `after + 1 ..= upto`, in commit order; `None` if any of them
    /// cannot be read.
    async fn transactions_between(&self, after: i64, upto: i64) -> Option<Vec<(String, i64)>> {
        let mut found = Vec::new();
        for version in after + 1..=upto {
            let version = u64::try_from(version).ok()?;
            let commit = self
                .table
                .log_store()
                .read_commit_entry(version)
                .await
                .ok()??;
            found.extend(commit_transactions(&commit)?);
        }
        Some(found)
    }

    /// The last offset stored for a partition in the loaded version.
    pub async fn stored_offset(&self, topic: &str, partition: i32) -> Result<Option<i64>> {
        let name = self.table_name();
        let app_id = self.app_id(topic, partition);
        let now = self.version();
        {
            // Nothing panics while it is held, and the map is valid whatever a panic left.
            let cache = self.stored.lock().unwrap_or_else(PoisonError::into_inner);
            if cache.holds(now) {
                if let Some(&stored) = cache.by_app.get(&app_id) {
                    return Ok(stored);
                }
            }
        }
        let snapshot = self.table.snapshot().map_err(delta_error(&name))?;
        self.offset_scans
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let stored = snapshot
            .transaction_version(self.table.log_store().as_ref(), app_id.as_str())
            .await
            .map_err(delta_error(&name))?;
        let mut cache = self.stored.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.holds(now) {
            cache.by_app.insert(app_id, stored);
        }
        Ok(stored)
    }

    /// Reload, then read the stored offsets of several partitions.
    pub async fn stored_offsets(
        &mut self,
        partitions: &[(String, i32)],
    ) -> Result<HashMap<(String, i32), Option<i64>>> {
        self.refresh().await?;
        let mut offsets = HashMap::new();
        for (topic, partition) in partitions {
            let stored = self.stored_offset(topic, *partition).await?;
            offsets.insert((topic.clone(), *partition), stored);
        }
        Ok(offsets)
    }

    async fn write_files(&self, batch: RecordBatch) -> Result<Vec<Add>> {
        let name = self.table_name();
        // A table may have columns this writer's spec lacks (an extra column another
        // configuration added): they are written as nulls.
        let layout = crate::read::evolved_schema(&self.table, &batch.schema())?;
        let batch =
            crate::read::conform(batch, &layout, |_| true).map_err(|e| LakeError::Read {
                what: name.clone(),
                message: e.to_string(),
            })?;
        let properties = match self.properties.get() {
            Some(decided) => decided.clone(),
            None if batch.num_rows() >= SAMPLE_ROWS => self
                .properties
                .get_or_init(|| writer_properties(&rarely_repeating_columns(&batch)).build())
                .clone(),
            None => writer_properties(&[]).build(),
        };
        let partition_columns = self
            .table
            .snapshot()
            .map_err(delta_error(&name))?
            .metadata()
            .partition_columns()
            .to_vec();
        let mut writer = RecordBatchWriter::for_table(&self.table)
            .map_err(delta_error(&name))?
            .with_writer_properties(properties)
            .with_target_file_size(self.target_file_size);
        // A live flush nearly always holds one partition (one date). delta-rs's own split
        // groups the rows by partition and copies every column into each group — for a
        // single group, a copy of the whole batch (perf: 2 % of the pipeline's CPU, inside the
        // flush that holds up consumption). Handing it the one partition's values skips that.
        match single_partition(&batch, &partition_columns) {
            Some(values) => writer
                .write_partition(batch, &values, WriteMode::Default)
                .await
                .map(|_| ()),
            None => writer.write(batch).await,
        }
        .map_err(delta_error(&name))?;
        writer.flush().await.map_err(delta_error(&name))
    }

    async fn delete_files(&self, adds: &[Add]) {
        let store = self.table.object_store();
        for add in adds {
            let path = deltalake::Path::from(add.path.as_str());
            if let Err(e) = store.delete(&path).await {
                tracing::warn!(table = %self.table_name(), file = %add.path, error = %e, "could not delete a file of a commit that did not land; vacuum will");
            }
        }
    }

    /// `None` when every partition still has the offset the buffer was built on; otherwise the
    /// first partition that moved, or `Some(landed)` when all already carry our offsets.
    async fn check_offsets(&self, advances: &[OffsetAdvance]) -> Result<OffsetCheck> {
        let mut all_landed = !advances.is_empty();
        for advance in advances {
            let stored = self
                .stored_offset(&advance.topic, advance.partition)
                .await?;
            if stored != Some(advance.to) {
                all_landed = false;
            }
            if stored != advance.from && stored != Some(advance.to) {
                return Ok(OffsetCheck::Moved {
                    topic: advance.topic.clone(),
                    partition: advance.partition,
                    stored,
                    expected: advance.from,
                });
            }
        }
        if all_landed {
            return Ok(OffsetCheck::Landed);
        }
        // Partly ours and partly not cannot come from one commit of ours: treat as moved.
        for advance in advances {
            let stored = self
                .stored_offset(&advance.topic, advance.partition)
                .await?;
            if stored != advance.from {
                return Ok(OffsetCheck::Moved {
                    topic: advance.topic.clone(),
                    partition: advance.partition,
                    stored,
                    expected: advance.from,
                });
            }
        }
        Ok(OffsetCheck::Unchanged)
    }

    /// Commit `batch` and the offsets it covers, exactly once (see the module docs).
    pub async fn commit(
        &mut self,
        batch: RecordBatch,
        advances: &[OffsetAdvance],
    ) -> Result<CommitOutcome> {
        let name = self.table_name();
        let mut adds: Option<Vec<Add>> = None;
        let mut pending = Some(batch);
        let mut last_error = None;
        for attempt in 0..MAX_COMMIT_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(50u64 << attempt.min(6))).await;
            }
            self.refresh().await?;
            let outcome = match self.check_offsets(advances).await? {
                OffsetCheck::Unchanged => None,
                // A failed attempt that in fact landed.
                OffsetCheck::Landed if attempt > 0 => {
                    self.commits += 1;
                    return Ok(CommitOutcome::Committed {
                        version: self.version().unwrap_or(0),
                    });
                }
                // Someone else already stored exactly these offsets before our first attempt.
                OffsetCheck::Landed => advances.first().map(|a| CommitOutcome::Conflict {
                    topic: a.topic.clone(),
                    partition: a.partition,
                    stored: Some(a.to),
                    expected: a.from,
                }),
                OffsetCheck::Moved {
                    topic,
                    partition,
                    stored,
                    expected,
                } => Some(CommitOutcome::Conflict {
                    topic,
                    partition,
                    stored,
                    expected,
                }),
            };
            if let Some(outcome) = outcome {
                if let Some(adds) = &adds {
                    self.delete_files(adds).await;
                }
                tracing::warn!(table = %name, ?outcome, "offsets moved under this sink; buffer dropped");
                return Ok(outcome);
            }
            if adds.is_none() {
                if let Some(batch) = pending.take() {
                    // An empty batch commits only the offsets (a table that had nothing to
                    // write for these records still records that it has seen them).
                    adds = Some(if batch.num_rows() == 0 {
                        Vec::new()
                    } else {
                        self.write_files(batch).await?
                    });
                }
            }
            let actions: Vec<Action> = adds.iter().flatten().cloned().map(Action::Add).collect();
            let now_ms = i64::try_from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis(),
            )
            .unwrap_or(i64::MAX);
            let transactions = advances
                .iter()
                .map(|a| {
                    Transaction::new_with_last_update(
                        self.app_id(&a.topic, a.partition),
                        a.to,
                        Some(now_ms),
                    )
                })
                .collect();
            let properties = CommitProperties::default()
                .with_application_transactions(transactions)
                .with_max_retries(0);
            let snapshot = self.table.snapshot().map_err(delta_error(&name))?;
            let result = CommitBuilder::from(properties)
                .with_actions(actions)
                .build(
                    Some(snapshot),
                    self.table.log_store(),
                    DeltaOperation::Write {
                        mode: SaveMode::Append,
                        partition_by: if self.spec.partition_columns.is_empty() {
                            None
                        } else {
                            Some(self.spec.partition_columns.clone())
                        },
                        predicate: None,
                    },
                )
                .await;
            match result {
                Ok(finalized) => {
                    self.commits += 1;
                    let version = i64::try_from(finalized.version()).unwrap_or(i64::MAX);
                    self.learn_own_commit(version, advances);
                    self.refresh().await?;
                    return Ok(CommitOutcome::Committed { version });
                }
                Err(e) => {
                    tracing::warn!(table = %name, attempt, error = %e, "delta commit failed; reloading to see whether it landed");
                    last_error = Some(e);
                }
            }
        }
        Err(LakeError::Delta {
            table: name,
            source: Box::new(last_error.unwrap_or_else(|| {
                deltalake::DeltaTableError::Generic("commit attempts exhausted".into())
            })),
        })
    }
}

enum OffsetCheck {
    Unchanged,
    Landed,
    Moved {
        topic: String,
        partition: i32,
        stored: Option<i64>,
        expected: Option<i64>,
    },
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use deltalake::arrow::array::Int64Array;
    use deltalake::arrow::datatypes::{DataType, Field, Schema};
    use marketlake_schemas::names::L2_QUARANTINE;

    use super::*;

    fn dated_batch(schema: &Arc<Schema>, rows: &[(i64, &str)]) -> RecordBatch {
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
            ],
        )
        .unwrap()
    }

    fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> &'a T {
        batch
            .column_by_name(name)
            .and_then(|c| c.as_any().downcast_ref::<T>())
            .unwrap()
    }

    /// A table of `(n, trade_date)` partitioned by date, under `root`.
    fn dated_table(root: &std::path::Path) -> (LakeConfig, Arc<Schema>, TableSpec) {
        let config = LakeConfig {
            root: root.to_path_buf(),
            ..LakeConfig::default()
        };
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("trade_date", DataType::Utf8, false),
        ]));
        let spec = TableSpec {
            name: L2_QUARANTINE,
            schema: schema.clone(),
            partition_columns: vec!["trade_date".into()],
            description: "test",
        };
        (config, schema, spec)
    }

    /// The cache of stored offsets follows other writers' commits (it reads every commit added
    /// since it last looked), so a stale writer is still refused.
    #[tokio::test]
    async fn stored_offsets_follow_commits_of_other_writers() {
        let dir = tempfile::tempdir().unwrap();
        let (config, schema, spec) = dated_table(dir.path());
        let advance = |from: Option<i64>, to: i64, partition: i32| OffsetAdvance {
            topic: "t".into(),
            partition,
            from,
            to,
        };
        let batch = || dated_batch(&schema, &[(1, "2026-01-05")]);
        let mut a = ExactlyOnceSink::open(&config, spec.clone(), "s")
            .await
            .unwrap();
        let mut b = ExactlyOnceSink::open(&config, spec, "s").await.unwrap();
        // Both have read (and cached) partition 0 as empty.
        a.refresh().await.unwrap();
        b.refresh().await.unwrap();
        assert_eq!(a.stored_offset("t", 0).await.unwrap(), None);
        assert_eq!(b.stored_offset("t", 0).await.unwrap(), None);
        for (from, to) in [(None, 5), (Some(5), 9)] {
            let outcome = a.commit(batch(), &[advance(from, to, 0)]).await.unwrap();
            assert!(matches!(outcome, CommitOutcome::Committed { .. }));
        }
        assert_eq!(a.stored_offset("t", 0).await.unwrap(), Some(9));
        let scans =
            |sink: &ExactlyOnceSink| sink.offset_scans.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            scans(&a),
            1,
            "after the first lookup, A's own commits answer from the cache"
        );
        // B built a buffer on "nothing stored": refused, and it now sees A's offset.
        let outcome = b.commit(batch(), &[advance(None, 3, 0)]).await.unwrap();
        assert!(
            matches!(
                outcome,
                CommitOutcome::Conflict {
                    stored: Some(9),
                    ..
                }
            ),
            "{outcome:?}"
        );
        assert_eq!(b.stored_offset("t", 0).await.unwrap(), Some(9));
        assert_eq!(scans(&b), 1, "B learned A's offsets from A's commits");
        assert_eq!(b.stored_offset("t", 1).await.unwrap(), None);
        // A commit of B on another partition, then A sees both.
        let outcome = b.commit(batch(), &[advance(None, 4, 1)]).await.unwrap();
        assert!(matches!(outcome, CommitOutcome::Committed { .. }));
        a.refresh().await.unwrap();
        assert_eq!(a.stored_offset("t", 1).await.unwrap(), Some(4));
        assert_eq!(a.stored_offset("t", 0).await.unwrap(), Some(9));
        // The cache agrees with delta-rs's own answer.
        let fresh = ExactlyOnceSink::open(&config, a.spec.clone(), "s")
            .await
            .unwrap();
        assert_eq!(fresh.stored_offset("t", 0).await.unwrap(), Some(9));
        assert_eq!(fresh.stored_offset("t", 1).await.unwrap(), Some(4));
    }

    #[test]
    fn commit_transactions_reads_txn_lines_and_refuses_garbage() {
        let commit = br#"{"commitInfo":{"timestamp":1}}
{"txn":{"appId":"s:t:0","version":7,"lastUpdated":1}}
{"add":{"path":"a.parquet","size":1}}
{"txn":{"appId":"s:t:1","version":3}}
"#;
        assert_eq!(
            commit_transactions(commit),
            Some(vec![("s:t:0".to_string(), 7), ("s:t:1".to_string(), 3)])
        );
        assert_eq!(commit_transactions(b"{\"txn\":"), None);
        assert_eq!(commit_transactions(b"\n\n"), Some(vec![]));
    }

    /// A batch of one date goes to delta-rs pre-partitioned, one of several dates through its
    /// own split; either way every row lands in its own date's partition.
    #[tokio::test]
    async fn one_date_and_mixed_date_batches_land_in_their_partitions() {
        let dir = tempfile::tempdir().unwrap();
        let (config, schema, spec) = dated_table(dir.path());
        let one_date = dated_batch(&schema, &[(1, "2026-01-05"), (2, "2026-01-05")]);
        let mixed = dated_batch(
            &schema,
            &[(3, "2026-01-06"), (4, "2026-01-05"), (5, "2026-01-06")],
        );
        let mut sink = ExactlyOnceSink::open(&config, spec, "test").await.unwrap();
        for (i, batch) in [one_date, mixed].into_iter().enumerate() {
            let advance = OffsetAdvance {
                topic: "t".into(),
                partition: 0,
                from: (i > 0).then_some(i as i64),
                to: i as i64 + 1,
            };
            let outcome = sink.commit(batch, &[advance]).await.unwrap();
            assert!(matches!(outcome, CommitOutcome::Committed { .. }));
        }
        let table = crate::read::load_table(&config, L2_QUARANTINE, None)
            .await
            .unwrap();
        let mut rows = Vec::new();
        for batch in crate::read::read_rows(&table).await.unwrap() {
            let n = column::<Int64Array>(&batch, "n");
            let date = column::<StringArray>(&batch, "trade_date");
            for row in 0..batch.num_rows() {
                rows.push((n.value(row), date.value(row).to_string()));
            }
        }
        rows.sort();
        let expected: Vec<(i64, String)> = [
            (1, "2026-01-05"),
            (2, "2026-01-05"),
            (3, "2026-01-06"),
            (4, "2026-01-05"),
            (5, "2026-01-06"),
        ]
        .iter()
        .map(|(n, d)| (*n, d.to_string()))
        .collect();
        assert_eq!(rows, expected);
        let mut paths: Vec<String> =
            std::fs::read_dir(dir.path().join(L2_QUARANTINE.relative_path()))
                .unwrap()
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|name| name.starts_with("trade_date="))
                .collect();
        paths.sort();
        assert_eq!(paths, ["trade_date=2026-01-05", "trade_date=2026-01-06"]);
    }
}
