//! The PostgreSQL store, written through sqlx on a small single-threaded tokio
//! runtime owned by the sink thread (the rest of the agent is plain threads).
//!
//! Log records go in with a binary `COPY … FROM STDIN` straight into the
//! day-partitioned `pipeline_logs` ([`partitions`]); the `pipeline_batches`
//! ledger, written in the same transaction, makes a batch written twice —
//! replayed after a crash between PostgreSQL's commit and the spool's delete
//! — land once ([`ledger`]). Events carry a ULID, metric samples a unique
//! key, progress and runs are upserts, so the whole batch is idempotent.
//! Values PostgreSQL would reject (NUL bytes) are made safe first, so one
//! bad row never fails a batch. Every key and conflict target names
//! experiment_id, so the same SQL runs on a Citus cluster distributed by it.

mod check;
mod citus;
pub mod connect;
mod copy;
pub mod failure;
mod ledger;
pub mod partitions;
mod write;

#[cfg(test)]
mod stream_tests;

pub use check::Inspection;
pub use citus::DistributeReport;

/// Ids per batch number: a log row's id is `batch × IDS_PER_BATCH +
/// position` (see migrations/postgres/0005), which the queries read back.
pub const IDS_PER_BATCH: i64 = ledger::ROWS_PER_NUMBER as i64;

use crate::sink::BatchFeed;
use crate::sink::{Batch, RunContext};
use connect::Target;
use failure::{Failure, Lasting};
use pmon_core::config::redact_url;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::PgConnection;
use sqlx::{Connection, Row};
use std::time::{Duration, Instant};

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../../../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "metrics",
        include_str!("../../../../migrations/postgres/0002_metrics.sql"),
    ),
    (
        3,
        "fields",
        include_str!("../../../../migrations/postgres/0003_fields.sql"),
    ),
    (
        4,
        "errors by run",
        include_str!("../../../../migrations/postgres/0004_errors_by_run.sql"),
    ),
    (
        5,
        "partitioned",
        include_str!("../../../../migrations/postgres/0005_partitioned.sql"),
    ),
    (
        6,
        "error groups",
        include_str!("../../../../migrations/postgres/0006_error_groups.sql"),
    ),
    (
        7,
        "one brin",
        include_str!("../../../../migrations/postgres/0007_one_brin.sql"),
    ),
];

/// The oldest PostgreSQL we support (generated columns, `ON CONFLICT`, JSONB…).
const MIN_SERVER_VERSION: i64 = 130000;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("the database URL {url} is not valid: {reason}; it should look like postgres://user@host:5432/dbname")]
    BadUrl { url: String, reason: String },
    #[error("could not connect to PostgreSQL at {url}: {reason}")]
    Connect { url: String, reason: String },
    /// The server answered and turned the agent away for good (see
    /// [`failure`]): told once, with the fix.
    #[error("PostgreSQL at {url} refused the agent: {reason}")]
    Refused { url: String, reason: String },
    #[error("PostgreSQL at {url} is version {version}; pmon-agent needs 13 or newer")]
    TooOld { url: String, version: String },
    #[error("could not apply migrations/postgres to {url}: {reason}")]
    Migrate { url: String, reason: String },
    #[error("writing to PostgreSQL at {url} failed: {reason}")]
    Write { url: String, reason: String },
    #[error("PostgreSQL at {url} did not answer within {}", humantime::format_duration(*.after))]
    Timeout { url: String, after: Duration },
    #[error("reading from PostgreSQL at {url} failed: {reason}")]
    Read { url: String, reason: String },
    #[error("PostgreSQL at {url} is not a Citus coordinator (no citus extension in this database); connect to the coordinator, or run CREATE EXTENSION citus there first")]
    NotCitus { url: String },
}

impl PgError {
    /// Whether it lasts until someone changes something (a refusal, a
    /// server too old), rather than passing by itself (an outage).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            PgError::Refused { .. }
                | PgError::TooOld { .. }
                | PgError::BadUrl { .. }
                | PgError::NotCitus { .. }
        )
    }

    /// A failure, as the error of an operation (`what`) on `url`.
    fn of(url: &str, failure: Failure, what: impl FnOnce(String, String) -> PgError) -> PgError {
        match failure.lasting {
            Lasting::Refusal => PgError::Refused {
                url: url.to_string(),
                reason: failure.text,
            },
            Lasting::Outage => what(url.to_string(), failure.text),
        }
    }
}

