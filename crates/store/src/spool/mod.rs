//! The spool: where batches wait while PostgreSQL is unreachable.
//!
//! It lives in the same SQLite file as the embedded store (`pmon.db` in the data
//! dir), one row per batch with the batch as JSON, so a spooled batch carries
//! exactly the rows and idempotency keys it would have had. [`SpoolingSink`]
//! writes to PostgreSQL when it answers and to the spool when it does not;
//! spooled batches are replayed oldest first, each deleted only after
//! PostgreSQL has committed it, before any new batch goes to PostgreSQL. A crash
//! between the commit and the delete replays the batch again, which the
//! idempotency keys turn into a no-op: exactly once in the store.

mod feeds;
pub mod positions;
mod table;

use feeds::{HeldFeed, SpoolFeed};

pub use table::{Spool, SpoolRows, SpoolStats};

use crate::postgres::{PgError, PostgresStore};
use crate::sink::BatchFeed;
use crate::sink::{Batch, Fed, RunContext, Sink, SinkError};
use pmon_core::record::Event;
use serde_json::json;
use std::time::{Duration, Instant};

enum Link {
    Up,
    Down {
        retry_at: Instant,
        backoff: Duration,
    },
}

/// How long to wait before trying an unreachable PostgreSQL again: `first`,
/// doubling after each failure up to `max`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBackoff {
    pub first: Duration,
    pub max: Duration,
}

impl Default for RetryBackoff {
    fn default() -> Self {
        RetryBackoff {
            first: Duration::from_millis(500),
            max: Duration::from_secs(10),
        }
    }
}

/// PostgreSQL when it answers, the spool when it does not.
pub struct SpoolingSink {
    pg: PostgresStore,
    spool: Spool,
    max_bytes: u64,
    retry: RetryBackoff,
    link: Link,
    dropped: u64,
    warned_full: Option<Instant>,
    spool_path: String,
    /// Records in the spool as last counted (counting costs a query).
    known_pending: u64,
    /// Records replayed after an outage, not yet told in a `replay` event.
    replayed: ReplayTally,
    /// The last write: after `idle_disconnect()` without one, the
    /// connection is closed.
    last_write: Instant,
    /// The last refusal told to the user (each is said once).
    refusal_said: Option<String>,
}

/// How long a sink with nothing to write keeps its PostgreSQL connection.
const IDLE_DISCONNECT: Duration = Duration::from_secs(60);

/// `IDLE_DISCONNECT`, or `PMON_TEST_IDLE_DISCONNECT` (tests).
fn idle_disconnect() -> Duration {
    std::env::var("PMON_TEST_IDLE_DISCONNECT")
        .ok()
        .and_then(|t| pmon_core::config::parse_duration(&t).ok())
        .unwrap_or(IDLE_DISCONNECT)
}

impl SpoolingSink {
    pub fn new(
        pg: PostgresStore,
        spool: Spool,
        max_bytes: u64,
        retry: RetryBackoff,
        spool_path: String,
    ) -> SpoolingSink {
        SpoolingSink {
            pg,
            spool,
            max_bytes,
            retry,
            link: Link::Up,
            dropped: 0,
            warned_full: None,
            spool_path,
            known_pending: 1,
            replayed: ReplayTally::default(),
            last_write: Instant::now(),
            refusal_said: None,
        }
    }

    fn ready(&self) -> bool {
        match self.link {
            Link::Up => true,
            Link::Down { retry_at, .. } => Instant::now() >= retry_at,
        }
    }

    fn mark_down(&mut self, err: &PgError) {
        if err.is_refusal() {
            return self.mark_refused(err);
        }
        let backoff = match self.link {
            Link::Up => {
                eprintln!(
                    "pmon-agent: warning: {err}; records are spooled to {} and replayed when PostgreSQL answers again",
                    self.spool_path
                );
                self.retry.first
            }
            Link::Down { backoff, .. } => (backoff * 2).min(self.retry.max),
        };
        tracing::info!(target: "sink", error = %err, retry_in = ?backoff, "PostgreSQL down: spooling");
        self.link = Link::Down {
            retry_at: Instant::now() + backoff,
            backoff,
        };
    }

