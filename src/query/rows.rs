//! The rows queries read, as printed and as `--format json` serialises them
//! (the spec's field names): what both stores' SQL is decoded into.

use pmon_core::text::first_line;
use rusqlite::Row;
use serde::Serialize;

/// One row of `pipeline_logs`, serialised with exactly the spec's field names.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogRow {
    /// Insertion order; lets `--follow` ask for "anything newer than this".
    #[serde(skip)]
    pub id: i64,
    pub experiment_id: String,
    pub run_id: String,
    pub timestamp: String,
    pub level: String,
    pub logger: Option<String>,
    pub message: String,
    pub traceback: Option<String>,
    pub exception_type: Option<String>,
    pub exception_message: Option<String>,
    pub stream: String,
    pub source: String,
    /// A declarative parser's other captures (a JSON object), if any.
    pub fields: Option<serde_json::Value>,
}

pub const LOG_COLUMNS: &str = "id, experiment_id, run_id, timestamp, level, logger, message, traceback, exception_type, exception_message, stream, source, fields";

impl LogRow {
    pub fn from_row(row: &Row<'_>) -> rusqlite::Result<LogRow> {
        Ok(LogRow {
            id: row.get(0)?,
            experiment_id: row.get(1)?,
            run_id: row.get(2)?,
            timestamp: row.get(3)?,
            level: row.get(4)?,
            logger: row.get(5)?,
            message: row.get(6)?,
            traceback: row.get(7)?,
            exception_type: row.get(8)?,
            exception_message: row.get(9)?,
            stream: row.get(10)?,
            source: row.get(11)?,
            fields: row
                .get::<_, Option<String>>(12)?
                .and_then(|f| serde_json::from_str(&f).ok()),
        })
    }

    /// `ValueError: bad shard`: the exception's type and the first line of its
    /// message, or the record's message when it carries no exception.
    pub fn error_summary(&self) -> String {
        match (&self.exception_type, &self.exception_message) {
            (Some(kind), Some(text)) if !text.is_empty() => {
                format!("{kind}: {}", first_line(text))
            }
            (Some(kind), _) => kind.clone(),
            (None, _) => first_line(&self.message).to_string(),
        }
    }
}

/// One task's current progress, from `pipeline_progress`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProgressRow {
    pub task: String,
    pub current: f64,
    pub total: Option<f64>,
    pub unit: Option<String>,
    pub rate: Option<f64>,
    pub updated_at: String,
    /// Seconds left at the current rate, while the run is live.
    pub eta_s: Option<f64>,
    /// The task this one is part of (`train` for `train/epoch`).
    pub parent: Option<String>,
}

impl ProgressRow {
    pub fn from_row(row: &Row<'_>) -> rusqlite::Result<ProgressRow> {
        Ok(ProgressRow::new(
            row.get(0)?,
            row.get(1)?,
            row.get(2)?,
            row.get(3)?,
            row.get(4)?,
            row.get(5)?,
        ))
    }

    pub fn new(
        task: String,
        current: f64,
        total: Option<f64>,
        unit: Option<String>,
        rate: Option<f64>,
        updated_at: String,
    ) -> ProgressRow {
        let parent = task
            .trim_end_matches('/')
            .rsplit_once('/')
            .map(|(parent, _)| parent.to_string())
            .filter(|p| !p.is_empty());
        ProgressRow {
            task,
            current,
            total,
            unit,
            rate,
            updated_at,
            eta_s: None,
            parent,
        }
    }

    /// Seconds until `total` at `rate` (0 once there); `None` without both.
    pub fn eta(&self) -> Option<f64> {
        let total = self.total?;
        if self.current >= total {
            return Some(0.0);
        }
        let rate = self.rate.filter(|r| *r > 0.0)?;
        Some((total - self.current) / rate)
    }
}
