//! The record types that flow from the parsers to the stores.
//!
//! Everything downstream of parsing (batching, SQLite, later PostgreSQL, queries)
//! speaks in these types; nothing here knows where a line came from or how it is
//! stored.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// Severity of a log record, ordered from least to most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    Debug,
    Info,
    Warning,
    Error,
    Critical,
}

impl Level {
    pub const ALL: [Level; 5] = [
        Level::Debug,
        Level::Info,
        Level::Warning,
        Level::Error,
        Level::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warning => "WARNING",
            Level::Error => "ERROR",
            Level::Critical => "CRITICAL",
        }
    }

    /// Recognises the level names programs print, case-insensitively, with the
    /// usual aliases (`WARN`, `FATAL`, `ERR`, `TRACE`…). Returns `None` for
    /// anything else so that ordinary words are never mistaken for levels.
    pub fn from_name(name: &str) -> Option<Level> {
        let upper = name.trim();
        if upper.len() > 9 {
            return None;
        }
        match upper.to_ascii_uppercase().as_str() {
            "TRACE" | "DEBUG" | "DBG" => Some(Level::Debug),
            "INFO" | "INFORMATION" | "NOTICE" => Some(Level::Info),
            "WARNING" | "WARN" => Some(Level::Warning),
            "ERROR" | "ERR" => Some(Level::Error),
            "CRITICAL" | "FATAL" | "CRIT" | "EMERG" | "ALERT" => Some(Level::Critical),
            _ => None,
        }
    }

    pub fn is_error(self) -> bool {
        self >= Level::Error
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Level::from_name(s).ok_or_else(|| {
            format!("unknown level '{s}': use DEBUG, INFO, WARNING, ERROR or CRITICAL")
        })
    }
}

/// Which stream a line was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamKind {
    Stdout,
    Stderr,
    File,
    Stdin,
}

impl StreamKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamKind::Stdout => "stdout",
            StreamKind::Stderr => "stderr",
            StreamKind::File => "file",
            StreamKind::Stdin => "stdin",
        }
    }
}

/// A log record as parsed from one line (plus the traceback that followed it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    pub timestamp: DateTime<Utc>,
    pub level: Level,
    pub logger: Option<String>,
    pub message: String,
    pub traceback: Option<String>,
    pub exception_type: Option<String>,
    pub exception_message: Option<String>,
    /// Captures of a declarative parser beyond the named record fields, as a
    /// JSON object (`{"thread":"main"}`): stored in the `fields` column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<String>,
    pub stream: StreamKind,
    /// `stdout`, `stderr` or the file's path: shared by every record of the
    /// stream, so a record costs no allocation for it.
    pub source: Arc<str>,
    /// Index of the parser in the chain that recognised the line, if any
    /// (shown by `parsers test`; not stored).
    #[serde(skip)]
    pub parsed_by: Option<usize>,
    /// Byte offset of the record's first line in its stream or file: a file
    /// record's idempotency key, and where a checkpoint may safely point.
    #[serde(default)]
    pub offset: Option<u64>,
}

impl LogRecord {
    /// The bytes of text the record holds (what a queue of records costs).
    pub fn text_bytes(&self) -> usize {
        let optional = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        self.message.len()
            + optional(&self.logger)
            + optional(&self.traceback)
            + optional(&self.exception_type)
            + optional(&self.exception_message)
            + optional(&self.fields)
    }

    /// A record with no structure: an INFO line as the program printed it.
    pub fn plain(message: String, stream: StreamKind, source: impl Into<Arc<str>>) -> LogRecord {
        LogRecord {
            timestamp: Utc::now(),
            level: Level::Info,
            logger: None,
            message,
            traceback: None,
            exception_type: None,
            exception_message: None,
            fields: None,
            stream,
            source: source.into(),
            parsed_by: None,
            offset: None,
        }
    }

