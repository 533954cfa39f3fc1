//! Daemons with real processes: crashes name their exception or signal, a
//! killed supervisor shows `lost`, pause and resume change the process state,
//! stop leaves no process of the group behind, restarts back off and give up.

use crate::util::*;
use pretty_assertions::assert_eq;
use serde_json::Value;
use std::time::{Duration, Instant};

fn start(agent: &Agent, args: &[&str]) {
    let mut all = vec!["daemon", "start"];
    all.extend_from_slice(args);
    let out = agent.run(&all);
    assert!(
        out.status.success(),
        "daemon start failed: {}",
        stderr_text(&out)
    );
}

fn status(agent: &Agent, name: &str) -> Value {
    let mut lines = agent.json_lines(&["daemon", "status", name]);
    assert_eq!(lines.len(), 1);
    lines.remove(0)
}

/// Polls the daemon's status until `done` says so (or two minutes pass).
fn wait_for(agent: &Agent, name: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = status(agent, name);
        if done(&s) || Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn status_text(agent: &Agent, name: &str) -> String {
    String::from_utf8(agent.run(&["daemon", "status", name]).stdout).unwrap()
}

/// Processes (not zombies) whose process group is `pgid`, from /proc.
fn group_size(pgid: u64) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some(i) = stat.rfind(')') else {
                return false;
            };
            let fields: Vec<&str> = stat[i + 2..].split(' ').collect();
            fields[0] != "Z" && fields[2].parse::<u64>().ok() == Some(pgid)
        })
        .count()
}

fn group_is_empty(pgid: u64) -> bool {
    group_size(pgid) == 0
}

fn proc_state(pid: u64) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].chars().next()
}

fn sigkill(pid: u64) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

#[test]
fn a_python_daemon_that_crashes_shows_failed_with_its_exception() {
    let agent = Agent::new();
    let script = "import logging, time\nlogging.basicConfig(level=logging.INFO)\nlogging.info('worker up')\ntime.sleep(1)\nraise ValueError('bad shard 7')\n";
    start(&agent, &["--name", "crashy", "--", "python3", "-c", script]);
    let s = wait_for(&agent, "crashy", |s| s["state"] != "running");
    assert_eq!(s["state"], "failed");
    assert_eq!(s["exit_code"], 1);
    assert_eq!(s["last_error"], "ValueError: bad shard 7");
    let text = status_text(&agent, "crashy");
    assert!(
        text.contains("failed") && text.contains("(exit 1): ValueError: bad shard 7"),
        "{text}"
    );
    // Its traceback is in the store, under the daemon's experiment.
    let errors = agent.json_lines(&["query", "errors", "crashy"]);
    assert_eq!(errors[0]["exception_type"], "ValueError");
    let logs = String::from_utf8(
        agent
            .run(&["daemon", "logs", "crashy", "--traceback"])
            .stdout,
    )
    .unwrap();
    assert!(
        logs.contains("worker up") && logs.contains("    ValueError: bad shard 7"),
        "{logs}"
    );
}

#[test]
fn kill_9_of_the_program_shows_crashed_with_sigkill() {
    let agent = Agent::new();
    start(&agent, &["--name", "victim", "--", "sleep", "60"]);
    let s = wait_for(&agent, "victim", |s| !s["pid"].is_null());
    sigkill(s["pid"].as_u64().unwrap());
    let s = wait_for(&agent, "victim", |s| s["state"] != "running");
    assert_eq!(s["state"], "crashed");
    assert_eq!(s["signal"], 9);
    let text = status_text(&agent, "victim");
    assert!(
        text.contains("crashed") && text.contains("SIGKILL"),
        "{text}"
    );
}

#[test]
fn kill_9_of_the_supervisor_shows_lost_never_running() {
    let agent = Agent::new();
    start(&agent, &["--name", "orphan", "--", "sleep", "60"]);
    let s = wait_for(&agent, "orphan", |s| !s["pid"].is_null());
    sigkill(s["supervisor_pid"].as_u64().unwrap());
    let s = wait_for(&agent, "orphan", |s| s["state"] != "running");
    assert_eq!(s["state"], "lost");
    // stop still cleans up the program the dead supervisor left behind.
    assert!(agent
        .run(&["daemon", "stop", "orphan", "--timeout", "2s"])
        .status
        .success());
    assert!(group_is_empty(s["pid"].as_u64().unwrap()));
}

