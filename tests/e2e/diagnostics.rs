//! The agent's own diagnostics (`-v`, `PMON_LOG`): on stderr only, whole
//! lines, filtered by stage, hostile text escaped, the program's output
//! untouched.

use crate::util::*;

fn diagnostic_lines(stderr: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter(|l| {
            l.starts_with("20")
                && (l.contains(" INFO ") || l.contains(" DEBUG ") || l.contains(" TRACE "))
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn verbose_says_what_the_agent_does_and_leaves_the_output_alone() {
    let agent = Agent::new();
    let program = "import sys\nprint('out line')\nprint('err line', file=sys.stderr)";
    let quiet = agent.run(&["wrap", "-e", "diag", "--", "python3", "-c", program]);
    assert_eq!(String::from_utf8_lossy(&quiet.stdout), "out line\n");
    assert_eq!(
        String::from_utf8_lossy(&quiet.stderr),
        "err line\n",
        "no diagnostics unless asked"
    );

    let loud = agent.run(&["-v", "wrap", "-e", "diag", "--", "python3", "-c", program]);
    assert_eq!(loud.status.code(), Some(0), "{}", stderr_text(&loud));
    assert_eq!(
        String::from_utf8_lossy(&loud.stdout),
        "out line\n",
        "stdout is the program's alone"
    );
    let stderr = String::from_utf8_lossy(&loud.stderr);
    assert!(stderr.lines().any(|l| l == "err line"), "{stderr}");
    let lines = diagnostic_lines(&loud.stderr);
    for wanted in [
        "INFO wrap: program started",
        "INFO holder: shipper started",
        "INFO app: configuration read",
    ] {
        assert!(
            lines.iter().any(|l| l.contains(wanted)),
            "{wanted}: {lines:#?}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("INFO run{experiment=diag run=")
                && l.contains("holder: program ended state=\"succeeded\"")),
        "the run's span: {lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains(" DEBUG ")),
        "-v is info: {lines:#?}"
    );
}

#[test]
fn pmon_log_picks_stages_and_hostile_names_are_escaped() {
    let agent = Agent::new();
    let dir = agent.dir.path().join("logs");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a\x1b[2Jb\x07.log"), "one line\n").unwrap();
    let out = agent
        .cmd(&["tail", "--once", "-e", "diag", dir.to_str().unwrap()])
        .env("PMON_LOG", "tail=info,sink=debug")
        .run_within("pmon-agent tail --once");
    assert!(out.status.success(), "{}", stderr_text(&out));
    assert!(
        !out.stderr.contains(&0x1b) && !out.stderr.contains(&0x07),
        "raw control bytes reached stderr"
    );
    let lines = diagnostic_lines(&out.stderr);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("INFO tail: reading file") && l.contains("a\\x1b[2Jb\\x07.log")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("DEBUG sink: batch committed to the SQLite store")),
        "{lines:#?}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.contains(" app: ") || l.contains("TRACE")),
        "only the stages asked for: {lines:#?}"
    );

    let bad = agent
        .cmd(&["query", "list"])
        .env("PMON_LOG", "sink==x")
        .run_within("pmon-agent query list");
    assert!(bad.status.success(), "{}", stderr_text(&bad));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains(
            "pmon-agent: warning: PMON_LOG=sink==x is not a filter the agent understands"
        ) && stderr.contains("PMON_LOG=sink=debug,tail=trace"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("PMON_LOG=sink==x").count(),
        1,
        "said once: {stderr}"
    );
}
