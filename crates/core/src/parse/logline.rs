//! Text log line formats: Python `logging` and its common variants, and logfmt.
//!
//! Recognised (after an optional leading timestamp, see `timestamp.rs`):
//!
//! | format | example |
//! | --- | --- |
//! | logging default | `WARNING:pipeline.loader:slow shard` |
//! | `asctime - name - LEVEL - msg` | `2026-11-27 10:00:00,123 - loader - ERROR - bad` |
//! | `asctime LEVEL name: msg` | `2026-11-27 10:00:00,123 INFO loader: ok` |
//! | `asctime LEVEL msg`, `asctime [LEVEL] msg`, loguru `asctime \| LEVEL \| name:fn:1 - msg` | |
//! | bracketed | `[ERROR] disk full`, `[2026-11-27 10:00:00] [INFO] ok` |
//! | logfmt | `ts=… level=error logger=db msg="connection lost"` |
//!
//! A word only counts as a level when it is one of the known level names, so
//! ordinary text is never mistaken for a log line.

use super::line::{LineFields, LineParser};
use super::timestamp;
use crate::record::Level;

/// Python `logging` output in its default and common formats.
pub struct PythonLoggingParser;

impl LineParser for PythonLoggingParser {
    fn name(&self) -> &str {
        "python-logging"
    }

    fn describe(&self) -> &str {
        "Python logging formats: LEVEL:logger:msg, asctime - name - LEVEL - msg, asctime LEVEL name: msg, [LEVEL] msg, loguru"
    }

    fn parse(&self, line: &str) -> Option<LineFields> {
        let first = *line.as_bytes().first()?;
        if first.is_ascii_digit() {
            let (ts, rest) = timestamp::parse_prefix(line)?;
            let mut fields = after_timestamp(rest)?;
            fields.timestamp = Some(ts);
            return Some(fields);
        }
        if first == b'[' {
            return bracketed(line);
        }
        if first.is_ascii_alphabetic() {
            return level_colon(line);
        }
        None
    }
}

/// `LEVEL:logger:msg` (logging's BASIC_FORMAT) or `LEVEL: msg`.
fn level_colon(line: &str) -> Option<LineFields> {
    let colon = line.find(':')?;
    let level = Level::from_name(&line[..colon]).filter(|_| is_level_word(&line[..colon]))?;
    let rest = &line[colon + 1..];
    if let Some(msg) = rest.strip_prefix(' ') {
        return Some(fields(level, None, msg));
    }
    let end = rest.find(':')?;
    let logger = &rest[..end];
    if logger.is_empty() || logger.contains(char::is_whitespace) {
        return None;
    }
    Some(fields(level, Some(logger), &rest[end + 1..]))
}

/// `[LEVEL] msg`, `[timestamp] [LEVEL] msg`, `[timestamp] LEVEL msg`.
fn bracketed(line: &str) -> Option<LineFields> {
    let close = line.find(']')?;
    let inner = &line[1..close];
    let rest = line[close + 1..].trim_start();
    if let Some(level) = Level::from_name(inner).filter(|_| is_level_word(inner)) {
        let (logger, msg) = logger_and_message(rest);
        return Some(fields(level, logger, msg));
    }
    let (ts, tail) = timestamp::parse_prefix(inner)?;
    if !tail.trim().is_empty() {
        return None;
    }
    let mut f = after_timestamp(rest)?;
    f.timestamp = Some(ts);
    Some(f)
}

/// Everything that may follow a timestamp.
fn after_timestamp(rest: &str) -> Option<LineFields> {
    let rest = rest.trim_start();
    if let Some(dashed) = rest.strip_prefix("- ") {
        // `name - LEVEL - msg` or `LEVEL - msg`.
        let mut parts = dashed.splitn(3, " - ");
        let a = parts.next()?;
        let b = parts.next();
        let c = parts.next();
        if let (Some(level), Some(_)) = (Level::from_name(a).filter(|_| is_level_word(a)), b) {
            return Some(fields(level, None, &dashed[a.len() + 3..]));
        }
        let level_word = b?;
        let level = Level::from_name(level_word).filter(|_| is_level_word(level_word))?;
        return Some(fields(level, Some(a.trim()), c.unwrap_or("")));
    }
    let rest = rest.strip_prefix("| ").unwrap_or(rest);
    let (word, tail) = split_word(rest);
    let word = word.trim_start_matches('[').trim_end_matches([']', ':']);
    let level = Level::from_name(word).filter(|_| is_level_word(word))?;
    let tail = tail.trim_start();
    if let Some(loguru) = tail.strip_prefix("| ") {
        let (logger, msg) = match loguru.split_once(" - ") {
            Some((l, m)) if !l.contains(' ') => (Some(l), m),
            _ => (None, loguru),
        };
        return Some(fields(level, logger, msg));
    }
    let tail = tail.strip_prefix("- ").unwrap_or(tail);
    let (logger, msg) = logger_and_message(tail);
    Some(fields(level, logger, msg))
}

/// `name: msg` when the first word ends in a colon, else just the message.
fn logger_and_message(text: &str) -> (Option<&str>, &str) {
    let (word, tail) = split_word(text);
    match word.strip_suffix(':') {
        Some(name) if !name.is_empty() && !name.contains(['"', '\'']) => {
            (Some(name), tail.strip_prefix(' ').unwrap_or(tail))
        }
        _ => (None, text),
    }
}

fn split_word(text: &str) -> (&str, &str) {
    match text.find(' ') {
        Some(pos) => (&text[..pos], &text[pos..]),
        None => (text, ""),
    }
}

