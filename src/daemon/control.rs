//! Acting on a daemon from outside its supervisor: finding it, pausing and
//! resuming its process group, stopping it until no process of the group
//! is left. Each says what it did, for the command to print.

use super::{group_members, validate_name, DaemonDir, DaemonState};
use crate::app::App;
use anyhow::{bail, Context};
use chrono::Utc;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use pmon_core::record::{format_ts, Event};
use pmon_core::run::RunState;
use pmon_store::{Batch, RunContext};
use serde_json::json;
use std::time::{Duration, Instant};

/// The daemon named `name`, its liveness checked; an error that lists the
/// known ones.
pub fn existing(dir: &DaemonDir, name: &str) -> anyhow::Result<DaemonState> {
    validate_name(name).map_err(anyhow::Error::msg)?;
    match dir.read(name) {
        Some(state) => Ok(state.with_liveness()),
        None => {
            let known: Vec<String> = dir.all().into_iter().map(|d| d.name).collect();
            if known.is_empty() {
                bail!("no daemon named '{name}'; there are none yet (start one with pmon-agent daemon start --name {name} -- CMD)");
            }
            bail!(
                "no daemon named '{name}'; known daemons: {}",
                known.join(", ")
            );
        }
    }
}

/// SIGSTOP / SIGCONT to the daemon's process group (`daemon pause`,
/// `daemon resume`), recorded as a `pause`/`resume` event; says what it did.
pub fn signal_group(
    app: &App,
    dir: &DaemonDir,
    name: &str,
    signal: Signal,
) -> anyhow::Result<String> {
    let mut state = existing(dir, name)?;
    let Some(pid) = state.pid.filter(|_| state.state.is_live()) else {
        bail!("daemon '{name}' is not running ({})", state.state.as_str());
    };
    killpg(Pid::from_raw(pid as i32), signal)
        .with_context(|| format!("could not signal daemon '{name}' (process group {pid})"))?;
    let (new_state, event) = match signal {
        Signal::SIGSTOP => (RunState::Paused, "pause"),
        _ => (RunState::Running, "resume"),
    };
    state.state = new_state;
    dir.write(&state)?;
    if let (Some(run_id), Ok(store)) = (&state.run_id, app.open_store()) {
        let _ = store.conn().execute(
            "UPDATE pipeline_runs SET state = ?2 WHERE run_id = ?1",
            rusqlite::params![run_id, new_state.as_str()],
        );
        if let Ok(mut sink) = app.open_sink() {
            let ctx = RunContext {
                experiment_id: state.experiment_id.clone(),
                run_id: run_id.clone(),
            };
            let batch = Batch {
                events: vec![Event::now(event, json!({"by": who(), "pgid": pid}))],
                ..Batch::default()
            };
            let _ = sink.write(&ctx, &batch);
        }
    }
    let done = if event == "pause" {
        "paused"
    } else {
        "resumed"
    };
    Ok(format!("{done} daemon {name} (process group {pid})"))
}

fn who() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    format!(
        "{user}@{} (pid {})",
        pmon_core::procinfo::hostname(),
        std::process::id()
    )
}

/// The daemon has ended but its supervisor still ships the spool in the
/// background: the stop file ends that (no signal: its program is gone).
fn stop_background_replay(
    dir: &DaemonDir,
    name: &str,
    state: &DaemonState,
) -> anyhow::Result<String> {
    std::fs::write(dir.stop_path(name), who())?;
    let until = Instant::now() + Duration::from_secs(10);
    while pmon_core::procinfo::is_alive(state.supervisor_pid, state.supervisor_start)
        && Instant::now() < until
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(format!(
        "daemon {name} is not running ({}); its supervisor stopped shipping the spool in the background (`pmon-agent spool replay` ships what is left)",
        state.state.as_str()
    ))
}

/// SIGTERM to the daemon's process group (through its supervisor, which
/// records it), SIGKILL to what is left after `timeout`, until no process of
/// the group remains.
pub fn stop(dir: &DaemonDir, name: &str, timeout: Duration) -> anyhow::Result<String> {
    let mut state = existing(dir, name)?;
    let pgid = state.pid;
    let group_alive = pgid.is_some_and(|p| !group_members(p).is_empty());
    let supervisor = Pid::from_raw(state.supervisor_pid as i32);
    let supervisor_alive =
        pmon_core::procinfo::is_alive(state.supervisor_pid, state.supervisor_start);
    if !state.state.is_live() && !group_alive {
        if supervisor_alive {
            return stop_background_replay(dir, name, &state);
        }
        return Ok(format!(
            "daemon {name} is not running ({})",
            state.state.as_str()
        ));
    }
    std::fs::write(dir.stop_path(name), who())?;
    if let Some(p) = pgid {
        // A paused group must run again to act on SIGTERM.
        let _ = killpg(Pid::from_raw(p as i32), Signal::SIGCONT);
    }
    if supervisor_alive {
        let _ = kill(supervisor, Signal::SIGTERM);
    } else if let Some(p) = pgid {
        let _ = killpg(Pid::from_raw(p as i32), Signal::SIGTERM);
    }
    let deadline = Instant::now() + timeout;
    while pgid.is_some_and(|p| !group_members(p).is_empty()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Some(p) = pgid {
        if !group_members(p).is_empty() {
            let _ = killpg(Pid::from_raw(p as i32), Signal::SIGKILL);
            while !group_members(p).is_empty() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    let until = Instant::now() + Duration::from_secs(10);
    while supervisor_alive
        && pmon_core::procinfo::is_alive(state.supervisor_pid, state.supervisor_start)
        && Instant::now() < until
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    if !supervisor_alive {
        state.state = RunState::Stopped;
        state.ended_at = Some(format_ts(&Utc::now()));
        dir.write(&state)?;
    }
    Ok(format!("stopped daemon {name}"))
}
