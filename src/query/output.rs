//! How query results reach the terminal or a script.
//!
//! Stored data is whatever the wrapped programs printed, so text output must
//! never hand raw control characters to a terminal (an ESC can recolour or
//! retitle it, a CR can hide a line, a BEL rings): they are rendered as
//! visible escapes instead. JSON output needs no such care because
//! `serde_json` escapes control characters itself.
//!
//! A reader that goes away early (`| head`) is not an error: writing stops
//! quietly, as `cat` and `journalctl` do.

use crate::run::RunState;
use chrono::{DateTime, Local, Utc};
use serde::Serialize;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::time::Duration;

/// Makes stored text safe to print on one terminal line: control characters
/// (C0, DEL, C1), line and paragraph separators and bidirectional overrides
/// become visible escapes (`\x1b`, `\r`, `\n`, `\u{202e}`). A tab stays a tab.
pub fn escape_text(text: &str) -> String {
    if !text.chars().any(needs_escape) {
        return text.to_string();
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if needs_escape(c) {
            push_escape(&mut escaped, c);
        } else {
            escaped.push(c);
        }
    }
    escaped
}

/// Characters a terminal would act on instead of showing, or that would break
/// one record's line into several or reorder what the reader sees.
fn needs_escape(c: char) -> bool {
    if c == '\t' {
        return false;
    }
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}')
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn push_escape(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        c if (c as u32) < 0x80 => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
}

/// The first line of a possibly multi-line text (exception messages span
/// lines; summaries show only the first).
pub fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

/// A stored RFC 3339 timestamp in the reader's local time,
/// `2026-11-27 10:00:00.123` (with millis) or `2026-11-27 10:00:00`.
/// A timestamp that does not parse is shown as stored (escaped) rather than
/// hidden, so nothing silently disappears from the output.
pub fn local_time(stored: &str, with_millis: bool) -> String {
    match crate::record::parse_ts(stored) {
        Some(ts) => {
            let local: DateTime<Local> = ts.with_timezone(&Local);
            let pattern = if with_millis {
                "%Y-%m-%d %H:%M:%S%.3f"
            } else {
                "%Y-%m-%d %H:%M:%S"
            };
            local.format(pattern).to_string()
        }
        None => escape_text(stored),
    }
}

/// A duration as people read it: `45s`, `2m 13s`, `3h 05m`, `2d 4h`.
/// Two units are enough to tell a stuck run from a progressing one.
pub fn humanize_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    let (days, hours, minutes, seconds) = (
        secs / 86_400,
        secs % 86_400 / 3_600,
        secs % 3_600 / 60,
        secs % 60,
    );
    if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {minutes:02}m")
    } else if minutes > 0 {
        format!("{minutes}m {seconds:02}s")
    } else {
        format!("{seconds}s")
    }
}

/// Writes one JSON Lines record: the object on one line, then `\n`.
pub fn write_json_line<T: Serialize>(out: &mut dyn Write, value: &T) -> anyhow::Result<()> {
    serde_json::to_writer(&mut *out, value).map_err(json_to_io_error)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Keeps an I/O failure (a closed pipe above all) recognisable as such after
/// `serde_json` wrapped it, so [`is_broken_pipe`] still sees it.
fn json_to_io_error(err: serde_json::Error) -> io::Error {
    if err.is_io() {
        if let Some(kind) = err.io_error_kind() {
            return io::Error::new(kind, err);
        }
    }
    io::Error::new(io::ErrorKind::InvalidData, err)
}

/// Runs `write_all` against a buffered standard output and flushes it.
/// A reader that closed the pipe is an error the caller passes up (`?`):
/// the command stops there, says nothing more, and exits 0 (`finish`).
pub fn to_stdout(
    write_all: impl FnOnce(&mut dyn Write) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    write_all(&mut out).and_then(|()| out.flush().map_err(anyhow::Error::from))
}

/// True once nobody reads standard output any more: the reader of a pipe has
/// exited (`| head`). A follow loop that prints nothing for hours would
/// otherwise only notice at its next write; this lets it stop at once, as
/// `journalctl -f` does. Terminals and files never report this.
pub fn stdout_reader_gone() -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let stdout = io::stdout();
    let mut fds = [PollFd::new(stdout.as_fd(), PollFlags::empty())];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(ready) if ready > 0 => fds[0].revents().is_some_and(|events| {
            events.intersects(PollFlags::POLLERR | PollFlags::POLLHUP | PollFlags::POLLNVAL)
        }),
        _ => false,
    }
}

