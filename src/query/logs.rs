//! `query logs` and `query errors`: log records of a run, filtered and printed.
//!
//! Filters that both stores can apply (run, level, substring, time) go into
//! the query; a regex is applied here, because SQLite has no regex function
//! (and one regex dialect for both stores keeps the answers equal). Rows are
//! streamed (SQLite) or paged (PostgreSQL), never loaded all at once, so a run
//! with millions of lines prints as fast as the terminal takes it.
//! `--follow` polls the store for rows newer than the last one seen, like
//! `tail -f` on the store.

use super::db::{self, QueryDb};
use super::output::{escape_text, local_time, write_json_line};
use super::select::{self, Experiment, RunChoice, RunScope};
use crate::app::App;
use crate::cli::{ErrorsArgs, Format, LogsArgs};
use crate::config::parse_duration;
use crate::record::{format_ts, parse_ts, Level};
use crate::run::Run;
use crate::sink::sqlite::levels_from;
use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use regex::Regex;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io::Write;
use std::time::Duration;

/// How often `--follow` looks for new records: quick enough to feel live,
/// rare enough to cost nothing.
const FOLLOW_POLL_INTERVAL: Duration = Duration::from_millis(250);

use super::filter::{IdBound, LogFilter, Order};
use super::rows::LogRow;

/// Everything `query logs` was asked for, validated before the store is touched.
#[derive(Debug)]
pub struct LogsOptions {
    pub level: Option<Level>,
    pub search: Option<String>,
    pub regex: Option<Regex>,
    pub since: Option<String>,
    pub limit: Option<usize>,
    pub follow: bool,
    /// `--follow` of the latest run goes on into runs started later (a
    /// restarted daemon, the next `wrap` of the experiment), as
    /// `journalctl -f` goes on across a unit's restarts.
    pub follow_later_runs: bool,
    pub traceback: bool,
    pub format: Format,
}

impl LogsOptions {
    pub fn from_args(args: &LogsArgs, now: DateTime<Utc>) -> anyhow::Result<LogsOptions> {
        Ok(LogsOptions {
            level: args.level,
            search: args.search.clone(),
            regex: args
                .search_regex
                .as_deref()
                .map(compile_regex)
                .transpose()?,
            since: args
                .since
                .as_deref()
                .map(|s| parse_since(s, now))
                .transpose()?
                .flatten(),
            limit: args.limit,
            follow: args.follow,
            follow_later_runs: args.run.is_none(),
            traceback: args.traceback,
            format: args.format.format,
        })
    }
}

fn compile_regex(pattern: &str) -> anyhow::Result<Regex> {
    Regex::new(pattern).map_err(|err| {
        anyhow::anyhow!(
            "--search-regex '{pattern}' is not a valid regular expression ({}); fix it, or use --search for plain text",
            regex_error_reason(&err)
        )
    })
}

/// The regex crate explains a syntax error over several lines (the pattern,
/// a caret, then the reason); one line of reason reads better in our message.
fn regex_error_reason(err: &regex::Error) -> String {
    let text = err.to_string();
    let reason = text
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or(&text);
    reason.trim().trim_start_matches("error: ").to_string()
}

/// `--since`: an RFC 3339 time, or a duration back from `now` (`1h`, `30m`,
/// `90` seconds). Returns the bound in the stored timestamp format, or `None`
/// when the duration reaches back past any representable time (keep all).
pub fn parse_since(text: &str, now: DateTime<Utc>) -> anyhow::Result<Option<String>> {
    if let Some(time) = parse_ts(text.trim()) {
        return Ok(Some(format_ts(&time)));
    }
    let Ok(ago) = parse_duration(text) else {
        bail!("--since '{text}' is neither a duration (1h, 30m, 90) nor an RFC 3339 time (2026-11-27T10:00:00Z)");
    };
    let bound = chrono::Duration::from_std(ago)
        .ok()
        .and_then(|ago| now.checked_sub_signed(ago));
    Ok(bound.map(|time| format_ts(&time)))
}

