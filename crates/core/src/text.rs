//! Words for people: one home for every small formatter the outputs share
//! (text, JSON notes, the dashboard, notifications), so that a duration, a
//! count or a signal reads the same everywhere.

use std::fmt::Write as _;
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

/// `1 record`, `3 records`: a count with its noun, singular for one.
pub fn plural(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// `SIGKILL` for 9; `signal 77` for numbers this platform does not name.
pub fn signal_name(signal: i32) -> String {
    match nix::sys::signal::Signal::try_from(signal) {
        Ok(known) => known.as_str().to_string(),
        Err(_) => format!("signal {signal}"),
    }
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
    fn counts_and_signals_in_words() {
        assert_eq!(plural(1, "record", "records"), "1 record");
        assert_eq!(plural(0, "record", "records"), "0 records");
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(77), "signal 77");
    }
}
