//! The end of a run: every record the program printed is in the store when
//! the agent exits, however far the store lags behind the program. A store
//! made slow on purpose (`PMON_TEST_SINK_DELAY`, a test-only pause before
//! every write) stands in for a busy disk, a slow PostgreSQL or a long
//! replay, so the program is long gone while its last lines still wait in
//! the agent's queues and in the pipe.

use crate::util::*;
use pretty_assertions::assert_eq;

/// A program that prints `n` unique lines as fast as it can, then exits. It
/// first grows its stdout pipe to 1 MiB (`F_SETPIPE_SZ`), so that when it
/// exits up to a mebibyte of its output is still in flight, not yet read by
/// the agent: the agent must read it all before it calls the run finished.
fn burst_program(n: usize) -> String {
    format!(
        "import fcntl, sys\nfcntl.fcntl(1, 1031, 1 << 20)\nfor i in range({n}):\n    sys.stdout.write(f'INFO:load:line {{i}}\\n')\n"
    )
}

#[test]
fn a_store_that_lags_far_behind_at_exit_still_gets_every_line() {
    let agent = Agent::new();
    let n = 60_000;
    let out = agent
        .cmd(&[
            "wrap",
            "-e",
            "lag",
            "--no-echo",
            "--",
            "python3",
            "-c",
            &burst_program(n),
        ])
        .env("PMON_TEST_SINK_DELAY", "1s")
        .run_within("pmon-agent wrap -e");
    assert_eq!(out.status.code(), Some(0), "{}", stderr_text(&out));
    assert_eq!(
        agent.line_counts("lag"),
        (n as i64, n as i64),
        "{}",
        stderr_text(&out)
    );
}

/// A background process that keeps the program's pipe open (and quiet) does
/// not keep `wrap` waiting for ever: once the program has exited, a pipe that
/// stays quiet for two seconds is let go. What was printed is all stored.
#[test]
fn a_background_process_holding_the_pipe_does_not_hold_up_the_exit() {
    let agent = Agent::new();
    let script = "echo first; sleep 600 & echo \"background $!\"; echo last";
    let mut child = agent
        .cmd(&["wrap", "-e", "bg", "--", "sh", "-c", script])
        .stdout(std::process::Stdio::piped())
        .start("pmon-agent wrap -e");
    // Generous: the agent lets go after 2 s of quiet; a broken one never does.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stdout = String::new();
    if status.is_none() {
        let _ = child.kill();
    }
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).ok();
    let background: i32 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("background "))
        .and_then(|pid| pid.parse().ok())
        .expect("the background pid was echoed");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(background),
        nix::sys::signal::Signal::SIGKILL,
    );
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "wrap exited: {stdout}"
    );
    let messages: Vec<String> = agent
        .json_lines(&["query", "logs", "bg"])
        .iter()
        .map(|r| r["message"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        messages,
        ["first", &format!("background {background}"), "last"]
    );
}
