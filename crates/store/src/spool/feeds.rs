//! The feeds of the spooling sink's transactions ([`BatchFeed`]): spooled
//! batches read back one after another, and the queue's batches kept in
//! hand until their transaction commits.

use super::positions::positions_of;
use super::table::Spool;
use crate::sink::BatchFeed;
use crate::sink::{Batch, RunContext};
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
/// at `budget` bytes of records held. Tailed files' read positions come
/// along: they are stored as tentative just before the commit
/// ([`super::positions`]).
pub struct HeldFeed<'f> {
    inner: &'f mut dyn BatchFeed,
    pub held: Vec<Batch>,
    bytes: usize,
    budget: usize,
    spool: &'f Spool,
    ctx: &'f RunContext,
    first: &'f Batch,
    /// Whether tentative positions were stored.
    pub tentative: bool,
}

impl<'f> HeldFeed<'f> {
    pub fn new(
        inner: &'f mut dyn BatchFeed,
        budget: usize,
        spool: &'f Spool,
        ctx: &'f RunContext,
        first: &'f Batch,
    ) -> HeldFeed<'f> {
        HeldFeed {
            inner,
            held: Vec::new(),
            bytes: 0,
            budget,
            spool,
            ctx,
            first,
            tentative: false,
        }
    }
}

impl BatchFeed for HeldFeed<'_> {
    fn next(&mut self) -> Option<Batch> {
        if self.bytes >= self.budget {
            return None;
        }
        self.inner.next()
    }

    fn put_back(&mut self, batch: Batch) {
        self.inner.put_back(batch);
    }

    fn sent(&mut self, batch: Batch) {
        self.bytes += batch.heap_bytes();
        self.held.push(batch);
    }

    fn before_commit(&mut self) -> bool {
        if !self.inner.before_commit() {
            return false;
        }
        let positions = positions_of(std::iter::once(self.first).chain(self.held.iter()));
        if positions.is_empty() {
            return true;
        }
        self.tentative = self.spool.write_tentative(self.ctx, &positions).is_ok();
        self.tentative
    }
}
