//! The embedded store's side of the reads: rows streamed from SQLite.

use super::super::filter::{IdBound, LogFilter, Order};
use super::super::rows::{LogRow, ProgressRow};
use anyhow::Context;
use pmon_core::run::Run;
use rusqlite::{params_from_iter, Connection};
use std::collections::HashMap;

pub(super) fn sqlite_progress(
    conn: &Connection,
    sql: &str,
    run_id: &str,
) -> anyhow::Result<Vec<ProgressRow>> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt
        .query_map([run_id], ProgressRow::from_row)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

pub(super) fn sqlite_each_log(
    conn: &Connection,
    filter: &LogFilter,
    bound: IdBound,
    order: Order,
    visit: &mut dyn FnMut(LogRow) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let (sql, values) = filter.sql(bound, order);
    let mut stmt = conn
        .prepare(&sql)
        .context("could not query the log records")?;
    let mut rows = stmt
        .query(params_from_iter(values))
        .context("could not query the log records")?;
    while let Some(row) = rows.next().context("could not read the log records")? {
        let record = LogRow::from_row(row).context("could not read a log record")?;
        if !visit(record)? {
            break;
        }
    }
    Ok(())
}

/// Errors per run, each counted through the partial errors index.
pub(super) fn sqlite_error_counts(
    conn: &Connection,
    runs: &[Run],
) -> rusqlite::Result<HashMap<String, u64>> {
    // Through the partial index on run_id (migration 0004); named, because
    // SQLite would otherwise take the (run_id, origin, seq) key and read
    // every row of the run (3.6 s for `query list` of 1,000 experiments at
    // 10 million records).
    let mut stmt = conn.prepare_cached(
        "SELECT count(*) FROM pipeline_logs INDEXED BY pipeline_logs_errors_run WHERE run_id = ?1 AND level IN ('ERROR', 'CRITICAL')",
    )?;
    runs.iter()
        .map(|run| {
            let n: i64 = stmt.query_row([&run.run_id], |r| r.get(0))?;
            Ok((run.run_id.clone(), n.max(0) as u64))
        })
        .collect()
}
