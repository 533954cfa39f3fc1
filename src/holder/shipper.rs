//! Starting the shipper, and starting it again when it dies.

use super::capture::CaptureDir;
use super::{CaptureFeed, ChildSpec, HolderEnv, ShipResult};
use crate::source::wrap::Feed;
use pmon_core::record::Event;
use pmon_core::run::StartMode;
use serde_json::json;
use std::io::BufRead;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Restarts after which the holder gives up on shipping this run.
const MAX_RESTARTS: u32 = 20;

/// What the first shipper said.
pub enum Handshake {
    /// The run is registered; the shipper is reading its capture.
    Ready(String, Child),
    /// The store cannot be used: the program runs, unrecorded (the shipper
    /// has said why).
    Unrecorded,
}

/// How to start a shipper for this holder's run.
#[derive(Clone)]
struct Recipe {
    exe: PathBuf,
    data_dir: PathBuf,
    config: Option<PathBuf>,
    database_url: Option<String>,
    config_read: bool,
    experiment: String,
    pty: bool,
    daemon: Option<String>,
    parsers: Vec<String>,
    notify: Option<pmon_core::options::NotifyOverride>,
}

impl Recipe {
    fn new(env: &HolderEnv, spec: &ChildSpec) -> Recipe {
        Recipe {
            exe: env.agent_exe.clone(),
            data_dir: env.data_dir.clone(),
            config: env.config.clone(),
            database_url: env.database_url.clone(),
            config_read: env.config_read,
            experiment: spec.experiment.clone(),
            pty: spec.pty,
            daemon: spec.daemon.clone(),
            parsers: spec.parsers.clone(),
            notify: spec.notify.clone(),
        }
    }

    /// The shipper's command; `restart` for one that takes over a run.
    fn command(&self, restart: bool) -> Command {
        let mut cmd = Command::new(&self.exe);
        // The configuration's warnings are said once per run.
        if self.config_read || restart {
            cmd.arg("--quiet-config");
        }
        cmd.arg("--data-dir").arg(&self.data_dir);
        // Without one, the shipper looks where the holder looked (same
        // directory and environment) and finds none either.
        if let Some(config) = &self.config {
            cmd.arg("--config").arg(config);
        }
        match &self.database_url {
            // Not on the command line, where `ps` would show its password.
            Some(url) => cmd.env("PMON_DATABASE_URL", url),
            None => cmd.env_remove("PMON_DATABASE_URL"),
        };
        cmd.args(["ship", "--experiment", &self.experiment]);
        if self.pty {
            cmd.arg("--pty");
        }
        if let Some(daemon) = &self.daemon {
            cmd.args(["--daemon", daemon]);
        }
        for parser in &self.parsers {
            cmd.args(["--parser", parser]);
        }
        if let Some(notify) = &self.notify {
            cmd.arg("--notify-json")
                .arg(serde_json::to_string(notify).unwrap_or_default());
        }
        // Its own process group: a Ctrl-C or a signal to the holder's group
        // is not for it. Its stdout is the handshake; stderr is the user's.
        // Its stdin is how the holder tells it the program ended: a pipe
        // needs no disk (end.json may not be writable on a full one), and
        // its end of file says the holder is gone.
        cmd.process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        // SAFETY: the closure runs between fork and exec and only makes
        // async-signal-safe system calls (open, write, close), no allocation.
        unsafe {
            cmd.pre_exec(|| {
                prefer_for_oom_kill();
                Ok(())
            });
        }
        cmd
    }
}

/// The kernel's OOM killer takes the shipper before the holder or the
/// program: the holder starts another, the program never notices. Set in
/// the child before exec, so the shipper is the first pick from its first
/// instruction on (set by the shipper itself, a test once saw it at 0 while
/// the shipper was loading its configuration).
fn prefer_for_oom_kill() {
    let path = c"/proc/self/oom_score_adj";
    // SAFETY: a NUL-terminated path and a 3-byte buffer that outlive the calls.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd >= 0 {
            libc::write(fd, b"500".as_ptr().cast(), 3);
            libc::close(fd);
        }
    }
}

