//! `query list`: one line per experiment, its latest run at a glance — which
//! runs are alive, which failed, and which have errors worth a look.

use super::db::{self, QueryDb, Store};
use super::output::run_duration;
use super::output::{local_time, write_json_line};
use crate::app::App;
use crate::cli::ListArgs;
use chrono::{DateTime, Utc};
use pmon_core::options::Format;
use pmon_core::run::{Run, RunState};
use pmon_core::text::{escape_text, humanize_duration};
use serde::Serialize;
use std::io::Write;

/// One experiment's line, as a JSON object (field order is the printed order).
#[derive(Debug, Clone, Serialize)]
pub struct ExperimentSummary {
    pub experiment_id: String,
    pub run_id: String,
    /// The latest run's ordinal.
    pub run: i64,
    pub state: RunState,
    pub started_at: String,
    pub ended_at: Option<String>,
    /// Seconds from start to end, or so far for a live run; null when unknown
    /// (a lost run never recorded its end).
    pub duration_s: Option<f64>,
    /// ERROR and CRITICAL records of the latest run.
    pub error_count: u64,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// When the live latest run stalled; null unless it is stalled now.
    pub stalled_since: Option<String>,
}

/// `query list`.
pub fn list(app: &App, args: &ListArgs) -> anyhow::Result<()> {
    let format = args.format.format;
    let summaries = match Store::open(app)? {
        Some(mut store) => {
            db::note_spooled_records(app, &store, format);
            summaries(&mut store.db(), Utc::now())?
        }
        None => Vec::new(),
    };
    if summaries.is_empty() {
        if format == Format::Text {
            eprintln!("no experiments yet; run pmon-agent wrap -e NAME -- CMD");
        }
        return Ok(());
    }
    super::output::to_stdout(|out| write_list(&summaries, format, out))
}

/// The latest run of every experiment, runs whose agent died shown as lost.
pub fn summaries(
    db: &mut QueryDb<'_>,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<ExperimentSummary>> {
    let runs = db.latest_runs()?;
    let errors = db.error_counts(&runs)?;
    let mut summaries: Vec<ExperimentSummary> = runs
        .iter()
        .map(|run| summarize(run, errors.get(&run.run_id).copied().unwrap_or(0), now))
        .collect();
    for (summary, run) in summaries.iter_mut().zip(&runs) {
        if run.state.is_live() {
            summary.stalled_since = db.stalled_since(&run.experiment_id, &run.run_id)?;
        }
    }
    Ok(summaries)
}

fn summarize(run: &Run, error_count: u64, now: DateTime<Utc>) -> ExperimentSummary {
    let duration = run_duration(run.state, &run.started_at, run.ended_at.as_deref(), now);
    ExperimentSummary {
        experiment_id: run.experiment_id.clone(),
        run_id: run.run_id.clone(),
        run: run.ordinal,
        state: run.state,
        started_at: run.started_at.clone(),
        ended_at: run.ended_at.clone(),
        duration_s: duration.map(|d| (d.as_millis() as f64) / 1000.0),
        error_count,
        exit_code: run.exit_code,
        signal: run.signal,
        stalled_since: None,
    }
}

/// Prints the summaries as an aligned table with a header, or as JSON Lines.
pub fn write_list(
    summaries: &[ExperimentSummary],
    format: Format,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match format {
        Format::Json => summaries.iter().try_for_each(|s| write_json_line(out, s)),
        Format::Text => Ok(out.write_all(table(summaries).as_bytes())?),
    }
}

const HEADER: [&str; 6] = [
    "EXPERIMENT",
    "RUN",
    "STATE",
    "STARTED",
    "DURATION",
    "ERRORS",
];

/// The text table; every column padded to its widest cell.
fn table(summaries: &[ExperimentSummary]) -> String {
    let rows: Vec<[String; 6]> = summaries.iter().map(table_row).collect();
    let header = HEADER.map(String::from);
    let mut widths = [0usize; 6];
    for row in std::iter::once(&header).chain(&rows) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    std::iter::once(&header)
        .chain(&rows)
        .map(|row| format_row(row, &widths))
        .collect()
}

