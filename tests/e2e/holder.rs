//! The program outlives the part of the agent that parses and ships: the
//! shipper is killed with SIGKILL (any number of times) while a program runs
//! under `wrap` or a daemon, and the program runs to its normal end, its exit
//! code passes through, every line is stored exactly once and a
//! `shipper_restart` event says what happened.

use crate::util::*;
use pretty_assertions::assert_eq;
use std::process::Stdio;

/// The shipper of the holder `holder`, if one runs.
fn shipper_of(holder: u32) -> Option<u32> {
    shippers_of(holder).first().copied()
}

fn kill9(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

fn stored(agent: &Agent, exp: &str) -> i64 {
    agent.count(&format!(
        "SELECT count(*) FROM pipeline_logs WHERE experiment_id = '{exp}' AND message LIKE 'line %'"
    ))
}

/// `INFO:work:line N` every 2 ms until `$PMON_GO` exists (see [`until_go`]).
static UNTIL_GO: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| until_go("INFO:work:line"));

/// Kills the shipper of `holder` `times` times, each time once the store has
/// grown since (so each shipper has done some work) and a new shipper runs.
fn kill_shippers(agent: &Agent, exp: &str, holder: u32, times: usize) {
    let mut last = None;
    for _ in 0..times {
        let before = stored(agent, exp);
        wait_until("a (new) shipper stores more lines", || {
            shipper_of(holder).is_some_and(|pid| Some(pid) != last)
                && stored(agent, exp) > before + 50
        });
        let pid = shipper_of(holder).unwrap();
        kill9(pid);
        last = Some(pid);
    }
}

#[test]
fn a_shipper_killed_twice_leaves_the_program_running_and_every_line_once() {
    let agent = Agent::new().with_config("logging:\n  database:\n    flush_interval: 0.1\n");
    let go = agent.dir.path().join("go");
    let wrap = agent
        .cmd(&[
            "wrap",
            "-e",
            "survive",
            "--no-echo",
            "--",
            "python3",
            "-c",
            &UNTIL_GO,
        ])
        .env("PMON_GO", &go)
        .stderr(Stdio::piped())
        .start("pmon-agent wrap -e");
    let holder = wrap.id();
    let first = {
        let mut pid = None;
        wait_until("the shipper runs", || {
            pid = shipper_of(holder);
            pid.is_some()
        });
        pid.unwrap()
    };
    // The kernel's OOM killer picks the shipper before the holder.
    let adj = |pid: u32| -> i32 {
        std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    assert!(
        adj(first) > adj(holder),
        "shipper {} holder {}",
        adj(first),
        adj(holder)
    );
    kill_shippers(&agent, "survive", holder, 2);
    let before = stored(&agent, "survive");
    wait_until("the third shipper stores more", || {
        stored(&agent, "survive") > before + 50
    });
    std::fs::write(&go, "").unwrap();
    let out = wrap.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "the program's exit code: {}",
        stderr_text(&out)
    );
    let printed: i64 = std::fs::read_to_string(go.with_extension("count"))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        agent.line_counts("survive"),
        (printed, printed),
        "every line once"
    );
    assert_eq!(
        agent.count("SELECT count(*) FROM pipeline_events WHERE event_type = 'shipper_restart'"),
        2
    );
    let status = agent.status("survive");
    assert_eq!(status["state"], "failed");
    assert_eq!(status["exit_code"], 3);
}

/// A shipper that was stopped while the program printed, then killed: its
/// successor stamps the lines with when they arrived, not when it read them.
#[test]
fn records_shipped_after_a_restart_keep_their_arrival_time() {
    let agent = Agent::new();
    let go = agent.dir.path().join("go");
    let program = r#"
import os, time
go = os.environ['PMON_GO']
open(go + '.started', 'w').close()
while not os.path.exists(go + '.stopped'):
    time.sleep(0.01)
for i in range(20):
    print(f'line {i} at {time.time():.3f}', flush=True)
    time.sleep(0.05)
open(go + '.printed', 'w').close()
while not os.path.exists(go):
    time.sleep(0.01)
"#;
    let wrap = agent
        .cmd(&[
            "wrap",
            "-e",
            "clock",
            "--no-echo",
            "--",
            "python3",
            "-c",
            program,
        ])
        .env("PMON_GO", &go)
        .start("pmon-agent wrap -e");
    let holder = wrap.id();
    // The program starts once the shipper has registered the run: stopping
    // the shipper before that would stop the program from ever starting.
    wait_until("the program runs", || go.with_extension("started").exists());
    let shipper = shipper_of(holder).expect("the shipper runs");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shipper as i32),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    std::fs::write(go.with_extension("stopped"), "").unwrap();
    wait_until("the program printed while the shipper was stopped", || {
        go.with_extension("printed").exists()
    });
    std::thread::sleep(std::time::Duration::from_secs(1));
    kill9(shipper);
    wait_until("the next shipper stores the lines", || {
        stored(&agent, "clock") == 20
    });
    std::fs::write(&go, "").unwrap();
    assert!(wrap.wait_with_output().unwrap().status.success());
    for record in agent.json_lines(&["query", "logs", "clock"]) {
        let message = record["message"].as_str().unwrap();
        let printed: f64 = message.rsplit(' ').next().unwrap().parse().unwrap();
        let stamped = chrono::DateTime::parse_from_rfc3339(record["timestamp"].as_str().unwrap())
            .unwrap()
            .timestamp_micros() as f64
            / 1e6;
        assert!(
            (stamped - printed).abs() < 0.5,
            "{message}: stamped {stamped}, printed {printed}"
        );
    }
}

