//! Where parser files come from (the shipped ones compiled in, a user's
//! directories) and compiling one; which files a run uses is
//! `parse::catalog`'s, which checks each by its examples.

use super::compile::DeclarativeParser;
use super::error::ParserFileError;
use super::format;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// The declarative parsers of one run, in chain order, and what was skipped.
#[derive(Default)]
pub struct LoadedParsers {
    pub parsers: Vec<Arc<DeclarativeParser>>,
    /// Files left out (when not strict) and names given twice.
    pub warnings: Vec<String>,
}
