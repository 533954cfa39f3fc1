//! Parsing: where a line becomes a record.
//!
//! A [`ParserChain`] of [`LineParser`]s recognises log lines (level, logger,
//! message, timestamp); the first parser that claims a line wins, and a line no
//! parser claims is an `INFO` record with the line as its message. Beside the
//! chain sit the [`TracebackCollector`] (whole Python tracebacks) and the
//! [`ProgressParser`]; [`RecordAssembler`] combines the three for one stream.
//!
//! New formats plug in without a rebuild as declarative parser files
//! (`parsers/*.yml`, see [`declarative`]); the chain's order and prefilter
//! are in `chain.rs`.

mod assemble;
mod chain;
pub mod declarative;
pub mod directive;
pub mod fault;
pub mod fingerprint;
#[cfg(test)]
mod fuzz;
mod json;
mod logline;
mod progress;
mod timestamp;
pub mod traceback;

pub use assemble::{assemble_bytes, AssemblerTiming, Output, RecordAssembler};
pub use chain::{LineScan, ParserChain};
pub use json::JsonParser;
pub use logline::{LogfmtParser, PythonLoggingParser};
pub use progress::ProgressParser;

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
