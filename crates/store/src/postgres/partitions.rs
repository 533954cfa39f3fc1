//! Day partitions of `pipeline_logs` and `pipeline_metrics`, made by the
//! agent before the first row of a day is written.
//!
//! No extension (pg_partman, TimescaleDB) is needed: each partition is one
//! `CREATE TABLE … PARTITION OF`, named `<table>_pYYYYMMDD` and covering one
//! UTC day. The next day's partition is made ahead, so at midnight no writer
//! waits for the lock that making one takes. Rows of an old day (a log file
//! read long after it was written) get their day's partition like any other;
//! days before a schema upgrade are covered by the `…_legacy` partition, and
//! rows written by hand for a day with no partition land in `…_default`.
//! Two agents making the same partition at once is harmless: the loser sees
//! "already exists" and goes on.

use chrono::{DateTime, Days, NaiveDate, Utc};
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Executor, Row};
use std::collections::HashSet;

/// The partitioned tables.
pub const TABLES: [&str; 2] = ["pipeline_logs", "pipeline_metrics"];

/// The partitions this connection knows exist (or are covered otherwise).
#[derive(Debug, Default)]
pub struct Partitions {
    known: HashSet<(&'static str, NaiveDate)>,
    loaded: bool,
}

/// The partition of `table` holding `day`.
pub fn name(table: &str, day: NaiveDate) -> String {
    format!("{table}_p{}", day.format("%Y%m%d"))
}

/// The day a partition name stands for, if it is one of ours.
pub fn day_of(table: &str, partition: &str) -> Option<NaiveDate> {
    let digits = partition.strip_prefix(table)?.strip_prefix("_p")?;
    NaiveDate::parse_from_str(digits, "%Y%m%d").ok()
}

impl Partitions {
    /// Forgets what is known (after a write met a missing partition: someone
    /// dropped it, e.g. `db prune`).
    pub fn forget(&mut self) {
        self.known.clear();
        self.loaded = false;
    }

    /// Makes sure `table` has a partition for each of `times`' days, and for
    /// today and tomorrow.
    pub async fn ensure(
        &mut self,
        conn: &mut PgConnection,
        table: &'static str,
        times: impl Iterator<Item = DateTime<Utc>>,
    ) -> sqlx::Result<()> {
        if !self.loaded {
            self.load(conn).await?;
        }
        let today = Utc::now().date_naive();
        let mut days: Vec<NaiveDate> = times
            .map(|t| t.date_naive())
            .chain([today, today + Days::new(1)])
            .filter(|d| !self.known.contains(&(table, *d)))
            .collect();
        days.sort();
        days.dedup();
        for day in days {
            create(conn, table, day).await?;
            self.known.insert((table, day));
        }
        Ok(())
    }

    /// Whether every day `batch` needs has a partition known to exist.
    pub fn cover(&self, batch: &crate::sink::Batch) -> bool {
        self.cover_days(
            "pipeline_logs",
            batch.logs.iter().map(|r| r.record.timestamp),
        ) && self.cover_days(
            "pipeline_metrics",
            batch.metrics.iter().map(|m| m.metric.timestamp),
        )
    }

    /// Asked of every record a transaction takes, whose days come in runs:
    /// one look-up per run of the same day.
    fn cover_days(&self, table: &'static str, times: impl Iterator<Item = DateTime<Utc>>) -> bool {
        let mut last = None;
        times.map(|t| t.date_naive()).all(|day| {
            let seen = last == Some(day);
            last = Some(day);
            seen || self.known.contains(&(table, day))
        })
    }

    async fn load(&mut self, conn: &mut PgConnection) -> sqlx::Result<()> {
        for table in TABLES {
            let rows = super::unnamed(
                "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                 WHERE i.inhparent = $1::regclass",
            )
            .bind(table)
            .fetch_all(&mut *conn)
            .await?;
            for row in rows {
                if let Some(day) = day_of(table, &row.get::<String, _>(0)) {
                    self.known.insert((table, day));
                }
            }
        }
        self.loaded = true;
        Ok(())
    }
}

/// One day's partition. "Already exists" (another agent was first),
/// "would overlap" (the day lies in the legacy partition) and "default
/// partition would be violated" (rows of that day were put in the default
/// partition by hand; the day's rows keep going there) all mean the day is
/// covered.
async fn create(conn: &mut PgConnection, table: &str, day: NaiveDate) -> sqlx::Result<()> {
    let next = day + Days::new(1);
    let sql = format!(
        "CREATE TABLE IF NOT EXISTS {} PARTITION OF {table} FOR VALUES FROM ('{day} 00:00:00+00') TO ('{next} 00:00:00+00')",
        name(table, day)
    );
    match conn.execute(AssertSqlSafe(sql)).await {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(e))
            if matches!(
                e.code().as_deref(),
                Some("42P07" | "42P17" | "23505" | "23514")
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// True for the error a write meets when a row's partition is missing.
pub fn is_missing_partition(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("23514")
        && db.message().contains("no partition"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_days_round_trip() {
        let day = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
        assert_eq!(name("pipeline_logs", day), "pipeline_logs_p20261201");
        assert_eq!(
            day_of("pipeline_logs", "pipeline_logs_p20261201"),
            Some(day)
        );
        assert_eq!(day_of("pipeline_logs", "pipeline_logs_legacy"), None);
        assert_eq!(day_of("pipeline_logs", "pipeline_metrics_p20261201"), None);
    }

    #[test]
    fn a_batch_is_covered_when_every_day_of_its_records_has_a_partition() {
        let day = |d: u32| NaiveDate::from_ymd_opt(2026, 12, d).unwrap();
        let at = |d: u32| day(d).and_hms_opt(12, 0, 0).unwrap().and_utc();
        let mut partitions = Partitions::default();
        partitions.known.insert(("pipeline_logs", day(1)));
        partitions.known.insert(("pipeline_logs", day(2)));
        let logs = |days: &[u32]| days.iter().map(|&d| at(d)).collect::<Vec<_>>();
        assert!(partitions.cover_days("pipeline_logs", logs(&[1, 1, 2, 2, 1]).into_iter()));
        assert!(!partitions.cover_days("pipeline_logs", logs(&[1, 1, 3, 3]).into_iter()));
        assert!(!partitions.cover_days("pipeline_logs", logs(&[2, 2, 2, 3]).into_iter()));
        assert!(!partitions.cover_days("pipeline_metrics", logs(&[1]).into_iter()));
        assert!(partitions.cover_days("pipeline_metrics", logs(&[]).into_iter()));
    }
}
