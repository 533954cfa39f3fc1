//! `query status EXP`: everything a person checks first when a long run has
//! gone quiet — is it alive, how did it end, how far did it get, what was the
//! last error, and is anything still waiting to be shipped.

use super::db::QueryDb;
use super::output::run_duration;
use super::output::{local_time, write_json_line};
use super::rows::LogRow;
use super::rows::ProgressRow;
use super::select::{self, RunChoice};
use crate::app::App;
use crate::cli::StatusArgs;
use chrono::{DateTime, Utc};
use pmon_core::options::Format;
use pmon_core::run::{Run, RunState};
use pmon_core::text::signal_name;
use pmon_core::text::{escape_text, first_line, humanize_duration};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;

/// The `--format json` status object; field order is the order printed.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub experiment_id: String,
    pub run_id: String,
    /// The run's ordinal (1, 2, 3… in start order).
    pub run: i64,
    pub state: RunState,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// The program's pid (its process group too): what to signal.
    pub pid: Option<u32>,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub command: Vec<String>,
    pub progress: Vec<ProgressRow>,
    /// The newest sample of each series, by `type/name`.
    pub metrics: BTreeMap<String, LastMetric>,
    pub last_error: Option<LogRow>,
    pub spool_pending: u64,
    /// When the live program stalled (no output, no progress, idle CPU); null unless it is stalled now.
    pub stalled_since: Option<String>,
}

/// The newest value of one metric series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastMetric {
    pub value: f64,
    pub unit: Option<String>,
    pub timestamp: String,
}

/// Records waiting in the local spool for PostgreSQL.
///
/// Always 0 without a database: records go straight into the SQLite store,
/// their final home then. With PostgreSQL configured, the spool holds what
/// this host's agents could not ship yet, which `query` cannot see there.
pub fn spool_pending(app: &App) -> u64 {
    match app.existing_store() {
        Ok(Some(store)) => pmon_store::spool::Spool::new(store)
            .stats()
            .map_or(0, |s| s.pending),
        _ => 0,
    }
}
/// `query status EXP [--run N]`.
pub fn status(app: &App, args: &StatusArgs) -> anyhow::Result<()> {
    let (mut store, experiment) = select::open_experiment(app, &args.experiment)?;
    let run = experiment.pick_one(&RunChoice::parse(args.run.as_deref()), "query status")?;
    let report = build_report(&mut store.db(), run, spool_pending(app))?;
    let run_count = experiment.latest().ordinal;
    super::output::to_stdout(|out| {
        write_status(&report, run_count, args.format.format, Utc::now(), out)
    })
}

/// Gathers the run's state, progress and last error from the store.
pub fn build_report(
    db: &mut QueryDb<'_>,
    run: &Run,
    spool_pending: u64,
) -> anyhow::Result<StatusReport> {
    Ok(StatusReport {
        experiment_id: run.experiment_id.clone(),
        run_id: run.run_id.clone(),
        run: run.ordinal,
        state: run.state,
        exit_code: run.exit_code,
        signal: run.signal,
        pid: run.child_pid,
        started_at: run.started_at.clone(),
        ended_at: run.ended_at.clone(),
        command: run.command.clone(),
        progress: progress_with_eta(db.progress(&run.run_id)?, run.state),
        metrics: db
            .last_metrics(&run.run_id)?
            .into_iter()
            .map(|m| {
                let key = format!("{}/{}", m.metric_type, m.name);
                let last = LastMetric {
                    value: m.value,
                    unit: m.unit,
                    timestamp: m.timestamp,
                };
                (key, last)
            })
            .collect(),
        last_error: super::logs::last_error(db, run)?,
        spool_pending,
        stalled_since: match run.state.is_live() {
            true => db.stalled_since(&run.experiment_id, &run.run_id)?,
            false => None,
        },
    })
}

