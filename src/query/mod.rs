//! `pmon-agent query …`: read-only answers from the store for people and scripts.
//!
//! These commands exist so nobody has to know the schema to find out whether
//! a pipeline is alive, how far it got and why it failed: `list` gives every
//! experiment at a glance, `status` one run in depth, `logs` and `errors` the
//! records themselves, `metrics` what the sampler measured, `watch` all of
//! it live on one screen. Text output is for terminals (local time, aligned,
//! control characters escaped); `--format json` prints JSON Lines with the
//! field names of the spec, for scripts.
//!
//! The records are read where they are stored: PostgreSQL when a database
//! is configured, else the embedded SQLite store ([`db`] is the one place
//! that knows the difference; everything else formats and prints once for
//! both). With PostgreSQL, records this host's agents could not ship yet
//! wait in the local spool; `status` counts them and the other commands say
//! so on stderr, so a gap is never taken for lost logs.
//!
//! What this module does not do: it never writes records and never starts or
//! stops runs. Its one write is marking runs whose agent died as `lost` in
//! the embedded store, so that a dead pipeline never shows as `running`; in
//! PostgreSQL such runs are only shown as lost.

pub(crate) mod db;
mod filter;
mod groups;
mod list;
mod logs;
mod metrics;
mod metrics_read;
pub(crate) mod output;
mod rows;
mod select;
mod sql;
mod status;
pub mod watch;

pub use logs::{logs_with, LogsOptions};
pub use status::stalled_words;

use crate::app::App;
use crate::cli::QueryCommand;

/// Runs one `query` subcommand, printing to standard output; returns the
/// exit code.
pub fn run(app: &App, cmd: QueryCommand) -> anyhow::Result<i32> {
    let done = match cmd {
        QueryCommand::List(args) => list::list(app, &args),
        QueryCommand::Status(args) => status::status(app, &args),
        QueryCommand::Logs(args) => logs::logs(app, &args),
        QueryCommand::Errors(args) if args.group => groups::groups(app, &args),
        QueryCommand::Errors(args) => logs::errors(app, &args),
        QueryCommand::Metrics(args) => metrics::metrics(app, &args),
        QueryCommand::Watch(args) => return watch::watch(app, &args),
    };
    done.map(|()| 0)
}

/// A temporary store and SQL shortcuts that fill it, shared by the tests of
/// every query command.
#[cfg(test)]
pub(crate) mod tests {
    use pmon_store::SqliteStore;
    use rusqlite::{params, Connection};

    pub fn temp_store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("pmon.db")).expect("open store");
        (dir, store)
    }

    /// A run started at 2026-11-27 10:00:00 UTC on another host, so that
    /// `mark_lost` leaves its state alone unless a test says otherwise.
    pub fn insert_run(
        conn: &Connection,
        experiment: &str,
        ordinal: i64,
        run_id: &str,
        state: &str,
    ) {
        conn.execute(
            "INSERT INTO pipeline_runs (run_id, experiment_id, ordinal, state, command, host, started_at)
             VALUES (?1, ?2, ?3, ?4, '[\"python\",\"x.py\"]', 'elsewhere', '2026-11-27T10:00:00.000000Z')",
            params![run_id, experiment, ordinal, state],
        )
        .expect("insert run");
    }

    /// A log record of a run on 2026-11-27 at `time` (UTC, `HH:MM:SS`).
    pub struct TestLog {
        pub run_id: &'static str,
        pub time: &'static str,
        pub level: &'static str,
        pub message: &'static str,
        pub logger: Option<&'static str>,
        pub traceback: Option<&'static str>,
        pub exception_type: Option<&'static str>,
        pub exception_message: Option<&'static str>,
    }

    impl TestLog {
        pub fn new(
            run_id: &'static str,
            time: &'static str,
            level: &'static str,
            message: &'static str,
        ) -> TestLog {
            TestLog {
                run_id,
                time,
                level,
                message,
                logger: None,
                traceback: None,
                exception_type: None,
                exception_message: None,
            }
        }
    }

    pub fn insert_log(conn: &Connection, log: TestLog) {
        conn.execute(
            "INSERT INTO pipeline_logs (experiment_id, run_id, seq, timestamp, level, logger, message, traceback, exception_type, exception_message, stream, source)
             VALUES ((SELECT experiment_id FROM pipeline_runs WHERE run_id = ?1), ?1,
                     (SELECT coalesce(max(seq), 0) + 1 FROM pipeline_logs), ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'stderr', 'stderr')",
            params![
                log.run_id,
                format!("2026-11-27T{}.000000Z", log.time),
                log.level,
                log.logger,
                log.message,
                log.traceback,
                log.exception_type,
                log.exception_message,
            ],
        )
        .expect("insert log");
    }

    pub fn insert_progress(
        conn: &Connection,
        run_id: &str,
        task: &str,
        current: f64,
        total: Option<f64>,
        unit: Option<&str>,
    ) {
        conn.execute(
            "INSERT INTO pipeline_progress (experiment_id, run_id, task, current, total, unit, rate, updated_at)
             VALUES ((SELECT experiment_id FROM pipeline_runs WHERE run_id = ?1), ?1, ?2, ?3, ?4, ?5, NULL, '2026-11-27T10:01:00.000000Z')",
            params![run_id, task, current, total, unit],
        )
        .expect("insert progress");
    }
}
