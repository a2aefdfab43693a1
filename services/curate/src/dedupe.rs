//! Replay de-duplication by raw Kafka position.
//!
//! After a crash the enriched topic is re-read from an offset that may be behind what the restored
//! state already holds (the state is saved with a Delta commit; consumer offsets are advisory), so
//! the same L2 rows arrive again. Every L2 row names its raw record
//! (`lineage.raw_topic/raw_partition/raw_offset`) and enrichment preserves raw order per raw
//! partition, so "highest raw offset applied per raw partition" identifies a replay exactly and
//! costs one entry per raw partition. One raw record may yield several L2 rows, so the keys
//! (trade or news keys) applied at the highest offset are kept too.

use std::collections::{BTreeMap, BTreeSet};

use marketlake_schemas::l2::Lineage;
use serde::{Deserialize, Serialize};

/// Per raw topic and partition: the highest raw offset applied and the row keys applied at it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetDedupe {
    partitions: BTreeMap<String, BTreeMap<i32, Applied>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Applied {
    offset: i64,
    keys: BTreeSet<String>,
}

impl OffsetDedupe {
    /// True (and remembered) when the row is new; false when it is a replay.
    pub fn admit(&mut self, lineage: &Lineage, key: &str) -> bool {
        let partition = self
            .partitions
            .entry(lineage.raw_topic.clone())
            .or_default();
        match partition.get_mut(&lineage.raw_partition) {
            Some(applied) if lineage.raw_offset < applied.offset => false,
            Some(applied) if lineage.raw_offset == applied.offset => {
                applied.keys.insert(key.to_string())
            }
            _ => {
                partition.insert(
                    lineage.raw_partition,
                    Applied {
                        offset: lineage.raw_offset,
                        keys: BTreeSet::from([key.to_string()]),
                    },
                );
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(topic: &str, partition: i32, offset: i64) -> Lineage {
        Lineage {
            source_id: "s".into(),
            source_uri: "u".into(),
            source_position: 0,
            raw_topic: topic.into(),
            raw_partition: partition,
            raw_offset: offset,
        }
    }

    #[test]
    fn skips_positions_at_or_below_the_highest_applied_per_partition() {
        let mut d = OffsetDedupe::default();
        assert!(d.admit(&at("raw.trades", 0, 5), "a"));
        assert!(
            d.admit(&at("raw.trades", 0, 5), "b"),
            "second row of one raw record"
        );
        assert!(!d.admit(&at("raw.trades", 0, 5), "a"));
        assert!(!d.admit(&at("raw.trades", 0, 4), "z"));
        assert!(
            d.admit(&at("raw.trades", 1, 1), "c"),
            "partitions are independent"
        );
        assert!(
            d.admit(&at("raw.news", 0, 1), "c"),
            "topics are independent"
        );
        assert!(d.admit(&at("raw.trades", 0, 6), "a"));
        let json = serde_json::to_string(&d).unwrap();
        let back: OffsetDedupe = serde_json::from_str(&json).unwrap();
        assert_eq!(back, d);
    }
}
