//! Error groups: which error records are "the same error".
//!
//! Every `ERROR` and `CRITICAL` record gets an *error group*, 16 hex digits
//! (`3f9c0a12d4b7e615`). Records with the same group are occurrences of one
//! error, so a run that fails 4,000 times in the same place shows one group
//! with a count, not 4,000 lines. Records of other levels have no group.
//!
//! ## The rule
//!
//! **A record with a Python traceback** is grouped by *where* it failed, not by
//! what the message says:
//!
//! * only the **final exception** counts: in a chained traceback ("The above
//!   exception was the direct cause of the following exception:" / "During
//!   handling of the above exception, another exception occurred:") the parts
//!   before the last one are ignored;
//! * the group is made of the final exception's **type** (`ValueError`,
//!   `mypkg.errors.StageFailed`) and its **innermost three frames of your own
//!   code**, each as file and function name. Frames in libraries and in Python
//!   itself are skipped: paths containing `/site-packages/`, `/dist-packages/`,
//!   `/lib/python3.N/` (also `lib64`, PyPy's `lib-python` and `lib_pypy`, and a
//!   Windows `Python3N\Lib\`), and pseudo-files such as `<frozen …>`,
//!   `<string>` and `<stdin>`. If the final exception has no frame of your own
//!   code, its innermost three frames of any kind are used;
//! * line numbers and the exception message are **never** part of the group,
//!   so editing the file above the failing line, or a message that contains a
//!   step number or a path, does not start a new group;
//! * a file counts by its **last two path components** only
//!   (`/srv/app-v2/pkg/train.py` is `pkg/train.py`), so the same code deployed
//!   in another directory, release or machine groups together;
//! * direct recursion counts once: consecutive frames in the same file and
//!   function are one frame, so a `RecursionError` at depth 50 and at depth
//!   1,000 are one group. `[Previous line repeated N more times]`, source lines
//!   and 3.11's `~~~^^^` marker lines are ignored;
//! * exception groups (`+ Exception Group Traceback`) are grouped by the
//!   group's own frames, not by its sub-exceptions; a SyntaxError's
//!   `File "x.py", line 3` location counts as a frame with no function name;
//! * if the final exception has no frames at all, its type and its masked
//!   message (see below) are used.
//!
//! **A record without a traceback** is grouped by its logger name and its
//! **masked message**: the message with its variable parts replaced, so
//! `failed to load shard 17 from /data/a.bin` and `failed to load shard 4 from
//! /data/b.bin` are both `failed to load shard <n> from <path>`. Masked are:
//! URLs (`<url>`), quoted values `'…'` and `"…"` (`<str>`), ISO timestamps
//! (`<ts>`), UUIDs (`<uuid>`), paths that start with `/`, `./`, `../`, `~/` or a
//! drive letter (`<path>`), IPv4 addresses with an optional port (`<ip>`), and
//! numbers: integers, decimals, negative numbers, exponents, `0x…` and hex ids
//! of 8 or more hex digits with at least one digit (`<n>`). A number glued to
//! the end of a word is part of a name and kept (`gpu0`, `conv2d`, `run_17`);
//! a number followed by a unit is masked (`12ms` is `<n>ms`). If the record has
//! an exception type but no traceback, the type is part of the group too.
//!
//! ## Limits
//!
//! * Two different bugs in the same function with the same exception type are
//!   one group (`KeyError` for two different keys on two lines of `load`).
//! * Renaming or moving a function or file, or changing which functions call
//!   the failing one (within the innermost three), starts a new group.
//! * A script that sits directly in a per-release directory
//!   (`/srv/app-v2/train.py` is `app-v2/train.py`) groups per release, and a
//!   file printed with a relative path (`train.py`) is not the same file as one
//!   printed absolute (`/home/u/proj/train.py` is `proj/train.py`).
//! * Upgrading Python can change frames (3.12 no longer prints `<listcomp>`
//!   frames) and so the group of an error in that code.
//! * Code of your own installed into `site-packages` (`pip install .`, not
//!   `pip install -e .`) counts as library code; the innermost own frame is then
//!   the script that called it.
//! * Without a traceback the rule is only as good as the masking: a variable
//!   part that is not one of the shapes above (a user name, a relative path
//!   `data/x.csv`, an id glued to a word) makes a group per value, and two
//!   messages whose variable parts differ in shape (`took 5s` and `took
//!   5.0s` are both `took <n>s`, but `took 0:00:05` is not) differ.
//! * The group is computed from the text as printed; tracebacks that a logger
//!   reformats (frames without `File "…", line N`) fall back to type and
//!   message.
//!
//! The group is a 64-bit FNV-1a hash of the parts above joined with the byte
//! `0x1f`, printed as 16 lowercase hex digits. It is the same on every machine
//! and never changes between versions of the agent for the same input.