#[test]
fn pause_stops_the_process_and_resume_runs_it_again() {
    let agent = Agent::new();
    start(&agent, &["--name", "napper", "--", "sleep", "60"]);
    let pid = wait_for(&agent, "napper", |s| !s["pid"].is_null())["pid"]
        .as_u64()
        .unwrap();
    assert!(agent.run(&["daemon", "pause", "napper"]).status.success());
    // A stop takes effect once the kernel gets to the process: wait for it.
    wait_until("the process is stopped", || proc_state(pid) == Some('T'));
    assert_eq!(status(&agent, "napper")["state"], "paused");
    assert!(agent.run(&["daemon", "resume", "napper"]).status.success());
    wait_until("the process runs again", || {
        matches!(proc_state(pid), Some('S') | Some('R'))
    });
    assert_eq!(status(&agent, "napper")["state"], "running");
    let events: i64 = agent
        .sql()
        .query_row(
            "SELECT count(*) FROM pipeline_events WHERE event_type IN ('pause', 'resume')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(events, 2);
    agent.run(&["daemon", "stop", "napper"]);
}

#[test]
fn stop_leaves_no_process_of_the_group_even_when_sigterm_is_ignored() {
    let agent = Agent::new();
    let ready = agent.dir.path().join("ready");
    // The children ignore SIGTERM too; the marker file says all three run.
    let script = "import signal, subprocess, sys, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nkid = 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)'\nkids = [subprocess.Popen([sys.executable, '-c', kid]) for _ in range(2)]\ntime.sleep(0.5)\nopen(sys.argv[1], 'w').close()\ntime.sleep(120)\n";
    start(
        &agent,
        &[
            "--name",
            "stubborn",
            "--",
            "python3",
            "-c",
            script,
            ready.to_str().unwrap(),
        ],
    );
    let pid = wait_for(&agent, "stubborn", |s| !s["pid"].is_null())["pid"]
        .as_u64()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ready.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(group_size(pid), 3, "the program and its two children");
    let out = agent.run(&["daemon", "stop", "stubborn", "--timeout", "1s"]);
    assert!(out.status.success(), "{}", stderr_text(&out));
    assert!(group_is_empty(pid), "no process of the group survives");
    let s = status(&agent, "stubborn");
    assert_eq!(s["state"], "stopped");
    let by: String = agent
        .sql()
        .query_row(
            "SELECT details FROM pipeline_events WHERE event_type = 'stop'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(by.contains("\"by\""), "{by}");
}

