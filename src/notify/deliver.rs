//! `pmon-agent notify-send`: the detached process that sends one
//! notification — a POST to the webhook with retries and backoff, a run of
//! the command — and records whether it went out.

use super::{Notification, Parcel};
use crate::app::App;
use pmon_core::config::redact_webhook;
use pmon_core::record::Event;
use pmon_store::RunContext;
use serde_json::json;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Sends the parcel to its webhook and command; each failure is a warning
/// on stderr and a `notify_failed` event of the run, each success a
/// `notify` event. Returns the exit code: 0 if everything was sent.
pub fn deliver(app: Option<&App>, parcel: &Parcel) -> i32 {
    let timeout = Duration::from_millis(parcel.timeout_ms.max(1));
    let n = &parcel.notification;
    let mut failed = false;
    let mut outcomes = Vec::new();
    if let Some(url) = &parcel.webhook {
        let result = post(url, n, timeout, parcel.retries);
        outcomes.push(("webhook", redact_webhook(url), result));
    }
    if let Some(command) = &parcel.command {
        let result = run_command(command, n, timeout);
        outcomes.push(("command", command.clone(), result));
    }
    for (kind, to, result) in outcomes {
        tracing::info!(target: "notify", notification = %n.event, to = kind, target_ = %to, ok = result.is_ok(), "notification");
        let event = match result {
            Ok(()) => Event::now(
                "notify",
                json!({"event": n.event, "to": kind, "target": to}),
            ),
            Err(reason) => {
                failed = true;
                eprintln!(
                    "pmon-agent: warning: the '{}' notification of experiment '{}' could not be sent to the {kind} {to}: {reason}; check notify.{kind} in the configuration",
                    n.event, n.experiment_id
                );
                Event::now(
                    "notify_failed",
                    json!({"event": n.event, "to": kind, "target": to, "reason": reason}),
                )
            }
        };
        if let Some(app) = app {
            record(app, n, event);
        }
    }
    i32::from(failed)
}

/// The event goes to the run's store.
fn record(app: &App, n: &Notification, event: Event) {
    if let Some(run_id) = n.run_id.clone() {
        let ctx = RunContext {
            experiment_id: n.experiment_id.clone(),
            run_id,
        };
        app.record_event(&ctx, event);
    }
}

/// POSTs the notification as JSON; a connection that fails, a timeout, a
/// 5xx or a 429 is tried again `retries` times, after 1s, 2s, 4s…
fn post(url: &str, n: &Notification, timeout: Duration, retries: u32) -> Result<(), String> {
    let tls = ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::NativeTls)
        .root_certs(ureq::tls::RootCerts::PlatformVerifier)
        .build();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(tls)
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .user_agent(concat!("pmon-agent/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let body = serde_json::to_vec(n).unwrap_or_default();
    let mut wait = Duration::from_secs(1);
    let mut attempt = 0;
    loop {
        let result = agent
            .post(url)
            .header("Content-Type", "application/json")
            .send(&body[..]);
        let (retry, reason) = match result {
            Ok(response) => {
                let status = response.status().as_u16();
                if (200..300).contains(&status) {
                    return Ok(());
                }
                (
                    status >= 500 || status == 429,
                    format!("it answered HTTP {status}"),
                )
            }
            Err(e) => (true, e.to_string()),
        };
        if !retry || attempt >= retries {
            let tries = attempt + 1;
            return Err(format!(
                "{reason} ({tries} {})",
                if tries == 1 { "try" } else { "tries" }
            ));
        }
        attempt += 1;
        std::thread::sleep(wait);
        wait = (wait * 2).min(Duration::from_secs(60));
    }
}

/// Runs `sh -c command` with the notification on stdin and in `PMON_*`
/// variables; it is killed if it takes longer than `timeout`.
fn run_command(command: &str, n: &Notification, timeout: Duration) -> Result<(), String> {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::null());
    for (name, value) in env_of(n) {
        cmd.env(name, value);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("could not start it: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let body = serde_json::to_vec(n).unwrap_or_default();
        // A command that does not read its stdin is fine.
        let _ = stdin.write_all(&body);
    }
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("it ended with {status}")),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "it took longer than notify.timeout ({}) and was killed",
                    humantime::format_duration(timeout)
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// The `PMON_*` variables a notification command sees; empty for what is unknown.
pub fn env_of(n: &Notification) -> Vec<(&'static str, String)> {
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    vec![
        ("PMON_EVENT", n.event.clone()),
        ("PMON_EXPERIMENT", n.experiment_id.clone()),
        ("PMON_RUN", n.run.map(|r| r.to_string()).unwrap_or_default()),
        ("PMON_RUN_ID", text(&n.run_id)),
        ("PMON_DAEMON", text(&n.daemon)),
        ("PMON_STATE", text(&n.state)),
        (
            "PMON_EXIT_CODE",
            n.exit_code.map(|c| c.to_string()).unwrap_or_default(),
        ),
        ("PMON_SIGNAL", text(&n.signal)),
        ("PMON_EXCEPTION_TYPE", text(&n.exception_type)),
        ("PMON_EXCEPTION_MESSAGE", text(&n.exception_message)),
        ("PMON_ERROR_GROUP", text(&n.error_group)),
        ("PMON_HOST", n.host.clone()),
        ("PMON_TEXT", n.text.clone()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parcel(command: &str) -> Parcel {
        Parcel {
            webhook: None,
            command: Some(command.into()),
            timeout_ms: 10_000,
            retries: 0,
            notification: Notification {
                event: "crashed".into(),
                experiment_id: "train".into(),
                run: Some(2),
                signal: Some("SIGSEGV".into()),
                text: "train (run 2) crashed".into(),
                ..Notification::default()
            },
        }
    }

    #[test]
    fn the_command_sees_the_variables_and_the_json() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("seen");
        let command = format!(
            "{{ echo \"$PMON_EVENT|$PMON_EXPERIMENT|$PMON_RUN|$PMON_SIGNAL|$PMON_EXIT_CODE\"; cat; }} > {}",
            out.display()
        );
        assert_eq!(deliver(None, &parcel(&command)), 0);
        let seen = std::fs::read_to_string(&out).unwrap();
        let (vars, json) = seen.split_once('\n').unwrap();
        assert_eq!(vars, "crashed|train|2|SIGSEGV|");
        let n: Notification = serde_json::from_str(json).unwrap();
        assert_eq!(n.text, "train (run 2) crashed");
    }

    #[test]
    fn a_failing_or_hanging_command_is_a_failure_not_a_hang() {
        assert_eq!(deliver(None, &parcel("exit 3")), 1);
        let mut slow = parcel("sleep 30");
        slow.timeout_ms = 200;
        assert_eq!(deliver(None, &slow), 1);
    }

    #[test]
    fn an_unreachable_webhook_fails_after_its_retries() {
        // A port nothing listens on: connection refused at once.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let err = post(
            &format!("http://127.0.0.1:{port}/hook"),
            &Notification::default(),
            Duration::from_secs(2),
            0,
        )
        .unwrap_err();
        assert!(err.ends_with("(1 try)"), "{err}");
    }
}
