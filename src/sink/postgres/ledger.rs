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
use super::unnamed;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgConnection;
use sqlx::Row;
use std::collections::HashMap;
use std::sync::Arc;

/// Rows per batch number: a row's id is `number × ROWS_PER_NUMBER + position`.
pub const ROWS_PER_NUMBER: usize = 32768;

/// Takes the run's lock, then `count` batch numbers.
pub async fn lock_and_number(
    tx: &mut PgConnection,
    ctx: &RunContext,
    count: usize,
) -> sqlx::Result<Vec<i64>> {
    let rows = unnamed(
        "SELECT nextval('pipeline_log_batches') FROM pg_advisory_xact_lock(hashtextextended($1, 5005)), generate_series(1, $2)",
    )
    .bind(&ctx.run_id)
    .bind(count as i32)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows.iter().map(|r| r.get::<i64, _>(0)).collect())
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
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn holds(&self, row: &SeqRecord) -> bool {
        self.ranges.get(&*row.origin).is_some_and(|ranges| {
            ranges
                .iter()
                .any(|&(first, last)| first <= row.seq && row.seq <= last)
        })
    }
}

/// Reads the ledger's ranges that overlap the batch (under the run's lock).
pub async fn stored(
    tx: &mut PgConnection,
    ctx: &RunContext,
    rows: &[SeqRecord],
) -> sqlx::Result<Stored> {
    let spans = spans(rows);
    let origins: Vec<&str> = spans.keys().copied().collect();
    let firsts: Vec<i64> = origins.iter().map(|o| spans[o].0 as i64).collect();
    let lasts: Vec<i64> = origins.iter().map(|o| spans[o].1 as i64).collect();
    let found = unnamed(
        "SELECT b.origin, b.first_seq, b.last_seq
         FROM unnest($3::text[], $4::bigint[], $5::bigint[]) AS q(origin, first_seq, last_seq)
         JOIN pipeline_batches b ON b.experiment_id = $1 AND b.run_id = $2 AND b.origin = q.origin
              AND b.last_seq >= q.first_seq AND b.first_seq <= q.last_seq",
    )
    .bind(&ctx.experiment_id)
    .bind(&ctx.run_id)
    .bind(&origins)
    .bind(&firsts)
    .bind(&lasts)
    .fetch_all(&mut *tx)
    .await?;
    let mut stored = Stored::default();
    for row in found {
        let origin: String = row.get(0);
        let range = (row.get::<i64, _>(1) as u64, row.get::<i64, _>(2) as u64);
        stored.ranges.entry(origin).or_default().push(range);
    }
    Ok(stored)
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

/// Writes the ledger rows of the records just copied.
pub async fn record(
    tx: &mut PgConnection,
    ctx: &RunContext,
    rows: &[&SeqRecord],
    batch: i64,
) -> sqlx::Result<()> {
    let pieces = pieces(rows);
    let origins: Vec<&str> = pieces.iter().map(|p| &*p.origin).collect();
    let firsts: Vec<i64> = pieces.iter().map(|p| p.first_seq as i64).collect();
    let lasts: Vec<i64> = pieces.iter().map(|p| p.last_seq as i64).collect();
    let counts: Vec<i32> = pieces.iter().map(|p| p.rows).collect();
    let first_times: Vec<DateTime<Utc>> = pieces.iter().map(|p| p.first_time).collect();
    let last_times: Vec<DateTime<Utc>> = pieces.iter().map(|p| p.last_time).collect();
    unnamed(
        "INSERT INTO pipeline_batches (experiment_id, run_id, batch, origin, first_seq, last_seq, rows, first_time, last_time)
         SELECT $1, $2, $3, * FROM unnest($4::text[], $5::bigint[], $6::bigint[], $7::int[], $8::timestamptz[], $9::timestamptz[])",
    )
    .bind(&ctx.experiment_id)
    .bind(&ctx.run_id)
    .bind(batch)
    .bind(&origins)
    .bind(&firsts)
    .bind(&lasts)
    .bind(&counts)
    .bind(&first_times)
    .bind(&last_times)
    .execute(&mut *tx)
    .await?;
    Ok(())
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