    /// The server turned the agent away for good: said once (again only if
    /// the reason changes), then tried again at the longest backoff, in
    /// case someone mends it (creates the database, fixes pg_hba.conf).
    fn mark_refused(&mut self, err: &PgError) {
        let reason = err.to_string();
        if self.refusal_said.as_deref() != Some(reason.as_str()) {
            eprintln!(
                "pmon-agent: warning: {reason}. Records are spooled to {} and shipped once PostgreSQL takes them (pmon-agent db check says what the agent gets)",
                self.spool_path
            );
            self.refusal_said = Some(reason);
        }
        tracing::info!(target: "sink", error = %err, retry_in = ?self.retry.max, "PostgreSQL refused: spooling");
        self.link = Link::Down {
            retry_at: Instant::now() + self.retry.max,
            backoff: self.retry.max,
        };
    }

    /// Replays the spool, oldest first. Stops at the first failure, or
    /// (with a deadline) once it has passed, leaving the rest for later.
    /// `in_hand` is a batch just spooled as `rows` and still in memory:
    /// when its turn comes it is shipped as it is, not read back and decoded.
    fn drain(
        &mut self,
        in_hand: Option<(SpoolRows, &RunContext, &Batch)>,
        deadline: Option<Instant>,
    ) -> Result<u64, PgError> {
        let mut replayed = 0;
        // After an outage, each run whose records come back gets a `replay`
        // event; a tailed batch passing through the spool in normal flow does not.
        let counting = matches!(self.link, Link::Down { .. }) || !self.replayed.runs.is_empty();
        let mut out_of_time = false;
        while let Ok(Some(oldest_id)) = self.spool.oldest_id() {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                out_of_time = true;
                break;
            }
            let rows;
            let shipped = match in_hand {
                Some((hand_rows, ctx, batch)) if hand_rows.first == oldest_id => {
                    rows = hand_rows;
                    let shipped = self.pg.write(ctx, batch).map(|()| batch.logs.len());
                    if let (true, Ok(records)) = (counting, &shipped) {
                        self.replayed.add(ctx, *records);
                    }
                    shipped
                }
                // Another agent sharing the data dir may have shipped
                // `oldest_id` meanwhile: delete what was shipped, by its own id.
                _ => match self.spool.oldest() {
                    Ok(Some((oldest, ctx, batch))) => {
                        let (shipped, taken) = self.ship_spooled(oldest, &ctx, &batch);
                        rows = taken;
                        if let (true, Ok(records)) = (counting, &shipped) {
                            self.replayed.add(&ctx, *records);
                        }
                        shipped
                    }
                    _ => break,
                },
            };
            match shipped {
                Ok(records) => replayed += records as u64,
                Err(e) => {
                    // Told once the database has taken the rest.
                    self.mark_down(&e);
                    return Err(e);
                }
            }
            let _ = self.spool.delete_rows(rows);
        }
        if out_of_time {
            // PostgreSQL answers; the rest waits for the next try.
            return Ok(replayed);
        }
        std::mem::take(&mut self.replayed).record(&mut self.pg, "automatic");
        if replayed > 0 || matches!(self.link, Link::Down { .. }) {
            if replayed > 0 && matches!(self.link, Link::Down { .. }) {
                eprintln!(
                    "pmon-agent: PostgreSQL at {} answers again; replayed {replayed} spooled records",
                    self.pg.display_url()
                );
            }
            tracing::info!(target: "sink", replayed, "PostgreSQL up: spool shipped");
            self.link = Link::Up;
            self.refusal_said = None;
        }
        Ok(replayed)
    }

    /// Spools a batch while PostgreSQL is down, within
    /// `logging.database.spool_max_bytes`: records past it are dropped and
    /// counted (the plain log file still has them), never events or run states.
    fn spool_batch(&mut self, ctx: &RunContext, batch: &Batch) -> Result<(), SinkError> {
        let stats = self.spool.stats()?;
        if stats.batches == 0 {
            let mut note = Batch::default();
            note.events.push(Event::now(
                "spool",
                json!({"reason": "PostgreSQL unreachable", "database": self.pg.display_url()}),
            ));
            self.spool.push(ctx, &note)?;
        }
        let room = self.max_bytes.saturating_sub(stats.bytes);
        let left_out = self.spool.push_within(ctx, batch, room)?;
        self.known_pending += batch.logs.len() as u64 - left_out;
        if left_out > 0 {
            self.spool_full(ctx, left_out, stats.bytes)?;
        }
        Ok(())
    }

    /// Counts records dropped for want of room; says so once, then at most
    /// every ten seconds (the terminal is the program's), with an event.
    fn spool_full(&mut self, ctx: &RunContext, dropped: u64, bytes: u64) -> Result<(), SinkError> {
        self.dropped += dropped;
        if self
            .warned_full
            .is_some_and(|t| t.elapsed() < Duration::from_secs(10))
        {
            return Ok(());
        }
        self.warned_full = Some(Instant::now());
        eprintln!(
            "pmon-agent: warning: the spool is full ({bytes} bytes, logging.database.spool_max_bytes); {} dropped so far (they are still in the plain log file)",
            pmon_core::text::plural(self.dropped, "record", "records")
        );
        let mut note = Batch::default();
        note.events.push(Event::now(
            "spool_full",
            json!({"dropped_records": self.dropped, "spool_bytes": bytes}),
        ));
        self.spool.push(ctx, &note)?;
        Ok(())
    }

    /// Records waiting in the spool, counted now: other agents sharing the
    /// data dir (a daemon's runs) may have spooled some since the last count.
    pub fn recount(&mut self) -> u64 {
        self.known_pending = self.spool.stats().map_or(self.known_pending, |s| s.pending);
        self.known_pending
    }

    /// Like [`SpoolingSink::replay_until`], but an unreachable PostgreSQL is
    /// only tried again once its retry backoff has run out.
    pub fn replay_when_due(&mut self, deadline: Instant) -> u64 {
        if !self.ready() {
            return self.known_pending;
        }
        self.replay_until(deadline)
    }

    /// Ships the spool, oldest first, until it is empty or `deadline` has
    /// passed; PostgreSQL is tried at once, whatever the retry backoff says.
    /// Returns the records still waiting.
    pub fn replay_until(&mut self, deadline: Instant) -> u64 {
        self.pg.set_deadline(Some(deadline));
        let _ = self.drain(None, Some(deadline));
        self.pg.set_deadline(None);
        self.pending()
    }

    /// Settles the read positions a tail of `experiment` left tentative
    /// (see [`positions`]): each is kept if PostgreSQL holds its file's last
    /// record of that transaction, else dropped, as it is when PostgreSQL
    /// cannot be asked. Returns how many were kept and dropped.
    pub fn settle_positions(&mut self, experiment: &str) -> Result<(usize, usize), SinkError> {
        let mut settled = (0, 0);
        // Asked once at most while it does not answer (each try may wait
        // for the connect timeout).
        let mut reachable = true;
        for t in self.spool.tentative(experiment)? {
            let keep = t.last_seq.is_none_or(|seq| {
                reachable
                    && match self.pg.ledger_holds(experiment, &t.run_id, &t.origin, seq) {
                        Ok(held) => held,
                        Err(_) => {
                            reachable = false;
                            false
                        }
                    }
            });
            self.spool.settle_one(experiment, &t, keep)?;
            if keep {
                settled.0 += 1;
            } else {
                settled.1 += 1;
            }
        }
        Ok(settled)
    }

    /// Ships everything spooled; for `spool replay`.
    pub fn replay_all(&mut self, progress: impl Fn(u64, u64)) -> Result<u64, PgError> {
        self.pg.connect()?;
        let total = self.spool.stats().map(|s| s.pending).unwrap_or(0);
        let mut done = 0;
        let mut tally = ReplayTally::default();
        while let Ok(Some((id, ctx, batch))) = self.spool.oldest() {
            let (shipped, rows) = self.ship_spooled(id, &ctx, &batch);
            let records = shipped?;
            done += records as u64;
            tally.add(&ctx, records);
            let _ = self.spool.delete_rows(rows);
            progress(done, total);
        }
        tally.record(&mut self.pg, "spool replay");
        Ok(done)
    }

    /// Writes spooled row `first` (`batch`) and the rows of its run that
    /// follow it, as one transaction takes them; returns the records stored
    /// and the rows that transaction covered (to delete once it committed).
    fn ship_spooled(
        &mut self,
        first: i64,
        ctx: &RunContext,
        batch: &Batch,
    ) -> (Result<usize, PgError>, SpoolRows) {
        let mut feed = SpoolFeed::new(&self.spool, ctx, first);
        let shipped = self
            .pg
            .write_fed(ctx, batch, Some(&mut feed))
            .map(|()| batch.logs.len() + feed.records as usize);
        let last = feed.last;
        (shipped, SpoolRows { first, last })
    }
}

