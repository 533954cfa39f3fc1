//! Configuration: built-in defaults, then a `config.yml`, then `PMON_*`
//! environment variables, then flags.
//!
//! What a pipeline is belongs here; how one invocation behaves belongs in flags.
//! Unknown keys and wrong types are errors that name the file, line and key.
//! The documented default file is built into the binary (`config default`).

use crate::options::{NotifyOn, NotifyOverride};
use crate::record::Level;
use serde::{Deserialize, Deserializer};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The documented default configuration, as shipped at the top of the repository.
pub const DEFAULT_CONFIG: &str = include_str!("../../../config.yml");

#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub logging: LoggingConfig,
    pub monitoring: MonitoringConfig,
    pub parsers: ParsersConfig,
    pub daemon: DaemonConfig,
    pub pipeline: PipelineConfig,
    pub notify: NotifyConfig,
}

/// What happens when a run fails, crashes, is lost or killed for memory, a
/// daemon gives up, or a new error group appears (see `notify`).
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Which happenings notify.
    pub on: Vec<NotifyOn>,
    /// Run by `sh -c` with the notification as JSON on stdin and `PMON_*` variables.
    pub command: Option<String>,
    /// An HTTP(S) URL that receives the notification as a JSON POST.
    pub webhook: Option<String>,
    /// How long one webhook request or one run of the command may take.
    #[serde(deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// A webhook that cannot be reached or answers 5xx/429 is tried again this
    /// many times, waiting 1s, 2s, 4s… between tries.
    pub retries: u32,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            on: vec![
                NotifyOn::Failed,
                NotifyOn::Crashed,
                NotifyOn::Lost,
                NotifyOn::RestartGaveUp,
                NotifyOn::Oom,
                NotifyOn::NewErrorGroup,
            ],
            command: None,
            webhook: None,
            timeout: Duration::from_secs(10),
            retries: 3,
        }
    }
}

/// A webhook URL is a secret (a Slack incoming webhook's path is its key):
/// debug output shows its scheme and host only.
impl std::fmt::Debug for NotifyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyConfig")
            .field("on", &self.on)
            .field("command", &self.command)
            .field("webhook", &self.webhook.as_deref().map(redact_webhook))
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .finish()
    }
}

impl NotifyConfig {
    /// The configuration with a run's `--notify` flags applied.
    pub fn with_override(&self, flags: Option<&NotifyOverride>) -> NotifyConfig {
        let mut config = self.clone();
        let Some(flags) = flags else {
            return config;
        };
        if !flags.targets.is_empty() {
            config.webhook = None;
            config.command = None;
            for target in &flags.targets {
                if target == "none" {
                    config.webhook = None;
                    config.command = None;
                } else if is_url(target) {
                    config.webhook = Some(target.clone());
                } else {
                    config.command = Some(target.clone());
                }
            }
        }
        if let Some(on) = &flags.on {
            config.on = on.clone();
        }
        config
    }

    /// Whether `what` is to be sent anywhere.
    pub fn wants(&self, what: NotifyOn) -> bool {
        self.on.contains(&what) && (self.webhook.is_some() || self.command.is_some())
    }
}

fn is_url(target: &str) -> bool {
    target.starts_with("http://") || target.starts_with("https://")
}

/// The webhook's scheme and host, for messages: its path may be its key.
pub fn redact_webhook(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(a webhook URL)".into();
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit('@').next().unwrap_or(host);
    format!("{scheme}://{host}/…")
}

/// What `run_monitored.sh` runs when no command follows `--`.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    pub command: Option<PipelineCommand>,
}

/// A command as a list of arguments, or as one string run by `sh -c`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(
    untagged,
    expecting = "a list of arguments ([python3, train.py]) or one command line"
)]
pub enum PipelineCommand {
    Args(Vec<String>),
    Shell(String),
}

impl PipelineCommand {
    /// The arguments to execute.
    pub fn argv(&self) -> Vec<String> {
        match self {
            PipelineCommand::Args(args) => args.clone(),
            PipelineCommand::Shell(line) => vec!["sh".into(), "-c".into(), line.clone()],
        }
    }
}

/// Restart policy limits for `daemon start --restart on-failure|always`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// The first restart waits this long; each next one twice as long.
    #[serde(deserialize_with = "de_duration")]
    pub first_backoff: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub max_backoff: Duration,
    /// More restarts than this within `restart_window` and the supervisor gives up.
    pub max_restarts: u32,
    #[serde(deserialize_with = "de_duration")]
    pub restart_window: Duration,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            max_restarts: 5,
            restart_window: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// Records below this level are not stored.
    #[serde(deserialize_with = "de_level")]
    pub level: Level,
    pub database: DatabaseConfig,
}

