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
mod catalog;
mod chain;
pub mod declarative;
pub mod directive;
mod examples;
pub mod fault;
pub mod fingerprint;
#[cfg(test)]
mod fuzz;
mod json;
mod line;
mod logline;
mod progress;
mod timestamp;
pub mod traceback;

pub use assemble::{assemble_bytes, AssemblerTiming, Output, RecordAssembler};
pub use catalog::{load, load_checked};
pub use chain::{LineScan, ParserChain};
pub use examples::{run_examples, ExampleFailure};
pub use json::JsonParser;
pub use line::{LineFields, LineParser};
pub use logline::{LogfmtParser, PythonLoggingParser};
pub use progress::ProgressParser;
