//! Retention: `db prune --older-than D` and `logging.database.retention`.
//!
//! What goes: every run that ended before the cutoff, with all its records,
//! events, metric samples and progress; and the records, events and samples
//! older than the cutoff of runs that ended since. What stays: everything of
//! a run that is still live, however old (a pipeline that has run for six
//! weeks keeps its first lines), and runs that never ended but whose agent
//! on another host may still be alive (only this host can tell its own pids
//! are gone).
//!
//! In PostgreSQL a day partition of `pipeline_logs` or `pipeline_metrics`
//! that lies wholly before the cutoff and holds no live run's rows is
//! dropped whole: no row-by-row delete, no bloat, the disk space back at
//! once. Everything else — the embedded store, the legacy partition of an
//! upgraded database, a day a live run wrote to, the unpartitioned tables —
//! is deleted in bounded chunks, each its own transaction, so writers are
//! never held up behind one long delete: in SQLite the freed pages are
//! reused by the rows that come next; in PostgreSQL autovacuum reclaims
//! them. Rows are judged by their day: a day partition that begins after
//! the cutoff is not read at all.

use crate::postgres::{partitions, PgError, PostgresStore};
use crate::registry;
use chrono::{DateTime, Utc};
use pmon_core::procinfo;
use pmon_core::record::format_ts;
use rusqlite::Connection;
use serde::Serialize;
use sqlx::Row;

/// Rows deleted per statement.
const CHUNK: i64 = 5_000;

/// What a prune removed (or, dry, would remove).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PruneReport {
    pub cutoff: String,
    pub dry_run: bool,
    pub runs: u64,
    pub logs: u64,
    pub events: u64,
    pub metrics: u64,
    pub progress: u64,
    /// Live runs with rows older than the cutoff, kept whole.
    pub live_runs_kept: u64,
}

impl PruneReport {
    pub fn is_empty(&self) -> bool {
        self.runs + self.logs + self.events + self.metrics + self.progress == 0
    }
}

/// The tables whose rows are pruned one by one, by time.
const TIMED_TABLES: [&str; 3] = ["pipeline_logs", "pipeline_events", "pipeline_metrics"];

/// SQLite: runs ended before `?1` (their whole history goes), rows older
/// than `?1` of runs that are not live.
const SQLITE_ENDED: &str = "SELECT run_id FROM pipeline_runs WHERE state NOT IN ('running', 'paused') AND coalesce(ended_at, started_at) < ?1";
const SQLITE_LIVE: &str = "SELECT run_id FROM pipeline_runs WHERE state IN ('running', 'paused')";

