//! The notifications themselves: what happened, and the one line a person
//! wants first, built from what the shipper or supervisor knows.

use super::Notification;
use chrono::{DateTime, Utc};
use pmon_core::options::NotifyOn;
use pmon_core::parse::fingerprint;
use pmon_core::record::{format_ts, parse_ts, LogRecord};
use pmon_core::run::RunState;
use pmon_core::text::signal_name;

/// The run a notification is about.
#[derive(Debug, Clone)]
pub struct RunFacts {
    pub experiment_id: String,
    pub run_id: String,
    pub ordinal: Option<i64>,
    /// The daemon the run belongs to.
    pub daemon: Option<String>,
    pub started_at: String,
}

impl RunFacts {
    /// `train (run 3)`, or `daemon web (run 3)`.
    fn label(&self) -> String {
        let name = match &self.daemon {
            Some(name) => format!("daemon {name}"),
            None => self.experiment_id.clone(),
        };
        match self.ordinal {
            Some(n) => format!("{name} (run {n})"),
            None => name,
        }
    }

    fn notification(&self, event: NotifyOn, now: DateTime<Utc>) -> Notification {
        Notification {
            event: event.as_str().into(),
            experiment_id: self.experiment_id.clone(),
            run_id: Some(self.run_id.clone()),
            run: self.ordinal,
            daemon: self.daemon.clone(),
            started_at: Some(self.started_at.clone()),
            duration_s: parse_ts(&self.started_at)
                .map(|start| (now - start).num_milliseconds().max(0) as f64 / 1000.0),
            host: pmon_core::procinfo::hostname(),
            timestamp: format_ts(&now),
            ..Notification::default()
        }
    }

    fn ran_for(&self, now: DateTime<Utc>) -> String {
        parse_ts(&self.started_at)
            .and_then(|start| (now - start).to_std().ok())
            .map(|d| {
                format!(
                    " after {}",
                    pmon_core::text::humanize_duration(std::time::Duration::from_secs(d.as_secs()))
                )
            })
            .unwrap_or_default()
    }
}

/// How a run ended, as the shipper knows it.
pub struct RunEnd<'a> {
    pub state: RunState,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// The out-of-memory verdict (`killed by SIGKILL (likely out of memory: …)`).
    pub oom: Option<&'a str>,
    /// The last ERROR or CRITICAL record the program printed.
    pub last_error: Option<&'a LogRecord>,
    /// That error's group is new to the experiment.
    pub new_error: bool,
}

/// The notification for a run's end, if its state is worth one and
/// `wants` says so: `oom` rather than `crashed` when the OOM killer struck.
pub fn run_end(
    facts: &RunFacts,
    end: &RunEnd<'_>,
    wants: impl Fn(NotifyOn) -> bool,
    now: DateTime<Utc>,
) -> Option<Notification> {
    let event = match end.state {
        RunState::Crashed if end.oom.is_some() && wants(NotifyOn::Oom) => NotifyOn::Oom,
        RunState::Crashed => NotifyOn::Crashed,
        RunState::Failed => NotifyOn::Failed,
        _ => return None,
    };
    if !wants(event) {
        return None;
    }
    let mut n = facts.notification(event, now);
    n.state = Some(end.state.as_str().into());
    n.exit_code = end.exit_code;
    n.signal = end.signal.map(signal_name);
    n.oom = end.oom.map(str::to_string);
    n.ended_at = Some(format_ts(&now));
    describe_error(&mut n, end.last_error);
    n.new_error_group = end.new_error;
    n.text = format!(
        "{} {}{}: {}{}",
        facts.label(),
        end.state.as_str(),
        facts.ran_for(now),
        run_end_text(end),
        if end.new_error { " (a new error)" } else { "" }
    );
    Some(n)
}

/// Why the run ended, in words: the OOM verdict, the signal, the last error
/// and where it was raised, the exit code.
pub fn run_end_text(end: &RunEnd<'_>) -> String {
    let crash = end.last_error.and_then(|r| {
        pmon_core::parse::fault::crash_words(
            r.exception_type.as_deref(),
            r.exception_message.as_deref(),
            &r.message,
        )
    });
    if let (Some(sig), Some(crash)) = (end.signal, crash) {
        if crash.starts_with(&format!("{} ", signal_name(sig))) {
            return format!("killed by {crash}");
        }
    }
    let error = end.last_error.map(error_words);
    match (end.oom, end.signal, error) {
        (Some(oom), _, _) => oom.to_string(),
        (None, Some(sig), Some(error)) => {
            format!("killed by {}; last error: {error}", signal_name(sig))
        }
        (None, Some(sig), None) => format!("killed by {}", signal_name(sig)),
        (None, None, Some(error)) => match end.exit_code {
            Some(code) => format!("{error} (exit code {code})"),
            None => error,
        },
        (None, None, None) => match end.exit_code {
            Some(code) => format!("exit code {code}"),
            None => "it could not be started".into(),
        },
    }
}

/// The run's agent died: its output is no longer recorded.
pub fn lost(facts: &RunFacts, now: DateTime<Utc>) -> Notification {
    let mut n = facts.notification(NotifyOn::Lost, now);
    n.state = Some("lost".into());
    n.text = format!(
        "{} lost{}: the pmon-agent process holding it died; the program may still run, unrecorded",
        facts.label(),
        facts.ran_for(now)
    );
    n
}