/// An ETA only means something while the run goes on.
pub(crate) fn progress_with_eta(
    mut progress: Vec<ProgressRow>,
    state: RunState,
) -> Vec<ProgressRow> {
    if state.is_live() {
        for task in &mut progress {
            task.eta_s = task.eta();
        }
    }
    progress
}

/// Prints the report as one JSON object or as a readable block.
pub fn write_status(
    report: &StatusReport,
    run_count: i64,
    format: Format,
    now: DateTime<Utc>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match format {
        Format::Json => write_json_line(out, report),
        Format::Text => Ok(out.write_all(status_text(report, run_count, now).as_bytes())?),
    }
}

/// The text block: one `label: value` line per fact, then the progress tree.
pub fn status_text(report: &StatusReport, run_count: i64, now: DateTime<Utc>) -> String {
    let mut lines = vec![
        format!(
            "experiment: {} (run {} of {run_count}, {})",
            escape_text(&report.experiment_id),
            report.run,
            escape_text(&report.run_id)
        ),
        format!("state: {}", state_text(report)),
        format!("started: {}", local_time(&report.started_at, false)),
    ];
    if let Some(ended) = &report.ended_at {
        lines.push(format!("ended: {}", local_time(ended, false)));
    }
    lines.push(format!("duration: {}", duration_text(report, now)));
    lines.push(format!(
        "command: {}",
        escape_text(&shell_words(&report.command))
    ));
    lines.extend(progress_lines(&report.progress));
    if let Some(text) = resources_text(&report.metrics) {
        lines.push(text);
    }
    lines.push(format!(
        "last error: {}",
        last_error_text(report.last_error.as_ref())
    ));
    lines.push(format!("spool: {}", spool_text(report.spool_pending)));
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// `failed (exit code 1)`, `crashed (killed by SIGKILL)`, `running`.
fn state_text(report: &StatusReport) -> String {
    let state = report.state.as_str();
    if let Some(stalled) = stalled_words(report.stalled_since.as_deref(), Utc::now()) {
        return format!("{state} ({stalled})");
    }
    if let Some(crash) = crash_text(report) {
        return format!("{state}: {}", escape_text(&crash));
    }
    match (report.signal, report.exit_code) {
        (Some(signal), _) => format!("{state} (killed by {})", signal_name(signal)),
        (None, Some(code)) => format!("{state} (exit code {code})"),
        (None, None) if report.state == RunState::Lost => {
            format!("{state} (the agent died before recording how the run ended)")
        }
        (None, None) => state.to_string(),
    }
}

/// `stalled 34m`: how long a stalled run has printed nothing.
pub fn stalled_words(since: Option<&str>, now: DateTime<Utc>) -> Option<String> {
    let since = pmon_core::record::parse_ts(since?)?;
    let quiet = (now - since).to_std().unwrap_or_default();
    Some(format!(
        "stalled {}",
        pmon_core::text::humanize_duration(quiet)
    ))
}

/// `SIGSEGV in crash() at seg.py:9` when the run died of the signal whose
/// faulthandler dump is its last error.
fn crash_text(report: &StatusReport) -> Option<String> {
    let signal = signal_name(report.signal?);
    let last = report.last_error.as_ref()?;
    let crash = pmon_core::parse::fault::crash_words(
        last.exception_type.as_deref(),
        last.exception_message.as_deref(),
        &last.message,
    )?;
    crash.starts_with(&format!("{signal} ")).then_some(crash)
}

fn duration_text(report: &StatusReport, now: DateTime<Utc>) -> String {
    let so_far = if report.state.is_live() {
        " so far"
    } else {
        ""
    };
    match run_duration(
        report.state,
        &report.started_at,
        report.ended_at.as_deref(),
        now,
    ) {
        Some(duration) => format!("{}{so_far}", humanize_duration(duration)),
        None => "unknown".to_string(),
    }
}

/// The command as one could type it again: arguments with spaces or shell
/// characters in single quotes.
fn shell_words(command: &[String]) -> String {
    command
        .iter()
        .map(|arg| shell_quote(arg))
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_alphanumeric() || "-_./=:,+@%^".contains(c));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// A node of the progress tree: a task path segment, with the task's own
/// progress if it reports any (`train` may only exist through `train/epoch`).
#[derive(Default)]
struct TaskNode<'a> {
    progress: Option<&'a ProgressRow>,
    children: BTreeMap<&'a str, TaskNode<'a>>,
}

