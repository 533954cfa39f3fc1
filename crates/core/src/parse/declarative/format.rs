//! The YAML shape of a parser file (`parsers/*.yml`), as read, before any
//! regex is compiled. Every value a user can get wrong keeps its line
//! ([`Spanned`]) so the error can point at it.

use serde::Deserialize;
use serde_saphyr::Spanned;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParserFile {
    pub name: Spanned<String>,
    /// One line for `parsers list`.
    #[serde(default)]
    pub description: Option<String>,
    /// The line regex; in a multiline parser, the first line's (defaults to
    /// `multiline.start`).
    #[serde(default)]
    pub regex: Option<Spanned<String>>,
    /// How the `timestamp` capture is written: a strftime format, `rfc3339`,
    /// `unix` or `unix_ms`. Without one, the agent's own timestamp reader.
    #[serde(default)]
    pub time_format: Option<Spanned<String>>,
    /// `rfc3339`-less formats without an offset are read in this zone: `local`
    /// (the default, like Python's asctime) or `utc`.
    #[serde(default)]
    pub timezone: Option<Spanned<String>>,
    /// The captured level text (`W`, `fatal`, `3`) to a level name.
    #[serde(default)]
    pub levels: BTreeMap<String, Spanned<String>>,
    /// Values used when the regex captured none.
    #[serde(default)]
    pub defaults: Defaults,
    #[serde(default)]
    pub multiline: Option<MultilineSpec>,
    #[serde(default)]
    pub examples: Vec<Spanned<ExampleSpec>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    #[serde(default)]
    pub level: Option<Spanned<String>>,
    #[serde(default)]
    pub logger: Option<String>,
    #[serde(default)]
    pub exception_type: Option<String>,
    #[serde(default)]
    pub progress_task: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultilineSpec {
    /// The first line of a record.
    #[serde(default)]
    pub start: Option<Spanned<String>>,
    /// A line that belongs to the record in progress.
    #[serde(rename = "continue", default)]
    pub continue_: Option<Spanned<String>>,
    /// A line that belongs to the record and ends it.
    #[serde(default)]
    pub end: Option<Spanned<String>>,
    /// Quiet this long ends the record (default 500ms).
    #[serde(default)]
    pub timeout: Option<Spanned<DurationText>>,
    /// Fewer lines than this (default 2: the start line and one more) and
    /// the start line is an ordinary line after all.
    #[serde(default)]
    pub min_lines: Option<usize>,
    /// A record is cut here (default 1000), whatever follows.
    #[serde(default)]
    pub max_lines: Option<usize>,
}

/// `500ms`, `2s` or a number of seconds.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum DurationText {
    Seconds(f64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExampleSpec {
    /// One line, or the lines of one multiline record.
    pub input: String,
    /// `false`: the parser must not claim this input.
    #[serde(default = "yes")]
    pub matches: bool,
    #[serde(default)]
    pub expect: Expected,
}

fn yes() -> bool {
    true
}

/// The record fields an example must produce; fields left out are not checked.
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Expected {
    #[serde(default)]
    pub level: Option<String>,
    #[serde(default)]
    pub logger: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    /// RFC 3339 in UTC, as `--format json` prints it.
    #[serde(default)]
    pub timestamp: Option<String>,
    #[serde(default)]
    pub traceback: Option<String>,
    #[serde(default)]
    pub exception_type: Option<String>,
    #[serde(default)]
    pub exception_message: Option<String>,
    /// Compared whole: every capture that lands in `fields`.
    #[serde(default)]
    pub fields: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub progress_task: Option<String>,
    #[serde(default)]
    pub progress_current: Option<f64>,
    #[serde(default)]
    pub progress_total: Option<f64>,
}
