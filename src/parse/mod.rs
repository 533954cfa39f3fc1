//! Parsing: where a line becomes a record.
//!
//! A [`ParserChain`] of [`LineParser`]s recognises log lines (level, logger,
//! message, timestamp); the first parser that claims a line wins, and a line no
//! parser claims is an `INFO` record with the line as its message. Beside the
//! chain sit the [`TracebackCollector`] (whole Python tracebacks) and the
//! [`ProgressParser`]; [`RecordAssembler`] combines the three for one stream.
//!
//! New formats plug in by implementing [`LineParser`] (the declarative
//! `parsers/*.yml` definitions will be one such implementation).

mod assemble;
pub mod directive;
#[cfg(test)]
mod fuzz;
mod json;
mod logline;
mod progress;
mod timestamp;
pub mod traceback;

pub use assemble::{AssemblerTiming, Output, RecordAssembler};
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

/// Parsers tried in order; the first match wins.
pub struct ParserChain {
    parsers: Vec<Box<dyn LineParser>>,
}

impl ParserChain {
    /// The parsers built into the agent.
    pub fn builtin() -> ParserChain {
        ParserChain {
            parsers: vec![
                Box::new(JsonParser),
                Box::new(PythonLoggingParser),
                Box::new(LogfmtParser),
            ],
        }
    }

    /// Returns the index of the matching parser and what it extracted.
    pub fn parse(&self, line: &str) -> Option<(usize, LineFields)> {
        self.parsers
            .iter()
            .enumerate()
            .find_map(|(i, p)| p.parse(line).map(|f| (i, f)))
    }

    pub fn parsers(&self) -> &[Box<dyn LineParser>] {
        &self.parsers
    }
}
