//! Exactly once without a per-row unique index: the `pipeline_batches` ledger.
//!
//! Each stored batch leaves one ledger row per origin (stdout, a file's
//! identity…) naming the range of seqs it stored, in the same transaction as
//! its rows. A batch delivered again — replayed from the spool after a crash
//! between PostgreSQL's commit and the spool's delete, or a file re-read from
//! an older checkpoint — skips every record whose seq lies in a stored range.
//!
//! Why a range may stand for every seq in it: an origin's records are made in
//! seq order by one pipeline and batched in that order, so a batch holds all
//! of its origin's records between its first and last seq. Two deliveries of
//! one run never interleave: a transaction-scoped advisory lock on the run is
//! taken before the ledger is read, so a second writer (a restarted shipper
//! while the old connection's transaction is still open) waits for the first
//! to commit and then sees its ranges.

use crate::sink::{RunContext, SeqRecord};
use chrono::{DateTime, Utc};
use sqlx::postgres::PgConnection;
use sqlx::{Executor, Row};
use std::collections::HashMap;
use std::sync::Arc;

/// Rows per batch number: a row's id is `number × ROWS_PER_NUMBER + position`.
pub const ROWS_PER_NUMBER: usize = 32768;

/// Opens the batch's transaction, takes the run's lock, draws `count` batch
/// numbers and reads the ledger ranges of the batch's origins that end at or
/// after its first seq of that origin — in one round trip (several
/// statements in one simple query: each gets its own snapshot, so the ledger
/// is read after the lock is held). Under load a write's round trips, not
/// its rows, were a good part of its time.
///
/// The ranges have no upper end, so that batches which follow in the same
/// transaction can be checked too, if their seqs start no lower
/// ([`Stored::covers`]): nobody else writes the run while the lock is held.
pub async fn begin_and_read(
    conn: &mut PgConnection,
    ctx: &RunContext,
    rows: &[SeqRecord],
    count: usize,
) -> sqlx::Result<(Vec<i64>, Stored)> {
    let firsts = spans(rows);
    let overlaps: Vec<String> = firsts
        .iter()
        .map(|(origin, (first, _))| {
            format!("(origin = {} AND last_seq >= {first})", literal(origin))
        })
        .collect();
    let sql = format!(
        "BEGIN;
         SELECT nextval('pipeline_log_batches')
         FROM pg_advisory_xact_lock(hashtextextended({run}, 5005)), generate_series(1, {count});
         SELECT origin, first_seq, last_seq FROM pipeline_batches
         WHERE experiment_id = {experiment} AND run_id = {run} AND ({overlaps})",
        run = literal(&ctx.run_id),
        experiment = literal(&ctx.experiment_id),
        overlaps = if overlaps.is_empty() {
            "false".to_string()
        } else {
            overlaps.join(" OR ")
        },
    );
    let found = conn.fetch_all(sqlx::AssertSqlSafe(sql)).await?;
    let mut numbers = Vec::new();
    let mut stored = Stored {
        checked: firsts
            .into_iter()
            .map(|(origin, (first, _))| (origin.to_string(), first))
            .collect(),
        ..Stored::default()
    };
    for row in found {
        // The numbers come as one column, the ledger's ranges as three.
        match row.len() {
            1 => numbers.push(row.get(0)),
            3 => {
                let range = (row.get::<i64, _>(1) as u64, row.get::<i64, _>(2) as u64);
                stored.ranges.entry(row.get(0)).or_default().push(range);
            }
            _ => {}
        }
    }
    Ok((numbers, stored))
}

/// `text` as an SQL string literal (standard_conforming_strings, on since
/// PostgreSQL 9.1; NUL, which text refuses, as U+2400 like everywhere).
pub fn literal(text: &str) -> String {
    format!("'{}'", super::copy::safe(text).replace('\'', "''"))
}

/// The seq range of each origin in `rows`.
fn spans(rows: &[SeqRecord]) -> HashMap<&str, (u64, u64)> {
    let mut spans: HashMap<&str, (u64, u64)> = HashMap::new();
    for row in rows {
        let span = spans.entry(&row.origin).or_insert((row.seq, row.seq));
        span.0 = span.0.min(row.seq);
        span.1 = span.1.max(row.seq);
    }
    spans
}

/// Ranges already stored, per origin, from the lowest seq checked on.
#[derive(Debug, Default)]
pub struct Stored {
    ranges: HashMap<String, Vec<(u64, u64)>>,
    /// The origins whose ranges were read, each from which seq on.
    checked: HashMap<String, u64>,
}

impl Stored {
    pub fn holds(&self, row: &SeqRecord) -> bool {
        self.ranges.get(&*row.origin).is_some_and(|ranges| {
            ranges
                .iter()
                .any(|&(first, last)| first <= row.seq && row.seq <= last)
        })
    }

    /// Whether [`Stored::holds`] knows about every row of `rows`: each
    /// row's origin was read, from a seq no higher than the row's.
    /// One look-up per run of rows of the same origin (asked of every row a
    /// transaction takes).
    pub fn covers(&self, rows: &[SeqRecord]) -> bool {
        rows.chunk_by(|a, b| a.origin == b.origin).all(|run| {
            let lowest = run.iter().map(|r| r.seq).min().unwrap_or(0);
            self.checked
                .get(&*run[0].origin)
                .is_some_and(|&from| from <= lowest)
        })
    }
}

