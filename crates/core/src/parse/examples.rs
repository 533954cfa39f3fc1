//! Running a parser's `examples:` through the real assembler, and saying
//! readably what differs.

use super::assemble::{assemble_bytes, Output};
use super::chain::ParserChain;
use super::declarative::{DeclarativeParser, Expected};
use crate::record::{format_ts, LogRecord, ProgressUpdate};
use std::collections::BTreeMap;
use std::sync::Arc;

/// One example that did not come out as its file says.
#[derive(Debug, Clone)]
pub struct ExampleFailure {
    /// 0-based position in `examples:`.
    pub index: usize,
    /// The file line the example starts on.
    pub line: u64,
    pub input: String,
    /// What went wrong as a whole (not matched, several records…).
    pub problem: Option<String>,
    /// Field, expected, got.
    pub diffs: Vec<(String, String, String)>,
}

impl ExampleFailure {
    /// One line, for an error at start.
    pub fn short(&self) -> String {
        if let Some(p) = &self.problem {
            return p.clone();
        }
        let parts: Vec<String> = self
            .diffs
            .iter()
            .map(|(f, e, g)| format!("{f}: expected {e}, got {g}"))
            .collect();
        parts.join("; ")
    }

    /// The diff `parsers check` prints.
    pub fn render(&self) -> String {
        let mut out = String::from("  input:\n");
        for l in self.input.lines() {
            out.push_str(&format!("    | {}\n", l.escape_debug()));
        }
        if let Some(p) = &self.problem {
            out.push_str(&format!("  {p}\n"));
        }
        for (field, expected, got) in &self.diffs {
            out.push_str(&format!(
                "  {field}:\n    - expected {expected}\n    + got      {got}\n"
            ));
        }
        out
    }
}

/// Every failing example of `parser`.
pub fn run_examples(parser: &Arc<DeclarativeParser>) -> Vec<ExampleFailure> {
    let chain = Arc::new(ParserChain::new(vec![parser.clone()]));
    let mut failures = Vec::new();
    for (index, example) in parser.examples.iter().enumerate() {
        let outputs = assemble(&chain, &example.spec.input);
        let mine: Vec<&LogRecord> = outputs
            .iter()
            .filter_map(|o| match o {
                Output::Record(r) if r.parsed_by == Some(0) => Some(r),
                _ => None,
            })
            .collect();
        let updates: Vec<&ProgressUpdate> = outputs
            .iter()
            .filter_map(|o| match o {
                Output::Progress(p) => Some(p),
                _ => None,
            })
            .collect();
        let mut failure = ExampleFailure {
            index,
            line: example.line,
            input: example.spec.input.clone(),
            problem: None,
            diffs: Vec::new(),
        };
        match (example.spec.matches, mine.as_slice()) {
            (false, []) => continue,
            (false, _) => {
                failure.problem = Some("expected no match, but the parser claimed it".into())
            }
            (true, []) => {
                failure.problem = Some(format!(
                    "not matched: {}",
                    why_not(parser, &example.spec.input)
                ))
            }
            (true, [record]) => {
                failure.diffs = compare(&example.spec.expect, record, updates.first().copied())
            }
            (true, many) => {
                failure.problem = Some(format!(
                    "the input became {} records, not one (a multiline rule that ends too early?)",
                    many.len()
                ))
            }
        }
        if failure.problem.is_some() || !failure.diffs.is_empty() {
            failures.push(failure);
        }
    }
    failures
}

pub(crate) fn assemble(chain: &Arc<ParserChain>, input: &str) -> Vec<Output> {
    let mut out = Vec::new();
    assemble_bytes(chain, "example", input.as_bytes(), |o| out.push(o));
    out
}

/// Why the parser did not claim the input's first line.
pub fn why_not(parser: &DeclarativeParser, input: &str) -> String {
    let first = input.lines().next().unwrap_or("");
    match (&parser.regex, &parser.multiline) {
        (Some(re), _) if re.is_match(first) => "the line regex matches, but another record took the line".into(),
        (_, Some(m)) if m.start.is_match(first) => {
            "the start regex matches the first line, but no following line matched `continue`/`end` (min_lines)".into()
        }
        (Some(re), _) => format!("the regex {:?} does not match {:?}", re.as_str(), first),
        (None, Some(m)) => format!("the start regex {:?} does not match {:?}", m.start.as_str(), first),
        (None, None) => "the parser has no regex".into(),
    }
}

fn compare(
    expect: &Expected,
    r: &LogRecord,
    progress: Option<&ProgressUpdate>,
) -> Vec<(String, String, String)> {
    let mut diffs = Vec::new();
    let mut check = |field: &str, expected: &Option<String>, got: Option<String>| {
        if let Some(e) = expected {
            if got.as_deref() != Some(e.as_str()) {
                diffs.push((field.to_string(), format!("{e:?}"), shown(got)));
            }
        }
    };
    check("level", &expect.level, Some(r.level.to_string()));
    check("logger", &expect.logger, r.logger.clone());
    check("message", &expect.message, Some(r.message.clone()));
    check(
        "timestamp",
        &expect.timestamp,
        Some(format_ts(&r.timestamp)),
    );
    check("traceback", &expect.traceback, r.traceback.clone());
    check(
        "exception_type",
        &expect.exception_type,
        r.exception_type.clone(),
    );
    check(
        "exception_message",
        &expect.exception_message,
        r.exception_message.clone(),
    );
    check(
        "progress_task",
        &expect.progress_task,
        progress.map(|p| p.task.clone()),
    );
    let num = |v: Option<f64>| v.map(|n| n.to_string());
    check(
        "progress_current",
        &expect.progress_current.map(|n| n.to_string()),
        num(progress.map(|p| p.current)),
    );
    check(
        "progress_total",
        &expect.progress_total.map(|n| n.to_string()),
        num(progress.and_then(|p| p.total)),
    );
    if let Some(fields) = &expect.fields {
        let got: BTreeMap<String, String> = r
            .fields
            .as_deref()
            .and_then(|f| serde_json::from_str(f).ok())
            .unwrap_or_default();
        if &got != fields {
            diffs.push(("fields".into(), format!("{fields:?}"), format!("{got:?}")));
        }
    }
    diffs
}

fn shown(v: Option<String>) -> String {
    v.map_or("nothing".into(), |s| format!("{s:?}"))
}
