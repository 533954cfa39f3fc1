//! Command-line definitions (clap derive). Only the shape of the CLI lives here;
//! each command's behaviour is in its own module.

pub mod docs;
mod examples;

use clap::{Args, Parser, Subcommand, ValueEnum};
use pmon_core::options::Format;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "pmon-agent",
    version,
    about = "Wrap or tail long-running pipelines, keep whole Python tracebacks, store and query their logs.",
    propagate_version = true,
    after_help = examples::ROOT
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// `pmon-agent wrap …` alone: what `pmon-agent-holder` parses the command
/// line with, so that the holder carries no other command's code. Anything
/// it does not take (help, a mistake) goes back to `pmon-agent` and [`Cli`],
/// which says it as for every command.
#[derive(Debug, Parser)]
#[command(name = "pmon-agent")]
pub struct WrapCli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: WrapOnly,
}

#[derive(Debug, Subcommand)]
pub enum WrapOnly {
    Wrap(WrapArgs),
}

#[derive(Debug, Args, Clone)]
pub struct GlobalArgs {
    /// Configuration file [default: ./config.yml, then $XDG_CONFIG_HOME/pmon/config.yml]
    #[arg(long, global = true, env = "PMON_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where the SQLite store, logs and state live [default: $XDG_DATA_HOME/pmon]
    #[arg(long, global = true, env = "PMON_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL URL; without one the embedded SQLite store is used
    #[arg(
        long,
        global = true,
        env = "PMON_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// (internal) Do not repeat warnings about the config file
    #[arg(long, global = true, hide = true)]
    pub quiet_config: bool,
    /// Say what the agent does on stderr: -v files, connections, runs; -vv each batch; -vvv everything (finer: PMON_LOG=sink=debug,tail=trace)
    #[arg(short = 'v', long = "verbose", global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command, echo its output unchanged, and store its logs
    #[command(after_help = examples::WRAP)]
    Wrap(WrapArgs),
    /// Follow log files, directories (new files too) and named pipes
    #[command(after_help = examples::TAIL)]
    Tail(TailArgs),
    /// Read log lines from standard input (`prog 2>&1 | pmon-agent ingest -e x`)
    #[command(after_help = examples::INGEST)]
    Ingest(IngestArgs),
    /// Ask the store about experiments, runs and their logs
    #[command(subcommand)]
    #[command(after_help = examples::QUERY)]
    Query(QueryCommand),
    /// Run commands in the background, supervised: start, status, logs, pause, resume, stop
    #[command(subcommand)]
    #[command(after_help = examples::DAEMON)]
    Daemon(DaemonCommand),
    /// Records waiting for PostgreSQL in the local spool
    #[command(subcommand)]
    #[command(after_help = examples::SPOOL)]
    Spool(SpoolCommand),
    /// PostgreSQL schema
    #[command(subcommand)]
    #[command(after_help = examples::DB)]
    Db(DbCommand),
    /// Show the parser chain, or test it on a file
    #[command(subcommand)]
    #[command(after_help = examples::PARSERS)]
    Parsers(ParsersCommand),
    /// Print the built-in default configuration
    #[command(subcommand)]
    #[command(after_help = examples::CONFIG)]
    Config(ConfigCommand),
    /// The live Python stack of every thread of a running program (py-spy dump)
    #[command(after_help = examples::STACK)]
    Stack(StackArgs),
    /// Print a shell completion script (bash, zsh, fish)
    #[command(after_help = examples::COMPLETIONS)]
    Completions {
        #[arg(value_enum)]
        shell: CompletionShell,
    },
    /// Write a man page for every command into DIR (pmon-agent.1, pmon-agent-query-errors.1, …)
    #[command(after_help = examples::MAN)]
    Man {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// (internal) Names for shell completion, one a line: experiments or daemons
    #[command(hide = true)]
    CompleteNames {
        #[arg(value_enum)]
        what: NameKind,
    },
    /// (internal) Ship the capture of a run a holder runs: started by wrap and daemons
    #[command(hide = true)]
    Ship(ShipArgs),
    /// (internal) Send one notification read as JSON from stdin: started by shippers and supervisors
    #[command(hide = true)]
    NotifySend,
}

#[derive(Debug, Args)]
pub struct StackArgs {
    /// Experiment whose running program to read (its latest run)
    #[arg(required_unless_present = "daemon", conflicts_with = "daemon")]
    pub experiment: Option<String>,
    /// The daemon whose program to read
    #[arg(long, value_name = "NAME")]
    pub daemon: Option<String>,
    #[command(flatten)]
    pub format: FormatArg,
}

/// The shells `completions` writes scripts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

/// What `complete-names` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NameKind {
    Experiments,
    Daemons,
}

