//! The supervisor: runs the daemon's command again and again as its restart
//! policy says, with exponential backoff and a give-up limit, keeping the
//! state file current. It runs detached (`daemon start` re-executes the agent
//! in a new session), so it outlives the terminal that started it.

use super::replay::BackgroundReplay;
use super::{backoff, DaemonDir, DaemonState};
use crate::app::App;
use crate::holder::{self, ChildSpec, HolderEnv, Ran};
use anyhow::Context;
use chrono::Utc;
use nix::fcntl::{Flock, FlockArg};
use pmon_core::options::RestartPolicy;
use pmon_core::procinfo;
use pmon_core::record::{format_ts, Event};
use pmon_core::run::{RunState, StartMode};
use pmon_core::text::{plural, signal_name};
use pmon_store::RunContext;
use serde_json::json;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub struct Supervise<'a> {
    pub name: &'a str,
    pub experiment: &'a str,
    pub restart: RestartPolicy,
    /// `--parser`: the parser chain restricted to these.
    pub parsers: &'a [String],
    pub command: &'a [String],
    /// `--notify` / `--notify-on`.
    pub notify: Option<pmon_core::options::NotifyOverride>,
    /// `--no-faulthandler`.
    pub no_faulthandler: bool,
}

/// How often a daemon prunes the store when `logging.database.retention` is set.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Prunes the store of what is older than `age` now and every hour after,
/// on a thread of its own: a slow or failing prune never delays the
/// daemon's program. What it did goes to the supervisor's log.
fn start_pruning(app: &App, age: Duration) {
    let url = app.config.logging.database.url.clone();
    let db_path = app.data_dir.db_path();
    let spawned = std::thread::Builder::new()
        .name("prune".into())
        .spawn(move || loop {
            match pmon_store::retention::prune_store(url.as_deref(), &db_path, age, false) {
                Ok(r) if !r.is_empty() => eprintln!(
                    "pmon-agent: pruned {}, {}, {}, {} older than {}",
                    plural(r.runs, "run", "runs"),
                    plural(r.logs, "log record", "log records"),
                    plural(r.events, "event", "events"),
                    plural(r.metrics, "metric sample", "metric samples"),
                    r.cutoff
                ),
                Ok(_) => {}
                Err(e) => eprintln!(
                    "pmon-agent: warning: pruning the store failed: {e:#}; tried again in an hour"
                ),
            }
            std::thread::sleep(PRUNE_EVERY);
        });
    if let Err(e) = spawned {
        eprintln!("pmon-agent: warning: could not start pruning ({e}); records are kept");
    }
}