fn connect_error(url: String, reason: String) -> PgError {
    PgError::Connect { url, reason }
}

pub struct PostgresStore {
    rt: tokio::runtime::Runtime,
    target: Target,
    /// The URL with its password masked: the only form that is ever shown.
    display_url: String,
    conn: Option<PgConnection>,
    /// Day partitions known to exist.
    partitions: partitions::Partitions,
    /// When set, no connect or write waits past this moment (shutdown).
    deadline: Option<Instant>,
}

impl PostgresStore {
    /// Parses the URL; does not connect (that happens on first use).
    pub fn new(url: &str) -> Result<PostgresStore, PgError> {
        let display_url = redact_url(url);
        let bad_url = |reason: String| PgError::BadUrl {
            url: display_url.clone(),
            reason: scrub(&reason, url),
        };
        pmon_core::config::check_database_url(url).map_err(&bad_url)?;
        let target = Target::parse(url).map_err(&bad_url)?.map_options(|o| {
            o.application_name("pmon-agent")
                // PgBouncer refuses startup parameters it does not know.
                .extra_float_digits(None)
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .enable_io()
            .build()
            .map_err(|e| PgError::Connect {
                url: display_url.clone(),
                reason: e.to_string(),
            })?;
        Ok(PostgresStore {
            rt,
            target,
            display_url,
            conn: None,
            partitions: partitions::Partitions::default(),
            deadline: None,
        })
    }

    /// Bounds every later connect and write by `deadline` (`None`: only by
    /// their own timeouts). Used at shutdown, which has a time limit.
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    /// `wait`, cut short by the deadline if one is set.
    fn limit(&self, wait: Duration) -> Duration {
        self.deadline.map_or(wait, |d| {
            wait.min(d.saturating_duration_since(Instant::now()))
        })
    }

    pub fn display_url(&self) -> &str {
        &self.display_url
    }

    /// Connects (if needed), checks the server version and applies migrations.
    /// Returns how many migrations were applied by this call.
    pub fn connect(&mut self) -> Result<usize, PgError> {
        if self.conn.is_some() {
            return Ok(0);
        }
        let url = self.display_url.clone();
        let target = self.target.clone();
        let wait = self.limit(CONNECT_TIMEOUT);
        let result = self.rt.block_on(async move {
            let mut conn = tokio::time::timeout(wait, connect::connect(&target))
                .await
                .map_err(|_| PgError::Connect {
                    url: url.clone(),
                    reason: format!("no answer within {}", humantime::format_duration(wait)),
                })?
                .map_err(|f| PgError::of(&url, f, connect_error))?;
            check_version(&mut conn, &url, &target).await?;
            let applied = migrate(&mut conn, &url, &target).await?;
            Ok::<_, PgError>((conn, applied))
        });
        let (conn, applied) = match result {
            Ok(done) => done,
            Err(e) => {
                tracing::debug!(target: "sink", url = %self.display_url, error = %e, "PostgreSQL did not take the connection");
                return Err(e);
            }
        };
        tracing::info!(target: "sink", url = %self.display_url, migrations_applied = applied, "connected to PostgreSQL");
        self.conn = Some(conn);
        no_delay_on_tcp_sockets();
        Ok(applied)
    }

    /// Writes one batch in one transaction. Any error drops the connection, so
    /// the next call starts from a clean one.
    pub fn write(&mut self, ctx: &RunContext, batch: &Batch) -> Result<(), PgError> {
        self.write_fed(ctx, batch, None)
    }

    /// Writes `batch` and, in the same transaction, the batches of the same
    /// run that `feed` hands over while it is open (see [`BatchFeed`]). On
    /// an error none of them is stored.
    pub fn write_fed(
        &mut self,
        ctx: &RunContext,
        batch: &Batch,
        feed: Option<&mut dyn BatchFeed>,
    ) -> Result<(), PgError> {
        let mut conn = self.take_conn()?;
        let mut partitions = std::mem::take(&mut self.partitions);
        let result = self.bounded(
            write::write_with_partitions(&mut conn, &mut partitions, ctx, batch, feed),
            |url, reason| PgError::Write { url, reason },
        );
        self.partitions = partitions;
        match &result {
            Ok(()) => {
                tracing::debug!(target: "sink", run = %ctx.run_id, records = batch.logs.len(), events = batch.events.len(), metrics = batch.metrics.len(), "batch committed to PostgreSQL");
                self.conn = Some(conn);
            }
            Err(e) => {
                tracing::debug!(target: "sink", run = %ctx.run_id, records = batch.logs.len(), error = %e, "batch not written to PostgreSQL");
                self.partitions.forget();
            }
        }
        result
    }

    /// Makes the day partitions of today and the next `days` days.
    pub fn make_partitions_ahead(&mut self, days: u64) -> Result<(), PgError> {
        let mut conn = self.take_conn()?;
        let mut partitions = std::mem::take(&mut self.partitions);
        let today = chrono::Utc::now();
        let result = self.bounded(
            async {
                for table in partitions::TABLES {
                    let days = (0..=days).map(|d| today + chrono::Days::new(d));
                    partitions.ensure(&mut conn, table, days).await?;
                }
                Ok(())
            },
            |url, reason| PgError::Write { url, reason },
        );
        self.partitions = partitions;
        if result.is_ok() {
            self.conn = Some(conn);
        }
        result
    }

    /// Closes the connection, if there is one: an agent with nothing to
    /// write for a while need not hold one of the server's connections (a
    /// hundred idle tails would hold a hundred). The next write connects.
    pub fn disconnect(&mut self) {
        self.partitions.forget();
        if let Some(conn) = self.conn.take() {
            let _ = self.rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(2), conn.close()).await
            });
        }
    }

    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    /// The connection, connecting (and migrating) first if needed; the caller
    /// puts it back only after a success.
    fn take_conn(&mut self) -> Result<PgConnection, PgError> {
        self.connect()?;
        self.conn.take().ok_or_else(|| PgError::Connect {
            url: self.display_url.clone(),
            reason: "no connection".into(),
        })
    }

    /// Runs one database operation on the private runtime, at most
    /// `WRITE_TIMEOUT` (less when a deadline is set).
    fn bounded<T>(
        &self,
        op: impl std::future::Future<Output = sqlx::Result<T>>,
        error: impl FnOnce(String, String) -> PgError,
    ) -> Result<T, PgError> {
        let url = self.display_url.clone();
        let after = self.limit(WRITE_TIMEOUT);
        let peer = self.target.peer();
        self.rt.block_on(async {
            match tokio::time::timeout(after, op).await {
                Err(_) => Err(PgError::Timeout { url, after }),
                Ok(Err(e)) => Err(PgError::of(&url, failure::describe(&e, &peer), error)),
                Ok(Ok(value)) => Ok(value),
            }
        })
    }
}