/// Prints records one by one, in text or JSON Lines.
struct RecordPrinter {
    format: Format,
    traceback: bool,
    /// With `--run all`, text output marks where each run's records begin.
    run_ordinals: Option<HashMap<String, i64>>,
    last_run_id: Option<String>,
    printed: usize,
}

impl RecordPrinter {
    fn new(format: Format, traceback: bool, experiment: &Experiment, scope: RunScope<'_>) -> Self {
        let run_ordinals = match scope {
            RunScope::All => Some(
                experiment
                    .runs()
                    .map(|r| (r.run_id.clone(), r.ordinal))
                    .collect(),
            ),
            RunScope::One(_) => None,
        };
        RecordPrinter {
            format,
            traceback,
            run_ordinals,
            last_run_id: None,
            printed: 0,
        }
    }

    fn print(&mut self, out: &mut dyn Write, record: &LogRow) -> anyhow::Result<()> {
        self.printed += 1;
        match self.format {
            Format::Json => write_json_line(out, record),
            Format::Text => {
                self.print_run_header(out, record)?;
                out.write_all(text_record(record, self.traceback).as_bytes())?;
                Ok(())
            }
        }
    }

    /// From now on text output marks where each run's records begin; the
    /// records printed so far belong to `current`.
    fn mark_runs_from(&mut self, experiment: &Experiment, current: &Run) {
        self.run_ordinals = Some(
            experiment
                .runs()
                .map(|r| (r.run_id.clone(), r.ordinal))
                .collect(),
        );
        self.last_run_id = Some(current.run_id.clone());
    }

    /// True when `record` belongs to a run this printer has not heard of:
    /// one that started after the query did.
    fn is_new_run(&self, record: &LogRow) -> bool {
        self.run_ordinals
            .as_ref()
            .is_some_and(|known| !known.contains_key(&record.run_id))
    }

    fn learn_runs(&mut self, experiment: &Experiment) {
        if let Some(known) = &mut self.run_ordinals {
            known.extend(experiment.runs().map(|r| (r.run_id.clone(), r.ordinal)));
        }
    }

    fn print_run_header(&mut self, out: &mut dyn Write, record: &LogRow) -> anyhow::Result<()> {
        let Some(ordinals) = &self.run_ordinals else {
            return Ok(());
        };
        if self.last_run_id.as_deref() == Some(record.run_id.as_str()) {
            return Ok(());
        }
        let ordinal = ordinals
            .get(&record.run_id)
            .map_or("?".to_string(), |n| n.to_string());
        writeln!(out, "-- run {ordinal} ({}) --", escape_text(&record.run_id))?;
        self.last_run_id = Some(record.run_id.clone());
        Ok(())
    }
}

/// One record as text: `2026-11-27 10:00:00.123 ERROR    pipeline.loader: failed`
/// and, with `with_traceback`, its traceback indented below; without it, a
/// record that has one ends in ` [ValueError: bad shard]`.
pub fn text_record(record: &LogRow, with_traceback: bool) -> String {
    let mut text = format!(
        "{} {:<8} ",
        local_time(&record.timestamp, true),
        escape_text(&record.level)
    );
    if let Some(logger) = &record.logger {
        text.push_str(&escape_text(logger));
        text.push_str(": ");
    }
    text.push_str(&escape_text(&record.message));
    match &record.traceback {
        Some(traceback) if with_traceback => {
            text.push('\n');
            for line in traceback.lines() {
                text.push_str("    ");
                text.push_str(&escape_text(line));
                text.push('\n');
            }
            return text;
        }
        Some(_) => {
            text.push_str(" [");
            text.push_str(&escape_text(&traceback_summary(record)));
            text.push(']');
        }
        None => {}
    }
    text.push('\n');
    text
}

/// What the ` […]` hint after a record with a hidden traceback says.
fn traceback_summary(record: &LogRow) -> String {
    match &record.exception_type {
        Some(_) => record.error_summary(),
        None => "traceback hidden; --traceback shows it".to_string(),
    }
}

/// `query logs`: validates the options, picks the run, prints, maybe follows.
pub fn logs(app: &App, args: &LogsArgs) -> anyhow::Result<()> {
    let options = LogsOptions::from_args(args, Utc::now())?;
    logs_with(app, args, &options)
}

