//! `pmon-agent daemon start|status|list|logs|pause|resume|stop|restart`.

use crate::app::App;
use crate::cli::{DaemonCommand, DaemonStartArgs, FormatArg, GlobalArgs, LogsArgs};
use crate::daemon::supervise::{supervise, Supervise};
use crate::daemon::{group_members, validate_name, DaemonDir, DaemonState};
use crate::pipeline::Resources;
use crate::query::output::outln;
use crate::query::LogsOptions;
use anyhow::{bail, Context};
use chrono::Utc;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use pmon_core::options::Format;
use pmon_core::record::{format_ts, parse_ts, Event};
use pmon_core::run::RunState;
use pmon_core::text::escape_text;
use pmon_core::text::signal_name;
use pmon_store::{Batch, RunContext};
use serde_json::json;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

pub fn run(global: &GlobalArgs, cmd: DaemonCommand) -> anyhow::Result<i32> {
    let app = App::new(global)?;
    let dir = DaemonDir::new(&app.data_dir);
    match cmd {
        DaemonCommand::Start(args) => start(global, &app, &dir, &args),
        DaemonCommand::Supervise(args) => {
            let experiment = args.experiment.clone().unwrap_or_else(|| args.name.clone());
            supervise(
                &app,
                &Supervise {
                    name: &args.name,
                    experiment: &experiment,
                    restart: args.restart,
                    parsers: &args.parsers,
                    command: &args.command,
                    notify: args.notify.as_override(),
                    no_faulthandler: args.no_faulthandler,
                },
            )
        }
        DaemonCommand::Status {
            name: Some(name),
            format,
        } => {
            let state = existing(&dir, &name)?;
            print_states(&dir, &[state], &format, true)
        }
        DaemonCommand::Status { name: None, format } | DaemonCommand::List { format } => {
            let all: Vec<DaemonState> = dir
                .all()
                .into_iter()
                .map(DaemonState::with_liveness)
                .collect();
            if all.is_empty() && format.format == Format::Text {
                eprintln!(
                    "no daemons yet; start one with pmon-agent daemon start --name NAME -- CMD"
                );
            }
            print_states(&dir, &all, &format, false)
        }
        DaemonCommand::Logs {
            name,
            follow,
            level,
            traceback,
            format,
        } => {
            let state = existing(&dir, &name)?;
            logs(&app, &state, follow, level, traceback, format)
        }
        DaemonCommand::Pause { name } => signal_group(&app, &dir, &name, Signal::SIGSTOP),
        DaemonCommand::Resume { name } => signal_group(&app, &dir, &name, Signal::SIGCONT),
        DaemonCommand::Stop { name, timeout } => {
            let timeout =
                pmon_core::config::parse_duration(&timeout).map_err(anyhow::Error::msg)?;
            stop(&dir, &name, timeout)
        }
        DaemonCommand::Restart { name, timeout } => {
            let timeout =
                pmon_core::config::parse_duration(&timeout).map_err(anyhow::Error::msg)?;
            let state = existing(&dir, &name)?;
            if state.state.is_live() {
                stop(&dir, &name, timeout)?;
            }
            let args = DaemonStartArgs {
                name: state.name.clone(),
                experiment: Some(state.experiment_id.clone()),
                restart: state.restart,
                parsers: state.parsers.clone(),
                notify: crate::cli::NotifyArgs {
                    notify: state
                        .notify
                        .as_ref()
                        .map(|n| n.targets.clone())
                        .unwrap_or_default(),
                    notify_on: state
                        .notify
                        .as_ref()
                        .and_then(|n| n.on.clone())
                        .unwrap_or_default(),
                },
                no_faulthandler: state.no_faulthandler,
                command: state.command.clone(),
            };
            start(global, &app, &dir, &args)
        }
    }
}

fn existing(dir: &DaemonDir, name: &str) -> anyhow::Result<DaemonState> {
    validate_name(name).map_err(anyhow::Error::msg)?;
    match dir.read(name) {
        Some(state) => Ok(state.with_liveness()),
        None => {
            let known: Vec<String> = dir.all().into_iter().map(|d| d.name).collect();
            if known.is_empty() {
                bail!("no daemon named '{name}'; there are none yet (start one with pmon-agent daemon start --name {name} -- CMD)");
            }
            bail!(
                "no daemon named '{name}'; known daemons: {}",
                known.join(", ")
            );
        }
    }
}

