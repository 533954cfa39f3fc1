//! The spool's table (`pmon_spool` in the embedded store): batches kept as
//! JSON rows while PostgreSQL is unreachable, with the file positions they
//! carry committed in the same transaction, read back oldest first and
//! deleted only once PostgreSQL has them.

use crate::sink::{Batch, RunContext, SinkError};
use crate::sqlite::SqliteStore;
use chrono::Utc;
use pmon_core::record::{format_ts, Event};
use rusqlite::{params, OptionalExtension};

/// A spool row as read: id, experiment, run, and the batch as JSON.
type SpooledRow = (i64, String, String, Vec<u8>);

/// What is waiting in the spool.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct SpoolStats {
    /// Log records waiting.
    pub pending: u64,
    /// When the oldest waiting batch was spooled.
    pub oldest: Option<String>,
    /// Size of the waiting batches.
    pub bytes: u64,
    pub batches: u64,
}

/// Most records one spool row holds: a row is encoded (and replayed) whole,
/// so this bounds the memory that spooling and replaying a large batch take.
pub(super) const ROW_RECORDS: usize = 4_000;

/// Most record text one spool row holds, for the same reason: SQLite copies
/// a row's payload twice more while it inserts it.
const ROW_BYTES: usize = 256 * 1024;

/// The batch's records cut into rows' worth: at most [`ROW_RECORDS`]
/// records and about [`ROW_BYTES`] of text each; one empty piece for a
/// batch without records.
fn pieces(logs: &[crate::sink::SeqRecord]) -> Vec<std::ops::Range<usize>> {
    let mut pieces = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, record) in logs.iter().enumerate() {
        if i > start && (i - start >= ROW_RECORDS || bytes >= ROW_BYTES) {
            pieces.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += record.record.text_bytes();
    }
    pieces.push(start..logs.len());
    pieces
}

/// The ids of the rows one pushed batch took.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpoolRows {
    pub first: i64,
    pub last: i64,
}

/// One spool row's payload, borrowed from a batch: the same JSON shape as
/// [`Batch`] (which reads it back), without copying the records. Checkpoints
/// are not part of it: they are committed locally with the rows.
#[derive(serde::Serialize)]
struct BatchRow<'a> {
    logs: &'a [crate::sink::SeqRecord],
    events: &'a [Event],
    progress: &'a [pmon_core::record::ProgressUpdate],
    metrics: &'a [crate::sink::SeqMetric],
    runs: &'a [pmon_core::run::Run],
}

impl BatchRow<'_> {
    fn is_empty(&self) -> bool {
        self.logs.is_empty()
            && self.events.is_empty()
            && self.progress.is_empty()
            && self.metrics.is_empty()
            && self.runs.is_empty()
    }
}

pub struct Spool {
    pub(super) store: SqliteStore,
    /// Rows up to this id that are still in the spool could not be decoded
    /// by this version: they are left in place (and counted as pending), and
    /// passed over, never shipped as empty nor deleted.
    passed_over: std::cell::Cell<i64>,
}

impl Spool {
    pub fn new(store: SqliteStore) -> Spool {
        Spool {
            store,
            passed_over: std::cell::Cell::new(0),
        }
    }

    /// Spools a batch and, in the same transaction, its file checkpoints.
    /// A large batch takes several rows of at most [`ROW_RECORDS`] records
    /// and about [`ROW_BYTES`] of text (each row is encoded whole); events, progress and run states go in
    /// the last. Returns the rows' ids.
    pub fn push(&self, ctx: &RunContext, batch: &Batch) -> Result<SpoolRows, SinkError> {
        Ok(self.push_rows(ctx, batch, None)?.0)
    }

    /// Like [`Spool::push`], but the records' rows take at most about `room`
    /// bytes (a row is written while the rows before it left room): the
    /// records of the rows that do not fit are not spooled. Events, progress
    /// and run states are always kept: they say how the run ended. Returns
    /// how many records were left out.
    pub fn push_within(
        &self,
        ctx: &RunContext,
        batch: &Batch,
        room: u64,
    ) -> Result<u64, SinkError> {
        Ok(self.push_rows(ctx, batch, Some(room))?.1)
    }

    /// [`Spool::push_within`], also returning the rows' ids.
    pub fn push_rows_within(
        &self,
        ctx: &RunContext,
        batch: &Batch,
        room: u64,
    ) -> Result<(SpoolRows, u64), SinkError> {
        self.push_rows(ctx, batch, Some(room))
    }

    fn push_rows(
        &self,
        ctx: &RunContext,
        batch: &Batch,
        room: Option<u64>,
    ) -> Result<(SpoolRows, u64), SinkError> {
        let tx = self.store.conn().unchecked_transaction()?;
        let pieces = pieces(&batch.logs);
        let mut rows = SpoolRows { first: 0, last: 0 };
        let (mut written, mut left_out) = (0u64, 0u64);
        for (n, piece) in pieces.iter().enumerate() {
            let mut logs = &batch.logs[piece.clone()];
            if room.is_some_and(|room| written >= room) {
                left_out += logs.len() as u64;
                logs = &[];
            }
            let last = n + 1 == pieces.len();
            let row = BatchRow {
                logs,
                events: if last { &batch.events } else { &[] },
                progress: if last { &batch.progress } else { &[] },
                metrics: if last { &batch.metrics } else { &[] },
                runs: if last { &batch.runs } else { &[] },
            };
            if room.is_some() && row.is_empty() {
                continue;
            }
            let payload = serde_json::to_vec(&row).unwrap_or_default();
            written += payload.len() as u64;
            tx.execute(
                "INSERT INTO pmon_spool (experiment_id, run_id, created_at, records, bytes, payload) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![ctx.experiment_id, ctx.run_id, format_ts(&Utc::now()), logs.len() as i64, payload.len() as i64, payload],
            )?;
            rows.last = tx.last_insert_rowid();
            if rows.first == 0 {
                rows.first = rows.last;
            }
        }
        crate::sqlite::write_checkpoints(&tx, &ctx.experiment_id, &batch.checkpoints)?;
        tx.commit()?;
        Ok((rows, left_out))
    }