/// `--notify` and `--notify-on`, shared by `wrap` and `daemon start`.
#[derive(Debug, Args, Clone, Default)]
pub struct NotifyArgs {
    /// Notify this webhook (http(s)://…) or run this command (by `sh -c`) instead of notify.webhook/notify.command; `none`: no notifications (repeatable)
    #[arg(long = "notify", value_name = "URL|CMD|none")]
    pub notify: Vec<String>,
    /// Notify on these instead of notify.on (comma-separated)
    #[arg(
        long = "notify-on",
        value_name = "WHAT",
        value_delimiter = ',',
        value_enum
    )]
    pub notify_on: Vec<pmon_core::options::NotifyOn>,
}

impl NotifyArgs {
    pub fn as_override(&self) -> Option<pmon_core::options::NotifyOverride> {
        pmon_core::options::NotifyOverride::from_flags(&self.notify, &self.notify_on)
    }
}

#[derive(Debug, Args)]
pub struct ShipArgs {
    #[arg(long)]
    pub experiment: String,
    /// Register a new run this way (exclusive, new-run, resume, continue)
    #[arg(long)]
    pub mode: Option<String>,
    #[arg(long)]
    pub command_json: Option<String>,
    #[arg(long)]
    pub tags_json: Option<String>,
    /// Continue shipping this run (a shipper started again)
    #[arg(long)]
    pub run_id: Option<String>,
    #[arg(long, default_value_t = 0)]
    pub restarts: u32,
    #[arg(long)]
    pub pty: bool,
    /// The daemon the run belongs to (its live status file)
    #[arg(long)]
    pub daemon: Option<String>,
    #[arg(long = "parser")]
    pub parsers: Vec<String>,
    /// `--notify` flags of the run, as JSON
    #[arg(long)]
    pub notify_json: Option<String>,
}

#[derive(Debug, Args)]
pub struct WrapArgs {
    /// Experiment name [default: the script's or command's file stem]
    #[arg(short, long, value_name = "EXP")]
    pub experiment: Option<String>,
    /// Continue the experiment's latest run (its run id and progress)
    #[arg(long, conflicts_with = "new_run")]
    pub resume: bool,
    /// Start a new run even if another run of the experiment is live
    #[arg(long)]
    pub new_run: bool,
    /// Run the command on a pseudo-terminal (colours, progress bars as on a terminal)
    #[arg(long)]
    pub pty: bool,
    /// Do not echo the command's output
    #[arg(long)]
    pub no_echo: bool,
    /// Tag the run (repeatable): --tag lr=0.1 --tag host=gpu3
    #[arg(long = "tag", value_name = "K=V", value_parser = parse_tag)]
    pub tags: Vec<(String, String)>,
    /// Use only these parsers (repeatable; `pmon-agent parsers list` names them) [default: all, first match wins]
    #[arg(long = "parser", value_name = "NAME")]
    pub parsers: Vec<String>,
    #[command(flatten)]
    pub notify: NotifyArgs,
    /// Leave PYTHONFAULTHANDLER unset (by default it is set to 1 unless you set it, so a crash in C code prints every thread's Python stack)
    #[arg(long)]
    pub no_faulthandler: bool,
    /// The command and its arguments
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// Experiment name [default: the first path's file stem]
    #[arg(short, long, value_name = "EXP")]
    pub experiment: Option<String>,
    /// Files without a checkpoint are read from the start (the default)
    #[arg(long, conflicts_with = "from_end")]
    pub from_start: bool,
    /// Files without a checkpoint that exist at start are read from their end
    #[arg(long)]
    pub from_end: bool,
    /// In directories, only files whose name matches (`*.log`); default: all but compressed files
    #[arg(long, value_name = "PAT")]
    pub glob: Option<String>,
    /// Read what is there now, then exit
    #[arg(long)]
    pub once: bool,
    /// Use only these parsers (repeatable; `pmon-agent parsers list` names them) [default: all, first match wins]
    #[arg(long = "parser", value_name = "NAME")]
    pub parsers: Vec<String>,
    /// Files, directories or FIFOs
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Experiment name
    #[arg(short, long, value_name = "EXP", default_value = "stdin")]
    pub experiment: String,
    /// Use only these parsers (repeatable; `pmon-agent parsers list` names them) [default: all, first match wins]
    #[arg(long = "parser", value_name = "NAME")]
    pub parsers: Vec<String>,
    /// Start a new run even if another run of the experiment is live
    #[arg(long)]
    pub new_run: bool,
}

