//! The parser chain: which parser claims a line.
//!
//! Order: the user's declarative parsers, the shipped declarative ones, then
//! the built-in JSON, Python `logging` and logfmt parsers; the first that
//! claims a line wins. The declarative parsers' regexes are also compiled
//! into one [`RegexSet`], and a line is run through it once: only the
//! parsers whose pattern it matched are tried, so a line costs about one
//! regex scan however many parser files are loaded.

use super::declarative::{DeclarativeParser, LoadedParsers};
use super::json::JsonParser;
use super::line::{LineFields, LineParser};
use super::logline::{LogfmtParser, PythonLoggingParser};
use regex::{RegexSet, RegexSetBuilder, SetMatches};
use std::sync::Arc;

struct Entry {
    parser: Arc<dyn LineParser>,
    declarative: Option<Arc<DeclarativeParser>>,
    /// Its line regex's index in the prefilter set.
    line_pattern: Option<usize>,
}

/// Parsers tried in order; the first match wins.
pub struct ParserChain {
    entries: Vec<Entry>,
    /// Every declarative line regex, then every multiline start.
    prefilter: Option<RegexSet>,
    /// Pattern index (past the line regexes) → chain index of a start.
    starts: Vec<usize>,
    line_patterns: usize,
}

/// One line's pass through the prefilter.
pub struct LineScan(Option<SetMatches>);

/// `--parser` named a parser the chain does not have.
#[derive(Debug, thiserror::Error)]
#[error("no parser named '{name}': the parsers are {known} (see `pmon-agent parsers list`)")]
pub struct UnknownParser {
    pub name: String,
    pub known: String,
}

impl ParserChain {
    /// The parsers built into the agent, without any declarative one.
    pub fn builtin() -> ParserChain {
        ParserChain::new(Vec::new())
    }

    /// The declarative parsers (in order) before the built-in ones.
    pub fn new(declarative: Vec<Arc<DeclarativeParser>>) -> ParserChain {
        let builtin: Vec<Arc<dyn LineParser>> = vec![
            Arc::new(JsonParser),
            Arc::new(PythonLoggingParser),
            Arc::new(LogfmtParser),
        ];
        let mut entries: Vec<Entry> = declarative
            .into_iter()
            .map(|d| Entry {
                parser: d.clone(),
                declarative: Some(d),
                line_pattern: None,
            })
            .collect();
        entries.extend(builtin.into_iter().map(|parser| Entry {
            parser,
            declarative: None,
            line_pattern: None,
        }));
        ParserChain::index(entries)
    }

    /// The loaded parsers, restricted to `only` when it names any.
    pub fn select(loaded: &LoadedParsers, only: &[String]) -> Result<ParserChain, UnknownParser> {
        let full = ParserChain::new(loaded.parsers.clone());
        if only.is_empty() {
            return Ok(full);
        }
        for name in only {
            if !full.entries.iter().any(|e| e.parser.name() == name) {
                let known: Vec<&str> = full.entries.iter().map(|e| e.parser.name()).collect();
                return Err(UnknownParser {
                    name: name.clone(),
                    known: known.join(", "),
                });
            }
        }
        let entries = full
            .entries
            .into_iter()
            .filter(|e| only.iter().any(|n| n == e.parser.name()))
            .collect();
        Ok(ParserChain::index(entries))
    }