/// `query logs` with options already made (`daemon logs` sets its own).
pub fn logs_with(app: &App, args: &LogsArgs, options: &LogsOptions) -> anyhow::Result<()> {
    let mut store = select::open_store_of(app, &args.experiment)?;
    db::note_spooled_records(app, &store, options.format);
    let mut db = store.db();
    let experiment = Experiment::load(&mut db, &args.experiment)?;
    let scope = experiment.pick(&RunChoice::parse(args.run.as_deref()))?;
    let mut printed = 0;
    super::output::to_stdout(|out| {
        printed = write_logs(
            &mut db,
            &experiment,
            scope,
            options,
            out,
            &super::output::stdout_reader_gone,
        )?;
        Ok(())
    })?;
    if printed == 0 && options.format == Format::Text && !options.follow {
        eprintln!(
            "no log records match in experiment '{}' ({})",
            escape_text(experiment.name()),
            scope_words(scope)
        );
    }
    Ok(())
}

/// Prints the records `options` select, oldest first. With `follow`, keeps
/// printing new ones until `reader_gone` says nobody reads `out` any more or
/// a write fails (a closed pipe included). Returns how many were printed.
pub fn write_logs(
    db: &mut QueryDb<'_>,
    experiment: &Experiment,
    scope: RunScope<'_>,
    options: &LogsOptions,
    out: &mut dyn Write,
    reader_gone: &dyn Fn() -> bool,
) -> anyhow::Result<usize> {
    let filter = LogFilter {
        levels: options.level.map(levels_from),
        search: options.search.clone(),
        since: options.since.clone(),
        ..experiment.log_filter(scope)
    };
    let mut printer = RecordPrinter::new(options.format, options.traceback, experiment, scope);
    let snapshot = db.max_log_id()?;
    let matches = |record: &LogRow| regex_matches(options.regex.as_ref(), record);
    match options.limit {
        Some(limit) => {
            let mut newest = Vec::new();
            if limit > 0 {
                db.each_log(
                    &filter,
                    IdBound::AtMost(snapshot),
                    Order::NewestFirst,
                    |record| {
                        if matches(&record) {
                            newest.push(record);
                        }
                        Ok(newest.len() < limit)
                    },
                )?;
            }
            for record in newest.iter().rev() {
                printer.print(out, record)?;
            }
        }
        None => db.each_log(
            &filter,
            IdBound::AtMost(snapshot),
            Order::OldestFirst,
            |record| {
                if matches(&record) {
                    printer.print(out, &record)?;
                }
                Ok(true)
            },
        )?,
    }
    out.flush()?;
    if options.follow {
        let filter = match scope {
            RunScope::One(run) if options.follow_later_runs => {
                printer.mark_runs_from(experiment, run);
                LogFilter {
                    run_id: None,
                    runs_from: Some(run.run_id.clone()),
                    ..filter
                }
            }
            _ => filter,
        };
        let mut cursor = FollowCursor::new(snapshot, db.follow_lookback());
        follow(
            db,
            &filter,
            options.regex.as_ref(),
            &mut cursor,
            &mut printer,
            out,
            reader_gone,
        )?;
    }
    Ok(printer.printed)
}

/// Where `--follow` continues: the highest row id seen after each recent
/// poll, and the ids already looked at above the oldest of those.
///
/// Each poll reads the rows above the id seen `lookback` polls before the
/// last one and skips those already seen. With `lookback` 0 that is simply
/// "rows above the last id seen"; PostgreSQL needs more, because a row there
/// can become visible after a row with a higher id (see
/// [`QueryDb::follow_lookback`]).
struct FollowCursor {
    /// Oldest first; never empty.
    highs: VecDeque<i64>,
    seen: BTreeSet<i64>,
    lookback: usize,
}

impl FollowCursor {
    fn new(start: i64, lookback: usize) -> FollowCursor {
        FollowCursor {
            highs: VecDeque::from([start]),
            seen: BTreeSet::new(),
            lookback,
        }
    }

