//! `pmon-agent`: wraps or tails long-running pipelines, keeps whole Python
//! tracebacks, stores records in PostgreSQL or an embedded SQLite store, and
//! answers queries.
//!
//! Two executables are built from this library: `pmon-agent` (every
//! command, [`main`]) and `pmon-agent-holder` ([`holder_main`]), the small
//! process that holds a wrapped program's output and nothing else — a
//! separate executable so that it carries only its own code (see
//! `holder/own_process.rs`).

mod admin;
mod app;
mod cli;
mod commands;
mod daemon;
mod diagnostics;
mod holder;
mod metrics;
mod notify;
mod parser_report;
mod pipeline;
mod query;
mod recording;
mod shipper;
mod source;

use clap::Parser;
use std::process::ExitCode;

/// `pmon-agent`: parses the command line, dispatches, and turns errors into
/// one readable message and an exit code.
pub fn main() -> ExitCode {
    // A holder (`wrap`'s own process, or a daemon run's) touches nothing
    // else: no command line parsing, no configuration.
    diagnostics::init(0);
    let result = match holder::run_if_held() {
        Some(held) => held,
        None => {
            holder::hand_wrap_to_holder();
            let cli = cli::Cli::parse();
            diagnostics::init(cli.global.verbose);
            commands::dispatch(cli)
        }
    };
    finish(result)
}

/// `pmon-agent-holder`: a run's holder — `pmon-agent wrap …` hands itself
/// over to it, a daemon's supervisor starts it with the run's plan.
pub fn holder_main() -> ExitCode {
    diagnostics::init(0);
    if let Some(result) = holder::run_if_held() {
        return finish(result);
    }
    match cli::WrapCli::try_parse() {
        Ok(cli::WrapCli {
            global,
            command: cli::WrapOnly::Wrap(args),
        }) => {
            diagnostics::init(global.verbose);
            // Before any thread exists, so every thread inherits the mask.
            source::wrap::block_signals();
            finish(commands::wrap::hold_here(&global, args))
        }
        Err(_) => {
            let e = holder::back_to_agent();
            eprintln!("pmon-agent-holder: this program holds the output of `pmon-agent wrap`, and could not start pmon-agent beside it to read this command line ({e}); run pmon-agent wrap -- COMMAND");
            ExitCode::from(2)
        }
    }
}

/// A command whose reader went away (`pmon-agent query logs X | head -1`)
/// stops at once and quietly with exit status 0, as ripgrep does: what was
/// read was what was wanted. (`git log` dies of SIGPIPE instead, 141 in a
/// shell, which `set -o pipefail` scripts then take for a failure.)
fn finish(result: anyhow::Result<i32>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(err) => {
            if query::output::is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            eprintln!("pmon-agent: error: {}", chain(&err));
            ExitCode::from(1)
        }
    }
}

/// The whole cause chain on one line, outermost first.
fn chain(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}