/// Level words are written in one case (`ERROR`, `error`, `Error`), never mixed.
fn is_level_word(word: &str) -> bool {
    let w = word.trim();
    w.chars().all(|c| c.is_ascii_uppercase())
        || w.chars().all(|c| c.is_ascii_lowercase())
        || (w.chars().next().is_some_and(|c| c.is_ascii_uppercase())
            && w.chars().skip(1).all(|c| c.is_ascii_lowercase()))
}

fn fields(level: Level, logger: Option<&str>, message: &str) -> LineFields {
    LineFields {
        logger: logger.map(str::to_string),
        ..LineFields::new(level, message.to_string())
    }
}

/// logfmt lines with a `level=` key (`level=error msg="db down" logger=app`).
pub struct LogfmtParser;

impl LineParser for LogfmtParser {
    fn name(&self) -> &str {
        "logfmt"
    }

    fn describe(&self) -> &str {
        "logfmt key=value lines with level= (or lvl=, severity=) and msg= (or message=, event=)"
    }

    fn parse(&self, line: &str) -> Option<LineFields> {
        if !line.contains("level=") && !line.contains("lvl=") && !line.contains("severity=") {
            return None;
        }
        let pairs = logfmt_pairs(line)?;
        let get = |keys: &[&str]| {
            pairs
                .iter()
                .find(|(k, _)| keys.contains(k))
                .map(|(_, v)| v.clone())
        };
        let level = Level::from_name(&get(&["level", "lvl", "severity"])?)?;
        let message = get(&["msg", "message", "event"]).unwrap_or_default();
        let timestamp = get(&["ts", "time", "timestamp"])
            .and_then(|t| timestamp::parse_prefix(&t).map(|(ts, _)| ts));
        Some(LineFields {
            timestamp,
            level,
            logger: get(&["logger", "name", "module"]),
            message,
            traceback: get(&["traceback", "exception", "exc_info"]),
            ..LineFields::new(level, String::new())
        })
    }
}

/// Splits `k=v k2="quoted \"v\""`; `None` if the line is not logfmt at all.
fn logfmt_pairs(line: &str) -> Option<Vec<(&str, String)>> {
    let mut pairs = Vec::new();
    let mut rest = line.trim();
    while !rest.is_empty() {
        let eq = rest.find('=')?;
        let key = &rest[..eq];
        if key.is_empty() || key.contains(char::is_whitespace) {
            return None;
        }
        rest = &rest[eq + 1..];
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, 'n')) => out.push('\n'),
                        Some((_, 't')) => out.push('\t'),
                        Some((_, other)) => out.push(other),
                        None => {}
                    },
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => out.push(c),
                }
            }
            value = out;
            rest = &quoted[end?..];
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            value = rest[..end].to_string();
            rest = &rest[end..];
        }
        pairs.push((key, value));
        rest = rest.trim_start();
    }
    Some(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Option<(Level, Option<String>, String)> {
        PythonLoggingParser
            .parse(line)
            .or_else(|| LogfmtParser.parse(line))
            .map(|f| (f.level, f.logger, f.message))
    }

    fn some(
        level: Level,
        logger: Option<&str>,
        msg: &str,
    ) -> Option<(Level, Option<String>, String)> {
        Some((level, logger.map(str::to_string), msg.to_string()))
    }

    #[test]
    fn python_logging_formats() {
        assert_eq!(
            parse("WARNING:pipeline.loader:slow: shard 3"),
            some(Level::Warning, Some("pipeline.loader"), "slow: shard 3")
        );
        assert_eq!(
            parse("ERROR: disk full"),
            some(Level::Error, None, "disk full")
        );
        assert_eq!(
            parse("2026-01-02 03:04:05,123 - app.db - WARN - pool - exhausted"),
            some(Level::Warning, Some("app.db"), "pool - exhausted")
        );
        assert_eq!(
            parse("2026-01-02 03:04:05,123 INFO pipeline.stage3: processed batch 1"),
            some(Level::Info, Some("pipeline.stage3"), "processed batch 1")
        );
        assert_eq!(
            parse("2026-01-02 03:04:05,123 FATAL something broke"),
            some(Level::Critical, None, "something broke")
        );
        assert_eq!(
            parse("2026-01-02 03:04:05.123 | ERROR    | __main__:main:12 - boom"),
            some(Level::Error, Some("__main__:main:12"), "boom")
        );
        assert_eq!(
            parse("[ERROR] disk full"),
            some(Level::Error, None, "disk full")
        );
        assert_eq!(
            parse("[2026-01-02 03:04:05] [info] ok"),
            some(Level::Info, None, "ok")
        );
        assert_eq!(
            parse("2026-01-02 03:04:05,123 - ERROR - bad"),
            some(Level::Error, None, "bad")
        );
    }

    #[test]
    fn timestamps_are_taken_from_the_line() {
        let f = PythonLoggingParser
            .parse("2026-01-02 03:04:05,123Z INFO x: y")
            .unwrap();
        assert_eq!(
            crate::record::format_ts(&f.timestamp.unwrap()),
            "2026-01-02T03:04:05.123000Z"
        );
    }

    #[test]
    fn logfmt_lines() {
        assert_eq!(
            parse(r#"ts=2026-01-02T03:04:05Z level=error logger=db msg="connection \"lost\"""#),
            some(Level::Error, Some("db"), "connection \"lost\"")
        );
        assert_eq!(
            parse("level=warn msg=slow"),
            some(Level::Warning, None, "slow")
        );
    }

    #[test]
    fn ordinary_text_is_not_a_log_line() {
        for line in [
            "Errors: 3 of 10",
            "Info about things",
            "2026-01-02 the plan",
            "[1/10] loading",
            "Epoch 3/10",
            "note: level=high is great",
            "Error:x",
        ] {
            assert_eq!(parse(line), None, "{line}");
        }
    }
}
