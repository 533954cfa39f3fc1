//! Error groups in both stores: one row per group with its counts and its
//! latest record (`query errors --group`), and whether an experiment's
//! earlier runs had a group (`new_error_group` notifications). The same SQL
//! serves both stores; both read the partial index on
//! `(experiment_id, error_group)`.

use super::super::sql::SqlValue;
use super::{pg_query, QueryDb};
use anyhow::Context;
use chrono::{DateTime, Utc};
use pmon_core::record::format_ts;
use serde::Serialize;
use sqlx::Row;

/// One error group, as `query errors --group` prints it (field order is the
/// JSON order).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupRow {
    pub experiment_id: String,
    pub group: String,
    pub count: i64,
    /// How many runs it appeared in.
    pub runs: i64,
    pub first_seen: String,
    pub last_seen: String,
    /// The run it was first seen in.
    pub first_run_id: String,
    /// The run of its latest record.
    pub latest_run_id: String,
    pub level: String,
    pub logger: Option<String>,
    pub exception_type: Option<String>,
    /// The latest record's exception message, else its message.
    pub message: String,
    pub traceback: Option<String>,
}

/// Groups with their counts, joined to each group's latest record (by time,
/// then id), most recently seen first. `{exp}` is the experiment condition.
const GROUPS_SQL: &str = "
WITH e AS (
    SELECT id, experiment_id, error_group, run_id, timestamp, level, logger, message,
           exception_type, exception_message, traceback
    FROM pipeline_logs WHERE error_group IS NOT NULL{exp}
), g AS (
    SELECT experiment_id, error_group, count(*) AS n, count(DISTINCT run_id) AS runs,
           min(timestamp) AS first_seen, max(timestamp) AS last_seen, min(run_id) AS first_run
    FROM e GROUP BY experiment_id, error_group
), l AS (
    SELECT * FROM (
        SELECT e.*, row_number() OVER (PARTITION BY experiment_id, error_group
                                       ORDER BY timestamp DESC, id DESC) AS k
        FROM e) ranked
    WHERE k = 1
)
SELECT g.experiment_id, g.error_group, g.n, g.runs, g.first_seen, g.last_seen, g.first_run,
       l.run_id, l.level, l.logger, l.exception_type, coalesce(l.exception_message, l.message),
       l.traceback
FROM g JOIN l ON l.experiment_id = g.experiment_id AND l.error_group = g.error_group
ORDER BY g.last_seen DESC, g.experiment_id, g.error_group";

impl QueryDb<'_> {
    /// The error groups of one experiment, or of all.
    pub fn error_groups(&mut self, experiment: Option<&str>) -> anyhow::Result<Vec<GroupRow>> {
        let exp = match experiment {
            Some(_) => format!(" AND experiment_id = {}", self.dialect().placeholder(1)),
            None => String::new(),
        };
        let sql = GROUPS_SQL.replace("{exp}", &exp);
        let values: Vec<String> = experiment.map(str::to_string).into_iter().collect();
        let rows = match self {
            QueryDb::Sqlite(conn) => {
                let mut stmt = conn.prepare(&sql)?;
                let rows = stmt
                    .query_map(rusqlite::params_from_iter(values), |row| {
                        Ok(GroupRow {
                            experiment_id: row.get(0)?,
                            group: row.get(1)?,
                            count: row.get(2)?,
                            runs: row.get(3)?,
                            first_seen: row.get(4)?,
                            last_seen: row.get(5)?,
                            first_run_id: row.get(6)?,
                            latest_run_id: row.get(7)?,
                            level: row.get(8)?,
                            logger: row.get(9)?,
                            exception_type: row.get(10)?,
                            message: row.get(11)?,
                            traceback: row.get(12)?,
                        })
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                rows
            }
            QueryDb::Postgres(pg) => {
                let values = values.into_iter().map(SqlValue::Text).collect();
                let rows = pg.fetch_all(pg_query(&sql, values))?;
                let time = |row: &sqlx::postgres::PgRow, i: usize| -> Result<String, sqlx::Error> {
                    Ok(format_ts(&row.try_get::<DateTime<Utc>, _>(i)?))
                };
                super::decode_all(&rows, |row| {
                    Ok(GroupRow {
                        experiment_id: row.try_get(0)?,
                        group: row.try_get(1)?,
                        count: row.try_get(2)?,
                        runs: row.try_get(3)?,
                        first_seen: time(row, 4)?,
                        last_seen: time(row, 5)?,
                        first_run_id: row.try_get(6)?,
                        latest_run_id: row.try_get(7)?,
                        level: row.try_get(8)?,
                        logger: row.try_get(9)?,
                        exception_type: row.try_get(10)?,
                        message: row.try_get(11)?,
                        traceback: row.try_get(12)?,
                    })
                })?
            }
        };
        Ok(rows)
    }

    /// Whether a run of the experiment other than `run_id` stored a record of `group`.
    pub fn group_seen_before(
        &mut self,
        experiment: &str,
        group: &str,
        run_id: &str,
    ) -> anyhow::Result<bool> {
        let p = |n| self.dialect().placeholder(n);
        let sql = format!(
            "SELECT count(*) FROM (SELECT 1 FROM pipeline_logs WHERE experiment_id = {} AND error_group = {} AND run_id <> {} LIMIT 1) hit",
            p(1),
            p(2),
            p(3)
        );
        let found = match self {
            QueryDb::Sqlite(conn) => conn
                .query_row(&sql, [experiment, group, run_id], |row| {
                    row.get::<_, i64>(0)
                })
                .map_err(anyhow::Error::from),
            QueryDb::Postgres(pg) => {
                let values = [experiment, group, run_id]
                    .iter()
                    .map(|v| SqlValue::Text(v.to_string()))
                    .collect();
                super::pg_scalar(pg, pg_query(&sql, values))
            }
        };
        Ok(found.context("could not look up the error group in the store")? > 0)
    }
}