impl<'a> TaskNode<'a> {
    fn insert(&mut self, row: &'a ProgressRow) {
        let node = row
            .task
            .split('/')
            .filter(|segment| !segment.is_empty())
            .fold(self, |node, segment| {
                node.children.entry(segment).or_default()
            });
        node.progress = Some(row);
    }

    /// Depth-first (label, progress) pairs, children indented under parents.
    fn flatten(&self, depth: usize, into: &mut Vec<(String, Option<String>)>) {
        for (name, child) in &self.children {
            let label = format!("{}{}", "  ".repeat(depth + 1), escape_text(name));
            into.push((label, child.progress.map(progress_text)));
            child.flatten(depth + 1, into);
        }
    }
}

/// `progress:` followed by the tree, values aligned; `progress: none` if empty.
fn progress_lines(progress: &[ProgressRow]) -> Vec<String> {
    if progress.is_empty() {
        return vec!["progress: none".to_string()];
    }
    let mut root = TaskNode::default();
    for row in progress {
        root.insert(row);
    }
    let mut entries = Vec::new();
    root.flatten(0, &mut entries);
    let width = entries
        .iter()
        .map(|(label, _)| label.chars().count())
        .max()
        .unwrap_or(0);
    let mut lines = vec!["progress:".to_string()];
    lines.extend(entries.into_iter().map(|(label, value)| match value {
        Some(value) => format!("{label:<width$}  {value}"),
        None => label,
    }));
    lines
}

/// `[######--------------]  3/10 files (30%), 1.5 files/s, ETA 4s`.
fn progress_text(row: &ProgressRow) -> String {
    let unit = row.unit.as_deref().map(escape_text);
    let mut text = String::new();
    if let Some(total) = row.total.filter(|t| *t > 0.0) {
        text.push_str(&bar(row.current / total));
        text.push_str("  ");
    }
    text.push_str(&number(row.current));
    if let Some(total) = row.total {
        text.push('/');
        text.push_str(&number(total));
    }
    if let Some(unit) = &unit {
        text.push(' ');
        text.push_str(unit);
    }
    if let Some(total) = row.total.filter(|t| *t > 0.0) {
        text.push_str(&format!(" ({}%)", (100.0 * row.current / total).floor()));
    }
    if let Some(rate) = row.rate {
        text.push_str(&format!(
            ", {}{}/s",
            number(rate),
            unit.map_or(String::new(), |u| format!(" {u}"))
        ));
    }
    if let Some(eta) = row.eta_s.filter(|e| *e > 0.0 && e.is_finite()) {
        let eta = std::time::Duration::from_secs_f64(eta.min(1e9).ceil());
        text.push_str(&format!(", ETA {}", humanize_duration(eta)));
    }
    text
}

/// A fixed-width bar of `fraction` (clamped to 0..=1).
fn bar(fraction: f64) -> String {
    const WIDTH: usize = 20;
    let filled = ((fraction.clamp(0.0, 1.0) * WIDTH as f64).round() as usize).min(WIDTH);
    format!("[{}{}]", "#".repeat(filled), "-".repeat(WIDTH - filled))
}

/// Whole numbers without a fraction (`3`), others with up to two decimals.
fn number(value: f64) -> String {
    pmon_core::record::short_number(value)
}