    /// Records that a person is waiting for are written at once, not batched.
    pub fn is_urgent(&self) -> bool {
        self.level.is_error() || self.traceback.is_some()
    }
}

/// The current state of one progress task (`train/epoch`), replacing the last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgressUpdate {
    pub task: String,
    pub current: f64,
    pub total: Option<f64>,
    pub unit: Option<String>,
    pub rate: Option<f64>,
    #[serde(serialize_with = "ser_ts")]
    pub updated_at: DateTime<Utc>,
}

/// What a metric sample measures; the first half of its `type/name` series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricType {
    Memory,
    Cpu,
    Io,
    Host,
    Throughput,
    User,
}

impl MetricType {
    pub const ALL: [MetricType; 6] = [
        MetricType::Memory,
        MetricType::Cpu,
        MetricType::Io,
        MetricType::Host,
        MetricType::Throughput,
        MetricType::User,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Memory => "memory",
            MetricType::Cpu => "cpu",
            MetricType::Io => "io",
            MetricType::Host => "host",
            MetricType::Throughput => "throughput",
            MetricType::User => "user",
        }
    }
}

impl FromStr for MetricType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MetricType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                format!("unknown metric type '{s}': use memory, cpu, io, host, throughput or user")
            })
    }
}

/// One sampled value of one series (`memory/rss_bytes`), in base units
/// (bytes, not MiB), or a value the program reported itself (`user/loss`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    #[serde(serialize_with = "ser_ts")]
    pub timestamp: DateTime<Utc>,
    pub metric_type: MetricType,
    pub name: String,
    pub value: f64,
    pub unit: Option<String>,
    /// The program's own step counter (`##pmon[metric … step=300]`).
    #[serde(default)]
    pub step: Option<i64>,
}

impl ProgressUpdate {
    /// `train 3/10 epochs (30%)`: one line for status reports.
    pub fn summary(&self) -> String {
        let mut text = format!("{} {}", self.task, short_number(self.current));
        if let Some(total) = self.total {
            text.push_str(&format!("/{}", short_number(total)));
        }
        if let Some(unit) = &self.unit {
            text.push_str(&format!(" {unit}"));
        }
        if let Some(total) = self.total.filter(|t| *t > 0.0) {
            text.push_str(&format!(
                " ({:.0}%)",
                (100.0 * self.current / total).floor()
            ));
        }
        text
    }
}

/// Whole numbers without a fraction (`3`), others with up to two decimals.
pub fn short_number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        let text = format!("{value:.2}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// A lifecycle event of a run (`start`, `exit`, `signal`…).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// A ULID: the key that makes a replayed event land once.
    pub id: String,
    pub timestamp: DateTime<Utc>,
    pub event_type: String,
    pub details: serde_json::Value,
}

impl Event {
    pub fn now(event_type: &str, details: serde_json::Value) -> Event {
        Event {
            id: ulid::Ulid::new().to_string(),
            timestamp: Utc::now(),
            event_type: event_type.to_string(),
            details,
        }
    }
}

/// Timestamps are stored and printed as RFC 3339 in UTC with microseconds, a
/// fixed width so that text order is time order in SQLite.
pub fn format_ts(ts: &DateTime<Utc>) -> String {
    ts.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub fn parse_ts(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn ser_ts<S: serde::Serializer>(ts: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_ts(ts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_aliases_map_to_the_five_levels() {
        assert_eq!(Level::from_name("warn"), Some(Level::Warning));
        assert_eq!(Level::from_name("FATAL"), Some(Level::Critical));
        assert_eq!(Level::from_name("Error"), Some(Level::Error));
        assert_eq!(Level::from_name("progress"), None);
    }

    #[test]
    fn timestamps_round_trip_with_fixed_width() {
        let ts = parse_ts("2026-11-27T10:00:00.5Z").unwrap();
        assert_eq!(format_ts(&ts), "2026-11-27T10:00:00.500000Z");
    }
}