    /// The id of the oldest waiting batch, if any.
    pub(super) fn oldest_id(&self) -> Result<Option<i64>, SinkError> {
        Ok(self.store.conn().query_row(
            "SELECT min(id) FROM pmon_spool WHERE id > ?1",
            [self.passed_over.get()],
            |r| r.get(0),
        )?)
    }

    /// The first spooled row after `id`: its id, run and undecoded batch.
    fn row_after(&self, id: i64) -> Result<Option<SpooledRow>, SinkError> {
        Ok(self
            .store
            .conn()
            .query_row(
                "SELECT id, experiment_id, run_id, payload FROM pmon_spool WHERE id > ?1 ORDER BY id LIMIT 1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?)
    }

    /// The oldest waiting batch this version can read, if any. A row that
    /// cannot be decoded is reported once and passed over.
    pub fn oldest(&self) -> Result<Option<(i64, RunContext, Batch)>, SinkError> {
        loop {
            let row = self.row_after(self.passed_over.get())?;
            let Some((id, experiment_id, run_id, payload)) = row else {
                return Ok(None);
            };
            match serde_json::from_slice(&payload) {
                Ok(batch) => {
                    let ctx = RunContext {
                        experiment_id,
                        run_id,
                    };
                    return Ok(Some((id, ctx, batch)));
                }
                Err(e) => {
                    eprintln!(
                        "pmon-agent: warning: spooled batch {id} (experiment '{experiment_id}') cannot be read by this version ({e}); it stays in the spool, untouched, for a newer pmon-agent or for inspection"
                    );
                    self.passed_over.set(id);
                }
            }
        }
    }

    /// The spooled batch right after `id` (the next row, none skipped), if it
    /// belongs to `ctx` and can be read: what a replay may add to the batch
    /// it is about to write.
    pub fn next_of_run(
        &self,
        id: i64,
        ctx: &RunContext,
    ) -> Result<Option<(i64, Batch)>, SinkError> {
        let row = self.row_after(id)?;
        Ok(row.and_then(|(next, experiment_id, run_id, payload)| {
            if experiment_id != ctx.experiment_id || run_id != ctx.run_id {
                return None;
            }
            serde_json::from_slice(&payload)
                .ok()
                .map(|batch| (next, batch))
        }))
    }

    pub fn delete_rows(&self, rows: SpoolRows) -> Result<(), SinkError> {
        self.store.conn().execute(
            "DELETE FROM pmon_spool WHERE id BETWEEN ?1 AND ?2",
            [rows.first, rows.last],
        )?;
        Ok(())
    }

    /// Records file positions on their own (their records are stored elsewhere).
    pub fn write_checkpoints(
        &self,
        ctx: &RunContext,
        checkpoints: &[crate::sink::Checkpoint],
    ) -> Result<(), SinkError> {
        if checkpoints.is_empty() {
            return Ok(());
        }
        let tx = self.store.conn().unchecked_transaction()?;
        crate::sqlite::write_checkpoints(&tx, &ctx.experiment_id, checkpoints)?;
        tx.commit()?;
        Ok(())
    }

    pub fn stats(&self) -> Result<SpoolStats, SinkError> {
        Ok(self.store.conn().query_row(
            "SELECT coalesce(sum(records), 0), min(created_at), coalesce(sum(bytes), 0), count(*) FROM pmon_spool",
            [],
            |r| {
                Ok(SpoolStats {
                    pending: r.get::<_, i64>(0)? as u64,
                    oldest: r.get(1)?,
                    bytes: r.get::<_, i64>(2)? as u64,
                    batches: r.get::<_, i64>(3)? as u64,
                })
            },
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::SeqRecord;
    use pmon_core::record::{LogRecord, StreamKind};

    fn records(sizes: &[usize]) -> Vec<SeqRecord> {
        sizes
            .iter()
            .enumerate()
            .map(|(seq, n)| SeqRecord {
                origin: "stdout".into(),
                seq: seq as u64,
                record: LogRecord::plain("x".repeat(*n), StreamKind::Stdout, "stdout"),
            })
            .collect()
    }

    #[test]
    fn rows_are_cut_by_bytes_and_by_count() {
        let big = ROW_BYTES / 2;
        assert_eq!(pieces(&records(&[big, big, big, 1])), vec![0..2, 2..4]);
        assert_eq!(pieces(&records(&[ROW_BYTES * 3, 1])), vec![0..1, 1..2]);
        let many = records(&vec![1; ROW_RECORDS + 1]);
        assert_eq!(
            pieces(&many),
            vec![0..ROW_RECORDS, ROW_RECORDS..ROW_RECORDS + 1]
        );
        assert_eq!(pieces(&[]), vec![0..0]);
    }
}
