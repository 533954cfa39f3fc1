//! Crashes below Python: a program that dies of a signal in C code leaves,
//! through faulthandler, every thread's Python stack, stored as one CRITICAL
//! record that names where it crashed.

use crate::util::*;
use serde_json::Value;

fn fixture(name: &str) -> String {
    repo_root()
        .join("fixtures/faulthandler")
        .join(name)
        .display()
        .to_string()
}

fn fault_records(agent: &Agent, experiment: &str) -> Vec<Value> {
    agent
        .json_lines(&["query", "errors", experiment, "--traceback"])
        .into_iter()
        .filter(|r| {
            r["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("Fatal Python error: "))
        })
        .collect()
}

#[test]
fn a_segfault_in_c_code_names_the_function_and_line_with_every_thread() {
    let agent = Agent::new();
    let out = agent.run(&["wrap", "-e", "seg", "--", "python3", &fixture("seg.py")]);
    assert_eq!(out.status.code(), Some(139), "{}", stderr_text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "about to crash\n");
    // The dump still reaches the terminal, byte for byte.
    assert!(
        stderr_text(&out).starts_with("Fatal Python error: Segmentation fault\n\nThread 0x"),
        "{}",
        stderr_text(&out)
    );

    let faults = fault_records(&agent, "seg");
    assert_eq!(faults.len(), 1, "{faults:#?}");
    let fault = &faults[0];
    assert_eq!(fault["level"], "CRITICAL");
    assert_eq!(fault["exception_type"], "SIGSEGV");
    assert_eq!(fault["exception_message"], "crash() at seg.py:9");
    let traceback = fault["traceback"].as_str().unwrap();
    assert_eq!(traceback, stderr_text(&out), "the whole dump, as printed");
    assert!(
        traceback.contains("\nThread 0x") && traceback.contains(" in sleeper\n"),
        "{traceback}"
    );
    assert!(
        traceback.contains("\nCurrent thread 0x")
            && traceback.contains("seg.py\", line 9 in crash\n"),
        "{traceback}"
    );

    let status = String::from_utf8(agent.run(&["query", "status", "seg"]).stdout).unwrap();
    assert!(
        status.contains("state: crashed: SIGSEGV in crash() at seg.py:9\n"),
        "{status}"
    );
    let exit: String = agent
        .sql()
        .query_row(
            "SELECT details FROM pipeline_events WHERE event_type = 'exit'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let exit: Value = serde_json::from_str(&exit).unwrap();
    assert_eq!(exit["crash"], "SIGSEGV in crash() at seg.py:9", "{exit}");
}

#[test]
fn an_abort_is_sigabrt_and_a_daemon_says_where() {
    let agent = Agent::new();
    let out = agent.run(&["wrap", "-e", "abrt", "--", "python3", &fixture("abrt.py")]);
    assert_eq!(out.status.code(), Some(134), "{}", stderr_text(&out));
    let faults = fault_records(&agent, "abrt");
    assert_eq!(faults.len(), 1, "{faults:#?}");
    assert_eq!(faults[0]["exception_type"], "SIGABRT");
    assert_eq!(faults[0]["exception_message"], "give_up() at abrt.py:3");

    let out = agent.run(&[
        "daemon",
        "start",
        "--name",
        "segd",
        "--",
        "python3",
        &fixture("seg.py"),
    ]);
    assert!(out.status.success(), "{}", stderr_text(&out));
    wait_until("the daemon has crashed", || {
        agent.json_lines(&["daemon", "status", "segd"])[0]["state"] == "crashed"
    });
    let status = agent.json_lines(&["daemon", "status", "segd"]).remove(0);
    assert_eq!(
        status["last_error"], "SIGSEGV in crash() at seg.py:9",
        "{status}"
    );
    let text = String::from_utf8(agent.run(&["daemon", "status", "segd"]).stdout).unwrap();
    assert!(text.contains(": SIGSEGV in crash() at seg.py:9"), "{text}");
}

#[test]
fn no_faulthandler_leaves_the_setting_alone() {
    let agent = Agent::new();
    let program = "import os; print(os.environ.get('PYTHONFAULTHANDLER', 'unset'))";
    let on = agent.run(&["wrap", "-e", "env", "--", "python3", "-c", program]);
    assert_eq!(String::from_utf8_lossy(&on.stdout), "1\n");
    let off = agent.run(&[
        "wrap",
        "-e",
        "env",
        "--no-faulthandler",
        "--",
        "python3",
        "-c",
        program,
    ]);
    assert_eq!(String::from_utf8_lossy(&off.stdout), "unset\n");
    let mine = agent
        .cmd(&["wrap", "-e", "env", "--", "python3", "-c", program])
        .env("PYTHONFAULTHANDLER", "")
        .run_within("pmon-agent wrap -e");
    assert_eq!(
        String::from_utf8_lossy(&mine.stdout),
        "\n",
        "the user's own setting wins"
    );
}

/// A second thread writes to stderr as fast as it can while the main
/// thread segfaults: the dump is written between (or among) its lines.
const BUSY_CRASH: &str = r#"
import ctypes, sys, threading
def chatter():
    i = 0
    while True:
        sys.stderr.write(f"worker tick {i}\n")
        sys.stderr.flush()
        i += 1
threading.Thread(target=chatter, daemon=True).start()
import time; time.sleep(0.05)
ctypes.string_at(0)
"#;

#[test]
fn lines_printed_around_a_dump_are_never_swallowed() {
    let agent = Agent::new();
    let out = agent.run(&["wrap", "-e", "busy", "--", "python3", "-c", BUSY_CRASH]);
    assert_eq!(out.status.code(), Some(139), "{}", stderr_text(&out));
    // Every whole `worker tick N` line the program printed (the plain log
    // file holds its bytes as printed) is a record of its own.
    let printed: std::collections::BTreeSet<String> = std::fs::read_to_string(
        std::fs::read_dir(agent.data_dir().join("logs/busy"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path(),
    )
    .unwrap()
    .lines()
    .filter(|l| l.starts_with("worker tick ") && l["worker tick ".len()..].parse::<u64>().is_ok())
    .map(str::to_string)
    .collect();
    assert!(printed.len() > 10, "{}", printed.len());
    let stored: std::collections::BTreeSet<String> = agent
        .json_lines(&["query", "logs", "busy", "--search", "worker tick "])
        .into_iter()
        .map(|r| r["message"].as_str().unwrap().to_string())
        .collect();
    let missing: Vec<&String> = printed.difference(&stored).collect();
    assert!(
        missing.is_empty(),
        "{} of {} lines swallowed: {missing:?}",
        missing.len(),
        printed.len()
    );
    assert_eq!(fault_records(&agent, "busy").len(), 1);
}
