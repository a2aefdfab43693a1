//! Parsed Parquet footers (and page indexes) of data files, kept across scans.
//!
//! A data file of a Delta table never changes once written (a new version adds new files), so
//! its footer — schema, row-group statistics, and for narrow reads the offset and column
//! indexes — can be parsed once and reused by every later request. On a compacted table a
//! one-symbol query otherwise spends a good part of its time fetching and decoding the page
//! indexes of the few files it opens.
//!
//! The cache is bounded by the in-memory size of what it holds; when full, the entries used
//! longest ago go first. Entries are keyed by table location, file path and size.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use deltalake::parquet::arrow::arrow_reader::ArrowReaderMetadata;

/// One cached footer.
struct Entry {
    metadata: ArrowReaderMetadata,
    /// Whether the page indexes (offset and column) were loaded with it.
    with_page_index: bool,
    bytes: usize,
    last_used: u64,
}

/// The cached footers and the memory they hold (kept with them, so it is never summed).
#[derive(Default)]
struct Held {
    entries: HashMap<String, Entry>,
    bytes: usize,
}

/// Footers of recently read data files, bounded by memory.
pub struct FooterCache {
    capacity_bytes: usize,
    clock: AtomicU64,
    held: Mutex<Held>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for FooterCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FooterCache")
            .field("capacity_bytes", &self.capacity_bytes)
            .field("held_bytes", &self.lock().bytes)
            .finish()
    }
}

/// What a cache holds and how often it answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FooterCacheStats {
    pub files: usize,
    pub bytes: usize,
    pub hits: u64,
    pub misses: u64,
}

impl FooterCache {
    /// A cache holding at most `capacity_bytes` of parsed footers (0: caches nothing).
    pub fn new(capacity_bytes: usize) -> FooterCache {
        FooterCache {
            capacity_bytes,
            clock: AtomicU64::new(0),
            held: Mutex::new(Held::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn key(table: &str, path: &str, size: u64) -> String {
        format!("{table}\u{0}{path}\u{0}{size}")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        // A panic while holding the lock cannot leave an entry half-written (inserts and
        // removals are single map operations), so a poisoned map is still usable.
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The footer of a file, when cached with the page indexes if `need_page_index`.
    pub fn get(
        &self,
        table: &str,
        path: &str,
        size: u64,
        need_page_index: bool,
    ) -> Option<ArrowReaderMetadata> {
        let now = self.clock.fetch_add(1, Ordering::Relaxed);
        let mut held = self.lock();
        let found = held
            .entries
            .get_mut(&Self::key(table, path, size))
            .filter(|e| e.with_page_index || !need_page_index)
            .map(|e| {
                e.last_used = now;
                e.metadata.clone()
            });
        drop(held);
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Keep a footer just read, evicting the least recently used ones beyond the capacity.
    pub fn put(
        &self,
        table: &str,
        path: &str,
        size: u64,
        metadata: &ArrowReaderMetadata,
        with_page_index: bool,
    ) {
        let bytes = metadata.metadata().memory_size();
        if bytes > self.capacity_bytes {
            return;
        }
        let now = self.clock.fetch_add(1, Ordering::Relaxed);
        let mut held = self.lock();
        let replaced = held.entries.insert(
            Self::key(table, path, size),
            Entry {
                metadata: metadata.clone(),
                with_page_index,
                bytes,
                last_used: now,
            },
        );
        held.bytes = held.bytes + bytes - replaced.map_or(0, |old| old.bytes);
        if held.bytes <= self.capacity_bytes {
            return;
        }
        let mut by_age: Vec<(u64, String)> = held
            .entries
            .iter()
            .map(|(k, e)| (e.last_used, k.clone()))
            .collect();
        by_age.sort_unstable();
        for (_, key) in by_age {
            if held.bytes <= self.capacity_bytes {
                break;
            }
            if let Some(gone) = held.entries.remove(&key) {
                held.bytes -= gone.bytes;
            }
        }
    }

    pub fn stats(&self) -> FooterCacheStats {
        let held = self.lock();
        FooterCacheStats {
            files: held.entries.len(),
            bytes: held.bytes,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use deltalake::arrow::array::Int64Array;
    use deltalake::arrow::datatypes::{DataType, Field, Schema};
    use deltalake::parquet::arrow::arrow_reader::ArrowReaderOptions;
    use deltalake::parquet::arrow::ArrowWriter;

    use super::*;
    use crate::RecordBatch;

    fn footer() -> ArrowReaderMetadata {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let batch =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![1, 2]))])
                .unwrap();
        let mut bytes = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut bytes, schema, None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        ArrowReaderMetadata::load(&bytes::Bytes::from(bytes), ArrowReaderOptions::new()).unwrap()
    }

    #[test]
    fn a_footer_without_page_indexes_does_not_serve_a_narrow_read() {
        let cache = FooterCache::new(1 << 20);
        let meta = footer();
        assert!(cache.get("t", "a.parquet", 10, false).is_none());
        cache.put("t", "a.parquet", 10, &meta, false);
        assert!(cache.get("t", "a.parquet", 10, false).is_some());
        assert!(cache.get("t", "a.parquet", 10, true).is_none());
        // Another table or another size is another file.
        assert!(cache.get("u", "a.parquet", 10, false).is_none());
        assert!(cache.get("t", "a.parquet", 11, false).is_none());
        cache.put("t", "a.parquet", 10, &meta, true);
        assert!(cache.get("t", "a.parquet", 10, true).is_some());
        let stats = cache.stats();
        assert_eq!((stats.files, stats.hits, stats.misses), (1, 2, 4));
    }

    #[test]
    fn the_least_recently_used_footers_go_first_when_full() {
        let meta = footer();
        let one = meta.metadata().memory_size();
        let cache = FooterCache::new(one * 2);
        cache.put("t", "a", 1, &meta, false);
        cache.put("t", "b", 1, &meta, false);
        assert!(cache.get("t", "a", 1, false).is_some());
        cache.put("t", "c", 1, &meta, false);
        assert!(cache.get("t", "a", 1, false).is_some());
        assert!(
            cache.get("t", "b", 1, false).is_none(),
            "b was used longest ago"
        );
        assert!(cache.get("t", "c", 1, false).is_some());
        assert!(cache.stats().bytes <= one * 2);
        // A cache of nothing keeps nothing.
        let none = FooterCache::new(0);
        none.put("t", "a", 1, &meta, false);
        assert!(none.get("t", "a", 1, false).is_none());
    }
}
