//! The holder: the small process that owns a wrapped program's output.
//!
//! `wrap` and each run of a daemon split in two processes. The **holder**
//! (the process the user started: its pid, signals and exit code are what
//! the shell sees) starts the program, echoes its bytes, appends them to the
//! plain log file and to the run's capture files ([`capture`]), forwards
//! signals, reaps the program and writes how it ended. It never parses and
//! never opens a database. The **shipper** (`pmon-agent ship`, a child of the
//! holder in a process group of its own, the first the kernel's OOM killer
//! picks) reads the capture files, parses, samples metrics and ships the
//! records, storing its read position with them.
//!
//! When the shipper dies — SIGKILL, out of memory, a bug — the holder records
//! a `shipper_restart` event and starts another, which resumes where the
//! last one's delivered records end; the program never notices. Conmon and
//! containerd's shim are the model: the part that holds a container's stdio
//! is tiny, the engine can crash.

pub mod capture;
mod own_process;
mod shipper;

use crate::app::App;
use crate::source::wrap::{self, ChildOutcome, Feed, WrapOptions};
use anyhow::Context;
use capture::{CaptureDir, EventWriter, ProgramEnd, StreamWriter};
use pmon_core::record::{Event, StreamKind};
use pmon_core::run::{RunState, StartMode};
use serde::{Deserialize, Serialize};
use serde_json::json;
use shipper::{Handshake, ShipperKeeper};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub use own_process::{
    back_to_agent, exec_as_holder, exit_code, forward_signals, hand_wrap_to_holder, run_if_held,
    run_in_own_process,
};

/// One run of a command: what `wrap` does once and a daemon supervisor does
/// again after each restart.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildSpec {
    pub experiment: String,
    pub command: Vec<String>,
    pub tags: Vec<(String, String)>,
    pub mode: StartMode,
    pub pty: bool,
    pub echo: bool,
    /// The daemon this run belongs to, if any (its live status file).
    pub daemon: Option<String>,
    /// `--parser`: the shipper's parser chain restricted to these.
    #[serde(default)]
    pub parsers: Vec<String>,
    /// `--notify` / `--notify-on`: the notification settings of this run.
    #[serde(default)]
    pub notify: Option<pmon_core::options::NotifyOverride>,
    /// `--no-faulthandler`: leave `PYTHONFAULTHANDLER` unset.
    #[serde(default)]
    pub no_faulthandler: bool,
}

/// What the holder needs of the agent's settings: where the data dir is,
/// and what the shipper is told to find the same configuration and store.
/// (The holder itself never reads the configuration file.)
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HolderEnv {
    /// `pmon-agent` itself, which the shipper runs.
    pub agent_exe: std::path::PathBuf,
    pub data_dir: std::path::PathBuf,
    pub config: Option<std::path::PathBuf>,
    pub database_url: Option<String>,
    /// The configuration was read and its warnings said (the first
    /// shipper says them otherwise).
    pub config_read: bool,
}

impl HolderEnv {
    /// From the command line alone, without reading the configuration:
    /// `wrap` stays small until it becomes the holder, and the shipper reads
    /// the configuration (and says what is wrong with it) itself.
    pub fn from_args(global: &crate::cli::GlobalArgs) -> anyhow::Result<HolderEnv> {
        Ok(HolderEnv {
            agent_exe: own_process::agent_exe(),
            data_dir: crate::app::data_dir(global)?.root().to_path_buf(),
            // Only a file named by --config/PMON_CONFIG: without one the
            // shipper discovers the configuration where the holder would
            // (same directory and environment), passing over foreign files.
            config: crate::app::explicit_config(global).map(std::path::Path::to_path_buf),
            database_url: global.database_url.clone(),
            config_read: false,
        })
    }

    pub fn of(app: &App) -> HolderEnv {
        HolderEnv {
            agent_exe: std::env::current_exe().unwrap_or_else(|_| "pmon-agent".into()),
            data_dir: app.data_dir.root().to_path_buf(),
            config: app.config_path.clone(),
            database_url: app.config.logging.database.url.clone(),
            config_read: true,
        }
    }
}

/// How a run ended.
#[derive(Debug, Serialize, Deserialize)]
pub struct Ran {
    pub outcome: ChildOutcome,
    pub state: RunState,
    pub run_id: Option<String>,
    /// What the shipper learned: the last error, memory, an OOM verdict.
    pub result: ShipResult,
}