#[test]
fn a_daemons_shipper_killed_leaves_its_program_running() {
    let agent = Agent::new().with_config("logging:\n  database:\n    flush_interval: 0.1\n");
    let go = agent.dir.path().join("go");
    let out = agent
        .cmd(&[
            "daemon", "start", "--name", "keeps", "--", "python3", "-c", &UNTIL_GO,
        ])
        .env("PMON_GO", &go)
        .run_within("pmon-agent daemon start");
    assert!(out.status.success(), "{}", stderr_text(&out));
    let (supervisor, program) = {
        let (mut sup, mut prog) = (0, 0);
        wait_until("the daemon runs", || {
            let out = agent.run(&["daemon", "status", "keeps", "--format", "json"]);
            let state: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            sup = state["supervisor_pid"].as_u64().unwrap_or(0) as u32;
            prog = state["pid"].as_u64().unwrap_or(0) as u32;
            state["state"] == "running" && prog != 0
        });
        (sup, prog)
    };
    // The run's holder is a process of its own under the supervisor; the
    // program is its child.
    let holder = holders_of(supervisor)[0];
    assert_eq!(parent_of(program), Some(holder));
    kill_shippers(&agent, "keeps", holder, 1);
    let before = stored(&agent, "keeps");
    wait_until("the next shipper stores more", || {
        stored(&agent, "keeps") > before + 50
    });
    std::fs::write(&go, "").unwrap();
    wait_until("the daemon's run ends", || {
        let out = agent.run(&["daemon", "status", "keeps", "--format", "json"]);
        let state: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        state["state"] == "failed"
    });
    let printed: i64 = std::fs::read_to_string(go.with_extension("count"))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(agent.line_counts("keeps"), (printed, printed));
    assert_eq!(
        agent.count("SELECT count(*) FROM pipeline_events WHERE event_type = 'shipper_restart'"),
        1
    );
}

/// The supervisor of a daemon is not its program's holder: killed, it
/// leaves the program printing and the run's holder shipping every line.
#[test]
fn a_daemons_supervisor_killed_leaves_its_program_and_holder_running() {
    let agent = Agent::new().with_config("logging:\n  database:\n    flush_interval: 0.1\n");
    let go = agent.dir.path().join("go");
    let out = agent
        .cmd(&[
            "daemon", "start", "--name", "orphan", "--", "python3", "-c", &UNTIL_GO,
        ])
        .env("PMON_GO", &go)
        .run_within("pmon-agent daemon start");
    assert!(out.status.success(), "{}", stderr_text(&out));
    let mut state = serde_json::Value::Null;
    wait_until("the daemon runs", || {
        let out = agent.run(&["daemon", "status", "orphan", "--format", "json"]);
        state = serde_json::from_slice(&out.stdout).unwrap_or_default();
        state["state"] == "running" && !state["pid"].is_null()
    });
    let supervisor = state["supervisor_pid"].as_u64().unwrap() as u32;
    let program = state["pid"].as_u64().unwrap() as u32;
    let holder = holders_of(supervisor)[0];
    kill9(supervisor);
    wait_until("the daemon shows lost", || {
        let out = agent.run(&["daemon", "status", "orphan", "--format", "json"]);
        let state: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        state["state"] == "lost"
    });
    let before = stored(&agent, "orphan");
    wait_until("lines printed after the kill are stored", || {
        stored(&agent, "orphan") > before + 50
    });
    assert_eq!(
        parent_of(program),
        Some(holder),
        "the program keeps its holder"
    );
    std::fs::write(&go, "").unwrap();
    wait_until("the holder ends with its program", || {
        parent_of(holder).is_none()
            || shippers_of(holder).is_empty() && parent_of(program).is_none()
    });
    let printed: i64 = std::fs::read_to_string(go.with_extension("count"))
        .unwrap()
        .parse()
        .unwrap();
    wait_until("every line is stored", || {
        stored(&agent, "orphan") >= printed
    });
    assert_eq!(
        agent.line_counts("orphan"),
        (printed, printed),
        "every line once"
    );
}