/// The read side, for `pmon-agent query`: the commands that answer from the
/// records this store wrote.
impl PostgresStore {
    /// Runs one query and returns all its rows, connecting (and migrating)
    /// first if needed. Callers page large reads (`LIMIT` plus a keyset), so
    /// one call holds a bounded number of rows and one page may take at most
    /// `WRITE_TIMEOUT`, the bound a write has too. Any error drops the
    /// connection, so the next call starts from a clean one, as `write` does.
    pub fn fetch_all(
        &mut self,
        query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<Vec<sqlx::postgres::PgRow>, PgError> {
        let mut conn = self.take_conn()?;
        let result = self.bounded(query.fetch_all(&mut conn), |url, reason| PgError::Read {
            url,
            reason,
        });
        if result.is_ok() {
            self.conn = Some(conn);
        }
        result
    }
}

impl PostgresStore {
    /// Whether the ledger holds the record `seq` of `origin` in this run:
    /// whether the transaction that carried it committed.
    pub fn ledger_holds(
        &mut self,
        experiment_id: &str,
        run_id: &str,
        origin: &str,
        seq: u64,
    ) -> Result<bool, PgError> {
        let rows = self.fetch_all(
            unnamed(
                "SELECT 1 FROM pipeline_batches WHERE experiment_id = $1 AND run_id = $2 AND origin = $3
                 AND last_seq >= $4 AND first_seq <= $4 LIMIT 1",
            )
            .bind(experiment_id)
            .bind(run_id)
            .bind(origin)
            .bind(seq as i64),
        )?;
        Ok(!rows.is_empty())
    }
}

/// Sets TCP_NODELAY on this process's TCP sockets (its connections to
/// PostgreSQL; sqlx 0.9 does not, and does not hand out the socket). Without
/// it, the small last piece of a COPY and its CopyDone can wait for the
/// server's delayed ACK: 40 ms a batch, which made some replays 3x slower.
fn no_delay_on_tcp_sockets() {
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    for fd in fds.filter_map(Result::ok) {
        let Some(fd) = fd.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let is_socket = std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
        if is_socket {
            let on: libc::c_int = 1;
            // SAFETY: setsockopt reads `on` for its length; a socket that is
            // not TCP refuses the option, which is fine.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::IPPROTO_TCP,
                    libc::TCP_NODELAY,
                    (&on as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
    }
}

/// Removes the URL (and so its password) from an error text, just in case.
fn scrub(text: &str, url: &str) -> String {
    text.replace(url, &redact_url(url))
}

async fn check_version(conn: &mut PgConnection, url: &str, target: &Target) -> Result<(), PgError> {
    let row = unnamed(
        "SELECT current_setting('server_version_num')::bigint, current_setting('server_version')",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| PgError::of(url, failure::describe(&e, &target.peer()), connect_error))?;
    let num: i64 = row.get(0);
    if num < MIN_SERVER_VERSION {
        return Err(PgError::TooOld {
            url: url.to_string(),
            version: row.get(1),
        });
    }
    Ok(())
}

async fn migrate(conn: &mut PgConnection, url: &str, target: &Target) -> Result<usize, PgError> {
    let migrations = MIGRATIONS
        .iter()
        .map(|(v, d, sql)| {
            Migration::new(
                *v,
                (*d).into(),
                MigrationType::Simple,
                (*sql).into_sql_str(),
                false,
            )
        })
        .collect();
    let migrator = Migrator::with_migrations(migrations);
    let before = applied_count(conn).await;
    // Nothing pending (every connect but the first): the migrator is not run,
    // so it takes no session advisory lock, which behind a PgBouncer in
    // transaction pooling would stay held on some server connection.
    if before >= MIGRATIONS.len() {
        return Ok(0);
    }
    migrator.run(&mut *conn).await.map_err(|e| {
        let failure = match &e {
            sqlx::migrate::MigrateError::Execute(e)
            | sqlx::migrate::MigrateError::ExecuteMigration(e, _) => {
                failure::describe(e, &target.peer())
            }
            other => Failure {
                lasting: Lasting::Refusal,
                text: failure::without_location(&other.to_string()),
            },
        };
        PgError::of(url, failure, |url, reason| PgError::Migrate { url, reason })
    })?;
    Ok(applied_count(conn).await.saturating_sub(before))
}

use sqlx::SqlSafeStr;

/// A statement sent unnamed (parsed each time, never kept on the server):
/// behind a PgBouncer in transaction pooling, a named prepared statement
/// lands on whichever server connection is lent next ("prepared statement
/// sqlx_s_1 already exists").
pub fn unnamed(
    sql: &'static str,
) -> sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(sql).persistent(false)
}

/// Migrations applied so far; 0 on a database that has none (asked
/// without naming `_sqlx_migrations` when it does not exist, which would
/// leave an error in the server's log at every first connect).
async fn applied_count(conn: &mut PgConnection) -> usize {
    let exists = unnamed("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await
        .is_ok_and(|r| r.get::<bool, _>(0));
    if !exists {
        return 0;
    }
    unnamed("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&mut *conn)
        .await
        .map(|r| r.get::<i64, _>(0) as usize)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_urls_never_show_the_password() {
        let err = PostgresStore::new("postgres://u:s3cret@host:notaport/db")
            .err()
            .unwrap();
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    /// From migration 7 on, a migration may meet tables `db distribute` has
    /// distributed. A migration runs as one simple query, and Citus sends
    /// DDL on a distributed table to the workers with the text of the query
    /// it came in, which they refuse if it holds several statements ("cannot
    /// insert multiple commands into a prepared statement", seen on Citus
    /// 13.2 with 0007 as three statements). So each is one DO block.
    #[test]
    fn migrations_after_distribution_are_one_statement_each() {
        for (version, description, sql) in MIGRATIONS.iter().filter(|m| m.0 >= 7) {
            let code: String = sql
                .lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n");
            let code = code.trim();
            assert!(
                code.starts_with("DO $$")
                    && code.ends_with("END $$;")
                    && code.matches("$$").count() == 2,
                "migration {version} ({description}) must be one DO $$ … END $$; block:\n{code}"
            );
        }
    }
}
