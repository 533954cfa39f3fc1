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

use chrono::{DateTime, Local, Utc};
use pmon_core::run::RunState;
use serde::Serialize;
use std::io::{self, Write};
use std::time::Duration;

/// A stored RFC 3339 timestamp in the reader's local time,
/// `2026-11-27 10:00:00.123` (with millis) or `2026-11-27 10:00:00`.
/// A timestamp that does not parse is shown as stored (escaped) rather than
/// hidden, so nothing silently disappears from the output.
pub fn local_time(stored: &str, with_millis: bool) -> String {
    match pmon_core::record::parse_ts(stored) {
        Some(ts) => {
            let local: DateTime<Local> = ts.with_timezone(&Local);
            let pattern = if with_millis {
                "%Y-%m-%d %H:%M:%S%.3f"
            } else {
                "%Y-%m-%d %H:%M:%S"
            };
            local.format(pattern).to_string()
        }
        None => pmon_core::text::escape_text(stored),
    }
}

/// `print!` on standard output that returns the error instead of
/// panicking: a reader that went away (`| head`) ends the command quietly
/// (see `finish` in lib.rs), where `print!` would panic.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout().lock(), $($arg)*)
    }};
}

/// `println!` that returns the error instead of panicking (see [`out!`]).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

pub(crate) use {out, outln};

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
    let started = pmon_core::record::parse_ts(started_at)?;
    let end = match ended_at {
        Some(ended) => pmon_core::record::parse_ts(ended)?,
        None if state.is_live() => now,
        None => return None,
    };
    Some((end - started).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let now = pmon_core::record::parse_ts("2026-11-27T10:05:00Z").expect("time");
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
        let before_start = pmon_core::record::parse_ts("2026-11-27T09:00:00Z").expect("time");
        assert_eq!(
            run_duration(RunState::Running, start, None, before_start),
            Some(Duration::ZERO)
        );
    }
}