pub fn prune_sqlite(
    conn: &Connection,
    cutoff: DateTime<Utc>,
    dry_run: bool,
) -> rusqlite::Result<PruneReport> {
    registry::mark_lost(conn, None, &procinfo::hostname())?;
    let cut = format_ts(&cutoff);
    let mut report = PruneReport {
        cutoff: cut.clone(),
        dry_run,
        ..PruneReport::default()
    };
    let count = |sql: &str| -> rusqlite::Result<u64> {
        conn.query_row(sql, [&cut], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
    };
    report.live_runs_kept = count(&format!(
        "SELECT count(DISTINCT run_id) FROM pipeline_logs WHERE timestamp < ?1 AND run_id IN ({SQLITE_LIVE})"
    ))?;
    report.runs = count(&format!("SELECT count(*) FROM ({SQLITE_ENDED})"))?;
    report.progress = count(&format!(
        "SELECT count(*) FROM pipeline_progress WHERE run_id IN ({SQLITE_ENDED})"
    ))?;
    let condition =
        format!("(timestamp < ?1 OR run_id IN ({SQLITE_ENDED})) AND run_id NOT IN ({SQLITE_LIVE})");
    for table in TIMED_TABLES {
        let n = if dry_run {
            count(&format!("SELECT count(*) FROM {table} WHERE {condition}"))?
        } else {
            let sql = format!(
                "DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE {condition} LIMIT {CHUNK})"
            );
            let mut total = 0u64;
            loop {
                let deleted = conn.execute(&sql, [&cut])? as u64;
                total += deleted;
                if deleted == 0 {
                    break total;
                }
            }
        };
        *report.slot(table) = n;
    }
    if !dry_run {
        conn.execute(
            &format!("DELETE FROM pipeline_progress WHERE run_id IN ({SQLITE_ENDED})"),
            [&cut],
        )?;
        conn.execute(
            &format!("DELETE FROM pipeline_runs WHERE run_id IN ({SQLITE_ENDED})"),
            [&cut],
        )?;
    }
    Ok(report)
}

impl PruneReport {
    fn slot(&mut self, table: &str) -> &mut u64 {
        match table {
            "pipeline_logs" => &mut self.logs,
            "pipeline_events" => &mut self.events,
            _ => &mut self.metrics,
        }
    }
}

/// PostgreSQL: as SQLite, with the live runs computed here (`$2`): a run
/// that looks live but whose agent on this host is gone is not.
const PG_ENDED: &str = "SELECT run_id FROM pipeline_runs WHERE state NOT IN ('running', 'paused') AND coalesce(ended_at, started_at) < $1";

pub fn prune_postgres(
    pg: &mut PostgresStore,
    cutoff: DateTime<Utc>,
    dry_run: bool,
) -> Result<PruneReport, PgError> {
    let live = live_postgres_runs(pg)?;
    let mut report = PruneReport {
        cutoff: format_ts(&cutoff),
        dry_run,
        ..PruneReport::default()
    };
    let number = |pg: &mut PostgresStore, sql: String, with_live: bool| -> Result<u64, PgError> {
        let query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .persistent(false)
            .bind(cutoff);
        let query = if with_live {
            query.bind(live.clone())
        } else {
            query
        };
        let rows = pg.fetch_all(query)?;
        Ok(rows
            .first()
            .and_then(|r| r.try_get::<i64, _>(0).ok())
            .unwrap_or(0) as u64)
    };
    report.live_runs_kept = number(
        pg,
        "SELECT count(DISTINCT run_id) FROM pipeline_batches WHERE first_time < $1 AND run_id = ANY($2)".into(),
        true,
    )?;
    report.runs = number(
        pg,
        format!("SELECT count(*) FROM ({PG_ENDED}) AS ended"),
        false,
    )?;
    report.progress = number(
        pg,
        format!("SELECT count(*) FROM pipeline_progress WHERE run_id IN ({PG_ENDED})"),
        false,
    )?;
    let condition = format!("(timestamp < $1 OR run_id IN ({PG_ENDED})) AND run_id <> ALL($2)");
    let cutoff_day = cutoff.date_naive();
    let citus = is_distributed(pg)?;
    for table in partitions::TABLES {
        for part in partitions_of(pg, table)? {
            let day = partitions::day_of(table, &part);
            if day.is_some_and(|d| d > cutoff_day) {
                continue;
            }
            let whole = day.is_some_and(|d| d < cutoff_day);
            let n = if whole && !live_rows_in(pg, table, &part, &live)? {
                let n = unbound_number(pg, format!("SELECT count(*) FROM {part}"))?;
                if !dry_run {
                    unbound_number(pg, format!("DROP TABLE IF EXISTS {part}"))?;
                }
                n
            } else if dry_run {
                number(
                    pg,
                    format!("SELECT count(*) FROM {part} WHERE {condition}"),
                    true,
                )?
            } else {
                let chunk = chunk_of(citus, table, &part, &condition);
                delete_in_chunks(pg, &number, &format!(
                    "WITH gone AS (DELETE FROM {part} WHERE {chunk} RETURNING 1) SELECT count(*) FROM gone"
                ))?
            };
            *report.slot(table) += n;
        }
    }
    report.events = if dry_run {
        number(
            pg,
            format!("SELECT count(*) FROM pipeline_events WHERE {condition}"),
            true,
        )?
    } else {
        delete_in_chunks(pg, &number, &format!(
            "WITH gone AS (DELETE FROM pipeline_events WHERE id IN (SELECT id FROM pipeline_events WHERE {condition} LIMIT {CHUNK}) RETURNING 1) SELECT count(*) FROM gone"
        ))?
    };
    if !dry_run {
        // The ledger's memory of what was stored goes with the rows.
        let ledger = format!("(last_time < $1 OR run_id IN ({PG_ENDED})) AND run_id <> ALL($2)");
        delete_in_chunks(pg, &number, &format!(
            "WITH gone AS (DELETE FROM pipeline_batches WHERE {} RETURNING 1) SELECT count(*) FROM gone",
            chunk_of(citus, "pipeline_batches", "pipeline_batches", &ledger)
        ))?;
    }
    if !dry_run {
        for table in ["pipeline_progress", "pipeline_runs"] {
            number(
                pg,
                format!("WITH gone AS (DELETE FROM {table} WHERE run_id IN ({PG_ENDED}) RETURNING 1) SELECT count(*) FROM gone"),
                false,
            )?;
        }
    }
    Ok(report)
}

/// The condition picking one chunk of `part`'s rows that match `condition`.
/// By `ctid` (a row's place: a TID scan, no index needed) in PostgreSQL;
/// Citus cannot plan a delete by `ctid` on a distributed table, so there by
/// each table's own key.
fn chunk_of(citus: bool, table: &str, part: &str, condition: &str) -> String {
    let key = match (citus, table) {
        (false, _) => {
            return format!(
                "ctid = ANY(ARRAY(SELECT ctid FROM {part} WHERE {condition} LIMIT {CHUNK}))"
            )
        }
        (true, "pipeline_logs") => "id",
        (true, "pipeline_metrics") => "experiment_id, run_id, seq, timestamp",
        (true, _) => "experiment_id, run_id, origin, last_seq",
    };
    format!("({key}) IN (SELECT {key} FROM {part} WHERE {condition} LIMIT {CHUNK})")
}

/// Whether the tables are distributed by Citus (`db distribute`).
fn is_distributed(pg: &mut PostgresStore) -> Result<bool, PgError> {
    Ok(unbound_number(
        pg,
        "SELECT count(*) FROM pg_extension WHERE extname = 'citus'".into(),
    )? > 0
        && unbound_number(
            pg,
            "SELECT count(*) FROM pg_dist_partition WHERE logicalrelid = 'pipeline_logs'::regclass"
                .into(),
        )? > 0)
}

/// The number a statement without parameters returns (0 for none).
fn unbound_number(pg: &mut PostgresStore, sql: String) -> Result<u64, PgError> {
    let rows = pg.fetch_all(sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false))?;
    Ok(rows
        .first()
        .and_then(|r| r.try_get::<i64, _>(0).ok())
        .unwrap_or(0) as u64)
}

