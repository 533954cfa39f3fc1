//! Which log records a query reads: the filter (experiment, runs, level,
//! search, time, id bounds) rendered as SQL for either store.

use super::rows::LOG_COLUMNS;
use super::sql::{Dialect, SqlValue};
use chrono::{DateTime, Utc};
use pmon_store::postgres::IDS_PER_BATCH;

/// The SQL-side filters of a log query.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    pub experiment: String,
    /// `None`: every run of the experiment.
    pub run_id: Option<String>,
    /// This run and every run started after it (run ids are ULIDs, which
    /// sort by start time): what `--follow` of the latest run watches, so a
    /// restarted daemon's next run keeps coming.
    pub runs_from: Option<String>,
    /// `None`: every level.
    pub levels: Option<Vec<&'static str>>,
    /// Substring of the message or traceback (case-sensitive, like `grep`).
    pub search: Option<String>,
    /// Stored-format timestamp; records at or after it are kept.
    pub since: Option<String>,
    /// PostgreSQL: the id ranges the rows can be in, each with the time span
    /// of its rows, from the batch ledger (see [`id_ranges`]); its table has
    /// no index by experiment or run.
    pub id_ranges: Option<Vec<IdRange>>,
}

/// At most this many ranges go into one statement; beyond, the closest are
/// merged (a range may then hold other rows, which the other conditions
/// drop).
const MAX_ID_RANGES: usize = 64;

/// Ids `lo..=hi` whose rows' timestamps lie in `first..=last`: the time span
/// lets PostgreSQL skip every day partition the rows cannot be in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IdRange {
    pub lo: i64,
    pub hi: i64,
    pub first: DateTime<Utc>,
    pub last: DateTime<Utc>,
}

/// One ledger row as the queries use it: its batch number and time span.
#[derive(Debug, Clone, Copy)]
pub struct LedgerBatch {
    pub batch: i64,
    pub first: DateTime<Utc>,
    pub last: DateTime<Utc>,
}

/// The id ranges of the rows of these ledger batches: batch `b` covers ids
/// `[b × 32768, b × 32768 + 32767]`, a negative `-n` (rows stored before
/// the upgrade to the partitioned schema) `[0, n × 32768 - 1]`. Adjacent
/// ranges merge; past [`MAX_ID_RANGES`] the closest neighbours do.
pub fn id_ranges(mut batches: Vec<LedgerBatch>) -> Vec<IdRange> {
    batches.sort_unstable_by_key(|b| b.batch);
    let mut ranges: Vec<IdRange> = Vec::new();
    for b in batches {
        let (lo, hi) = if b.batch < 0 {
            (0, (-b.batch) * IDS_PER_BATCH - 1)
        } else {
            let lo = b.batch * IDS_PER_BATCH;
            (lo, lo + IDS_PER_BATCH - 1)
        };
        match ranges.last_mut() {
            Some(last) if lo <= last.hi + 1 => merge(last, hi, b.first, b.last),
            _ => ranges.push(IdRange {
                lo,
                hi,
                first: b.first,
                last: b.last,
            }),
        }
    }
    while ranges.len() > MAX_ID_RANGES {
        let closest = (1..ranges.len())
            .min_by_key(|&i| ranges[i].lo - ranges[i - 1].hi)
            .unwrap_or(1);
        let gone = ranges.remove(closest);
        merge(&mut ranges[closest - 1], gone.hi, gone.first, gone.last);
    }
    ranges
}

fn merge(range: &mut IdRange, hi: i64, first: DateTime<Utc>, last: DateTime<Utc>) {
    range.hi = range.hi.max(hi);
    range.first = range.first.min(first);
    range.last = range.last.max(last);
}

/// Which slice of the table, by row id, a query reads.
#[derive(Debug, Clone, Copy)]
pub enum IdBound {
    /// Rows that existed when the query started (the follow loop takes the rest).
    AtMost(i64),
    /// Rows added since the last poll.
    After(i64),
}

