//! `pmon-agent wrap [-e EXP] [--resume|--new-run] [--pty] [--no-echo] [--tag k=v]… -- CMD…`

use super::recording::Recording;
use crate::app::App;
use crate::cli::WrapArgs;
use crate::metrics::MetricsSampler;
use crate::pipeline::PipelineCounters;
use crate::procinfo::oom::{MemoryWatch, OomVerdict};
use crate::record::Event;
use crate::run::{self, RunState, StartMode};
use crate::source::wrap::{self, ChildOutcome, WrapOptions};
use anyhow::Context;
use serde_json::json;
use std::sync::Arc;

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
    let child = ChildSpec {
        experiment: &experiment,
        command: &args.command,
        tags: &args.tags,
        mode,
        pty: args.pty,
        echo: !args.no_echo,
    };
    let ran = run_child(app, &child, |_, _, _| {})?;
    if let Some(oom) = &ran.oom {
        eprintln!("pmon-agent: the program was {}", oom.describe());
    }
    Ok(ran.outcome.agent_exit_code())
}

/// One run of a command under the agent: what `wrap` does once and a daemon
/// supervisor does again after each restart.
pub struct ChildSpec<'a> {
    pub experiment: &'a str,
    pub command: &'a [String],
    pub tags: &'a [(String, String)],
    pub mode: StartMode,
    pub pty: bool,
    pub echo: bool,
}

/// How a run ended.
pub struct Ran {
    pub outcome: ChildOutcome,
    pub state: RunState,
    pub run_id: Option<String>,
    /// The last error the program printed (`ValueError: bad shard`).
    pub last_error: Option<String>,
    /// The program's resident memory at the last sample.
    pub last_rss_bytes: Option<u64>,
    /// Set when a SIGKILL was likely the out-of-memory killer.
    pub oom: Option<OomVerdict>,
}

/// Runs the command once; `on_spawn` is told its pid, the run id and the
/// pipeline's live counters.
pub fn run_child(
    app: &App,
    spec: &ChildSpec<'_>,
    on_spawn: impl FnOnce(u32, Option<&str>, &Arc<PipelineCounters>),
) -> anyhow::Result<Ran> {
    let recording = Recording::start(app, spec.experiment, spec.command, spec.tags, spec.mode)?;
    let run_id = recording.run.as_ref().map(|r| r.run_id.clone());
    let opts = WrapOptions {
        command: spec.command,
        pty: spec.pty,
        echo: spec.echo,
        plain_log: recording.open_plain_log(),
    };
    let tx = recording.pipeline.sender();
    let counters = recording.pipeline.counters();
    let errors = counters.clone();
    let live = counters.clone();
    let memory = MemoryWatch::start();
    let interval = Some(app.config.monitoring.metrics_interval).filter(|i| !i.is_zero());
    let sampler = MetricsSampler::start(interval, app.data_dir.root().to_path_buf(), tx.clone());
    let on_exit = || sampler.exited();
    let outcome = wrap::run(
        opts,
        tx,
        counters,
        |pid| {
            memory.watch(pid);
            sampler.watch(pid);
            recording.set_child_pid(pid);
            recording.event(Event::now(
            "start",
            json!({"pid": pid, "command": spec.command, "pty": spec.pty, "tags": tags_json(spec.tags), "agent_pid": std::process::id()}),
        ));
            on_spawn(pid, run_id.as_deref(), &live);
        },
        on_exit,
    );
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            let message = format!("could not start '{}': {e}", spec.command[0]);
            recording.event(Event::now("exit", json!({"error": message})));
            recording.finish(RunState::Failed, Some(127), None)?;
            return Err(anyhow::anyhow!(e)).with_context(|| {
                format!(
                    "could not start '{}'; check that it is installed and on PATH",
                    spec.command[0]
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
    let oom = memory.verdict(outcome.signal);
    let last_rss_bytes = memory.last_rss();
    recording.event(Event::now(
        "exit",
        json!({"pid": outcome.pid, "exit_code": outcome.exit_code, "signal": outcome.signal, "signal_name": signal_name, "state": state.as_str(),
            "last_rss_bytes": last_rss_bytes, "likely_out_of_memory": oom.as_ref().map(OomVerdict::describe)}),
    ));
    recording.finish(state, outcome.exit_code, outcome.signal)?;
    let last_error = errors.last_error.lock().ok().and_then(|e| e.clone());
    Ok(Ran {
        outcome,
        state,
        run_id,
        last_error,
        last_rss_bytes,
        oom,
    })
}

fn tags_json(tags: &[(String, String)]) -> serde_json::Value {
    tags.iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect::<serde_json::Map<_, _>>()
        .into()
}