#[derive(Debug, Args, Clone)]
pub struct FormatArg {
    /// Output format; json prints JSON Lines
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Subcommand)]
pub enum QueryCommand {
    /// Experiments with their latest run, state, start, duration and error count
    #[command(after_help = examples::QUERY_LIST)]
    List(ListArgs),
    /// A run's state, exit code or signal, progress, last error and spool depth
    #[command(after_help = examples::QUERY_STATUS)]
    Status(StatusArgs),
    /// Log records, oldest first
    #[command(after_help = examples::QUERY_LOGS)]
    Logs(LogsArgs),
    /// ERROR and CRITICAL records, newest first
    #[command(after_help = examples::QUERY_ERRORS)]
    Errors(ErrorsArgs),
    /// Sampled metrics: last/min/avg/max per series, a sparkline on a terminal
    #[command(after_help = examples::QUERY_METRICS)]
    Metrics(MetricsArgs),
    /// Live dashboard: progress, memory/CPU, errors and logs of the latest run
    #[command(after_help = examples::QUERY_WATCH)]
    Watch(WatchArgs),
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Experiment name (the dashboard waits if it has not started yet)
    pub experiment: String,
    /// Draw one panel alone, full size (the tmux layout's panes use this)
    #[arg(long, value_enum, value_name = "PANEL")]
    pub panel: Option<pmon_core::options::Panel>,
}

#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// Experiment name
    pub experiment: String,
    /// Only this type: memory, cpu, io, host, throughput or user
    #[arg(long = "type", value_name = "T")]
    pub metric_type: Option<pmon_core::record::MetricType>,
    /// Only the series of this name (rss_bytes, loss…)
    #[arg(long, value_name = "N")]
    pub name: Option<String>,
    /// Only samples newer than this (1h, 30m, or an RFC 3339 time)
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Run ordinal or run id [default: latest]
    #[arg(long, value_name = "N")]
    pub run: Option<String>,
    #[command(flatten)]
    pub format: FormatArg,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub format: FormatArg,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Experiment name
    pub experiment: String,
    /// Run ordinal (1, 2, 3…) or run id [default: latest]
    #[arg(long, value_name = "N")]
    pub run: Option<String>,
    #[command(flatten)]
    pub format: FormatArg,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Experiment name
    pub experiment: String,
    /// Keep following new records
    #[arg(short, long)]
    pub follow: bool,
    /// Keep this level and above (like journalctl -p)
    #[arg(long, value_name = "LEVEL")]
    pub level: Option<pmon_core::record::Level>,
    /// Keep records whose message or traceback contains this text
    #[arg(long, value_name = "TEXT")]
    pub search: Option<String>,
    /// Keep records whose message or traceback matches this regex
    #[arg(long, value_name = "REGEX")]
    pub search_regex: Option<String>,
    /// Keep records newer than this (1h, 30m, or an RFC 3339 time)
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Print whole tracebacks under their records
    #[arg(long)]
    pub traceback: bool,
    /// Only the newest N records (still printed oldest first)
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Run ordinal, run id, or `all` [default: latest]
    #[arg(long, value_name = "N|all")]
    pub run: Option<String>,
    #[command(flatten)]
    pub format: FormatArg,
}