fn start(
    global: &GlobalArgs,
    app: &App,
    dir: &DaemonDir,
    args: &DaemonStartArgs,
) -> anyhow::Result<i32> {
    validate_name(&args.name).map_err(anyhow::Error::msg)?;
    // A parser file or name that is wrong is said here, not in the background.
    App::with_parsers(global, &args.parsers)?.parser_chain()?;
    if let Some(state) = dir.read(&args.name).map(DaemonState::with_liveness) {
        if state.state.is_live() {
            bail!(
                "daemon '{}' is already running (pid {}, supervisor pid {}); stop it first with `pmon-agent daemon stop {}`",
                args.name,
                state.pid.map_or("?".into(), |p| p.to_string()),
                state.supervisor_pid,
                args.name
            );
        }
    }
    dir.ensure()
        .context("could not create the daemons directory in the data dir")?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.supervisor_log(&args.name))
        .context("could not open the supervisor's log file")?;
    let exe = std::env::current_exe()
        .context("could not find the pmon-agent executable to start the supervisor")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--data-dir").arg(app.data_dir.root());
    if let Some(config) = &global.config {
        cmd.arg("--config").arg(config);
    }
    cmd.args(["daemon", "supervise", "--name", &args.name, "--restart"])
        .arg(args.restart.as_str())
        .args(args.parsers.iter().flat_map(|p| ["--parser", p]))
        .args(args.notify.notify.iter().flat_map(|n| ["--notify", n]))
        .args(args.no_faulthandler.then_some("--no-faulthandler"))
        .args(
            args.notify
                .notify_on
                .iter()
                .flat_map(|on| ["--notify-on", on.as_str()]),
        )
        .args(
            args.experiment
                .iter()
                .flat_map(|e| ["--experiment".to_string(), e.clone()]),
        )
        .arg("--")
        .args(&args.command)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; the supervisor leaves our session
    // so that closing the terminal does not hang it up.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
    let mut child = cmd.spawn().context("could not start the supervisor")?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Some(state) = dir.read(&args.name) {
            if state.supervisor_pid == child.id() && (state.pid.is_some() || !state.state.is_live())
            {
                outln!(
                    "started daemon {}: pid {}, supervisor pid {}; see pmon-agent daemon status {}",
                    args.name,
                    state.pid.map_or("-".into(), |p| p.to_string()),
                    state.supervisor_pid,
                    args.name
                )?;
                return Ok(0);
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(dir.supervisor_log(&args.name)).unwrap_or_default();
            let last = log.lines().last().unwrap_or("").trim();
            bail!(
                "the supervisor of daemon '{}' exited at once ({status}): {last}",
                args.name
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    outln!(
        "started daemon {} (supervisor pid {}); it is still starting",
        args.name,
        child.id()
    )?;
    Ok(0)
}

fn print_states(
    dir: &DaemonDir,
    states: &[DaemonState],
    format: &FormatArg,
    detailed: bool,
) -> anyhow::Result<i32> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for s in states {
        let live = dir
            .read_live(&s.name, s.run_id.as_deref())
            .unwrap_or_default();
        match format.format {
            Format::Json => writeln!(
                out,
                "{}",
                json!({
                    "name": s.name, "experiment_id": s.experiment_id, "state": s.state, "pid": s.pid,
                    "supervisor_pid": s.supervisor_pid, "started_at": s.started_at, "restarts": s.restarts,
                    "exit_code": s.exit_code, "signal": s.signal, "last_error": s.last_error,
                    "run_id": s.run_id, "ended_at": s.ended_at, "command": s.command, "last_rss_bytes": s.last_rss_bytes,
                    "rss_bytes": live.rss_bytes, "cpu_percent": live.cpu_percent, "progress": live.progress,
                    "stalled_since": live.stalled_since.as_ref().filter(|_| s.state.is_live()),
                })
            )?,
            Format::Text if detailed => {
                writeln!(out, "daemon: {} (experiment {})", s.name, s.experiment_id)?;
                writeln!(out, "state: {}", state_with_stall(s, &live))?;
                writeln!(
                    out,
                    "pid: {}  supervisor: {}  restarts: {}",
                    s.pid.map_or("-".into(), |p| p.to_string()),
                    s.supervisor_pid,
                    s.restarts
                )?;
                writeln!(out, "command: {}", s.command.join(" "))?;
                let resources = Resources {
                    rss_bytes: live.rss_bytes,
                    cpu_percent: live.cpu_percent,
                };
                if let Some(text) = resources.describe() {
                    writeln!(out, "last sample: {text}")?;
                }
                for task in &live.progress {
                    writeln!(out, "progress: {}", escape_text(&task.summary()))?;
                }
            }
            Format::Text => writeln!(
                out,
                "{:<20} {:<12} {}",
                s.name,
                s.experiment_id,
                state_with_stall(s, &live)
            )?,
        }
    }
    Ok(0)
}

/// The state phrase, and `(stalled 34m)` while the program is stuck.
fn state_with_stall(s: &DaemonState, live: &crate::daemon::live::LiveStatus) -> String {
    let stalled = s
        .state
        .is_live()
        .then(|| crate::query::stalled_words(live.stalled_since.as_deref(), Utc::now()))
        .flatten();
    match stalled {
        Some(stalled) => format!("{} ({stalled})", state_phrase(s)),
        None => state_phrase(s),
    }
}

/// "running for 5m (pid 123)", "crashed 3m ago: SIGKILL",
/// "failed 10s ago (exit 1): ValueError: bad shard".
fn state_phrase(s: &DaemonState) -> String {
    let ago = |at: &Option<String>| {
        at.as_deref()
            .and_then(parse_ts)
            .map(|t| {
                pmon_core::text::humanize_duration((Utc::now() - t).to_std().unwrap_or_default())
            })
            .unwrap_or_else(|| "?".into())
    };
    match s.state {
        RunState::Running => format!(
            "running for {} (pid {})",
            pmon_core::text::humanize_duration(
                parse_ts(&s.started_at)
                    .map(|t| (Utc::now() - t).to_std().unwrap_or_default())
                    .unwrap_or_default()
            ),
            s.pid.map_or("?".into(), |p| p.to_string())
        ),
        RunState::Paused => format!("paused (pid {})", s.pid.map_or("?".into(), |p| p.to_string())),
        RunState::Lost => "lost: its supervisor is gone (was it killed?); start it again with pmon-agent daemon restart".to_string(),
        RunState::Crashed => format!(
            "crashed {} ago: {}",
            ago(&s.ended_at),
            s.last_error.clone().unwrap_or_else(|| s.signal.map(signal_name).unwrap_or_default())
        ),
        RunState::Failed => format!(
            "failed {} ago (exit {}){}",
            ago(&s.ended_at),
            s.exit_code.map_or("?".into(), |c| c.to_string()),
            s.last_error.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
        ),
        RunState::Stopped => format!("stopped {} ago", ago(&s.ended_at)),
        RunState::Succeeded => format!("succeeded {} ago (exit 0)", ago(&s.ended_at)),
    }
}

fn logs(
    app: &App,
    state: &DaemonState,
    follow: bool,
    level: Option<pmon_core::record::Level>,
    traceback: bool,
    format: FormatArg,
) -> anyhow::Result<i32> {
    let has_store = app.config.logging.database.url.is_some() || app.data_dir.db_path().exists();
    if !has_store {
        // The file fallback: the text exactly as the program printed it.
        let run_id = state.run_id.clone().unwrap_or_default();
        let path = app.data_dir.run_log_path(&state.experiment_id, &run_id);
        let text = std::fs::read(&path).with_context(|| {
            format!(
                "no records and no plain log file ({}) for daemon '{}'",
                path.display(),
                state.name
            )
        })?;
        use std::io::Write;
        std::io::stdout().write_all(&text)?;
        return Ok(0);
    }
    let args = LogsArgs {
        experiment: state.experiment_id.clone(),
        follow,
        level,
        search: None,
        search_regex: None,
        since: None,
        traceback,
        limit: None,
        run: state.run_id.clone(),
        format,
    };
    // The daemon's output, across its restarts: following goes on into the
    // runs its supervisor starts after this one.
    let mut options = LogsOptions::from_args(&args, chrono::Utc::now())?;
    options.follow_later_runs = true;
    crate::query::logs_with(app, &args, &options)?;
    Ok(0)
}

fn signal_group(app: &App, dir: &DaemonDir, name: &str, signal: Signal) -> anyhow::Result<i32> {
    let mut state = existing(dir, name)?;
    let Some(pid) = state.pid.filter(|_| state.state.is_live()) else {
        bail!("daemon '{name}' is not running ({})", state.state.as_str());
    };
    killpg(Pid::from_raw(pid as i32), signal)
        .with_context(|| format!("could not signal daemon '{name}' (process group {pid})"))?;
    let (new_state, event) = match signal {
        Signal::SIGSTOP => (RunState::Paused, "pause"),
        _ => (RunState::Running, "resume"),
    };
    state.state = new_state;
    dir.write(&state)?;
    if let (Some(run_id), Ok(store)) = (&state.run_id, app.open_store()) {
        let _ = store.conn().execute(
            "UPDATE pipeline_runs SET state = ?2 WHERE run_id = ?1",
            rusqlite::params![run_id, new_state.as_str()],
        );
        if let Ok(mut sink) = app.open_sink() {
            let ctx = RunContext {
                experiment_id: state.experiment_id.clone(),
                run_id: run_id.clone(),
            };
            let batch = Batch {
                events: vec![Event::now(event, json!({"by": who(), "pgid": pid}))],
                ..Batch::default()
            };
            let _ = sink.write(&ctx, &batch);
        }
    }
    outln!(
        "{} daemon {name} (process group {pid})",
        if event == "pause" {
            "paused"
        } else {
            "resumed"
        }
    )?;
    Ok(0)
}

fn who() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    format!(
        "{user}@{} (pid {})",
        pmon_core::procinfo::hostname(),
        std::process::id()
    )
}