/// Starts the first shipper, which registers the run (or refuses it).
pub fn begin(env: &HolderEnv, spec: &ChildSpec) -> anyhow::Result<Handshake> {
    let mut cmd = Recipe::new(env, spec).command(false);
    let mode = match spec.mode {
        StartMode::Exclusive => "exclusive",
        StartMode::NewRun => "new-run",
        StartMode::Resume => "resume",
        StartMode::Continue => "continue",
    };
    cmd.args(["--mode", mode])
        .arg("--command-json")
        .arg(serde_json::to_string(&spec.command).unwrap_or_default())
        .arg("--tags-json")
        .arg(serde_json::to_string(&spec.tags).unwrap_or_default());
    let mut child = match cmd.spawn() {
        Ok(child) => {
            tracing::info!(target: "holder", pid = child.id(), experiment = %spec.experiment, "shipper started");
            child
        }
        Err(e) => {
            eprintln!("pmon-agent: warning: could not start the shipper ({e}); the command runs anyway, but its records are not stored");
            return Ok(Handshake::Unrecorded);
        }
    };
    let line = read_line(&mut child);
    if let Some(run_id) = line.strip_prefix("ready ") {
        return Ok(Handshake::Ready(run_id.to_string(), child));
    }
    let status = child.wait();
    match line.strip_prefix("refused ") {
        Some(reason) => {
            let reason = serde_json::from_str::<String>(reason).unwrap_or_else(|_| reason.into());
            Err(anyhow::anyhow!("{reason}"))
        }
        None if line == "unrecorded" => Ok(Handshake::Unrecorded),
        None => {
            let how = status.map_or_else(|e| e.to_string(), describe);
            eprintln!("pmon-agent: warning: the shipper ended before it began ({how}); the command runs anyway, but its records are not stored");
            Ok(Handshake::Unrecorded)
        }
    }
}

/// The shipper's first line (its handshake), or "" if it said nothing.
fn read_line(child: &mut Child) -> String {
    let Some(stdout) = child.stdout.take() else {
        return String::new();
    };
    let mut line = String::new();
    let _ = std::io::BufReader::new(stdout).read_line(&mut line);
    line.trim_end().to_string()
}

/// Watches the shipper and starts it again when it dies before its work is done.
pub struct ShipperKeeper {
    recipe: Recipe,
    run_id: String,
    child: Mutex<Option<Child>>,
    pid: u32,
    done: Mutex<Option<crossbeam_channel::Receiver<()>>>,
    /// The live shipper's stdin, and the program's end once known (given
    /// to every shipper started after it too).
    line: Arc<Mutex<EndLine>>,
}

#[derive(Default)]
struct EndLine {
    stdin: Option<std::process::ChildStdin>,
    end: Option<String>,
}

impl EndLine {
    /// A new shipper's stdin: it is told the end at once if it is known.
    fn attach(&mut self, stdin: Option<std::process::ChildStdin>) {
        self.stdin = stdin;
        self.send();
    }

    fn send(&mut self) {
        if let (Some(stdin), Some(end)) = (self.stdin.as_mut(), &self.end) {
            use std::io::Write;
            let _ = writeln!(stdin, "{end}").and_then(|()| stdin.flush());
        }
    }
}

impl ShipperKeeper {
    pub fn new(env: &HolderEnv, spec: &ChildSpec, run_id: &str, mut child: Child) -> ShipperKeeper {
        let line = EndLine {
            stdin: child.stdin.take(),
            end: None,
        };
        ShipperKeeper {
            recipe: Recipe::new(env, spec),
            run_id: run_id.to_string(),
            pid: child.id(),
            child: Mutex::new(Some(child)),
            done: Mutex::new(None),
            line: Arc::new(Mutex::new(line)),
        }
    }