fn table_row(summary: &ExperimentSummary) -> [String; 6] {
    let duration = match summary.duration_s {
        Some(secs) => humanize_duration(std::time::Duration::from_secs_f64(secs.max(0.0))),
        None => "-".to_string(),
    };
    [
        escape_text(&summary.experiment_id),
        summary.run.to_string(),
        match super::status::stalled_words(summary.stalled_since.as_deref(), chrono::Utc::now()) {
            Some(stalled) => format!("{} ({stalled})", summary.state.as_str()),
            None => summary.state.as_str().to_string(),
        },
        local_time(&summary.started_at, false),
        duration,
        summary.error_count.to_string(),
    ]
}

fn format_row(row: &[String; 6], widths: &[usize; 6]) -> String {
    let cells: Vec<String> = row
        .iter()
        .zip(widths)
        .map(|(cell, width)| format!("{cell:<width$}"))
        .collect();
    let mut line = cells.join("  ").trim_end().to_string();
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::tests::{insert_log, insert_run, temp_store, TestLog};
    use pmon_core::record::parse_ts;

    fn sample() -> (tempfile::TempDir, pmon_store::SqliteStore) {
        let (dir, store) = temp_store();
        let conn = store.conn();
        insert_run(conn, "etl", 1, "E1", "failed");
        insert_run(conn, "etl", 2, "E2", "succeeded");
        conn.execute(
            "UPDATE pipeline_runs SET ended_at = '2026-11-27T10:02:13.000000Z', exit_code = 0 WHERE run_id = 'E2'",
            [],
        )
        .unwrap();
        insert_run(conn, "a_long_experiment_name", 1, "L1", "crashed");
        conn.execute(
            "UPDATE pipeline_runs SET signal = 9 WHERE run_id = 'L1'",
            [],
        )
        .unwrap();
        insert_log(
            conn,
            TestLog::new("E1", "10:00:00", "ERROR", "old run error"),
        );
        insert_log(conn, TestLog::new("E2", "10:00:01", "ERROR", "one"));
        insert_log(conn, TestLog::new("E2", "10:00:02", "CRITICAL", "two"));
        insert_log(
            conn,
            TestLog::new("E2", "10:00:03", "WARNING", "not an error"),
        );
        (dir, store)
    }

    #[test]
    fn json_lists_the_latest_run_of_each_experiment() {
        let (_dir, store) = sample();
        let now = parse_ts("2026-11-27T11:00:00Z").unwrap();
        let summaries = summaries(&mut QueryDb::Sqlite(store.conn()), now).unwrap();
        let mut out = Vec::new();
        write_list(&summaries, Format::Json, &mut out).unwrap();
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["experiment_id"], "a_long_experiment_name");
        assert_eq!(lines[0]["signal"], 9);
        assert_eq!(lines[0]["duration_s"], serde_json::Value::Null);
        let etl = &lines[1];
        assert_eq!(etl["run"], 2);
        assert_eq!(etl["run_id"], "E2");
        assert_eq!(etl["state"], "succeeded");
        assert_eq!(etl["error_count"], 2);
        assert_eq!(etl["duration_s"], 133.0);
        assert_eq!(etl["exit_code"], 0);
        assert_eq!(etl["stalled_since"], serde_json::Value::Null);
        assert_eq!(etl.as_object().unwrap().len(), 11);
    }

    #[test]
    fn text_is_an_aligned_table_with_a_header() {
        let (_dir, store) = sample();
        let summaries = summaries(&mut QueryDb::Sqlite(store.conn()), Utc::now()).unwrap();
        let mut out = Vec::new();
        write_list(&summaries, Format::Text, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[0].starts_with("EXPERIMENT              RUN  STATE"),
            "{text}"
        );
        let run_column = lines[0].find("RUN").unwrap();
        assert_eq!(&lines[2][run_column..run_column + 1], "2", "{text}");
        assert!(
            lines[2].contains("succeeded") && lines[2].contains("2m 13s"),
            "{text}"
        );
        assert!(lines[2].ends_with(" 2"), "{text}");
    }

    #[test]
    fn an_empty_store_lists_nothing() {
        let (_dir, store) = temp_store();
        assert!(summaries(&mut QueryDb::Sqlite(store.conn()), Utc::now())
            .unwrap()
            .is_empty());
    }
}
