//! Chaos under load, in one test: eight agents — five `wrap`s and three
//! `tail`s of directories whose log is rotated every two seconds — write
//! into one PostgreSQL while, for 60 s, the server is stopped with
//! `-m immediate` and started again every few seconds and a shipper is
//! SIGKILLed every few seconds. Afterwards every line of every program and
//! file is stored exactly once and every spool is empty. The line counts
//! are small (the faults, not the volume, are the point).

use crate::pg_server::PgServer;
use crate::util::*;
use std::io::Write;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CHAOS: Duration = Duration::from_secs(60);

const CONFIG: &str = "logging:\n  database:\n    flush_interval: 0.2\n    retry_first_backoff: 100ms\n    retry_max_backoff: 1s\n    shutdown_timeout: 10m\n";

/// Prints `line <tag> N` every 10 ms until `$PMON_GO` exists, then writes
/// how many it printed to `$PMON_GO.count`.
const PRINTER: &str = r#"
import os, sys, time
go, tag = os.environ['PMON_GO'], sys.argv[1]
i = 0
while not os.path.exists(go):
    print(f'INFO:chaos:line {tag} {i}', flush=True)
    i += 1
    time.sleep(0.01)
with open(go + '.count', 'w') as f:
    f.write(str(i))
"#;

/// Appends `line <tag> N` to `dir/app.log`, renaming it to `app.log.K`
/// and starting a new one every two seconds, until `stop`; returns how many.
fn write_and_rotate(dir: std::path::PathBuf, tag: String, stop: Arc<AtomicBool>) -> u64 {
    let log = dir.join("app.log");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap();
    let (mut written, mut rotations, mut last) = (0u64, 0, Instant::now());
    while !stop.load(Ordering::SeqCst) {
        writeln!(file, "INFO:chaos:line {tag} {written}").unwrap();
        written += 1;
        if last.elapsed() >= Duration::from_secs(2) {
            rotations += 1;
            std::fs::rename(&log, dir.join(format!("app.log.{rotations}"))).unwrap();
            file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap();
            last = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    written
}

fn stored(server: &PgServer, tag: &str) -> (i64, i64) {
    let out = server
        .try_psql(
            "postgres",
            &format!("SELECT count(*), count(DISTINCT message) FROM pipeline_logs WHERE message LIKE 'line {tag} %'"),
        )
        .unwrap_or_else(|_| "0|0".into());
    let mut parts = out.split('|').map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

fn spool_pending(agent: &Agent) -> u64 {
    agent.json_lines(&["spool", "status"])[0]["pending"]
        .as_u64()
        .unwrap()
}

#[test]
fn eight_agents_through_outages_shipper_kills_and_rotation_store_every_line_once() {
    let server = PgServer::start();
    let url = server.url("postgres");
    let with_url = |agent: &Agent, args: &[&str]| {
        let mut cmd = agent.cmd(args);
        cmd.env("PMON_DATABASE_URL", &url)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    };
    // Five wrapped programs.
    let wraps: Vec<(String, Agent, Running)> = (0..5)
        .map(|i| {
            let tag = format!("w{i}");
            let agent = Agent::new().with_config(CONFIG);
            let go = agent.dir.path().join("go");
            let child = with_url(
                &agent,
                &["wrap", "-e", &tag, "--", "python3", "-c", PRINTER, &tag],
            )
            .env("PMON_GO", go)
            .start(&format!("pmon-agent wrap -e {tag}"));
            (tag, agent, child)
        })
        .collect();
    // Three followed directories, rotated by writers in this process.
    let stop_writing = Arc::new(AtomicBool::new(false));
    let tails: Vec<(String, Agent, Running, std::thread::JoinHandle<u64>)> = (0..3)
        .map(|i| {
            let tag = format!("t{i}");
            let agent = Agent::new().with_config(CONFIG);
            let dir = agent.dir.path().join("logs");
            std::fs::create_dir_all(&dir).unwrap();
            let writer = {
                let (dir, tag, stop) = (dir.clone(), tag.clone(), stop_writing.clone());
                std::thread::spawn(move || write_and_rotate(dir, tag, stop))
            };
            let child = with_url(
                &agent,
                &["tail", "-e", &tag, "--from-start", dir.to_str().unwrap()],
            )
            .start(&format!("pmon-agent tail -e {tag}"));
            (tag, agent, child, writer)
        })
        .collect();

    // The chaos: the database down and up every 3 s, a shipper killed every 4 s.
    let start = Instant::now();
    let (mut up, mut next_flip, mut next_kill, mut victim) = (true, 3, 4, 0);
    while start.elapsed() < CHAOS {
        let t = start.elapsed().as_secs();
        if t >= next_flip {
            if up {
                server.stop_immediate();
            } else {
                server.start_again();
            }
            up = !up;
            next_flip += 3;
        }
        if t >= next_kill {
            let holder = wraps[victim % wraps.len()].2.id();
            for pid in shippers_of(holder) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            victim += 1;
            next_kill += 4;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if !up {
        server.start_again();
    }

    // The end: programs and writers stop; every agent ships what it has.
    for (_, agent, _) in &wraps {
        std::fs::write(agent.dir.path().join("go"), "").unwrap();
    }
    stop_writing.store(true, Ordering::SeqCst);
    for (tag, agent, running) in wraps {
        let out = running.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{tag}");
        let printed: i64 = std::fs::read_to_string(agent.dir.path().join("go.count"))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            stored(&server, &tag),
            (printed, printed),
            "{tag}: every line once"
        );
        assert_eq!(spool_pending(&agent), 0, "{tag}: spool empty");
    }
    for (tag, agent, running, writer) in tails {
        let written = writer.join().unwrap() as i64;
        wait_until(&format!("{tag}: every written line stored"), || {
            stored(&server, &tag).0 >= written
        });
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(running.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        running.wait_with_output().unwrap();
        assert_eq!(
            stored(&server, &tag),
            (written, written),
            "{tag}: every line once"
        );
        assert_eq!(spool_pending(&agent), 0, "{tag}: spool empty");
    }
}
