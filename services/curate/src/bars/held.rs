//! The trades a symbol's bar windows hold, each stored once for every interval.
//!
//! Every interval (1 m, 5 m, 1 h, ...) needs the trades of its open windows, for corrections
//! and cancels (a high or low cannot be un-done from an aggregate). Each interval used to keep
//! its own ordered map of fills and its own trade-key index, so a trade was held once per
//! interval in two structures: most of curation's memory and much of its CPU (three hash
//! inserts and three tree inserts per trade). Here a trade is one [`Entry`] in a slab, found
//! by key through one map; a window holds only [`Member`] handles (8 bytes) and orders its
//! trades when it fires.
//!
//! **Intervals may hold different versions of one key.** A re-sent `New` whose window is final
//! for 1 m but open for 1 h replaces the first version in the 1 h interval only. So an entry
//! records which intervals hold it (a bit each), the versions of one key are chained, and a
//! lookup is "the version interval `i` holds". An entry is freed when no interval holds it;
//! its slot is reused under a new generation, so a window's stale handle to it is recognised
//! and skipped rather than read as another trade.

use foldhash::HashMap;

use crate::fill::{FillOrder, Px, SharedStr};

/// No next version in a key's chain.
const NONE: u32 = u32::MAX;

/// Most intervals one aggregator can hold: one bit each in [`Entry::intervals`].
pub(crate) const MAX_INTERVALS: usize = 64;

/// A handle to one held trade: its slot and the slot's generation when it was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Member {
    slot: u32,
    generation: u32,
}

#[derive(Debug, Clone)]
struct Entry {
    order: FillOrder,
    px: Px,
    symbol: SharedStr,
    /// Bit `i` set: interval `i` holds this trade. Zero: the slot is free.
    intervals: u64,
    generation: u32,
    /// The next held version of the same trade key, or [`NONE`].
    next_same_key: u32,
}

/// Entries per chunk of the slab, a power of two so that a slot splits with a shift.
const CHUNK_BITS: u32 = 12;
const CHUNK: usize = 1 << CHUNK_BITS;

/// The slab's entries in fixed-size chunks. One `Vec` per symbol (tens of thousands of entries
/// in an hour's bars, millions in a burst) copied all of them at each doubling, while the old
/// and the new copy were both resident, and then sat up to half empty; chunks grow without
/// moving what is held and leave at most one chunk unfilled. The first chunk grows from empty,
/// as a `Vec` does, so a symbol with few trades does not reserve a whole chunk (there is one
/// slab per symbol, and a master lists thousands).
#[derive(Debug, Clone, Default)]
struct Chunks {
    /// Every chunk but the last is full.
    chunks: Vec<Vec<Entry>>,
}

impl Chunks {
    fn len(&self) -> usize {
        self.chunks.len().saturating_sub(1) * CHUNK + self.chunks.last().map_or(0, Vec::len)
    }

    fn get(&self, slot: u32) -> Option<&Entry> {
        let slot = slot as usize;
        self.chunks.get(slot >> CHUNK_BITS)?.get(slot & (CHUNK - 1))
    }

    fn get_mut(&mut self, slot: u32) -> Option<&mut Entry> {
        let slot = slot as usize;
        self.chunks
            .get_mut(slot >> CHUNK_BITS)?
            .get_mut(slot & (CHUNK - 1))
    }

    /// Append `entry`; its slot is the length before.
    fn push(&mut self, entry: Entry) {
        match self.chunks.last_mut() {
            Some(chunk) if chunk.len() < CHUNK => chunk.push(entry),
            _ => {
                let mut chunk = if self.chunks.is_empty() {
                    Vec::new()
                } else {
                    Vec::with_capacity(CHUNK)
                };
                chunk.push(entry);
                self.chunks.push(chunk);
            }
        }
    }
}

/// The slab of held trades and the key index into it.
#[derive(Debug, Clone, Default)]
pub(super) struct HeldTrades {
    entries: Chunks,
    free: Vec<u32>,
    /// Trade key → the newest held version (the head of its chain).
    by_key: HashMap<SharedStr, u32>,
}