#[derive(Debug, Args)]
pub struct ErrorsArgs {
    /// Experiment name (with --group: optional, all experiments without one)
    #[arg(required_unless_present = "group")]
    pub experiment: Option<String>,
    /// Print whole tracebacks under their records (with --group: the latest of each group)
    #[arg(long)]
    pub traceback: bool,
    /// One row per error group (same exception type and innermost own frames, or same masked message): count, runs, first and last seen
    #[arg(long, conflicts_with = "run")]
    pub group: bool,
    /// With --group: only groups first seen in the latest run
    #[arg(long, requires = "group")]
    pub new: bool,
    /// At most N records
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Run ordinal, run id, or `all` [default: latest]
    #[arg(long, value_name = "N|all")]
    pub run: Option<String>,
    #[command(flatten)]
    pub format: FormatArg,
}

#[derive(Debug, Subcommand)]
pub enum DaemonCommand {
    /// Start CMD supervised in the background; returns at once
    #[command(after_help = examples::DAEMON_START)]
    Start(DaemonStartArgs),
    /// State of one daemon, or of all
    #[command(after_help = examples::DAEMON_STATUS)]
    Status {
        /// Daemon name [default: all daemons]
        name: Option<String>,
        #[command(flatten)]
        format: FormatArg,
    },
    /// State of every daemon, one line each
    #[command(after_help = examples::DAEMON_LIST)]
    List {
        #[command(flatten)]
        format: FormatArg,
    },
    /// The daemon's output, from the store (or its plain log file)
    #[command(after_help = examples::DAEMON_LOGS)]
    Logs {
        name: String,
        /// Keep following new records
        #[arg(short, long)]
        follow: bool,
        /// Keep this level and above
        #[arg(long, value_name = "LEVEL")]
        level: Option<pmon_core::record::Level>,
        /// Print whole tracebacks under their records
        #[arg(long)]
        traceback: bool,
        #[command(flatten)]
        format: FormatArg,
    },
    /// SIGSTOP to the daemon's whole process group
    #[command(after_help = examples::DAEMON_PAUSE)]
    Pause { name: String },
    /// SIGCONT to the daemon's whole process group
    #[command(after_help = examples::DAEMON_RESUME)]
    Resume { name: String },
    /// SIGTERM to the group, SIGKILL after the timeout; no process is left behind
    #[command(after_help = examples::DAEMON_STOP)]
    Stop {
        name: String,
        /// How long to wait after SIGTERM before SIGKILL
        #[arg(long, default_value = "10s", value_name = "DURATION")]
        timeout: String,
    },
    /// Stop, then start again with the same command
    #[command(after_help = examples::DAEMON_RESTART)]
    Restart {
        name: String,
        #[arg(long, default_value = "10s", value_name = "DURATION")]
        timeout: String,
    },
    /// (internal) the supervising agent that `start` launches
    #[command(hide = true)]
    Supervise(DaemonStartArgs),
}

