//! `wrap` passes the program through untouched: bytes, exit codes, signals.

use crate::util::*;
use pretty_assertions::assert_eq;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// A program that writes awkward bytes to both streams.
const GARBAGE: &str = r#"
import os, sys
os.write(1, b"plain\n\xff\xfe invalid utf-8\n\x1b[31mred\x1b[0m\r\nbell\x07 and nul\x00 byte\n")
os.write(2, b"err line\nno newline at end")
os.write(1, b"progress 1\rprogress 2\rdone\n")
"#;

#[test]
fn output_is_echoed_byte_for_byte_and_kept_in_the_plain_log() {
    let agent = Agent::new();
    let bare = command("python3")
        .args(["-c", GARBAGE])
        .run_within("python3");
    let wrapped = agent.run(&["wrap", "-e", "garbage", "--", "python3", "-c", GARBAGE]);
    assert_eq!(wrapped.stdout, bare.stdout);
    assert_eq!(wrapped.stderr, bare.stderr);
    assert_eq!(wrapped.status.code(), Some(0));
    let logs = agent.data_dir().join("logs/garbage");
    let file = std::fs::read_dir(&logs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let plain = std::fs::read(file).unwrap();
    assert_eq!(plain.len(), bare.stdout.len() + bare.stderr.len());
}

#[test]
fn exit_codes_pass_through() {
    let agent = Agent::new();
    let out = agent.run(&["wrap", "-e", "three", "--", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(agent.status("three")["state"], "failed");
    assert_eq!(agent.status("three")["exit_code"], 3);

    let out = agent.run(&["wrap", "-e", "killed", "--", "sh", "-c", "kill -9 $$"]);
    assert_eq!(out.status.code(), Some(137));
    let status = agent.status("killed");
    assert_eq!(status["state"], "crashed");
    assert_eq!(status["signal"], 9);

    let out = agent.run(&["wrap", "-e", "ok", "--", "true"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(agent.status("ok")["state"], "succeeded");
}

#[test]
fn a_missing_command_is_an_error_that_says_so() {
    let agent = Agent::new();
    let out = agent.run(&["wrap", "-e", "nope", "--", "no-such-program-xyz"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_text(&out);
    assert!(
        err.contains("no-such-program-xyz") && err.contains("PATH"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn python_is_unbuffered_unless_the_user_says_otherwise() {
    let agent = Agent::new();
    let code = "import os; print(os.environ.get('PYTHONUNBUFFERED'))";
    let out = agent.run(&["wrap", "-e", "env", "--", "python3", "-c", code]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1\n");
    let out = agent
        .cmd(&["wrap", "-e", "env2", "--", "python3", "-c", code])
        .env("PYTHONUNBUFFERED", "")
        .run_within("pmon-agent wrap -e");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "\n");
}

#[test]
fn the_program_gets_the_users_environment_and_not_the_agents_plan() {
    // `wrap` runs its holder as a fresh image of itself with the run's plan
    // (and the database URL) in PMON_HOLDER_PLAN: never the program's.
    let agent = Agent::new();
    let code = "import os; print(sorted(k for k in os.environ if k.startswith('PMON_')), os.environ.get('MY_VAR'))";
    let out = agent
        .cmd(&["wrap", "-e", "env", "--", "python3", "-c", code])
        .env("MY_VAR", "kept")
        .run_within("pmon-agent wrap -e");
    assert!(out.status.success(), "{}", stderr_text(&out));
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!printed.contains("PMON_HOLDER_PLAN"), "{printed}");
    assert!(printed.ends_with(" kept\n"), "{printed}");
}

#[test]
fn sigterm_to_the_agent_reaches_the_whole_process_group() {
    let agent = Agent::new();
    // A parent that traps TERM and reports how its grandchild ended: a
    // grandchild outside the group would outlive the signal (exit code 3).
    let script = r#"import signal, subprocess, sys, time
def bye(*_):
    print('got SIGTERM', flush=True)
    try:
        code = child.wait(timeout=60)
    except subprocess.TimeoutExpired:
        print('grandchild still alive after 60 s', flush=True)
        sys.exit(3)
    print(f'grandchild ended with {code}', flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
child = subprocess.Popen(['sleep', '600'])
print(child.pid, flush=True)
time.sleep(600)
"#;
    let mut child = agent
        .cmd(&["wrap", "-e", "term", "--", "python3", "-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .start("pmon-agent wrap -e");
    // Unbuffered, Python writes the pid and its newline separately.
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
    let grandchild: i32 = first.trim().parse().unwrap();
    let sent = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    let context = format!(
        "stdout after the pid: {rest:?}\nagent stderr: {}\n{:?} after the signal",
        stderr_text(&out),
        sent.elapsed()
    );
    assert_eq!(
        rest, "got SIGTERM\ngrandchild ended with -15\n",
        "the grandchild died of the forwarded SIGTERM\n{context}"
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "the program's exit code\n{context}"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{grandchild}")).exists() || is_zombie(grandchild),
        "the grandchild is gone\n{context}"
    );
    let events = agent.sql();
    let n: i64 = events
        .query_row("SELECT count(*) FROM pipeline_events WHERE event_type = 'signal' AND details LIKE '%SIGTERM%'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z "))
}

#[test]
fn a_second_live_run_is_refused_with_a_clear_error() {
    let agent = Agent::new();
    let mut first = agent
        .cmd(&["wrap", "-e", "busy", "--", "sleep", "30"])
        .start("pmon-agent wrap -e");
    // Wait until the first run is registered.
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if agent.db_path().exists() && agent.run(&["query", "status", "busy"]).status.success() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = agent.run(&["wrap", "-e", "busy", "--", "true"]);
    assert_eq!(second.status.code(), Some(1), "{}", stderr_text(&second));
    let err = stderr_text(&second);
    assert!(
        err.contains("already has a live run")
            && err.contains("--new-run")
            && err.contains("--resume"),
        "{err}"
    );
    let third = agent.run(&["wrap", "-e", "busy", "--new-run", "--", "true"]);
    assert_eq!(third.status.code(), Some(0));
    first.kill().unwrap();
    first.wait().unwrap();
    // The agent was SIGKILLed: its run is lost, not running.
    let runs = agent.json_lines(&["query", "status", "busy", "--run", "1"]);
    assert_eq!(runs[0]["state"], "lost");
    // And a finished experiment simply gets a new run.
    assert!(agent
        .run(&["wrap", "-e", "busy", "--", "true"])
        .status
        .success());
}

#[test]
fn pty_mode_gives_the_program_a_terminal() {
    let agent = Agent::new();
    let out = agent.run(&[
        "wrap",
        "-e",
        "tty",
        "--pty",
        "--",
        "python3",
        "-c",
        "import sys; print(sys.stdout.isatty(), sys.stderr.isatty())",
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "True True");
    let logs = agent.json_lines(&["query", "logs", "tty"]);
    assert_eq!(logs[0]["message"], "True True");
}

#[test]
fn no_echo_stores_without_printing() {
    let agent = Agent::new();
    let out = agent.run(&[
        "wrap",
        "-e",
        "quiet",
        "--no-echo",
        "--",
        "sh",
        "-c",
        "echo hello; echo oops >&2",
    ]);
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
    let logs = agent.json_lines(&["query", "logs", "quiet"]);
    assert_eq!(logs.len(), 2);
}

#[test]
fn the_default_experiment_is_the_script_stem_and_tags_are_kept() {
    let agent = Agent::new();
    let script = agent.dir.path().join("train_model.py");
    std::fs::write(&script, "print('hi')\n").unwrap();
    let out = agent.run(&[
        "wrap",
        "--tag",
        "lr=0.1",
        "--tag",
        "gpu=3",
        "--",
        "python3",
        script.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let status = agent.status("train_model");
    assert_eq!(status["state"], "succeeded");
    let tags: String = agent
        .sql()
        .query_row("SELECT tags FROM pipeline_runs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&tags).unwrap(),
        serde_json::json!({"lr": "0.1", "gpu": "3"})
    );
}

#[test]
fn ingest_reads_standard_input() {
    let agent = Agent::new();
    let mut child = agent
        .cmd(&["ingest", "-e", "piped"])
        .stdin(Stdio::piped())
        .start("pmon-agent ingest -e");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"INFO:app:one\nERROR:app:two\nTraceback (most recent call last):\n  File \"x.py\", line 1, in <module>\nValueError: v\n").unwrap();
    }
    assert!(child.wait().unwrap().success());
    let logs = agent.json_lines(&["query", "logs", "piped"]);
    assert_eq!(logs.len(), 2);
    assert_eq!(logs[1]["exception_type"], "ValueError");
    assert_eq!(logs[1]["stream"], "stdin");
}

#[test]
fn the_store_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let agent = Agent::new();
    agent.run(&["wrap", "-e", "p", "--", "true"]);
    let mode = std::fs::metadata(agent.db_path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let dir_mode = std::fs::metadata(agent.data_dir())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700, "a new data dir is private");
}

#[test]
fn sigusr1_writes_a_status_report_to_stderr_and_as_an_event() {
    let agent = Agent::new().with_config("monitoring:\n  metrics_interval: 0.2\n");
    // The program lives until the test has seen the report, however slow.
    let done = agent.dir.path().join("done");
    let program = format!(
        "import os, time\nprint('##pmon[progress task=load current=3 total=10 unit=files]', flush=True)\nprint('##pmon[progress task=load/shard_1 current=1 total=2]', flush=True)\nprint('ready', flush=True)\nwhile not os.path.exists({:?}):\n    time.sleep(0.01)\n",
        done.to_str().unwrap()
    );
    let mut child = agent
        .cmd(&["wrap", "-e", "usr1", "--", "python3", "-c", &program])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .start("pmon-agent wrap -e");
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("ready\n") {
        let mut byte = [0u8; 1];
        std::io::Read::read_exact(&mut stdout, &mut byte).unwrap();
        seen.push(byte[0]);
    }
    // A memory sample of the tree is in (the report shows the newest one).
    wait_until("a memory sample is stored", || {
        agent.count("SELECT count(*) FROM pipeline_metrics WHERE name = 'rss_bytes'") >= 2
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .unwrap();
    wait_until("the status_report event is stored", || {
        agent.count("SELECT count(*) FROM pipeline_events WHERE event_type = 'status_report'") > 0
    });
    std::fs::write(&done, "").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "SIGUSR1 does not disturb the program"
    );
    let err = stderr_text(&out);
    assert!(
        err.contains("pmon-agent: status: uptime")
            && (err.contains(" records shipped") || err.contains(" 1 record shipped"))
            && err.contains("rss")
            && err.contains(", cpu ")
            && err.contains("progress: load 3/10 files (30%)")
            && !err.contains("shard_1"),
        "the tree's memory and CPU, the top-level tasks: {err}"
    );
    let details: String = agent
        .sql()
        .query_row(
            "SELECT details FROM pipeline_events WHERE event_type = 'status_report'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let details: serde_json::Value = serde_json::from_str(&details).unwrap();
    assert!(
        details["child_rss_bytes"].as_u64().unwrap() > 0,
        "{details}"
    );
    assert!(details["cpu_percent"].is_number(), "{details}");
    assert_eq!(details["progress"][0]["task"], "load", "{details}");
    assert_eq!(
        details["progress"].as_array().unwrap().len(),
        1,
        "{details}"
    );
}
