//! Group health: noticing partitions that nobody in a consumer group consumes.
//!
//! Seen on tansu 0.6 after SIGKILLs: a restarted member was left with no partitions, or with a
//! part of them, for over a minute while a dead member kept the rest. The member cannot see that
//! in its own records (it just goes quiet), so a sink looks, every interval, at the partitions it
//! does not own: per partition, whether records wait there (high watermark past the offset
//! stored for it) and whether its stored offset moved, which it does while some live member
//! commits it. It rejoins the group when a partition has had records waiting and no commit for a
//! whole interval.
//!
//! Per partition, not summed: with a dead member holding one partition, the live members'
//! commits on the others would move a sum and hide it. And owning nothing is no reason by
//! itself: in a healthy group with more members than partitions the spare members own nothing
//! while the others commit, and rejoining would rebalance the whole group every interval.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::PartitionKey;

/// What waits on the partitions a member does not own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unowned {
    /// Offsets between each one's stored offset and its high watermark, summed (for the log).
    pub lag: i64,
    /// The partitions with records waiting, each with its stored offset (-1 when none).
    pub waiting: Vec<(PartitionKey, i64)>,
}

impl Unowned {
    /// Add one partition not owned: `stored` is the last offset stored for it (the next to
    /// read is one after), `low` and `high` its watermarks.
    pub fn add(&mut self, key: &PartitionKey, stored: Option<i64>, low: i64, high: i64) {
        let lag = (high - stored.map_or(low, |s| s + 1)).max(0);
        if lag > 0 {
            self.lag += lag;
            self.waiting.push((key.clone(), stored.unwrap_or(-1)));
        }
    }
}

/// Decides, once per interval, whether a member should rejoin its group.
#[derive(Debug)]
pub struct GroupWatch {
    every: Duration,
    last_look: Instant,
    /// Per waiting partition: its stored offset and when that value was first seen.
    seen: HashMap<PartitionKey, (i64, Instant)>,
}

impl GroupWatch {
    pub fn new(every: Duration) -> Self {
        GroupWatch {
            every,
            last_look: Instant::now(),
            seen: HashMap::new(),
        }
    }

    /// True once per interval: time to look at the unowned partitions.
    pub fn due(&mut self) -> bool {
        if self.last_look.elapsed() < self.every {
            return false;
        }
        self.last_look = Instant::now();
        true
    }

    /// The decision for one look, logged: `unowned` is what waits on the partitions not owned,
    /// or why it could not be looked up (then no rejoin; the next look retries). A partition
    /// first seen waiting is only noted; it counts as stuck once a later look finds the same
    /// stored offset at least an interval after it was first seen. After a `true` the next
    /// look starts afresh.
    pub fn should_rejoin<E: std::fmt::Display>(
        &mut self,
        unowned: std::result::Result<Unowned, E>,
    ) -> bool {
        let unowned = match unowned {
            Ok(unowned) => unowned,
            Err(e) => {
                tracing::warn!(error = %e, "group health check failed; will retry");
                return false;
            }
        };
        let now = Instant::now();
        let mut stuck = None;
        let mut seen = HashMap::with_capacity(unowned.waiting.len());
        for (key, stored) in unowned.waiting {
            let since = match self.seen.get(&key) {
                Some(&(before, since)) if before == stored => {
                    if now.duration_since(since) >= self.every && stuck.is_none() {
                        stuck = Some(key.clone());
                    }
                    since
                }
                _ => now,
            };
            seen.insert(key, (stored, since));
        }
        match stuck {
            Some(partition) => {
                tracing::warn!(
                    %partition,
                    lag = unowned.lag,
                    "records wait on a partition nobody has committed for an interval; rejoining the consumer group"
                );
                self.seen.clear();
                true
            }
            None => {
                self.seen = seen;
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(n: i32) -> PartitionKey {
        PartitionKey {
            topic: "raw.trades".into(),
            partition: n,
        }
    }

    /// Each `(partition, stored)` with records waiting up to offset 10.
    fn waiting(partitions: &[(i32, Option<i64>)]) -> Result<Unowned, String> {
        let mut unowned = Unowned::default();
        for &(n, stored) in partitions {
            unowned.add(&partition(n), stored, 0, 10);
        }
        Ok(unowned)
    }

    #[test]
    fn rejoins_when_an_unowned_partition_stops_moving() {
        let mut watch = GroupWatch::new(Duration::ZERO);
        assert!(
            !watch.should_rejoin(waiting(&[(0, Some(3))])),
            "first look: nothing to compare with"
        );
        assert!(
            !watch.should_rejoin(waiting(&[(0, Some(5))])),
            "its owner is committing"
        );
        assert!(
            watch.should_rejoin(waiting(&[(0, Some(5))])),
            "nobody committed it since the last look"
        );
        assert!(
            !watch.should_rejoin(waiting(&[(0, Some(5))])),
            "a rejoin starts the comparison afresh"
        );
    }

    #[test]
    fn one_stuck_partition_is_not_hidden_by_others_moving() {
        let mut watch = GroupWatch::new(Duration::ZERO);
        assert!(!watch.should_rejoin(waiting(&[(0, Some(1)), (1, Some(4))])));
        assert!(
            watch.should_rejoin(waiting(&[(0, Some(6)), (1, Some(4))])),
            "partition 1 has a dead owner while partition 0 moves"
        );
    }

    #[test]
    fn owning_nothing_while_others_commit_is_healthy() {
        let mut watch = GroupWatch::new(Duration::ZERO);
        for stored in [1, 4, 8] {
            assert!(!watch.should_rejoin(waiting(&[(0, Some(stored))])));
        }
        assert!(
            !watch.should_rejoin(waiting(&[(0, Some(9))])),
            "nothing waits"
        );
    }

    #[test]
    fn a_partition_counts_as_stuck_only_after_a_whole_interval() {
        let mut watch = GroupWatch::new(Duration::from_secs(3_600));
        assert!(!watch.should_rejoin(waiting(&[(0, None)])));
        assert!(
            !watch.should_rejoin(waiting(&[(0, None)])),
            "unchanged, but for less than an interval"
        );
    }

    #[test]
    fn a_failed_look_never_rejoins() {
        let mut watch = GroupWatch::new(Duration::ZERO);
        assert!(!watch.should_rejoin(Err::<Unowned, _>("broker away")));
    }

    #[test]
    fn counts_lag_from_the_low_watermark_when_nothing_is_stored() {
        let mut unowned = Unowned::default();
        unowned.add(&partition(0), None, 4, 10);
        unowned.add(&partition(1), Some(7), 0, 10);
        unowned.add(&partition(2), Some(20), 0, 10);
        assert_eq!(unowned.lag, 6 + 2);
        assert_eq!(
            unowned.waiting,
            vec![(partition(0), -1), (partition(1), 7)],
            "a partition with nothing waiting is not watched"
        );
    }

    #[test]
    fn looks_once_per_interval() {
        let mut watch = GroupWatch::new(Duration::from_secs(3_600));
        assert!(!watch.due());
        let mut watch = GroupWatch::new(Duration::ZERO);
        assert!(watch.due());
    }
}