/// `resources: rss 812.4 MiB, cpu 97.0%, 3 processes (sampled 10:00:03)`.
fn resources_text(metrics: &BTreeMap<String, LastMetric>) -> Option<String> {
    let shown = [
        ("memory/rss_bytes", "rss"),
        ("cpu/cpu_percent", "cpu"),
        ("cpu/processes", "processes"),
    ];
    let mut parts = Vec::new();
    let mut newest: Option<&str> = None;
    for (key, label) in shown {
        if let Some(m) = metrics.get(key) {
            parts.push(format!(
                "{label} {}",
                super::metrics::human(m.value, m.unit.as_deref())
            ));
            newest = newest.max(Some(&m.timestamp));
        }
    }
    let newest = newest?;
    Some(format!(
        "resources: {} (sampled {})",
        parts.join(", "),
        local_time(newest, false)
    ))
}

/// `ValueError: bad shard (2026-11-27 10:00:03)` or `none`.
fn last_error_text(last_error: Option<&LogRow>) -> String {
    match last_error {
        Some(record) => format!(
            "{} ({})",
            escape_text(first_line(&record.error_summary())),
            local_time(&record.timestamp, false)
        ),
        None => "none".to_string(),
    }
}

fn spool_text(pending: u64) -> String {
    pmon_core::text::plural(pending, "record waiting", "records waiting")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::select::Experiment;
    use crate::query::tests::{insert_log, insert_progress, insert_run, temp_store, TestLog};
    use pmon_core::record::parse_ts;

    fn report_for_latest(conn: &rusqlite::Connection) -> (StatusReport, i64) {
        let db = &mut QueryDb::Sqlite(conn);
        let experiment = Experiment::load(db, "x").unwrap();
        let report = build_report(db, experiment.latest(), 0).unwrap();
        (report, experiment.latest().ordinal)
    }

    fn failed_run_with_progress() -> (tempfile::TempDir, pmon_store::SqliteStore) {
        let (dir, store) = temp_store();
        let conn = store.conn();
        insert_run(conn, "x", 1, "R1", "succeeded");
        insert_run(conn, "x", 2, "R2", "failed");
        conn.execute(
            "UPDATE pipeline_runs SET exit_code = 1, ended_at = '2026-11-27T10:02:13.000000Z', command = '[\"python\",\"train.py\",\"--name\",\"my run\"]' WHERE run_id = 'R2'",
            [],
        )
        .unwrap();
        insert_progress(conn, "R2", "load", 3.0, Some(10.0), Some("files"));
        insert_progress(conn, "R2", "load/shard_3", 5.0, Some(10.0), None);
        insert_progress(conn, "R2", "train/epoch", 2.0, None, Some("epochs"));
        insert_progress(conn, "R1", "other", 1.0, None, None);
        insert_log(conn, TestLog::new("R2", "10:00:01", "ERROR", "older error"));
        insert_log(
            conn,
            TestLog {
                exception_type: Some("ValueError"),
                exception_message: Some("bad shard\nmore detail"),
                traceback: Some("Traceback...\nValueError: bad shard\nmore detail\n"),
                ..TestLog::new("R2", "10:00:05", "CRITICAL", "failed to load")
            },
        );
        insert_log(
            conn,
            TestLog::new("R2", "10:00:09", "WARNING", "later warning"),
        );
        (dir, store)
    }

    #[test]
    fn json_status_is_one_object_with_the_spec_fields() {
        let (_dir, store) = failed_run_with_progress();
        let (report, count) = report_for_latest(store.conn());
        let mut out = Vec::new();
        write_status(&report, count, Format::Json, Utc::now(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 1);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        for key in [
            "experiment_id",
            "run_id",
            "state",
            "exit_code",
            "signal",
            "started_at",
            "ended_at",
            "progress",
            "last_error",
            "spool_pending",
            "run",
            "command",
            "metrics",
            "pid",
            "stalled_since",
        ] {
            assert!(value.get(key).is_some(), "missing {key} in {text}");
        }
        assert_eq!(value.as_object().unwrap().len(), 15);
        assert_eq!(value["progress"][1]["parent"], "load");
        assert_eq!(value["progress"][1]["eta_s"], serde_json::Value::Null);
        assert_eq!(value["state"], "failed");
        assert_eq!(value["exit_code"], 1);
        assert_eq!(value["run"], 2);
        assert_eq!(value["spool_pending"], 0);
        assert_eq!(value["progress"].as_array().unwrap().len(), 3);
        assert_eq!(value["progress"][0]["task"], "load");
        assert_eq!(value["progress"][1]["total"], 10.0);
        assert_eq!(value["last_error"]["exception_type"], "ValueError");
        assert_eq!(value["last_error"]["level"], "CRITICAL");
    }

    #[test]
    fn text_status_reads_as_a_block() {
        let (_dir, store) = failed_run_with_progress();
        let (report, count) = report_for_latest(store.conn());
        let text = status_text(&report, count, Utc::now());
        let expected_lines = [
            "experiment: x (run 2 of 2, R2)",
            "state: failed (exit code 1)",
            "duration: 2m 13s",
            "command: python train.py --name 'my run'",
            "progress:",
            "  load       [######--------------]  3/10 files (30%)",
            "    shard_3  [##########----------]  5/10 (50%)",
            "  train",
            "    epoch    2 epochs",
            "spool: 0 records waiting",
        ];
        for line in expected_lines {
            assert!(
                text.lines().any(|l| l == line),
                "no line {line:?} in\n{text}"
            );
        }
        let last_error = text
            .lines()
            .find(|l| l.starts_with("last error: "))
            .unwrap();
        assert!(
            last_error.starts_with("last error: ValueError: bad shard ("),
            "{last_error}"
        );
    }

    #[test]
    fn a_signalled_run_names_the_signal() {
        let (_dir, store) = temp_store();
        insert_run(store.conn(), "x", 1, "R1", "crashed");
        store
            .conn()
            .execute("UPDATE pipeline_runs SET signal = 9", [])
            .unwrap();
        let (report, count) = report_for_latest(store.conn());
        let text = status_text(&report, count, Utc::now());
        assert!(
            text.contains("state: crashed (killed by SIGKILL)\n"),
            "{text}"
        );
        assert!(text.contains("last error: none\n"), "{text}");
        assert!(text.contains("progress: none\n"), "{text}");
        assert_eq!(signal_name(77), "signal 77");
    }

    #[test]
    fn live_runs_show_duration_so_far() {
        let (_dir, store) = temp_store();
        insert_run(store.conn(), "x", 1, "R1", "running");
        // The agent pid is ours, so the run is not marked lost.
        store
            .conn()
            .execute(
                "UPDATE pipeline_runs SET host = ?1, agent_pid = ?2, agent_start = NULL",
                rusqlite::params![pmon_core::procinfo::hostname(), std::process::id()],
            )
            .unwrap();
        let (report, count) = report_for_latest(store.conn());
        let now = parse_ts("2026-11-27T10:00:45Z").unwrap();
        let text = status_text(&report, count, now);
        assert!(text.contains("state: running\n"), "{text}");
        assert!(text.contains("duration: 45s so far\n"), "{text}");
    }

    #[test]
    fn stored_control_characters_are_escaped() {
        let (_dir, store) = temp_store();
        insert_run(store.conn(), "x", 1, "R1", "failed");
        insert_progress(
            store.conn(),
            "R1",
            "evil\x1b]0;title\x07",
            1.0,
            None,
            Some("\r"),
        );
        insert_log(
            store.conn(),
            TestLog::new("R1", "10:00:00", "ERROR", "bell\x07"),
        );
        let (report, count) = report_for_latest(store.conn());
        let text = status_text(&report, count, Utc::now());
        assert!(
            !text.contains('\x1b') && !text.contains('\x07') && !text.contains('\r'),
            "{text:?}"
        );
        assert!(text.contains("bell\\x07"), "{text}");
    }
}
