//! The in-memory buffer of one table between two commits: rows plus, per Kafka partition, the
//! offset range they cover. Pure bookkeeping, no I/O.

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

/// Buffered rows with the partition and offset each was consumed at.
pub type Rows<R> = Vec<(R, PartitionKey, i64)>;

#[derive(Debug)]
pub struct TableBuffer<R> {
    pub rows: Rows<R>,
    pub spans: BTreeMap<PartitionKey, Span>,
    pub bytes: usize,
    pub oldest: Option<Instant>,
}

impl<R> Default for TableBuffer<R> {
    fn default() -> Self {
        TableBuffer {
            rows: Vec::new(),
            spans: BTreeMap::new(),
            bytes: 0,
            oldest: None,
        }
    }
}

impl<R> TableBuffer<R> {
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Add a row consumed at `offset` of `key`; `stored` is the partition's committed offset.
    pub fn push(
        &mut self,
        row: R,
        key: PartitionKey,
        offset: i64,
        stored: Option<i64>,
        bytes: usize,
    ) {
        self.spans
            .entry(key.clone())
            .and_modify(|span| span.to = offset)
            .or_insert(Span {
                from: stored,
                to: offset,
            });
        self.rows.push((row, key, offset));
        self.bytes += bytes;
        self.oldest.get_or_insert_with(Instant::now);
    }

    /// Drop everything buffered for these partitions (they were revoked or conflicted).
    pub fn drop_partitions(&mut self, keys: &[PartitionKey]) -> usize {
        let before = self.rows.len();
        self.rows.retain(|(_, key, _)| !keys.contains(key));
        for key in keys {
            self.spans.remove(key);
        }
        if self.rows.is_empty() {
            self.bytes = 0;
            self.oldest = None;
        }
        before - self.rows.len()
    }

    pub fn advances(&self) -> Vec<OffsetAdvance> {
        self.spans
            .iter()
            .map(|(key, span)| OffsetAdvance {
                topic: key.topic.clone(),
                partition: key.partition,
                from: span.from,
                to: span.to,
            })
            .collect()
    }

    /// Empty the buffer, returning its rows and spans. The next buffer starts with room for as
    /// many rows as this one held, so it is not regrown (copied) row by row.
    pub fn take(&mut self) -> (Rows<R>, BTreeMap<PartitionKey, Span>) {
        self.bytes = 0;
        self.oldest = None;
        let room = self.rows.len();
        (
            std::mem::replace(&mut self.rows, Vec::with_capacity(room)),
            std::mem::take(&mut self.spans),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: i32) -> PartitionKey {
        PartitionKey {
            topic: "raw.trades".into(),
            partition: p,
        }
    }

    #[test]
    fn spans_start_at_the_stored_offset_and_end_at_the_last_row() {
        let mut buffer = TableBuffer::default();
        buffer.push("a", key(0), 10, Some(9), 1);
        buffer.push("b", key(1), 0, None, 1);
        buffer.push("c", key(0), 11, Some(9), 1);
        let advances = buffer.advances();
        assert_eq!(advances.len(), 2);
        assert_eq!((advances[0].from, advances[0].to), (Some(9), 11));
        assert_eq!((advances[1].from, advances[1].to), (None, 0));
    }

    #[test]
    fn dropping_a_partition_keeps_the_others() {
        let mut buffer = TableBuffer::default();
        buffer.push("a", key(0), 10, Some(9), 1);
        buffer.push("b", key(1), 0, None, 1);
        assert_eq!(buffer.drop_partitions(&[key(0)]), 1);
        assert_eq!(buffer.len(), 1);
        assert_eq!(buffer.advances().len(), 1);
        assert_eq!(buffer.drop_partitions(&[key(1)]), 1);
        assert!(buffer.is_empty() && buffer.oldest.is_none());
    }
}
