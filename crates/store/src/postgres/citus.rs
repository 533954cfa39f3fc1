//! `db distribute`: spread the tables over a Citus cluster.
//!
//! Every table is distributed by `experiment_id` and co-located with
//! `pipeline_runs`, so one experiment's runs, records, ledger rows, metrics
//! and progress live on one worker: a batch's transaction and every query of
//! one experiment route to one node. The schema and the sink need no change
//! for that: each unique key and `ON CONFLICT` target names experiment_id,
//! the progress view joins on it, and exactly-once rests on the ledger, not
//! on a duplicate-key error (which Citus reports as XX000, not 23505).
//! Day partitions made after distributing are distributed by Citus as they
//! are created; the next week's are made here, ahead.

use super::{PgError, PostgresStore};
use serde::Serialize;
use sqlx::Row;

/// In this order: the first is the co-location anchor.
pub(super) const TABLES: [&str; 6] = [
    "pipeline_runs",
    "pipeline_logs",
    "pipeline_metrics",
    "pipeline_events",
    "pipeline_progress",
    "pipeline_batches",
];

/// Days of partitions made ahead.
const DAYS_AHEAD: u64 = 7;

#[derive(Debug, Default, Serialize)]
pub struct DistributeReport {
    pub citus_version: String,
    /// Distributed by this call.
    pub distributed: Vec<String>,
    /// Distributed before.
    pub already: Vec<String>,
    pub workers: i64,
}

impl PostgresStore {
    /// Distributes every table not yet distributed (idempotent).
    pub fn distribute(&mut self) -> Result<DistributeReport, PgError> {
        self.connect()?;
        let url = self.display_url().to_string();
        let version = self.fetch_all(super::unnamed(
            "SELECT extversion FROM pg_extension WHERE extname = 'citus'",
        ))?;
        let Some(version) = version.first().map(|r| r.get::<String, _>(0)) else {
            return Err(PgError::NotCitus { url });
        };
        let mut report = DistributeReport {
            citus_version: version,
            ..DistributeReport::default()
        };
        let done: Vec<String> = self
            .fetch_all(super::unnamed(
                "SELECT logicalrelid::regclass::text FROM pg_dist_partition",
            ))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for table in TABLES {
            if done.iter().any(|d| d == table) {
                report.already.push(table.into());
                continue;
            }
            let sql = if table == TABLES[0] {
                format!("SELECT create_distributed_table('{table}', 'experiment_id')")
            } else {
                format!(
                    "SELECT create_distributed_table('{table}', 'experiment_id', colocate_with => '{}')",
                    TABLES[0]
                )
            };
            self.fetch_all(sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false))?;
            report.distributed.push(table.into());
        }
        self.make_partitions_ahead(DAYS_AHEAD)?;
        report.workers = self
            .fetch_all(super::unnamed(
                "SELECT count(*) FROM citus_get_active_worker_nodes()",
            ))?
            .first()
            .map_or(0, |r| r.get(0));
        Ok(report)
    }
}
