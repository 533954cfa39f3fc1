//! A parser file turned into something that runs: regexes compiled once, the
//! level map and time format checked, and the captures of a line mapped onto
//! record fields.

use super::error::ParserFileError;
use super::format::{DurationText, ExampleSpec, ParserFile};
use super::lazy::LazyRegex;
use super::time::TimeReader;
use crate::parse::line::{LineFields, LineParser};
use crate::record::{Level, ProgressUpdate};
use chrono::Utc;
use regex::{Captures, Regex};
use serde_saphyr::Spanned;
use std::collections::HashMap;
use std::time::Duration;

/// Captures that are record fields; every other one lands in `fields`.
const RECORD_CAPTURES: [&str; 10] = [
    "level",
    "logger",
    "message",
    "timestamp",
    "exception_type",
    "exception_message",
    "progress_task",
    "progress_current",
    "progress_total",
    "progress_unit",
];

/// One parser from a `*.yml` file, ready to run.
#[derive(Debug)]
pub struct DeclarativeParser {
    pub name: String,
    pub description: String,
    /// Where it was read from (`parsers/java.yml`, or `shipped:java.yml`).
    pub origin: String,
    /// Claims single lines.
    pub(crate) regex: Option<LazyRegex>,
    pub multiline: Option<MultilineRule>,
    time: TimeReader,
    levels: HashMap<String, Level>,
    default_level: Option<Level>,
    default_logger: Option<String>,
    default_exception_type: Option<String>,
    default_progress_task: Option<String>,
    pub examples: Vec<Example>,
}

/// How a record that spans lines begins, goes on and ends.
#[derive(Debug)]
pub struct MultilineRule {
    pub start: LazyRegex,
    /// `None`: every line belongs until `end`.
    pub continue_: Option<LazyRegex>,
    pub end: Option<LazyRegex>,
    pub timeout: Duration,
    pub min_lines: usize,
    pub max_lines: usize,
}

#[derive(Debug)]
pub struct Example {
    /// The line of the file the example starts on.
    pub line: u64,
    pub spec: ExampleSpec,
}

/// What the regexes of one record captured; the first value of a name wins.
#[derive(Debug, Default, Clone)]
pub struct Captured {
    level: Option<String>,
    logger: Option<String>,
    message: Option<String>,
    timestamp: Option<String>,
    pub exception_type: Option<String>,
    pub exception_message: Option<String>,
    progress_task: Option<String>,
    progress_current: Option<String>,
    progress_total: Option<String>,
    progress_unit: Option<String>,
    fields: serde_json::Map<String, serde_json::Value>,
}

impl Captured {
    pub fn take(&mut self, regex: &Regex, caps: &Captures) {
        for full_name in regex.capture_names().flatten() {
            let Some(m) = caps.name(full_name) else {
                continue;
            };
            let name = base_name(full_name);
            let value = m.as_str();
            let slot = match name {
                "level" => &mut self.level,
                "logger" => &mut self.logger,
                "message" => &mut self.message,
                "timestamp" => &mut self.timestamp,
                "exception_type" => &mut self.exception_type,
                "exception_message" => &mut self.exception_message,
                "progress_task" => &mut self.progress_task,
                "progress_current" => &mut self.progress_current,
                "progress_total" => &mut self.progress_total,
                "progress_unit" => &mut self.progress_unit,
                _ => {
                    if !self.fields.contains_key(name) {
                        self.fields.insert(name.to_string(), value.into());
                    }
                    continue;
                }
            };
            if slot.is_none() {
                *slot = Some(value.to_string());
            }
        }
    }

    /// Adds what another regex captured, keeping values already taken.
    pub fn merge(&mut self, other: Captured) {
        let pairs = [
            (&mut self.level, other.level),
            (&mut self.logger, other.logger),
            (&mut self.message, other.message),
            (&mut self.timestamp, other.timestamp),
            (&mut self.exception_type, other.exception_type),
            (&mut self.exception_message, other.exception_message),
            (&mut self.progress_task, other.progress_task),
            (&mut self.progress_current, other.progress_current),
            (&mut self.progress_total, other.progress_total),
            (&mut self.progress_unit, other.progress_unit),
        ];
        for (slot, value) in pairs {
            if slot.is_none() {
                *slot = value;
            }
        }
        for (k, v) in other.fields {
            self.fields.entry(k).or_insert(v);
        }
    }

