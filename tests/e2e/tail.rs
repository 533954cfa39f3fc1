//! `tail` as a user runs it: directories, rotation by rename and by
//! copytruncate, a SIGKILL in the middle of following, named pipes, and
//! Python's RotatingFileHandler — every line stored exactly once (every line
//! is unique, so count(*) = count(DISTINCT message) = lines written).

use crate::util::*;
use pretty_assertions::assert_eq;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn append_lines(path: &Path, range: std::ops::Range<usize>) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for i in range {
        writeln!(f, "INFO:app:line {i:06}").unwrap();
    }
}

fn tail_once(agent: &Agent, exp: &str, path: &Path) {
    let out = agent.run(&["tail", "-e", exp, "--once", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr_text(&out));
}

#[test]
fn a_directory_is_read_file_by_file_and_compressed_rotations_are_skipped() {
    let agent = Agent::new();
    let logs = agent.dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    append_lines(&logs.join("a.log"), 0..100);
    std::fs::write(logs.join("b.log"), "ERROR:app:boom\nTraceback (most recent call last):\n  File \"x.py\", line 1, in <module>\nValueError: bad\n").unwrap();
    std::fs::write(logs.join("a.log.1.gz"), b"\x1f\x8b binary").unwrap();
    tail_once(&agent, "dir", &logs);
    assert_eq!(agent.line_counts("dir"), (100, 100));
    let errors = agent.json_lines(&["query", "errors", "dir", "--run", "all"]);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["traceback"], "Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\nValueError: bad\n");
    assert_eq!(errors[0]["stream"], "file");
    assert!(errors[0]["source"]
        .as_str()
        .unwrap()
        .ends_with("logs/b.log"));
    let all = agent.json_lines(&["query", "logs", "dir", "--run", "all"]);
    assert!(all
        .iter()
        .all(|r| !r["source"].as_str().unwrap().ends_with(".gz")));
    // Nothing new: a second pass stores nothing again.
    tail_once(&agent, "dir", &logs);
    assert_eq!(agent.line_counts("dir"), (100, 100));
}

#[test]
fn rotation_by_rename_and_by_copytruncate_loses_and_doubles_nothing() {
    let agent = Agent::new();
    let logs = agent.dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let app = logs.join("app.log");
    append_lines(&app, 0..1000);
    tail_once(&agent, "rot", &logs);
    // Written after the last read, then rotated away by rename.
    append_lines(&app, 1000..1100);
    std::fs::rename(&app, logs.join("app.log.1")).unwrap();
    append_lines(&app, 1100..1200);
    tail_once(&agent, "rot", &logs);
    assert_eq!(agent.line_counts("rot"), (1200, 1200));
    // copytruncate: lines written after the last read exist only in the copy.
    append_lines(&app, 1200..1300);
    std::fs::copy(&app, logs.join("app.log.2")).unwrap();
    truncate(&app);
    append_lines(&app, 1300..1350);
    tail_once(&agent, "rot", &logs);
    assert_eq!(agent.line_counts("rot"), (1350, 1350));
}

/// copytruncate copies, then truncates; an agent that reads between the two
/// sees the live file and its copy holding the same lines, the newest of
/// them read by nobody yet. They are read once: from the live file, which
/// comes first, and the copy only past that.
#[test]
fn a_copy_seen_before_its_truncate_is_not_read_again() {
    let agent = Agent::new();
    let logs = agent.dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let app = logs.join("app.log");
    append_lines(&app, 0..1000);
    tail_once(&agent, "copy", &logs);
    // The boundary lines: read in the same pass as the copy is discovered,
    // checkpointed only after it.
    append_lines(&app, 1000..1100);
    std::fs::copy(&app, logs.join("app.log.1")).unwrap();
    tail_once(&agent, "copy", &logs);
    assert_eq!(agent.line_counts("copy"), (1100, 1100));
    truncate(&app);
    append_lines(&app, 1100..1150);
    tail_once(&agent, "copy", &logs);
    assert_eq!(agent.line_counts("copy"), (1150, 1150));
    // Two files with the same content and no checkpoint yet: read once too.
    let fresh = Agent::new();
    let logs = fresh.dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    append_lines(&logs.join("app.log"), 0..300);
    std::fs::copy(logs.join("app.log"), logs.join("app.log.1")).unwrap();
    tail_once(&fresh, "copy", &logs);
    assert_eq!(fresh.line_counts("copy"), (300, 300));
}

