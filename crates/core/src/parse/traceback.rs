//! The Python traceback state machine.
//!
//! Python prints a traceback as many lines; a log shipper that treats each line
//! as a record destroys it. [`TracebackCollector`] is fed the lines of one stream
//! in order and claims the ones that belong to a traceback, so that the whole
//! traceback becomes one record. It understands every form CPython prints:
//!
//! * `Traceback (most recent call last):` with frames, source lines and 3.11+
//!   `~~~^^^` marker lines, `[Previous line repeated N more times]`;
//! * chains: `The above exception was the direct cause…` and `During handling of
//!   the above exception…`, including parts that have no frames;
//! * exception groups (`+ Exception Group Traceback`, `+-+----`, `| `), nested;
//! * SyntaxError blocks, also at compile time, where there is no header and the
//!   traceback starts at `  File "x.py", line 3`;
//! * loguru's `diagnose` form: blank lines between frames, `> File` marking
//!   the frame that caught the exception, `│ └` variable values;
//! * exception lines without a colon (`KeyboardInterrupt`), notes added with
//!   `add_note` and messages that span several lines.
//!
//! What it cannot see in the text — whether an unindented line after the final
//! exception line is more of the message or the program's next output — it
//! decides with two signals: a line that another parser recognises as a new log
//! record ends the traceback, and so does the stream falling idle (a program
//! prints a traceback in one burst). The caller owns the clock: it asks
//! [`TracebackCollector::idle_policy`] and calls [`TracebackCollector::finish`]
//! when the stream has been idle long enough.
//!
//! It does not parse log formats and does not attach tracebacks to log records;
//! see `assemble.rs` for that.

const HEADER: &str = "Traceback (most recent call last):";
const GROUP_HEADER: &str = "+ Exception Group Traceback (most recent call last):";
const CAUSE: &str = "The above exception was the direct cause of the following exception:";
const CONTEXT: &str = "During handling of the above exception, another exception occurred:";

/// A traceback is capped at this many lines (a runaway never eats memory).
const MAX_LINES: usize = 20_000;
/// Unindented lines after the final exception line that still count as its message.
const MAX_MESSAGE_LINES: usize = 500;

/// A complete traceback and what it says about the final exception.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Traceback {
    /// The text exactly as printed, every line ending in `\n`.
    pub text: String,
    /// The final exception's name as printed (`ValueError`, `mypkg.errors.StageFailed`).
    pub exception_type: String,
    /// Everything printed after `Type: ` for the final exception.
    pub exception_message: String,
    /// The final exception line itself (`ValueError: bad shard`).
    pub exception_line: String,
}

/// How long the caller may let a stream sit idle before calling `finish`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdlePolicy {
    /// No traceback in progress.
    None,
    /// The final exception line has been seen: a short pause ends the traceback.
    Short,
    /// Frames or a chain are in progress: the exception line must still come.
    Long,
}

/// What happened to the lines around a fed line, in output order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TracebackEvent {
    Finished(Traceback),
    /// Blank lines held back after a traceback that turned out not to belong to it.
    Released(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    /// Inside frames; the exception line has not been printed yet.
    AwaitException,
    /// The exception line was printed; more message lines, notes or a chain may follow.
    AfterException {
        message_lines: usize,
    },
    /// A chain separator was printed; the next part's header is coming.
    AwaitPart,
}

/// Groups the lines of one stream into tracebacks. One per stream.
#[derive(Debug)]
pub struct TracebackCollector {
    state: State,
    /// Whether the current part is an exception group, and the column of its `+`.
    group_col: Option<usize>,
    lines: Vec<String>,
    held_blanks: usize,
}

impl Default for TracebackCollector {
    fn default() -> Self {
        TracebackCollector {
            state: State::Idle,
            group_col: None,
            lines: Vec::new(),
            held_blanks: 0,
        }
    }
}

impl TracebackCollector {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_active(&self) -> bool {
        self.state != State::Idle
    }

    pub fn idle_policy(&self) -> IdlePolicy {
        match self.state {
            State::Idle => IdlePolicy::None,
            State::AfterException { .. } => IdlePolicy::Short,
            State::AwaitException | State::AwaitPart => IdlePolicy::Long,
        }
    }

