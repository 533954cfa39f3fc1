//! The run registry in the embedded store: registering a run (or refusing
//! a second live one), its end, `lost` runs, and reading runs back. The run
//! types are `pmon_core::run`'s.

use chrono::Utc;
use pmon_core::procinfo;
use pmon_core::record::format_ts;
use pmon_core::run::{NewRun, Run, RunState, SeqStart, StartMode};
use rusqlite::{params, Connection, OptionalExtension, Row};

const COLUMNS: &str = "run_id, experiment_id, ordinal, state, command, tags, host, agent_pid, agent_start, child_pid, started_at, ended_at, exit_code, signal";

/// One `pipeline_runs` row, its columns in [`COLUMNS`]' order.
fn run_from_row(row: &Row<'_>) -> rusqlite::Result<Run> {
    let command: String = row.get(4)?;
    let tags: String = row.get(5)?;
    Ok(Run {
        run_id: row.get(0)?,
        experiment_id: row.get(1)?,
        ordinal: row.get(2)?,
        state: RunState::parse(&row.get::<_, String>(3)?),
        command: serde_json::from_str(&command).unwrap_or_default(),
        tags: serde_json::from_str(&tags).unwrap_or(serde_json::Value::Null),
        host: row.get(6)?,
        agent_pid: row.get(7)?,
        agent_start: row.get::<_, Option<i64>>(8)?.map(|v| v as u64),
        child_pid: row.get(9)?,
        started_at: row.get(10)?,
        ended_at: row.get(11)?,
        exit_code: row.get(12)?,
        signal: row.get(13)?,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("experiment '{experiment}' already has a live run (run {ordinal}, agent pid {pid}, started {started_at}); pass --new-run to start another run beside it, or --resume to continue it")]
    AlreadyLive {
        experiment: String,
        ordinal: i64,
        pid: String,
        started_at: String,
    },
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

/// Registers the start of a run (or the resumption of the latest one).
pub fn begin(conn: &mut Connection, new: &NewRun<'_>, mode: StartMode) -> Result<Run, RunError> {
    let host = procinfo::hostname();
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    mark_lost(&tx, Some(new.experiment_id), &host)?;
    let latest = tx
        .query_row(
            &format!("SELECT {COLUMNS} FROM pipeline_runs WHERE experiment_id = ?1 ORDER BY ordinal DESC LIMIT 1"),
            [new.experiment_id],
            run_from_row,
        )
        .optional()?;
    let live = tx
        .query_row(
            &format!("SELECT {COLUMNS} FROM pipeline_runs WHERE experiment_id = ?1 AND state IN ('running', 'paused') ORDER BY ordinal DESC LIMIT 1"),
            [new.experiment_id],
            run_from_row,
        )
        .optional()?;
    if let (StartMode::Exclusive | StartMode::Continue, Some(live)) = (mode, &live) {
        return Err(RunError::AlreadyLive {
            experiment: new.experiment_id.to_string(),
            ordinal: live.ordinal,
            pid: live.agent_pid.map_or("?".into(), |p| p.to_string()),
            started_at: live.started_at.clone(),
        });
    }
    let me = new.agent_pid;
    let my_start = procinfo::start_time(me).map(|s| s as i64);
    let now = format_ts(&Utc::now());
    let command = serde_json::to_string(new.command).unwrap_or_default();
    let tags: serde_json::Map<String, serde_json::Value> = new
        .tags
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    let tags = serde_json::Value::Object(tags).to_string();
    let run_id = match (mode, latest) {
        (StartMode::Resume | StartMode::Continue, Some(latest)) => {
            tx.execute(
                "UPDATE pipeline_runs SET state = 'running', agent_pid = ?2, agent_start = ?3, host = ?4, ended_at = NULL, exit_code = NULL, signal = NULL WHERE run_id = ?1",
                params![latest.run_id, me, my_start, host],
            )?;
            latest.run_id
        }
        (_, latest) => {
            let run_id = ulid::Ulid::new().to_string();
            let ordinal = latest.map_or(1, |r| r.ordinal + 1);
            tx.execute(
                &format!("INSERT INTO pipeline_runs ({COLUMNS}) VALUES (?1, ?2, ?3, 'running', ?4, ?5, ?6, ?7, ?8, NULL, ?9, NULL, NULL, NULL)"),
                params![run_id, new.experiment_id, ordinal, command, tags, host, me, my_start, now],
            )?;
            run_id
        }
    };
    let run = tx.query_row(
        &format!("SELECT {COLUMNS} FROM pipeline_runs WHERE run_id = ?1"),
        [&run_id],
        run_from_row,
    )?;
    tx.commit()?;
    Ok(run)
}

pub fn set_child_pid(conn: &Connection, run_id: &str, pid: u32) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE pipeline_runs SET child_pid = ?2 WHERE run_id = ?1",
        params![run_id, pid],
    )?;
    Ok(())
}

/// Records how the run ended.
pub fn end(
    conn: &Connection,
    run_id: &str,
    state: RunState,
    exit_code: Option<i32>,
    signal: Option<i32>,
) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE pipeline_runs SET state = ?2, ended_at = ?3, exit_code = ?4, signal = ?5 WHERE run_id = ?1",
        params![run_id, state.as_str(), format_ts(&Utc::now()), exit_code, signal],
    )?;
    Ok(())
}