#[test]
fn a_file_rotated_while_the_agent_was_away_is_finished_first() {
    let agent = Agent::new();
    let app = agent.dir.path().join("app.log");
    append_lines(&app, 0..500);
    tail_once(&agent, "away", &app);
    append_lines(&app, 500..600);
    std::fs::rename(&app, agent.dir.path().join("app.log.1")).unwrap();
    append_lines(&app, 600..700);
    tail_once(&agent, "away", &app);
    assert_eq!(agent.line_counts("away"), (700, 700));
}

fn spawn_tail(agent: &Agent, exp: &str, path: &Path) -> Running {
    agent
        .cmd(&["tail", "-e", exp, path.to_str().unwrap()])
        .stderr(Stdio::piped())
        .start("pmon-agent tail -e")
}

fn wait_for_count(agent: &Agent, exp: &str, want: i64) -> (i64, i64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let got = if agent.db_path().exists() {
            agent.line_counts(exp)
        } else {
            (0, 0)
        };
        if got.0 >= want || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn following_through_rotation_and_a_sigkill_stores_every_line_once() {
    let agent = Agent::new();
    let logs = agent.dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let app = logs.join("app.log");
    let mut tail = spawn_tail(&agent, "follow", &logs);
    // About 10,000 lines/s for two seconds, rotated by rename half-way.
    let writer = {
        let app = app.clone();
        let logs = logs.clone();
        std::thread::spawn(move || {
            for tick in 0..40 {
                append_lines(&app, tick * 500..(tick + 1) * 500);
                if tick == 20 {
                    std::fs::rename(&app, logs.join("app.log.1")).unwrap();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(900));
    tail.kill().unwrap();
    tail.wait().unwrap();
    let mut tail = spawn_tail(&agent, "follow", &logs);
    writer.join().unwrap();
    let got = wait_for_count(&agent, "follow", 20_000);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(tail.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = tail.wait().unwrap();
    assert!(status.success());
    assert_eq!(got, (20_000, 20_000));
    assert_eq!(agent.line_counts("follow"), (20_000, 20_000));
}

#[test]
fn a_named_pipe_is_followed_across_writers() {
    let agent = Agent::new();
    let fifo = agent.dir.path().join("pipe");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let mut tail = spawn_tail(&agent, "pipe", &fifo);
    for writer in 0..2 {
        let mut f = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        for i in 0..500 {
            writeln!(f, "INFO:app:line {writer}-{i}").unwrap();
        }
    }
    let got = wait_for_count(&agent, "pipe", 1000);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(tail.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let _ = tail.wait();
    assert_eq!(got, (1000, 1000));
}

#[test]
fn python_rotating_file_handler_tracebacks_come_back_whole() {
    let agent = Agent::new();
    let logs = agent.dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let expect = agent.dir.path().join("expect.json");
    let program = r#"
import json, logging, logging.handlers, sys, traceback
log_dir, expect = sys.argv[1], sys.argv[2]
h = logging.handlers.RotatingFileHandler(log_dir + "/job.log", maxBytes=4000, backupCount=50)
h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
log = logging.getLogger("job"); log.addHandler(h); log.setLevel(logging.INFO)
tbs = []
for i in range(40):
    log.info("working on item %d", i)
    if i % 4 == 3:
        try:
            {}["missing-%d" % i]
        except KeyError as e:
            log.exception("item %d failed", i)
            tbs.append("".join(traceback.format_exception(e)))
json.dump(tbs, open(expect, "w"))
"#;
    let status = command("python3")
        .args([
            "-c",
            program,
            logs.to_str().unwrap(),
            expect.to_str().unwrap(),
        ])
        .status_within("python3");
    assert!(status.success());
    tail_once(&agent, "rfh", &logs);
    let want: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(&expect).unwrap()).unwrap();
    let mut got: Vec<String> = agent
        .json_lines(&["query", "errors", "rfh", "--run", "all"])
        .iter()
        .map(|r| r["traceback"].as_str().unwrap().to_string())
        .collect();
    got.sort();
    let mut want_sorted = want.clone();
    want_sorted.sort();
    assert_eq!(got, want_sorted);
}
