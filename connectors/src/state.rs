//! Per-source resume state, kept as a small JSON file under the state directory.
//!
//! A file source remembers how many bytes of each stream are published *and acknowledged*; a
//! polled feed remembers the item ids it has published and its HTTP validators. State is written
//! atomically (temp file, fsync, rename) so a crash leaves either the old or the new state.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{ConnectorError, Result};

/// How many feed item ids are remembered for de-duplication (oldest forgotten first).
pub const MAX_SEEN_IDS: usize = 200_000;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SourceState {
    /// Acknowledged byte position per stream (file path or URL).
    #[serde(default)]
    pub positions: BTreeMap<String, u64>,
    /// Item ids already published, oldest first.
    #[serde(default)]
    pub seen_ids: VecDeque<String>,
    /// Next sequence number for sources without byte positions (feed items).
    #[serde(default)]
    pub next_sequence: u64,
    #[serde(default)]
    pub etag: Option<String>,
    #[serde(default)]
    pub last_modified: Option<String>,
    #[serde(skip)]
    seen_index: HashSet<String>,
}

impl SourceState {
    pub fn has_seen(&self, id: &str) -> bool {
        self.seen_index.contains(id)
    }

    pub fn remember(&mut self, id: String) {
        if self.seen_index.insert(id.clone()) {
            self.seen_ids.push_back(id);
            while self.seen_ids.len() > MAX_SEEN_IDS {
                if let Some(old) = self.seen_ids.pop_front() {
                    self.seen_index.remove(&old);
                }
            }
        }
    }
}

/// Loads and saves the state of one source.
#[derive(Debug, Clone)]
pub struct StateStore {
    path: PathBuf,
}

impl StateStore {
    pub fn new(state_dir: &Path, source_id: &str) -> Self {
        StateStore {
            path: state_dir.join(format!("{source_id}.json")),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn load(&self) -> Result<SourceState> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(SourceState::default()),
            Err(source) => return Err(self.io(source)),
        };
        let mut state: SourceState =
            serde_json::from_str(&text).map_err(|e| ConnectorError::Unreadable {
                what: format!("source state {}", self.path.display()),
                reason: format!("{e}; delete the file to replay the source from the start"),
            })?;
        state.seen_index = state.seen_ids.iter().cloned().collect();
        Ok(state)
    }

    pub fn save(&self, state: &SourceState) -> Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| self.io(e))?;
        }
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec(state).map_err(|e| ConnectorError::Unreadable {
            what: "source state".into(),
            reason: e.to_string(),
        })?;
        {
            use std::io::Write;
            let mut file = std::fs::File::create(&tmp).map_err(|e| self.io(e))?;
            file.write_all(&bytes).map_err(|e| self.io(e))?;
            file.sync_all().map_err(|e| self.io(e))?;
        }
        std::fs::rename(&tmp, &self.path).map_err(|e| self.io(e))
    }

    fn io(&self, source: std::io::Error) -> ConnectorError {
        ConnectorError::Io {
            path: self.path.display().to_string(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_rebuilds_its_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path(), "feed");
        let mut state = store.load().unwrap();
        assert_eq!(state, SourceState::default());
        state.remember("guid-1".into());
        state.remember("guid-1".into());
        state.positions.insert("file:///a".into(), 42);
        store.save(&state).unwrap();
        let loaded = store.load().unwrap();
        assert!(loaded.has_seen("guid-1"));
        assert_eq!(loaded.seen_ids.len(), 1);
        assert_eq!(loaded.positions["file:///a"], 42);
    }
}