    /// True if `line` opens a traceback when no traceback is in progress.
    pub fn is_start(line: &str) -> bool {
        line == HEADER || group_header_col(line).is_some() || is_file_line(line)
    }

    /// Feeds one line. Returns true if the line was taken into a traceback.
    /// `starts_record` tells whether another parser sees the start of a new log
    /// record in the line; it is only asked about ambiguous lines.
    pub fn feed(
        &mut self,
        line: &str,
        starts_record: impl FnOnce(&str) -> bool,
        out: &mut Vec<TracebackEvent>,
    ) -> bool {
        if self.lines.len() >= MAX_LINES {
            self.finish(out);
        }
        match self.state {
            State::Idle => self.try_start(line),
            State::AwaitException => self.feed_frames(line),
            State::AwaitPart => self.feed_await_part(line, out),
            State::AfterException { message_lines } => {
                self.feed_after_exception(line, message_lines, starts_record, out)
            }
        }
    }

    /// Ends the traceback in progress (idle timeout, end of stream, or a cap).
    pub fn finish(&mut self, out: &mut Vec<TracebackEvent>) {
        if self.state == State::Idle {
            return;
        }
        let lines = std::mem::take(&mut self.lines);
        out.push(TracebackEvent::Finished(describe(lines)));
        for _ in 0..self.held_blanks {
            out.push(TracebackEvent::Released(String::new()));
        }
        self.held_blanks = 0;
        self.group_col = None;
        self.state = State::Idle;
    }

    fn try_start(&mut self, line: &str) -> bool {
        if !Self::is_start(line) {
            return false;
        }
        self.group_col = group_header_col(line);
        self.lines.push(line.to_string());
        self.state = State::AwaitException;
        true
    }

    fn take(&mut self, line: &str) -> bool {
        for _ in 0..self.held_blanks {
            self.lines.push(String::new());
        }
        self.held_blanks = 0;
        self.lines.push(line.to_string());
        true
    }

    fn feed_frames(&mut self, line: &str) -> bool {
        if let Some(col) = self.group_col {
            if is_group_exception_line(line, col) {
                self.state = State::AfterException { message_lines: 0 };
            }
            return self.take(line);
        }
        if !line.is_empty() && !is_indented(line) && !is_file_line(line) {
            self.state = State::AfterException { message_lines: 0 };
        }
        self.take(line)
    }

    fn feed_await_part(&mut self, line: &str, out: &mut Vec<TracebackEvent>) -> bool {
        if line.is_empty() {
            return self.take(line);
        }
        if line == HEADER || is_file_line(line) {
            self.group_col = None;
            self.state = State::AwaitException;
            return self.take(line);
        }
        if let Some(col) = group_header_col(line) {
            self.group_col = Some(col);
            self.state = State::AwaitException;
            return self.take(line);
        }
        if looks_like_exception_line(line) {
            // A chained exception that was never raised has no frames.
            self.group_col = None;
            self.state = State::AfterException { message_lines: 0 };
            return self.take(line);
        }
        self.finish(out);
        false
    }

    fn feed_after_exception(
        &mut self,
        line: &str,
        message_lines: usize,
        starts_record: impl FnOnce(&str) -> bool,
        out: &mut Vec<TracebackEvent>,
    ) -> bool {
        if line.is_empty() {
            self.held_blanks += 1;
            return true;
        }
        if line == CAUSE || line == CONTEXT {
            self.state = State::AwaitPart;
            return self.take(line);
        }
        if Self::is_start(line) && !is_indented_continuation(line, self.group_col) {
            // A new traceback right after this one, without a chain separator.
            self.finish(out);
            return self.try_start(line);
        }
        if is_indented(line) {
            if self.held_blanks > 0 && self.group_col.is_none() {
                self.finish(out);
                return false;
            }
            return self.take(line);
        }
        let ends = self.group_col.is_some()
            || self.held_blanks > 0
            || message_lines >= MAX_MESSAGE_LINES
            || starts_record(line);
        if ends {
            self.finish(out);
            return false;
        }
        self.state = State::AfterException {
            message_lines: message_lines + 1,
        };
        self.take(line)
    }
}

fn is_indented(line: &str) -> bool {
    line.starts_with([' ', '\t'])
}

