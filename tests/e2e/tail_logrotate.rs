//! Real `logrotate` (rename+create and copytruncate) under a writer doing about
//! 10,000 lines/s, with the agent SIGKILLed and restarted in the middle, into
//! the embedded store and into PostgreSQL: every line stored exactly once.

use crate::pg_server::shared_database;
use crate::util::*;
use pretty_assertions::assert_eq;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const LINES: usize = 30_000;

struct Setup {
    logs: PathBuf,
    state: PathBuf,
    create_conf: PathBuf,
    copytruncate_conf: PathBuf,
}

fn setup(dir: &Path) -> Setup {
    let logs = dir.join("logs");
    std::fs::create_dir(&logs).unwrap();
    let conf = |name: &str, mode: &str| {
        let path = dir.join(name);
        let text = format!(
            "{}/app.log {{\n  rotate 50\n  missingok\n  nocompress\n  {mode}\n}}\n",
            logs.display()
        );
        std::fs::write(&path, text).unwrap();
        path
    };
    Setup {
        create_conf: conf("create.conf", "create"),
        copytruncate_conf: conf("copytruncate.conf", "copytruncate"),
        state: dir.join("logrotate.state"),
        logs,
    }
}

fn logrotate(s: &Setup, conf: &Path) {
    // Root's PATH usually has /usr/sbin, but CI's environment may not.
    let program = if Path::new("/usr/sbin/logrotate").exists() {
        "/usr/sbin/logrotate"
    } else {
        "logrotate"
    };
    let out = command(program)
        .args([
            "-f",
            "-s",
            s.state.to_str().unwrap(),
            conf.to_str().unwrap(),
        ])
        .run_within("logrotate -f");
    assert!(
        out.status.success(),
        "logrotate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn spawn_tail(agent: &Agent, url: Option<&str>, logs: &Path) -> Running {
    let mut cmd = agent.cmd(&["tail", "-e", "rot", logs.to_str().unwrap()]);
    if let Some(url) = url {
        cmd.env("PMON_DATABASE_URL", url);
    }
    cmd.stderr(Stdio::null()).start("pmon-agent tail -e")
}

/// Writes LINES unique lines at ~10k/s, reopening the file for every burst (as
/// an application that reopens its log after rotation). The lock keeps a
/// copytruncate from racing a burst: logrotate documents that race as data loss.
fn writer(app: PathBuf, lock: Arc<Mutex<()>>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for burst in 0..LINES / 100 {
            {
                let _guard = lock.lock().unwrap();
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&app)
                    .unwrap();
                let mut text = String::new();
                for i in burst * 100..(burst + 1) * 100 {
                    text.push_str(&format!("2026-11-27 10:00:00,000 INFO app: line {i:06}\n"));
                }
                f.write_all(text.as_bytes()).unwrap();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    })
}

fn run_scenario(agent: &Agent, url: Option<&str>, count: impl Fn() -> (i64, i64)) {
    let s = setup(agent.dir.path());
    let lock = Arc::new(Mutex::new(()));
    let mut tail = spawn_tail(agent, url, &s.logs);
    let write = writer(s.logs.join("app.log"), lock.clone());
    let started = Instant::now();
    let mut killed = false;
    for round in 0..8 {
        std::thread::sleep(Duration::from_millis(350));
        if round % 2 == 0 {
            logrotate(&s, &s.create_conf);
        } else {
            let _guard = lock.lock().unwrap();
            logrotate(&s, &s.copytruncate_conf);
        }
        if !killed && started.elapsed() > Duration::from_millis(1200) {
            tail.kill().unwrap();
            tail.wait().unwrap();
            tail = spawn_tail(agent, url, &s.logs);
            killed = true;
        }
    }
    write.join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut got = count();
    while got.1 < LINES as i64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        got = count();
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(tail.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(tail.wait().unwrap().success());
    assert!(killed);
    assert_eq!(got, (LINES as i64, LINES as i64));
    assert_eq!(
        count(),
        (LINES as i64, LINES as i64),
        "nothing more arrived after the agent stopped"
    );
}

#[test]
fn logrotate_and_a_sigkill_under_load_into_the_embedded_store() {
    let agent = Agent::new();
    let db = agent.db_path();
    run_scenario(&agent, None, || {
        if !db.exists() {
            return (0, 0);
        }
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.query_row(
            "SELECT count(*), count(DISTINCT message) FROM pipeline_logs WHERE experiment_id = 'rot'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap_or((0, 0))
    });
}

#[test]
fn logrotate_and_a_sigkill_under_load_into_postgresql() {
    let (server, db) = shared_database();
    let url = server.url(&db);
    let agent = Agent::new();
    run_scenario(&agent, Some(&url), || {
        server
            .try_psql(&db, "SELECT count(*), count(DISTINCT message) FROM pipeline_logs WHERE experiment_id = 'rot'")
            .ok()
            .and_then(|out| {
                let mut parts = out.split('|').map(|p| p.parse::<i64>().ok());
                Some((parts.next()??, parts.next()??))
            })
            .unwrap_or((0, 0))
    });
}