/// Runs `sql` (a chunked delete returning its count) until it deletes nothing.
fn delete_in_chunks(
    pg: &mut PostgresStore,
    number: &dyn Fn(&mut PostgresStore, String, bool) -> Result<u64, PgError>,
    sql: &str,
) -> Result<u64, PgError> {
    let mut total = 0u64;
    loop {
        let deleted = number(pg, sql.to_string(), true)?;
        total += deleted;
        if deleted == 0 {
            return Ok(total);
        }
    }
}

/// The partitions of `table`, day partitions and the legacy one.
fn partitions_of(pg: &mut PostgresStore, table: &str) -> Result<Vec<String>, PgError> {
    let rows = pg.fetch_all(
        crate::postgres::unnamed(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = $1::regclass ORDER BY 1",
        )
        .bind(table.to_string()),
    )?;
    Ok(rows.iter().filter_map(|r| r.try_get(0).ok()).collect())
}

/// Whether a live run has rows in this partition: for logs the ledger tells
/// (the partition has no index by run), for metrics the run index does.
fn live_rows_in(
    pg: &mut PostgresStore,
    table: &str,
    part: &str,
    live: &[String],
) -> Result<bool, PgError> {
    if live.is_empty() {
        return Ok(false);
    }
    let sql = if table == "pipeline_logs" {
        let day = partitions::day_of(table, part).unwrap_or_default();
        format!(
            "SELECT EXISTS (SELECT 1 FROM pipeline_batches WHERE run_id = ANY($1) AND first_time < '{}' AND last_time >= '{day}')",
            day + chrono::Days::new(1)
        )
    } else {
        format!("SELECT EXISTS (SELECT 1 FROM {part} WHERE run_id = ANY($1))")
    };
    let rows = pg.fetch_all(
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .persistent(false)
            .bind(live.to_vec()),
    )?;
    Ok(rows
        .first()
        .and_then(|r| r.try_get::<bool, _>(0).ok())
        .unwrap_or(true))
}

/// Prunes PostgreSQL when `url` is given, else the embedded store at
/// `db_path`, of what is older than `age`.
pub fn prune_store(
    url: Option<&str>,
    db_path: &std::path::Path,
    age: std::time::Duration,
    dry_run: bool,
) -> anyhow::Result<PruneReport> {
    use anyhow::Context;
    let age = chrono::Duration::from_std(age).context("that age is too large")?;
    let cutoff = Utc::now() - age;
    match url {
        Some(url) => {
            let mut pg = PostgresStore::new(url)?;
            Ok(prune_postgres(&mut pg, cutoff, dry_run)?)
        }
        None => {
            let store = crate::sqlite::SqliteStore::open(db_path)
                .with_context(|| format!("could not open the store {}", db_path.display()))?;
            prune_sqlite(store.conn(), cutoff, dry_run)
                .context("could not prune the embedded store")
        }
    }
}