#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// PostgreSQL URL; `None` means the embedded SQLite store.
    pub url: Option<String>,
    /// Records per batch.
    pub batch_size: usize,
    /// Longest time a record waits in a batch.
    #[serde(deserialize_with = "de_duration")]
    pub flush_interval: Duration,
    /// The spool stops growing at this size; further records are counted as dropped.
    pub spool_max_bytes: u64,
    /// While PostgreSQL is unreachable it is tried again after this long,
    /// then twice as long after each failure, up to `retry_max_backoff`.
    #[serde(deserialize_with = "de_duration")]
    pub retry_first_backoff: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub retry_max_backoff: Duration,
    /// At exit, how long the agent may spend shipping what waits in the spool.
    #[serde(deserialize_with = "de_duration")]
    pub shutdown_timeout: Duration,
    /// Records older than this are pruned by daemons (and `db prune` takes
    /// it as its default); `None` keeps everything.
    #[serde(deserialize_with = "de_opt_duration")]
    pub retention: Option<Duration>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MonitoringConfig {
    #[serde(deserialize_with = "de_duration")]
    pub metrics_interval: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub progress_update_interval: Duration,
    /// No output, no progress and under 2% CPU this long: a `stall` event.
    /// Zero turns the detector off.
    #[serde(deserialize_with = "de_duration")]
    pub stall_after: Duration,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ParsersConfig {
    /// Directories of declarative parser definitions.
    pub paths: Vec<PathBuf>,
    /// Longer lines are capped with a marker.
    pub max_line_bytes: usize,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: Level::Info,
            database: DatabaseConfig::default(),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: None,
            batch_size: 100,
            flush_interval: Duration::from_secs(5),
            spool_max_bytes: 1 << 30,
            retry_first_backoff: Duration::from_millis(500),
            retry_max_backoff: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(10),
            retention: None,
        }
    }
}

/// The URL's password never appears in debug output.
impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("batch_size", &self.batch_size)
            .field("flush_interval", &self.flush_interval)
            .field("spool_max_bytes", &self.spool_max_bytes)
            .field("retry_first_backoff", &self.retry_first_backoff)
            .field("retry_max_backoff", &self.retry_max_backoff)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("retention", &self.retention)
            .finish()
    }
}

impl Default for MonitoringConfig {
    fn default() -> Self {
        MonitoringConfig {
            metrics_interval: Duration::from_secs(10),
            progress_update_interval: Duration::from_secs(5),
            stall_after: Duration::from_secs(30 * 60),
        }
    }
}

