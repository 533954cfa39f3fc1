//! `wrap`: run a command, echo its output byte for byte, and feed the pipeline.
//!
//! The wrapped program is sacred: its output is echoed before anything else
//! happens to it, its exit code is passed through (128+N when it dies of
//! signal N), and signals sent to the agent (SIGINT, SIGTERM, SIGHUP, SIGQUIT)
//! are forwarded to its whole process group. SIGUSR1 asks the agent for a
//! status report. The agent blocks these signals in every thread and takes
//! them on one dedicated thread with `sigwait`, so no handler runs in the
//! middle of I/O.

use super::child::{self, Spawned};
use super::{pump, raw_fd_file, ProgramExit, Tee};
use crate::pipeline::{Msg, PipelineCounters};
use crossbeam_channel::Sender;
use nix::sys::signal::{killpg, pthread_sigmask, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use pmon_core::procinfo;
use pmon_core::record::{Event, StreamKind};
use serde_json::json;
use std::fs::File;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

const FORWARDED: [Signal; 4] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

/// Blocks the signals the agent handles itself. Call before any thread starts,
/// so that every thread inherits the mask (children get a clean mask from std).
pub fn block_signals() {
    let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&handled_signals()), None);
}

pub fn handled_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(s);
    }
    set.add(Signal::SIGUSR1);
    set.add(Signal::SIGTTOU);
    set
}

pub struct WrapOptions<'a> {
    pub command: &'a [String],
    pub pty: bool,
    pub echo: bool,
    pub plain_log: Option<File>,
    /// Set `PYTHONFAULTHANDLER=1` for the program unless it is set already.
    pub faulthandler: bool,
}

/// How the child ended.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct ChildOutcome {
    pub pid: u32,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// The last signal the agent forwarded to the child, if any.
    pub forwarded: Option<i32>,
}

impl ChildOutcome {
    /// The agent's own exit code: the child's, or 128+N for signal N.
    pub fn agent_exit_code(&self) -> i32 {
        match (self.exit_code, self.signal) {
            (Some(code), _) => code,
            (None, Some(sig)) => 128 + sig,
            (None, None) => 1,
        }
    }
}

/// Where the readers and the signal thread hand what they get: the
/// pipeline (in one process), or the holder's capture files (for a shipper).
pub trait Feed: Send + Sync {
    /// A chunk of a stream; false: nobody takes more, stop reading.
    fn data(&self, kind: StreamKind, chunk: &[u8]) -> bool;
    /// The stream has ended.
    fn eof(&self, kind: StreamKind);
    fn event(&self, event: Event);
    /// SIGUSR1 asked for a status report of the run of `pid`.
    fn status_report(&self, pid: u32, started: Instant);
}

/// Runs the command to completion. `on_spawn` is told the child's pid;
/// `on_exit` is called when it has exited but is not reaped yet (its
/// `/proc` entry still says how much CPU it used).
pub fn run(
    opts: WrapOptions<'_>,
    feed: Arc<dyn Feed>,
    on_spawn: impl FnOnce(u32),
    on_exit: impl FnOnce(),
) -> std::io::Result<ChildOutcome> {
    let spawned = child::spawn(opts.command, opts.pty, opts.faulthandler)?;
    let Spawned {
        child,
        stdout,
        stderr,
        pty_master,
        foreground_before,
    } = spawned;
    let pid = child.id();
    on_spawn(pid);
    let plain_log = opts.plain_log.map(|f| Arc::new(Mutex::new(f)));
    let exit = Arc::new(ProgramExit::new()?);
    let mut readers = Vec::new();
    let mut start_reader = |input: File, kind: StreamKind, fd: i32| {
        let tee = Tee {
            echo: opts.echo.then(|| raw_fd_file(fd)),
            plain_log: plain_log.clone(),
        };
        let feed = feed.clone();
        let exit = exit.clone();
        std::thread::Builder::new()
            .name(format!("pmon-read-{}", kind.as_str()))
            .spawn(move || {
                pump(input, tee, &mut |chunk| feed.data(kind, chunk), Some(&exit));
                feed.eof(kind);
            })
            .map(|reader| readers.push(reader))
    };
    start_reader(stdout, StreamKind::Stdout, 1)?;
    if let Some(stderr) = stderr {
        start_reader(stderr, StreamKind::Stderr, 2)?;
    }
    let raw_terminal = pty_master.and_then(forward_stdin);
    let forwarded = Arc::new(AtomicI32::new(0));
    spawn_signal_thread(pid, feed.clone(), forwarded.clone())?;

    wait_for_exit(pid);
    on_exit();
    let status = wait_for(pid);
    child::restore_terminal(foreground_before);
    drop(raw_terminal);
    // Everything the program wrote is read before the run is called
    // finished, however long handing it on takes; only a pipe that a
    // background process keeps open and quiet is given up (`ProgramExit`).
    exit.exited();
    for reader in readers {
        let _ = reader.join();
    }
    let (exit_code, signal) = match status {
        WaitStatus::Exited(_, code) => (Some(code), None),
        WaitStatus::Signaled(_, sig, _) => (None, Some(sig as i32)),
        _ => (None, None),
    };
    let forwarded = forwarded.load(Ordering::SeqCst);
    Ok(ChildOutcome {
        pid,
        exit_code,
        signal,
        forwarded: (forwarded != 0).then_some(forwarded),
    })
}

