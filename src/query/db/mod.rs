//! Where a query reads from: the embedded SQLite store, or PostgreSQL when a
//! database is configured.
//!
//! The commands format and print in one place and ask [`QueryDb`] for the
//! handful of reads they need (runs, experiment names, error counts,
//! progress, log records matching a filter). Each read is written once per
//! store, side by side, so that both answer with the same rows in the same
//! order and the same text: timestamps become RFC 3339 UTC with microseconds
//! through [`format_ts`] either way, and names sort by code point (`COLLATE
//! "C"` in PostgreSQL, SQLite's default) so `list` is ordered alike.
//!
//! The stores differ in three ways that matter here, each handled below:
//! runs whose agent died are marked `lost` in SQLite but only shown as lost
//! for PostgreSQL (see [`QueryDb::runs_of`]); log records are read from
//! PostgreSQL page by page, not streamed; and PostgreSQL may make a row
//! visible after a row with a higher id, which `--follow` allows for with
//! [`QueryDb::follow_lookback`].

mod groups;
mod postgres;
mod sqlite;
mod stall;

pub use groups::GroupRow;

use super::filter::{IdBound, LogFilter, Order};
use super::rows::{LogRow, ProgressRow};
use super::sql::{Dialect, SqlValue};
use crate::app::App;
use anyhow::Context;
use pmon_core::options::Format;
use pmon_core::procinfo;
use pmon_core::run::Run;
use pmon_store::postgres::IDS_PER_BATCH;
use pmon_store::postgres::{PgError, PostgresStore};
use pmon_store::registry;
use pmon_store::spool::Spool;
use pmon_store::SqliteStore;
pub(super) use postgres::{decode_all, pg_query};
use postgres::{pg_each_log, pg_error_counts, pg_progress, pg_runs, pg_scalar, PG_RUN_COLUMNS};
use rusqlite::Connection;
use sqlite::{sqlite_each_log, sqlite_error_counts, sqlite_progress};
use sqlx::Row;
use std::collections::HashMap;

/// How many earlier polls `--follow` looks back over in PostgreSQL. Its row
/// ids come from a sequence when a row is inserted, but the row appears only
/// when its transaction commits, so with several agents writing, a row can
/// appear below an id a poll has already seen. Agents commit a batch within
/// milliseconds; two polls (half a second) covers that many times over, at
/// the cost of reading the last half second's rows again.
const PG_FOLLOW_LOOKBACK_POLLS: usize = 2;

/// The store a query reads, as the configuration says: PostgreSQL when a
/// database URL is set (the records are there, not in the local file), else
/// the embedded store.
pub enum Store {
    Embedded(SqliteStore),
    Postgres(Box<PostgresStore>),
}

impl Store {
    /// Opens the store to read. `None` when there is no embedded store yet
    /// (nothing was ever recorded here). PostgreSQL is connected at once, so
    /// an unreachable server is reported before anything is printed.
    pub fn open(app: &App) -> anyhow::Result<Option<Store>> {
        match &app.config.logging.database.url {
            Some(url) => Ok(Some(Store::Postgres(Box::new(connect_postgres(url)?)))),
            None => Ok(open_embedded(app)?.map(Store::Embedded)),
        }
    }

    pub fn db(&mut self) -> QueryDb<'_> {
        match self {
            Store::Embedded(store) => QueryDb::Sqlite(store.conn()),
            Store::Postgres(pg) => QueryDb::Postgres(pg),
        }
    }
}

/// The embedded store if it exists, with an error that says where we looked.
fn open_embedded(app: &App) -> anyhow::Result<Option<SqliteStore>> {
    app.existing_store().with_context(|| {
        format!(
            "could not read the store in {}; check its permissions, or pass --data-dir",
            app.data_dir.root().display()
        )
    })
}

/// Connects to PostgreSQL; a server that does not answer is an error naming
/// the (password-masked) URL and what to check.
fn connect_postgres(url: &str) -> anyhow::Result<PostgresStore> {
    let mut pg = PostgresStore::new(url)?;
    match pg.connect() {
        Ok(_) => Ok(pg),
        Err(err @ PgError::Connect { .. }) => Err(anyhow::anyhow!(
            "{err}; `query` reads the records from this database, so check that the server is running and that the URL is right (--database-url, PMON_DATABASE_URL or logging.database.url); records written while it is unreachable wait in the local spool (pmon-agent spool status)"
        )),
        Err(err) => Err(err.into()),
    }
}

