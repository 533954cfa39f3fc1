//! What a store is: the [`Sink`] every store implements and the [`Batch`]
//! it takes — records, events, progress, metric samples and run states of
//! one run, each with the key that makes a batch written twice land once.

use crate::limits::COALESCE_BYTES;
use pmon_core::record::{Event, LogRecord, Metric, ProgressUpdate};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// Which run the records of a batch belong to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunContext {
    pub experiment_id: String,
    pub run_id: String,
}

/// A log record with its place in the run's output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeqRecord {
    /// With `seq`, the record's idempotency key within its run: the stream
    /// name for program output, the file identity for tailed files.
    pub origin: Arc<str>,
    pub seq: u64,
    pub record: LogRecord,
}

/// A metric sample with its idempotency key within its run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeqMetric {
    pub seq: u64,
    pub metric: Metric,
}

/// Records, events, progress states, metrics and run states delivered together.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    pub logs: Vec<SeqRecord>,
    pub events: Vec<Event>,
    pub progress: Vec<ProgressUpdate>,
    /// Metric samples (spool rows written before metrics existed have none).
    #[serde(default)]
    pub metrics: Vec<SeqMetric>,
    /// The run's registry row, for stores that do not share the local registry.
    #[serde(default)]
    pub runs: Vec<pmon_core::run::Run>,
    /// File read positions to commit with this batch (tail).
    #[serde(default)]
    pub checkpoints: Vec<Checkpoint>,
}

/// How far a file has been read, by identity; see `source::tail`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub dev: u64,
    pub ino: u64,
    pub head: Vec<u8>,
    pub generation: u64,
    pub path: String,
    pub offset: u64,
    /// The previous generation's head and read offset (copytruncate).
    #[serde(default)]
    pub earlier: Option<(Vec<u8>, u64)>,
    /// The position may be stored after the records it follows, in another
    /// transaction: a file that is only ever appended to (a holder's capture
    /// file), whose re-read records land on the keys they had. A tailed
    /// file's may not (a copytruncate copy is recognised by its position).
    #[serde(default)]
    pub may_lag: bool,
}

impl Checkpoint {
    /// The origin the records of the file at this position carry.
    pub fn origin(&self) -> String {
        file_origin(self.dev, self.ino, self.generation)
    }
}

/// A tailed file's records' origin: `file:<dev>:<inode>:<generation>` (a
/// truncation starts a new generation; see `source::tail`).
pub fn file_origin(dev: u64, ino: u64, generation: u64) -> String {
    format!("file:{dev}:{ino}:{generation}")
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.logs.is_empty()
            && self.events.is_empty()
            && self.progress.is_empty()
            && self.metrics.is_empty()
            && self.runs.is_empty()
            && self.checkpoints.is_empty()
    }

    /// About how much memory the batch holds: its records' text and their
    /// fixed parts (events, progress and metrics are small and few).
    pub fn heap_bytes(&self) -> usize {
        const EACH: usize = std::mem::size_of::<SeqRecord>();
        let logs: usize = self.logs.iter().map(|r| EACH + r.record.text_bytes()).sum();
        logs + 256
            * (self.events.len() + self.progress.len() + self.metrics.len() + self.runs.len())
            + self
                .checkpoints
                .iter()
                .map(|c| 128 + c.head.len() + c.path.len())
                .sum::<usize>()
    }

    /// Every file position in the batch may be stored after its records.
    pub fn checkpoints_may_lag(&self) -> bool {
        self.checkpoints.iter().all(|c| c.may_lag)
    }

    /// Adds copies of `other`'s parts other than its log records and read
    /// positions (a transaction writes them after its records).
    pub fn add_rest(&mut self, other: &Batch) {
        self.events.extend_from_slice(&other.events);
        self.progress.extend_from_slice(&other.progress);
        self.metrics.extend_from_slice(&other.metrics);
        self.runs.extend_from_slice(&other.runs);
    }

    pub fn append(&mut self, mut other: Batch) {
        self.logs.append(&mut other.logs);
        self.events.append(&mut other.events);
        self.progress.append(&mut other.progress);
        self.metrics.append(&mut other.metrics);
        self.runs.append(&mut other.runs);
        self.checkpoints.append(&mut other.checkpoints);
    }
}

/// A destination for batches.
pub trait Sink: Send {
    fn write(&mut self, ctx: &RunContext, batch: &Batch) -> Result<(), SinkError>;
    /// Whether a write of `batch` may go on taking the batches queued
    /// behind it, in one transaction ([`BatchFeed`]).
    fn takes_more(&self, _batch: &Batch) -> bool {
        false
    }
    /// Writes `batch` and what `feed` adds while the transaction is open.
    fn write_fed(&mut self, _ctx: &RunContext, batch: Batch, _feed: &mut dyn BatchFeed) -> Fed {
        Fed::Unwritten(batch)
    }
    /// What one coalesced write (one that does not take more as it goes)
    /// takes at most of the queue.
    fn coalesce_bytes(&self) -> usize {
        COALESCE_BYTES
    }
    /// Called when no batch has arrived for a while (replays, retries).
    fn idle(&mut self) {}
    /// Records waiting in a spool for their real destination.
    fn pending(&mut self) -> u64 {
        0
    }
    /// The run is over and every batch written: a last try, bounded by
    /// `deadline`, to ship what waits in a spool. Returns the records still
    /// waiting (and has told the user how they will be shipped).
    fn finish(&mut self, _deadline: std::time::Instant) -> u64 {
        0
    }
}

/// What [`Sink::write_fed`] did.
pub enum Fed {
    /// The records stored.
    Written(u64),
    /// Not stored: to be written with [`Sink::write`] (which spools it, say).
    Unwritten(Batch),
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("could not write to the SQLite store: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

impl SinkError {
    /// The store's disk is full: worth waiting for, not a reason to drop.
    pub fn is_disk_full(&self) -> bool {
        match self {
            SinkError::Sqlite(e) => e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull),
        }
    }
}

/// Where an open transaction takes the batches that follow its first.
pub trait BatchFeed {
    /// The next batch, if one is ready now or within a moment.
    fn next(&mut self) -> Option<Batch>;
    /// A batch from `next` that the transaction could not take: the first
    /// of the next transaction.
    fn put_back(&mut self, batch: Batch);
    /// A batch whose records went into the transaction (the feed keeps it
    /// if it must be written again should the transaction fail).
    fn sent(&mut self, batch: Batch);
    /// How long the transaction goes on taking batches.
    fn open_for(&self) -> Duration {
        OPEN_FOR
    }
    /// Called just before the commit; false rolls the transaction back
    /// (what must be stored elsewhere first could not be).
    fn before_commit(&mut self) -> bool {
        true
    }
}

/// How long a transaction goes on taking batches: its records become
/// queryable only when it commits (the latency goal is 100 ms at p99).
pub const OPEN_FOR: Duration = Duration::from_millis(50);
