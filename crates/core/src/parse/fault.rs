//! Python's fatal-error dumps (`faulthandler`): what a program that dies in
//! C code — a segfault in an extension, an `abort()` — prints instead of a
//! traceback, when `PYTHONFAULTHANDLER` is set (wrap and daemons set it):
//!
//! ```text
//! Fatal Python error: Segmentation fault
//!
//! Thread 0x00007f88fabdb6c0 (most recent call first):
//!   File "/srv/app/seg.py", line 5 in sleeper
//!   File "/usr/lib/python3.11/threading.py", line 982 in run
//!
//! Current thread 0x00007f88fba4bb80 (most recent call first):
//!   File "/usr/lib/python3.11/ctypes/__init__.py", line 519 in string_at
//!   File "/srv/app/seg.py", line 9 in crash
//!   File "/srv/app/seg.py", line 13 in <module>
//!
//! Extension modules: numpy.core._multiarray_umath, … (total: 12)
//! ```
//!
//! The whole dump becomes one CRITICAL record: `traceback` the dump as
//! printed, `exception_type` the signal (`SIGSEGV`, `SIGABRT`, `SIGFPE`,
//! `SIGBUS`, `SIGILL`; `FatalPythonError` for a fatal error that is no
//! signal), `exception_message` where the crashing thread was, in its own
//! code: `crash() at seg.py:9`.
//!
//! The dump is written from a signal handler while the program's other
//! threads go on, so their lines can fall between its blocks: a line that
//! is not part of the dump's grammar is passed on as the line it is, and the
//! dump goes on collecting. It ends with the stream, after a quiet moment,
//! or after [`MAX_STRAYS`] such lines in a row (a program that dumped its
//! stacks on purpose, `faulthandler.dump_traceback()`, and lives on).

use super::fingerprint::{is_own, Frame};
use crate::record::{Level, LogRecord, StreamKind};
use chrono::{DateTime, Utc};
use regex::Regex;
use std::sync::{Arc, LazyLock};

/// Other lines in a row after which a dump is taken to be over.
pub const MAX_STRAYS: usize = 20;

static FRAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"^  File "(.*)", line (\d+) in (.+)$"#).expect("frame pattern"));
static THREAD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(Current thread|Thread) 0x[0-9a-fA-F]+( \([^)]*\))? \(most recent call first\):$")
        .expect("thread pattern")
});

/// Whether `line` begins a fatal-error dump.
pub fn is_start(line: &str) -> bool {
    line.starts_with("Fatal Python error: ")
}

/// Whether `line` belongs to a dump in progress.
fn is_dump_line(line: &str) -> bool {
    line.is_empty()
        || FRAME.is_match(line)
        || THREAD.is_match(line)
        || line == "Stack (most recent call first):"
        || line == "  <no Python frame>"
        || line == "  ..."
        || line.starts_with("Extension modules: ")
        || line.starts_with("Python runtime state: ")
        || line.starts_with("Current thread's C stack trace")
        || line.starts_with("  Binary file ")
        || line.starts_with("<Cannot show all threads")
}

/// A dump being collected.
#[derive(Debug)]
pub struct FaultDump {
    lines: Vec<String>,
    started: DateTime<Utc>,
    offset: u64,
    strays: usize,
}

/// What a line did to a dump in progress.
#[derive(Debug, PartialEq, Eq)]
pub enum Fed {
    /// Part of the dump.
    Taken,
    /// Not the dump's: the caller handles the line as usual.
    Stray,
    /// Not the dump's, and the dump is over: finish it, then handle the line.
    Over,
}

impl FaultDump {
    pub fn start(line: String, offset: u64, started: DateTime<Utc>) -> FaultDump {
        FaultDump {
            lines: vec![line],
            started,
            offset,
            strays: 0,
        }
    }

    /// Stream offset of the dump's first line (nothing before it is held).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn feed(&mut self, line: &str) -> Fed {
        if is_dump_line(line) {
            self.strays = 0;
            self.lines.push(line.to_string());
            return Fed::Taken;
        }
        self.strays += 1;
        if self.strays >= MAX_STRAYS {
            Fed::Over
        } else {
            Fed::Stray
        }
    }

    /// The dump as one record.
    pub fn finish(mut self, stream: StreamKind, source: Arc<str>) -> LogRecord {
        while self.lines.last().is_some_and(|l| l.is_empty()) {
            self.lines.pop();
        }
        let what = self.lines[0]["Fatal Python error: ".len()..].to_string();
        let mut traceback = self.lines.join("\n");
        traceback.push('\n');
        let site = crash_site(&self.lines);
        let mut record = LogRecord::plain(self.lines[0].clone(), stream, source);
        record.timestamp = self.started;
        record.level = Level::Critical;
        record.exception_type = Some(signal_of(&what).unwrap_or("FatalPythonError").to_string());
        record.exception_message = Some(match (signal_of(&what), site) {
            (Some(_), Some(frame)) => describe(&frame),
            (Some(_), None) => "no Python frame".to_string(),
            (None, Some(frame)) => format!("{what} in {}", describe(&frame)),
            (None, None) => what,
        });
        record.traceback = Some(traceback);
        record.offset = Some(self.offset);
        record
    }
}