    fn index(mut entries: Vec<Entry>) -> ParserChain {
        let mut patterns: Vec<&str> = Vec::new();
        let mut line_patterns = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            if let Some(re) = e.declarative.as_ref().and_then(|d| d.regex.as_ref()) {
                line_patterns.push((i, patterns.len()));
                patterns.push(re.as_str());
            }
        }
        let line_count = patterns.len();
        let mut starts = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            if let Some(rule) = e.declarative.as_ref().and_then(|d| d.multiline.as_ref()) {
                starts.push(i);
                patterns.push(rule.start.as_str());
            }
        }
        // Each pattern compiled alone already; together they only fail
        // past the size limit, and then every line is simply tried in turn.
        let prefilter = (!patterns.is_empty())
            .then(|| {
                RegexSetBuilder::new(&patterns)
                    .size_limit(64 << 20)
                    .build()
                    .ok()
            })
            .flatten();
        if prefilter.is_some() {
            for (i, k) in line_patterns {
                entries[i].line_pattern = Some(k);
            }
        }
        ParserChain {
            entries,
            prefilter,
            starts,
            line_patterns: line_count,
        }
    }

    pub fn scan(&self, line: &str) -> LineScan {
        LineScan(self.prefilter.as_ref().map(|set| set.matches(line)))
    }

    /// Returns the index of the matching parser and what it extracted.
    pub fn parse(&self, line: &str) -> Option<(usize, LineFields)> {
        self.parse_scanned(line, &self.scan(line))
    }

    pub fn parse_scanned(&self, line: &str, scan: &LineScan) -> Option<(usize, LineFields)> {
        self.entries.iter().enumerate().find_map(|(i, e)| {
            if let (Some(k), Some(hits)) = (e.line_pattern, &scan.0) {
                if !hits.matched(k) {
                    return None;
                }
            }
            e.parser.parse(line).map(|f| (i, f))
        })
    }

    /// The first parser (chain index) whose multiline rule starts a record here.
    pub fn multiline_start(&self, line: &str, scan: &LineScan) -> Option<usize> {
        if self.starts.is_empty() {
            return None;
        }
        match &scan.0 {
            Some(hits) => (0..self.starts.len())
                .find(|k| hits.matched(self.line_patterns + k))
                .map(|k| self.starts[k]),
            None => self.starts.iter().copied().find(|&i| {
                self.entries[i]
                    .declarative
                    .as_ref()
                    .and_then(|d| d.multiline.as_ref())
                    .is_some_and(|m| m.start.is_match(line))
            }),
        }
    }

    pub fn declarative(&self, index: usize) -> Option<&Arc<DeclarativeParser>> {
        self.entries.get(index)?.declarative.as_ref()
    }

    pub fn name(&self, index: usize) -> &str {
        self.entries.get(index).map_or("none", |e| e.parser.name())
    }

    pub fn parsers(&self) -> impl Iterator<Item = &dyn LineParser> {
        self.entries.iter().map(|e| &*e.parser)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::declarative::{compile_source, ParserSource};

    fn parser(yaml: &str) -> Arc<DeclarativeParser> {
        let source = ParserSource {
            origin: "t.yml".into(),
            text: yaml.into(),
        };
        Arc::new(compile_source(&source).unwrap())
    }

    #[test]
    fn the_prefilter_only_lets_matching_parsers_try_and_the_first_wins() {
        let a = parser("name: a\nregex: '^A (?P<message>.*)'\n");
        let b = parser("name: b\nregex: '^A (?P<message>x.*)'\nlevels: {}\n");
        let chain = ParserChain::new(vec![a, b]);
        let (i, f) = chain.parse("A xyz").unwrap();
        assert_eq!((chain.name(i), f.message.as_str()), ("a", "xyz"));
        let (i, _) = chain.parse("WARNING:root:x").unwrap();
        assert_eq!(chain.name(i), "python-logging");
        assert!(chain.parse("plain words").is_none());
    }

    #[test]
    fn selection_keeps_the_named_parsers_and_refuses_unknown_names() {
        let loaded = LoadedParsers {
            parsers: vec![parser("name: a\nregex: '^A (?P<message>.*)'\n")],
            warnings: vec![],
        };
        let chain = ParserChain::select(&loaded, &["a".into()]).unwrap();
        assert!(chain.parse("WARNING:root:x").is_none());
        assert!(chain.parse("A b").is_some());
        let e = ParserChain::select(&loaded, &["nope".into()])
            .err()
            .unwrap();
        assert!(e.to_string().contains("python-logging"), "{e}");
    }
}
