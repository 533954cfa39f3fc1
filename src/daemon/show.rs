//! How `daemon status` and `daemon list` show a daemon: its state as a
//! phrase ("failed 10s ago (exit 1): ValueError: bad shard"), its pid,
//! restarts, last sample and progress, or the JSON object.

use super::live::LiveStatus;
use super::{DaemonDir, DaemonState};
use crate::pipeline::Resources;
use chrono::Utc;
use pmon_core::options::Format;
use pmon_core::record::parse_ts;
use pmon_core::run::RunState;
use pmon_core::text::{escape_text, signal_name};
use serde_json::json;
use std::io::Write;

/// `daemon status`/`daemon list`: one line (or, `detailed`, a block) per
/// daemon, or one JSON object a line.
pub fn write_states(
    out: &mut dyn Write,
    dir: &DaemonDir,
    states: &[DaemonState],
    format: Format,
    detailed: bool,
) -> std::io::Result<()> {
    for s in states {
        let live = dir
            .read_live(&s.name, s.run_id.as_deref())
            .unwrap_or_default();
        match format {
            Format::Json => writeln!(
                out,
                "{}",
                json!({
                    "name": s.name, "experiment_id": s.experiment_id, "state": s.state, "pid": s.pid,
                    "supervisor_pid": s.supervisor_pid, "started_at": s.started_at, "restarts": s.restarts,
                    "exit_code": s.exit_code, "signal": s.signal, "last_error": s.last_error,
                    "run_id": s.run_id, "ended_at": s.ended_at, "command": s.command, "last_rss_bytes": s.last_rss_bytes,
                    "rss_bytes": live.rss_bytes, "cpu_percent": live.cpu_percent, "progress": live.progress,
                    "stalled_since": live.stalled_since.as_ref().filter(|_| s.state.is_live()),
                })
            )?,
            Format::Text if detailed => {
                writeln!(out, "daemon: {} (experiment {})", s.name, s.experiment_id)?;
                writeln!(out, "state: {}", state_with_stall(s, &live))?;
                writeln!(
                    out,
                    "pid: {}  supervisor: {}  restarts: {}",
                    s.pid.map_or("-".into(), |p| p.to_string()),
                    s.supervisor_pid,
                    s.restarts
                )?;
                writeln!(out, "command: {}", s.command.join(" "))?;
                let resources = Resources {
                    rss_bytes: live.rss_bytes,
                    cpu_percent: live.cpu_percent,
                };
                if let Some(text) = resources.describe() {
                    writeln!(out, "last sample: {text}")?;
                }
                for task in &live.progress {
                    writeln!(out, "progress: {}", escape_text(&task.summary()))?;
                }
            }
            Format::Text => writeln!(
                out,
                "{:<20} {:<12} {}",
                s.name,
                s.experiment_id,
                state_with_stall(s, &live)
            )?,
        }
    }
    Ok(())
}

/// The state phrase, and `(stalled 34m)` while the program is stuck.
fn state_with_stall(s: &DaemonState, live: &LiveStatus) -> String {
    let stalled = s
        .state
        .is_live()
        .then(|| crate::query::stalled_words(live.stalled_since.as_deref(), Utc::now()))
        .flatten();
    match stalled {
        Some(stalled) => format!("{} ({stalled})", state_phrase(s)),
        None => state_phrase(s),
    }
}

/// "running for 5m (pid 123)", "crashed 3m ago: SIGKILL",
/// "failed 10s ago (exit 1): ValueError: bad shard".
fn state_phrase(s: &DaemonState) -> String {
    let ago = |at: &Option<String>| {
        at.as_deref()
            .and_then(parse_ts)
            .map(|t| {
                pmon_core::text::humanize_duration((Utc::now() - t).to_std().unwrap_or_default())
            })
            .unwrap_or_else(|| "?".into())
    };
    match s.state {
        RunState::Running => format!(
            "running for {} (pid {})",
            pmon_core::text::humanize_duration(
                parse_ts(&s.started_at)
                    .map(|t| (Utc::now() - t).to_std().unwrap_or_default())
                    .unwrap_or_default()
            ),
            s.pid.map_or("?".into(), |p| p.to_string())
        ),
        RunState::Paused => format!("paused (pid {})", s.pid.map_or("?".into(), |p| p.to_string())),
        RunState::Lost => "lost: its supervisor is gone (was it killed?); start it again with pmon-agent daemon restart".to_string(),
        RunState::Crashed => format!(
            "crashed {} ago: {}",
            ago(&s.ended_at),
            s.last_error.clone().unwrap_or_else(|| s.signal.map(signal_name).unwrap_or_default())
        ),
        RunState::Failed => format!(
            "failed {} ago (exit {}){}",
            ago(&s.ended_at),
            s.exit_code.map_or("?".into(), |c| c.to_string()),
            s.last_error.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
        ),
        RunState::Stopped => format!("stopped {} ago", ago(&s.ended_at)),
        RunState::Succeeded => format!("succeeded {} ago (exit 0)", ago(&s.ended_at)),
    }
}
