//! Where things live: the data dir and the files in it.
//!
//! `--data-dir` > `$PMON_DATA_DIR` > `$XDG_DATA_HOME/pmon` > `~/.local/share/pmon`.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Resolves the data dir; the flag and `$PMON_DATA_DIR` arrive together via clap.
    pub fn resolve(flag: Option<&Path>) -> anyhow::Result<DataDir> {
        let root = match flag {
            Some(p) => p.to_path_buf(),
            None => crate::config::xdg_dir("XDG_DATA_HOME", ".local/share")
                .map(|d| d.join("pmon"))
                .ok_or_else(|| {
                    anyhow::anyhow!("cannot tell where to keep data: HOME is not set; pass --data-dir DIR or set PMON_DATA_DIR")
                })?,
        };
        Ok(DataDir { root })
    }

    /// The data dir at `root`, as already resolved (by the process that
    /// started this one).
    pub fn at(root: PathBuf) -> DataDir {
        DataDir { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The SQLite store (and, with PostgreSQL configured, the spool).
    pub fn db_path(&self) -> PathBuf {
        self.root.join("pmon.db")
    }

    /// The plain log file of a run: the text exactly as the program printed it.
    pub fn run_log_path(&self, experiment: &str, run_id: &str) -> PathBuf {
        self.root
            .join("logs")
            .join(safe_component(experiment))
            .join(format!("{run_id}.log"))
    }
}

/// Experiment names become directory names: keep them to one safe component.
pub fn safe_component(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect();
    match cleaned.as_str() {
        "" | "." | ".." => format!("_{cleaned}"),
        _ => cleaned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// User-given experiment names never leave `logs/` or reach another path.
    #[test]
    fn experiment_names_stay_one_component_inside_logs() {
        let data = DataDir {
            root: PathBuf::from("/data"),
        };
        for (name, dir) in [
            ("../../etc", ".._.._etc"),
            ("..", "_.."),
            (".", "_."),
            ("", "_"),
            ("a/b", "a_b"),
            ("nul\0x", "nul_x"),
            ("/abs", "_abs"),
        ] {
            let path = data.run_log_path(name, "R");
            assert_eq!(
                path,
                PathBuf::from(format!("/data/logs/{dir}/R.log")),
                "{name:?}"
            );
            assert!(path.starts_with("/data/logs"));
        }
    }
}