/// With PostgreSQL configured, records the agents here could not ship yet
/// wait in the local spool, and a reader would take their absence for lost
/// logs: says so on stderr, in text mode. Scripts (`--format json`) get no
/// note; `query status` reports the count as `spool_pending`.
pub fn note_spooled_records(app: &App, store: &Store, format: Format) {
    if format != Format::Text || !matches!(store, Store::Postgres(_)) {
        return;
    }
    let Ok(Some(local)) = app.existing_store() else {
        return;
    };
    let Ok(stats) = Spool::new(local).stats() else {
        return;
    };
    if let Some(note) = spool_note(stats.pending, stats.batches) {
        eprintln!("{note}");
    }
}

/// The note for `pending` records in `batches` spooled batches, if any wait.
/// A batch may hold only a run's end, events or progress (no records).
pub fn spool_note(pending: u64, batches: u64) -> Option<String> {
    let shown_once = "they appear here once PostgreSQL has them (pmon-agent spool replay)";
    match (pending, batches) {
        (0, 0) => None,
        (0, _) => Some(format!(
            "note: {} still waiting in the local spool (run states, events or progress); {shown_once}",
            plural(batches, "batch is", "batches are")
        )),
        (n, _) => Some(format!(
            "note: {} still waiting in the local spool; {shown_once}",
            plural(n, "record is", "records are")
        )),
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// The reads the query commands need, from whichever store holds the records.
pub enum QueryDb<'a> {
    Sqlite(&'a Connection),
    Postgres(&'a mut PostgresStore),
}

impl QueryDb<'_> {
    pub fn dialect(&self) -> Dialect {
        match self {
            QueryDb::Sqlite(_) => Dialect::Sqlite,
            QueryDb::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Where the records are, for messages: the data dir, or the
    /// password-masked URL of the database.
    pub fn location(&self) -> String {
        match self {
            QueryDb::Sqlite(conn) => conn
                .path()
                .filter(|path| !path.is_empty())
                .and_then(|path| std::path::Path::new(path).parent())
                .map_or("the embedded store".to_string(), |dir| {
                    dir.display().to_string()
                }),
            QueryDb::Postgres(pg) => format!("PostgreSQL at {}", pg.display_url()),
        }
    }

    /// All runs of an experiment, oldest first, with runs whose agent on this
    /// host died shown as `lost`. SQLite records that (the store is this
    /// host's own); PostgreSQL is shared by many hosts and may be read by a
    /// read-only user, so there the state is only changed in what we show.
    pub fn runs_of(&mut self, experiment: &str) -> anyhow::Result<Vec<Run>> {
        let host = procinfo::hostname();
        match self {
            QueryDb::Sqlite(conn) => {
                registry::mark_lost(conn, Some(experiment), &host)
                    .context("could not update the state of runs whose agent is gone")?;
                registry::runs_of(conn, experiment).with_context(|| {
                    format!("could not read the runs of experiment '{experiment}'")
                })
            }
            QueryDb::Postgres(pg) => {
                let sql = format!(
                    "SELECT {PG_RUN_COLUMNS} FROM pipeline_runs WHERE experiment_id = $1 ORDER BY ordinal, started_at, run_id"
                );
                let query = pg_query(&sql, vec![SqlValue::Text(experiment.to_string())]);
                let runs = pg_runs(pg, query, &host).with_context(|| {
                    format!("could not read the runs of experiment '{experiment}'")
                })?;
                Ok(runs)
            }
        }
    }

    /// The latest run of every experiment, by experiment name.
    pub fn latest_runs(&mut self) -> anyhow::Result<Vec<Run>> {
        let host = procinfo::hostname();
        match self {
            QueryDb::Sqlite(conn) => {
                registry::mark_lost(conn, None, &host)
                    .context("could not update the state of runs whose agent is gone")?;
                registry::latest_runs(conn).context("could not read the runs")
            }
            QueryDb::Postgres(pg) => {
                // Ordinals are counted per host, so two hosts may both have a
                // run 1: the later start breaks the tie.
                let sql = format!(
                    "SELECT * FROM (SELECT DISTINCT ON (experiment_id) {PG_RUN_COLUMNS} FROM pipeline_runs
                     ORDER BY experiment_id, ordinal DESC, started_at DESC, run_id DESC) latest
                     ORDER BY experiment_id COLLATE \"C\""
                );
                pg_runs(pg, pg_query(&sql, Vec::new()), &host).context("could not read the runs")
            }
        }
    }

    /// The names of all experiments.
    pub fn experiments(&mut self) -> anyhow::Result<Vec<String>> {
        let read = match self {
            QueryDb::Sqlite(conn) => registry::experiments(conn).map_err(anyhow::Error::from),
            QueryDb::Postgres(pg) => {
                let sql = "SELECT experiment_id FROM pipeline_runs GROUP BY experiment_id ORDER BY experiment_id COLLATE \"C\"";
                pg.fetch_all(pg_query(sql, Vec::new()))
                    .map_err(anyhow::Error::from)
                    .and_then(|rows| decode_all(&rows, |row| row.try_get(0)))
            }
        };
        read.context("could not list the experiments")
    }

    /// ERROR and CRITICAL records of each run, by run id: one statement in
    /// PostgreSQL (a round trip per run made `query list` of 1,000
    /// experiments take 220 ms), and in both stores read from the partial
    /// index of errors by run, not from every row of the runs.
    pub fn error_counts(&mut self, runs: &[Run]) -> anyhow::Result<HashMap<String, u64>> {
        let counts: anyhow::Result<HashMap<String, u64>> = match self {
            QueryDb::Sqlite(conn) => sqlite_error_counts(conn, runs).map_err(anyhow::Error::from),
            QueryDb::Postgres(pg) => pg_error_counts(pg, runs).map_err(anyhow::Error::from),
        };
        counts.context("could not count the errors of the runs")
    }

    /// A run's progress, one row per task, by task name.
    pub fn progress(&mut self, run_id: &str) -> anyhow::Result<Vec<ProgressRow>> {
        let collate = match self.dialect() {
            Dialect::Sqlite => "",
            Dialect::Postgres => " COLLATE \"C\"",
        };
        let sql = format!(
            "SELECT task, current, total, unit, rate, updated_at FROM pipeline_progress WHERE run_id = {} ORDER BY task{collate}",
            self.dialect().placeholder(1)
        );
        let read = match self {
            QueryDb::Sqlite(conn) => sqlite_progress(conn, &sql, run_id),
            QueryDb::Postgres(pg) => pg
                .fetch_all(pg_query(&sql, vec![SqlValue::Text(run_id.into())]))
                .map_err(anyhow::Error::from)
                .and_then(|rows| decode_all(&rows, pg_progress)),
        };
        read.context("could not read the run's progress")
    }

    /// The highest log row id now in the store: where a follow starts from.
    /// PostgreSQL's ids are given per batch (number × 32768 + position) and
    /// its table has no b-tree on id, so there it is the end of the highest
    /// committed batch number's range, read from the ledger's index.
    pub fn max_log_id(&mut self) -> anyhow::Result<i64> {
        let max = match self {
            QueryDb::Sqlite(conn) => conn
                .query_row(
                    "SELECT coalesce(max(id), 0) FROM pipeline_logs",
                    [],
                    |row| row.get(0),
                )
                .map_err(anyhow::Error::from),
            QueryDb::Postgres(pg) => pg_scalar(
                pg,
                pg_query(
                    &format!("SELECT (greatest(max(batch), -min(batch) - 1, 0) + 1) * {IDS_PER_BATCH} - 1 FROM pipeline_batches"),
                    Vec::new(),
                ),
            ),
        };
        max.context("could not read the log records")
    }

    /// How many earlier polls `--follow` must look back over (see
    /// [`PG_FOLLOW_LOOKBACK_POLLS`]); SQLite commits rows in id order.
    pub fn follow_lookback(&self) -> usize {
        match self {
            QueryDb::Sqlite(_) => 0,
            QueryDb::Postgres(_) => PG_FOLLOW_LOOKBACK_POLLS,
        }
    }

    /// Hands the log records matching `filter` to `visit`, in `order`, until
    /// it returns `false` or the records run out. SQLite streams one
    /// statement; PostgreSQL is read in pages, each starting after the last
    /// row of the one before, so memory stays bounded and a `--limit` stops
    /// the reading early.
    pub fn each_log(
        &mut self,
        filter: &LogFilter,
        bound: IdBound,
        order: Order,
        mut visit: impl FnMut(LogRow) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        match self {
            QueryDb::Sqlite(conn) => sqlite_each_log(conn, filter, bound, order, &mut visit),
            QueryDb::Postgres(pg) => pg_each_log(pg, filter, bound, order, &mut visit),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::postgres::{each_log_paged, Page, PG_PAGE_FIRST};
    use super::*;
    use rusqlite::params_from_iter;

    #[test]
    fn the_spool_note_counts_records_or_else_batches() {
        assert_eq!(spool_note(0, 0), None);
        assert_eq!(
            spool_note(1200, 13).unwrap(),
            "note: 1200 records are still waiting in the local spool; they appear here once PostgreSQL has them (pmon-agent spool replay)"
        );
        assert!(spool_note(1, 1)
            .unwrap()
            .starts_with("note: 1 record is still"));
        assert!(spool_note(0, 2)
            .unwrap()
            .starts_with("note: 2 batches are still waiting in the local spool (run states"));
    }

    #[test]
    fn the_embedded_store_is_located_by_its_directory() {
        let (dir, store) = crate::query::tests::temp_store();
        let db = QueryDb::Sqlite(store.conn());
        assert_eq!(db.location(), dir.path().display().to_string());
    }

    /// The paging PostgreSQL reads go through, run on SQLite: every row
    /// once, in the same order as one unpaged statement, ties in time included.
    #[test]
    fn pages_cover_every_row_once_in_each_order() {
        use crate::query::tests::{insert_log, insert_run, TestLog};
        let (_dir, store) = crate::query::tests::temp_store();
        let conn = store.conn();
        insert_run(conn, "x", 1, "R1", "running");
        const TIMES: [&str; 4] = ["10:00:03", "10:00:01", "10:00:02", "10:00:01"];
        for i in 0..(3 * PG_PAGE_FIRST + 7) {
            insert_log(conn, TestLog::new("R1", TIMES[i % 4], "INFO", "line"));
        }
        let filter = LogFilter {
            experiment: "x".into(),
            ..LogFilter::default()
        };
        let mut fetch = |sql: &str, values: Vec<SqlValue>| -> anyhow::Result<Page> {
            let mut stmt = conn.prepare(sql)?;
            let rows = stmt.query_map(params_from_iter(values), LogRow::from_row)?;
            rows.map(|row| {
                let row = row?;
                let time = pmon_core::record::parse_ts(&row.timestamp).context("a time")?;
                Ok((row, time))
            })
            .collect()
        };
        for order in [Order::OldestFirst, Order::NewestFirst, Order::Arrival] {
            let bound = IdBound::AtMost(i64::MAX);
            let mut unpaged = Vec::new();
            sqlite_each_log(conn, &filter, bound, order, &mut |row| {
                unpaged.push(row.id);
                Ok(true)
            })
            .unwrap();
            let mut paged = Vec::new();
            each_log_paged(
                Dialect::Sqlite,
                &filter,
                bound,
                order,
                &mut fetch,
                &mut |row| {
                    paged.push(row.id);
                    Ok(true)
                },
            )
            .unwrap();
            assert_eq!(paged.len(), 3 * PG_PAGE_FIRST + 7, "{order:?}");
            assert_eq!(paged, unpaged, "{order:?}");
        }
        let mut first_two = Vec::new();
        each_log_paged(
            Dialect::Sqlite,
            &filter,
            IdBound::AtMost(i64::MAX),
            Order::NewestFirst,
            &mut fetch,
            &mut |row| {
                first_two.push(row.id);
                Ok(first_two.len() < 2)
            },
        )
        .unwrap();
        assert_eq!(first_two.len(), 2);
    }

    #[test]
    fn placeholders_and_functions_per_dialect() {
        assert_eq!(Dialect::Sqlite.placeholder(3), "?");
        assert_eq!(Dialect::Postgres.placeholder(3), "$3");
        assert_eq!(Dialect::Postgres.timestamp_param("$2"), "$2::timestamptz");
        assert_eq!(Dialect::Sqlite.find_function(), "instr");
    }
}