/// Records replayed from the spool, per run, for the `replay` events.
#[derive(Default)]
struct ReplayTally {
    runs: Vec<(RunContext, u64)>,
}

impl ReplayTally {
    fn add(&mut self, ctx: &RunContext, records: usize) {
        if records == 0 {
            return;
        }
        match self.runs.iter_mut().find(|(c, _)| c == ctx) {
            Some((_, n)) => *n += records as u64,
            None => self.runs.push((ctx.clone(), records as u64)),
        }
    }

    /// One `replay` event per run. Best effort: the records are in already,
    /// and a database that fails again here is noticed by the next write.
    fn record(self, pg: &mut PostgresStore, by: &str) {
        for (ctx, records) in self.runs {
            let mut note = Batch::default();
            note.events
                .push(Event::now("replay", json!({"records": records, "by": by})));
            let _ = pg.write(&ctx, &note);
        }
    }
}

/// A batch with file read positions that must not lag its records: written
/// alone (PostgreSQL down, the spool not empty), it goes through the spool
/// (see `write`); in a transaction straight to PostgreSQL its positions are
/// stored as tentative first ([`positions`]).
fn holds_read_positions(batch: &Batch) -> bool {
    !batch.checkpoints.is_empty() && !batch.checkpoints_may_lag()
}

