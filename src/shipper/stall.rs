//! What the shipper records when the program stalls and goes on: a
//! `stall` event with its Python stacks (py-spy), a `resume` event, and the
//! live status's "stalled since".

use crate::metrics::stall::StallChange;
use crate::pipeline::PipelineCounters;
use crate::recording::Recording;
use chrono::Utc;
use pmon_core::procinfo::pyspy::{self, PySpyError};
use pmon_core::record::{format_ts, Event};
use serde_json::json;

/// A `stall` event (with the program's Python stacks, when py-spy can read
/// them) or a `resume` event; the live status says since when it is stuck.
pub(super) fn note_stall(
    recording: &Recording,
    counters: &PipelineCounters,
    pid: u32,
    change: StallChange,
) {
    match change {
        StallChange::Stalled { quiet, cpu_percent } => {
            let since = Utc::now() - chrono::Duration::from_std(quiet).unwrap_or_default();
            let (stack, stack_error) = match python_stacks(pid) {
                Ok(stack) => (Some(stack), None),
                Err(e) => (None, Some(e.to_string())),
            };
            tracing::info!(target: "holder", quiet = ?quiet, cpu_percent, "the program is stalled");
            recording.event(Event::now(
                "stall",
                json!({"since": format_ts(&since), "quiet_s": quiet.as_secs_f64(), "cpu_percent": cpu_percent,
                       "pid": pid, "stack": stack, "stack_error": stack_error}),
            ));
            if let Ok(mut stalled) = counters.stalled_since.lock() {
                *stalled = Some(format_ts(&since));
            }
        }
        StallChange::Resumed { stalled_for } => {
            tracing::info!(target: "holder", stalled_for = ?stalled_for, "the program goes on");
            recording.event(Event::now(
                "resume",
                json!({"stalled_s": stalled_for.as_secs_f64()}),
            ));
            if let Ok(mut stalled) = counters.stalled_since.lock() {
                *stalled = None;
            }
        }
    }
}

/// `py-spy dump` of every Python process of the program, one after another.
fn python_stacks(pid: u32) -> Result<String, PySpyError> {
    let pids = pyspy::python_processes(pid);
    let pids = if pids.is_empty() { vec![pid] } else { pids };
    let mut all = Vec::new();
    for pid in pids {
        all.push(pyspy::dump(pid, false)?);
    }
    Ok(all.join("\n"))
}
