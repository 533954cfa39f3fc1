//! The feeds of the spooling sink's transactions ([`BatchFeed`]): spooled
//! batches read back one after another, and the queue's batches kept in
//! hand until their transaction commits.

use super::super::postgres::BatchFeed;
use super::super::{Batch, RunContext};
use super::table::{Spool, SpoolRows};
use std::time::Duration;

/// The spooled batches of one run that follow a row, read as the
/// transaction takes them: a replay holds one spooled row at a time, however
/// large its transactions.
pub struct SpoolFeed<'s> {
    spool: &'s Spool,
    ctx: &'s RunContext,
    /// The last row whose records went into the transaction.
    pub last: i64,
    /// The row `next` read last.
    reading: i64,
    /// Records sent from the rows after the first.
    pub records: u64,
}

impl<'s> SpoolFeed<'s> {
    pub fn new(spool: &'s Spool, ctx: &'s RunContext, first: i64) -> SpoolFeed<'s> {
        SpoolFeed {
            spool,
            ctx,
            last: first,
            reading: first,
            records: 0,
        }
    }
}

impl BatchFeed for SpoolFeed<'_> {
    fn next(&mut self) -> Option<Batch> {
        let (id, batch) = self.spool.next_of_run(self.last, self.ctx).ok()??;
        self.reading = id;
        Some(batch)
    }

    /// The row stays in the spool; the next transaction reads it again.
    fn put_back(&mut self, _batch: Batch) {}

    fn sent(&mut self, batch: Batch) {
        self.last = self.reading;
        self.records += batch.logs.len() as u64;
    }

    /// Replayed records are not waited for by anyone: a transaction may
    /// run to its full size.
    fn open_for(&self) -> Duration {
        Duration::from_secs(5)
    }
}

/// The queue's batches taken by a transaction, kept until it commits: if it
/// fails they are spooled, as a batch written alone would be. Stops taking
/// at `budget` bytes of records held.
pub struct HeldFeed<'f> {
    inner: &'f mut dyn BatchFeed,
    pub held: Vec<Batch>,
    bytes: usize,
    budget: usize,
}

impl<'f> HeldFeed<'f> {
    pub fn new(inner: &'f mut dyn BatchFeed, budget: usize) -> HeldFeed<'f> {
        HeldFeed {
            inner,
            held: Vec::new(),
            bytes: 0,
            budget,
        }
    }
}

impl BatchFeed for HeldFeed<'_> {
    fn next(&mut self) -> Option<Batch> {
        if self.bytes >= self.budget {
            return None;
        }
        let batch = self.inner.next()?;
        if super::holds_read_positions(&batch) {
            // A tailed file's positions go through the spool.
            self.inner.put_back(batch);
            return None;
        }
        Some(batch)
    }

    fn put_back(&mut self, batch: Batch) {
        self.inner.put_back(batch);
    }

    fn sent(&mut self, batch: Batch) {
        self.bytes += batch.heap_bytes();
        self.held.push(batch);
    }
}

/// Tailed batches taken by a transaction: each is spooled with its read
/// positions first (its own SQLite transaction, as a batch written alone
/// is), then sent from memory and dropped; the transaction's commit lets
/// their spool rows go. A file's position thus never lags what PostgreSQL
/// holds, and a failed transaction leaves every batch it took in the spool.
pub struct TailFeed<'f> {
    inner: &'f mut dyn BatchFeed,
    spool: &'f Spool,
    ctx: &'f RunContext,
    /// Spool bytes past which a batch is left to the ordinary write, which
    /// counts what does not fit.
    max_bytes: u64,
    /// The rows of the batch `next` spooled last.
    spooled: Option<SpoolRows>,
    /// The last row whose batch went into the transaction.
    pub last: i64,
    /// Records sent, and records spooled but left for a later transaction.
    pub records: u64,
    pub left_in_spool: u64,
}

impl<'f> TailFeed<'f> {
    pub fn new(
        inner: &'f mut dyn BatchFeed,
        spool: &'f Spool,
        ctx: &'f RunContext,
        max_bytes: u64,
        last: i64,
    ) -> TailFeed<'f> {
        TailFeed {
            inner,
            spool,
            ctx,
            max_bytes,
            spooled: None,
            last,
            records: 0,
            left_in_spool: 0,
        }
    }
}

impl BatchFeed for TailFeed<'_> {
    fn next(&mut self) -> Option<Batch> {
        let batch = self.inner.next()?;
        let roomy = self
            .spool
            .stats()
            .is_ok_and(|s| s.bytes.saturating_mul(2) < self.max_bytes);
        if !roomy || !super::holds_read_positions(&batch) {
            self.inner.put_back(batch);
            return None;
        }
        match self.spool.push_rows_within(self.ctx, &batch, u64::MAX) {
            Ok((rows, _)) => {
                self.spooled = Some(rows);
                Some(batch)
            }
            Err(_) => {
                // Written the ordinary way, which waits out a full disk.
                self.inner.put_back(batch);
                None
            }
        }
    }

    /// Spooled already: it waits there for the next transaction.
    fn put_back(&mut self, batch: Batch) {
        self.spooled = None;
        self.left_in_spool += batch.logs.len() as u64;
    }

    fn sent(&mut self, batch: Batch) {
        if let Some(rows) = self.spooled.take() {
            self.last = rows.last;
        }
        self.records += batch.logs.len() as u64;
    }
}