/// Marks runs whose agent died on this host as `lost`.
pub fn mark_lost(conn: &Connection, experiment: Option<&str>, host: &str) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM pipeline_runs WHERE state IN ('running', 'paused') AND (?1 IS NULL OR experiment_id = ?1)"
    ))?;
    let runs: Vec<Run> = stmt
        .query_map([experiment], run_from_row)?
        .collect::<rusqlite::Result<_>>()?;
    for run in runs.iter().filter(|r| r.agent_vanished(host)) {
        conn.execute(
            "UPDATE pipeline_runs SET state = 'lost' WHERE run_id = ?1 AND state IN ('running', 'paused')",
            [&run.run_id],
        )?;
    }
    Ok(())
}

/// All runs of an experiment, oldest first.
/// One run by its id.
pub fn by_id(conn: &Connection, run_id: &str) -> rusqlite::Result<Option<Run>> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM pipeline_runs WHERE run_id = ?1"),
        [run_id],
        run_from_row,
    )
    .optional()
}

pub fn runs_of(conn: &Connection, experiment: &str) -> rusqlite::Result<Vec<Run>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM pipeline_runs WHERE experiment_id = ?1 ORDER BY ordinal"
    ))?;
    let runs = stmt.query_map([experiment], run_from_row)?.collect();
    runs
}

/// The latest run of every experiment, by experiment name.
pub fn latest_runs(conn: &Connection) -> rusqlite::Result<Vec<Run>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM pipeline_runs r WHERE ordinal = (SELECT max(ordinal) FROM pipeline_runs WHERE experiment_id = r.experiment_id) ORDER BY experiment_id"
    ))?;
    let runs = stmt.query_map([], run_from_row)?.collect();
    runs
}

/// The names of all experiments.
pub fn experiments(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt =
        conn.prepare("SELECT DISTINCT experiment_id FROM pipeline_runs ORDER BY experiment_id")?;
    let names = stmt.query_map([], |r| r.get(0))?.collect();
    names
}

/// A run's first session numbers from 0. A later session of the same run
/// (`wrap --resume`, a restarted `tail`) must never reuse a number of an
/// earlier one, whose records may be in PostgreSQL or still in the spool,
/// where the local store cannot count them: it starts at its start time in
/// milliseconds times 65,536 (an earlier session would have had to write
/// 65 million records a second to reach it), or after the highest number the
/// local store holds if that is higher (a clock set back).
pub fn first_seqs(conn: &Connection, run: &Run, continued: bool) -> rusqlite::Result<SeqStart> {
    let base = if continued {
        (Utc::now().timestamp_millis().max(0) as u64) << 16
    } else {
        0
    };
    let next = |table: &str| -> rusqlite::Result<u64> {
        let max: Option<i64> = conn.query_row(
            &format!("SELECT max(seq) FROM {table} WHERE run_id = ?1"),
            [&run.run_id],
            |r| r.get(0),
        )?;
        Ok(max.map_or(0, |m| m as u64 + 1).max(base))
    };
    Ok(SeqStart {
        logs: next("pipeline_logs")?,
        metrics: next("pipeline_metrics")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::SqliteStore;

    fn v(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_second_live_run_is_refused_unless_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("pmon.db")).unwrap();
        let conn = store_conn(&mut store);
        let cmd = v(&["python3", "x.py"]);
        let new = NewRun {
            experiment_id: "x",
            command: &cmd,
            tags: &[],
            agent_pid: std::process::id(),
        };
        let first = begin(conn, &new, StartMode::Exclusive).unwrap();
        assert_eq!(first.ordinal, 1);
        let err = begin(conn, &new, StartMode::Exclusive).unwrap_err();
        assert!(err.to_string().contains("--new-run"), "{err}");
        let second = begin(conn, &new, StartMode::NewRun).unwrap();
        assert_eq!(second.ordinal, 2);
        let resumed = begin(conn, &new, StartMode::Resume).unwrap();
        assert_eq!(resumed.run_id, second.run_id);
        end(conn, &first.run_id, RunState::Succeeded, Some(0), None).unwrap();
        end(conn, &second.run_id, RunState::Failed, Some(1), None).unwrap();
        let third = begin(conn, &new, StartMode::Exclusive).unwrap();
        assert_eq!(third.ordinal, 3);
    }

    #[test]
    fn a_run_whose_agent_is_gone_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("pmon.db")).unwrap();
        let conn = store_conn(&mut store);
        let cmd = v(&["x"]);
        let run = begin(
            conn,
            &NewRun {
                experiment_id: "x",
                command: &cmd,
                tags: &[],
                agent_pid: std::process::id(),
            },
            StartMode::Exclusive,
        )
        .unwrap();
        conn.execute("UPDATE pipeline_runs SET agent_start = agent_start + 1", [])
            .unwrap();
        mark_lost(conn, None, &procinfo::hostname()).unwrap();
        assert_eq!(runs_of(conn, "x").unwrap()[0].state, RunState::Lost);
        assert_eq!(runs_of(conn, "x").unwrap()[0].run_id, run.run_id);
    }

    fn store_conn(store: &mut SqliteStore) -> &mut Connection {
        store.conn_mut()
    }
}
