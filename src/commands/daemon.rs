//! `pmon-agent daemon start|status|list|logs|pause|resume|stop|restart`.

use crate::app::App;
use crate::cli::{DaemonCommand, DaemonStartArgs, FormatArg, GlobalArgs, LogsArgs};
use crate::daemon::control::{existing, signal_group, stop};
use crate::daemon::show::write_states;
use crate::daemon::supervise::{supervise, Supervise};
use crate::daemon::{validate_name, DaemonDir, DaemonState};
use crate::query::output::outln;
use crate::query::LogsOptions;
use anyhow::{bail, Context};
use nix::sys::signal::Signal;
use pmon_core::options::Format;
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
            print_states(&dir, &[state], format.format, true)
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
            print_states(&dir, &all, format.format, false)
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
        DaemonCommand::Pause { name } => say(signal_group(&app, &dir, &name, Signal::SIGSTOP)?),
        DaemonCommand::Resume { name } => say(signal_group(&app, &dir, &name, Signal::SIGCONT)?),
        DaemonCommand::Stop { name, timeout } => {
            let timeout =
                pmon_core::config::parse_duration(&timeout).map_err(anyhow::Error::msg)?;
            say(stop(&dir, &name, timeout)?)
        }
        DaemonCommand::Restart { name, timeout } => {
            let timeout =
                pmon_core::config::parse_duration(&timeout).map_err(anyhow::Error::msg)?;
            let state = existing(&dir, &name)?;
            if state.state.is_live() {
                say(stop(&dir, &name, timeout)?)?;
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

fn print_states(
    dir: &DaemonDir,
    states: &[DaemonState],
    format: Format,
    detailed: bool,
) -> anyhow::Result<i32> {
    write_states(&mut std::io::stdout().lock(), dir, states, format, detailed)?;
    Ok(0)
}

fn say(what: String) -> anyhow::Result<i32> {
    outln!("{what}")?;
    Ok(0)
}