/// Runs in PostgreSQL that may still be writing: live-looking ones, except
/// those whose agent on this host is gone.
fn live_postgres_runs(pg: &mut PostgresStore) -> Result<Vec<String>, PgError> {
    let host = procinfo::hostname();
    let rows = pg.fetch_all(crate::postgres::unnamed(
        "SELECT run_id, host, agent_pid, agent_start FROM pipeline_runs WHERE state IN ('running', 'paused')",
    ))?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let run_id: String = r.try_get(0).ok()?;
            let run_host: String = r.try_get(1).ok()?;
            let pid: Option<i64> = r.try_get(2).ok()?;
            let start: Option<i64> = r.try_get(3).ok()?;
            let gone = run_host == host
                && !pid.is_some_and(|p| procinfo::is_alive(p as u32, start.map(|s| s as u64)));
            (!gone).then_some(run_id)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::SqliteStore;

    fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("pmon.db")).unwrap();
        (dir, store)
    }

    fn run(conn: &Connection, id: &str, state: &str, started: &str, ended: Option<&str>) {
        conn.execute(
            "INSERT INTO pipeline_runs (run_id, experiment_id, ordinal, state, command, host, agent_pid, started_at, ended_at) VALUES (?1, 'x', (SELECT count(*) + 1 FROM pipeline_runs), ?2, '[]', ?3, ?4, ?5, ?6)",
            rusqlite::params![id, state, procinfo::hostname(), std::process::id(), started, ended],
        )
        .unwrap();
    }

    fn log(conn: &Connection, run: &str, seq: i64, ts: &str) {
        conn.execute(
            "INSERT INTO pipeline_logs (experiment_id, run_id, seq, timestamp, level, message, stream, source) VALUES ('x', ?1, ?2, ?3, 'INFO', 'm', 'stdout', 'stdout')",
            rusqlite::params![run, seq, ts],
        )
        .unwrap();
    }

    fn count(conn: &Connection, sql: &str) -> i64 {
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn old_runs_go_whole_old_rows_go_and_live_runs_stay() {
        let (_dir, store) = store();
        let conn = store.conn();
        run(
            conn,
            "OLD",
            "succeeded",
            "2026-01-01T00:00:00.000000Z",
            Some("2026-01-02T00:00:00.000000Z"),
        );
        run(
            conn,
            "MID",
            "failed",
            "2026-01-01T00:00:00.000000Z",
            Some("2026-06-01T00:00:00.000000Z"),
        );
        run(conn, "LIVE", "running", "2026-01-01T00:00:00.000000Z", None);
        for r in ["OLD", "MID", "LIVE"] {
            log(conn, r, 1, "2026-01-01T10:00:00.000000Z");
            log(conn, r, 2, "2026-05-31T10:00:00.000000Z");
        }
        conn.execute(
            "INSERT INTO pipeline_progress (experiment_id, run_id, task, current, updated_at) VALUES ('x', 'OLD', 't', 1, '2026-01-01T00:00:00.000000Z')",
            [],
        )
        .unwrap();
        let cutoff = pmon_core::record::parse_ts("2026-03-01T00:00:00Z").unwrap();
        let dry = prune_sqlite(conn, cutoff, true).unwrap();
        assert_eq!(
            (dry.runs, dry.logs, dry.progress, dry.live_runs_kept),
            (1, 3, 1, 1)
        );
        assert_eq!(
            count(conn, "SELECT count(*) FROM pipeline_logs"),
            6,
            "a dry run deletes nothing"
        );
        let done = prune_sqlite(conn, cutoff, false).unwrap();
        assert_eq!(
            done,
            PruneReport {
                dry_run: false,
                ..dry
            }
        );
        assert_eq!(
            count(
                conn,
                "SELECT count(*) FROM pipeline_runs WHERE run_id = 'OLD'"
            ),
            0
        );
        let left: Vec<(String, i64)> = conn
            .prepare("SELECT run_id, seq FROM pipeline_logs ORDER BY run_id, seq")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            left,
            [("LIVE".into(), 1), ("LIVE".into(), 2), ("MID".into(), 2)]
        );
        assert!(prune_sqlite(conn, cutoff, false).unwrap().is_empty());
    }
}
