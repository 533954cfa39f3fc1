//! PostgreSQL's side of the reads: statements run through sqlx, rows decoded
//! into the same types the embedded store gives.

use super::super::filter::{IdBound, LogFilter, Order, PageAfter};
use super::super::rows::{LogRow, ProgressRow};
use super::super::sql::{Dialect, SqlValue};
use anyhow::Context;
use chrono::{DateTime, Utc};
use pmon_core::record::format_ts;
use pmon_core::run::{Run, RunState};
use pmon_store::postgres::PostgresStore;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::{AssertSqlSafe, Postgres, Row};
use std::collections::HashMap;

/// How many log rows the first PostgreSQL page holds; later pages double up
/// to [`PG_PAGE_MAX`]. `status` and `errors --limit 1` want one row, a full
/// `logs` wants millions: small pages first, big ones once it is clear.
pub(super) const PG_PAGE_FIRST: usize = 50;
const PG_PAGE_MAX: usize = 2000;

/// Reads the matching rows page by page: `fetch` runs one page's statement,
/// and each page starts just after the last row of the one before.
pub(super) fn each_log_paged(
    dialect: Dialect,
    filter: &LogFilter,
    bound: IdBound,
    order: Order,
    fetch: &mut dyn FnMut(&str, Vec<SqlValue>) -> anyhow::Result<Page>,
    visit: &mut dyn FnMut(LogRow) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let mut after = None;
    let mut page_rows = PG_PAGE_FIRST;
    loop {
        let (sql, values) = filter.render(dialect, bound, order, after, Some(page_rows));
        let rows = fetch(&sql, values).context("could not read the log records")?;
        let last_page = rows.len() < page_rows;
        for (record, timestamp) in rows {
            after = Some(PageAfter {
                timestamp,
                id: record.id,
            });
            if !visit(record)? {
                return Ok(());
            }
        }
        if last_page {
            return Ok(());
        }
        page_rows = (page_rows * 2).min(PG_PAGE_MAX);
    }
}

pub(super) fn pg_each_log(
    pg: &mut PostgresStore,
    filter: &LogFilter,
    bound: IdBound,
    order: Order,
    visit: &mut dyn FnMut(LogRow) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let narrowed;
    let filter = match (bound, &filter.id_ranges) {
        (IdBound::AtMost(_), None) if !only_errors(filter) => {
            narrowed = LogFilter {
                id_ranges: Some(ledger_id_ranges(pg, filter)?),
                ..filter.clone()
            };
            &narrowed
        }
        _ => filter,
    };
    let mut fetch = |sql: &str, values: Vec<SqlValue>| {
        let rows = pg.fetch_all(pg_query(sql, values))?;
        decode_all(&rows, pg_log)
    };
    each_log_paged(Dialect::Postgres, filter, bound, order, &mut fetch, visit)
}

/// ERROR/CRITICAL reads have their own index (by experiment and time).
fn only_errors(filter: &LogFilter) -> bool {
    filter
        .levels
        .as_ref()
        .is_some_and(|l| l.iter().all(|l| matches!(*l, "ERROR" | "CRITICAL")))
}

