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

use super::super::{RunContext, SeqRecord};
use chrono::{DateTime, Utc};
use sqlx::postgres::PgConnection;
use sqlx::{Executor, Row};
use std::collections::HashMap;
use std::sync::Arc;

/// Rows per batch number: a row's id is `number × ROWS_PER_NUMBER + position`.
pub const ROWS_PER_NUMBER: usize = 32768;

/// Opens the batch's transaction, takes the run's lock, draws `count` batch
/// numbers and reads the ledger ranges that overlap the batch — in one
/// round trip (several statements in one simple query: each gets its own
/// snapshot, so the ledger is read after the lock is held). Under load a
/// write's round trips, not its rows, were a good part of its time.
pub async fn begin_and_read(
    conn: &mut PgConnection,
    ctx: &RunContext,
    rows: &[SeqRecord],
    count: usize,
) -> sqlx::Result<(Vec<i64>, Stored)> {
    let overlaps: Vec<String> = spans(rows)
        .into_iter()
        .map(|(origin, (first, last))| {
            format!(
                "(origin = {} AND last_seq >= {first} AND first_seq <= {last})",
                literal(origin)
            )
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
        overlaps = overlaps.join(" OR "),
    );
    let found = conn.fetch_all(sqlx::AssertSqlSafe(sql)).await?;
    let mut numbers = Vec::new();
    let mut stored = Stored::default();
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

/// Ranges already stored, per origin, that overlap the batch's.
#[derive(Debug, Default)]
pub struct Stored {
    ranges: HashMap<String, Vec<(u64, u64)>>,
}

impl Stored {
    pub fn holds(&self, row: &SeqRecord) -> bool {
        self.ranges.get(&*row.origin).is_some_and(|ranges| {
            ranges
                .iter()
                .any(|&(first, last)| first <= row.seq && row.seq <= last)
        })
    }
}

/// One ledger row: what a batch stored of one origin.
#[derive(Debug, PartialEq)]
struct Piece {
    origin: Arc<str>,
    first_seq: u64,
    last_seq: u64,
    rows: i32,
    first_time: DateTime<Utc>,
    last_time: DateTime<Utc>,
}

fn pieces(rows: &[&SeqRecord]) -> Vec<Piece> {
    let mut by_origin: HashMap<&str, Piece> = HashMap::new();
    for row in rows {
        let ts = row.record.timestamp;
        let piece = by_origin.entry(&row.origin).or_insert_with(|| Piece {
            origin: row.origin.clone(),
            first_seq: row.seq,
            last_seq: row.seq,
            rows: 0,
            first_time: ts,
            last_time: ts,
        });
        piece.first_seq = piece.first_seq.min(row.seq);
        piece.last_seq = piece.last_seq.max(row.seq);
        piece.rows += 1;
        piece.first_time = piece.first_time.min(ts);
        piece.last_time = piece.last_time.max(ts);
    }
    let mut pieces: Vec<Piece> = by_origin.into_values().collect();
    pieces.sort_by(|a, b| a.origin.cmp(&b.origin));
    pieces
}

/// The statement entering the records just copied in the ledger (sent
/// with the commit, in one round trip).
pub fn record_sql(ctx: &RunContext, rows: &[&SeqRecord], batch: i64) -> String {
    let values: Vec<String> = pieces(rows)
        .iter()
        .map(|p| {
            format!(
                "({}, {}, {}, {}, {}, {batch}, {}, {}, {})",
                literal(&ctx.experiment_id),
                literal(&ctx.run_id),
                literal(&p.origin),
                p.first_seq as i64,
                p.last_seq as i64,
                p.rows,
                literal(&crate::record::format_ts(&p.first_time)),
                literal(&crate::record::format_ts(&p.last_time)),
            )
        })
        .collect();
    format!(
        "INSERT INTO pipeline_batches (experiment_id, run_id, origin, first_seq, last_seq, batch, rows, first_time, last_time) VALUES {}",
        values.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{LogRecord, StreamKind};

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
    fn the_ledger_statement_has_a_row_per_origin() {
        let rows = [row("b", 7), row("a", 3), row("b", 9)];
        let refs: Vec<&SeqRecord> = rows.iter().collect();
        let ctx = RunContext {
            experiment_id: "e".into(),
            run_id: "r".into(),
        };
        let sql = record_sql(&ctx, &refs, 42);
        assert!(sql.contains("('e', 'r', 'a', 3, 3, 42, 1, '"), "{sql}");
        assert!(sql.contains("('e', 'r', 'b', 7, 9, 42, 2, '"), "{sql}");
    }

    #[test]
    fn pieces_are_one_per_origin_with_its_range_and_count() {
        let rows = [row("b", 7), row("a", 3), row("b", 9), row("a", 4)];
        let refs: Vec<&SeqRecord> = rows.iter().collect();
        let got: Vec<(String, u64, u64, i32)> = pieces(&refs)
            .into_iter()
            .map(|p| (p.origin.to_string(), p.first_seq, p.last_seq, p.rows))
            .collect();
        assert_eq!(got, [("a".into(), 3, 4, 2), ("b".into(), 7, 9, 2)]);
        assert_eq!(spans(&rows)["b"], (7, 9));
    }
}