/// Runs until the command ends for good; returns the supervisor's exit code.
pub fn supervise(app: &App, args: &Supervise<'_>) -> anyhow::Result<i32> {
    let dir = DaemonDir::new(&app.data_dir);
    dir.ensure()
        .context("could not create the daemons directory in the data dir")?;
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.lock_path(args.name))
        .context("could not open the daemon's lock file")?;
    let _lock = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock)
        .map_err(|_| anyhow::anyhow!("daemon '{}' already has a running supervisor", args.name))?;
    let _ = std::fs::remove_file(dir.stop_path(args.name));
    if let Some(age) = app.config.logging.database.retention {
        start_pruning(app, age);
    }
    let me = std::process::id();
    let mut state = DaemonState {
        name: args.name.to_string(),
        experiment_id: args.experiment.to_string(),
        command: args.command.to_vec(),
        restart: args.restart,
        parsers: args.parsers.to_vec(),
        notify: args.notify.clone(),
        no_faulthandler: args.no_faulthandler,
        state: RunState::Running,
        pid: None,
        supervisor_pid: me,
        supervisor_start: procinfo::start_time(me),
        started_at: format_ts(&Utc::now()),
        restarts: 0,
        exit_code: None,
        signal: None,
        last_error: None,
        run_id: None,
        ended_at: None,
        last_rss_bytes: None,
    };
    dir.write(&state)?;
    let limits = app.config.daemon.clone();
    let mut recent: VecDeque<Instant> = VecDeque::new();
    let mut replay = BackgroundReplay::new(app);
    // Each run has a holder process of its own; `daemon stop`'s SIGTERM to
    // this supervisor is passed on to it.
    let holder = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    holder::forward_signals(holder.clone());
    loop {
        let ran = run_once(app, args, &dir, &mut state, &holder);
        let stop_requested = dir.stop_path(args.name).exists()
            || ran.as_ref().is_some_and(|r| r.outcome.forwarded.is_some());
        if stop_requested {
            state.state = RunState::Stopped;
            let who = std::fs::read_to_string(dir.stop_path(args.name)).unwrap_or_default();
            record_event(app, &state, Event::now("stop", json!({"by": who.trim()})));
        }
        dir.write(&state)?;
        if stop_requested || ran.is_none() || !should_restart(args.restart, state.state) {
            break;
        }
        let now = Instant::now();
        while recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > limits.restart_window)
        {
            recent.pop_front();
        }
        if recent.len() as u32 >= limits.max_restarts {
            let reason = format!(
                "gave up after {} restarts within {}",
                limits.max_restarts,
                humantime::format_duration(limits.restart_window)
            );
            record_event(
                app,
                &state,
                Event::now(
                    "give_up",
                    json!({"reason": reason, "restarts": state.restarts}),
                ),
            );
            notify_gave_up(app, args, &state, &reason);
            state.last_error = Some(match state.last_error.take() {
                Some(e) => format!("{e}; {reason}"),
                None => reason,
            });
            dir.write(&state)?;
            break;
        }
        let delay = backoff(
            recent.len() as u32,
            limits.first_backoff,
            limits.max_backoff,
        );
        tracing::info!(target: "daemon", name = args.name, state = state.state.as_str(), restarts = state.restarts, delay = ?delay, "restarting");
        record_event(
            app,
            &state,
            Event::now(
                "restart",
                json!({"attempt": state.restarts + 1, "delay_s": delay.as_secs_f64(), "reason": restart_reason(&state)}),
            ),
        );
        if wait_or_stop(&dir, args.name, delay, &mut replay) {
            state.state = RunState::Stopped;
            dir.write(&state)?;
            break;
        }
        recent.push_back(Instant::now());
        state.restarts += 1;
    }
    // A new `daemon start` of this name need not wait for the replay below.
    drop(_lock);
    replay_after_the_end(&dir, args.name, &mut replay);
    Ok(0)
}

