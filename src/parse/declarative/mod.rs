//! Declarative parsers: log formats and other languages' stack traces taught
//! to the agent by a YAML file instead of a rebuild.
//!
//! A parser file (`parsers/*.yml`, documented in `parsers/EXAMPLE.yml`) names
//! a line `regex` whose named captures become record fields (`level`,
//! `logger`, `message`, `timestamp`, `exception_type`, `exception_message`,
//! `progress_*`; any other capture lands in the record's `fields` JSON), a
//! `levels:` map, and optionally `multiline:` rules for a record that spans
//! lines (a Java or Go stack trace): `start`, `continue`, `end`, `timeout`.
//! Its `examples:` say what must come out of given input, and are run by
//! `parsers check` and, for a user's own files, at every start.
//!
//! The parsers shipped in the repository's `parsers/` are compiled into the
//! binary (see `build.rs`), so an installed agent has them without a
//! checkout; a user's directories (`parsers.paths`) come before them, and a
//! user parser with a shipped one's name replaces it.

mod compile;
mod examples;
mod format;
mod multiline;

pub use compile::DeclarativeParser;
pub use examples::run_examples;
pub use multiline::{Fed, Finished, MultilineRecord};

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A parser file that cannot be used: where, and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{origin}{}: {reason}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ParserFileError {
    pub origin: String,
    pub line: Option<u64>,
    pub reason: String,
}

impl ParserFileError {
    pub fn new(origin: &str, line: Option<u64>, reason: String) -> ParserFileError {
        ParserFileError {
            origin: origin.to_string(),
            line,
            reason,
        }
    }
}

/// The text of one parser file and where it came from.
pub struct ParserSource {
    /// The path as the user wrote it, or `shipped:NAME.yml`.
    pub origin: String,
    pub text: String,
}

/// The files of `parsers/` as they were when the agent was built.
const SHIPPED: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/shipped_parsers.rs"));

pub fn shipped_sources() -> Vec<ParserSource> {
    SHIPPED
        .iter()
        .map(|(file, text)| ParserSource {
            origin: format!("shipped:{file}"),
            text: (*text).to_string(),
        })
        .collect()
}

/// Every `*.yml`/`*.yaml` file in `dir`, by name. A directory that does not
/// exist has none (the default `parsers` usually does not).
pub fn dir_sources(dir: &Path) -> Result<Vec<ParserSource>, ParserFileError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(ParserFileError::new(
                &dir.display().to_string(),
                None,
                format!("could not read the parsers directory: {e}"),
            ))
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yml" || x == "yaml"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let origin = path.display().to_string();
            let text = std::fs::read_to_string(&path).map_err(|e| {
                ParserFileError::new(&origin, None, format!("could not read the file: {e}"))
            })?;
            Ok(ParserSource { origin, text })
        })
        .collect()
}

/// Reads and compiles one file (its examples are not run here).
pub fn compile_source(source: &ParserSource) -> Result<DeclarativeParser, ParserFileError> {
    let file: format::ParserFile = serde_saphyr::from_str(&source.text).map_err(|e| {
        let line = e.location().map(|l| l.line());
        ParserFileError::new(&source.origin, line, yaml_reason(&e.to_string()))
    })?;
    DeclarativeParser::compile(file, &source.origin)
}

/// The YAML error without the location the caller already shows.
fn yaml_reason(text: &str) -> String {
    let first = text.lines().next().unwrap_or(text).trim();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    match first.strip_prefix("line ").and_then(|r| r.split_once(' ')) {
        Some((n, rest)) if n.bytes().all(|b| b.is_ascii_digit()) => rest.to_string(),
        _ => first.to_string(),
    }
}

/// Compiles a file and runs its examples: the check every user file passes
/// before it is used.
pub fn load_checked(source: &ParserSource) -> Result<Arc<DeclarativeParser>, ParserFileError> {
    let parser = Arc::new(compile_source(source)?);
    if let Some(failure) = run_examples(&parser).into_iter().next() {
        return Err(ParserFileError::new(
            &source.origin,
            Some(failure.line),
            format!("example {} fails: {}", failure.index + 1, failure.short()),
        ));
    }
    Ok(parser)
}

/// The declarative parsers of one run, in chain order, and what was skipped.
#[derive(Default)]
pub struct LoadedParsers {
    pub parsers: Vec<Arc<DeclarativeParser>>,
    /// Files left out (when not strict) and names given twice.
    pub warnings: Vec<String>,
}

/// The user's directories, in order, then the shipped parsers. `strict`:
/// a broken user file is an error (at start); otherwise it is skipped with
/// a warning (a shipper restarted under a running program must go on).
pub fn load(dirs: &[PathBuf], strict: bool) -> Result<LoadedParsers, ParserFileError> {
    let mut loaded = LoadedParsers::default();
    for dir in dirs {
        let sources = match dir_sources(dir) {
            Ok(s) => s,
            Err(e) if strict => return Err(e),
            Err(e) => {
                loaded.warnings.push(e.to_string());
                continue;
            }
        };
        for source in sources {
            match load_checked(&source) {
                Ok(p) => add(&mut loaded, p, false),
                Err(e) if strict => return Err(e),
                Err(e) => loaded.warnings.push(format!("{e} (parser left out)")),
            }
        }
    }
    for source in shipped_sources() {
        match compile_source(&source) {
            Ok(p) => add(&mut loaded, Arc::new(p), true),
            Err(e) => loaded.warnings.push(e.to_string()),
        }
    }
    Ok(loaded)
}

fn add(loaded: &mut LoadedParsers, parser: Arc<DeclarativeParser>, shipped: bool) {
    if let Some(first) = loaded.parsers.iter().find(|p| p.name == parser.name) {
        // A user's parser replaces the shipped one of its name, quietly; two
        // of the user's own with one name is worth a word.
        if !shipped {
            loaded.warnings.push(format!(
                "{}: a parser named '{}' is already defined in {}; this one is left out",
                parser.origin, parser.name, first.origin
            ));
        }
        return;
    }
    loaded.parsers.push(parser);
}