/// `  File "x.py", line 3` or `  File "x.py", line 3, in f`; loguru
/// (`diagnose=True`) marks the frame that caught the exception `> File "…`.
fn is_file_line(line: &str) -> bool {
    let Some(rest) = line
        .strip_prefix("  File \"")
        .or_else(|| line.strip_prefix("> File \""))
    else {
        return false;
    };
    match rest.rfind("\", line ") {
        Some(pos) => rest[pos + 8..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit()),
        None => false,
    }
}

/// The column of `+` in `  + Exception Group Traceback (most recent call last):`
/// (also when nested inside another group's `| ` prefix).
///
/// Asked of every line, so it looks past the ` `/`|` prefix only, instead of
/// searching the whole line (that search was 7% of `tail`'s CPU).
fn group_header_col(line: &str) -> Option<usize> {
    let pos = line.bytes().position(|b| b != b' ' && b != b'|')?;
    line[pos..].starts_with(GROUP_HEADER).then_some(pos)
}

/// In a group whose `+` is at `col`, the group's own exception line is
/// `<col spaces>| Name: message`.
fn is_group_exception_line(line: &str, col: usize) -> bool {
    let bytes = line.as_bytes();
    bytes.len() > col + 2
        && line.as_bytes()[..col].iter().all(|&b| b == b' ')
        && bytes[col] == b'|'
        && bytes[col + 1] == b' '
        && bytes[col + 2] != b' '
}

fn is_indented_continuation(line: &str, group_col: Option<usize>) -> bool {
    group_col.is_some() && is_indented(line)
}

/// `Name`, `pkg.Name: text`, `f.<locals>.Name: text`.
pub(super) fn looks_like_exception_line(line: &str) -> bool {
    let name = match line.find(": ") {
        Some(pos) => &line[..pos],
        None => line,
    };
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | '<' | '>'))
}

/// Builds the [`Traceback`] from its lines: the text, and the final exception's
/// type and message taken from the last part of the chain.
pub fn describe(lines: Vec<String>) -> Traceback {
    let last_part = lines
        .iter()
        .rposition(|l| l == CAUSE || l == CONTEXT)
        .map_or(0, |i| i + 1);
    let part = &lines[last_part..];
    let top_group_col = part
        .iter()
        .find(|l| !l.is_empty())
        .and_then(|l| group_header_col(l).filter(|&c| l[..c].bytes().all(|b| b == b' ')));
    let (exception_line, continuation) = match top_group_col {
        Some(col) => group_exception(part, col),
        None => plain_exception(part),
    };
    let (exception_type, first_message) = split_exception_line(&exception_line);
    let mut exception_message = first_message.to_string();
    for line in continuation {
        exception_message.push('\n');
        exception_message.push_str(&line);
    }
    let mut text = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for line in &lines {
        text.push_str(line);
        text.push('\n');
    }
    Traceback {
        text,
        exception_type: exception_type.to_string(),
        exception_message,
        exception_line,
    }
}

fn plain_exception(part: &[String]) -> (String, Vec<String>) {
    let start = part
        .iter()
        .position(|l| !l.is_empty() && !is_indented(l) && l != HEADER && !is_file_line(l));
    match start {
        Some(i) => (part[i].clone(), trim_blank_tail(&part[i + 1..])),
        None => (
            part.last()
                .map(|l| l.trim().to_string())
                .unwrap_or_default(),
            Vec::new(),
        ),
    }
}

fn group_exception(part: &[String], col: usize) -> (String, Vec<String>) {
    let prefix = format!("{}| ", " ".repeat(col));
    let Some(i) = part.iter().position(|l| is_group_exception_line(l, col)) else {
        return plain_exception(part);
    };
    let line = part[i][col + 2..].to_string();
    let continuation = part[i + 1..]
        .iter()
        .map_while(|l| l.strip_prefix(&prefix).map(str::to_string))
        .collect();
    (line, continuation)
}

fn trim_blank_tail(lines: &[String]) -> Vec<String> {
    let end = lines
        .iter()
        .rposition(|l| !l.is_empty())
        .map_or(0, |i| i + 1);
    lines[..end].to_vec()
}

fn split_exception_line(line: &str) -> (&str, &str) {
    match line.find(": ") {
        Some(pos) => (&line[..pos], &line[pos + 2..]),
        None => (line.strip_suffix(':').unwrap_or(line), ""),
    }
}

#[cfg(test)]
mod tests;