use crate::record::LogRecord;
use regex::{Match, Regex};
use std::sync::LazyLock;

/// How many frames of the final exception make up its group.
const GROUP_FRAMES: usize = 3;

const CAUSE: &str = "The above exception was the direct cause of the following exception:";
const CONTEXT: &str = "During handling of the above exception, another exception occurred:";

/// A frame of a Python traceback: `File "path", line N, in function`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub file: String,
    pub line: u32,
    /// Empty for a SyntaxError's location line (`File "x.py", line 3`).
    pub function: String,
}

/// A frame line of the traceback and how deeply it is nested in exception
/// groups (0 outside any group): `File "path", line N, in function`, after
/// any indentation, exception-group bars (`|`, `+`) or loguru's `>` marker;
/// `, in function` is absent on a SyntaxError's location line. Read by hand,
/// not by a regex: it runs on every ERROR record stored.
fn parse_frame_line(line: &str) -> Option<(usize, Frame)> {
    let body = line.trim_start_matches([' ', '|', '+', '>']);
    let pre = &line[..line.len() - body.len()];
    let depth = pre.rfind('|').map_or(0, |i| i + 1);
    let rest = body.strip_prefix("File \"")?;
    // The path may hold `", line ` itself: the last one that is followed by
    // a number is the separator.
    let (file, after) = rest
        .rmatch_indices("\", line ")
        .map(|(i, sep)| (&rest[..i], &rest[i + sep.len()..]))
        .find(|(_, after)| after.starts_with(|c: char| c.is_ascii_digit()))?;
    let digits = after
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(after.len());
    let (number, tail) = after.split_at(digits);
    let tail = tail.trim_end_matches([' ', '\t', '\r']);
    let function = match tail.strip_prefix(", in ") {
        Some(function) => without_repeat_note(function),
        None if tail.is_empty() => "",
        None => return None,
    };
    Some((
        depth,
        Frame {
            file: file.to_string(),
            line: number.parse().unwrap_or(0),
            function: function.to_string(),
        },
    ))
}

/// `f [Previous line repeated 2 more times]` → `f`.
fn without_repeat_note(function: &str) -> &str {
    match function.rfind("[Previous line repeated ") {
        Some(i) if function.ends_with(" more times]") || function.ends_with(" more time]") => {
            function[..i].trim_end()
        }
        _ => function,
    }
}

/// The lines of the last part of a chained traceback (all lines if unchained).
/// Only top-level chain lines split parts; chains inside an exception group's
/// sub-exceptions (behind `|`) do not.
fn final_part(traceback: &str) -> Vec<&str> {
    let lines: Vec<&str> = traceback.lines().collect();
    let start = lines
        .iter()
        .rposition(|l| {
            let t = l.trim();
            t == CAUSE || t == CONTEXT
        })
        .map_or(0, |i| i + 1);
    lines[start..].to_vec()
}

/// The frames of the final part with their nesting depth, outermost first:
/// only those at the shallowest depth, the final exception's own frames.
fn frames_of_part(part: &[&str]) -> (usize, Vec<Frame>) {
    let all: Vec<(usize, Frame)> = part.iter().filter_map(|l| parse_frame_line(l)).collect();
    let Some(depth) = all.iter().map(|(d, _)| *d).min() else {
        return (0, Vec::new());
    };
    let frames = all
        .into_iter()
        .filter(|(d, _)| *d == depth)
        .map(|(_, f)| f)
        .collect();
    (depth, frames)
}

