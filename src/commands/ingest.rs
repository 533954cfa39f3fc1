//! `pmon-agent ingest [-e EXP]`: standard input as a run of its own.

use crate::app::App;
use crate::cli::IngestArgs;
use crate::recording::Recording;
use pmon_core::record::Event;
use pmon_core::run::{RunState, StartMode};
use serde_json::json;

pub fn run(app: &App, args: IngestArgs) -> anyhow::Result<i32> {
    let mode = if args.new_run {
        StartMode::NewRun
    } else {
        StartMode::Exclusive
    };
    let command = vec!["<stdin>".to_string()];
    let recording = Recording::start(app, &args.experiment, &command, &[], mode)?;
    recording.event(Event::now("start", json!({"source": "stdin"})));
    let plain_log = recording.open_plain_log();
    crate::source::stdin::run(recording.pipeline.sender(), plain_log);
    recording.event(Event::now(
        "exit",
        json!({"source": "stdin", "state": "succeeded"}),
    ));
    recording.finish(RunState::Succeeded, Some(0), None)?;
    Ok(0)
}
