//! Whether a live run is stalled: its newest `stall` or `resume` event,
//! read alike from both stores (the events' index by run and time).

use super::super::sql::SqlValue;
use super::{pg_query, QueryDb};
use anyhow::Context;
use sqlx::Row;

impl QueryDb<'_> {
    /// When the run stalled (the `since` of its newest `stall` event), if
    /// no `resume` came after it.
    pub fn stalled_since(
        &mut self,
        experiment: &str,
        run_id: &str,
    ) -> anyhow::Result<Option<String>> {
        let p = |n| self.dialect().placeholder(n);
        let details = match self.dialect() {
            super::super::sql::Dialect::Sqlite => "details",
            super::super::sql::Dialect::Postgres => "details::text",
        };
        let sql = format!(
            "SELECT event_type, {details} FROM pipeline_events WHERE run_id = {} AND experiment_id = {} AND event_type IN ('stall', 'resume') ORDER BY timestamp DESC LIMIT 1",
            p(1),
            p(2)
        );
        let newest: Option<(String, String)> = match self {
            QueryDb::Sqlite(conn) => {
                let mut stmt = conn.prepare(&sql)?;
                let mut rows = stmt.query([run_id, experiment])?;
                match rows.next()? {
                    Some(row) => Some((row.get(0)?, row.get(1)?)),
                    None => None,
                }
            }
            QueryDb::Postgres(pg) => {
                let values = vec![
                    SqlValue::Text(run_id.into()),
                    SqlValue::Text(experiment.into()),
                ];
                let rows = pg.fetch_all(pg_query(&sql, values))?;
                match rows.first() {
                    Some(row) => Some((row.try_get(0)?, row.try_get(1)?)),
                    None => None,
                }
            }
        };
        let Some((kind, details)) = newest else {
            return Ok(None);
        };
        if kind != "stall" {
            return Ok(None);
        }
        let details: serde_json::Value =
            serde_json::from_str(&details).context("a stall event's details are not JSON")?;
        Ok(details["since"].as_str().map(str::to_string))
    }
}
