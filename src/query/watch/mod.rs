//! `query watch EXP [--panel progress|memory|errors|logs]`: a live
//! full-screen dashboard of one experiment's latest run — progress tree,
//! memory and CPU over the run, the latest errors with their tracebacks and
//! the log tail — redrawn about once a second from the embedded store or
//! PostgreSQL.
//!
//! The terminal is always given back as it was: on `q`, Esc or Ctrl-C, on
//! SIGTERM/SIGHUP/SIGINT (taken by a signal thread, so the loop restores the
//! terminal itself), and on a panic (a hook restores it before the message
//! is printed). Off a terminal it refuses, pointing at `query status`.
//!
//! [`snapshot`] reads the store, [`render`] draws; this file owns the
//! terminal and the keys.

mod render;
mod snapshot;
#[cfg(test)]
mod tests;

use crate::app::App;
use crate::cli::WatchArgs;
use crate::query::db::Store;
use pmon_core::options::Panel;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::crossterm::{execute, terminal};
use ratatui::prelude::CrosstermBackend;
use ratatui::Terminal;
use render::View;
use snapshot::{Snapshot, Watcher};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the store is read again.
const REFRESH: Duration = Duration::from_secs(1);

/// Runs the dashboard until the user quits; returns the exit code.
pub fn watch(app: &App, args: &WatchArgs) -> anyhow::Result<i32> {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        eprintln!(
            "pmon-agent: query watch draws a live dashboard and needs a terminal; for a one-off report use pmon-agent query status {}",
            args.experiment
        );
        return Ok(2);
    }
    let stop = stop_on_signals();
    let color = std::env::var_os("NO_COLOR").is_none();
    let mut view = View::new(args.panel, color);
    let mut watcher = Watcher::new(&args.experiment);
    let mut store: Option<Store> = None;
    let _restore = TerminalGuard::enter()?;
    let mut terminal = Terminal::new(CrosstermBackend::new(std::io::stdout()))?;
    let mut snapshot = Snapshot::default();
    let mut next_refresh = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        if Instant::now() >= next_refresh {
            snapshot = read(app, &mut store, &mut watcher, &args.experiment);
            next_refresh = Instant::now() + REFRESH;
        }
        terminal.draw(|frame| render::draw(frame, &snapshot, &view))?;
        let wait = next_refresh
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(250));
        match terminal_input(wait) {
            Input::Gone => break,
            Input::Quiet => {}
            // A resize needs nothing: the next draw fits the new size.
            Input::Ready => {
                if event::poll(Duration::ZERO)? {
                    if let Event::Key(key) = event::read()? {
                        let pressed = key.kind != KeyEventKind::Release;
                        if pressed && handle_key(key, &mut view, &snapshot) == Action::Quit {
                            break;
                        }
                    }
                }
            }
        }
    }
    Ok(0)
}

enum Input {
    Ready,
    Quiet,
    /// The terminal hung up (its window or tmux pane closed).
    Gone,
}

/// Waits up to `wait` for a key (or a resize). Asked of the terminal itself
/// first: crossterm, given a terminal that hung up, reads its end of file in
/// a loop and never returns, spinning a core.
fn terminal_input(wait: Duration) -> Input {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let stdin = std::io::stdin();
    let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
    let timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX);
    match poll(&mut fds, timeout) {
        Ok(0) | Err(nix::errno::Errno::EINTR) => Input::Quiet,
        Ok(_) => {
            let events = fds[0].revents().unwrap_or(PollFlags::empty());
            if events.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL) {
                Input::Gone
            } else {
                Input::Ready
            }
        }
        Err(_) => Input::Gone,
    }
}

/// A refresh; a store that cannot be opened or read is shown as the reason
/// to wait, and tried again at the next refresh.
fn read(app: &App, store: &mut Option<Store>, watcher: &mut Watcher, experiment: &str) -> Snapshot {
    if store.is_none() {
        match Store::open(app) {
            Ok(opened) => *store = opened,
            Err(err) => return waiting(experiment, &err),
        }
    }
    match watcher.refresh(store.as_mut()) {
        Ok(snapshot) => snapshot,
        Err(err) => {
            // A dropped connection: open it afresh next time.
            *store = None;
            waiting(experiment, &err)
        }
    }
}

