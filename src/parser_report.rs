//! What the parser chain is and what it makes of input: `parsers list`
//! (the chain, in the order parsers are tried), `parsers test FILE` (line by
//! line, which parser claimed it and what it extracted), `parsers check`
//! (every parser file's examples).

use crate::app::App;
use anyhow::Context;
use pmon_core::options::Format;
use pmon_core::parse::declarative::{self, DeclarativeParser, ParserSource};
use pmon_core::parse::{assemble_bytes, Output, ParserChain};
use pmon_core::record::LogRecord;
use pmon_core::text::escape_text;
use serde_json::json;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

const TRACEBACK_ROW: (&str, &str, &str, &str) = (
    "python-traceback",
    "multiline",
    "built in",
    "Python tracebacks in every form (chained, groups, loguru, logging.exception), attached to the log line before them",
);
const PROGRESS_ROW: (&str, &str, &str, &str) = (
    "progress",
    "progress",
    "built in",
    "tqdm bars, Keras, Epoch N/M, [N/M], N%, ##pmon[progress …]",
);

pub fn list(app: &App, format: Format) -> anyhow::Result<i32> {
    let chain = app.parser_chain()?;
    let mut rows = vec![owned(TRACEBACK_ROW), owned(PROGRESS_ROW)];
    for (i, p) in chain.parsers().enumerate() {
        let row = match chain.declarative(i) {
            Some(d) => (
                d.name.clone(),
                if d.multiline.is_some() {
                    "multiline"
                } else {
                    "line"
                }
                .to_string(),
                d.origin.clone(),
                format!("{} [{}]", d.description, d.extracts().join(", ")),
            ),
            None => (
                p.name().to_string(),
                "line".into(),
                "built in".into(),
                p.describe().to_string(),
            ),
        };
        rows.push(row);
    }
    let mut out = std::io::stdout().lock();
    for (name, kind, file, what) in rows {
        match format {
            Format::Json => writeln!(
                out,
                "{}",
                json!({"name": name, "kind": kind, "file": file, "extracts": what})
            )?,
            Format::Text => writeln!(out, "{name:<18} {kind:<10} {file:<28} {what}")?,
        }
    }
    Ok(0)
}

fn owned((a, b, c, d): (&str, &str, &str, &str)) -> (String, String, String, String) {
    (a.into(), b.into(), c.into(), d.into())
}

pub fn test(app: &App, file: &Path, format: Format, summary: bool) -> anyhow::Result<i32> {
    let chain = app.parser_chain()?;
    let bytes =
        std::fs::read(file).with_context(|| format!("could not read {}", file.display()))?;
    let lines = LineIndex::new(&bytes);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut counts: Vec<(String, u64)> = Vec::new();
    let mut result = Ok(());
    assemble_bytes(&chain, &file.display().to_string(), &bytes, |o| {
        if summary {
            count(&mut counts, &chain, &o);
        } else if result.is_ok() {
            result = print_output(&mut out, &chain, &lines, &o, format);
        }
    });
    result?;
    if summary {
        for (parser, n) in counts {
            match format {
                Format::Json => writeln!(out, "{}", json!({"parser": parser, "records": n}))?,
                Format::Text => writeln!(out, "{parser:<18} {n}")?,
            }
        }
    }
    out.flush()?;
    Ok(0)
}

/// Records (and progress updates, metrics) per parser, in order of first use.
fn count(counts: &mut Vec<(String, u64)>, chain: &ParserChain, o: &Output) {
    let name = match o {
        Output::Record(r) => parser_of(chain, r),
        Output::Progress(_) => "progress",
        Output::Metric(_) => "metric",
        Output::ParseError { .. } => "directive",
    };
    match counts.iter_mut().find(|(n, _)| n == name) {
        Some((_, c)) => *c += 1,
        None => counts.push((name.to_string(), 1)),
    }
}

/// Byte offset → 1-based line number.
struct LineIndex(Vec<u64>);

impl LineIndex {
    fn new(bytes: &[u8]) -> LineIndex {
        let mut starts = vec![0u64];
        starts.extend(
            bytes
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .map(|(i, _)| i as u64 + 1),
        );
        LineIndex(starts)
    }

    fn line_of(&self, offset: u64) -> usize {
        self.0.partition_point(|&s| s <= offset)
    }
}

fn parser_of<'a>(chain: &'a ParserChain, r: &LogRecord) -> &'a str {
    match (r.parsed_by, &r.traceback) {
        (Some(i), _) => chain.name(i),
        (None, Some(_)) => "python-traceback",
        (None, None) => "none",
    }
}

fn print_output(
    out: &mut impl Write,
    chain: &ParserChain,
    lines: &LineIndex,
    o: &Output,
    format: Format,
) -> std::io::Result<()> {
    match (o, format) {
        (Output::Progress(p), Format::Json) => {
            writeln!(out, "{}", json!({"parser": "progress", "progress": p}))
        }
        (Output::Progress(p), Format::Text) => writeln!(
            out,
            "{:<9} {:<18} {} {}/{}",
            "",
            "progress",
            escape_text(&p.task),
            p.current,
            p.total.map_or("?".into(), |t| t.to_string())
        ),
        (Output::Metric(m), Format::Json) => {
            writeln!(out, "{}", json!({"parser": "metric", "metric": m}))
        }
        (Output::Metric(m), Format::Text) => writeln!(
            out,
            "{:<9} {:<18} {}/{} = {}",
            "",
            "metric",
            m.metric_type.as_str(),
            escape_text(&m.name),
            m.value,
        ),
        (Output::ParseError { reason, .. }, Format::Json) => writeln!(
            out,
            "{}",
            json!({"parser": "directive", "parse_error": reason})
        ),
        (Output::ParseError { reason, .. }, Format::Text) => writeln!(
            out,
            "{:<9} {:<18} not a valid ##pmon directive: {reason}",
            "", "directive"
        ),
        (Output::Record(r), _) => print_record(out, chain, lines, r, format),
    }
}