impl Sink for SpoolingSink {
    /// Straight to PostgreSQL (connected, nothing spooled): the transaction
    /// takes what queues up meanwhile.
    fn takes_more(&self, _batch: &Batch) -> bool {
        matches!(self.link, Link::Up) && self.pg.is_connected() && self.known_pending == 0
    }

    /// A write while PostgreSQL is down or records wait in the spool most
    /// likely goes into the spool, which holds more copies of it.
    fn coalesce_bytes(&self) -> usize {
        if matches!(self.link, Link::Up) && self.known_pending == 0 {
            crate::limits::COALESCE_BYTES
        } else {
            crate::limits::SPOOL_COALESCE_BYTES
        }
    }

    fn write_fed(&mut self, ctx: &RunContext, batch: Batch, feed: &mut dyn BatchFeed) -> Fed {
        self.last_write = Instant::now();
        if !(self.ready() && self.drain(None, None).is_ok()) {
            return Fed::Unwritten(batch);
        }
        let budget = crate::limits::HELD_BYTES;
        let mut held = HeldFeed::new(feed, budget, &self.spool, ctx, &batch);
        let shipped = self.pg.write_fed(ctx, &batch, Some(&mut held));
        let (taken, tentative) = (held.held, held.tentative);
        match shipped {
            Ok(()) => {
                let mut records = batch.logs.len() as u64;
                let mut positions = batch.checkpoints;
                for more in taken {
                    records += more.logs.len() as u64;
                    positions.extend(more.checkpoints);
                }
                // A capture file's position follows its records in
                // PostgreSQL (a crash between the two re-reads records onto
                // their keys); a tailed file's was stored as tentative.
                let saved = if tentative {
                    self.spool.commit_positions(ctx, &positions)
                } else {
                    self.spool.write_checkpoints(ctx, &positions)
                };
                if let Err(e) = saved {
                    tracing::warn!(target: "sink", error = %e, "read positions not saved");
                }
                Fed::Written(records)
            }
            Err(e) => {
                self.mark_down(&e);
                if tentative {
                    let _ = self.spool.drop_tentative(&ctx.experiment_id);
                }
                let mut unwritten = batch;
                for more in taken {
                    unwritten.append(more);
                }
                Fed::Unwritten(unwritten)
            }
        }
    }