/// Waits until the child has exited, leaving it to be reaped.
fn wait_for_exit(pid: u32) {
    use nix::sys::wait::{waitid, Id, WaitPidFlag};
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT;
    while let Err(nix::errno::Errno::EINTR) = waitid(Id::Pid(Pid::from_raw(pid as i32)), flags) {}
}

fn wait_for(pid: u32) -> WaitStatus {
    loop {
        match waitpid(Pid::from_raw(pid as i32), None) {
            Ok(status @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => return status,
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return WaitStatus::StillAlive,
        }
    }
}

/// What the one signal thread acts on: the child of the run in progress.
/// A daemon supervisor runs many children in turn, one signal thread serves them all.
struct SignalTarget {
    pid: u32,
    feed: Arc<dyn Feed>,
    forwarded: Arc<AtomicI32>,
    started: Instant,
}

static SIGNAL_TARGET: Mutex<Option<SignalTarget>> = Mutex::new(None);
static SIGNAL_THREAD: std::sync::Once = std::sync::Once::new();

fn spawn_signal_thread(
    pid: u32,
    feed: Arc<dyn Feed>,
    forwarded: Arc<AtomicI32>,
) -> std::io::Result<()> {
    if let Ok(mut target) = SIGNAL_TARGET.lock() {
        *target = Some(SignalTarget {
            pid,
            feed,
            forwarded,
            started: Instant::now(),
        });
    }
    let mut result = Ok(());
    SIGNAL_THREAD.call_once(|| {
        result = std::thread::Builder::new()
            .name("pmon-signals".into())
            .spawn(handle_signals)
            .map(|_| ());
    });
    result
}

fn handle_signals() {
    let set = handled_signals();
    let mut repeats = 0;
    loop {
        let Ok(sig) = set.wait() else { continue };
        if sig == Signal::SIGTTOU {
            continue;
        }
        let Ok(guard) = SIGNAL_TARGET.lock() else {
            continue;
        };
        let Some(target) = guard.as_ref() else {
            continue;
        };
        if sig == Signal::SIGUSR1 {
            target.feed.status_report(target.pid, target.started);
            continue;
        }
        // A user who asks three times wants the agent gone, flushed or not.
        if target.forwarded.swap(sig as i32, Ordering::SeqCst) != 0 {
            repeats += 1;
            if repeats >= 2 {
                eprintln!("pmon-agent: {} received three times; exiting now without waiting for the program or the store", sig.as_str());
                std::process::exit(128 + sig as i32);
            }
        }
        let _ = killpg(Pid::from_raw(target.pid as i32), sig);
        target.feed.event(Event::now(
            "signal",
            json!({"signal": sig.as_str(), "number": sig as i32, "forwarded_to_pgid": target.pid}),
        ));
    }
}

/// Writes the status report to stderr and as an event.
pub fn status_report(pid: u32, started: Instant, counters: &PipelineCounters, tx: &Sender<Msg>) {
    let uptime = started.elapsed().as_secs_f64();
    let lines = counters.lines.load(Ordering::Relaxed);
    let records = counters.records.load(Ordering::Relaxed);
    let spool = counters.spool_pending.load(Ordering::Relaxed);
    let mut resources = counters.resources.lock().map(|r| *r).unwrap_or_default();
    // Before the first sample (or with sampling off): the program alone.
    resources.rss_bytes = resources.rss_bytes.or_else(|| procinfo::rss_bytes(pid));
    let progress = counters
        .top_progress
        .lock()
        .map(|p| p.clone())
        .unwrap_or_default();
    let progress_text: Vec<String> = progress
        .iter()
        .map(pmon_core::record::ProgressUpdate::summary)
        .collect();
    eprintln!(
        "pmon-agent: status: uptime {uptime:.1}s, {} read, {} shipped, spool depth {spool}, child pid {pid} {}{}",
        pmon_core::text::plural(lines, "line", "lines"),
        pmon_core::text::plural(records, "record", "records"),
        resources.describe().unwrap_or_else(|| "rss unknown".into()),
        if progress_text.is_empty() { String::new() } else { format!(", progress: {}", progress_text.join("; ")) }
    );
    let _ = tx.send(Msg::Event(Event::now(
        "status_report",
        json!({"uptime_s": uptime, "lines_read": lines, "records_shipped": records, "spool_pending": spool, "child_pid": pid,
            "child_rss_bytes": resources.rss_bytes, "cpu_percent": resources.cpu_percent, "progress": progress}),
    )));
}

/// With `--pty`, what the user types goes to the program. A terminal is put in
/// raw mode so keys (Ctrl-C included) reach the program's own terminal; the
/// returned guard restores it.
fn forward_stdin(master: File) -> Option<RawTerminal> {
    use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin).ok();
    if let Some(saved) = &saved {
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &raw);
    }
    let mut master = master;
    let _ = std::thread::Builder::new()
        .name("pmon-stdin".into())
        .spawn(move || {
            let mut buf = [0u8; 4096];
            let mut input = std::io::stdin().lock();
            while let Ok(n) = input.read(&mut buf) {
                if n == 0 || master.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    saved.map(|saved| RawTerminal { saved })
}

struct RawTerminal {
    saved: nix::sys::termios::Termios,
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(
            std::io::stdin(),
            nix::sys::termios::SetArg::TCSANOW,
            &self.saved,
        );
    }
}
