//! `pmon-agent tail [-e EXP] [--from-start|--from-end] [--glob PAT] [--once] PATH…`

use crate::app::App;
use crate::cli::TailArgs;
use crate::recording::Recording;
use crate::source::tail::{self, Glob, TailOptions, Tailer};
use anyhow::Context;
use nix::sys::signal::{SigSet, Signal};
use pmon_core::record::Event;
use pmon_core::run::{RunState, StartMode};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub fn run(app: &App, args: TailArgs) -> anyhow::Result<i32> {
    for path in &args.paths {
        if !path.exists()
            && path
                .parent()
                .is_some_and(|p| !p.as_os_str().is_empty() && !p.exists())
        {
            anyhow::bail!(
                "cannot tail {}: neither it nor its directory exists; check the path",
                path.display()
            );
        }
    }
    let experiment = args.experiment.clone().unwrap_or_else(|| {
        args.paths[0]
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "tail".into())
    });
    let command: Vec<String> = std::iter::once("tail".to_string())
        .chain(args.paths.iter().map(|p| p.display().to_string()))
        .collect();
    settle_tentative_positions(app, &experiment)?;
    // The run continues across restarts: re-read records keep their keys.
    let recording = Recording::start(app, &experiment, &command, &[], StartMode::Continue)?;
    let checkpoints = recording
        .registry()
        .map(|store| tail::load_checkpoints(store.conn(), &experiment))
        .transpose()
        .context("could not read the tail checkpoints from the store")?
        .unwrap_or_default();
    recording.event(Event::now(
        "start",
        json!({"source": "tail", "paths": command[1..]}),
    ));
    let opts = TailOptions {
        paths: args.paths.clone(),
        glob: Glob::new(args.glob.as_deref()),
        from_end: args.from_end,
        once: args.once,
    };
    let stop = Arc::new(AtomicBool::new(false));
    watch_signals(stop.clone());
    Tailer::new(&opts, checkpoints, recording.pipeline.sender()).run(&stop);
    recording.event(Event::now(
        "exit",
        json!({"source": "tail", "state": "stopped"}),
    ));
    let state = if args.once {
        RunState::Succeeded
    } else {
        RunState::Stopped
    };
    recording.finish(state, Some(0), None)?;
    Ok(0)
}

/// Read positions the last tail of `experiment` stored just before a
/// PostgreSQL commit it may not have seen (see `sink::spool::positions`),
/// settled before the positions are read and before anything is written.
fn settle_tentative_positions(app: &App, experiment: &str) -> anyhow::Result<()> {
    let Some(mut sink) = app.open_spooling_sink()? else {
        return Ok(());
    };
    let (kept, dropped) = sink
        .settle_positions(experiment)
        .context("could not settle the read positions left by the last tail")?;
    if kept + dropped > 0 {
        tracing::info!(target: "tail", kept, dropped, "read positions left tentative by the last tail settled");
    }
    Ok(())
}

/// SIGINT/SIGTERM/SIGHUP stop following; what was read is flushed first.
fn watch_signals(stop: Arc<AtomicBool>) {
    let _ = std::thread::Builder::new()
        .name("pmon-signals".into())
        .spawn(move || {
            let mut set = SigSet::empty();
            for s in [
                Signal::SIGINT,
                Signal::SIGTERM,
                Signal::SIGHUP,
                Signal::SIGQUIT,
            ] {
                set.add(s);
            }
            let mut seen = 0;
            while let Ok(_sig) = set.wait() {
                seen += 1;
                stop.store(true, Ordering::SeqCst);
                crate::source::tail::wake();
                if seen >= 3 {
                    std::process::exit(130);
                }
            }
        });
}
