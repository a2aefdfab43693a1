//! Group health: noticing that a consumer-group member owns too little.
//!
//! Seen on tansu 0.6 after SIGKILLs: a restarted member was left with no partitions, or with a
//! part of them, for over a minute while a dead member kept the rest. The member cannot see that
//! in its own records (it just goes quiet), so a sink looks, every interval, at the partitions it
//! does not own: the records waiting there (high watermark past the offset stored for them) and
//! the sum of their stored offsets, which moves while some live member commits them. It rejoins
//! the group when records wait and nobody committed any of them since the last look.
//!
//! Owning nothing alone is no reason: in a healthy group with more members than partitions the
//! spare members own nothing while the others commit, and rejoining would rebalance the whole
//! group every interval. A member that owns nothing looks again sooner (a quarter interval), so a
//! stuck one still rejoins quickly.

use std::time::{Duration, Instant};

/// What waits on the partitions a member does not own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unowned {
    /// Offsets between each one's stored offset and its high watermark, summed.
    pub lag: i64,
    /// Their stored offsets summed (a partition with none counts -1): moves when they are
    /// committed by whoever owns them.
    pub stored_sum: i64,
}

impl Unowned {
    /// Add one partition not owned: `stored` is the last offset stored for it (the next to
    /// read is one after), `low` and `high` its watermarks.
    pub fn add(&mut self, stored: Option<i64>, low: i64, high: i64) {
        self.stored_sum += stored.unwrap_or(-1);
        self.lag += (high - stored.map_or(low, |s| s + 1)).max(0);
    }
}

/// Decides, once per interval, whether a member should rejoin its group.
#[derive(Debug)]
pub struct GroupWatch {
    every: Duration,
    /// Until the next look: `every`, or a quarter of it while the member owns nothing.
    next_look: Duration,
    last_look: Instant,
    last_stored_sum: Option<i64>,
}

impl GroupWatch {
    pub fn new(every: Duration) -> Self {
        GroupWatch {
            every,
            next_look: every,
            last_look: Instant::now(),
            last_stored_sum: None,
        }
    }

    /// True once per interval: time to look at the unowned partitions.
    pub fn due(&mut self) -> bool {
        if self.last_look.elapsed() < self.next_look {
            return false;
        }
        self.last_look = Instant::now();
        true
    }

    /// The decision for one look, logged: `unowned` is what waits on the partitions not owned,
    /// or why it could not be looked up (then no rejoin; the next look retries). The first look
    /// only takes the stored offsets to compare with; after a `true` the next look starts afresh.
    pub fn should_rejoin<E: std::fmt::Display>(
        &mut self,
        owns_nothing: bool,
        unowned: std::result::Result<Unowned, E>,
    ) -> bool {
        let unowned = match unowned {
            Ok(unowned) => unowned,
            Err(e) => {
                tracing::warn!(error = %e, "group health check failed; will retry");
                return false;
            }
        };
        self.next_look = if owns_nothing {
            (self.every / 4).max(Duration::from_secs(1)).min(self.every)
        } else {
            self.every
        };
        let stalled = self.last_stored_sum == Some(unowned.stored_sum);
        if unowned.lag > 0 && stalled {
            tracing::warn!(
                lag = unowned.lag,
                owns_nothing,
                "records wait on partitions nobody is consuming; rejoining the consumer group"
            );
            self.last_stored_sum = None;
            true
        } else {
            self.last_stored_sum = Some(unowned.stored_sum);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(stored: Option<i64>, high: i64) -> Result<Unowned, String> {
        let mut unowned = Unowned::default();
        unowned.add(stored, 0, high);
        Ok(unowned)
    }

    #[test]
    fn owning_nothing_while_others_commit_is_healthy() {
        let mut watch = GroupWatch::new(Duration::ZERO);
        assert!(
            !watch.should_rejoin(true, waiting(Some(1), 10)),
            "first look"
        );
        assert!(
            !watch.should_rejoin(true, waiting(Some(4), 10)),
            "committed"
        );
        assert!(
            !watch.should_rejoin(true, waiting(Some(8), 10)),
            "committed"
        );
        assert!(watch.should_rejoin(true, waiting(Some(8), 10)), "stalled");
        assert!(
            !watch.should_rejoin(true, waiting(Some(9), 10)),
            "a rejoin starts afresh"
        );
        assert!(
            !watch.should_rejoin(true, waiting(Some(9), 10)),
            "nothing waits"
        );
    }

    #[test]
    fn owning_nothing_looks_again_sooner() {
        let mut watch = GroupWatch::new(Duration::from_secs(20));
        assert!(!watch.should_rejoin(true, waiting(None, 10)));
        assert_eq!(watch.next_look, Duration::from_secs(5));
        assert!(!watch.should_rejoin(false, waiting(Some(3), 10)));
        assert_eq!(watch.next_look, Duration::from_secs(20));
        let mut watch = GroupWatch::new(Duration::from_secs(2));
        assert!(!watch.should_rejoin(true, waiting(None, 10)));
        assert_eq!(watch.next_look, Duration::from_secs(1));
    }

    #[test]
    fn rejoins_when_unowned_partitions_stop_moving() {
        let mut watch = GroupWatch::new(Duration::ZERO);
        assert!(
            !watch.should_rejoin(false, waiting(Some(3), 10)),
            "first look: nothing to compare with"
        );
        assert!(
            !watch.should_rejoin(false, waiting(Some(5), 10)),
            "their owner is committing"
        );
        assert!(
            watch.should_rejoin(false, waiting(Some(5), 10)),
            "nobody committed them since the last look"
        );
        assert!(
            !watch.should_rejoin(false, waiting(Some(5), 10)),
            "a rejoin starts the comparison afresh"
        );
    }

    #[test]
    fn a_failed_look_never_rejoins() {
        let mut watch = GroupWatch::new(Duration::ZERO);
        assert!(!watch.should_rejoin(true, Err::<Unowned, _>("broker away")));
    }

    #[test]
    fn counts_lag_from_the_low_watermark_when_nothing_is_stored() {
        let mut unowned = Unowned::default();
        unowned.add(None, 4, 10);
        unowned.add(Some(7), 0, 10);
        unowned.add(Some(20), 0, 10);
        assert_eq!(unowned.lag, 6 + 2);
        assert_eq!(unowned.stored_sum, -1 + 7 + 20);
    }

    #[test]
    fn looks_once_per_interval() {
        let mut watch = GroupWatch::new(Duration::from_secs(3_600));
        assert!(!watch.due());
        let mut watch = GroupWatch::new(Duration::ZERO);
        assert!(watch.due());
    }
}
