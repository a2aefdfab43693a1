//! Where framed records go. The Kafka implementation lives in `marketlake-kafka`; this crate only
//! needs the contract, which keeps every format and the runtime testable without a broker.

use std::future::Future;
use std::sync::Mutex;

use marketlake_schemas::{DeadLetter, RawRecord};

use crate::{ConnectorError, Result};

/// A destination for raw records and dead letters.
pub trait RawSink: Send + Sync + 'static {
    /// Queue one record for publication; may wait while the producer queue is full.
    fn publish(&self, record: RawRecord) -> impl Future<Output = Result<()>> + Send;
    /// Queue one dead letter for `dlq.<source id>`.
    fn dead_letter(&self, letter: DeadLetter) -> impl Future<Output = Result<()>> + Send;
    /// Wait until everything queued so far is durably acknowledged. A source only advances its
    /// resume position after this returns `Ok`, which is what makes a replay resumable.
    fn flush(&self) -> impl Future<Output = Result<()>> + Send;
}

/// An in-memory sink: what conformance tests and `--dry-run` style checks publish into.
#[derive(Debug, Default)]
pub struct MemorySink {
    pub records: Mutex<Vec<RawRecord>>,
    pub dead_letters: Mutex<Vec<DeadLetter>>,
}

impl MemorySink {
    pub fn records(&self) -> Vec<RawRecord> {
        self.records.lock().map(|r| r.clone()).unwrap_or_default()
    }
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.dead_letters
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }
}

impl RawSink for MemorySink {
    async fn publish(&self, record: RawRecord) -> Result<()> {
        self.records
            .lock()
            .map_err(|_| ConnectorError::Sink("memory sink poisoned".into()))?
            .push(record);
        Ok(())
    }
    async fn dead_letter(&self, letter: DeadLetter) -> Result<()> {
        self.dead_letters
            .lock()
            .map_err(|_| ConnectorError::Sink("memory sink poisoned".into()))?
            .push(letter);
        Ok(())
    }
    async fn flush(&self) -> Result<()> {
        Ok(())
    }
}
