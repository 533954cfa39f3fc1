//! Experiments and runs: the run registry in the store.
//!
//! A run id is a ULID made by the agent, so a run can start while a database
//! is down and agents on many hosts never collide. Users name runs by ordinal
//! (1, 2, 3… in start order). A run whose agent has died without recording an
//! end is `lost`: we know because its pid is gone (or now belongs to another
//! process, which the stored start time reveals).

use crate::procinfo;
use crate::record::format_ts;
use chrono::Utc;
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;
use std::path::Path;

/// A run's lifecycle state, as the spec names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Running,
    Paused,
    Succeeded,
    Failed,
    Crashed,
    Stopped,
    Lost,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Paused => "paused",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Crashed => "crashed",
            RunState::Stopped => "stopped",
            RunState::Lost => "lost",
        }
    }

    pub fn parse(text: &str) -> RunState {
        match text {
            "running" => RunState::Running,
            "paused" => RunState::Paused,
            "succeeded" => RunState::Succeeded,
            "failed" => RunState::Failed,
            "crashed" => RunState::Crashed,
            "stopped" => RunState::Stopped,
            _ => RunState::Lost,
        }
    }

    pub fn is_live(self) -> bool {
        matches!(self, RunState::Running | RunState::Paused)
    }
}

/// One row of `pipeline_runs`.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Run {
    pub run_id: String,
    pub experiment_id: String,
    pub ordinal: i64,
    pub state: RunState,
    pub command: Vec<String>,
    pub tags: serde_json::Value,
    pub host: String,
    pub agent_pid: Option<u32>,
    #[serde(default)]
    pub agent_start: Option<u64>,
    pub child_pid: Option<u32>,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
}

const COLUMNS: &str = "run_id, experiment_id, ordinal, state, command, tags, host, agent_pid, agent_start, child_pid, started_at, ended_at, exit_code, signal";

impl Run {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Run> {
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

    /// A live-looking run whose agent on this host is gone is `lost`.
    fn agent_vanished(&self, host: &str) -> bool {
        self.state.is_live()
            && self.host == host
            && !self
                .agent_pid
                .is_some_and(|pid| procinfo::is_alive(pid, self.agent_start))
    }

    /// Shows the run as `lost` if it looks live but its agent on `host` is
    /// gone, without writing anything. For runs read from PostgreSQL, which
    /// agents on many hosts share: only this host can judge its own pids, and
    /// a query (perhaps by a read-only database user) should not write.
    pub fn mark_lost_if_agent_gone(&mut self, host: &str) {
        if self.agent_vanished(host) {
            self.state = RunState::Lost;
        }
    }
}

/// What a new run needs to be registered.
pub struct NewRun<'a> {
    pub experiment_id: &'a str,
    pub command: &'a [String],
    pub tags: &'a [(String, String)],
    /// The process whose death makes the run `lost`: the one the user
    /// started (the holder of the program's output), not a shipper that
    /// may be restarted under it.
    pub agent_pid: u32,
}

/// How `wrap` treats an experiment that already has a live run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StartMode {
    /// Refuse if a run is live.
    Exclusive,
    /// Start another run alongside.
    NewRun,
    /// Continue the latest run.
    Resume,
    /// Continue the latest run unless it is live (`tail`: a stable run id keeps
    /// re-read file records idempotent across restarts).
    Continue,
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
            Run::from_row,
        )
        .optional()?;
    let live = tx
        .query_row(
            &format!("SELECT {COLUMNS} FROM pipeline_runs WHERE experiment_id = ?1 AND state IN ('running', 'paused') ORDER BY ordinal DESC LIMIT 1"),
            [new.experiment_id],
            Run::from_row,
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
        Run::from_row,
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
        .query_map([experiment], Run::from_row)?
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
        Run::from_row,
    )
    .optional()
}

pub fn runs_of(conn: &Connection, experiment: &str) -> rusqlite::Result<Vec<Run>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM pipeline_runs WHERE experiment_id = ?1 ORDER BY ordinal"
    ))?;
    let runs = stmt.query_map([experiment], Run::from_row)?.collect();
    runs
}

/// The latest run of every experiment, by experiment name.
pub fn latest_runs(conn: &Connection) -> rusqlite::Result<Vec<Run>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM pipeline_runs r WHERE ordinal = (SELECT max(ordinal) FROM pipeline_runs WHERE experiment_id = r.experiment_id) ORDER BY experiment_id"
    ))?;
    let runs = stmt.query_map([], Run::from_row)?.collect();
    runs
}

/// The names of all experiments.
pub fn experiments(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt =
        conn.prepare("SELECT DISTINCT experiment_id FROM pipeline_runs ORDER BY experiment_id")?;
    let names = stmt.query_map([], |r| r.get(0))?.collect();
    names
}

/// Where a session of a run starts numbering its program output and its
/// metric samples: the keys `(run_id, origin, seq)` and `(run_id, seq)` that
/// make a batch written twice land once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqStart {
    pub logs: u64,
    pub metrics: u64,
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

/// The default experiment name: the stem of the script or command.
/// `python train.py` → `train`; `python -m pkg.mod` → `mod`; `./run.sh` → `run`.
pub fn default_experiment(command: &[String]) -> String {
    let stem = |s: &str| {
        Path::new(s)
            .file_stem()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| s.to_string())
    };
    let Some(program) = command.first() else {
        return "default".into();
    };
    let prog = stem(program);
    let is_interpreter = [
        "python", "python3", "pypy", "pypy3", "uv", "poetry", "node", "bash", "sh", "ruby", "perl",
        "Rscript",
    ]
    .iter()
    .any(|i| prog == *i || prog.starts_with("python"));
    if !is_interpreter {
        return prog;
    }
    let mut args = command[1..].iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-m" => {
                if let Some(module) = args.next() {
                    return module.rsplit('.').next().unwrap_or(module).to_string();
                }
            }
            "-c" => return prog,
            "-X" | "-W" | "run" => {
                if arg != "run" {
                    args.next();
                }
            }
            a if a.starts_with('-') => {}
            a => return stem(a),
        }
    }
    prog
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::SqliteStore;

    fn v(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn default_experiment_is_the_script_stem() {
        assert_eq!(default_experiment(&v(&["python", "train.py"])), "train");
        assert_eq!(
            default_experiment(&v(&["python3", "-u", "/x/etl_job.py", "--fast"])),
            "etl_job"
        );
        assert_eq!(
            default_experiment(&v(&["python3", "-m", "pkg.trainer"])),
            "trainer"
        );
        assert_eq!(default_experiment(&v(&["./run.sh"])), "run");
        assert_eq!(default_experiment(&v(&["uv", "run", "fit.py"])), "fit");
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
