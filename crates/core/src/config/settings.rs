//! The configuration's shape: every section and key with its default, as
//! `config.yml` documents them.

use super::values::{parse_duration, redact_url};
use crate::options::{NotifyOn, NotifyOverride};
use crate::record::Level;
use serde::{Deserialize, Deserializer};
use std::path::PathBuf;
use std::time::Duration;

/// The documented default configuration, as shipped at the top of the repository.
pub const DEFAULT_CONFIG: &str = include_str!("../../../../config.yml");

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
