//! The in-memory buffer of one table between two commits: the rows (as Arrow columns under
//! construction, so a record is copied once, from the client into its columns) plus, per Kafka
//! partition, the offset range they cover. Pure bookkeeping, no I/O.

use std::collections::BTreeMap;
use std::time::Instant;

use marketlake_kafka::PartitionKey;
use marketlake_lake::OffsetAdvance;

/// The offsets one buffer covers for one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Stored offset the buffer builds on.
    pub from: Option<i64>,
    /// Last buffered offset.
    pub to: i64,
}

/// The rows one partition added to a buffer since the last take. A partition dropped (revoked,
/// or its commit conflicted) keeps its entry, marked dropped, because its rows are already in
/// the columns: they are left out when the batch is built. If it comes back, it gets a new entry.
#[derive(Debug)]
struct Entry {
    key: PartitionKey,
    span: Span,
    rows: usize,
    bytes: usize,
    dropped: bool,
}

#[derive(Debug)]
pub struct TableBuffer<C> {
    columns: C,
    entries: Vec<Entry>,
    /// Per row of `columns`: the index of its entry.
    row_entries: Vec<u32>,
    /// Rows and payload bytes not dropped.
    rows: usize,
    pub bytes: usize,
    pub oldest: Option<Instant>,
}

impl<C: Default> Default for TableBuffer<C> {
    fn default() -> Self {
        TableBuffer::new(C::default())
    }
}

/// What [`TableBuffer::take`] hands to a commit.
#[derive(Debug)]
pub struct Taken<C> {
    pub columns: C,
    /// One flag per row of `columns` when some rows belong to dropped partitions (left out of
    /// the batch), `None` when every row is kept.
    pub keep: Option<Vec<bool>>,
    pub spans: BTreeMap<PartitionKey, Span>,
    pub rows: usize,
    pub bytes: usize,
}

/// The offset advances a commit of these spans stores.
fn advances_of(spans: &BTreeMap<PartitionKey, Span>) -> Vec<OffsetAdvance> {
    spans
        .iter()
        .map(|(key, span)| OffsetAdvance {
            topic: key.topic.clone(),
            partition: key.partition,
            from: span.from,
            to: span.to,
        })
        .collect()
}

impl<C> Taken<C> {
    pub fn advances(&self) -> Vec<OffsetAdvance> {
        advances_of(&self.spans)
    }
}

