//! `pmon-agent parsers list|test FILE`: see what the parser chain makes of a file.

use crate::cli::{Format, ParsersCommand};
use crate::framing::LineFramer;
use crate::parse::{AssemblerTiming, Output, ParserChain, ProgressParser, RecordAssembler};
use crate::record::{format_ts, StreamKind};
use anyhow::Context;
use serde_json::json;
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

pub fn run(cmd: ParsersCommand) -> anyhow::Result<i32> {
    let chain = Arc::new(ParserChain::builtin());
    let mut out = std::io::stdout().lock();
    match cmd {
        ParsersCommand::List => {
            writeln!(out, "{:<16} traceback  Python tracebacks (all forms), attached to the log line before them", "python-traceback")?;
            writeln!(
                out,
                "{:<16} progress   tqdm, Keras, Epoch N/M, [N/M], N%, ##pmon[progress …]",
                "progress"
            )?;
            for p in chain.parsers() {
                writeln!(out, "{:<16} line       {}", p.name(), p.describe())?;
            }
        }
        ParsersCommand::Test { file, format } => {
            let bytes = std::fs::read(&file)
                .with_context(|| format!("could not read {}", file.display()))?;
            let source = file.display().to_string();
            let mut assembler = RecordAssembler::new(
                chain.clone(),
                Arc::new(ProgressParser::new()),
                AssemblerTiming::default(),
                StreamKind::File,
                &source,
            );
            let mut framer = LineFramer::new(1 << 20);
            let mut frames = Vec::new();
            framer.push(&bytes, &mut frames);
            framer.finish(&mut frames);
            let mut outputs = Vec::new();
            for f in frames {
                assembler.frame(f, Instant::now(), &mut outputs);
            }
            assembler.finish(&mut outputs);
            for o in outputs {
                print_output(&mut out, &chain, &o, format.format)?;
            }
        }
    }
    Ok(0)
}

fn print_output(
    out: &mut impl Write,
    chain: &ParserChain,
    o: &Output,
    format: Format,
) -> std::io::Result<()> {
    match (o, format) {
        (Output::Progress(p), Format::Json) => {
            writeln!(out, "{}", json!({"parser": "progress", "progress": p}))
        }
        (Output::Progress(p), Format::Text) => writeln!(
            out,
            "progress  {} {}/{}",
            p.task,
            p.current,
            p.total.map_or("?".into(), |t| t.to_string())
        ),
        (Output::Metric(m), Format::Json) => {
            writeln!(out, "{}", json!({"parser": "metric", "metric": m}))
        }
        (Output::Metric(m), Format::Text) => writeln!(
            out,
            "metric    {}/{} = {}{}",
            m.metric_type.as_str(),
            m.name.escape_debug(),
            m.value,
            m.step.map_or(String::new(), |s| format!(" (step {s})"))
        ),
        (Output::ParseError { reason, .. }, Format::Json) => {
            writeln!(
                out,
                "{}",
                json!({"parser": "directive", "parse_error": reason})
            )
        }
        (Output::ParseError { reason, .. }, Format::Text) => {
            writeln!(out, "error     not a valid ##pmon directive: {reason}")
        }
        (Output::Record(r), _) => {
            let parser = match (r.parsed_by, &r.traceback) {
                (Some(i), _) => chain.parsers()[i].name(),
                (None, Some(_)) => "python-traceback",
                (None, None) => "none",
            };
            match format {
                Format::Json => writeln!(
                    out,
                    "{}",
                    json!({
                        "parser": parser, "timestamp": format_ts(&r.timestamp), "level": r.level, "logger": r.logger,
                        "message": r.message, "traceback": r.traceback, "exception_type": r.exception_type,
                        "exception_message": r.exception_message,
                    })
                ),
                Format::Text => {
                    let tb = r
                        .exception_type
                        .as_ref()
                        .map(|t| format!(" [traceback: {t}]"))
                        .unwrap_or_default();
                    writeln!(
                        out,
                        "{:<8} {:<8} {}: {}{}",
                        r.level,
                        r.logger.as_deref().unwrap_or("-"),
                        parser,
                        r.message.escape_debug(),
                        tb
                    )
                }
            }
        }
    }
}