/// The frames of the final exception of a traceback (the last chained part), outermost first.
pub fn final_frames(traceback: &str) -> Vec<Frame> {
    frames_of_part(&final_part(traceback)).1
}

static STDLIB_DIR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"/lib(?:64)?/python[0-9]+(?:\.[0-9]+)?[a-z]?/|/python[0-9]+/lib/|/lib-python/|/lib_pypy/",
    )
    .expect("stdlib regex")
});

/// Whether a frame is the program's own code, not a library or the interpreter:
/// false for paths containing `/site-packages/`, `/dist-packages/`, `/lib/python3.N/`
/// (any N, also `/lib64/`, PyPy's `/lib-python/` and `/lib_pypy/`, Windows'
/// `\Python3N\Lib\`), and for pseudo-files such as `<frozen …>`, `<string>`,
/// `<stdin>` (any `<…>` except IPython's `<ipython-input-…>`, which is the
/// user's cell). Paths compare case-insensitively, with `\` read as `/`.
pub fn is_own(frame: &Frame) -> bool {
    let file = frame.file.trim();
    if file.starts_with('<') && file.ends_with('>') {
        return file.starts_with("<ipython-input-");
    }
    let path = file.replace('\\', "/").to_ascii_lowercase();
    !(path.contains("/site-packages/")
        || path.contains("/dist-packages/")
        || STDLIB_DIR.is_match(&path))
}

/// The innermost own frame (else the innermost frame) of the final exception:
/// where the program failed, for messages like "ValueError: loss is nan at train.py:88".
pub fn failure_site(traceback: &str) -> Option<Frame> {
    let frames = final_frames(traceback);
    let own = frames.iter().rposition(is_own);
    match own {
        Some(i) => frames.into_iter().nth(i),
        None => frames.into_iter().last(),
    }
}

/// The last two components of a path (`/srv/app-v2/pkg/train.py` is
/// `pkg/train.py`), with `\` read as `/` and `.` components dropped.
fn short_file(file: &str) -> String {
    let parts: Vec<&str> = file
        .split(['/', '\\'])
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    parts[parts.len().saturating_sub(2)..].join("/")
}

/// The exception name of an exception line (`ValueError: x`, `KeyboardInterrupt`).
fn exception_name(line: &str) -> &str {
    match line.find(": ") {
        Some(pos) => &line[..pos],
        None => line.strip_suffix(':').unwrap_or(line),
    }
}

/// The text of a line of the final part at `depth` (0: unindented; otherwise
/// behind the bar of that exception group), if it is not indented further.
fn at_depth(line: &str, depth: usize) -> Option<&str> {
    let rest = if depth == 0 {
        line
    } else {
        let bytes = line.as_bytes();
        if bytes.len() <= depth
            || bytes[depth - 1] != b'|'
            || !bytes[..depth - 1].iter().all(|&b| b == b' ')
        {
            return None;
        }
        line[depth..].strip_prefix(' ')?
    };
    (!rest.is_empty() && !rest.starts_with([' ', '\t'])).then_some(rest)
}

/// The final exception's type as printed on its exception line.
fn parse_exception_type(traceback: &str) -> String {
    let part = final_part(traceback);
    let (depth, _) = frames_of_part(&part);
    let found = part.iter().filter_map(|l| at_depth(l, depth)).find(|t| {
        !t.starts_with("Traceback (")
            && !t.starts_with("[Previous line")
            && parse_frame_line(t).is_none()
            && super::traceback::looks_like_exception_line(t.trim_end())
    });
    let line = found.map(|l| l.trim_end()).unwrap_or_else(|| {
        part.iter()
            .rev()
            .map(|l| l.trim_start_matches([' ', '|', '+', '-', '>']).trim_end())
            .find(|l| !l.is_empty())
            .unwrap_or("")
    });
    exception_name(line).trim().to_string()
}