    /// The record says what it is itself (a log line), rather than being a
    /// stack trace that belongs to the log line before it.
    pub fn is_log_line(&self) -> bool {
        self.level.is_some() || self.message.is_some()
    }
}

/// `exception_type__2` fills `exception_type`: the regex crate allows a
/// name once, and alternatives often need the same field twice.
fn base_name(name: &str) -> &str {
    match name.rsplit_once("__") {
        Some((base, n)) if !base.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => name,
    }
}

impl DeclarativeParser {
    pub fn compile(file: ParserFile, origin: &str) -> Result<DeclarativeParser, ParserFileError> {
        let err = |line: u64, reason: String| ParserFileError::new(origin, Some(line), reason);
        let name = file.name.value.trim().to_string();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(err(
                file.name.referenced.line(),
                format!("name '{name}' must be one word (letters, digits, - or _)"),
            ));
        }
        let regex = file
            .regex
            .as_ref()
            .map(|r| LazyRegex::check(r, "regex", origin))
            .transpose()?;
        let multiline = file
            .multiline
            .map(|m| compile_multiline(m, file.regex.as_ref(), origin))
            .transpose()?;
        if regex.is_none() && multiline.is_none() {
            return Err(err(
                file.name.referenced.line(),
                "a parser needs a `regex:` (one line) or a `multiline:` rule".into(),
            ));
        }
        let mut levels = HashMap::new();
        for (text, level) in &file.levels {
            let parsed = parse_level(level, origin)?;
            levels.insert(text.clone(), parsed);
            levels.entry(text.to_lowercase()).or_insert(parsed);
        }
        let default_level = file
            .defaults
            .level
            .as_ref()
            .map(|l| parse_level(l, origin))
            .transpose()?;
        let time = TimeReader::new(file.time_format.as_ref(), file.timezone.as_ref(), origin)?;
        Ok(DeclarativeParser {
            name,
            description: file.description.unwrap_or_default(),
            origin: origin.to_string(),
            regex,
            multiline,
            time,
            levels,
            default_level,
            default_logger: file.defaults.logger,
            default_exception_type: file.defaults.exception_type,
            default_progress_task: file.defaults.progress_task,
            examples: file
                .examples
                .into_iter()
                .map(|e| Example {
                    line: e.referenced.line(),
                    spec: e.value,
                })
                .collect(),
        })
    }

    /// The names of what this parser can extract, for `parsers list`.
    pub fn extracts(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        let rule = self.multiline.as_ref();
        let regexes = self.regex.iter().chain(rule.into_iter().flat_map(|m| {
            std::iter::once(&m.start)
                .chain(m.continue_.iter())
                .chain(m.end.iter())
        }));
        for re in regexes.filter_map(LazyRegex::get) {
            for n in re.capture_names().flatten() {
                let n = base_name(n);
                let n = if RECORD_CAPTURES.contains(&n) {
                    n.to_string()
                } else {
                    format!("fields.{n}")
                };
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
        if self.multiline.is_some() {
            names.push("traceback".into());
        }
        names
    }

    pub fn level_of(&self, captured: &Captured) -> Level {
        let text = captured.level.as_deref().map(str::trim);
        text.and_then(|t| {
            self.levels
                .get(t)
                .or_else(|| self.levels.get(&t.to_lowercase()))
                .copied()
                .or_else(|| Level::from_name(t))
        })
        .or(self.default_level)
        .unwrap_or(Level::Info)
    }

    /// The level of a multi-line record that captured none: an error.
    pub fn stack_level(&self, captured: &Captured) -> Level {
        match captured.level {
            Some(_) => self.level_of(captured),
            None => self.default_level.unwrap_or(Level::Error),
        }
    }

    /// Record fields from what one line (or one record's lines) captured.
    pub fn fields_of(&self, c: Captured, level: Level, fallback_message: &str) -> LineFields {
        let exception_type = c
            .exception_type
            .or_else(|| self.default_exception_type.clone());
        let message = match (c.message, &exception_type, &c.exception_message) {
            (Some(m), _, _) => m,
            (None, Some(t), Some(m)) if !m.is_empty() => format!("{t}: {m}"),
            (None, Some(t), _) => t.clone(),
            (None, None, _) => fallback_message.to_string(),
        };
        LineFields {
            timestamp: c.timestamp.as_deref().and_then(|t| self.time.read(t)),
            level,
            logger: c.logger.or_else(|| self.default_logger.clone()),
            message,
            traceback: None,
            fields: (!c.fields.is_empty()).then(|| serde_json::Value::Object(c.fields).to_string()),
            exception_type,
            exception_message: c.exception_message,
            progress: None,
        }
    }

    /// The progress a line reported through `progress_*` captures.
    pub fn progress_of(&self, c: &Captured) -> Option<ProgressUpdate> {
        let current = number(c.progress_current.as_deref()?)?;
        let task = c
            .progress_task
            .clone()
            .or_else(|| self.default_progress_task.clone())
            .unwrap_or_else(|| self.name.clone());
        Some(ProgressUpdate {
            task,
            current,
            total: c.progress_total.as_deref().and_then(number),
            unit: c.progress_unit.clone(),
            rate: None,
            updated_at: Utc::now(),
        })
    }

    /// What the line regex captured, if it matches.
    pub fn capture_line(&self, line: &str) -> Option<Captured> {
        let (regex, caps) = self.regex.as_ref()?.captures(line)?;
        let mut captured = Captured::default();
        captured.take(regex, &caps);
        Some(captured)
    }
}

impl LineParser for DeclarativeParser {
    fn name(&self) -> &str {
        &self.name
    }

    fn describe(&self) -> &str {
        &self.description
    }

    fn parse(&self, line: &str) -> Option<LineFields> {
        let captured = self.capture_line(line)?;
        let level = self.level_of(&captured);
        let progress = self.progress_of(&captured);
        let mut fields = self.fields_of(captured, level, line);
        if let Some(p) = progress {
            fields.progress = Some(p);
        }
        Some(fields)
    }
}

fn number(text: &str) -> Option<f64> {
    text.trim().parse::<f64>().ok().filter(|n| n.is_finite())
}

fn compile_multiline(
    spec: super::format::MultilineSpec,
    regex: Option<&Spanned<String>>,
    origin: &str,
) -> Result<MultilineRule, ParserFileError> {
    let start = match (&spec.start, regex) {
        (Some(s), _) => LazyRegex::check(s, "multiline.start", origin)?,
        (None, Some(r)) => LazyRegex::check(r, "regex", origin)?,
        (None, None) => {
            return Err(ParserFileError::new(
                origin,
                None,
                "`multiline:` needs a `start:` regex (or a top-level `regex:`)".into(),
            ))
        }
    };
    let continue_ = spec
        .continue_
        .as_ref()
        .map(|r| LazyRegex::check(r, "multiline.continue", origin))
        .transpose()?;
    let end = spec
        .end
        .as_ref()
        .map(|r| LazyRegex::check(r, "multiline.end", origin))
        .transpose()?;
    if continue_.is_none() && end.is_none() {
        return Err(ParserFileError::new(
            origin,
            spec.start.as_ref().map(|s| s.referenced.line()),
            "`multiline:` needs `continue:` or `end:` (or both): nothing says which lines belong"
                .into(),
        ));
    }
    let timeout = match &spec.timeout {
        None => Duration::from_millis(500),
        Some(t) => {
            let text = match &t.value {
                DurationText::Seconds(n) => n.to_string(),
                DurationText::Text(s) => s.clone(),
            };
            crate::config::parse_duration(&text).map_err(|e| {
                ParserFileError::new(
                    origin,
                    Some(t.referenced.line()),
                    format!("multiline.timeout: {e}"),
                )
            })?
        }
    };
    Ok(MultilineRule {
        start,
        continue_,
        end,
        timeout,
        min_lines: spec.min_lines.unwrap_or(2).max(1),
        max_lines: spec.max_lines.unwrap_or(1000).max(1),
    })
}

fn parse_level(level: &Spanned<String>, origin: &str) -> Result<Level, ParserFileError> {
    level
        .value
        .parse()
        .map_err(|e: String| ParserFileError::new(origin, Some(level.referenced.line()), e))
}
