//! JSON lines from structured loggers (python-json-logger, structlog, loguru's
//! `serialize=True`, most non-Python loggers).
//!
//! The level comes from `level`, `levelname` or `severity`; the message from
//! `message`, `msg` or `event`; the logger from `logger`, `name` or
//! `logger_name`; the time from `timestamp`, `time`, `ts` or `asctime`
//! (RFC 3339 text or Unix seconds). A traceback rendered into `exc_info`,
//! `exception` or `traceback` becomes the record's traceback. A JSON object with
//! neither a level nor a message is not a log line for this parser.

use super::line::{LineFields, LineParser};
use super::timestamp;
use crate::record::Level;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

pub struct JsonParser;

impl LineParser for JsonParser {
    fn name(&self) -> &str {
        "json"
    }

    fn describe(&self) -> &str {
        "JSON objects with level/levelname/severity and message/msg/event fields"
    }

    fn parse(&self, line: &str) -> Option<LineFields> {
        let trimmed = line.trim();
        if !(trimmed.starts_with('{') && trimmed.ends_with('}')) {
            return None;
        }
        let obj: Map<String, Value> = serde_json::from_str(trimmed).ok()?;
        let level = text(&obj, &["level", "levelname", "severity", "lvl"]);
        let message = text(&obj, &["message", "msg", "event"]);
        if level.is_none() && message.is_none() {
            return None;
        }
        Some(LineFields {
            timestamp: time(&obj),
            level: level
                .as_deref()
                .and_then(Level::from_name)
                .unwrap_or(Level::Info),
            logger: text(&obj, &["logger", "name", "logger_name"]),
            message: message.unwrap_or_default(),
            traceback: text(&obj, &["exc_info", "exception", "traceback", "exc_text"]).filter(
                |t| t.contains("Traceback (most recent call last):") || t.contains("\n  File \""),
            ),
            fields: None,
            exception_type: None,
            exception_message: None,
            progress: None,
        })
    }
}

fn text(obj: &Map<String, Value>, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| match obj.get(*k)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

fn time(obj: &Map<String, Value>) -> Option<DateTime<Utc>> {
    ["timestamp", "time", "ts", "asctime", "@timestamp"]
        .iter()
        .find_map(|k| match obj.get(*k)? {
            Value::String(s) => timestamp::parse_prefix(s).map(|(t, _)| t),
            Value::Number(n) => {
                let secs = n.as_f64()?;
                DateTime::from_timestamp_micros((secs * 1e6) as i64)
            }
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_common_field_names() {
        let f = JsonParser
            .parse(r#"{"levelname": "WARN", "msg": "slow", "name": "db"}"#)
            .unwrap();
        assert_eq!(
            (f.level, f.logger.as_deref(), f.message.as_str()),
            (Level::Warning, Some("db"), "slow")
        );
        let f = JsonParser
            .parse(r#"{"severity": "INFO", "event": "started", "ts": 1767225600.5}"#)
            .unwrap();
        assert_eq!(f.message, "started");
        assert_eq!(
            crate::record::format_ts(&f.timestamp.unwrap()),
            "2026-01-01T00:00:00.500000Z"
        );
    }

    #[test]
    fn structlog_exception_field_becomes_the_traceback() {
        let f = JsonParser
            .parse(r#"{"level": "error", "event": "boom", "exception": "Traceback (most recent call last):\n  File \"a.py\", line 1, in <module>\nValueError: x"}"#)
            .unwrap();
        assert!(f.traceback.unwrap().ends_with("ValueError: x"));
    }

    #[test]
    fn other_json_is_not_a_log_line() {
        assert!(JsonParser.parse(r#"{"rows": 3}"#).is_none());
        assert!(JsonParser.parse("{not json}").is_none());
    }
}
