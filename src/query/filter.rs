//! Which log records a query reads: the filter (experiment, runs, level,
//! search, time, id bounds) rendered as SQL for either store.

use super::rows::LOG_COLUMNS;
use super::sql::{Dialect, SqlValue};
use chrono::{DateTime, Utc};

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