/// True if the error, or anything it wraps, is a write to a closed pipe.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// How long a run took, or has taken so far while it is live. `None` when
/// that cannot be known: a lost run never recorded its end. A clock that went
/// backwards gives zero, not an error.
pub fn run_duration(
    state: RunState,
    started_at: &str,
    ended_at: Option<&str>,
    now: DateTime<Utc>,
) -> Option<Duration> {
    let started = crate::record::parse_ts(started_at)?;
    let end = match ended_at {
        Some(ended) => crate::record::parse_ts(ended)?,
        None if state.is_live() => now,
        None => return None,
    };
    Some((end - started).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_become_visible_escapes() {
        assert_eq!(escape_text("\x1b[31mred\x1b[0m"), "\\x1b[31mred\\x1b[0m");
        assert_eq!(
            escape_text("a\rb\nc\x07d\x00e\x7f"),
            "a\\rb\\nc\\x07d\\x00e\\x7f"
        );
        assert_eq!(escape_text("csi\u{9b}2J"), "csi\\u{9b}2J");
        assert_eq!(escape_text("rtl\u{202e}txt"), "rtl\\u{202e}txt");
    }

    #[test]
    fn ordinary_text_and_tabs_pass_unchanged() {
        assert_eq!(escape_text("col1\tcol2 ünïcode ✓"), "col1\tcol2 ünïcode ✓");
        assert_eq!(escape_text("C:\\path"), "C:\\path");
    }

    #[test]
    fn durations_read_like_a_person_wrote_them() {
        assert_eq!(humanize_duration(Duration::from_secs(0)), "0s");
        assert_eq!(humanize_duration(Duration::from_secs(45)), "45s");
        assert_eq!(humanize_duration(Duration::from_secs(133)), "2m 13s");
        assert_eq!(
            humanize_duration(Duration::from_secs(3 * 3600 + 5 * 60 + 9)),
            "3h 05m"
        );
        assert_eq!(
            humanize_duration(Duration::from_secs(2 * 86_400 + 4 * 3600)),
            "2d 4h"
        );
    }

    #[test]
    fn unparsable_timestamps_are_shown_escaped() {
        assert_eq!(local_time("not\x1b a time", true), "not\\x1b a time");
        let shown = local_time("2026-11-27T10:00:00.123000Z", true);
        assert!(shown.ends_with(":00.123"), "{shown}");
        assert_eq!(local_time("2026-11-27T10:00:00.123000Z", false).len(), 19);
    }

    #[test]
    fn json_lines_are_one_object_per_line() {
        let mut out = Vec::new();
        write_json_line(&mut out, &serde_json::json!({"m": "a\nb\x1b"})).unwrap();
        write_json_line(&mut out, &serde_json::json!({"m": 2})).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, "{\"m\":\"a\\nb\\u001b\"}\n{\"m\":2}\n");
    }

    #[test]
    fn a_closed_pipe_is_recognised_through_context() {
        let err = anyhow::Error::from(io::Error::from(io::ErrorKind::BrokenPipe))
            .context("printing logs");
        assert!(is_broken_pipe(&err));
        let json_err = json_to_io_error(serde_json::Error::io(io::Error::from(
            io::ErrorKind::BrokenPipe,
        )));
        assert!(is_broken_pipe(&anyhow::Error::from(json_err)));
        assert!(!is_broken_pipe(&anyhow::anyhow!("other")));
    }

    #[test]
    fn durations_of_ended_live_and_lost_runs() {
        let now = crate::record::parse_ts("2026-11-27T10:05:00Z").expect("time");
        let start = "2026-11-27T10:00:00.000000Z";
        let ended = Some("2026-11-27T10:02:13.000000Z");
        assert_eq!(
            run_duration(RunState::Failed, start, ended, now),
            Some(Duration::from_secs(133))
        );
        assert_eq!(
            run_duration(RunState::Running, start, None, now),
            Some(Duration::from_secs(300))
        );
        assert_eq!(run_duration(RunState::Lost, start, None, now), None);
        let before_start = crate::record::parse_ts("2026-11-27T09:00:00Z").expect("time");
        assert_eq!(
            run_duration(RunState::Running, start, None, before_start),
            Some(Duration::ZERO)
        );
    }
}