#[test]
fn on_failure_restarts_with_growing_delays_and_gives_up_after_the_limit() {
    let agent = Agent::new();
    std::fs::write(
        agent.dir.path().join("config.yml"),
        "daemon:\n  first_backoff: 100ms\n  max_restarts: 3\n  restart_window: 1m\n",
    )
    .unwrap();
    start(
        &agent,
        &[
            "--name",
            "flaky",
            "--restart",
            "on-failure",
            "--",
            "python3",
            "-c",
            "raise SystemExit(3)",
        ],
    );
    let s = wait_for(&agent, "flaky", |s| {
        s["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("gave up"))
    });
    assert_eq!(s["state"], "failed");
    assert_eq!(s["restarts"], 3);
    let delays: Vec<f64> = {
        let db = agent.sql();
        let mut stmt = db.prepare("SELECT details FROM pipeline_events WHERE event_type = 'restart' ORDER BY timestamp").unwrap();
        stmt.query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .map(|d| {
                serde_json::from_str::<Value>(&d.unwrap()).unwrap()["delay_s"]
                    .as_f64()
                    .unwrap()
            })
            .collect()
    };
    assert_eq!(
        delays,
        vec![0.1, 0.2, 0.4],
        "each restart waits twice as long"
    );
    let runs = agent.json_lines(&["query", "list"]);
    assert_eq!(runs[0]["run"], 4, "each restart is a run of its own");
}

#[test]
fn a_name_in_use_is_refused_and_bad_names_are_rejected() {
    let agent = Agent::new();
    start(&agent, &["--name", "solo", "--", "sleep", "60"]);
    let again = agent.run(&["daemon", "start", "--name", "solo", "--", "sleep", "1"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr_text(&again).contains("already running"),
        "{}",
        stderr_text(&again)
    );
    let bad = agent.run(&["daemon", "start", "--name", "../etc", "--", "true"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr_text(&bad).contains("not a valid daemon name"));
    let list = agent.json_lines(&["daemon", "list"]);
    assert_eq!(list.len(), 1);
    for key in [
        "name",
        "experiment_id",
        "state",
        "pid",
        "supervisor_pid",
        "started_at",
        "restarts",
        "exit_code",
        "signal",
        "last_error",
    ] {
        assert!(list[0].get(key).is_some(), "daemon list lacks {key}");
    }
    agent.run(&["daemon", "stop", "solo"]);
}

#[test]
fn status_shows_the_running_programs_memory_cpu_and_top_level_progress() {
    let agent = Agent::new().with_config("monitoring:\n  metrics_interval: 0.2\n");
    let program = "import time\nprint('##pmon[progress task=train current=3 total=10 unit=epochs]', flush=True)\nprint('##pmon[progress task=train/batch current=5 total=9]', flush=True)\ntime.sleep(600)\n";
    start(
        &agent,
        &["--name", "sampled", "--", "python3", "-c", program],
    );
    let s = wait_for(&agent, "sampled", |s| {
        s["rss_bytes"].as_u64().is_some_and(|b| b > 0)
            && s["cpu_percent"].is_number()
            && s["progress"].as_array().is_some_and(|p| !p.is_empty())
    });
    assert!(s["rss_bytes"].as_u64().is_some_and(|b| b > 0), "{s}");
    let tasks: Vec<&str> = s["progress"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["task"].as_str().unwrap())
        .collect();
    assert_eq!(tasks, ["train"], "top-level tasks only: {s}");
    let text = status_text(&agent, "sampled");
    assert!(
        text.lines()
            .any(|l| l.starts_with("last sample: rss ") && l.contains(" MiB, cpu ")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l == "progress: train 3/10 epochs (30%)"),
        "{text}"
    );
    agent.run(&["daemon", "stop", "sampled"]);
}

/// In a container whose PID 1 does not reap, a supervisor killed with
/// SIGKILL stays a zombie: it must show as `lost`, not `running` forever.
/// Here the test is the supervisor's parent and does not reap it.
#[test]
fn a_supervisor_that_is_a_zombie_is_lost() {
    let agent = Agent::new();
    let mut supervisor = agent
        .cmd(&[
            "daemon",
            "supervise",
            "--name",
            "undead",
            "--",
            "sleep",
            "600",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .start("pmon-agent daemon supervise");
    wait_until("the supervisor writes its state", || {
        agent.data_dir().join("daemons/undead.json").exists()
    });
    let s = wait_for(&agent, "undead", |s| {
        s["state"] == "running" && !s["pid"].is_null()
    });
    assert_eq!(s["state"], "running");
    supervisor.kill().unwrap();
    let pid = supervisor.id();
    let zombie = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while !zombie() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(zombie(), "the killed supervisor is a zombie until reaped");
    let s = status(&agent, "undead");
    assert_eq!(s["state"], "lost", "{s}");
    supervisor.wait().unwrap();
    // Its program is an orphan now; end it.
    let program = s["pid"].as_u64().unwrap() as i32;
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(program),
        nix::sys::signal::Signal::SIGKILL,
    );
}

#[test]
fn sigusr1_to_the_supervisor_writes_a_status_report() {
    let agent = Agent::new();
    start(&agent, &["--name", "reporter", "--", "sleep", "60"]);
    let s = wait_for(&agent, "reporter", |s| !s["pid"].is_null());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(s["supervisor_pid"].as_u64().unwrap() as i32),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .unwrap();
    let log = agent.data_dir().join("daemons/reporter.supervisor.log");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("status: uptime")
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("status: uptime"));
    agent.run(&["daemon", "stop", "reporter"]);
}

#[test]
fn logs_follow_goes_on_into_the_runs_after_a_restart() {
    let agent = Agent::new();
    std::fs::write(
        agent.dir.path().join("config.yml"),
        "daemon:\n  first_backoff: 100ms\n  max_restarts: 2\n  restart_window: 1m\n",
    )
    .unwrap();
    let program =
        "import os, time\nprint('instance up', flush=True)\ntime.sleep(1)\nraise SystemExit(1)\n";
    start(
        &agent,
        &[
            "--name",
            "phoenix",
            "--restart",
            "on-failure",
            "--",
            "python3",
            "-c",
            program,
        ],
    );
    wait_for(&agent, "phoenix", |s| !s["run_id"].is_null());
    let mut follower = agent
        .cmd(&["daemon", "logs", "phoenix", "-f"])
        .stdout(std::process::Stdio::piped())
        .start("pmon-agent daemon logs");
    let stdout = follower.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while lines
        .iter()
        .filter(|l: &&String| l.contains("instance up"))
        .count()
        < 3
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => break,
        }
    }
    let _ = follower.kill();
    let _ = follower.wait();
    let shape: Vec<String> = lines
        .iter()
        .map(|l| match l.find("-- run ") {
            Some(0) => l[..9].to_string(),
            _ if l.contains("instance up") => "instance up".to_string(),
            _ => l.clone(),
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            "instance up",
            "-- run 2 ",
            "instance up",
            "-- run 3 ",
            "instance up"
        ],
        "one follower sees every instance, each run marked; got {lines:#?}"
    );
}
