//! `pmon-store`: where records are delivered and read back — the embedded
//! SQLite store, PostgreSQL, the spool between them, the run registry.
//!
//! What a store is ([`Sink`], the [`Batch`] it takes) is in `sink.rs`; this
//! file only names the parts.
//!
//!
//! The processing thread hands finished [`Batch`]es to a [`SinkWorker`], which
//! owns the store on its own thread so that a slow disk never stalls parsing.
//! [`Batcher`] decides when a batch is finished (size, age, urgency).
//!
//! Every record carries its run id, source and a sequence number; the stores
//! keep them unique, so writing a batch twice stores it once.

mod batch;
pub mod limits;
pub mod postgres;
mod queue;
pub mod registry;
pub mod retention;
mod sink;
pub mod spool;
pub mod sqlite;
mod worker;

pub use batch::{Batcher, BatcherSettings};
pub use limits::{COALESCE_BYTES, QUEUE_BYTES};
pub use queue::{batch_queue, BatchReceiver, BatchSender};
pub use sink::{
    file_origin, Batch, BatchFeed, Checkpoint, Fed, RunContext, SeqMetric, SeqRecord, Sink,
    SinkError,
};
pub use sqlite::SqliteStore;
pub use worker::{SinkStats, SinkWorker};