impl<C> TableBuffer<C> {
    pub fn new(columns: C) -> Self {
        TableBuffer {
            columns,
            entries: Vec::new(),
            row_entries: Vec::new(),
            rows: 0,
            bytes: 0,
            oldest: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    /// Add a row consumed at `offset` of `topic`/`partition`: `append` writes it into the
    /// columns. `stored` gives the partition's committed offset; it is asked only when the
    /// partition starts a span in this buffer.
    pub fn push(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        bytes: usize,
        stored: impl FnOnce(&PartitionKey) -> Option<i64>,
        append: impl FnOnce(&mut C),
    ) {
        let found = self
            .entries
            .iter()
            .rposition(|e| !e.dropped && e.key.partition == partition && e.key.topic == topic);
        let index = match found {
            Some(index) => index,
            None => {
                let key = PartitionKey {
                    topic: topic.to_string(),
                    partition,
                };
                let from = stored(&key);
                self.entries.push(Entry {
                    key,
                    span: Span { from, to: offset },
                    rows: 0,
                    bytes: 0,
                    dropped: false,
                });
                self.entries.len() - 1
            }
        };
        let Some(entry) = self.entries.get_mut(index) else {
            return;
        };
        append(&mut self.columns);
        entry.span.to = offset;
        entry.rows += 1;
        entry.bytes += bytes;
        self.row_entries
            .push(u32::try_from(index).unwrap_or(u32::MAX));
        self.rows += 1;
        self.bytes += bytes;
        self.oldest.get_or_insert_with(Instant::now);
    }

    /// Drop everything buffered for these partitions (they were revoked or conflicted). When
    /// nothing live is left, the columns are replaced by `fresh()` so the dropped rows do not
    /// stay in memory until a commit that would never come for an empty buffer.
    pub fn drop_partitions(&mut self, keys: &[PartitionKey], fresh: impl FnOnce() -> C) -> usize {
        let mut dropped = 0;
        for entry in self.entries.iter_mut() {
            if !entry.dropped && keys.contains(&entry.key) {
                entry.dropped = true;
                dropped += entry.rows;
                self.rows -= entry.rows;
                self.bytes -= entry.bytes;
            }
        }
        if self.rows == 0 {
            self.oldest = None;
            if !self.row_entries.is_empty() {
                self.columns = fresh();
                self.entries.clear();
                self.row_entries.clear();
                self.bytes = 0;
            }
        }
        dropped
    }

    /// The live spans, by partition.
    fn spans(&self) -> BTreeMap<PartitionKey, Span> {
        self.entries
            .iter()
            .filter(|e| !e.dropped)
            .map(|e| (e.key.clone(), e.span))
            .collect()
    }

    pub fn advances(&self) -> Vec<OffsetAdvance> {
        advances_of(&self.spans())
    }

    /// Empty the buffer, returning its columns, which rows to keep and the spans; `next`
    /// becomes the columns of the following buffer.
    pub fn take(&mut self, next: C) -> Taken<C> {
        let keep = self.entries.iter().any(|e| e.dropped).then(|| {
            self.row_entries
                .iter()
                .map(|&i| {
                    self.entries
                        .get(i as usize)
                        .is_some_and(|entry| !entry.dropped)
                })
                .collect()
        });
        let taken = Taken {
            columns: std::mem::replace(&mut self.columns, next),
            keep,
            spans: self.spans(),
            rows: self.rows,
            bytes: self.bytes,
        };
        self.entries.clear();
        self.row_entries.clear();
        self.rows = 0;
        self.bytes = 0;
        self.oldest = None;
        taken
    }

    /// The columns rows are appended to (to size the next buffer like this one).
    pub fn columns(&self) -> &C {
        &self.columns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(buffer: &mut TableBuffer<Vec<&'static str>>, row: &'static str, p: i32, offset: i64) {
        buffer.push(
            "raw.trades",
            p,
            offset,
            1,
            |_| (p == 0).then_some(9),
            |c| c.push(row),
        );
    }

    fn key(p: i32) -> PartitionKey {
        PartitionKey {
            topic: "raw.trades".into(),
            partition: p,
        }
    }

    #[test]
    fn spans_start_at_the_stored_offset_and_end_at_the_last_row() {
        let mut buffer = TableBuffer::default();
        push(&mut buffer, "a", 0, 10);
        push(&mut buffer, "b", 1, 0);
        push(&mut buffer, "c", 0, 11);
        let advances = buffer.advances();
        assert_eq!(advances.len(), 2);
        assert_eq!((advances[0].from, advances[0].to), (Some(9), 11));
        assert_eq!((advances[1].from, advances[1].to), (None, 0));
        let taken = buffer.take(Vec::new());
        assert_eq!(taken.columns, vec!["a", "b", "c"]);
        assert!(taken.keep.is_none());
        assert!(buffer.is_empty() && buffer.advances().is_empty());
    }

    #[test]
    fn dropping_a_partition_keeps_the_others_and_a_returning_partition_starts_afresh() {
        let mut buffer = TableBuffer::default();
        push(&mut buffer, "a", 0, 10);
        push(&mut buffer, "b", 1, 0);
        assert_eq!(buffer.drop_partitions(&[key(0)], Vec::new), 1);
        assert_eq!(buffer.len(), 1);
        assert_eq!(buffer.advances().len(), 1);
        // Partition 0 comes back (re-assigned): its new rows are kept, its old one is not.
        push(&mut buffer, "c", 0, 10);
        push(&mut buffer, "d", 0, 11);
        assert_eq!(buffer.len(), 3);
        let advances = buffer.advances();
        assert_eq!((advances[0].from, advances[0].to), (Some(9), 11));
        let taken = buffer.take(Vec::new());
        assert_eq!(taken.keep, Some(vec![false, true, true, true]));
        assert_eq!((taken.rows, taken.bytes), (3, 3));

        // Nothing live left: the dropped rows are released, not kept until a commit.
        let mut buffer = TableBuffer::default();
        push(&mut buffer, "a", 0, 10);
        assert_eq!(buffer.drop_partitions(&[key(0)], Vec::new), 1);
        assert!(buffer.is_empty() && buffer.oldest.is_none());
        assert!(buffer.columns().is_empty());
        push(&mut buffer, "b", 0, 10);
        let taken = buffer.take(Vec::new());
        assert_eq!((taken.columns, taken.keep), (vec!["b"], None));
    }
}
