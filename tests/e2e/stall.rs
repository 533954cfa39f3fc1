//! Hangs: a program that prints nothing, moves no progress bar and idles
//! is reported stalled, once, with where it is stuck (py-spy), and resumed
//! when it goes on; `pmon-agent stack` reads a running program's stacks.

use crate::util::*;
use serde_json::Value;
use std::process::Stdio;

/// Waits (idle, polling a file) for the test to say go, then prints again.
const WAITER: &str = r#"
import os, time
go = os.environ['PMON_GO']
def wait_for_data():
    while not os.path.exists(go):
        time.sleep(0.2)
print("starting", flush=True)
wait_for_data()
print("data arrived", flush=True)
"#;

fn events(agent: &Agent, kind: &str) -> Vec<Value> {
    let db = agent.sql();
    let mut stmt = db
        .prepare("SELECT details FROM pipeline_events WHERE event_type = ?1 ORDER BY id")
        .unwrap();
    let rows = stmt.query_map([kind], |r| r.get::<_, String>(0)).unwrap();
    rows.map(|d| serde_json::from_str(&d.unwrap()).unwrap())
        .collect()
}

fn count(agent: &Agent, kind: &str) -> i64 {
    agent.count(&format!(
        "SELECT count(*) FROM pipeline_events WHERE event_type = '{kind}'"
    ))
}

#[test]
fn a_quiet_idle_program_is_stalled_once_with_its_stack_then_resumes() {
    let agent = Agent::new().with_config("monitoring:\n  stall_after: 2s\n");
    let go = agent.dir.path().join("go");
    let child = agent
        .cmd(&["wrap", "-e", "hang", "--", "python3", "-c", WAITER])
        .env("PMON_GO", &go)
        .stdout(Stdio::piped())
        .start("pmon-agent wrap -e");
    let running = child;
    wait_until("the stall is recorded", || count(&agent, "stall") >= 1);

    let stall = &events(&agent, "stall")[0];
    let stack = stall["stack"]
        .as_str()
        .unwrap_or_else(|| panic!("no stack: {stall}"));
    assert!(stack.contains("wait_for_data"), "{stack}");
    assert!(stall["quiet_s"].as_f64().unwrap() >= 2.0, "{stall}");
    assert!(stall["cpu_percent"].as_f64().unwrap() < 2.0, "{stall}");
    let status = String::from_utf8(agent.run(&["query", "status", "hang"]).stdout).unwrap();
    assert!(status.contains("state: running (stalled "), "{status}");
    assert!(!agent.status("hang")["stalled_since"].is_null());
    let list = String::from_utf8(agent.run(&["query", "list"]).stdout).unwrap();
    assert!(list.contains("running (stalled "), "{list}");

    std::fs::write(&go, "").unwrap();
    let out = running.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "starting\ndata arrived\n"
    );
    assert_eq!(count(&agent, "stall"), 1, "once per stall");
    assert_eq!(count(&agent, "resume"), 1);
    assert!(events(&agent, "resume")[0]["stalled_s"].as_f64().is_some());
}

const SERVER: &str = r#"
import time
def serve_forever():
    print("ready", flush=True)
    while True:
        time.sleep(0.1)
serve_forever()
"#;

#[test]
fn stack_names_the_function_a_running_daemon_is_in() {
    let agent = Agent::new().with_config("monitoring:\n  stall_after: 2s\n");
    let out = agent.run(&[
        "daemon", "start", "--name", "srv", "--", "python3", "-c", SERVER,
    ]);
    assert!(out.status.success(), "{}", stderr_text(&out));
    wait_until("the daemon is ready", || {
        agent.count("SELECT count(*) FROM pipeline_logs WHERE message = 'ready'") == 1
    });

    let text = agent.run(&["stack", "--daemon", "srv"]);
    assert!(text.status.success(), "{}", stderr_text(&text));
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("serve_forever (<string>:"), "{text}");
    let threads = agent.json_lines(&["stack", "srv"]);
    assert_eq!(threads.len(), 1, "{threads:#?}");
    // py-spy names it from `threading`'s table, which it cannot always
    // read; then it is named by its native id (the main thread's is the pid).
    let pid = agent.json_lines(&["daemon", "status", "srv"])[0]["pid"].clone();
    let name = threads[0]["thread_name"].as_str().unwrap_or_default();
    assert!(
        name == "MainThread" || name == format!("thread {pid}"),
        "{threads:#?}"
    );
    assert_eq!(threads[0]["frames"][0]["function"], "serve_forever");

    // Idle ever since it said ready: stalled, as daemon status says.
    wait_until("the daemon stalls", || count(&agent, "stall") >= 1);
    wait_until("daemon status says so", || {
        String::from_utf8_lossy(&agent.run(&["daemon", "status", "srv"]).stdout)
            .contains(" (stalled ")
    });
    assert!(!agent.json_lines(&["daemon", "status", "srv"])[0]["stalled_since"].is_null());

    // Without py-spy on PATH: what to install, not a failure to explain.
    let missing = agent
        .cmd(&["stack", "--daemon", "srv"])
        .env("PATH", "/nonexistent")
        .run_within("pmon-agent stack --daemon");
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr_text(&missing).contains("pip install py-spy"),
        "{}",
        stderr_text(&missing)
    );

    let out = agent.run(&["daemon", "stop", "srv"]);
    assert!(out.status.success(), "{}", stderr_text(&out));
    let ended = agent.run(&["stack", "--daemon", "srv"]);
    assert!(
        stderr_text(&ended).contains("daemon 'srv' has no running program (it is stopped)"),
        "{}",
        stderr_text(&ended)
    );
}
