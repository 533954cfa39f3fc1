//! Notifications: someone is told, within seconds, that a run failed, crashed,
//! was lost or killed for memory, that a daemon gave up restarting, or that
//! an error never seen before appeared — with the one line they want first
//! ("train (run 3) crashed after 5h12m: killed by SIGKILL (likely out of
//! memory: 61.3 of 64 GiB)").
//!
//! A notification is a JSON object ([`Notification`]) sent to a `webhook`
//! (POST, Slack-compatible `text` field) and/or given to a `command` on its
//! stdin with `PMON_*` variables. The process that knows what happened (the
//! shipper of a run, a daemon's supervisor) hands it to a detached
//! `pmon-agent notify-send` process ([`send_detached`]) and goes on: a
//! webhook that hangs or is down never delays the program, the run's end or
//! its exit code. What cannot be sent is a warning (in `notify.log` in the
//! data dir) and a `notify_failed` event of the run; what was sent, a
//! `notify` event.

mod deliver;
mod groups;
mod verdict;

pub use deliver::deliver;
pub use groups::NewGroupWatch;
pub use verdict::{lost, new_error_group, restart_gave_up, run_end, RunEnd, RunFacts};

use pmon_core::config::NotifyConfig;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::process::{Command, Stdio};

/// What happened, as `notify.on` names it.

/// One notification: what the webhook receives and the command reads on stdin.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// What happened (`crashed`, `oom`, `new_error_group`…).
    pub event: String,
    /// The one-line verdict; `text` so that a Slack incoming webhook shows it.
    pub text: String,
    pub experiment_id: String,
    pub run_id: Option<String>,
    /// The run's ordinal (`--run N`).
    pub run: Option<i64>,
    pub daemon: Option<String>,
    pub state: Option<String>,
    pub exit_code: Option<i32>,
    /// The signal's name (`SIGKILL`).
    pub signal: Option<String>,
    pub exception_type: Option<String>,
    pub exception_message: Option<String>,
    /// Where the program failed: `train.py:88 in step`.
    pub location: Option<String>,
    pub error_group: Option<String>,
    /// The error is the first of its group in the experiment (a
    /// `new_error_group` event, or a run that died of a new error).
    pub new_error_group: bool,
    /// The out-of-memory verdict, when the kernel's OOM killer likely struck.
    pub oom: Option<String>,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub duration_s: Option<f64>,
    pub host: String,
    pub timestamp: String,
}

/// Where notifications that could not be sent are told of, in the data dir.
pub const NOTIFY_LOG: &str = "notify.log";

/// What `notify-send` reads on stdin: where to send, and what.
#[derive(Debug, Serialize, Deserialize)]
pub struct Parcel {
    pub webhook: Option<String>,
    pub command: Option<String>,
    pub timeout_ms: u64,
    pub retries: u32,
    pub notification: Notification,
}

/// Hands the notification to a detached `pmon-agent notify-send` and
/// returns at once; false (and a warning) if that process cannot start.
/// It finds the same data dir, configuration and store as `app` (for its
/// `notify` / `notify_failed` event).
pub fn send_detached(app: &crate::app::App, config: &NotifyConfig, n: Notification) -> bool {
    let parcel = Parcel {
        webhook: config.webhook.clone(),
        command: config.command.clone(),
        timeout_ms: config.timeout.as_millis() as u64,
        retries: config.retries,
        notification: n,
    };
    let exe = std::env::current_exe().unwrap_or_else(|_| "pmon-agent".into());
    let mut cmd = Command::new(exe);
    cmd.arg("--data-dir").arg(app.data_dir.root());
    if let Some(config) = &app.config_path {
        cmd.arg("--config").arg(config);
    }
    match &app.config.logging.database.url {
        // Not on the command line, where `ps` would show its password.
        Some(url) => cmd.env("PMON_DATABASE_URL", url),
        None => cmd.env_remove("PMON_DATABASE_URL"),
    };
    // Its warnings go to notify.log in the data dir, never to the program's
    // terminal or pipe: `wrap … 2>&1 | tee` must not wait for a webhook.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(app.data_dir.root().join(NOTIFY_LOG))
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null());
    cmd.arg("--quiet-config")
        .arg("notify-send")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(log);
    // A session of its own: a hangup or Ctrl-C of the terminal is not for it.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            let _ = nix::unistd::setsid();
            Ok(())
        });
    }
    tracing::info!(target: "notify", event = %parcel.notification.event, experiment = %parcel.notification.experiment_id, "handing a notification to the notifier");
    let started = cmd.spawn().and_then(|mut child| {
        let body = serde_json::to_vec(&parcel).unwrap_or_default();
        let written = child.stdin.take().map(|mut stdin| stdin.write_all(&body));
        // Reaped by a thread: the caller may live on (a daemon's supervisor).
        std::thread::spawn(move || child.wait());
        written.unwrap_or(Ok(()))
    });
    match started {
        Ok(()) => true,
        Err(e) => {
            eprintln!(
                "pmon-agent: warning: could not start the notifier ({e}); the '{}' notification of experiment '{}' was not sent",
                parcel.notification.event, parcel.notification.experiment_id
            );
            false
        }
    }
}