impl HeldTrades {
    /// Distinct trades held (a trade held by several intervals counts once).
    pub fn len(&self) -> usize {
        self.entries.len() - self.free.len()
    }

    /// The version of `trade_key` that interval `interval` holds.
    pub fn find(&self, trade_key: &str, interval: usize) -> Option<Member> {
        let mut slot = *self.by_key.get(trade_key)?;
        while let Some(entry) = self.entries.get(slot) {
            if entry.intervals & bit(interval) != 0 {
                return Some(Member {
                    slot,
                    generation: entry.generation,
                });
            }
            slot = entry.next_same_key;
        }
        None
    }

    /// Store a trade no interval holds yet; [`Self::hold`] it next.
    pub fn add(&mut self, order: FillOrder, px: Px, symbol: SharedStr) -> Member {
        let key = order.trade_key.clone();
        let next_same_key = self.by_key.get(&*key).copied().unwrap_or(NONE);
        // A free slot is always an entry of the slab (only `release` frees one).
        let reused = self
            .free
            .pop()
            .and_then(|slot| self.entries.get_mut(slot).map(|entry| (slot, entry)));
        let (slot, generation) = match reused {
            Some((slot, entry)) => {
                entry.order = order;
                entry.px = px;
                entry.symbol = symbol;
                entry.next_same_key = next_same_key;
                (slot, entry.generation)
            }
            None => {
                // A slab of 4 G trades is far beyond any memory this runs in.
                let slot = u32::try_from(self.entries.len()).unwrap_or(NONE - 1);
                self.entries.push(Entry {
                    order,
                    px,
                    symbol,
                    intervals: 0,
                    generation: 0,
                    next_same_key,
                });
                (slot, 0)
            }
        };
        self.by_key.insert(key, slot);
        Member { slot, generation }
    }

    /// Interval `interval` now holds `member`.
    pub fn hold(&mut self, member: Member, interval: usize) {
        if let Some(entry) = self.live_entry_mut(member) {
            entry.intervals |= bit(interval);
        }
    }

    /// The trade behind `member`, if interval `interval` still holds it.
    pub fn get(&self, member: Member, interval: usize) -> Option<(&FillOrder, &Px, &SharedStr)> {
        let entry = self.entries.get(member.slot)?;
        (entry.generation == member.generation && entry.intervals & bit(interval) != 0).then_some((
            &entry.order,
            &entry.px,
            &entry.symbol,
        ))
    }

    /// Interval `interval` no longer holds `member`; the trade is freed when no interval does.
    pub fn release(&mut self, member: Member, interval: usize) {
        let Some(entry) = self.live_entry_mut(member) else {
            return;
        };
        entry.intervals &= !bit(interval);
        if entry.intervals != 0 {
            return;
        }
        entry.generation = entry.generation.wrapping_add(1);
        let key = std::mem::take(&mut entry.order.trade_key);
        entry.symbol = SharedStr::default();
        let next = std::mem::replace(&mut entry.next_same_key, NONE);
        self.unlink(&key, member.slot, next);
        self.free.push(member.slot);
    }

    /// Take `slot` out of `key`'s chain.
    fn unlink(&mut self, key: &SharedStr, slot: u32, next: u32) {
        let Some(head) = self.by_key.get_mut(&**key) else {
            return;
        };
        if *head == slot {
            if next == NONE {
                self.by_key.remove(&**key);
            } else {
                *head = next;
            }
            return;
        }
        let mut at = *head;
        while let Some(entry) = self.entries.get_mut(at) {
            if entry.next_same_key == slot {
                entry.next_same_key = next;
                return;
            }
            at = entry.next_same_key;
        }
    }

    fn live_entry_mut(&mut self, member: Member) -> Option<&mut Entry> {
        self.entries
            .get_mut(member.slot)
            .filter(|e| e.generation == member.generation)
    }
}

