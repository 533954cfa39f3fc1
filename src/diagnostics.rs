//! The agent's own diagnostics: what it is doing, for whoever debugs it —
//! through `tracing`, off unless asked for. `-v` says which files, stores,
//! runs and processes it deals with, `-vv` each batch, `-vvv` everything;
//! `PMON_LOG` takes `tracing` filters by stage (`PMON_LOG=sink=debug,tail=trace`;
//! the targets are [`TARGETS`]). Lines go to stderr — never to stdout,
//! where a wrapped program's output goes — one whole line per write, every
//! control character escaped (a file name or a log line can hold hostile
//! text). The user-facing warnings (`pmon-agent: warning: …`) are not
//! diagnostics: they are said with or without these.
//!
//! The processes the agent starts (shipper, supervisor, notifier) inherit
//! the setting through `PMON_LOG`. Spans — `run{experiment, run}`,
//! `file{path}` — prefix the lines of what happens inside them.

use std::io::Write;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// The stages the diagnostics are filed under (`tracing` targets).
pub const TARGETS: &[&str] = &[
    "app", "source", "tail", "wrap", "holder", "parse", "sink", "query", "daemon", "notify",
];

/// Starts the diagnostics for this process; a `PMON_LOG` that does not
/// parse is said once and leaves them off.
pub fn init(verbose: u8) {
    let from_env = std::env::var("PMON_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty());
    if from_env.is_none() && verbose == 0 {
        return;
    }
    // Called before the command line is read (for PMON_LOG) and after (for
    // -v): the first that has something to set up does it, once.
    static STARTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if STARTED.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    let directives = match (from_env, verbose) {
        (Some(directives), _) => directives,
        (None, 0) => return,
        (None, level) => {
            let level = match level {
                1 => "info",
                2 => "debug",
                _ => "trace",
            };
            let directives = TARGETS
                .iter()
                .map(|t| format!("{t}={level}"))
                .collect::<Vec<_>>()
                .join(",");
            // Before any thread: the processes started later say the same.
            std::env::set_var("PMON_LOG", &directives);
            directives
        }
    };
    // Spans (`run`, `file`) carry target `pmon`: whatever stages are asked
    // for, their lines say which run and file they are about.
    let filter = match EnvFilter::builder().parse(format!("{directives},pmon=trace")) {
        Ok(filter) => filter,
        Err(e) => {
            eprintln!(
                "pmon-agent: warning: PMON_LOG={} is not a filter the agent understands ({e}); write it like PMON_LOG=sink=debug,tail=trace (stages: {}) or use -v, -vv",
                pmon_core::text::escape_text(&directives),
                TARGETS.join(", ")
            );
            return;
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(EscapedStderr)
        .with_ansi(false)
        .try_init();
}

/// Hands each diagnostic line to stderr whole, escaped.
struct EscapedStderr;

impl<'a> MakeWriter<'a> for EscapedStderr {
    type Writer = EscapedLine;

    fn make_writer(&'a self) -> EscapedLine {
        EscapedLine(Vec::new())
    }
}

/// One formatted event, written when dropped.
struct EscapedLine(Vec<u8>);

impl Write for EscapedLine {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EscapedLine {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let _ = std::io::stderr().write_all(escaped_line(&self.0).as_bytes());
    }
}

/// The event's text with every control character (a newline inside a
/// value too) made visible, ending in one newline.
fn escaped_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let body = text.strip_suffix('\n').unwrap_or(&text);
    let mut line = pmon_core::text::escape_text(body);
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_text_is_escaped_and_the_line_stays_one_line() {
        let line = escaped_line(b"INFO tail: opened a\x1b[2Jb.log\nfake line\r\x07\n");
        assert_eq!(
            line,
            "INFO tail: opened a\\x1b[2Jb.log\\nfake line\\r\\x07\n"
        );
        assert_eq!(escaped_line(b"no newline"), "no newline\n");
    }
}
