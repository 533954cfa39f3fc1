//! The embedded SQLite store: the default home of everything when no
//! PostgreSQL is configured.
//!
//! One file (`pmon.db` in the data dir), WAL mode so queries read while agents
//! write, `synchronous=NORMAL` (a power cut may lose the last transactions, a
//! crash of the agent loses nothing committed), file mode 0600 because logs
//! hold secrets. Migrations in `migrations/sqlite` are applied in order and
//! tracked in `PRAGMA user_version`.

use crate::sink::{Batch, RunContext, Sink, SinkError};
use pmon_core::record::{format_ts, Level};
use rusqlite::{params, Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a statement waits for another process's lock on the store.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

const MIGRATIONS: &[&str] = &[
    include_str!("../../../migrations/sqlite/0001_init.sql"),
    include_str!("../../../migrations/sqlite/0002_metrics.sql"),
    include_str!("../../../migrations/sqlite/0003_fields.sql"),
    include_str!("../../../migrations/sqlite/0004_errors_by_run.sql"),
    include_str!("../../../migrations/sqlite/0005_error_groups.sql"),
    include_str!("../../../migrations/sqlite/0006_tentative_positions.sql"),
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("could not open the SQLite store {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("could not create the SQLite store {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the SQLite store {path} was written by a newer pmon-agent (schema {found}, this one knows {known}); upgrade pmon-agent")]
    TooNew {
        path: PathBuf,
        found: usize,
        known: usize,
    },
    #[error("SQLite store error: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (creating if needed, mode 0600) and migrates the store.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        create_private(path)?;
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let store = SqliteStore {
            conn,
            path: path.to_path_buf(),
        };
        store.prepare()?;
        Ok(store)
    }

    /// Opens an existing store for reading; `None` if there is no store yet.
    pub fn open_existing(path: &Path) -> Result<Option<SqliteStore>, StoreError> {
        if !path.exists() {
            return Ok(None);
        }
        let mut conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
            .map_err(|source| StoreError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        trace_statements(&mut conn);
        let store = SqliteStore {
            conn,
            path: path.to_path_buf(),
        };
        store.prepare()?;
        Ok(Some(store))
    }

    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    pub fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// Configures and migrates the store. Two processes opening a new store
    /// at once (the first `wrap` creating it, a `query` or `spool status`
    /// beside it) can meet where SQLite answers "busy" at once rather than
    /// waiting — both switching it to WAL, or both upgrading a read to a
    /// write — so a busy answer here is retried until the busy timeout.
    fn prepare(&self) -> Result<(), StoreError> {
        let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
        loop {
            match self.configure().and_then(|()| self.migrate()) {
                Err(StoreError::Sqlite(e))
                    if is_busy(&e) && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    fn configure(&self) -> Result<(), StoreError> {
        self.conn.busy_timeout(BUSY_TIMEOUT)?;
        self.conn.pragma_update(None, "journal_mode", "WAL")?;
        self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        self.conn.pragma_update(None, "foreign_keys", "ON")?;
        // 1 MiB of page cache, not SQLite's 2 MiB: the agent appends, and a
        // transaction of large spool rows would otherwise hold all its dirty
        // pages (WAL mode spills them to the log instead).
        self.conn.pragma_update(None, "cache_size", -1024)?;
        Ok(())
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let version: usize = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > MIGRATIONS.len() {
            return Err(StoreError::TooNew {
                path: self.path.clone(),
                found: version,
                known: MIGRATIONS.len(),
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            // Immediate: take the write lock before reading the version, so
            // that two migrating agents queue instead of deadlocking.
            let tx = rusqlite::Transaction::new_unchecked(
                &self.conn,
                rusqlite::TransactionBehavior::Immediate,
            )?;
            // Another agent may have migrated between our read and our lock.
            let now: usize = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
            if now > i {
                continue;
            }
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i + 1)?;
            tx.commit()?;
        }
        Ok(())
    }
}

/// Creates the file with mode 0600 before SQLite does (SQLite gives its WAL
/// and shm files the database file's mode).
fn create_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| StoreError::Create {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        // A new data dir is private too: it holds logs and checkpoints.
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(err)?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(err(e)),
    }
}

impl Sink for SqliteStore {
    fn write(&mut self, ctx: &RunContext, batch: &Batch) -> Result<(), SinkError> {
        let tx = self.conn.transaction()?;
        {
            let mut logs = tx.prepare_cached(
                "INSERT OR IGNORE INTO pipeline_logs (experiment_id, run_id, origin, seq, timestamp, level, logger, message, traceback, exception_type, exception_message, stream, source, fields, error_group) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            )?;
            for r in &batch.logs {
                let rec = &r.record;
                logs.execute(params![
                    ctx.experiment_id,
                    ctx.run_id,
                    r.origin,
                    r.seq as i64,
                    format_ts(&rec.timestamp),
                    rec.level.as_str(),
                    rec.logger,
                    rec.message,
                    rec.traceback,
                    rec.exception_type,
                    rec.exception_message,
                    rec.stream.as_str(),
                    rec.source,
                    rec.fields,
                    pmon_core::parse::fingerprint::error_group(rec),
                ])?;
            }
            let mut events = tx.prepare_cached(
                "INSERT OR IGNORE INTO pipeline_events (event_id, experiment_id, run_id, timestamp, event_type, details) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for e in &batch.events {
                events.execute(params![
                    e.id,
                    ctx.experiment_id,
                    ctx.run_id,
                    format_ts(&e.timestamp),
                    e.event_type,
                    e.details.to_string(),
                ])?;
            }
            let mut progress = tx.prepare_cached(
                "INSERT INTO pipeline_progress (experiment_id, run_id, task, current, total, unit, rate, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (run_id, task) DO UPDATE SET current = excluded.current, total = excluded.total, unit = excluded.unit, rate = excluded.rate, updated_at = excluded.updated_at",
            )?;
            for p in &batch.progress {
                progress.execute(params![
                    ctx.experiment_id,
                    ctx.run_id,
                    p.task,
                    p.current,
                    p.total,
                    p.unit,
                    p.rate,
                    format_ts(&p.updated_at),
                ])?;
            }
            write_metrics(&tx, ctx, &batch.metrics)?;
            write_checkpoints(&tx, &ctx.experiment_id, &batch.checkpoints)?;
        }
        tx.commit()?;
        tracing::debug!(target: "sink", run = %ctx.run_id, records = batch.logs.len(), events = batch.events.len(), read_positions = batch.checkpoints.len(), "batch committed to the SQLite store");
        Ok(())
    }
}

fn write_metrics(
    conn: &Connection,
    ctx: &RunContext,
    metrics: &[crate::sink::SeqMetric],
) -> rusqlite::Result<()> {
    if metrics.is_empty() {
        return Ok(());
    }
    let mut stmt = conn.prepare_cached(
        "INSERT OR IGNORE INTO pipeline_metrics (experiment_id, run_id, seq, timestamp, metric_type, name, value, unit, step) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    for m in metrics {
        let sample = &m.metric;
        stmt.execute(params![
            ctx.experiment_id,
            ctx.run_id,
            m.seq as i64,
            format_ts(&sample.timestamp),
            sample.metric_type.as_str(),
            sample.name,
            sample.value,
            sample.unit,
            sample.step,
        ])?;
    }
    Ok(())
}

/// Records file read positions; called inside the transaction that stores
/// (or spools) the records up to them.
pub fn write_checkpoints(
    conn: &Connection,
    experiment_id: &str,
    checkpoints: &[crate::sink::Checkpoint],
) -> rusqlite::Result<()> {
    if checkpoints.is_empty() {
        return Ok(());
    }
    let mut stmt = conn.prepare_cached(
        "INSERT INTO pmon_checkpoints (experiment_id, dev, ino, head, generation, path, offset, updated_at, earlier_head, earlier_offset) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (experiment_id, dev, ino) DO UPDATE SET head = excluded.head, generation = excluded.generation, path = excluded.path, offset = excluded.offset, updated_at = excluded.updated_at, earlier_head = excluded.earlier_head, earlier_offset = excluded.earlier_offset",
    )?;
    let now = format_ts(&chrono::Utc::now());
    for c in checkpoints {
        stmt.execute(params![
            experiment_id,
            c.dev as i64,
            c.ino as i64,
            c.head,
            c.generation as i64,
            c.path,
            c.offset as i64,
            now,
            c.earlier.as_ref().map(|(h, _)| h),
            c.earlier.as_ref().map(|(_, o)| *o as i64),
        ])?;
    }
    Ok(())
}

/// Levels at and above `level`, for `level IN (…)` filters.
pub fn levels_from(level: Level) -> Vec<&'static str> {
    Level::ALL
        .iter()
        .filter(|l| **l >= level)
        .map(|l| l.as_str())
        .collect()
}

/// Where `PMON_TRACE_SQL` asked for the statements of a reading store to
/// be written (`bench/query_bench.py` checks each one's plan with them).
static TRACE_FILE: std::sync::OnceLock<std::sync::Mutex<std::fs::File>> =
    std::sync::OnceLock::new();

/// With `PMON_TRACE_SQL=FILE`, appends every statement the connection runs,
/// its values filled in, to FILE: a diagnostic hook, not configuration.
fn trace_statements(conn: &mut Connection) {
    let Some(path) = std::env::var_os("PMON_TRACE_SQL") else {
        return;
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path);
    if let Ok(file) = file {
        let _ = TRACE_FILE.set(std::sync::Mutex::new(file));
        conn.trace_v2(
            rusqlite::trace::TraceEventCodes::SQLITE_TRACE_STMT,
            Some(write_trace),
        );
    }
}

fn write_trace(event: rusqlite::trace::TraceEvent<'_>) {
    use std::io::Write;
    let rusqlite::trace::TraceEvent::Stmt(stmt, sql) = event else {
        return;
    };
    let sql = stmt.expanded_sql().unwrap_or_else(|| sql.to_string());
    if let Some(Ok(mut file)) = TRACE_FILE.get().map(|f| f.lock()) {
        let _ = writeln!(file, "{}", sql.replace('\n', " "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::SeqRecord;
    use pmon_core::record::{LogRecord, StreamKind};

    /// A first `wrap` creating the store while a `query` opens it: each
    /// opener must get the store, migrated once, never a "locked" error.
    #[test]
    fn many_openers_of_a_new_store_at_once_all_succeed() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("pmon.db");
            let start = std::sync::Arc::new(std::sync::Barrier::new(6));
            let openers: Vec<_> = (0..6)
                .map(|_| {
                    let (path, start) = (path.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        SqliteStore::open(&path)
                            .map(|_| ())
                            .map_err(|e| e.to_string())
                    })
                })
                .collect();
            for opener in openers {
                assert_eq!(opener.join().unwrap(), Ok(()));
            }
            let store = SqliteStore::open(&path).unwrap();
            let version: usize = store
                .conn()
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .unwrap();
            assert_eq!(version, MIGRATIONS.len());
        }
    }

    #[test]
    fn store_is_private_wal_and_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pmon.db");
        let mut store = SqliteStore::open(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let mode: String = store
            .conn()
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let ctx = RunContext {
            experiment_id: "e".into(),
            run_id: "r".into(),
        };
        let batch = Batch {
            logs: vec![SeqRecord {
                origin: "stdout".into(),
                seq: 0,
                record: LogRecord::plain("nul\u{2400}".into(), StreamKind::Stdout, "stdout"),
            }],
            ..Batch::default()
        };
        store.write(&ctx, &batch).unwrap();
        store.write(&ctx, &batch).unwrap();
        let n: i64 = store
            .conn()
            .query_row("SELECT count(*) FROM pipeline_logs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
        drop(store);
        // Reopening does not migrate again.
        SqliteStore::open(&path).unwrap();
    }

    #[test]
    fn the_spec_queries_run_verbatim() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("pmon.db")).unwrap();
        store
            .conn()
            .prepare(
                "SELECT timestamp, level, message, traceback FROM pipeline_logs
WHERE experiment_id = 'my_experiment' AND level IN ('ERROR', 'CRITICAL')
ORDER BY timestamp DESC LIMIT 10;",
            )
            .unwrap();
        store
            .conn()
            .prepare(
                "SELECT * FROM pipeline_progress_summary WHERE experiment_id = 'my_experiment';",
            )
            .unwrap();
    }
}
