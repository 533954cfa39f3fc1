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
use super::select::{self, Experiment, RunChoice, RunScope};
use crate::app::App;
use crate::cli::{ErrorsArgs, LogsArgs};
use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use pmon_core::config::parse_duration;
use pmon_core::options::Format;
use pmon_core::record::{format_ts, parse_ts, Level};
use pmon_core::text::escape_text;
use pmon_store::sqlite::levels_from;
use regex::Regex;
use std::io::Write;

mod follow;
mod print;

use super::filter::{IdBound, LogFilter, Order};
use super::rows::LogRow;
use follow::{follow, regex_matches, FollowCursor};
#[cfg(test)]
use print::text_record;
use print::RecordPrinter;

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

/// `query errors`: ERROR and CRITICAL records, newest first.
pub fn errors(app: &App, args: &ErrorsArgs) -> anyhow::Result<()> {
    // clap asks for an experiment unless --group is given.
    let name = args.experiment.as_deref().unwrap_or_default();
    let mut store = select::open_store_of(app, name)?;
    db::note_spooled_records(app, &store, args.format.format);
    let mut db = store.db();
    let experiment = Experiment::load(&mut db, name)?;
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
pub fn last_error(
    db: &mut QueryDb<'_>,
    run: &pmon_core::run::Run,
) -> anyhow::Result<Option<LogRow>> {
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
mod tests;