/// The daemon has ended but its supervisor still ships the spool in the
/// background: the stop file ends that (no signal: its program is gone).
fn stop_background_replay(dir: &DaemonDir, name: &str, state: &DaemonState) -> anyhow::Result<i32> {
    std::fs::write(dir.stop_path(name), who())?;
    let until = Instant::now() + Duration::from_secs(10);
    while pmon_core::procinfo::is_alive(state.supervisor_pid, state.supervisor_start)
        && Instant::now() < until
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    outln!(
        "daemon {name} is not running ({}); its supervisor stopped shipping the spool in the background (`pmon-agent spool replay` ships what is left)",
        state.state.as_str()
    )?;
    Ok(0)
}

/// SIGTERM to the daemon's process group (through its supervisor, which
/// records it), SIGKILL to what is left after `timeout`, until no process of
/// the group remains.
fn stop(dir: &DaemonDir, name: &str, timeout: Duration) -> anyhow::Result<i32> {
    let mut state = existing(dir, name)?;
    let pgid = state.pid;
    let group_alive = pgid.is_some_and(|p| !group_members(p).is_empty());
    let supervisor = Pid::from_raw(state.supervisor_pid as i32);
    let supervisor_alive =
        pmon_core::procinfo::is_alive(state.supervisor_pid, state.supervisor_start);
    if !state.state.is_live() && !group_alive {
        if supervisor_alive {
            return stop_background_replay(dir, name, &state);
        }
        outln!("daemon {name} is not running ({})", state.state.as_str())?;
        return Ok(0);
    }
    std::fs::write(dir.stop_path(name), who())?;
    if let Some(p) = pgid {
        // A paused group must run again to act on SIGTERM.
        let _ = killpg(Pid::from_raw(p as i32), Signal::SIGCONT);
    }
    if supervisor_alive {
        let _ = kill(supervisor, Signal::SIGTERM);
    } else if let Some(p) = pgid {
        let _ = killpg(Pid::from_raw(p as i32), Signal::SIGTERM);
    }
    let deadline = Instant::now() + timeout;
    while pgid.is_some_and(|p| !group_members(p).is_empty()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Some(p) = pgid {
        if !group_members(p).is_empty() {
            let _ = killpg(Pid::from_raw(p as i32), Signal::SIGKILL);
            while !group_members(p).is_empty() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    let until = Instant::now() + Duration::from_secs(10);
    while supervisor_alive
        && pmon_core::procinfo::is_alive(state.supervisor_pid, state.supervisor_start)
        && Instant::now() < until
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    if !supervisor_alive {
        state.state = RunState::Stopped;
        state.ended_at = Some(format_ts(&Utc::now()));
        dir.write(&state)?;
    }
    outln!("stopped daemon {name}")?;
    Ok(0)
}