/// The error group of a record: `None` unless its level is ERROR or CRITICAL;
/// otherwise 16 lowercase hex chars (see the module documentation for the rule).
pub fn error_group(record: &LogRecord) -> Option<String> {
    if !record.level.is_error() {
        return None;
    }
    let traceback = record.traceback.as_deref().filter(|t| !t.trim().is_empty());
    let mut parts: Vec<String> = Vec::with_capacity(2 + 2 * GROUP_FRAMES);
    match traceback {
        Some(tb) => {
            parts.push("tb".into());
            let exception_type = record
                .exception_type
                .as_deref()
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map_or_else(|| parse_exception_type(tb), str::to_string);
            parts.push(exception_type);
            let frames = final_frames(tb);
            let own: Vec<&Frame> = frames.iter().filter(|f| is_own(f)).collect();
            let chosen: Vec<&Frame> = if own.is_empty() {
                frames.iter().collect()
            } else {
                own
            };
            let mut keys: Vec<(String, &str)> = Vec::with_capacity(chosen.len());
            for frame in chosen {
                let key = (short_file(&frame.file), frame.function.as_str());
                if keys.last() != Some(&key) {
                    keys.push(key);
                }
            }
            if keys.is_empty() {
                parts.push(mask(record.exception_message.as_deref().unwrap_or("")));
            }
            for (file, function) in &keys[keys.len().saturating_sub(GROUP_FRAMES)..] {
                parts.push(file.clone());
                parts.push(function.to_string());
            }
        }
        None => {
            parts.push("msg".into());
            parts.push(record.logger.clone().unwrap_or_default());
            parts.push(mask(&record.message));
            if let Some(t) = &record.exception_type {
                parts.push(t.trim().to_string());
            }
        }
    }
    Some(format!("{:016x}", fnv1a64_parts(&parts)))
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a64(hash: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(hash, |h, &b| (h ^ u64::from(b)).wrapping_mul(FNV_PRIME))
}

/// FNV-1a 64 over the parts joined with `0x1f`: stable across versions and
/// platforms, unlike `DefaultHasher`.
fn fnv1a64_parts<S: AsRef<str>>(parts: &[S]) -> u64 {
    let mut hash = FNV_OFFSET;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hash = fnv1a64(hash, &[0x1f]);
        }
        hash = fnv1a64(hash, part.as_ref().as_bytes());
    }
    hash
}

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("mask regex")
}

