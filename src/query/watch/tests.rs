//! The dashboard drawn on ratatui's test backend from a store filled by a
//! real run: a Python program with a 200-step tqdm loop, log lines (one with
//! a raw BEL), and an uncaught ValueError, run through the agent's own wrap
//! path into a temporary embedded store.

use super::render::{self, View};
use super::snapshot::{Snapshot, Watcher};
use super::{handle_key, Action};
use crate::app::App;
use crate::cli::GlobalArgs;
use crate::metrics::MetricsSampler;
use crate::pipeline::{sample_into, Msg};
use crate::query::db::Store;
use crate::recording::Recording;
use crate::source::wrap::{self, Feed, WrapOptions};
use pmon_core::options::Panel;
use pmon_core::record::{Event, StreamKind};
use pmon_core::run::StartMode;
use pmon_store::SqliteStore;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use std::sync::OnceLock;

const PROGRAM: &str = r#"
import logging, sys, time
from tqdm import tqdm
logging.basicConfig(level=logging.INFO, format="%(levelname)s:%(name)s:%(message)s")
log = logging.getLogger("loader")
for _ in tqdm(range(200), desc="download", unit="file", mininterval=0):
    time.sleep(0.001)
log.info("downloaded 200 files")
log.warning("bell\x07here")
def parse(shard):
    raise ValueError(f"bad shard {shard}")
parse(3)
"#;

/// One real run, shared by the tests (it takes a second or two).
fn snapshot() -> &'static (tempfile::TempDir, Snapshot) {
    static RUN: OnceLock<(tempfile::TempDir, Snapshot)> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yml");
        std::fs::write(&config, "monitoring:\n  metrics_interval: 0.1\n").unwrap();
        let app = App::new(&GlobalArgs {
            verbose: 0,
            config: Some(config),
            data_dir: Some(dir.path().join("data")),
            database_url: None,
            quiet_config: false,
        })
        .unwrap();
        let command = ["python3".to_string(), "-c".into(), PROGRAM.into()];
        let exit_code = run_in_process(&app, &command);
        assert_eq!(exit_code, Some(1));
        let store = SqliteStore::open_existing(&app.data_dir.db_path()).unwrap();
        let mut store = store.map(Store::Embedded);
        let snapshot = Watcher::new("dash").refresh(store.as_mut()).unwrap();
        (dir, snapshot)
    })
}

/// The program's output straight into a pipeline in this process (what the
/// shipper does with the holder's capture files), sampled like a wrapped run.
struct PipelineFeed(crossbeam_channel::Sender<Msg>);

impl Feed for PipelineFeed {
    fn data(&self, kind: StreamKind, chunk: &[u8]) -> bool {
        self.0.send(Msg::Data(kind, chunk.to_vec())).is_ok()
    }
    fn eof(&self, kind: StreamKind) {
        let _ = self.0.send(Msg::Eof(kind));
    }
    fn event(&self, event: Event) {
        let _ = self.0.send(Msg::Event(event));
    }
    fn status_report(&self, _: u32, _: std::time::Instant) {}
}

fn run_in_process(app: &App, command: &[String]) -> Option<i32> {
    let recording = Recording::start(app, "dash", command, &[], StartMode::Exclusive).unwrap();
    let tx = recording.pipeline.sender();
    let interval = Some(app.config.monitoring.metrics_interval);
    let sampler = MetricsSampler::start(
        interval,
        app.data_dir.root().to_path_buf(),
        sample_into(tx.clone()),
    );
    let opts = WrapOptions {
        command,
        pty: false,
        echo: false,
        plain_log: None,
        faulthandler: true,
    };
    let outcome = wrap::run(
        opts,
        std::sync::Arc::new(PipelineFeed(tx)),
        |pid| {
            sampler.watch(pid);
            recording.set_child_pid(pid);
        },
        || sampler.exited(),
    )
    .unwrap();
    let state = crate::holder::end_state(outcome.exit_code, outcome.signal, outcome.forwarded);
    recording
        .finish(state, outcome.exit_code, outcome.signal)
        .unwrap();
    outcome.exit_code
}

fn screen(snapshot: &Snapshot, view: &View, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal
        .draw(|frame| render::draw(frame, snapshot, view))
        .unwrap();
    let buffer = terminal.backend().buffer();
    let mut text = String::new();
    for y in 0..buffer.area.height {
        for x in 0..buffer.area.width {
            text.push_str(buffer[(x, y)].symbol());
        }
        text.push('\n');
    }
    text
}

#[test]
fn the_whole_dashboard_at_80_by_24_shows_every_panel() {
    let (_dir, snap) = snapshot();
    let text = screen(snap, &View::new(None, false), 80, 24);
    let header = text.lines().next().unwrap();
    assert!(
        header.starts_with("pmon  dash  run 1 of 1  failed (exit 1)  "),
        "{header}"
    );
    assert!(
        header.contains("  pid ") && header.contains("  host "),
        "{header}"
    );
    for title in ["progress", "memory", "cpu", "errors (1)", "logs"] {
        assert!(
            text.contains(&format!("┌ {title}")),
            "no {title} panel:\n{text}"
        );
    }
    assert!(text.contains("200/200"), "{text}");
    assert!(text.contains("ValueError: bad shard 3"), "{text}");
}