/// What the shipper tells the holder when it is done (`result.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShipResult {
    /// The last error the program printed (`ValueError: bad shard`).
    pub last_error: Option<String>,
    /// The program's resident memory at the last sample.
    pub last_rss_bytes: Option<u64>,
    /// Set when a SIGKILL was likely the out-of-memory killer:
    /// `killed by SIGKILL (likely out of memory: …)`.
    pub oom: Option<String>,
}

/// The state a run ends in, from how its program ended.
pub fn end_state(exit_code: Option<i32>, signal: Option<i32>, forwarded: Option<i32>) -> RunState {
    match (exit_code, signal, forwarded) {
        (Some(0), _, _) => RunState::Succeeded,
        (_, Some(_), Some(_)) => RunState::Stopped,
        (_, Some(_), None) => RunState::Crashed,
        _ => RunState::Failed,
    }
}

/// Runs the command once under a holder and a shipper; `on_spawn` is told
/// the program's pid and the run id.
pub fn run(
    env: &HolderEnv,
    spec: &ChildSpec,
    on_spawn: impl FnOnce(u32, Option<&str>),
) -> anyhow::Result<Ran> {
    let (run_id, keeper) = match shipper::begin(env, spec)? {
        Handshake::Ready(run_id, child) => {
            let keeper = ShipperKeeper::new(env, spec, &run_id, child);
            (Some(run_id), Some(keeper))
        }
        Handshake::Unrecorded => (None, None),
    };
    let capture = run_id.as_ref().map(|id| CaptureDir::new(&env.data_dir, id));
    let feed = Arc::new(CaptureFeed::open(capture.as_ref(), spec.pty));
    if let Some(keeper) = &keeper {
        feed.shipper.store(keeper.pid(), Ordering::SeqCst);
        keeper.watch(feed.shipper.clone(), feed.clone());
    }
    let plain_log = run_id
        .as_deref()
        .and_then(|id| open_plain_log(&run_log_path(env, &spec.experiment, id)));
    let opts = WrapOptions {
        command: &spec.command,
        pty: spec.pty,
        echo: spec.echo,
        plain_log,
        faulthandler: !spec.no_faulthandler,
    };
    let start_feed = feed.clone();
    // Which executable holds the run: `pmon-agent-holder`, or `pmon-agent`
    // itself when the holder is not installed beside it.
    let holder_exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let outcome = wrap::run(
        opts,
        feed.clone(),
        |pid| {
            tracing::info!(target: "wrap", pid, command = ?spec.command, "program started");
            start_feed.event(Event::now(
                "start",
                json!({"pid": pid, "command": spec.command, "pty": spec.pty, "tags": tags_json(&spec.tags), "agent_pid": std::process::id(), "holder": holder_exe}),
            ));
            on_spawn(pid, run_id.as_deref());
        },
        || {},
    );
    let end = match &outcome {
        Ok(o) => ProgramEnd {
            pid: o.pid,
            exit_code: o.exit_code,
            signal: o.signal,
            forwarded: o.forwarded,
            error: None,
        },
        Err(e) => ProgramEnd {
            pid: 0,
            exit_code: Some(127),
            signal: None,
            forwarded: None,
            error: Some(format!("could not start '{}': {e}", spec.command[0])),
        },
    };
    if let Some(capture) = &capture {
        if let Err(e) = capture.write_end(&end) {
            eprintln!(
                "pmon-agent: warning: could not write {}: {e}; the run's records may not all be stored",
                capture.end().display()
            );
        }
    }
    let result = match keeper {
        Some(keeper) => {
            keeper.announce_end(&end);
            keeper.wait_until_shipped(capture.as_ref())
        }
        None => ShipResult::default(),
    };
    let outcome = outcome.with_context(|| {
        format!(
            "could not start '{}'; check that it is installed and on PATH",
            spec.command[0]
        )
    })?;
    Ok(Ran {
        state: end_state(outcome.exit_code, outcome.signal, outcome.forwarded),
        outcome,
        run_id,
        result,
    })
}

fn run_log_path(env: &HolderEnv, experiment: &str, run_id: &str) -> std::path::PathBuf {
    pmon_core::paths::DataDir::at(env.data_dir.clone()).run_log_path(experiment, run_id)
}