static URL: LazyLock<Regex> = LazyLock::new(|| re(r#"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'"<>]+"#));
static QUOTED: LazyLock<Regex> = LazyLock::new(|| re(r#"'[^'\n]*'|"[^"\n]*""#));
static TIMESTAMP: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]+)?)?(?:Z|[+-][0-9]{2}:?[0-9]{2})?",
    )
});
static UUID: LazyLock<Regex> = LazyLock::new(|| {
    re(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
});
static PATH: LazyLock<Regex> =
    LazyLock::new(|| re(r#"(?:~|\.{1,2})?/[^\s'"<>|,;:()\[\]{}]+|[A-Za-z]:\\[^\s'"<>|,;]*"#));
static IPV4: LazyLock<Regex> =
    LazyLock::new(|| re(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}(?::[0-9]{1,5})?"));
static HEX_PREFIXED: LazyLock<Regex> = LazyLock::new(|| re(r"0[xX][0-9A-Fa-f]+"));
static HEX_ID: LazyLock<Regex> = LazyLock::new(|| re(r"[0-9A-Fa-f]{8,}"));
static NUMBER: LazyLock<Regex> = LazyLock::new(|| re(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?"));

/// What to do with one match of a masking pattern.
enum Verdict {
    Replace(&'static str),
    /// Keep the match's first `n` bytes and replace the rest.
    KeepThenReplace(usize, &'static str),
    /// Not a match here; look again from the next character.
    RetryNext,
    /// Not a match here, nor anywhere inside it.
    SkipPast,
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn char_before(text: &str, at: usize) -> Option<char> {
    text[..at].chars().next_back()
}

fn char_after(text: &str, at: usize) -> Option<char> {
    text[at..].chars().next()
}

/// Whether the match starts at a word boundary (not glued to a word before it).
fn free_start(text: &str, m: &Match) -> bool {
    !char_before(text, m.start()).is_some_and(is_word)
}

/// Whether the match ends at a word boundary (not glued to a word after it).
fn free_end(text: &str, m: &Match) -> bool {
    !char_after(text, m.end()).is_some_and(is_word)
}

/// Replaces the matches of `re` in `text` that `judge` accepts.
fn replace_where(text: &str, re: &Regex, judge: impl Fn(&str, &Match) -> Verdict) -> String {
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut pos = 0;
    while pos <= text.len() {
        let Some(m) = re.find_at(text, pos) else {
            break;
        };
        match judge(text, &m) {
            Verdict::Replace(token) => {
                out.push_str(&text[copied..m.start()]);
                out.push_str(token);
                copied = m.end();
                pos = m.end().max(m.start() + 1);
            }
            Verdict::KeepThenReplace(n, token) => {
                out.push_str(&text[copied..m.start() + n]);
                out.push_str(token);
                copied = m.end();
                pos = m.end().max(m.start() + 1);
            }
            Verdict::RetryNext => {
                pos = m.start() + char_after(text, m.start()).map_or(1, char::len_utf8);
            }
            Verdict::SkipPast => pos = m.end().max(m.start() + 1),
        }
    }
    out.push_str(&text[copied..]);
    out
}

/// Replaces matches that are not glued to a word on either side.
fn replace_free(text: &str, re: &Regex, token: &'static str) -> String {
    replace_where(text, re, |t, m| {
        if free_start(t, m) && free_end(t, m) {
            Verdict::Replace(token)
        } else {
            Verdict::SkipPast
        }
    })
}

/// Masks the variable parts of a message: numbers (incl. decimals, hex 0x..,
/// negative), UUIDs, long hex ids (>= 8 hex chars with at least one digit),
/// paths (/a/b, ./x, C:\..), quoted values ('…', "…"), IPv4 addresses, URLs,
/// ISO timestamps; e.g. "user 8812 not found in '/data/x.csv'" -> "user <n> not
/// found in <str>". See the module documentation for the exact shapes.
pub fn mask(message: &str) -> String {
    let text = replace_where(message, &URL, |t, m| {
        if free_start(t, m) {
            Verdict::Replace("<url>")
        } else {
            Verdict::SkipPast
        }
    });
    let text = replace_where(&text, &QUOTED, |t, m| {
        if free_start(t, m) {
            Verdict::Replace("<str>")
        } else {
            Verdict::RetryNext
        }
    });
    let text = replace_where(&text, &TIMESTAMP, |t, m| {
        if free_start(t, m) {
            Verdict::Replace("<ts>")
        } else {
            Verdict::SkipPast
        }
    });
    let text = replace_free(&text, &UUID, "<uuid>");
    let text = replace_where(&text, &PATH, |t, m| {
        let before = char_before(t, m.start());
        if before.is_some_and(|c| is_word(c) || c == '.' || c == '/' || c == '~') {
            Verdict::SkipPast
        } else {
            Verdict::Replace("<path>")
        }
    });
    let text = replace_where(&text, &IPV4, |t, m| {
        let glued = |c: Option<char>| c.is_some_and(|c| is_word(c) || c == '.');
        if glued(char_before(t, m.start())) || glued(char_after(t, m.end())) {
            Verdict::SkipPast
        } else {
            Verdict::Replace("<ip>")
        }
    });
    let text = replace_free(&text, &HEX_PREFIXED, "<n>");
    let text = replace_where(&text, &HEX_ID, |t, m| {
        let has_digit = m.as_str().bytes().any(|b| b.is_ascii_digit());
        if has_digit && free_start(t, m) && free_end(t, m) {
            Verdict::Replace("<n>")
        } else {
            Verdict::SkipPast
        }
    });
    replace_where(&text, &NUMBER, |t, m| {
        let glued_before = !free_start(t, m);
        match (m.as_str().starts_with('-'), glued_before) {
            // `shard-17`, `2024-01-05`: the dash separates, it is no sign.
            (true, true) => Verdict::KeepThenReplace(1, "<n>"),
            (_, false) => Verdict::Replace("<n>"),
            // `gpu0`, `conv2d`: part of a name.
            (false, true) => Verdict::SkipPast,
        }
    })
}

#[cfg(test)]
mod tests;
