//! What a line parser is: the [`LineParser`] every format implements and
//! the [`LineFields`] it extracts from one line.

use crate::record::Level;
use chrono::{DateTime, Utc};

/// What a line parser extracts from one line.
#[derive(Debug, Clone, PartialEq)]
pub struct LineFields {
    pub timestamp: Option<DateTime<Utc>>,
    pub level: Level,
    pub logger: Option<String>,
    pub message: String,
    /// A traceback carried inside the line itself (JSON loggers put it in a field).
    pub traceback: Option<String>,
    /// Other captures of a declarative parser, as a JSON object.
    pub fields: Option<String>,
    pub exception_type: Option<String>,
    pub exception_message: Option<String>,
    /// Progress the line reported besides being a log line.
    pub progress: Option<crate::record::ProgressUpdate>,
}

impl LineFields {
    pub fn new(level: Level, message: String) -> LineFields {
        LineFields {
            timestamp: None,
            level,
            logger: None,
            message,
            traceback: None,
            fields: None,
            exception_type: None,
            exception_message: None,
            progress: None,
        }
    }
}

/// Recognises one family of log line formats.
pub trait LineParser: Send + Sync {
    /// Short stable name, shown by `parsers list` and `parsers test`.
    fn name(&self) -> &str;
    /// One line describing what the parser recognises.
    fn describe(&self) -> &str;
    /// `None` when the line is not in this parser's format.
    fn parse(&self, line: &str) -> Option<LineFields>;
}
