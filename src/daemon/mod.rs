//! Daemons: commands run in the background under a supervising agent that
//! never lets them die silently.
//!
//! `daemon start` re-executes the agent as a detached supervisor (own session,
//! no terminal) and returns at once; the supervisor runs the command exactly
//! as `wrap` does — records, plain log file, signals — each restart being a new
//! run of the daemon's experiment, so one crash's traceback is never
//! overwritten by the next instance. The supervisor holds an exclusive lock on
//! `daemons/NAME.lock` for its whole life (the pidfile guard) and keeps
//! `daemons/NAME.json` up to date; a supervisor that died shows as `lost`.
//!
//! This module owns the state file and the rules (names, restart policy);
//! `supervise.rs` is the supervisor loop; the commands live in
//! `commands/daemon.rs`.

pub mod control;
pub mod live;
pub mod replay;
pub mod show;
pub mod supervise;

use pmon_core::options::RestartPolicy;
use pmon_core::paths::DataDir;
use pmon_core::procinfo;
use pmon_core::run::RunState;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// The delay before restart number `attempt` (0-based): doubling from
/// `first`, never more than `max`.
pub fn backoff(attempt: u32, first: Duration, max: Duration) -> Duration {
    first.saturating_mul(1u32 << attempt.min(16)).min(max)
}

/// Everything `daemon status` shows, as written by the supervisor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DaemonState {
    pub name: String,
    pub experiment_id: String,
    pub command: Vec<String>,
    pub restart: RestartPolicy,
    /// `--parser` given at start (kept for `daemon restart`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parsers: Vec<String>,
    /// `--notify` / `--notify-on` given at start (kept for `daemon restart`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<pmon_core::options::NotifyOverride>,
    /// `--no-faulthandler` given at start.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_faulthandler: bool,
    pub state: RunState,
    /// The program's pid (also its process group).
    pub pid: Option<u32>,
    pub supervisor_pid: u32,
    #[serde(default)]
    pub supervisor_start: Option<u64>,
    pub started_at: String,
    pub restarts: u32,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub last_error: Option<String>,
    pub run_id: Option<String>,
    /// When the last run ended.
    pub ended_at: Option<String>,
    /// The program's resident memory at the last sample.
    #[serde(default)]
    pub last_rss_bytes: Option<u64>,
}

impl DaemonState {
    /// A state whose supervisor is gone is `lost`, whatever it last said.
    pub fn with_liveness(mut self) -> DaemonState {
        let supervisor_alive = procinfo::is_alive(self.supervisor_pid, self.supervisor_start);
        if !supervisor_alive && !is_final(self.state) {
            self.state = RunState::Lost;
        }
        self
    }
}

fn is_final(state: RunState) -> bool {
    matches!(
        state,
        RunState::Succeeded
            | RunState::Failed
            | RunState::Crashed
            | RunState::Stopped
            | RunState::Lost
    )
}

/// Where daemon state lives.
pub struct DaemonDir {
    dir: PathBuf,
}

impl DaemonDir {
    pub fn new(data_dir: &DataDir) -> DaemonDir {
        DaemonDir {
            dir: data_dir.root().join("daemons"),
        }
    }

    pub fn state_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    pub fn lock_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.lock"))
    }

    /// Written by `daemon stop` so the supervisor knows not to restart.
    pub fn stop_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.stop"))
    }

    pub fn supervisor_log(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.supervisor.log"))
    }

    pub fn read(&self, name: &str) -> Option<DaemonState> {
        let text = std::fs::read_to_string(self.state_path(name)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Writes the state atomically (temp file, then rename): a reader never
    /// sees half a file.
    pub fn write(&self, state: &DaemonState) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let tmp = self.dir.join(format!(".{}.json.tmp", state.name));
        std::fs::write(&tmp, serde_json::to_vec_pretty(state).unwrap_or_default())?;
        std::fs::rename(tmp, self.state_path(&state.name))
    }

    /// All daemons that have a state file, by name.
    pub fn all(&self) -> Vec<DaemonState> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter_map(|n| n.strip_suffix(".json").map(str::to_string))
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        names.iter().filter_map(|n| self.read(n)).collect()
    }

    pub fn ensure(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)
    }
}

/// Names become file names and appear in commands: letters, digits, `-`, `_`,
/// `.`, 1 to 64 of them, not starting with `.` or `-`.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let ok_start = !name.starts_with(['.', '-']);
    if name.is_empty() || name.len() > 64 || !ok_chars || !ok_start {
        return Err(format!(
            "'{name}' is not a valid daemon name: use 1 to 64 letters, digits, '-', '_' or '.', not starting with '.' or '-'"
        ));
    }
    Ok(())
}

/// Every process whose process group is `pgid` (scanning /proc).
pub fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
                return false;
            };
            let mut fields = after.split(' ');
            let state = fields.next();
            let _ppid = fields.next();
            let pgrp = fields.next().and_then(|p| p.parse::<u32>().ok());
            state != Some("Z") && pgrp == Some(pgid)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(validate_name("etl-nightly_2.v1").is_ok());
        for bad in ["", "../x", "a b", "-x", ".hidden", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let (first, max) = (Duration::from_secs(1), Duration::from_secs(60));
        assert_eq!(backoff(0, first, max), Duration::from_secs(1));
        assert_eq!(backoff(3, first, max), Duration::from_secs(8));
        assert_eq!(backoff(10, first, max), Duration::from_secs(60));
    }
}