    fn write(&mut self, ctx: &RunContext, batch: &Batch) -> Result<(), SinkError> {
        self.last_write = Instant::now();
        if holds_read_positions(batch) {
            // A file's read position must never lag what PostgreSQL holds (a
            // copytruncate copy is recognised by it after a restart), and two
            // databases cannot commit together. Unless they go straight to
            // PostgreSQL (`write_fed`, tentative positions), tailed batches go
            // through the spool: records and position in one SQLite transaction, then
            // to PostgreSQL, deleted from the spool only after its commit.
            // Within spool_max_bytes, like any batch: records past it are
            // dropped and counted (the file still holds them), the position
            // still advances.
            let stats = self.spool.stats()?;
            let room = self.max_bytes.saturating_sub(stats.bytes);
            let (rows, left_out) = self.spool.push_rows_within(ctx, batch, room)?;
            self.known_pending += batch.logs.len() as u64 - left_out;
            if left_out > 0 {
                self.spool_full(ctx, left_out, stats.bytes)?;
            }
            if self.ready() {
                // What was spooled is the batch as it is only if nothing was left out.
                let in_hand = (left_out == 0).then_some((rows, ctx, batch));
                let _ = self.drain(in_hand, None);
            }
            return Ok(());
        }
        if self.ready() && self.drain(None, None).is_ok() {
            match self.pg.write(ctx, batch) {
                // A capture file's position follows its records in PostgreSQL:
                // a crash between the two re-reads records onto their keys.
                Ok(()) => return self.spool.write_checkpoints(ctx, &batch.checkpoints),
                Err(e) => self.mark_down(&e),
            }
        }
        self.spool_batch(ctx, batch)
    }

    fn pending(&mut self) -> u64 {
        if matches!(self.link, Link::Up) && self.known_pending == 0 {
            return 0;
        }
        self.known_pending = self.spool.stats().map_or(self.known_pending, |s| s.pending);
        self.known_pending
    }

    fn idle(&mut self) {
        if self.ready() && self.spool.stats().is_ok_and(|s| s.batches > 0) {
            let _ = self.drain(None, None);
            self.last_write = Instant::now();
        }
        if self.pg.is_connected()
            && self.last_write.elapsed() >= idle_disconnect()
            && self.pending() == 0
        {
            self.pg.disconnect();
        }
    }

    /// One more try at PostgreSQL, whatever the retry backoff says, shipping
    /// the spool until `deadline`; then the user is told what is left and
    /// how it will be shipped.
    fn finish(&mut self, deadline: Instant) -> u64 {
        // Batches of metric samples, events or run states alone hold no
        // log record, but wait just the same.
        let waiting = self.pending() > 0 || self.spool.stats().is_ok_and(|s| s.batches > 0);
        if !waiting {
            return 0;
        }
        // Whole seconds: that is how the setting is written.
        let budget = Duration::from_secs(
            deadline
                .saturating_duration_since(Instant::now())
                .as_secs_f64()
                .round() as u64,
        );
        let _ = self.replay_until(deadline);
        let left = self.pending();
        if left > 0 {
            let why = match self.link {
                Link::Down { .. } if self.refusal_said.is_some() => {
                    "refused them (said above)".to_string()
                }
                Link::Down { .. } => "cannot be reached".to_string(),
                Link::Up => format!(
                    "did not take them all within logging.database.shutdown_timeout ({})",
                    humantime::format_duration(budget)
                ),
            };
            eprintln!(
                "pmon-agent: {} in the spool ({}): PostgreSQL at {} {why}. \
                 Ship them with `pmon-agent spool replay`; the next pmon-agent run with this data dir also ships them first.",
                pmon_core::text::plural(left, "record waits", "records wait"),
                self.spool_path,
                self.pg.display_url()
            );
        }
        left
    }
}

#[cfg(test)]
mod tests {
    use super::table::ROW_RECORDS;
    use super::*;
    use crate::sink::SeqRecord;
    use crate::sqlite::SqliteStore;
    use pmon_core::record::{LogRecord, StreamKind};

