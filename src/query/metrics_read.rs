//! Reading metric samples from either store, for `query metrics` and
//! `query status`. Samples are read in pages in the order they were taken
//! (`seq`, keyset paging), so memory stays bounded however long the run.

use super::db::{decode_all, pg_query, QueryDb};
use super::sql::SqlValue;
use chrono::{DateTime, Utc};
use pmon_core::record::format_ts;
use rusqlite::params_from_iter;
use serde::Serialize;
use sqlx::Row;

/// Rows per page.
const PAGE: i64 = 2000;

/// One stored sample.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricRow {
    #[serde(skip)]
    pub seq: i64,
    pub timestamp: String,
    pub metric_type: String,
    pub name: String,
    pub value: f64,
    pub unit: Option<String>,
    pub step: Option<i64>,
}

/// Which samples of a run to read.
#[derive(Debug, Clone, Default)]
pub struct MetricFilter {
    pub run_id: String,
    pub metric_type: Option<String>,
    pub name: Option<String>,
    /// In the stored timestamp format.
    pub since: Option<String>,
    /// Only samples after this one (`seq`): what a poll has not seen yet.
    pub after_seq: Option<i64>,
}

const COLUMNS: &str = "seq, timestamp, metric_type, name, value, unit, step";

impl MetricFilter {
    /// The statement for the page after `after`, and its values in order.
    fn page_sql(&self, db: &QueryDb<'_>, after: i64) -> (String, Vec<SqlValue>) {
        let dialect = db.dialect();
        let mut values = vec![SqlValue::Text(self.run_id.clone()), SqlValue::Int(after)];
        let mut sql = format!(
            "SELECT {COLUMNS} FROM pipeline_metrics WHERE run_id = {} AND seq > {}",
            dialect.placeholder(1),
            dialect.placeholder(2)
        );
        let mut add = |clause: &str, value: SqlValue, values: &mut Vec<SqlValue>| {
            values.push(value);
            let placeholder = dialect.placeholder(values.len());
            sql.push_str(&clause.replace("{}", &placeholder));
        };
        if let Some(t) = &self.metric_type {
            add(
                " AND metric_type = {}",
                SqlValue::Text(t.clone()),
                &mut values,
            );
        }
        if let Some(n) = &self.name {
            add(" AND name = {}", SqlValue::Text(n.clone()), &mut values);
        }
        if let Some(since) = &self.since {
            let time = pmon_core::record::parse_ts(since).unwrap_or_default();
            let clause = format!(" AND timestamp >= {}", dialect.timestamp_param("{}"));
            add(&clause, SqlValue::Time(time), &mut values);
        }
        sql.push_str(&format!(" ORDER BY seq LIMIT {PAGE}"));
        (sql, values)
    }
}

impl QueryDb<'_> {
    /// Hands the run's samples matching `filter` to `visit`, oldest first,
    /// until it returns `false` or they run out.
    pub fn each_metric(
        &mut self,
        filter: &MetricFilter,
        mut visit: impl FnMut(MetricRow) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        let mut after = filter.after_seq.unwrap_or(i64::MIN);
        loop {
            let (sql, values) = filter.page_sql(self, after);
            let rows = self.metric_page(&sql, values)?;
            let last_page = (rows.len() as i64) < PAGE;
            for row in rows {
                after = row.seq;
                if !visit(row)? {
                    return Ok(());
                }
            }
            if last_page {
                return Ok(());
            }
        }
    }

    fn metric_page(&mut self, sql: &str, values: Vec<SqlValue>) -> anyhow::Result<Vec<MetricRow>> {
        use anyhow::Context;
        let read = match self {
            QueryDb::Sqlite(conn) => sqlite_page(conn, sql, values),
            QueryDb::Postgres(pg) => pg
                .fetch_all(pg_query(sql, values))
                .map_err(anyhow::Error::from)
                .and_then(|rows| decode_all(&rows, pg_metric)),
        };
        read.context("could not read the metric samples")
    }

    /// The newest sample of each series of a run, by type and name.
    pub fn last_metrics(&mut self, run_id: &str) -> anyhow::Result<Vec<MetricRow>> {
        let mut last: std::collections::BTreeMap<(String, String), MetricRow> = Default::default();
        let filter = MetricFilter {
            run_id: run_id.to_string(),
            ..MetricFilter::default()
        };
        self.each_metric(&filter, |row| {
            last.insert((row.metric_type.clone(), row.name.clone()), row);
            Ok(true)
        })?;
        Ok(last.into_values().collect())
    }
}

fn sqlite_page(
    conn: &rusqlite::Connection,
    sql: &str,
    values: Vec<SqlValue>,
) -> anyhow::Result<Vec<MetricRow>> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map(params_from_iter(values), |row| {
        Ok(MetricRow {
            seq: row.get(0)?,
            timestamp: row.get(1)?,
            metric_type: row.get(2)?,
            name: row.get(3)?,
            value: row.get(4)?,
            unit: row.get(5)?,
            step: row.get(6)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

fn pg_metric(row: &sqlx::postgres::PgRow) -> Result<MetricRow, sqlx::Error> {
    Ok(MetricRow {
        seq: row.try_get(0)?,
        timestamp: format_ts(&row.try_get::<DateTime<Utc>, _>(1)?),
        metric_type: row.try_get(2)?,
        name: row.try_get(3)?,
        value: row.try_get(4)?,
        unit: row.try_get(5)?,
        step: row.try_get(6)?,
    })
}
