//! Experiments and runs: what a run is, as every layer sees it.
//!
//! A run id is a ULID made by the agent, so a run can start while a database
//! is down and agents on many hosts never collide. Users name runs by ordinal
//! (1, 2, 3… in start order). A run whose agent has died without recording an
//! end is `lost`: we know because its pid is gone (or now belongs to another
//! process, which the stored start time reveals). The SQL that registers and
//! reads runs is the store's (`pmon_store::registry`).

use crate::procinfo;
use serde::Serialize;
use std::path::Path;

/// A run's lifecycle state, as the spec names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Running,
    Paused,
    Succeeded,
    Failed,
    Crashed,
    Stopped,
    Lost,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Paused => "paused",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Crashed => "crashed",
            RunState::Stopped => "stopped",
            RunState::Lost => "lost",
        }
    }

    pub fn parse(text: &str) -> RunState {
        match text {
            "running" => RunState::Running,
            "paused" => RunState::Paused,
            "succeeded" => RunState::Succeeded,
            "failed" => RunState::Failed,
            "crashed" => RunState::Crashed,
            "stopped" => RunState::Stopped,
            _ => RunState::Lost,
        }
    }

    pub fn is_live(self) -> bool {
        matches!(self, RunState::Running | RunState::Paused)
    }
}

/// One row of `pipeline_runs`.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Run {
    pub run_id: String,
    pub experiment_id: String,
    pub ordinal: i64,
    pub state: RunState,
    pub command: Vec<String>,
    pub tags: serde_json::Value,
    pub host: String,
    pub agent_pid: Option<u32>,
    #[serde(default)]
    pub agent_start: Option<u64>,
    pub child_pid: Option<u32>,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
}

impl Run {
    /// A live-looking run whose agent on this host is gone is `lost`.
    pub fn agent_vanished(&self, host: &str) -> bool {
        self.state.is_live()
            && self.host == host
            && !self
                .agent_pid
                .is_some_and(|pid| procinfo::is_alive(pid, self.agent_start))
    }

    /// Shows the run as `lost` if it looks live but its agent on `host` is
    /// gone, without writing anything. For runs read from PostgreSQL, which
    /// agents on many hosts share: only this host can judge its own pids, and
    /// a query (perhaps by a read-only database user) should not write.
    pub fn mark_lost_if_agent_gone(&mut self, host: &str) {
        if self.agent_vanished(host) {
            self.state = RunState::Lost;
        }
    }
}

/// What a new run needs to be registered.
pub struct NewRun<'a> {
    pub experiment_id: &'a str,
    pub command: &'a [String],
    pub tags: &'a [(String, String)],
    /// The process whose death makes the run `lost`: the one the user
    /// started (the holder of the program's output), not a shipper that
    /// may be restarted under it.
    pub agent_pid: u32,
}

/// How `wrap` treats an experiment that already has a live run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StartMode {
    /// Refuse if a run is live.
    Exclusive,
    /// Start another run alongside.
    NewRun,
    /// Continue the latest run.
    Resume,
    /// Continue the latest run unless it is live (`tail`: a stable run id keeps
    /// re-read file records idempotent across restarts).
    Continue,
}

/// Where a session of a run starts numbering its program output and its
/// metric samples: the keys `(run_id, origin, seq)` and `(run_id, seq)` that
/// make a batch written twice land once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqStart {
    pub logs: u64,
    pub metrics: u64,
}

/// The default experiment name: the stem of the script or command.
/// `python train.py` → `train`; `python -m pkg.mod` → `mod`; `./job.sh` → `job`.
pub fn default_experiment(command: &[String]) -> String {
    let stem = |s: &str| {
        Path::new(s)
            .file_stem()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| s.to_string())
    };
    let Some(program) = command.first() else {
        return "default".into();
    };
    let prog = stem(program);
    let is_interpreter = [
        "python", "python3", "pypy", "pypy3", "uv", "poetry", "node", "bash", "sh", "ruby", "perl",
        "Rscript",
    ]
    .iter()
    .any(|i| prog == *i || prog.starts_with("python"));
    if !is_interpreter {
        return prog;
    }
    let mut args = command[1..].iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-m" => {
                if let Some(module) = args.next() {
                    return module.rsplit('.').next().unwrap_or(module).to_string();
                }
            }
            "-c" => return prog,
            "-X" | "-W" | "run" => {
                if arg != "run" {
                    args.next();
                }
            }
            a if a.starts_with('-') => {}
            a => return stem(a),
        }
    }
    prog
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn default_experiment_is_the_script_stem() {
        assert_eq!(default_experiment(&v(&["python", "train.py"])), "train");
        assert_eq!(
            default_experiment(&v(&["python3", "-u", "/x/etl_job.py", "--fast"])),
            "etl_job"
        );
        assert_eq!(
            default_experiment(&v(&["python3", "-m", "pkg.trainer"])),
            "trainer"
        );
        assert_eq!(default_experiment(&v(&["./job.sh"])), "job");
        assert_eq!(default_experiment(&v(&["uv", "run", "fit.py"])), "fit");
    }
}