#[derive(Debug, Args, Clone)]
pub struct DaemonStartArgs {
    /// A unique name for the daemon
    #[arg(long, value_name = "N")]
    pub name: String,
    /// Experiment name [default: the daemon's name]
    #[arg(short, long, value_name = "EXP")]
    pub experiment: Option<String>,
    /// When to start the command again after it ends
    #[arg(long, value_enum, default_value_t = pmon_core::options::RestartPolicy::Never)]
    pub restart: pmon_core::options::RestartPolicy,
    /// Use only these parsers (repeatable; `pmon-agent parsers list` names them) [default: all, first match wins]
    #[arg(long = "parser", value_name = "NAME")]
    pub parsers: Vec<String>,
    #[command(flatten)]
    pub notify: NotifyArgs,
    /// Leave PYTHONFAULTHANDLER unset (by default it is set to 1 unless you set it, so a crash in C code prints every thread's Python stack)
    #[arg(long)]
    pub no_faulthandler: bool,
    /// The command and its arguments
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum SpoolCommand {
    /// Records waiting, the oldest, and their size
    #[command(after_help = examples::SPOOL_STATUS)]
    Status {
        #[command(flatten)]
        format: FormatArg,
    },
    /// Ship everything waiting now; fails if the database is unreachable
    #[command(after_help = examples::SPOOL_REPLAY)]
    Replay,
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// What the agent gets from its database URL: reachable, TLS, server, schema, privileges, Citus, spool; exit 0 only when records would land
    #[command(after_help = examples::DB_CHECK)]
    Check {
        #[command(flatten)]
        format: FormatArg,
    },
    /// Apply migrations/postgres (also done automatically on first connect)
    #[command(after_help = examples::DB_MIGRATE)]
    Migrate,
    /// Drop runs that ended, and records, older than D; a live run is kept whole
    #[command(after_help = examples::DB_PRUNE)]
    Prune {
        /// How old (30d, 12h) [default: logging.database.retention]
        #[arg(long, value_name = "D")]
        older_than: Option<String>,
        /// Say what would go, remove nothing
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        format: FormatArg,
    },
    /// On a Citus coordinator: distribute every table by experiment_id (idempotent)
    #[command(after_help = examples::DB_DISTRIBUTE)]
    Distribute {
        #[command(flatten)]
        format: FormatArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum ParsersCommand {
    /// The parser chain, in the order parsers are tried: name, file, what it extracts
    #[command(after_help = examples::PARSERS_LIST)]
    List {
        #[command(flatten)]
        format: FormatArg,
    },
    /// Which parser matched each line of FILE (or why none did) and what it extracted
    #[command(after_help = examples::PARSERS_TEST)]
    Test {
        /// A file of captured output
        file: PathBuf,
        /// Use only these parsers (repeatable), as `wrap --parser` does
        #[arg(long = "parser", value_name = "NAME")]
        parsers: Vec<String>,
        /// Only how many records each parser made (a quick look at a big file)
        #[arg(long)]
        summary: bool,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Run every parser's examples; a readable diff per failure, non-zero exit if any fails
    #[command(after_help = examples::PARSERS_CHECK)]
    Check {
        /// Check the parser files in DIR [default: parsers.paths and the shipped parsers]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the documented default config.yml
    #[command(after_help = examples::CONFIG_DEFAULT)]
    Default,
    /// Print the configuration in effect, after files and environment
    #[command(after_help = examples::CONFIG_SHOW)]
    Show,
    /// Print one setting, for scripts (`pipeline.command`: one argument a line)
    #[command(after_help = examples::CONFIG_GET)]
    Get {
        /// The setting's key; `pipeline.command` is the one scripts need
        key: String,
    },
}

fn parse_tag(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("tag '{text}' is not KEY=VALUE")),
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// Every command a user can run ends its `--help` with two or three
    /// examples that run the agent.
    #[test]
    fn every_command_help_ends_with_examples() {
        fn check(cmd: &clap::Command, path: &str, seen: &mut usize) {
            let help = cmd
                .get_after_help()
                .unwrap_or_else(|| panic!("`{path}` has no examples"))
                .to_string();
            let mut lines = help.lines();
            assert_eq!(lines.next(), Some("Examples:"), "{path}");
            let examples: Vec<&str> = lines.collect();
            assert!((2..=3).contains(&examples.len()), "{path}: {examples:?}");
            for example in examples {
                assert!(example.starts_with("  "), "{path}: {example}");
                assert!(example.contains("pmon-agent "), "{path}: {example}");
            }
            *seen += 1;
            for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
                check(sub, &format!("{path} {}", sub.get_name()), seen);
            }
        }
        let mut seen = 0;
        check(&Cli::command(), "pmon-agent", &mut seen);
        assert!(seen > 30, "{seen}");
    }
}
