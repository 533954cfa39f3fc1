//! Declarative parsers: log formats and other languages' stack traces taught
//! to the agent by a YAML file instead of a rebuild.
//!
//! A parser file (`parsers/*.yml`, documented in `parsers/EXAMPLE.yml`) names
//! a line `regex` whose named captures become record fields (`level`,
//! `logger`, `message`, `timestamp`, `exception_type`, `exception_message`,
//! `progress_*`; any other capture lands in the record's `fields` JSON), a
//! `levels:` map, and optionally `multiline:` rules for a record that spans
//! lines (a Java or Go stack trace): `start`, `continue`, `end`, `timeout`.
//! Its `examples:` say what must come out of given input, and are run by
//! `parsers check` and, for a user's own files, at every start.
//!
//! The parsers shipped in the repository's `parsers/` are compiled into the
//! binary (see `build.rs`), so an installed agent has them without a
//! checkout; a user's directories (`parsers.paths`) come before them, and a
//! user parser with a shipped one's name replaces it.

mod compile;
mod error;
mod format;
mod lazy;
mod multiline;
mod sources;
mod time;

pub use compile::DeclarativeParser;
pub use error::ParserFileError;
pub use format::Expected;
pub use multiline::{Fed, Finished, MultilineRecord};
pub use sources::{compile_source, dir_sources, shipped_sources, LoadedParsers, ParserSource};