fn print_record(
    out: &mut impl Write,
    chain: &ParserChain,
    lines: &LineIndex,
    r: &LogRecord,
    format: Format,
) -> std::io::Result<()> {
    let parser = parser_of(chain, r);
    let first = r.offset.map(|o| lines.line_of(o));
    let count = r.traceback.as_ref().map_or(1, |t| t.lines().count());
    let fields: Option<serde_json::Value> = r
        .fields
        .as_deref()
        .and_then(|f| serde_json::from_str(f).ok());
    if format == Format::Json {
        let why = (parser == "none").then_some(NO_MATCH);
        return writeln!(
            out,
            "{}",
            json!({
                "line": first, "parser": parser, "why": why, "level": r.level, "logger": r.logger,
                "message": r.message, "fields": fields, "traceback": r.traceback,
                "exception_type": r.exception_type, "exception_message": r.exception_message,
            })
        );
    }
    // A stack trace's text starts at the record's line; a traceback
    // attached to a log line follows it.
    let own_text = match r.parsed_by {
        None => true,
        Some(i) => chain.declarative(i).is_some_and(|d| d.multiline.is_some()),
    };
    let at = match (first, &r.traceback) {
        (Some(l), Some(_)) if own_text => format!("{l}-{}", l + count - 1),
        (Some(l), Some(_)) => format!("{l}-{}", l + count),
        (Some(l), None) => l.to_string(),
        (None, _) => "-".into(),
    };
    let logger = r.logger.as_deref().map(escape_text).unwrap_or("-".into());
    writeln!(
        out,
        "{at:<9} {parser:<18} {:<8} {logger}: {}",
        r.level.as_str(),
        escape_text(&r.message)
    )?;
    if parser == "none" {
        writeln!(out, "{:<9} {:<18} ({NO_MATCH})", "", "")?;
    }
    let mut extra = Vec::new();
    if let Some(t) = &r.exception_type {
        extra.push(format!("exception_type={}", escape_text(t)));
    }
    if let Some(m) = &r.exception_message {
        extra.push(format!("exception_message={}", escape_text(m)));
    }
    if let Some(f) = &fields {
        extra.push(format!("fields={f}"));
    }
    if !extra.is_empty() {
        writeln!(out, "{:<9} {:<18} {}", "", "", extra.join("  "))?;
    }
    if let Some(tb) = &r.traceback {
        for l in tb.lines() {
            writeln!(out, "{:<9} {:<18} | {}", "", "", escape_text(l))?;
        }
    }
    Ok(())
}

const NO_MATCH: &str =
    "no parser claims this line: not JSON, Python logging or logfmt, no parser file's regex matches; stored as an INFO line";

pub fn check(app: &App, dir: Option<&Path>) -> anyhow::Result<i32> {
    let sources: Vec<ParserSource> = match dir {
        Some(dir) => {
            if !dir.is_dir() {
                anyhow::bail!(
                    "{} is not a directory: give the directory that holds the *.yml parser files",
                    dir.display()
                );
            }
            declarative::dir_sources(dir)?
        }
        None => {
            let mut all = Vec::new();
            for d in app.parser_dirs() {
                all.extend(declarative::dir_sources(&d)?);
            }
            // The repository's own parsers/ as a user directory: each once.
            for shipped in declarative::shipped_sources() {
                if !all.iter().any(|s: &ParserSource| s.text == shipped.text) {
                    all.push(shipped);
                }
            }
            all
        }
    };
    let mut out = std::io::stdout().lock();
    let (mut failed, mut examples) = (0usize, 0usize);
    for source in &sources {
        let parser = match declarative::compile_source(source) {
            Ok(p) => Arc::new(p),
            Err(e) => {
                failed += 1;
                writeln!(out, "FAIL {e}")?;
                continue;
            }
        };
        examples += parser.examples.len();
        failed += report(&mut out, &parser)?;
    }
    writeln!(
        out,
        "{} parser files, {examples} examples: {}",
        sources.len(),
        if failed == 0 {
            "all pass".to_string()
        } else {
            format!("{failed} failures")
        }
    )?;
    Ok(if failed == 0 { 0 } else { 1 })
}

fn report(out: &mut impl Write, parser: &Arc<DeclarativeParser>) -> std::io::Result<usize> {
    let failures = pmon_core::parse::run_examples(parser);
    if failures.is_empty() {
        let note = if parser.examples.is_empty() {
            " (no examples: add some under `examples:`)"
        } else {
            ""
        };
        writeln!(
            out,
            "ok   {} ({}, {} examples){note}",
            parser.origin,
            parser.name,
            parser.examples.len()
        )?;
        return Ok(0);
    }
    for f in &failures {
        writeln!(
            out,
            "FAIL {}:{}: {} example {}",
            parser.origin,
            f.line,
            parser.name,
            f.index + 1
        )?;
        write!(out, "{}", f.render())?;
    }
    Ok(failures.len())
}