/// A daemon's supervisor stopped restarting it.
pub fn restart_gave_up(
    facts: &RunFacts,
    reason: &str,
    last: Option<&str>,
    now: DateTime<Utc>,
) -> Notification {
    let mut n = facts.notification(NotifyOn::RestartGaveUp, now);
    n.state = Some("failed".into());
    let name = facts.daemon.as_deref().unwrap_or(&facts.experiment_id);
    n.text = match last {
        Some(last) => format!("daemon {name} {reason}; its last run: {last}"),
        None => format!("daemon {name} {reason}"),
    };
    n
}

/// An error whose group the experiment's earlier runs never had.
pub fn new_error_group(
    facts: &RunFacts,
    record: &LogRecord,
    group: &str,
    now: DateTime<Utc>,
) -> Notification {
    let mut n = facts.notification(NotifyOn::NewErrorGroup, now);
    n.state = Some("running".into());
    n.error_group = Some(group.to_string());
    n.new_error_group = true;
    describe_error(&mut n, Some(record));
    n.text = format!("{}: new error: {}", facts.label(), error_words(record));
    n
}

fn describe_error(n: &mut Notification, record: Option<&LogRecord>) {
    let Some(record) = record else {
        return;
    };
    n.exception_type = record.exception_type.clone();
    n.exception_message = Some(
        record
            .exception_message
            .clone()
            .unwrap_or_else(|| record.message.clone()),
    );
    n.location = site(record).map(|f| format!("{}:{} in {}", f.file, f.line, f.function));
    n.error_group = n
        .error_group
        .take()
        .or_else(|| fingerprint::error_group(record));
}

/// `ValueError: loss is nan at train.py:88`, or the message of a plain ERROR line.
fn error_words(record: &LogRecord) -> String {
    let first_line = |s: &str| s.lines().next().unwrap_or("").to_string();
    let what = match (&record.exception_type, &record.exception_message) {
        (Some(t), Some(m)) if !m.is_empty() => format!("{t}: {}", first_line(m)),
        (Some(t), _) => t.clone(),
        _ => first_line(&record.message),
    };
    match site(record) {
        Some(frame) => format!("{what} at {}:{}", short_file(&frame.file), frame.line),
        None => what,
    }
}

fn site(record: &LogRecord) -> Option<fingerprint::Frame> {
    record
        .traceback
        .as_deref()
        .and_then(fingerprint::failure_site)
}

/// `train.py` of `/home/u/proj/train.py`: the line is for a glance.
fn short_file(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pmon_core::record::{Level, StreamKind};

    fn facts() -> RunFacts {
        RunFacts {
            experiment_id: "train".into(),
            run_id: "01JRUN".into(),
            ordinal: Some(3),
            daemon: None,
            started_at: "2026-12-01T00:00:00.000000Z".into(),
        }
    }

    fn at(text: &str) -> DateTime<Utc> {
        parse_ts(text).unwrap()
    }

    fn value_error() -> LogRecord {
        let mut r = LogRecord::plain(
            "Traceback (most recent call last):".into(),
            StreamKind::Stderr,
            "stderr",
        );
        r.level = Level::Error;
        r.traceback = Some("Traceback (most recent call last):\n  File \"/home/u/proj/train.py\", line 88, in step\n    raise ValueError(\"loss is nan\")\nValueError: loss is nan\n".into());
        r.exception_type = Some("ValueError".into());
        r.exception_message = Some("loss is nan".into());
        r
    }

    #[test]
    fn a_failed_run_names_its_exception_and_where() {
        let record = value_error();
        let end = RunEnd {
            state: RunState::Failed,
            exit_code: Some(1),
            signal: None,
            oom: None,
            last_error: Some(&record),
            new_error: false,
        };
        let n = run_end(&facts(), &end, |_| true, at("2026-12-01T05:12:30Z")).unwrap();
        assert_eq!(n.event, "failed");
        assert_eq!(
            n.text,
            "train (run 3) failed after 5h 12m: ValueError: loss is nan at train.py:88 (exit code 1)"
        );
        assert_eq!(n.exception_type.as_deref(), Some("ValueError"));
        assert_eq!(
            n.location.as_deref(),
            Some("/home/u/proj/train.py:88 in step")
        );
        assert_eq!(n.duration_s, Some(18750.0));
    }

    #[test]
    fn an_oom_kill_is_an_oom_notification_when_wanted() {
        let oom = "killed by SIGKILL (likely out of memory: last memory sample 61.3 GiB)";
        let end = RunEnd {
            state: RunState::Crashed,
            exit_code: None,
            signal: Some(9),
            oom: Some(oom),
            last_error: None,
            new_error: false,
        };
        let n = run_end(&facts(), &end, |_| true, at("2026-12-01T00:00:09Z")).unwrap();
        assert_eq!(n.event, "oom");
        assert_eq!(n.signal.as_deref(), Some("SIGKILL"));
        assert!(
            n.text.ends_with(&format!("crashed after 9s: {oom}")),
            "{}",
            n.text
        );
        let crashed = run_end(
            &facts(),
            &end,
            |on| on != NotifyOn::Oom,
            at("2026-12-01T00:00:09Z"),
        )
        .unwrap();
        assert_eq!(crashed.event, "crashed");
        assert!(run_end(&facts(), &end, |_| false, at("2026-12-01T00:00:09Z")).is_none());
    }

    #[test]
    fn a_run_that_succeeded_or_was_stopped_notifies_nothing() {
        for state in [RunState::Succeeded, RunState::Stopped] {
            let end = RunEnd {
                state,
                exit_code: Some(0),
                signal: None,
                oom: None,
                last_error: None,
                new_error: false,
            };
            assert!(run_end(&facts(), &end, |_| true, Utc::now()).is_none());
        }
    }
}