/// `SIGSEGV in crash() at seg.py:9`: how a run that died of a signal in C
/// code is described, from its dump's record (`None` for other records).
pub fn crash_words(
    exception_type: Option<&str>,
    exception_message: Option<&str>,
    message: &str,
) -> Option<String> {
    if !is_start(message) {
        return None;
    }
    match (exception_type, exception_message) {
        (Some(signal), Some(site)) if signal.starts_with("SIG") => {
            Some(format!("{signal} in {site}"))
        }
        _ => None,
    }
}

/// `SIGSEGV` for `Segmentation fault`: what faulthandler calls each signal.
fn signal_of(what: &str) -> Option<&'static str> {
    Some(match what.trim() {
        "Segmentation fault" => "SIGSEGV",
        "Aborted" => "SIGABRT",
        "Floating point exception" => "SIGFPE",
        "Bus error" => "SIGBUS",
        "Illegal instruction" => "SIGILL",
        _ => return None,
    })
}

/// The innermost frame of the crashing thread in the program's own code
/// (else its innermost frame): the first frame of the `Current thread`
/// block (or of the only `Stack` block), innermost first as printed.
fn crash_site(lines: &[String]) -> Option<Frame> {
    let start = lines
        .iter()
        .position(|l| l.starts_with("Current thread ") || l == "Stack (most recent call first):")?;
    let frames: Vec<Frame> = lines[start + 1..]
        .iter()
        .map_while(|l| FRAME.captures(l))
        .map(|c| Frame {
            file: c[1].to_string(),
            line: c[2].parse().unwrap_or(0),
            function: c[3].to_string(),
        })
        .collect();
    frames
        .iter()
        .find(|f| is_own(f))
        .or(frames.first())
        .cloned()
}

/// `crash() at seg.py:9`.
fn describe(frame: &Frame) -> String {
    let file = frame.file.rsplit('/').next().unwrap_or(&frame.file);
    let function = frame.function.trim_end_matches("()");
    if function.starts_with('<') {
        format!("{function} at {file}:{}", frame.line)
    } else {
        format!("{function}() at {file}:{}", frame.line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Python 3.11.7, `ctypes.string_at(0)` with a second thread alive.
    const SEGV: &str = include_str!("../../../../fixtures/faulthandler/segfault_thread.txt");
    /// Python 3.11.7, `os.abort()`.
    const ABRT: &str = include_str!("../../../../fixtures/faulthandler/abort.txt");

    fn collect(text: &str) -> (LogRecord, Vec<String>) {
        let mut lines = text.lines();
        let first = lines.next().unwrap();
        assert!(is_start(first));
        let mut dump = FaultDump::start(first.to_string(), 0, Utc::now());
        let mut strays = Vec::new();
        for line in lines {
            match dump.feed(line) {
                Fed::Taken => {}
                Fed::Stray | Fed::Over => strays.push(line.to_string()),
            }
        }
        (dump.finish(StreamKind::Stderr, Arc::from("stderr")), strays)
    }

    #[test]
    fn a_segfault_dump_is_one_critical_record_naming_the_crash_site() {
        let (record, strays) = collect(SEGV);
        assert!(strays.is_empty(), "{strays:?}");
        assert_eq!(record.level, Level::Critical);
        assert_eq!(record.message, "Fatal Python error: Segmentation fault");
        assert_eq!(record.exception_type.as_deref(), Some("SIGSEGV"));
        // ctypes' string_at is the innermost frame, but not the program's.
        assert_eq!(
            record.exception_message.as_deref(),
            Some("crash() at seg.py:9")
        );
        assert_eq!(record.traceback.as_deref(), Some(SEGV));
    }

    #[test]
    fn an_abort_is_sigabrt() {
        let (record, _) = collect(ABRT);
        assert_eq!(record.exception_type.as_deref(), Some("SIGABRT"));
        assert_eq!(
            record.exception_message.as_deref(),
            Some("give_up() at abrt.py:3")
        );
        assert_eq!(record.traceback.as_deref(), Some(ABRT));
    }

    #[test]
    fn lines_of_other_threads_pass_through_and_the_dump_goes_on() {
        let mut lines: Vec<&str> = SEGV.lines().collect();
        lines.insert(3, "worker: still going");
        lines.insert(9, "worker: still going 2");
        let (record, strays) = collect(&lines.join("\n"));
        assert_eq!(strays, ["worker: still going", "worker: still going 2"]);
        assert_eq!(record.traceback.as_deref(), Some(SEGV));
    }

    #[test]
    fn a_program_that_lives_on_ends_the_dump() {
        let mut dump = FaultDump::start("Fatal Python error: Aborted".into(), 0, Utc::now());
        for i in 1..MAX_STRAYS {
            assert_eq!(dump.feed(&format!("line {i}")), Fed::Stray);
        }
        assert_eq!(dump.feed("one more"), Fed::Over);
    }

    #[test]
    fn other_fatal_errors_keep_their_words() {
        let mut dump = FaultDump::start(
            "Fatal Python error: _PyMem_DebugMalloc: out of memory".into(),
            0,
            Utc::now(),
        );
        dump.feed("");
        dump.feed("Current thread 0x00007f41d945ab80 (most recent call first):");
        dump.feed("  <no Python frame>");
        let record = dump.finish(StreamKind::Stderr, Arc::from("stderr"));
        assert_eq!(record.exception_type.as_deref(), Some("FatalPythonError"));
        assert_eq!(
            record.exception_message.as_deref(),
            Some("_PyMem_DebugMalloc: out of memory")
        );
    }
}
