//! A record in progress that spans lines (a Java, Go, Node, Ruby or Rust
//! stack trace, a `rich` box), kept by one stream's assembler until a line
//! does not belong, an `end` line comes, or the stream is quiet `timeout`.

use super::compile::{Captured, DeclarativeParser};
use crate::parse::line::LineFields;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;

/// Past this much text the record is ended; what follows is ordinary lines.
const MAX_RECORD_BYTES: usize = 1 << 20;

pub struct MultilineRecord {
    /// The parser's index in the chain (`parsed_by`).
    pub parser_index: usize,
    parser: Arc<DeclarativeParser>,
    /// Each line with the stream offset it starts at.
    lines: Vec<(u64, String)>,
    bytes: usize,
    /// Blank lines seen since the last line that belongs: kept only if
    /// another line that belongs follows (a Go dump's goroutine blocks).
    blanks: Vec<(u64, String)>,
    captured: Captured,
    pub started: DateTime<Utc>,
}

/// What a line did to the record in progress.
#[derive(Debug, PartialEq)]
pub enum Fed {
    Joined,
    /// The line belongs and ends the record.
    Ended,
    /// The line is not part of it: the record is over, the line is the next.
    NotMine,
}

/// How the record ended.
pub enum Finished {
    /// Too few lines to be a record: the lines go through the chain again
    /// (the first one not as a start).
    Released(Vec<(u64, String)>),
    Record {
        fields: Box<LineFields>,
        /// It captured a level or message of its own: a log record, not a
        /// stack trace belonging to the log line before it.
        log_line: bool,
        offset: u64,
    },
}

impl MultilineRecord {
    pub fn start(
        parser_index: usize,
        parser: Arc<DeclarativeParser>,
        line: String,
        offset: u64,
        started: DateTime<Utc>,
    ) -> MultilineRecord {
        let mut captured = Captured::default();
        if let Some(rule) = &parser.multiline {
            if let Some((re, caps)) = rule.start.captures(&line) {
                captured.take(re, &caps);
            }
        }
        if let Some(c) = parser.capture_line(&line) {
            captured.merge(c);
        }
        MultilineRecord {
            parser_index,
            bytes: line.len(),
            lines: vec![(offset, line)],
            blanks: Vec::new(),
            captured,
            parser,
            started,
        }
    }

    pub fn timeout(&self) -> Duration {
        self.parser
            .multiline
            .as_ref()
            .map_or(Duration::from_millis(500), |m| m.timeout)
    }

    pub fn first_offset(&self) -> u64 {
        self.lines[0].0
    }

    pub fn feed(&mut self, line: &str, offset: u64) -> Fed {
        let Some(rule) = &self.parser.multiline else {
            return Fed::NotMine;
        };
        if self.lines.len() + self.blanks.len() >= rule.max_lines
            || self.bytes + line.len() > MAX_RECORD_BYTES
        {
            return Fed::NotMine;
        }
        let blank = line.trim().is_empty();
        if let Some(end) = &rule.end {
            if let Some((re, caps)) = end.captures(line) {
                // A blank line that ends a record is not part of its text.
                if !blank {
                    self.captured.take(re, &caps);
                    self.push(line, offset);
                }
                return Fed::Ended;
            }
        }
        let belongs = match &rule.continue_ {
            Some(cont) => match cont.captures(line) {
                Some((re, caps)) => {
                    self.captured.take(re, &caps);
                    true
                }
                None => false,
            },
            // No `continue`: everything up to `end` belongs.
            None => true,
        };
        if !belongs {
            return Fed::NotMine;
        }
        if blank {
            self.blanks.push((offset, line.to_string()));
        } else {
            self.push(line, offset);
        }
        Fed::Joined
    }

    fn push(&mut self, line: &str, offset: u64) {
        for blank in self.blanks.drain(..) {
            self.bytes += blank.1.len() + 1;
            self.lines.push(blank);
        }
        self.bytes += line.len() + 1;
        self.lines.push((offset, line.to_string()));
    }

    pub fn finish(self) -> Finished {
        let min_lines = self.parser.multiline.as_ref().map_or(2, |m| m.min_lines);
        if self.lines.len() < min_lines {
            return Finished::Released(self.lines);
        }
        let offset = self.lines[0].0;
        let mut text = String::with_capacity(self.bytes);
        for (_, line) in &self.lines {
            text.push_str(line);
            text.push('\n');
        }
        let log_line = self.captured.is_log_line();
        let level = self.parser.stack_level(&self.captured);
        let mut fields = self
            .parser
            .fields_of(self.captured, level, &self.lines[0].1);
        fields.traceback = Some(text);
        Finished::Record {
            fields: Box::new(fields),
            log_line,
            offset,
        }
    }
}