fn waiting(experiment: &str, err: &anyhow::Error) -> Snapshot {
    Snapshot {
        experiment: experiment.to_string(),
        waiting: Some(format!("{err:#}; trying again every second")),
        at: chrono::Utc::now(),
        ..Snapshot::default()
    }
}

#[derive(Debug, PartialEq)]
enum Action {
    Continue,
    Quit,
}

fn handle_key(key: KeyEvent, view: &mut View, snapshot: &Snapshot) -> Action {
    let ctrl_c = key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c');
    if ctrl_c || key.code == KeyCode::Char('q') {
        return Action::Quit;
    }
    if let Some(scroll) = view.traceback.as_mut() {
        let lines = snapshot
            .errors
            .get(view.selected_error)
            .and_then(|e| e.traceback.as_deref())
            .map_or(1, |tb| tb.lines().count()) as u16;
        match key.code {
            KeyCode::Esc | KeyCode::Enter => view.traceback = None,
            KeyCode::Up => *scroll = scroll.saturating_sub(1),
            KeyCode::Down => *scroll = (*scroll + 1).min(lines.saturating_sub(1)),
            KeyCode::PageUp => *scroll = scroll.saturating_sub(10),
            KeyCode::PageDown => *scroll = (*scroll + 10).min(lines.saturating_sub(1)),
            KeyCode::Home => *scroll = 0,
            _ => {}
        }
        return Action::Continue;
    }
    match key.code {
        KeyCode::Esc => return Action::Quit,
        KeyCode::Tab | KeyCode::Right if view.only.is_none() => view.focus = view.focus.next(1),
        KeyCode::BackTab | KeyCode::Left if view.only.is_none() => view.focus = view.focus.next(-1),
        KeyCode::Enter if view.focus == Panel::Errors && !snapshot.errors.is_empty() => {
            view.traceback = Some(0)
        }
        KeyCode::Up | KeyCode::PageUp | KeyCode::Down | KeyCode::PageDown => {
            scroll(view, key.code, snapshot)
        }
        _ => {}
    }
    Action::Continue
}

/// Up/Down in the focused panel: the selected error, the log tail, the tasks.
fn scroll(view: &mut View, key: KeyCode, snapshot: &Snapshot) {
    let step: isize = match key {
        KeyCode::Up => -1,
        KeyCode::Down => 1,
        KeyCode::PageUp => -10,
        _ => 10,
    };
    let moved = |at: usize, by: isize, len: usize| {
        (at as isize + by).clamp(0, len.saturating_sub(1) as isize) as usize
    };
    match view.focus {
        Panel::Errors => {
            view.selected_error = moved(view.selected_error, step, snapshot.errors.len())
        }
        // Up goes back in time: further from the end.
        Panel::Logs => view.log_scroll = moved(view.log_scroll, -step, snapshot.logs.len()),
        Panel::Progress => {
            view.progress_scroll = moved(view.progress_scroll, step, snapshot.progress.len())
        }
        Panel::Memory => {}
    }
}

/// Raw mode and the alternate screen while it lives; the terminal as it was
/// when dropped, and also if the program panics.
struct TerminalGuard;

impl TerminalGuard {
    fn enter() -> anyhow::Result<TerminalGuard> {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
        terminal::enable_raw_mode()?;
        let guard = TerminalGuard;
        execute!(
            std::io::stdout(),
            terminal::EnterAlternateScreen,
            ratatui::crossterm::cursor::Hide
        )?;
        Ok(guard)
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}

fn restore() {
    let _ = terminal::disable_raw_mode();
    let _ = execute!(
        std::io::stdout(),
        terminal::LeaveAlternateScreen,
        ratatui::crossterm::cursor::Show
    );
}

/// SIGTERM, SIGHUP and SIGINT end the loop (which then restores the
/// terminal) instead of killing the process with the terminal in raw mode.
fn stop_on_signals() -> Arc<AtomicBool> {
    use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
    let stop = Arc::new(AtomicBool::new(false));
    let mut set = SigSet::empty();
    for signal in [Signal::SIGTERM, Signal::SIGHUP, Signal::SIGINT] {
        set.add(signal);
    }
    if pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None).is_ok() {
        let flag = stop.clone();
        let _ = std::thread::Builder::new()
            .name("pmon-watch-signals".into())
            .spawn(move || {
                if set.wait().is_ok() {
                    flag.store(true, Ordering::SeqCst);
                }
            });
    }
    stop
}