/// Where the filter's rows can be: the id ranges of its experiment's (and
/// runs') batches in the ledger, which is indexed by experiment and run.
/// A follow poll (`IdBound::After`) needs none: it reads the newest ids.
fn ledger_id_ranges(
    pg: &mut PostgresStore,
    filter: &LogFilter,
) -> anyhow::Result<Vec<super::super::filter::IdRange>> {
    let mut values = vec![SqlValue::Text(filter.experiment.clone())];
    let mut sql =
        "SELECT batch, first_time, last_time FROM pipeline_batches WHERE experiment_id = $1 AND first_time IS NOT NULL"
            .to_string();
    if let Some(run) = &filter.run_id {
        values.push(SqlValue::Text(run.clone()));
        sql.push_str(&format!(" AND run_id = ${}", values.len()));
    }
    if let Some(first) = &filter.runs_from {
        values.push(SqlValue::Text(first.clone()));
        sql.push_str(&format!(" AND run_id >= ${}", values.len()));
    }
    if let Some(since) = &filter.since {
        values.push(SqlValue::Text(since.clone()));
        sql.push_str(&format!(" AND last_time >= ${}::timestamptz", values.len()));
    }
    let rows = pg
        .fetch_all(pg_query(&sql, values))
        .context("could not read the batch ledger")?;
    let batches = rows
        .iter()
        .map(|r| {
            Ok(super::super::filter::LedgerBatch {
                batch: r.try_get(0)?,
                first: r.try_get(1)?,
                last: r.try_get(2)?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(super::super::filter::id_ranges(batches))
}

/// One page of log rows, each with its timestamp as a time (the page key).
pub(super) type Page = Vec<(LogRow, DateTime<Utc>)>;

/// `pipeline_runs` columns in [`Run`]'s order, JSONB read as text so that it
/// is parsed exactly as the SQLite store's text is.
pub(super) const PG_RUN_COLUMNS: &str = "run_id, experiment_id, ordinal, state, command::text AS command, tags::text AS tags, host, agent_pid, agent_start, child_pid, started_at, ended_at, exit_code, signal";

/// A query with its values bound in order.
pub(crate) fn pg_query(
    sql: &str,
    values: Vec<SqlValue>,
) -> sqlx::query::Query<'static, Postgres, PgArguments> {
    values.into_iter().fold(
        // Unnamed: see `postgres::unnamed` (PgBouncer).
        sqlx::query(AssertSqlSafe(sql.to_string())).persistent(false),
        |query, value| match value {
            SqlValue::Text(text) => query.bind(text),
            SqlValue::Int(n) => query.bind(n),
            SqlValue::Time(time) => query.bind(time),
        },
    )
}

pub(super) fn pg_scalar(
    pg: &mut PostgresStore,
    query: sqlx::query::Query<'static, Postgres, PgArguments>,
) -> anyhow::Result<i64> {
    let rows = pg.fetch_all(query)?;
    let first = rows
        .first()
        .context("PostgreSQL returned no row for an aggregate")?;
    Ok(first.try_get::<i64, _>(0)?)
}

/// Decodes every row; a value of an unexpected type is an error, not a panic.
pub(crate) fn decode_all<T>(
    rows: &[PgRow],
    decode: impl Fn(&PgRow) -> Result<T, sqlx::Error>,
) -> anyhow::Result<Vec<T>> {
    rows.iter()
        .map(|row| decode(row).map_err(anyhow::Error::from))
        .collect()
}

pub(super) fn pg_runs(
    pg: &mut PostgresStore,
    query: sqlx::query::Query<'static, Postgres, PgArguments>,
    host: &str,
) -> anyhow::Result<Vec<Run>> {
    let rows = pg.fetch_all(query)?;
    let mut runs = decode_all(&rows, pg_run)?;
    for run in &mut runs {
        run.mark_lost_if_agent_gone(host);
    }
    Ok(runs)
}

pub(super) fn pg_run(row: &PgRow) -> Result<Run, sqlx::Error> {
    let command: String = row.try_get(4)?;
    let tags: String = row.try_get(5)?;
    let pid = |index: usize| -> Result<Option<u32>, sqlx::Error> {
        Ok(row
            .try_get::<Option<i64>, _>(index)?
            .and_then(|pid| u32::try_from(pid).ok()))
    };
    Ok(Run {
        run_id: row.try_get(0)?,
        experiment_id: row.try_get(1)?,
        ordinal: row.try_get(2)?,
        state: RunState::parse(&row.try_get::<String, _>(3)?),
        command: serde_json::from_str(&command).unwrap_or_default(),
        tags: serde_json::from_str(&tags).unwrap_or(serde_json::Value::Null),
        host: row.try_get(6)?,
        agent_pid: pid(7)?,
        agent_start: row
            .try_get::<Option<i64>, _>(8)?
            .and_then(|start| u64::try_from(start).ok()),
        child_pid: pid(9)?,
        started_at: format_ts(&row.try_get::<DateTime<Utc>, _>(10)?),
        ended_at: row
            .try_get::<Option<DateTime<Utc>>, _>(11)?
            .map(|ended| format_ts(&ended)),
        exit_code: row.try_get(12)?,
        signal: row.try_get(13)?,
    })
}

pub(super) fn pg_progress(row: &PgRow) -> Result<ProgressRow, sqlx::Error> {
    Ok(ProgressRow::new(
        row.try_get(0)?,
        row.try_get(1)?,
        row.try_get(2)?,
        row.try_get(3)?,
        row.try_get(4)?,
        format_ts(&row.try_get::<DateTime<Utc>, _>(5)?),
    ))
}

/// A log row selected as [`super::rows::LOG_COLUMNS`] (in that order, as
/// [`LogRow::from_row`] reads SQLite's), with its timestamp as a time too:
/// the key of the next page.
pub(super) fn pg_log(row: &PgRow) -> Result<(LogRow, DateTime<Utc>), sqlx::Error> {
    let timestamp: DateTime<Utc> = row.try_get(3)?;
    let record = LogRow {
        id: row.try_get(0)?,
        experiment_id: row.try_get(1)?,
        run_id: row.try_get(2)?,
        timestamp: format_ts(&timestamp),
        level: row.try_get(4)?,
        logger: row.try_get(5)?,
        message: row.try_get(6)?,
        traceback: row.try_get(7)?,
        exception_type: row.try_get(8)?,
        exception_message: row.try_get(9)?,
        stream: row.try_get(10)?,
        source: row.try_get(11)?,
        fields: row.try_get(12)?,
    };
    Ok((record, timestamp))
}

/// Errors per run in one statement (runs with none are absent).
pub(super) fn pg_error_counts(
    pg: &mut PostgresStore,
    runs: &[Run],
) -> Result<HashMap<String, u64>, pmon_store::postgres::PgError> {
    let run_ids: Vec<&str> = runs.iter().map(|r| r.run_id.as_str()).collect();
    let query = sqlx::query(
        "SELECT run_id, count(*) FROM pipeline_logs WHERE run_id = ANY($1) AND level IN ('ERROR', 'CRITICAL') GROUP BY run_id",
    )
    .persistent(false)
    .bind(run_ids);
    let rows = pg.fetch_all(query)?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let run: String = r.try_get(0).ok()?;
            let n: i64 = r.try_get(1).ok()?;
            Some((run, n.max(0) as u64))
        })
        .collect())
}