impl Default for ParsersConfig {
    fn default() -> Self {
        ParsersConfig {
            paths: vec![PathBuf::from("parsers")],
            max_line_bytes: 1 << 20,
        }
    }
}

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
    fn discover(locations: &[PathBuf]) -> Loaded {
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

/// A database URL must be PostgreSQL's: another scheme (`mysql://`, a bare
/// host) is a mistake to say before anything runs, not an outage to retry.
pub fn check_database_url(url: &str) -> Result<(), String> {
    let scheme = url.split_once("://").map(|(scheme, _)| scheme);
    match scheme {
        Some(s) if s.eq_ignore_ascii_case("postgres") || s.eq_ignore_ascii_case("postgresql") => {
            Ok(())
        }
        Some(other) => Err(format!(
            "the database URL {} is not a PostgreSQL URL (its scheme is {other}://); pmon-agent stores records in PostgreSQL: use postgres://user@host:5432/dbname, or remove the URL to use the embedded SQLite store",
            redact_url(url)
        )),
        None => Err(format!(
            "the database URL {} is not a URL; use postgres://user@host:5432/dbname, or remove it to use the embedded SQLite store",
            redact_url(url)
        )),
    }
}

fn default_locations() -> Vec<PathBuf> {
    let mut paths = vec![PathBuf::from("config.yml")];
    if let Some(dir) = xdg_dir("XDG_CONFIG_HOME", ".config") {
        paths.push(dir.join("pmon").join("config.yml"));
    }
    paths
}

/// `$VAR` if set and absolute, else `~/<fallback>`.
pub fn xdg_dir(var: &str, fallback: &str) -> Option<PathBuf> {
    match std::env::var_os(var).map(PathBuf::from) {
        Some(p) if p.is_absolute() => Some(p),
        _ => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(fallback)),
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`, and
/// `?password=secret` → `?password=***`.
pub fn redact_url(url: &str) -> String {
    let redacted = redact_userinfo(url);
    match redacted.find("password=") {
        Some(pos) => {
            let value_start = pos + "password=".len();
            let value_end = redacted[value_start..]
                .find('&')
                .map_or(redacted.len(), |e| value_start + e);
            format!("{}***{}", &redacted[..value_start], &redacted[value_end..])
        }
        None => redacted,
    }
}

fn redact_userinfo(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}{}:***{}",
            &url[..scheme_end + 3],
            &authority[..colon],
            &rest[at..]
        ),
        _ => url.to_string(),
    }
}

/// Seconds as a number (`5`, `2.5`) or a humantime string (`5s`, `250ms`, `1h`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(secs)
            .map_err(|_| format!("'{text}' is not a duration of zero or more seconds"));
    }
    humantime::parse_duration(text).map_err(|e| {
        format!("'{text}' is not a duration ({e}); use seconds like 5.0 or 5s, 250ms, 1h")
    })
}

fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    #[derive(Deserialize)]
    struct Wrapped(#[serde(deserialize_with = "de_duration")] Duration);
    Ok(Option::<Wrapped>::deserialize(d)?.map(|w| w.0))
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(f64),
        Text(String),
    }
    let text = match Raw::deserialize(d)? {
        Raw::Number(n) => n.to_string(),
        Raw::Text(t) => t,
    };
    parse_duration(&text).map_err(serde::de::Error::custom)
}

fn de_level<'de, D: Deserializer<'de>>(d: D) -> Result<Level, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_readable_config_with_a_password_is_warned_about() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yml");
        let with = "logging:\n  database:\n    url: postgres://u:s3cret@db/x\n";
        std::fs::write(&path, with).unwrap();
        let set =
            |mode| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        set(0o644);
        let config = Config::from_file(&path).unwrap();
        let warning = config.exposed_password_warning(&path).unwrap();
        assert!(
            warning.contains("mode 644")
                && warning.contains("chmod 600")
                && !warning.contains("s3cret"),
            "{warning}"
        );
        set(0o600);
        assert_eq!(config.exposed_password_warning(&path), None);
        set(0o644);
        std::fs::write(&path, "logging:\n  database:\n    url: postgres://u@db/x\n").unwrap();
        let config = Config::from_file(&path).unwrap();
        assert_eq!(
            config.exposed_password_warning(&path),
            None,
            "no password, nothing to hide"
        );
    }

    #[test]
    fn the_shipped_config_is_the_default() {
        assert_eq!(
            Config::from_yaml(DEFAULT_CONFIG).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn durations_accept_numbers_and_humantime() {
        let c = Config::from_yaml("logging:\n  database:\n    flush_interval: 250ms\nmonitoring:\n  metrics_interval: 2\n").unwrap();
        assert_eq!(
            c.logging.database.flush_interval,
            Duration::from_millis(250)
        );
        assert_eq!(c.monitoring.metrics_interval, Duration::from_secs(2));
    }

    #[test]
    fn unknown_keys_and_wrong_types_name_the_key_and_line() {
        let e = Config::from_yaml("logging:\n  level: INFO\n  databse: {}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("databse") && e.contains('3'), "{e}");
        let e = Config::from_yaml("logging:\n  database:\n    batch_size: lots\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("batch_size") || e.contains('3'), "{e}");
        let e = Config::from_yaml("logging:\n  level: LOUD\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("LOUD"), "{e}");
    }

    #[test]
    fn a_named_file_is_strict_and_its_errors_name_the_file_line_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pmon.yml");
        std::fs::write(&path, "logging:\n  levl: INFO\n").unwrap();
        let e = Config::load(Some(&path)).unwrap_err().to_string();
        let name = path.display().to_string();
        assert!(
            e.contains(&format!("{name}:2:3")) && e.contains("unknown field `levl`"),
            "{e}"
        );
        assert!(!e.contains("<input>"), "{e}");
    }

    /// Writes `files` (name, text) into a temp dir; returns it and their paths.
    fn locations(files: &[(&str, &str)]) -> (tempfile::TempDir, Vec<PathBuf>) {
        let dir = tempfile::tempdir().unwrap();
        let paths = files
            .iter()
            .map(|(name, text)| {
                let path = dir.path().join(name);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, text).unwrap();
                path
            })
            .collect();
        (dir, paths)
    }

    #[test]
    fn a_discovered_file_that_is_not_ours_is_skipped_for_the_next_one() {
        let hydra = "defaults:\n  - model: resnet\nmodel:\n  layers: 50\ntrainer:\n  epochs: 3\n";
        let ours = "logging:\n  level: WARNING\n";
        let (_dir, paths) = locations(&[("config.yml", hydra), ("xdg/pmon/config.yml", ours)]);
        let loaded = Config::discover(&paths);
        assert_eq!(loaded.path.as_deref(), Some(paths[1].as_path()));
        assert_eq!(loaded.config.logging.level, Level::Warning);
        assert_eq!(loaded.skipped.len(), 1);
        let notice = loaded.skipped[0].to_string();
        assert!(
            notice.starts_with(&format!(
                "{} is not a pmon-agent configuration (",
                paths[0].display()
            )) && notice.contains("defaults")
                && notice.ends_with("name it with --config or PMON_CONFIG")
                && !notice.contains('\n'),
            "{notice}"
        );
    }

    #[test]
    fn our_top_level_keys_with_foreign_sections_are_not_ours_either() {
        // A `logging.config.dictConfig` file: `logging:` is one of our keys,
        // but its contents are the standard library's.
        let dict_config = "logging:\n  version: 1\n  handlers:\n    console:\n      class: logging.StreamHandler\n";
        let not_yaml = "model: [unclosed\n";
        let a_list = "- one\n- two\n";
        for text in [dict_config, not_yaml, a_list] {
            let (_dir, paths) = locations(&[("config.yml", text)]);
            let loaded = Config::discover(&paths);
            assert_eq!(loaded.path, None, "{text}");
            assert_eq!(loaded.config, Config::default());
            assert_eq!(loaded.skipped.len(), 1, "{text}");
        }
    }

    #[test]
    fn a_discovered_file_of_ours_is_used() {
        let (_dir, paths) = locations(&[
            ("config.yml", "monitoring:\n  metrics_interval: 2\n"),
            ("xdg/pmon/config.yml", "logging:\n  level: ERROR\n"),
        ]);
        let loaded = Config::discover(&paths);
        assert_eq!(loaded.path.as_deref(), Some(paths[0].as_path()));
        assert_eq!(
            loaded.config.monitoring.metrics_interval,
            Duration::from_secs(2)
        );
        assert!(loaded.skipped.is_empty());
        let (_dir, empty) = locations(&[("config.yml", "")]);
        assert_eq!(
            Config::discover(&empty).path.as_deref(),
            Some(empty[0].as_path())
        );
    }

    #[test]
    fn database_urls_must_be_postgresql_urls() {
        assert_eq!(check_database_url("postgres://u@h/db"), Ok(()));
        assert_eq!(
            check_database_url("postgresql://u@h:5433/db?sslmode=require"),
            Ok(())
        );
        let e = check_database_url("mysql://root:s3cret@h/db").unwrap_err();
        assert!(
            e.contains("not a PostgreSQL URL (its scheme is mysql://)") && !e.contains("s3cret"),
            "{e}"
        );
        assert!(check_database_url("localhost:5432")
            .unwrap_err()
            .contains("is not a URL"));
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:s3cret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact_url("postgres://h/db?user=u&password=pw&sslmode=off"),
            "postgres://h/db?user=u&password=***&sslmode=off"
        );
        let c = DatabaseConfig {
            url: Some("postgres://u:s3cret@h/db".into()),
            ..Default::default()
        };
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn flags_replace_the_configured_targets_and_triggers() {
        let config = NotifyConfig {
            webhook: Some("https://hooks.example/a".into()),
            ..NotifyConfig::default()
        };
        let flags = NotifyOverride::from_flags(&["./page-me.sh".into()], &[NotifyOn::Crashed]);
        let applied = config.with_override(flags.as_ref());
        assert_eq!(applied.webhook, None);
        assert_eq!(applied.command.as_deref(), Some("./page-me.sh"));
        assert!(applied.wants(NotifyOn::Crashed));
        assert!(!applied.wants(NotifyOn::Failed));
        let off = NotifyOverride::from_flags(&["none".into()], &[]);
        assert!(!config.with_override(off.as_ref()).wants(NotifyOn::Crashed));
        assert_eq!(NotifyOverride::from_flags(&[], &[]), None);
        assert_eq!(config.with_override(None), config);
    }

    #[test]
    fn nothing_is_wanted_without_a_target() {
        assert!(!NotifyConfig::default().wants(NotifyOn::Failed));
    }

    #[test]
    fn a_webhook_is_shown_by_its_host_only() {
        assert_eq!(
            redact_webhook("https://hooks.slack.com/services/T0/B0/secret"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            redact_webhook("http://u:pw@127.0.0.1:9/x"),
            "http://127.0.0.1:9/…"
        );
    }
}
