//! A parser's regex: checked when the file is read, compiled on first use.
//!
//! A compiled regex costs memory, and Unicode classes (`\w`, `\d`, `\s`)
//! cost most: the shipped parsers' 19 patterns took 3.5 MiB compiled one by
//! one. A line is first scanned by the chain's one `RegexSet` of every
//! parser's first-line pattern; a parser's own regexes are only needed once
//! that scan says it may match, and most runs never see a Java or Go stack
//! trace. So the file's patterns are parsed (every mistake a user can make
//! is found at start, with its line) but compiled only when first needed.

use super::error::ParserFileError;
use regex::{Captures, Regex, RegexBuilder};
use serde_saphyr::Spanned;
use std::sync::OnceLock;

/// A compiled regex may use this much memory; a bigger one never matches
/// (and says so once).
const REGEX_SIZE_LIMIT: usize = 2 << 20;

#[derive(Debug)]
pub struct LazyRegex {
    pattern: String,
    compiled: OnceLock<Option<Regex>>,
}

impl LazyRegex {
    /// Parses `source` (a `key:` of the file at `origin`) without compiling it.
    pub fn check(
        source: &Spanned<String>,
        key: &str,
        origin: &str,
    ) -> Result<LazyRegex, ParserFileError> {
        regex_syntax::ParserBuilder::new()
            .build()
            .parse(&source.value)
            .map_err(|e| {
                ParserFileError::new(
                    origin,
                    Some(source.referenced.line()),
                    format!("`{key}` is not a valid regex: {}", reason(&e.to_string())),
                )
            })?;
        Ok(LazyRegex {
            pattern: source.value.clone(),
            compiled: OnceLock::new(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    pub fn get(&self) -> Option<&Regex> {
        self.compiled
            .get_or_init(|| {
                let built = RegexBuilder::new(&self.pattern)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build();
                match built {
                    Ok(re) => Some(re),
                    Err(e) => {
                        eprintln!(
                            "pmon-agent: warning: the parser regex {:?} is left out: {}",
                            self.pattern,
                            reason(&e.to_string())
                        );
                        None
                    }
                }
            })
            .as_ref()
    }

    pub fn is_match(&self, line: &str) -> bool {
        self.get().is_some_and(|re| re.is_match(line))
    }

    /// The compiled regex (to name its captures) and its captures of `line`.
    pub fn captures<'h>(&self, line: &'h str) -> Option<(&Regex, Captures<'h>)> {
        let re = self.get()?;
        re.captures(line).map(|caps| (re, caps))
    }
}

/// regex draws the pattern with a caret under the fault over several lines;
/// a `file:line: reason` message keeps the reason and the column.
fn reason(text: &str) -> String {
    let why = text
        .lines()
        .find_map(|l| l.strip_prefix("error: "))
        .unwrap_or(text);
    let column = text
        .lines()
        .find(|l| !l.trim().is_empty() && l.trim().chars().all(|c| c == '^'))
        .and_then(|l| l.find('^'))
        .map(|c| c.saturating_sub(4) + 1);
    match column {
        Some(c) => format!("{why} (at column {c} of the pattern)"),
        None => why.to_string(),
    }
}
