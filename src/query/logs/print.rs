//! How `query logs` and `query errors` print a record: a text line (with
//! the traceback indented below, or a ` [ValueError: …]` hint), or a JSON
//! line; a header when the records move on to another run.

use super::super::output::{local_time, write_json_line};
use super::super::rows::LogRow;
use super::super::select::{Experiment, RunScope};
use pmon_core::options::Format;
use pmon_core::run::Run;
use pmon_core::text::escape_text;
use std::collections::HashMap;
use std::io::Write;

/// Prints records one by one, in text or JSON Lines.
pub(super) struct RecordPrinter {
    format: Format,
    traceback: bool,
    /// With `--run all`, text output marks where each run's records begin.
    run_ordinals: Option<HashMap<String, i64>>,
    last_run_id: Option<String>,
    pub(super) printed: usize,
}

impl RecordPrinter {
    pub(super) fn new(
        format: Format,
        traceback: bool,
        experiment: &Experiment,
        scope: RunScope<'_>,
    ) -> Self {
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

    pub(super) fn print(&mut self, out: &mut dyn Write, record: &LogRow) -> anyhow::Result<()> {
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
    pub(super) fn mark_runs_from(&mut self, experiment: &Experiment, current: &Run) {
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
    pub(super) fn is_new_run(&self, record: &LogRow) -> bool {
        self.run_ordinals
            .as_ref()
            .is_some_and(|known| !known.contains_key(&record.run_id))
    }

    pub(super) fn learn_runs(&mut self, experiment: &Experiment) {
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
