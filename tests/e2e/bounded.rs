//! Processes a test starts, and how long it may wait for them.
//!
//! Every process a test starts is made here ([`command`]) and every wait on
//! one is bounded: a watchdog kills the process, and everything it started,
//! once it has run for [`PATIENCE`], and the wait then fails saying what it
//! waited for. Nothing a test starts can hang the suite, and nothing
//! outlives the test that started it.
//!
//! "Everything it started" is found by an environment variable each command
//! carries ([`OWNER`]): the agent passes its environment on to the programs,
//! shippers and daemon supervisors it starts, and so do tmux servers and
//! PostgreSQL, so a daemon that double-forked away from the test's process
//! tree still carries its owner's name.
//!
//! Each process also starts with every signal at its default disposition
//! and none blocked, as from an interactive shell. A script's background
//! job (`scripts/test &` in a non-interactive shell) runs with SIGINT and
//! SIGQUIT ignored, which every child would inherit: a test that ends a
//! follower with SIGINT, as Ctrl-C would, would then wait for ever.
//!
//! Shared by the e2e tests and the library's unit tests (`#[path]`), so it
//! uses only the standard library and libc.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// The longest any one wait of a test may last: long enough for a debug
/// build on a machine whose two cores are busy, short enough that a hang is
/// a failure within minutes rather than a suite that never ends.
pub const PATIENCE: Duration = Duration::from_secs(180);

/// The variable that names which test object started a process.
pub const OWNER: &str = "PMON_TEST_OWNER";

/// A name no other owner in any test process has.
pub fn new_owner() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

/// A command for a test to run: its own owner, stdin from /dev/null, and
/// default signal dispositions. Run it with [`Bounded`].
pub fn command(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    cmd.env(OWNER, new_owner()).stdin(Stdio::null());
    // SAFETY: only async-signal-safe calls (signal, sigprocmask) run
    // between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            default_signals();
            Ok(())
        });
    }
    cmd
}

/// Every catchable signal back to its default action, none blocked.
fn default_signals() {
    // SAFETY: signal and sigprocmask are async-signal-safe; SIGKILL and
    // SIGSTOP are refused, which is harmless.
    unsafe {
        for sig in 1..32 {
            libc::signal(sig, libc::SIG_DFL);
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
}

/// The owner a command carries.
fn owner_of(cmd: &Command) -> String {
    cmd.get_envs()
        .find(|(k, _)| *k == OWNER)
        .and_then(|(_, v)| v)
        .map(|v| v.to_string_lossy().into_owned())
        .expect("a test command made by bounded::command or Agent::cmd")
}

/// Running a command with a bound on every wait.
pub trait Bounded {
    /// Like `output()`: runs to the end, stdout and stderr captured.
    fn run_within(&mut self, what: &str) -> Output;
    /// Like `status()`: runs to the end, output not captured.
    fn status_within(&mut self, what: &str) -> ExitStatus;
    /// Like `spawn()`: a [`Running`] whose waits end at [`PATIENCE`].
    fn start(&mut self, what: &str) -> Running;
}

impl Bounded for Command {
    fn run_within(&mut self, what: &str) -> Output {
        self.stdout(Stdio::piped()).stderr(Stdio::piped());
        self.start(what)
            .wait_with_output()
            .unwrap_or_else(|e| panic!("waiting for {what}: {e}"))
    }

    fn status_within(&mut self, what: &str) -> ExitStatus {
        self.start(what)
            .wait()
            .unwrap_or_else(|e| panic!("waiting for {what}: {e}"))
    }

    fn start(&mut self, what: &str) -> Running {
        let owner = owner_of(self);
        let child = self
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {what} ({:?}): {e}", self.get_program()));
        Running {
            watchdog: Watchdog::start(owner.clone(), what.to_string(), PATIENCE),
            child: Some(child),
            what: what.to_string(),
            owner,
        }
    }
}

/// A process a test started. Its waits end at [`PATIENCE`] (the watchdog
/// kills it and fails the wait); dropped before it was waited for (a failed
/// assertion), it is killed with everything it started.
pub struct Running {
    child: Option<Child>,
    what: String,
    owner: String,
    watchdog: Watchdog,
}

impl Running {
    /// What the test said this process is.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// Waits for it to end (at most until the watchdog's deadline, which
    /// fails the test).
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        let child = self.child.as_mut().expect("a process not yet waited for");
        let status = child.wait()?;
        self.child = None;
        self.watchdog.finish(&self.what);
        Ok(status)
    }

    /// Waits for it to end and collects what it printed on the pipes the
    /// test made (within the deadline, as [`Running::wait`]).
    pub fn wait_with_output(mut self) -> io::Result<Output> {
        let child = self.child.take().expect("waited once");
        let output = child.wait_with_output()?;
        self.watchdog.finish(&self.what);
        Ok(output)
    }
}

/// Everything else a `Child` offers (its pid, pipes, `kill`, `try_wait`).
impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.child.as_ref().expect("a process not yet waited for")
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("a process not yet waited for")
    }
}

impl Drop for Running {
    /// Not waited for: a test that failed kills it and everything it
    /// started; one that let it go ends it as `kill` would (SIGTERM, which
    /// the agent forwards to its program) and waits, within the deadline.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if std::thread::panicking() {
                kill_owned(&self.owner);
                let _ = child.kill();
            } else {
                // SAFETY: kill(2) on a child this test has not reaped.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            }
            let _ = child.wait();
        }
        self.watchdog.cancel();
    }
}

/// Kills the processes that carry `owner` once [`PATIENCE`] has passed,
/// unless cancelled first; says so, so the failure names what hung.
struct Watchdog {
    cancel: Option<mpsc::Sender<()>>,
    fired: Arc<AtomicBool>,
    limit: Duration,
}

impl Watchdog {
    fn start(owner: String, what: String, limit: Duration) -> Watchdog {
        let (cancel, cancelled) = mpsc::channel::<()>();
        let fired = Arc::new(AtomicBool::new(false));
        let flag = fired.clone();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = cancelled.recv_timeout(limit) {
                flag.store(true, Ordering::SeqCst);
                eprintln!(
                    "test harness: {what} still runs after {}s: killing it and everything it started",
                    limit.as_secs()
                );
                kill_owned(&owner);
            }
        });
        Watchdog {
            cancel: Some(cancel),
            fired,
            limit,
        }
    }

    /// The wait is over: fails it if the watchdog had to end it.
    fn finish(&mut self, what: &str) {
        self.cancel();
        assert!(
            !self.fired.load(Ordering::SeqCst),
            "gave up waiting for {what}: it still ran after {}s, so it was killed",
            self.limit.as_secs()
        );
    }

    fn cancel(&mut self) {
        if let Some(cancel) = self.cancel.take() {
            let _ = cancel.send(());
        }
    }
}

/// Kills (SIGKILL) every process that carries `owner`, until none is left:
/// a process forking as it is killed is caught by the next round.
pub fn kill_owned(owner: &str) {
    for _ in 0..50 {
        let found = owned_by(owner);
        if found.is_empty() {
            return;
        }
        for pid in found {
            // SAFETY: kill(2); a pid that has just exited is harmless.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The live processes (not zombies) that carry `owner`, this one excluded.
pub fn owned_by(owner: &str) -> Vec<u32> {
    let needle = format!("{OWNER}={owner}");
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == needle.as_bytes()))
        })
        .filter(|pid| !is_zombie(*pid))
        .collect()
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rfind(')')
            .is_some_and(|end| stat[end + 1..].trim_start().starts_with('Z'))
    })
}