/// One ledger row: what a batch stored of one origin.
#[derive(Debug, PartialEq)]
struct Piece {
    batch: i64,
    origin: Arc<str>,
    first_seq: u64,
    last_seq: u64,
    rows: i32,
    first_time: DateTime<Utc>,
    last_time: DateTime<Utc>,
}

/// What a transaction stored, per batch number and origin: its ledger rows.
#[derive(Debug, Default)]
pub struct Pieces {
    pieces: Vec<Piece>,
    /// Where each (batch number, origin) is in `pieces`.
    index: HashMap<(i64, Arc<str>), usize>,
    /// The piece the last row went to: rows come in runs of one origin, so
    /// most rows need no look-up (this is done for every row copied in).
    last: Option<usize>,
}

impl Pieces {
    /// Notes a row copied in under batch number `batch`.
    pub fn note(&mut self, batch: i64, row: &SeqRecord) {
        let ts = row.record.timestamp;
        let at = match self.last {
            Some(i) if self.pieces[i].batch == batch && self.pieces[i].origin == row.origin => i,
            _ => *self
                .index
                .entry((batch, row.origin.clone()))
                .or_insert_with(|| {
                    self.pieces.push(Piece {
                        batch,
                        origin: row.origin.clone(),
                        first_seq: row.seq,
                        last_seq: row.seq,
                        rows: 0,
                        first_time: ts,
                        last_time: ts,
                    });
                    self.pieces.len() - 1
                }),
        };
        self.last = Some(at);
        let piece = &mut self.pieces[at];
        piece.first_seq = piece.first_seq.min(row.seq);
        piece.last_seq = piece.last_seq.max(row.seq);
        piece.rows += 1;
        piece.first_time = piece.first_time.min(ts);
        piece.last_time = piece.last_time.max(ts);
    }

    /// The statement entering the pieces in the ledger (sent with the
    /// commit, in one round trip); `None` if nothing was stored.
    pub fn sql(&self, ctx: &RunContext) -> Option<String> {
        let mut pieces: Vec<&Piece> = self.pieces.iter().collect();
        pieces.sort_by(|a, b| (a.batch, &a.origin).cmp(&(b.batch, &b.origin)));
        let values: Vec<String> = pieces
            .into_iter()
            .map(|p| {
                format!(
                    "({}, {}, {}, {}, {}, {}, {}, {}, {})",
                    literal(&ctx.experiment_id),
                    literal(&ctx.run_id),
                    literal(&p.origin),
                    p.first_seq as i64,
                    p.last_seq as i64,
                    p.batch,
                    p.rows,
                    literal(&pmon_core::record::format_ts(&p.first_time)),
                    literal(&pmon_core::record::format_ts(&p.last_time)),
                )
            })
            .collect();
        (!values.is_empty()).then(|| {
            format!(
                "INSERT INTO pipeline_batches (experiment_id, run_id, origin, first_seq, last_seq, batch, rows, first_time, last_time) VALUES {}",
                values.join(", ")
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pmon_core::record::{LogRecord, StreamKind};

    fn row(origin: &str, seq: u64) -> SeqRecord {
        SeqRecord {
            origin: Arc::from(origin),
            seq,
            record: LogRecord::plain("m".into(), StreamKind::Stdout, "stdout"),
        }
    }

    #[test]
    fn a_stored_range_holds_every_seq_within_it_for_its_origin_only() {
        let mut stored = Stored::default();
        stored.ranges.insert("a".into(), vec![(10, 20), (40, 40)]);
        let held: Vec<u64> = [5, 10, 15, 20, 21, 40, 41]
            .into_iter()
            .filter(|&s| stored.holds(&row("a", s)))
            .collect();
        assert_eq!(held, [10, 15, 20, 40]);
        assert!(!stored.holds(&row("b", 15)));
    }

    #[test]
    fn literals_are_quoted_and_free_of_nul() {
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(literal("a\0b"), "'a\u{2400}b'");
    }

    #[test]
    fn a_batch_that_follows_is_covered_only_from_the_seqs_checked_on() {
        let mut stored = Stored::default();
        stored.checked.insert("a".into(), 10);
        assert!(stored.covers(&[row("a", 10), row("a", 99)]));
        assert!(!stored.covers(&[row("a", 9)]), "below what was read");
        assert!(
            !stored.covers(&[row("a", 12), row("a", 9)]),
            "below what was read, later in a run"
        );
        assert!(
            !stored.covers(&[row("a", 12), row("b", 12)]),
            "an origin not read"
        );
    }

    #[test]
    fn the_ledger_statement_has_a_row_per_batch_number_and_origin() {
        let ctx = RunContext {
            experiment_id: "e".into(),
            run_id: "r".into(),
        };
        let mut pieces = Pieces::default();
        assert_eq!(pieces.sql(&ctx), None);
        for (batch, r) in [
            (42, row("b", 7)),
            (42, row("a", 3)),
            (42, row("b", 9)),
            (43, row("b", 10)),
        ] {
            pieces.note(batch, &r);
        }
        let sql = pieces.sql(&ctx).unwrap();
        assert!(sql.contains("('e', 'r', 'a', 3, 3, 42, 1, '"), "{sql}");
        assert!(sql.contains("('e', 'r', 'b', 7, 9, 42, 2, '"), "{sql}");
        assert!(sql.contains("('e', 'r', 'b', 10, 10, 43, 1, '"), "{sql}");
        assert_eq!(spans(&[row("b", 7), row("b", 9)])["b"], (7, 9));
    }
}