    /// Tells the shipper (and any that follows) how the program ended.
    pub fn announce_end(&self, end: &super::capture::ProgramEnd) {
        if let Ok(mut line) = self.line.lock() {
            line.end = serde_json::to_string(end).ok();
            line.send();
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Starts the watching thread; `shipper` is kept set to the live
    /// shipper's pid, restarts are recorded through `feed`.
    pub fn watch(&self, shipper: Arc<AtomicU32>, feed: Arc<CaptureFeed>) {
        let Some(child) = self.child.lock().ok().and_then(|mut c| c.take()) else {
            return;
        };
        let (tx, rx) = crossbeam_channel::bounded(1);
        if let Ok(mut done) = self.done.lock() {
            *done = Some(rx);
        }
        let recipe = self.recipe.clone();
        let run_id = self.run_id.clone();
        let line = self.line.clone();
        let _ = std::thread::Builder::new()
            .name("pmon-shipper".into())
            .spawn(move || {
                keep(child, &recipe, &run_id, &shipper, &*feed, &line);
                let _ = tx.send(());
            });
    }

    /// Waits until a shipper has shipped the whole run, and reads what it found.
    pub fn wait_until_shipped(&self, capture: Option<&CaptureDir>) -> ShipResult {
        if let Some(rx) = self.done.lock().ok().and_then(|mut d| d.take()) {
            let _ = rx.recv();
        }
        capture
            .and_then(|c| std::fs::read(c.result()).ok())
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }
}

/// Waits for the shipper; while it dies before finishing, records it and
/// starts another that resumes from the last delivered records.
fn keep(
    mut child: Child,
    recipe: &Recipe,
    run_id: &str,
    shipper: &AtomicU32,
    feed: &dyn Feed,
    line: &Mutex<EndLine>,
) {
    let mut restarts = 0;
    loop {
        let status = loop {
            match child.wait() {
                Ok(status) => break Some(status),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break None,
            }
        };
        if status.is_some_and(|s| s.success()) {
            return;
        }
        // The run's capture is gone (its data dir deleted): there is
        // nothing left to ship, and a new shipper could not start.
        if !CaptureDir::new(&recipe.data_dir, run_id).path().is_dir() {
            eprintln!("pmon-agent: warning: the capture files of run {run_id} are gone (was the data dir deleted?); its records are not all stored");
            return;
        }
        if restarts >= MAX_RESTARTS {
            eprintln!("pmon-agent: warning: the shipper of run {run_id} died {restarts} times; giving up: the program's output is in the plain log file, its records not all stored");
            return;
        }
        restarts += 1;
        let how = status.map(describe).unwrap_or_else(|| "unknown".into());
        feed.event(Event::now(
            "shipper_restart",
            json!({"restart": restarts, "previous_pid": child.id(), "ended": how}),
        ));
        // A shipper that dies at once (a broken store) is not started in a loop.
        std::thread::sleep(Duration::from_millis(100 * (1 << restarts.min(6))));
        let mut cmd = recipe.command(true);
        // A restarted shipper has no handshake to make.
        cmd.args(["--run-id", run_id, "--restarts", &restarts.to_string()])
            .stdout(Stdio::null());
        match cmd.spawn() {
            Ok(mut next) => {
                tracing::info!(target: "holder", pid = next.id(), restart = restarts, run = %run_id, "shipper started again");
                shipper.store(next.id(), Ordering::SeqCst);
                if let Ok(mut line) = line.lock() {
                    line.attach(next.stdin.take());
                }
                child = next;
            }
            Err(e) => {
                eprintln!("pmon-agent: warning: could not start the shipper again ({e}); the run's records are not all stored");
                return;
            }
        }
    }
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (_, Some(signal)) => format!("killed by {}", pmon_core::text::signal_name(signal)),
        _ => "unknown".into(),
    }
}
