//! Finding and reading the configuration: a named file strictly, a found
//! one only if it is wholly pmon-agent's, then the environment on top.

use super::settings::Config;
use super::values::{redact_url, xdg_dir};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("could not read the config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("invalid {name}='{value}': {message}")]
    Env {
        name: &'static str,
        value: String,
        message: String,
    },
}

/// The configuration in effect and where it came from.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    /// The file it was read from; `None`: the built-in defaults.
    pub path: Option<PathBuf>,
    /// Files discovery found and passed over because they are not
    /// pmon-agent's (a project's own `config.yml`).
    pub skipped: Vec<ForeignConfig>,
}

/// A file in a default location that is not a pmon-agent configuration:
/// most ML projects keep their own `config.yml` (Hydra and friends read
/// exactly that name), which must never stop a program from running.
#[derive(Debug, Clone, PartialEq)]
pub struct ForeignConfig {
    pub path: PathBuf,
    /// Why it is not pmon-agent's, on one line.
    pub why: String,
}

impl std::fmt::Display for ForeignConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is not a pmon-agent configuration ({}), so it was skipped; to use it anyway, name it with --config or PMON_CONFIG",
            self.path.display(),
            self.why
        )
    }
}

impl Config {
    /// Loads the configuration in effect and applies the environment on top.
    /// A file named by `--config`/`PMON_CONFIG` (`explicit`) must exist and
    /// be valid. A file found in a default location is used only if it is
    /// wholly pmon-agent's (every top-level key one of ours, every section
    /// valid); any other is skipped and the next location is tried.
    pub fn load(explicit: Option<&Path>) -> Result<Loaded, ConfigError> {
        let mut loaded = match explicit {
            Some(path) => Loaded {
                config: Config::from_file(path)?,
                path: Some(path.to_path_buf()),
                skipped: Vec::new(),
            },
            None => Config::discover(&default_locations()),
        };
        loaded.config.apply_env()?;
        Ok(loaded)
    }

    /// The first of `locations` that holds a pmon-agent configuration, and
    /// the files passed over before it.
    pub(super) fn discover(locations: &[PathBuf]) -> Loaded {
        let mut skipped = Vec::new();
        for path in locations.iter().filter(|p| p.is_file()) {
            let parsed = std::fs::read_to_string(path)
                .map_err(|e| format!("it cannot be read: {e}"))
                .and_then(|text| Config::from_yaml(&text).map_err(|e| e.summary()));
            match parsed {
                Ok(config) => {
                    return Loaded {
                        config,
                        path: Some(path.clone()),
                        skipped,
                    }
                }
                Err(why) => skipped.push(ForeignConfig {
                    path: path.clone(),
                    why,
                }),
            }
        }
        Loaded {
            config: Config::default(),
            path: None,
            skipped,
        }
    }

    /// A config file that holds a database password and that other users
    /// can read gives the password away: the warning to print, if so.
    pub fn exposed_password_warning(&self, path: &Path) -> Option<String> {
        use std::os::unix::fs::PermissionsExt;
        let url = self.logging.database.url.as_deref()?;
        if redact_url(url) == url {
            return None;
        }
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
        (mode & 0o044 != 0).then(|| {
            format!(
                "{} holds a database password and other users can read it (mode {mode:o}); chmod 600 it, or keep the password in ~/.pgpass or PGPASSWORD and the URL without it",
                path.display()
            )
        })
    }

    /// Reads a configuration file strictly: an error names the file, the
    /// line and the key.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_yaml(&text).map_err(|e| ConfigError::Invalid {
            path: path.to_path_buf(),
            message: e.render(&path.display().to_string()),
        })
    }

    pub fn from_yaml(text: &str) -> Result<Config, YamlError> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        let config: Config = serde_saphyr::from_str(text).map_err(YamlError::Parse)?;
        if config.logging.database.batch_size == 0 {
            return Err(YamlError::Check(
                "logging.database.batch_size must be at least 1".into(),
            ));
        }
        Ok(config)
    }

    fn apply_env(&mut self) -> Result<(), ConfigError> {
        if let Ok(value) = std::env::var("PMON_LOG_LEVEL") {
            self.logging.level = value.parse().map_err(|message| ConfigError::Env {
                name: "PMON_LOG_LEVEL",
                value: value.clone(),
                message,
            })?;
        }
        Ok(())
    }
}

/// Why a configuration text is not valid.
#[derive(Debug)]
pub enum YamlError {
    /// Not YAML, or not the shape of [`Config`] (with a line and column).
    Parse(serde_saphyr::Error),
    /// Well-formed, but a value is out of bounds.
    Check(String),
}

impl YamlError {
    /// The error with the file's name and a snippet of the lines around it.
    pub fn render(&self, source_name: &str) -> String {
        match self {
            YamlError::Parse(e) => {
                let options = serde_saphyr::render_options! { source_name: Some(source_name) };
                e.render_with_options(options)
                    .trim_start_matches("error: ")
                    .to_string()
            }
            YamlError::Check(message) => message.clone(),
        }
    }

    /// The error on one line, without a snippet: `line 3: unknown field …`.
    pub fn summary(&self) -> String {
        match self {
            YamlError::Parse(e) => {
                let text = e.without_snippet().to_string();
                let text = text
                    .lines()
                    .next()
                    .unwrap_or("not valid YAML")
                    .trim_start_matches("error: ");
                // serde-saphyr ends its message with the place, or starts with it.
                let text = match text.rfind(" at line ") {
                    Some(at) => &text[..at],
                    None => text,
                };
                let text = text
                    .split_once(": ")
                    .filter(|(place, _)| place.starts_with("line "))
                    .map_or(text, |(_, rest)| rest);
                match e.location() {
                    Some(at) => format!("line {}: {text}", at.line()),
                    None => text.to_string(),
                }
            }
            YamlError::Check(message) => message.clone(),
        }
    }
}

impl std::fmt::Display for YamlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.summary())
    }
}

fn default_locations() -> Vec<PathBuf> {
    let mut paths = vec![PathBuf::from("config.yml")];
    if let Some(dir) = xdg_dir("XDG_CONFIG_HOME", ".config") {
        paths.push(dir.join("pmon").join("config.yml"));
    }
    paths
}