/// A run's plain log file, opened for appending (mode 0600); a warning and
/// `None` when it cannot be.
pub fn open_plain_log(path: &std::path::Path) -> Option<std::fs::File> {
    let open = || -> std::io::Result<std::fs::File> {
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
    };
    match open() {
        Ok(f) => Some(f),
        Err(e) => {
            eprintln!(
                "pmon-agent: warning: could not open the plain log file {}: {e}; output is still stored as records",
                path.display()
            );
            None
        }
    }
}

fn tags_json(tags: &[(String, String)]) -> serde_json::Value {
    tags.iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// The holder's [`Feed`]: the capture files, and SIGUSR1 passed on to the
/// shipper (which has the numbers for a status report).
pub struct CaptureFeed {
    streams: Mutex<HashMap<StreamKind, StreamWriter>>,
    events: Mutex<Option<EventWriter>>,
    /// The shipper's pid (0: none), for SIGUSR1.
    shipper: Arc<AtomicU32>,
    /// When a failed write (a full disk) was last said: once a minute, not
    /// once a chunk.
    warned: Mutex<Option<Instant>>,
    /// The capture's directory, for that warning.
    dir: Option<std::path::PathBuf>,
    /// Bytes the capture could not take since it last could.
    lost: std::sync::atomic::AtomicU64,
}

impl CaptureFeed {
    fn open(capture: Option<&CaptureDir>, pty: bool) -> CaptureFeed {
        let mut streams = HashMap::new();
        let mut events = None;
        if let Some(capture) = capture {
            let kinds: &[StreamKind] = if pty {
                &[StreamKind::Stdout]
            } else {
                &[StreamKind::Stdout, StreamKind::Stderr]
            };
            let opened = capture.create().and_then(|()| {
                for kind in kinds {
                    streams.insert(*kind, StreamWriter::open(capture, *kind)?);
                }
                events = Some(EventWriter::open(capture)?);
                Ok(())
            });
            if let Err(e) = opened {
                eprintln!(
                    "pmon-agent: warning: could not create the capture files in {}: {e}; the program runs, but its records are not stored",
                    capture.path().display()
                );
            }
        }
        CaptureFeed {
            streams: Mutex::new(streams),
            events: Mutex::new(events),
            shipper: Arc::new(AtomicU32::new(0)),
            warned: Mutex::new(None),
            dir: capture.map(|c| c.path().to_path_buf()),
            lost: Default::default(),
        }
    }

    fn warn_once(&self, what: &str, e: &std::io::Error) {
        let Ok(mut last) = self.warned.lock() else {
            return;
        };
        if last.is_none_or(|at| at.elapsed() >= std::time::Duration::from_secs(60)) {
            *last = Some(Instant::now());
            let dir = self
                .dir
                .as_deref()
                .map_or("the data dir".into(), |d| d.display().to_string());
            eprintln!("pmon-agent: warning: could not write {what} in {dir}: {e}; the program goes on and its output still reaches the terminal, but what cannot be written is not stored: free space there (it resumes by itself)");
        }
    }
}

impl Feed for CaptureFeed {
    fn data(&self, kind: StreamKind, chunk: &[u8]) -> bool {
        let written = self
            .streams
            .lock()
            .ok()
            .and_then(|mut streams| streams.get_mut(&kind).map(|writer| writer.write(chunk)));
        match written {
            Some(Err(e)) => {
                self.lost.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                self.warn_once("the capture file", &e);
            }
            Some(Ok(())) => {
                // Space is back: what could not be kept is counted, once.
                let lost = self.lost.swap(0, Ordering::SeqCst);
                if lost > 0 {
                    self.event(Event::now(
                        "capture_incomplete",
                        json!({"bytes_lost": lost, "reason": "the data dir could not grow (disk full?)"}),
                    ));
                }
            }
            None => {}
        }
        // Reading goes on whatever happens to the capture: the echo and the
        // plain log file still need the bytes, and the program its pipe.
        true
    }

    fn eof(&self, _kind: StreamKind) {}

    fn event(&self, event: Event) {
        if let Ok(mut events) = self.events.lock() {
            if let Some(writer) = events.as_mut() {
                if let Err(e) = writer.write(&event) {
                    self.warn_once("the events file", &e);
                }
            }
        }
    }

    fn status_report(&self, _pid: u32, _started: Instant) {
        let pid = self.shipper.load(Ordering::SeqCst);
        if pid != 0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGUSR1,
            );
        }
    }
}
