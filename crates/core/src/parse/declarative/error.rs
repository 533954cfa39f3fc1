//! Why a parser file cannot be used, and where.

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
