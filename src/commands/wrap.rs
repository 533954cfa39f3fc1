//! `pmon-agent wrap [-e EXP] [--resume|--new-run] [--pty] [--no-echo] [--tag k=v]… -- CMD…`

use super::recording::Recording;
use crate::app::App;
use crate::cli::WrapArgs;
use crate::record::Event;
use crate::run::{self, RunState, StartMode};
use crate::source::wrap::{self, WrapOptions};
use anyhow::Context;
use serde_json::json;

pub fn run(app: &App, args: WrapArgs) -> anyhow::Result<i32> {
    let experiment = args
        .experiment
        .clone()
        .unwrap_or_else(|| run::default_experiment(&args.command));
    let mode = match (args.resume, args.new_run) {
        (true, _) => StartMode::Resume,
        (_, true) => StartMode::NewRun,
        _ => StartMode::Exclusive,
    };
    let recording = Recording::start(app, &experiment, &args.command, &args.tags, mode)?;
    let plain_log = recording.open_plain_log();
    let opts = WrapOptions {
        command: &args.command,
        pty: args.pty,
        echo: !args.no_echo,
        plain_log,
    };
    let tx = recording.pipeline.sender();
    let counters = recording.pipeline.counters();
    let outcome = wrap::run(opts, tx, counters, |pid| {
        recording.set_child_pid(pid);
        recording.event(Event::now(
            "start",
            json!({"pid": pid, "command": args.command, "pty": args.pty, "tags": tags_json(&args.tags), "agent_pid": std::process::id()}),
        ));
    });
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            let message = format!("could not start '{}': {e}", args.command[0]);
            recording.event(Event::now("exit", json!({"error": message})));
            recording.finish(RunState::Failed, Some(127), None)?;
            return Err(anyhow::anyhow!(e)).with_context(|| {
                format!(
                    "could not start '{}'; check that it is installed and on PATH",
                    args.command[0]
                )
            });
        }
    };
    let state = match (outcome.exit_code, outcome.signal, outcome.forwarded) {
        (Some(0), _, _) => RunState::Succeeded,
        (_, Some(_), Some(_)) => RunState::Stopped,
        (_, Some(_), None) => RunState::Crashed,
        _ => RunState::Failed,
    };
    let signal_name = outcome
        .signal
        .and_then(|s| nix::sys::signal::Signal::try_from(s).ok())
        .map(|s| s.as_str());
    recording.event(Event::now(
        "exit",
        json!({"pid": outcome.pid, "exit_code": outcome.exit_code, "signal": outcome.signal, "signal_name": signal_name, "state": state.as_str()}),
    ));
    recording.finish(state, outcome.exit_code, outcome.signal)?;
    Ok(outcome.agent_exit_code())
}

fn tags_json(tags: &[(String, String)]) -> serde_json::Value {
    tags.iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect::<serde_json::Map<_, _>>()
        .into()
}
