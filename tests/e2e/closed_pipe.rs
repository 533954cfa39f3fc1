//! A reader that goes away early (`pmon-agent query logs X | head -1`) is
//! not an error: every command stops at once, says nothing more, and exits
//! 0 (as ripgrep does). Each command here writes into a pipe whose reading
//! end is already closed, so its very first write fails, whatever the size
//! of its output.

use crate::util::*;
use std::io::{BufRead, BufReader};
use std::process::Stdio;

/// The writing end of a pipe nobody reads any more.
fn closed_pipe() -> std::fs::File {
    let (read, write) = nix::unistd::pipe().expect("a pipe");
    drop(read);
    std::fs::File::from(write)
}

const PROGRAM: &str = r###"
import logging, sys
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
log = logging.getLogger("demo")
for i in range(50):
    log.info("line %d", i)
try:
    {}["missing"]
except KeyError:
    log.exception("lookup failed")
print("##pmon[progress task=load current=3 total=10]", flush=True)
sys.exit(1)
"###;

#[test]
fn every_command_stops_quietly_and_succeeds_when_its_reader_is_gone() {
    let agent = Agent::new();
    let out = agent.wrap_python("x", PROGRAM).run_within("a failing run");
    assert_eq!(out.status.code(), Some(1), "{}", stderr_text(&out));
    let commands: &[&[&str]] = &[
        &["query", "list"],
        &["query", "list", "--format", "json"],
        &["query", "status", "x"],
        &["query", "status", "x", "--format", "json"],
        &["query", "logs", "x"],
        &["query", "logs", "x", "--format", "json"],
        &["query", "logs", "x", "--traceback", "--limit", "5"],
        &["query", "errors", "x", "--traceback"],
        &["query", "errors", "x", "--group"],
        &["query", "metrics", "x"],
        &["query", "metrics", "x", "--format", "json"],
        &["spool", "status"],
        &["parsers", "list"],
        &["parsers", "check", "parsers"],
        &["config", "default"],
        &["config", "show"],
        &["db", "check"],
        &["db", "prune", "--older-than", "30d", "--dry-run"],
        &["completions", "bash"],
        &["--help"],
        &["query", "logs", "--help"],
    ];
    for args in commands {
        let what = format!("pmon-agent {}", args.join(" "));
        let mut cmd = agent.cmd(args);
        if args.contains(&"parsers") {
            cmd.current_dir(repo_root());
        }
        cmd.stdout(closed_pipe()).stderr(Stdio::piped());
        let out = cmd.start(&what).wait_with_output().unwrap();
        assert_eq!(
            (out.status.code(), stderr_text(&out).as_str()),
            (Some(0), ""),
            "{what}"
        );
    }
}

#[test]
fn a_follower_notices_its_reader_is_gone_while_no_record_arrives() {
    let agent = Agent::new();
    let out = agent
        .wrap_python("quiet", PROGRAM)
        .run_within("a failing run");
    assert_eq!(out.status.code(), Some(1), "{}", stderr_text(&out));
    let mut follower = agent
        .cmd(&["query", "logs", "quiet", "-f"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .start("query logs -f");
    let mut lines = BufReader::new(follower.stdout.take().expect("piped stdout")).lines();
    let first = lines.next().expect("a first line").expect("text");
    assert!(first.contains("line 0"), "{first}");
    // `head -1` has what it wanted and exits: the pipe closes, and no new
    // record will ever come for the follower to fail writing.
    drop(lines);
    let out = follower.wait_with_output().unwrap();
    assert_eq!(
        (out.status.code(), stderr_text(&out).as_str()),
        (Some(0), "")
    );
}