#[derive(Debug, Clone, Copy)]
pub enum Order {
    OldestFirst,
    NewestFirst,
    /// Insertion order, for `--follow`: new rows as they arrive.
    Arrival,
}

impl LogFilter {
    /// The embedded store's statement: one query streams every row.
    pub fn sql(&self, bound: IdBound, order: Order) -> (String, Vec<SqlValue>) {
        self.render(Dialect::Sqlite, bound, order, None, None)
    }

    /// The statement in `dialect`; with `page`, at most that many rows, and
    /// with `after`, only rows after that one in `order` (keyset paging).
    pub fn render(
        &self,
        dialect: Dialect,
        bound: IdBound,
        order: Order,
        after: Option<PageAfter>,
        page: Option<usize>,
    ) -> (String, Vec<SqlValue>) {
        let mut values = Vec::new();
        let mut param = |value: SqlValue| {
            values.push(value);
            dialect.placeholder(values.len())
        };
        // A follow poll reads only the few rows above the last id seen: the
        // unary `+` keeps SQLite from scanning the experiment's whole index
        // every 250 ms and makes it walk that rowid range instead.
        let column_prefix = match (dialect, bound) {
            (Dialect::Sqlite, IdBound::After(_)) => "+",
            _ => "",
        };
        let mut conditions = vec![format!(
            "{column_prefix}experiment_id = {}",
            param(SqlValue::Text(self.experiment.clone()))
        )];
        if let Some(run_id) = &self.run_id {
            let run_id = param(SqlValue::Text(run_id.clone()));
            conditions.push(format!("{column_prefix}run_id = {run_id}"));
        }
        if let Some(first) = &self.runs_from {
            let first = param(SqlValue::Text(first.clone()));
            conditions.push(format!("{column_prefix}run_id >= {first}"));
        }
        if let Some(levels) = &self.levels {
            // Written as literals (they are our own constant level names, not
            // user text) so that `ERROR`/`CRITICAL` queries can use the
            // partial index made for exactly that list.
            let quoted: Vec<String> = levels.iter().map(|l| format!("'{l}'")).collect();
            conditions.push(format!("level IN ({})", quoted.join(", ")));
        }
        if let Some(text) = &self.search {
            let find = dialect.find_function();
            let in_message = param(SqlValue::Text(text.clone()));
            let in_traceback = param(SqlValue::Text(text.clone()));
            conditions.push(format!(
                "({find}(message, {in_message}) > 0 OR {find}(coalesce(traceback, ''), {in_traceback}) > 0)"
            ));
        }
        if let Some(since) = &self.since {
            let since = dialect.timestamp_param(&param(SqlValue::Text(since.clone())));
            conditions.push(format!("timestamp >= {since}"));
        }
        if let Some(ranges) = &self.id_ranges {
            let ranges: Vec<String> = ranges
                .iter()
                .map(|r| {
                    format!(
                        "(id BETWEEN {} AND {} AND timestamp BETWEEN '{}' AND '{}')",
                        r.lo,
                        r.hi,
                        pmon_core::record::format_ts(&r.first),
                        pmon_core::record::format_ts(&r.last)
                    )
                })
                .collect();
            conditions.push(match ranges.len() {
                0 => "false".into(),
                _ => format!("({})", ranges.join(" OR ")),
            });
        }
        conditions.push(match bound {
            IdBound::AtMost(id) => format!("id <= {}", param(SqlValue::Int(id))),
            IdBound::After(id) => format!("id > {}", param(SqlValue::Int(id))),
        });
        if let Some(after) = after {
            conditions.push(after.condition(order, &mut param));
        }
        let order_by = match order {
            Order::OldestFirst => "timestamp, id",
            Order::NewestFirst => "timestamp DESC, id DESC",
            Order::Arrival => "id",
        };
        let limit = page.map_or(String::new(), |rows| format!(" LIMIT {rows}"));
        let sql = format!(
            "SELECT {LOG_COLUMNS} FROM pipeline_logs WHERE {} ORDER BY {order_by}{limit}",
            conditions.join(" AND ")
        );
        (sql, values)
    }
}