    /// The next poll reads rows above this id.
    fn floor(&self) -> i64 {
        self.highs.front().copied().unwrap_or(0)
    }

    /// The highest id seen so far.
    fn highest(&self) -> i64 {
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
fn follow(
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
fn print_new_records(
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

fn regex_matches(regex: Option<&Regex>, record: &LogRow) -> bool {
    regex.is_none_or(|regex| {
        regex.is_match(&record.message)
            || record
                .traceback
                .as_deref()
                .is_some_and(|tb| regex.is_match(tb))
    })
}

/// `query errors`: ERROR and CRITICAL records, newest first.
pub fn errors(app: &App, args: &ErrorsArgs) -> anyhow::Result<()> {
    let mut store = select::open_store_of(app, &args.experiment)?;
    db::note_spooled_records(app, &store, args.format.format);
    let mut db = store.db();
    let experiment = Experiment::load(&mut db, &args.experiment)?;
    let scope = experiment.pick(&RunChoice::parse(args.run.as_deref()))?;
    let mut printed = 0;
    super::output::to_stdout(|out| {
        printed = write_errors(&mut db, &experiment, scope, args, out)?;
        Ok(())
    })?;
    if printed == 0 && args.format.format == Format::Text {
        eprintln!(
            "no ERROR or CRITICAL records in experiment '{}' ({})",
            escape_text(experiment.name()),
            scope_words(scope)
        );
    }
    Ok(())
}

/// Prints the run's errors newest first; returns how many were printed.
pub fn write_errors(
    db: &mut QueryDb<'_>,
    experiment: &Experiment,
    scope: RunScope<'_>,
    args: &ErrorsArgs,
    out: &mut dyn Write,
) -> anyhow::Result<usize> {
    let filter = LogFilter {
        levels: Some(levels_from(Level::Error)),
        ..experiment.log_filter(scope)
    };
    let mut printer = RecordPrinter::new(args.format.format, args.traceback, experiment, scope);
    let limit = args.limit.unwrap_or(usize::MAX);
    if limit > 0 {
        db.each_log(
            &filter,
            IdBound::AtMost(i64::MAX),
            Order::NewestFirst,
            |record| {
                printer.print(out, &record)?;
                Ok(printer.printed < limit)
            },
        )?;
    }
    Ok(printer.printed)
}

/// The newest ERROR or CRITICAL record of a run, for `query status`.
pub fn last_error(db: &mut QueryDb<'_>, run: &crate::run::Run) -> anyhow::Result<Option<LogRow>> {
    let filter = LogFilter {
        experiment: run.experiment_id.clone(),
        run_id: Some(run.run_id.clone()),
        levels: Some(levels_from(Level::Error)),
        ..LogFilter::default()
    };
    let mut last = None;
    db.each_log(
        &filter,
        IdBound::AtMost(i64::MAX),
        Order::NewestFirst,
        |record| {
            last = Some(record);
            Ok(false)
        },
    )
    .context("could not read the run's last error")?;
    Ok(last)
}

/// `run 2` or `all runs`, for messages about what was searched.
fn scope_words(scope: RunScope<'_>) -> String {
    match scope {
        RunScope::One(run) => format!("run {}", run.ordinal),
        RunScope::All => "all runs".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::filter::PageAfter;
    use super::super::rows::LOG_COLUMNS;
    use super::super::sql::{Dialect, SqlValue};
    use super::*;
    use crate::query::tests::{insert_log, insert_run, temp_store, TestLog};
    use rusqlite::{params_from_iter, Connection};

    fn experiment(conn: &Connection) -> Experiment {
        Experiment::load(&mut QueryDb::Sqlite(conn), "x").unwrap()
    }

    fn options() -> LogsOptions {
        LogsOptions {
            level: None,
            search: None,
            regex: None,
            since: None,
            limit: None,
            follow: false,
            follow_later_runs: false,
            traceback: false,
            format: Format::Json,
        }
    }

    fn messages(output: &[u8]) -> Vec<String> {
        String::from_utf8_lossy(output)
            .lines()
            .map(|line| {
                let value: serde_json::Value = serde_json::from_str(line).unwrap();
                value["message"].as_str().unwrap().to_string()
            })
            .collect()
    }

    fn run_logs(
        conn: &Connection,
        exp: &Experiment,
        choice: RunChoice,
        options: &LogsOptions,
    ) -> Vec<u8> {
        let scope = exp.pick(&choice).unwrap();
        let mut out = Vec::new();
        write_logs(
            &mut QueryDb::Sqlite(conn),
            exp,
            scope,
            options,
            &mut out,
            &|| true,
        )
        .unwrap();
        out
    }

    /// Run 1 has one line; run 2 has four, inserted out of time order.
    fn two_runs() -> (tempfile::TempDir, crate::sink::SqliteStore) {
        let (dir, store) = temp_store();
        let conn = store.conn();
        insert_run(conn, "x", 1, "R1", "failed");
        insert_run(conn, "x", 2, "R2", "running");
        insert_log(conn, TestLog::new("R1", "10:00:00", "INFO", "old run"));
        insert_log(conn, TestLog::new("R2", "10:00:02", "WARNING", "third"));
        insert_log(conn, TestLog::new("R2", "10:00:01", "DEBUG", "second"));
        insert_log(conn, TestLog::new("R2", "10:00:00", "INFO", "first"));
        insert_log(
            conn,
            TestLog {
                traceback: Some(
                    "Traceback (most recent call last):\n  File \"x.py\"\nValueError: bad shard\n",
                ),
                exception_type: Some("ValueError"),
                exception_message: Some("bad shard"),
                logger: Some("pipeline.loader"),
                ..TestLog::new("R2", "10:00:03", "ERROR", "failed to load shard 3")
            },
        );
        (dir, store)
    }

    #[test]
    fn logs_are_oldest_first_for_the_latest_run() {
        let (_dir, store) = two_runs();
        let exp = experiment(store.conn());
        let out = run_logs(store.conn(), &exp, RunChoice::Latest, &options());
        assert_eq!(
            messages(&out),
            ["first", "second", "third", "failed to load shard 3"]
        );
    }

    #[test]
    fn json_records_carry_exactly_the_spec_fields() {
        let (_dir, store) = two_runs();
        let exp = experiment(store.conn());
        let out = run_logs(store.conn(), &exp, RunChoice::Latest, &options());
        let last = String::from_utf8(out)
            .unwrap()
            .lines()
            .last()
            .unwrap()
            .to_string();
        let value: serde_json::Value = serde_json::from_str(&last).unwrap();
        let mut keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "exception_message",
                "exception_type",
                "experiment_id",
                "fields",
                "level",
                "logger",
                "message",
                "run_id",
                "source",
                "stream",
                "timestamp",
                "traceback",
            ]
        );
        assert_eq!(value["timestamp"], "2026-11-27T10:00:03.000000Z");
        assert!(value["traceback"]
            .as_str()
            .unwrap()
            .contains("ValueError: bad shard"));
    }

    #[test]
    fn level_search_and_regex_filter() {
        let (_dir, store) = two_runs();
        let exp = experiment(store.conn());
        let warn_up = LogsOptions {
            level: Some(Level::Warning),
            ..options()
        };
        assert_eq!(
            messages(&run_logs(store.conn(), &exp, RunChoice::Latest, &warn_up)),
            ["third", "failed to load shard 3"]
        );
        let in_traceback = LogsOptions {
            search: Some("bad shard".into()),
            ..options()
        };
        assert_eq!(
            messages(&run_logs(
                store.conn(),
                &exp,
                RunChoice::Latest,
                &in_traceback
            )),
            ["failed to load shard 3"]
        );
        let case_sensitive = LogsOptions {
            search: Some("FIRST".into()),
            ..options()
        };
        assert!(messages(&run_logs(
            store.conn(),
            &exp,
            RunChoice::Latest,
            &case_sensitive
        ))
        .is_empty());
        let regex = LogsOptions {
            regex: Some(Regex::new("^(fir|sec)").unwrap()),
            ..options()
        };
        assert_eq!(
            messages(&run_logs(store.conn(), &exp, RunChoice::Latest, &regex)),
            ["first", "second"]
        );
    }

    #[test]
    fn limit_keeps_the_newest_but_prints_oldest_first() {
        let (_dir, store) = two_runs();
        let exp = experiment(store.conn());
        let limited = LogsOptions {
            limit: Some(2),
            ..options()
        };
        assert_eq!(
            messages(&run_logs(store.conn(), &exp, RunChoice::Latest, &limited)),
            ["third", "failed to load shard 3"]
        );
        let regex_limited = LogsOptions {
            limit: Some(1),
            regex: Some(Regex::new("ir").unwrap()),
            ..options()
        };
        assert_eq!(
            messages(&run_logs(
                store.conn(),
                &exp,
                RunChoice::Latest,
                &regex_limited
            )),
            ["third"]
        );
    }

    #[test]
    fn since_and_run_selection() {
        let (_dir, store) = two_runs();
        let exp = experiment(store.conn());
        let recent = LogsOptions {
            since: Some("2026-11-27T10:00:02.000000Z".into()),
            ..options()
        };
        assert_eq!(
            messages(&run_logs(store.conn(), &exp, RunChoice::Latest, &recent)),
            ["third", "failed to load shard 3"]
        );
        assert_eq!(
            messages(&run_logs(
                store.conn(),
                &exp,
                RunChoice::Ordinal(1),
                &options()
            )),
            ["old run"]
        );
        assert_eq!(
            messages(&run_logs(store.conn(), &exp, RunChoice::All, &options())).len(),
            5
        );
    }

    #[test]
    fn since_accepts_durations_and_times() {
        let now = parse_ts("2026-11-27T12:00:00Z").unwrap();
        assert_eq!(
            parse_since("1h", now).unwrap().unwrap(),
            "2026-11-27T11:00:00.000000Z"
        );
        assert_eq!(
            parse_since("90", now).unwrap().unwrap(),
            "2026-11-27T11:58:30.000000Z"
        );
        assert_eq!(
            parse_since("2026-11-27T10:00:00+01:00", now)
                .unwrap()
                .unwrap(),
            "2026-11-27T09:00:00.000000Z"
        );
        let err = parse_since("yesterday", now).unwrap_err().to_string();
        assert!(
            err.contains("'yesterday'") && err.contains("RFC 3339"),
            "{err}"
        );
    }

    #[test]
    fn an_invalid_regex_is_named_in_the_error() {
        let err = compile_regex("(unclosed").unwrap_err().to_string();
        assert!(err.contains("'(unclosed'"), "{err}");
        assert!(err.contains("(unclosed group)"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }

    #[test]
    fn text_lines_escape_and_summarise_tracebacks() {
        let (_dir, store) = two_runs();
        let exp = experiment(store.conn());
        let text = LogsOptions {
            format: Format::Text,
            ..options()
        };
        let out =
            String::from_utf8(run_logs(store.conn(), &exp, RunChoice::Latest, &text)).unwrap();
        let last = out.lines().last().unwrap();
        let time = local_time("2026-11-27T10:00:03.000000Z", true);
        assert_eq!(
            last,
            format!(
                "{time} ERROR    pipeline.loader: failed to load shard 3 [ValueError: bad shard]"
            )
        );
        assert!(
            out.lines().next().unwrap().ends_with(" INFO     first"),
            "{out}"
        );
    }

    #[test]
    fn traceback_lines_are_indented_and_escaped() {
        let record = LogRow {
            id: 1,
            experiment_id: "x".into(),
            run_id: "R".into(),
            timestamp: "2026-11-27T10:00:00.123000Z".into(),
            level: "ERROR".into(),
            logger: None,
            message: "boom\x1b[31m\r\x07two\nlines".into(),
            traceback: Some("Traceback:\n  File \"a\x1b.py\"\nKeyError: 'k'\n".into()),
            exception_type: Some("KeyError".into()),
            exception_message: Some("'k'".into()),
            stream: "stderr".into(),
            source: "stderr".into(),
            fields: None,
        };
        let text = text_record(&record, true);
        let time = local_time(&record.timestamp, true);
        assert_eq!(
            text,
            format!("{time} ERROR    boom\\x1b[31m\\r\\x07two\\nlines\n    Traceback:\n      File \"a\\x1b.py\"\n    KeyError: 'k'\n")
        );
        assert!(!text.contains('\x1b') && !text.contains('\r') && !text.contains('\x07'));
    }

    #[test]
    fn all_runs_text_marks_where_each_run_begins() {
        let (_dir, store) = two_runs();
        let exp = experiment(store.conn());
        let text = LogsOptions {
            format: Format::Text,
            ..options()
        };
        let out = String::from_utf8(run_logs(store.conn(), &exp, RunChoice::All, &text)).unwrap();
        let headers: Vec<&str> = out.lines().filter(|l| l.starts_with("-- run")).collect();
        assert_eq!(headers, ["-- run 1 (R1) --", "-- run 2 (R2) --"]);
    }

    #[test]
    fn follow_polls_walk_only_the_new_rows() {
        let (_dir, store) = temp_store();
        let filter = LogFilter {
            experiment: "x".into(),
            run_id: Some("R".into()),
            ..LogFilter::default()
        };
        let (sql, values) = filter.sql(IdBound::After(7), Order::Arrival);
        let plan: String = store
            .conn()
            .query_row(
                &format!("EXPLAIN QUERY PLAN {sql}"),
                params_from_iter(values),
                |row| row.get(3),
            )
            .unwrap();
        assert!(plan.contains("INTEGER PRIMARY KEY (rowid>?)"), "{plan}");
    }

    #[test]
    fn postgresql_statements_number_their_parameters_and_resume_after_a_page() {
        let filter = LogFilter {
            experiment: "x".into(),
            run_id: Some("R".into()),
            levels: Some(levels_from(Level::Error)),
            search: Some("needle".into()),
            since: Some("2026-11-27T10:00:00.000000Z".into()),
            ..LogFilter::default()
        };
        let after = PageAfter {
            timestamp: parse_ts("2026-11-27T10:00:05Z").unwrap(),
            id: 9,
        };
        let (sql, values) = filter.render(
            Dialect::Postgres,
            IdBound::AtMost(100),
            Order::NewestFirst,
            Some(after),
            Some(50),
        );
        assert_eq!(
            sql,
            format!("SELECT {LOG_COLUMNS} FROM pipeline_logs WHERE experiment_id = $1 AND run_id = $2 AND level IN ('ERROR', 'CRITICAL') AND (strpos(message, $3) > 0 OR strpos(coalesce(traceback, ''), $4) > 0) AND timestamp >= $5::timestamptz AND id <= $6 AND (timestamp, id) < ($7, $8) ORDER BY timestamp DESC, id DESC LIMIT 50")
        );
        assert_eq!(values.len(), 8);
        assert_eq!(values[6], SqlValue::Time(after.timestamp));
        assert_eq!(values[7], SqlValue::Int(9));
        let (follow_sql, _) = filter.render(
            Dialect::Postgres,
            IdBound::After(7),
            Order::Arrival,
            None,
            Some(50),
        );
        assert!(
            follow_sql.contains(" AND id > $6 ORDER BY id LIMIT 50"),
            "{follow_sql}"
        );
    }

    #[test]
    fn follow_stops_quietly_once_the_reader_is_gone() {
        let (_dir, store) = two_runs();
        let exp = experiment(store.conn());
        let following = LogsOptions {
            follow: true,
            limit: Some(1),
            ..options()
        };
        let scope = exp.pick(&RunChoice::Latest).unwrap();
        let mut out = Vec::new();
        let printed = write_logs(
            &mut QueryDb::Sqlite(store.conn()),
            &exp,
            scope,
            &following,
            &mut out,
            &|| true,
        )
        .unwrap();
        assert_eq!(printed, 1);
        assert_eq!(messages(&out), ["failed to load shard 3"]);
    }

    #[test]
    fn follow_prints_only_new_matching_rows() {
        let (_dir, store) = two_runs();
        let conn = store.conn();
        let exp = experiment(conn);
        let scope = exp.pick(&RunChoice::Latest).unwrap();
        let filter = LogFilter {
            levels: Some(levels_from(Level::Info)),
            ..exp.log_filter(scope)
        };
        let mut printer = RecordPrinter::new(Format::Json, false, &exp, scope);
        let db = &mut QueryDb::Sqlite(conn);
        let start = db.max_log_id().unwrap();
        let mut cursor = FollowCursor::new(start, db.follow_lookback());
        insert_log(conn, TestLog::new("R2", "10:00:05", "DEBUG", "too quiet"));
        insert_log(conn, TestLog::new("R1", "10:00:06", "INFO", "other run"));
        insert_log(conn, TestLog::new("R2", "09:00:00", "INFO", "late arrival"));
        let mut out = Vec::new();
        print_new_records(db, &filter, None, &mut cursor, &mut printer, &mut out).unwrap();
        assert_eq!(messages(&out), ["late arrival"]);
        assert_eq!(cursor.highest(), start + 3);
        assert_eq!(cursor.floor(), start + 3);
        let mut again = Vec::new();
        print_new_records(db, &filter, None, &mut cursor, &mut printer, &mut again).unwrap();
        assert!(again.is_empty());
    }

    /// PostgreSQL may show a row after one with a higher id; with a look-back
    /// the follow still prints it, once, and prints nothing twice.
    #[test]
    fn follow_with_a_look_back_prints_late_lower_ids_once() {
        let (_dir, store) = two_runs();
        let conn = store.conn();
        let exp = experiment(conn);
        let scope = exp.pick(&RunChoice::Latest).unwrap();
        let filter = exp.log_filter(scope);
        let mut printer = RecordPrinter::new(Format::Json, false, &exp, scope);
        let db = &mut QueryDb::Sqlite(conn);
        let start = db.max_log_id().unwrap();
        let mut cursor = FollowCursor::new(start, 2);
        let mut out = Vec::new();
        insert_log(conn, TestLog::new("R2", "10:00:05", "INFO", "a"));
        insert_log(conn, TestLog::new("R2", "10:00:06", "INFO", "c"));
        // "b" got an id before "c" but its transaction committed later.
        conn.execute(
            "UPDATE pipeline_logs SET id = id + 1 WHERE id = ?1",
            [start + 2],
        )
        .unwrap();
        print_new_records(db, &filter, None, &mut cursor, &mut printer, &mut out).unwrap();
        insert_log(conn, TestLog::new("R2", "10:00:07", "INFO", "b"));
        conn.execute(
            "UPDATE pipeline_logs SET id = ?1 WHERE message = 'b'",
            [start + 2],
        )
        .unwrap();
        print_new_records(db, &filter, None, &mut cursor, &mut printer, &mut out).unwrap();
        print_new_records(db, &filter, None, &mut cursor, &mut printer, &mut out).unwrap();
        print_new_records(db, &filter, None, &mut cursor, &mut printer, &mut out).unwrap();
        assert_eq!(messages(&out), ["a", "c", "b"]);
        assert_eq!(cursor.floor(), start + 3);
        assert!(cursor.seen.is_empty());
    }

    #[test]
    fn errors_are_newest_first_with_a_limit() {
        let (_dir, store) = two_runs();
        let conn = store.conn();
        insert_log(
            conn,
            TestLog::new("R2", "10:00:04", "CRITICAL", "disk gone"),
        );
        let exp = experiment(conn);
        let args = |limit| ErrorsArgs {
            experiment: "x".into(),
            traceback: false,
            limit,
            run: None,
            format: crate::cli::FormatArg {
                format: Format::Json,
            },
        };
        let scope = exp.pick(&RunChoice::Latest).unwrap();
        let mut out = Vec::new();
        let db = &mut QueryDb::Sqlite(conn);
        write_errors(db, &exp, scope, &args(None), &mut out).unwrap();
        assert_eq!(messages(&out), ["disk gone", "failed to load shard 3"]);
        let mut out = Vec::new();
        write_errors(db, &exp, scope, &args(Some(1)), &mut out).unwrap();
        assert_eq!(messages(&out), ["disk gone"]);
    }
}