    fn batch(message: &str) -> Batch {
        Batch {
            logs: vec![SeqRecord {
                origin: "stdout".into(),
                seq: 0,
                record: LogRecord::plain(message.into(), StreamKind::Stdout, "stdout"),
            }],
            ..Batch::default()
        }
    }

    #[test]
    fn a_batch_this_version_cannot_read_is_passed_over_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, ctx) = spool_in(&dir);
        let first = spool.push(&ctx, &batch("first")).unwrap().first;
        spool
            .store
            .conn()
            .execute(
                "INSERT INTO pmon_spool (experiment_id, run_id, created_at, records, bytes, payload) VALUES ('e', 'r', '2026-11-27T10:00:00Z', 7, 9, X'7B6E6F74')",
                [],
            )
            .unwrap();
        let third = spool.push(&ctx, &batch("third")).unwrap().first;
        let mut shipped = Vec::new();
        while let Some((id, _, batch)) = spool.oldest().unwrap() {
            shipped.push((id, batch.logs[0].record.message.clone()));
            spool
                .delete_rows(SpoolRows {
                    first: id,
                    last: id,
                })
                .unwrap();
        }
        assert_eq!(
            shipped,
            vec![(first, "first".to_string()), (third, "third".to_string())]
        );
        let stats = spool.stats().unwrap();
        assert_eq!(
            (stats.batches, stats.pending),
            (1, 7),
            "the unreadable batch stays"
        );
        assert_eq!(spool.oldest_id().unwrap(), None);
    }

    /// A spool in `dir`, and the run its batches belong to.
    fn spool_in(dir: &tempfile::TempDir) -> (Spool, RunContext) {
        let spool = Spool::new(SqliteStore::open(&dir.path().join("pmon.db")).unwrap());
        let ctx = RunContext {
            experiment_id: "e".into(),
            run_id: "r".into(),
        };
        (spool, ctx)
    }

    /// Two full rows and five records, and the run's exit event.
    fn three_rows() -> Batch {
        let mut big = Batch::default();
        for seq in 0..(2 * ROW_RECORDS as u64 + 5) {
            let mut one = batch(&format!("line {seq}")).logs.remove(0);
            one.seq = seq;
            big.logs.push(one);
        }
        big.events.push(Event::now("exit", json!({"exit_code": 0})));
        big
    }

    /// However the batches were coalesced, the spool stops within one row
    /// of its cap, and what says how the run ended is kept.
    #[test]
    fn a_batch_past_the_spools_room_keeps_what_fits_and_its_events() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, ctx) = spool_in(&dir);
        let big = three_rows();
        assert_eq!(
            spool.push_within(&ctx, &big, 1).unwrap(),
            ROW_RECORDS as u64 + 5
        );
        let stats = spool.stats().unwrap();
        assert_eq!((stats.batches, stats.pending), (2, ROW_RECORDS as u64));
        let mut events = Vec::new();
        while let Some((id, _, part)) = spool.oldest().unwrap() {
            events.extend(part.events);
            spool
                .delete_rows(SpoolRows {
                    first: id,
                    last: id,
                })
                .unwrap();
        }
        assert_eq!(events.len(), 1, "the exit event is kept");
        assert_eq!(
            spool.push_within(&ctx, &big, 0).unwrap(),
            big.logs.len() as u64
        );
        assert_eq!(spool.stats().unwrap().pending, 0);
    }

    #[test]
    fn a_large_batch_takes_several_rows_that_read_back_as_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, ctx) = spool_in(&dir);
        let big = three_rows();
        let rows = spool.push(&ctx, &big).unwrap();
        assert_eq!(rows.last - rows.first, 2, "three rows");
        let mut back = Batch::default();
        let mut sizes = Vec::new();
        while let Some((id, _, part)) = spool.oldest().unwrap() {
            sizes.push((part.logs.len(), part.events.len()));
            back.append(part);
            spool
                .delete_rows(SpoolRows {
                    first: id,
                    last: id,
                })
                .unwrap();
        }
        assert_eq!(sizes, vec![(ROW_RECORDS, 0), (ROW_RECORDS, 0), (5, 1)]);
        assert_eq!(back, big);
    }
}
