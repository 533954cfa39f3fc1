//! `query logs -f`: poll the store for rows newer than the last one seen,
//! like `tail -f` on the store, printing each matching row once.

use super::super::db::QueryDb;
use super::super::filter::{IdBound, LogFilter, Order};
use super::super::rows::LogRow;
use super::super::select::Experiment;
use super::print::RecordPrinter;
use regex::Regex;
use std::collections::{BTreeSet, VecDeque};
use std::io::Write;
use std::time::Duration;

/// How often `--follow` looks for new records: quick enough to feel live,
/// rare enough to cost nothing.
const FOLLOW_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Where `--follow` continues: the highest row id seen after each recent
/// poll, and the ids already looked at above the oldest of those.
///
/// Each poll reads the rows above the id seen `lookback` polls before the
/// last one and skips those already seen. With `lookback` 0 that is simply
/// "rows above the last id seen"; PostgreSQL needs more, because a row there
/// can become visible after a row with a higher id (see
/// [`QueryDb::follow_lookback`]).
pub(super) struct FollowCursor {
    /// Oldest first; never empty.
    highs: VecDeque<i64>,
    pub(super) seen: BTreeSet<i64>,
    lookback: usize,
}

impl FollowCursor {
    pub(super) fn new(start: i64, lookback: usize) -> FollowCursor {
        FollowCursor {
            highs: VecDeque::from([start]),
            seen: BTreeSet::new(),
            lookback,
        }
    }

    /// The next poll reads rows above this id.
    pub(super) fn floor(&self) -> i64 {
        self.highs.front().copied().unwrap_or(0)
    }

    /// The highest id seen so far.
    pub(super) fn highest(&self) -> i64 {
        self.highs.back().copied().unwrap_or(0)
    }

    /// True the first time a poll meets this row.
    fn first_sight(&mut self, id: i64) -> bool {
        self.seen.insert(id)
    }

    /// Ends a poll that saw rows up to `highest`; forgets what no later poll
    /// will read again.
    fn end_poll(&mut self, highest: i64) {
        let highest = highest.max(self.highest());
        self.highs.push_back(highest);
        while self.highs.len() > self.lookback + 1 {
            self.highs.pop_front();
        }
        let floor = self.floor();
        self.seen = self.seen.split_off(&floor.saturating_add(1));
    }
}

/// Polls for rows newer than the last one seen and prints those that match.
/// Runs until SIGINT/SIGTERM end the process, the reader goes away, or a
/// write fails.
pub(super) fn follow(
    db: &mut QueryDb<'_>,
    filter: &LogFilter,
    regex: Option<&Regex>,
    cursor: &mut FollowCursor,
    printer: &mut RecordPrinter,
    out: &mut dyn Write,
    reader_gone: &dyn Fn() -> bool,
) -> anyhow::Result<()> {
    while !reader_gone() {
        std::thread::sleep(FOLLOW_POLL_INTERVAL);
        print_new_records(db, filter, regex, cursor, printer, out)?;
    }
    Ok(())
}

/// One follow poll: prints matching rows not seen before and moves the
/// cursor past every row read, matching or not, so none is printed twice.
/// Rows of a run started since the query began make it load the run list
/// again, so their header names the run's number.
pub(super) fn print_new_records(
    db: &mut QueryDb<'_>,
    filter: &LogFilter,
    regex: Option<&Regex>,
    cursor: &mut FollowCursor,
    printer: &mut RecordPrinter,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut highest = cursor.highest();
    let mut fresh = Vec::new();
    db.each_log(
        filter,
        IdBound::After(cursor.floor()),
        Order::Arrival,
        |record| {
            highest = highest.max(record.id);
            if cursor.first_sight(record.id) && regex_matches(regex, &record) {
                fresh.push(record);
            }
            Ok(true)
        },
    )?;
    cursor.end_poll(highest);
    if fresh.iter().any(|record| printer.is_new_run(record)) {
        printer.learn_runs(&Experiment::load(db, &filter.experiment)?);
    }
    for record in &fresh {
        printer.print(out, record)?;
    }
    out.flush()?;
    Ok(())
}

pub(super) fn regex_matches(regex: Option<&Regex>, record: &LogRow) -> bool {
    regex.is_none_or(|regex| {
        regex.is_match(&record.message)
            || record
                .traceback
                .as_deref()
                .is_some_and(|tb| regex.is_match(tb))
    })
}