fn bit(interval: usize) -> u64 {
    1u64.checked_shl(u32::try_from(interval).unwrap_or(u32::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(key: &str, t: i64) -> FillOrder {
        FillOrder {
            event_time_ns: t,
            received_at_ns: t,
            raw_partition: 0,
            raw_offset: t,
            trade_key: key.into(),
        }
    }

    fn px(price: i64) -> Px {
        Px { price, quantity: 1 }
    }

    #[test]
    fn one_entry_serves_every_interval_until_the_last_releases_it() {
        let mut held = HeldTrades::default();
        let a = held.add(order("a", 1), px(10), "IBM".into());
        held.hold(a, 0);
        held.hold(a, 2);
        assert_eq!(held.len(), 1);
        assert_eq!(held.find("a", 0), Some(a));
        assert_eq!(held.find("a", 1), None, "interval 1 never held it");
        held.release(a, 0);
        assert!(held.get(a, 0).is_none());
        assert_eq!(held.get(a, 2).map(|(_, p, _)| p.price), Some(10));
        held.release(a, 2);
        assert_eq!(held.len(), 0);
        assert_eq!(held.find("a", 2), None);
    }

    #[test]
    fn intervals_find_their_own_version_of_a_key() {
        let mut held = HeldTrades::default();
        let first = held.add(order("a", 1), px(10), "IBM".into());
        held.hold(first, 0);
        held.hold(first, 1);
        // Interval 1 replaces its version; interval 0 keeps the first.
        held.release(first, 1);
        let second = held.add(order("a", 2), px(20), "IBM".into());
        held.hold(second, 1);
        assert_eq!(held.find("a", 0), Some(first));
        assert_eq!(held.find("a", 1), Some(second));
        // Freeing the older version keeps the newer findable, and the other way round.
        held.release(first, 0);
        assert_eq!(held.find("a", 0), None);
        assert_eq!(held.find("a", 1), Some(second));
        let third = held.add(order("a", 3), px(30), "IBM".into());
        held.hold(third, 0);
        held.release(second, 1);
        assert_eq!(held.find("a", 0), Some(third));
        assert_eq!(held.find("a", 1), None);
    }

    #[test]
    fn a_reused_slot_does_not_answer_for_its_old_handle() {
        let mut held = HeldTrades::default();
        let a = held.add(order("a", 1), px(10), "IBM".into());
        held.hold(a, 0);
        held.release(a, 0);
        let b = held.add(order("b", 2), px(20), "IBM".into());
        held.hold(b, 0);
        assert_eq!(held.entries.len(), 1, "the freed slot is reused");
        assert!(held.get(a, 0).is_none(), "the stale handle reads nothing");
        held.release(a, 0);
        assert_eq!(held.get(b, 0).map(|(o, _, _)| &*o.trade_key), Some("b"));
    }

    #[test]
    fn trades_past_the_first_chunk_are_found_and_their_slots_reused() {
        let mut held = HeldTrades::default();
        let count = i64::try_from(CHUNK * 2 + 5).unwrap();
        let members: Vec<Member> = (0..count)
            .map(|t| {
                let m = held.add(order(&format!("t{t}"), t), px(t), "IBM".into());
                held.hold(m, 0);
                m
            })
            .collect();
        assert_eq!(held.entries.chunks.len(), 3);
        for (t, m) in (0..count).zip(&members) {
            assert_eq!(held.find(&format!("t{t}"), 0), Some(*m));
            assert_eq!(held.get(*m, 0).map(|(_, p, _)| p.price), Some(t));
        }
        // A slot in the second chunk, freed and taken again: same place, a new generation.
        let freed = members[CHUNK + 1];
        held.release(freed, 0);
        let again = held.add(order("new", count), px(-1), "IBM".into());
        assert_eq!(held.entries.len(), CHUNK * 2 + 5, "no new slot");
        assert_eq!(
            again,
            Member {
                slot: freed.slot,
                generation: freed.generation + 1
            }
        );
        held.hold(again, 0);
        assert!(held.get(freed, 0).is_none(), "the old handle reads nothing");
        assert_eq!(held.get(again, 0).map(|(_, p, _)| p.price), Some(-1));
        assert_eq!(held.find("new", 0), Some(again));
        assert_eq!(held.find(&format!("t{}", CHUNK + 1), 0), None);
    }
}
