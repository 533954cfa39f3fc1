//! The embedded store's side of the reads: rows streamed from SQLite.

use super::super::filter::{IdBound, LogFilter, Order};
use super::super::rows::{LogRow, ProgressRow};
use anyhow::Context;
use rusqlite::{params_from_iter, Connection};

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