#[test]
fn each_panel_alone() {
    let (_dir, snap) = snapshot();
    let alone = |panel| screen(snap, &View::new(Some(panel), false), 100, 30);
    let progress = alone(Panel::Progress);
    let download = progress
        .lines()
        .find(|l| l.contains("download"))
        .unwrap_or_else(|| panic!("{progress}"));
    assert!(
        download.contains("100%") && download.contains("200/200 file"),
        "{download}"
    );
    assert!(!progress.contains("┌ logs"), "one panel only:\n{progress}");

    let memory = alone(Panel::Memory);
    assert!(
        memory.contains("┌ memory ") && memory.contains(" MiB"),
        "{memory}"
    );
    assert!(memory.contains("┌ cpu "), "{memory}");
    assert!(
        memory
            .chars()
            .any(|c| ('\u{2801}'..='\u{28ff}').contains(&c)),
        "a plotted line:\n{memory}"
    );

    let errors = alone(Panel::Errors);
    assert!(errors.contains("ValueError: bad shard 3"), "{errors}");

    let logs = alone(Panel::Logs);
    assert!(
        logs.contains("INFO    loader: downloaded 200 files"),
        "{logs}"
    );
    // The BEL the program printed is shown, escaped, never sent raw.
    assert!(logs.contains("WARNING loader: bell\\x07here"), "{logs}");
    assert!(!logs.contains('\x07'));
    assert!(!logs.contains("%|"), "no tqdm frame is a log line:\n{logs}");
}

#[test]
fn enter_on_an_error_shows_its_whole_traceback_and_scrolls() {
    let (_dir, snap) = snapshot();
    let mut view = View::new(None, false);
    let key = |code| KeyEvent::new(code, KeyModifiers::NONE);
    // Tab twice: progress → memory → errors.
    handle_key(key(KeyCode::Tab), &mut view, snap);
    handle_key(key(KeyCode::Tab), &mut view, snap);
    assert_eq!(view.focus, Panel::Errors);
    handle_key(key(KeyCode::Enter), &mut view, snap);
    let text = screen(snap, &view, 100, 30);
    assert!(
        text.contains("Traceback (most recent call last):"),
        "{text}"
    );
    assert!(
        text.contains("  File \"<string>\", line 11, in parse"),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.contains("│ValueError: bad shard 3")),
        "{text}"
    );
    handle_key(key(KeyCode::Down), &mut view, snap);
    let scrolled = screen(snap, &view, 100, 30);
    assert!(
        !scrolled.contains("Traceback (most recent call last):"),
        "{scrolled}"
    );
    handle_key(key(KeyCode::Esc), &mut view, snap);
    assert_eq!(
        view.traceback, None,
        "Esc closes the traceback, not the dashboard"
    );
    assert_eq!(
        handle_key(key(KeyCode::Char('q')), &mut view, snap),
        Action::Quit
    );
    let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
    assert_eq!(handle_key(ctrl_c, &mut view, snap), Action::Quit);
}

#[test]
fn a_run_that_has_not_started_is_waited_for() {
    let snap = Watcher::new("later").refresh(None).unwrap();
    let text = screen(&snap, &View::new(None, false), 80, 24);
    assert!(
        text.contains("waiting for experiment 'later' to start"),
        "{text}"
    );
}

/// A daemon restarted: its next run appears as it starts, with charts of
/// its own (not the last run's samples).
#[test]
fn a_new_run_of_the_experiment_takes_over() {
    use crate::query::tests::{insert_run, temp_store};
    let (_dir, store) = temp_store();
    insert_run(store.conn(), "d", 1, "R1", "crashed");
    store
        .conn()
        .execute(
            "INSERT INTO pipeline_metrics (experiment_id, run_id, seq, timestamp, metric_type, name, value, unit) VALUES ('d', 'R1', 0, '2026-11-27T10:00:01.000000Z', 'memory', 'rss_bytes', 1048576, 'bytes')",
            [],
        )
        .unwrap();
    let path = store.conn().path().unwrap().to_string();
    let mut store = Some(Store::Embedded(store));
    let mut watcher = Watcher::new("d");
    let first = watcher.refresh(store.as_mut()).unwrap();
    assert_eq!(first.run.as_ref().map(|r| r.ordinal), Some(1));
    assert_eq!(first.memory.len(), 1);
    let conn = rusqlite::Connection::open(path).unwrap();
    insert_run(&conn, "d", 2, "R2", "running");
    let second = watcher.refresh(store.as_mut()).unwrap();
    assert_eq!(second.run.as_ref().map(|r| r.run_id.as_str()), Some("R2"));
    assert_eq!(second.runs, 2);
    assert!(second.memory.is_empty(), "the new run's charts start empty");
}

#[test]
fn the_cgroup_limit_is_drawn_with_the_memory_chart() {
    let snap = Snapshot {
        experiment: "capped".into(),
        memory: vec![(0.0, 8.0 * 1048576.0), (30.0, 48.0 * 1048576.0)],
        limit: Some(64.0 * 1048576.0),
        ..Snapshot::default()
    };
    let text = screen(&snap, &View::new(Some(Panel::Memory), false), 80, 24);
    assert!(text.contains("┌ memory 48.0 MiB of 64.0 MiB"), "{text}");
    assert!(
        text.contains("70.4 MiB"),
        "the axis reaches past the limit: {text}"
    );
}
