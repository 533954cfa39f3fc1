//! The end of a run as the shipper records it: the `exit` event with the
//! out-of-memory verdict, what the holder is told, and the notifications.

use crate::app::App;
use crate::holder::capture::ProgramEnd;
use crate::holder::{end_state, ShipResult};
use crate::notify::{self, NewGroupWatch, RunFacts};
use crate::pipeline::PipelineCounters;
use crate::recording::Recording;
use chrono::Utc;
use pmon_core::config::NotifyConfig;
use pmon_core::procinfo::oom::{MemoryWatch, OomVerdict};
use pmon_core::record::Event;
use pmon_core::run::RunState;
use serde_json::json;

/// The `exit` event, with the OOM verdict; returns what the holder is told.
pub(super) fn record_the_end(
    recording: &Recording,
    end: &ProgramEnd,
    memory: &MemoryWatch,
) -> ShipResult {
    let oom = memory.verdict(end.signal);
    let last_rss_bytes = memory.last_rss();
    let details = match &end.error {
        Some(error) => json!({"error": error}),
        None => {
            let state = end_state(end.exit_code, end.signal, end.forwarded);
            let signal_name = end.signal.map(pmon_core::text::signal_name);
            json!({"pid": end.pid, "exit_code": end.exit_code, "signal": end.signal, "signal_name": signal_name, "state": state.as_str(),
                "last_rss_bytes": last_rss_bytes, "likely_out_of_memory": oom.as_ref().map(OomVerdict::describe)})
        }
    };
    recording.event(Event::now("exit", details));
    ShipResult {
        last_error: None,
        last_rss_bytes,
        oom: oom.as_ref().map(OomVerdict::describe),
    }
}

/// How the run ended, for its notification.
pub(super) struct Ended<'a> {
    pub state: RunState,
    pub end: &'a ProgramEnd,
    pub result: &'a ShipResult,
}

/// The end's notification names the error the run died of; if that error
/// is new to the experiment it says so, rather than a second notification.
pub(super) fn notify(
    app: &App,
    config: &NotifyConfig,
    facts: &RunFacts,
    new_groups: &mut NewGroupWatch,
    counters: &PipelineCounters,
    ended: Ended<'_>,
) {
    let last_error = counters
        .last_error_record
        .lock()
        .ok()
        .and_then(|r| r.clone());
    let ended_by = matches!(ended.state, RunState::Failed | RunState::Crashed)
        .then(|| {
            last_error
                .as_ref()
                .and_then(pmon_core::parse::fingerprint::error_group)
        })
        .flatten();
    let new_error = new_groups.finish(app, counters, ended_by.as_deref());
    let run_end = notify::RunEnd {
        new_error,
        state: ended.state,
        exit_code: ended.end.exit_code,
        signal: ended.end.signal,
        oom: ended.result.oom.as_deref(),
        last_error: last_error.as_ref(),
    };
    if let Some(n) = notify::run_end(facts, &run_end, |on| config.wants(on), Utc::now()) {
        notify::send_detached(app, config, n);
    }
}
