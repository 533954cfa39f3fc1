//! Which files `tail` watches: the files named, the files in the directories
//! named that match the glob, and — once, at start — files rotated away while
//! the agent was not running (found by the inode their checkpoint names).

use super::StoredCheckpoint;
use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// A file-name pattern: `*` any run of characters, `?` one character. Without
/// a pattern every file matches except compressed ones (rotated `*.gz`).
#[derive(Debug, Clone, Default)]
pub struct Glob {
    pattern: Option<String>,
}

const COMPRESSED: [&str; 6] = [".gz", ".bz2", ".xz", ".zst", ".zip", ".lz4"];

impl Glob {
    pub fn new(pattern: Option<&str>) -> Glob {
        Glob {
            pattern: pattern.map(str::to_string),
        }
    }

    pub fn matches(&self, name: &str) -> bool {
        match &self.pattern {
            Some(p) => wildcard(p.as_bytes(), name.as_bytes()),
            None => !COMPRESSED.iter().any(|ext| name.ends_with(ext)),
        }
    }
}

fn wildcard(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => wildcard(&p[1..], s) || (!s.is_empty() && wildcard(p, &s[1..])),
        (Some(b'?'), Some(_)) => wildcard(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => wildcard(&p[1..], &s[1..]),
        _ => false,
    }
}

/// Regular files at the watched paths now.
pub fn candidates(paths: &[PathBuf], glob: &Glob) -> Vec<(PathBuf, Metadata)> {
    let mut found = Vec::new();
    for path in paths {
        let Ok(meta) = std::fs::metadata(path) else {
            continue;
        };
        if meta.is_dir() {
            found.extend(dir_files(path, glob));
        } else if meta.is_file() {
            found.push((path.clone(), meta));
        }
    }
    found
}

fn dir_files(dir: &Path, glob: &Glob) -> Vec<(PathBuf, Metadata)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<(PathBuf, Metadata)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_str().is_some_and(|n| glob.matches(n)))
        .filter_map(|e| {
            let path = e.path();
            let meta = std::fs::metadata(&path).ok()?;
            meta.is_file().then_some((path, meta))
        })
        .collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    files
}

/// True if `path` is one of the named files, or in a named directory and
/// matching the glob.
pub fn is_watched(path: &Path, paths: &[PathBuf], glob: &Glob) -> bool {
    paths.iter().any(|p| {
        p == path
            || (path.parent() == Some(p.as_path())
                && path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| glob.matches(n)))
    })
}

/// Files beside a named file whose inode has a checkpoint: the named file was
/// rotated while the agent was away, and the rest of it must be read first.
pub fn rotated_while_away(
    paths: &[PathBuf],
    checkpoints: &HashMap<(u64, u64), StoredCheckpoint>,
) -> Vec<(PathBuf, Metadata)> {
    let mut found = Vec::new();
    for path in paths.iter().filter(|p| !p.is_dir()) {
        let Some(dir) = path.parent().map(|d| {
            if d.as_os_str().is_empty() {
                Path::new(".")
            } else {
                d
            }
        }) else {
            continue;
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let Ok(meta) = std::fs::metadata(entry.path()) else {
                continue;
            };
            if meta.is_file() && checkpoints.contains_key(&(meta.dev(), meta.ino())) {
                found.push((entry.path(), meta));
            }
        }
    }
    found
}

/// Named paths that are FIFOs.
pub fn fifos(paths: &[PathBuf]) -> Vec<PathBuf> {
    paths
        .iter()
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.file_type().is_fifo()))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_names_and_the_default_skips_compressed_files() {
        let any = Glob::new(None);
        assert!(any.matches("app.log") && any.matches("app.log.1"));
        assert!(!any.matches("app.log.2.gz"));
        let logs = Glob::new(Some("*.log"));
        assert!(logs.matches("app.log") && !logs.matches("app.log.1"));
        assert!(Glob::new(Some("app-??.log")).matches("app-01.log"));
    }
}