/// The last row of a page: the next page starts just after it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PageAfter {
    pub timestamp: DateTime<Utc>,
    pub id: i64,
}

impl PageAfter {
    /// Rows after this one in `order`; `(timestamp, id)` is unique and is
    /// exactly the sort key, so no row is skipped or read twice.
    fn condition(&self, order: Order, param: &mut impl FnMut(SqlValue) -> String) -> String {
        // Values are bound in the order their placeholders appear: SQLite's
        // `?` are numbered by position.
        let op = match order {
            Order::Arrival => return format!("id > {}", param(SqlValue::Int(self.id))),
            Order::OldestFirst => ">",
            Order::NewestFirst => "<",
        };
        let time = param(SqlValue::Time(self.timestamp));
        let id = param(SqlValue::Int(self.id));
        format!("(timestamp, id) {op} ({time}, {id})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + second, 0).unwrap()
    }

    fn batch(batch: i64, first: i64, last: i64) -> LedgerBatch {
        LedgerBatch {
            batch,
            first: at(first),
            last: at(last),
        }
    }

    fn span(r: &IdRange) -> (i64, i64, DateTime<Utc>, DateTime<Utc>) {
        (r.lo, r.hi, r.first, r.last)
    }

    #[test]
    fn batches_become_merged_id_ranges_with_their_time_spans() {
        let n = IDS_PER_BATCH;
        let ranges = id_ranges(vec![
            batch(5, 50, 59),
            batch(3, 30, 39),
            batch(4, 40, 49),
            batch(9, 90, 99),
        ]);
        let got: Vec<_> = ranges.iter().map(span).collect();
        assert_eq!(
            got,
            [
                (3 * n, 6 * n - 1, at(30), at(59)),
                (9 * n, 10 * n - 1, at(90), at(99))
            ]
        );
        // Rows from before the partitioned schema: every id below 2 × 32768.
        let ranges = id_ranges(vec![batch(-2, 5, 6), batch(1, 1, 2)]);
        assert_eq!(
            ranges.iter().map(span).collect::<Vec<_>>(),
            [(0, 2 * n - 1, at(1), at(6))]
        );
        assert_eq!(id_ranges(vec![]), []);
    }

    #[test]
    fn too_many_ranges_merge_their_closest_neighbours() {
        let batches: Vec<i64> = (0..200).map(|i| i * 2 + i / 50).collect();
        let ranges = id_ranges(batches.iter().map(|&b| batch(b, b, b)).collect());
        assert_eq!(ranges.len(), MAX_ID_RANGES);
        for b in batches {
            let id = b * IDS_PER_BATCH + 7;
            assert!(
                ranges
                    .iter()
                    .any(|r| r.lo <= id && id <= r.hi && r.first <= at(b) && at(b) <= r.last),
                "{b}"
            );
        }
    }

    #[test]
    fn ranges_render_as_one_condition() {
        let filter = LogFilter {
            experiment: "e".into(),
            id_ranges: Some(vec![IdRange {
                lo: 0,
                hi: 9,
                first: DateTime::from_timestamp(0, 0).unwrap(),
                last: DateTime::from_timestamp(1, 0).unwrap(),
            }]),
            ..LogFilter::default()
        };
        let (sql, _) = filter.render(
            Dialect::Postgres,
            IdBound::AtMost(99),
            Order::OldestFirst,
            None,
            None,
        );
        assert!(
            sql.contains("AND ((id BETWEEN 0 AND 9 AND timestamp BETWEEN '1970-01-01T00:00:00.000000Z' AND '1970-01-01T00:00:01.000000Z')) AND"),
            "{sql}"
        );
    }
}