/// The daemon has ended for good: while records wait in the spool, keep
/// shipping them, until they are all in or `daemon stop` asks to end. Not
/// after a stop: whoever stopped the daemon asked for its supervisor to go.
fn replay_after_the_end(dir: &DaemonDir, name: &str, replay: &mut BackgroundReplay) {
    let waiting = replay.pending();
    if waiting == 0 || dir.stop_path(name).exists() {
        return;
    }
    eprintln!(
        "pmon-agent: daemon {name} has ended; {} in the spool for PostgreSQL. \
         This supervisor (pid {}) keeps shipping them in the background until they are in; \
         `pmon-agent daemon stop {name}` ends that, `pmon-agent spool replay` ships them by hand.",
        plural(waiting, "record waits", "records wait"),
        std::process::id()
    );
    loop {
        if dir.stop_path(name).exists() {
            eprintln!(
                "pmon-agent: stopped shipping the spool of daemon {name}; {} in it for `pmon-agent spool replay`",
                plural(replay.pending(), "record stays", "records stay")
            );
            return;
        }
        if replay.step(super::replay::STEP) == 0 {
            eprintln!("pmon-agent: the spool of daemon {name} is shipped");
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn should_restart(policy: RestartPolicy, state: RunState) -> bool {
    match policy {
        RestartPolicy::Never => false,
        RestartPolicy::OnFailure => matches!(state, RunState::Failed | RunState::Crashed),
        RestartPolicy::Always => true,
    }
}

fn restart_reason(state: &DaemonState) -> String {
    match (state.exit_code, state.signal) {
        (Some(code), _) => format!("exited with code {code}"),
        (_, Some(sig)) => format!("killed by {}", signal_name(sig)),
        _ => "ended".into(),
    }
}

/// One run of the command; `None` if it could not be started at all.
fn run_once(
    app: &App,
    args: &Supervise<'_>,
    dir: &DaemonDir,
    state: &mut DaemonState,
    holder: &std::sync::atomic::AtomicU32,
) -> Option<Ran> {
    let spec = ChildSpec {
        experiment: args.experiment.to_string(),
        command: args.command.to_vec(),
        tags: vec![("daemon".to_string(), args.name.to_string())],
        mode: StartMode::NewRun,
        pty: false,
        echo: false,
        daemon: Some(args.name.to_string()),
        parsers: args.parsers.to_vec(),
        notify: args.notify.clone(),
        no_faulthandler: args.no_faulthandler,
    };
    let env = HolderEnv::of(app);
    let result = holder::run_in_own_process(&env, &spec, holder, |pid, run_id| {
        state.pid = Some(pid);
        state.run_id = run_id.map(str::to_string);
        state.state = RunState::Running;
        state.exit_code = None;
        state.signal = None;
        state.ended_at = None;
        let _ = dir.write(state);
    });
    state.ended_at = Some(format_ts(&Utc::now()));
    match result {
        Ok(ran) => {
            state.exit_code = ran.outcome.exit_code;
            state.signal = ran.outcome.signal;
            state.state = ran.state;
            state.run_id = ran.run_id.clone();
            state.last_rss_bytes = ran.result.last_rss_bytes;
            state.last_error = end_description(&ran);
            Some(ran)
        }
        Err(e) => {
            state.state = RunState::Failed;
            state.last_error = Some(format!("{e:#}"));
            None
        }
    }
}

/// What status shows for how the run ended: the last exception, or the
/// signal (with the out-of-memory suspicion when SIGKILL looks like one).
fn end_description(ran: &Ran) -> Option<String> {
    if let Some(oom) = &ran.result.oom {
        return Some(oom.clone());
    }
    ran.result.last_error.clone().or_else(|| {
        ran.outcome
            .signal
            .map(|s| format!("killed by {}", signal_name(s)))
    })
}

/// Waits `delay` (shipping the spool meanwhile), waking early if `daemon
/// stop` asked; true if it did.
fn wait_or_stop(
    dir: &DaemonDir,
    name: &str,
    delay: Duration,
    replay: &mut BackgroundReplay,
) -> bool {
    let until = Instant::now() + delay;
    while Instant::now() < until {
        if dir.stop_path(name).exists() {
            return true;
        }
        let left = until.saturating_duration_since(Instant::now());
        replay.step(left.min(super::replay::STEP));
        std::thread::sleep(Duration::from_millis(100).min(left));
    }
    dir.stop_path(name).exists()
}

/// Writes one event for the daemon's current run straight to the store.
/// `restart_gave_up`: the daemon stays down until someone starts it.
fn notify_gave_up(app: &App, args: &Supervise<'_>, state: &DaemonState, reason: &str) {
    let config = app.config.notify.with_override(args.notify.as_ref());
    if !config.wants(pmon_core::options::NotifyOn::RestartGaveUp) {
        return;
    }
    let facts = crate::notify::RunFacts {
        experiment_id: state.experiment_id.clone(),
        run_id: state.run_id.clone().unwrap_or_default(),
        ordinal: None,
        daemon: Some(state.name.clone()),
        started_at: state.started_at.clone(),
    };
    let last = state
        .last_error
        .clone()
        .or_else(|| match (state.exit_code, state.signal) {
            (_, Some(sig)) => Some(format!("killed by {}", signal_name(sig))),
            (Some(code), None) => Some(format!("exit code {code}")),
            (None, None) => None,
        });
    let n = crate::notify::restart_gave_up(&facts, reason, last.as_deref(), Utc::now());
    crate::notify::send_detached(app, &config, n);
}

fn record_event(app: &App, state: &DaemonState, event: Event) {
    if let Some(run_id) = state.run_id.clone() {
        let ctx = RunContext {
            experiment_id: state.experiment_id.clone(),
            run_id,
        };
        app.record_event(&ctx, event);
    }
}
