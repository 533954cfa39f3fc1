//! Declarative parsers end to end: the shipped `parsers/*.yml` on real
//! captured output of Java, Go, Node, Ruby, Rust and rich programs, a user's
//! own parser file picked up through `parsers.paths` with no rebuild,
//! `--parser`, broken files refused at start, and `parsers test|check`.

use crate::util::{repo_root, stderr_text, Agent};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn captured() -> PathBuf {
    repo_root().join("fixtures/stacktraces/captured")
}

/// Every capture with a stack trace, and the records it must become.
fn expectations() -> Vec<(String, Value)> {
    let mut all: Vec<(String, Value)> = std::fs::read_dir(captured())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".expect.json"))
        .map(|p| {
            let v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            (v["program"].as_str().unwrap().to_string(), v)
        })
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(all.len() >= 12, "the stack-trace captures are missing");
    all
}

/// A Python program that prints every capture to stderr, each after a log
/// line of its own, as one program's output.
fn interleaving_program(dir: &Path, captures: &[(String, Value)]) -> PathBuf {
    let files: Vec<String> = captures
        .iter()
        .map(|(name, v)| {
            let stream = v["stream"].as_str().unwrap();
            format!("{:?}", captured().join(format!("{name}.{stream}")))
        })
        .collect();
    let program = dir.join("interleave.py");
    std::fs::write(
        &program,
        format!(
            "import sys\nfor i, f in enumerate([{}]):\n    sys.stderr.write(f'INFO:pipeline:step {{i}} begins\\n')\n    sys.stderr.flush()\n    sys.stderr.buffer.write(open(f, 'rb').read())\n    sys.stderr.buffer.flush()\nsys.stderr.write('INFO:pipeline:all steps done\\n')\n",
            files.join(", ")
        ),
    )
    .unwrap();
    program
}

#[test]
fn stack_traces_of_every_language_interleaved_with_log_lines_are_one_record_each() {
    let agent = Agent::new();
    let captures = expectations();
    let program = interleaving_program(agent.dir.path(), &captures);
    let out = agent.run(&[
        "wrap",
        "-e",
        "polyglot",
        "--no-echo",
        "--",
        "python3",
        program.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr_text(&out));
    let records = agent.json_lines(&["query", "logs", "polyglot"]);
    let with_trace: Vec<&Value> = records
        .iter()
        .filter(|r| !r["traceback"].is_null())
        .collect();
    let wanted: Vec<&Value> = captures
        .iter()
        .flat_map(|(_, v)| v["records"].as_array().unwrap())
        .collect();
    assert_eq!(
        with_trace.len(),
        wanted.len(),
        "one record per stack trace: {with_trace:#?}"
    );
    // Records are in time order, and a loguru line carries its own time:
    // each stack trace is found by its text, exactly once.
    for want in &wanted {
        let got: Vec<&&Value> = with_trace
            .iter()
            .filter(|r| r["traceback"] == want["traceback"])
            .collect();
        assert_eq!(got.len(), 1, "{}", want["traceback"]);
        for key in ["exception_type", "exception_message", "level"] {
            assert_eq!(got[0][key], want[key], "{key} of {}", want["traceback"]);
        }
    }
    // The log lines around them are records of their own, none swallowed.
    for i in 0..captures.len() {
        let line = format!("step {i} begins");
        let n = records
            .iter()
            .filter(|r| r["message"] == line.as_str())
            .count();
        assert_eq!(n, 1, "{line}");
    }
    assert!(records.iter().any(|r| r["message"] == "all steps done"));
    // Found as a user would look for them.
    let errors = agent.json_lines(&[
        "query",
        "errors",
        "polyglot",
        "--traceback",
        "--limit",
        "100",
    ]);
    for want in &wanted {
        assert!(
            errors
                .iter()
                .any(|e| e["exception_type"] == want["exception_type"]),
            "query errors lacks {}",
            want["exception_type"]
        );
    }
}

const USER_PARSER: &str = r#"name: bracket-component
description: our scheduler's lines, <<E|db>> message
regex: '^<<(?P<level>[DIWE])\|(?P<component>\w+)>> (?P<message>.*)$'
levels: {D: DEBUG, I: INFO, W: WARNING, E: ERROR}
examples:
  - input: "<<E|db>> connection lost"
    expect: {level: ERROR, message: connection lost, fields: {component: db}}
"#;

fn agent_with_user_parser(parser: &str) -> (Agent, PathBuf) {
    let agent = Agent::new();
    let dir = agent.dir.path().join("my-parsers");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("bracket.yml"), parser).unwrap();
    let agent = agent.with_config("parsers:\n  paths: [my-parsers]\n");
    (agent, dir)
}

fn program(agent: &Agent, text: &str) -> String {
    let path = agent.dir.path().join("prog.py");
    std::fs::write(&path, format!("import sys\nsys.stderr.write({text:?})\n")).unwrap();
    path.to_string_lossy().into_owned()
}

const SCHEDULER_OUTPUT: &str =
    "<<I|sched>> 3 jobs queued\n<<E|db>> connection lost\nWARNING:root:retrying\n";

#[test]
fn a_user_parser_file_teaches_wrap_and_tail_a_new_format_without_a_rebuild() {
    let (agent, _) = agent_with_user_parser(USER_PARSER);
    let prog = program(&agent, SCHEDULER_OUTPUT);
    let out = agent.run(&["wrap", "-e", "sched", "--no-echo", "--", "python3", &prog]);
    assert!(out.status.success(), "{}", stderr_text(&out));
    let log = agent.dir.path().join("sched.log");
    std::fs::write(&log, SCHEDULER_OUTPUT).unwrap();
    let out = agent.run(&["tail", "--once", "-e", "sched-file", log.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr_text(&out));
    for exp in ["sched", "sched-file"] {
        let records = agent.json_lines(&["query", "logs", exp]);
        let got: Vec<(&str, &str, Value)> = records
            .iter()
            .map(|r| {
                (
                    r["level"].as_str().unwrap(),
                    r["message"].as_str().unwrap(),
                    r["fields"].clone(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "INFO",
                    "3 jobs queued",
                    serde_json::json!({"component": "sched"})
                ),
                (
                    "ERROR",
                    "connection lost",
                    serde_json::json!({"component": "db"})
                ),
                ("WARNING", "retrying", Value::Null),
            ],
            "{exp}"
        );
    }
}

#[test]
fn parser_restricts_the_chain_to_the_named_parsers() {
    let (agent, _) = agent_with_user_parser(USER_PARSER);
    let prog = program(&agent, SCHEDULER_OUTPUT);
    let out = agent.run(&[
        "wrap",
        "-e",
        "only",
        "--no-echo",
        "--parser",
        "bracket-component",
        "--",
        "python3",
        &prog,
    ]);
    assert!(out.status.success(), "{}", stderr_text(&out));
    let levels: Vec<String> = agent
        .json_lines(&["query", "logs", "only"])
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["level"].as_str().unwrap(),
                r["message"].as_str().unwrap()
            )
        })
        .collect();
    // python-logging is not in the chain: its line is a plain INFO line.
    assert_eq!(
        levels,
        [
            "INFO 3 jobs queued",
            "ERROR connection lost",
            "INFO WARNING:root:retrying"
        ]
    );
    let out = agent.run(&["wrap", "-e", "typo", "--parser", "bracket", "--", "true"]);
    assert!(!out.status.success());
    let err = stderr_text(&out);
    assert!(
        err.contains("no parser named 'bracket'") && err.contains("bracket-component"),
        "{err}"
    );
}

/// The marker the program would write if it ran.
fn refused(agent: &Agent, parser: &str) -> String {
    std::fs::write(agent.dir.path().join("my-parsers/bracket.yml"), parser).unwrap();
    let marker = agent.dir.path().join("ran");
    let script = format!("open({:?}, 'w').write('x')", marker.to_string_lossy());
    let out = agent.run(&["wrap", "-e", "broken", "--", "python3", "-c", &script]);
    assert!(
        !out.status.success(),
        "a broken parser file must stop the run"
    );
    assert!(!marker.exists(), "the program must not start");
    let err = stderr_text(&out);
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn broken_parser_files_are_refused_at_start_with_file_line_and_reason() {
    let (agent, dir) = agent_with_user_parser(USER_PARSER);
    // As parsers.paths names it (relative to config.yml's directory).
    let file = "my-parsers/bracket.yml";
    assert!(dir.join("bracket.yml").exists());
    let bad_regex = USER_PARSER.replace(r"(?P<message>.*)$'", r"(?P<message>.*$'");
    let err = refused(&agent, &bad_regex);
    assert!(
        err.contains(&format!(
            "{file}:3: `regex` is not a valid regex: unclosed group"
        )),
        "{err}"
    );
    let unknown = USER_PARSER.replace("levels:", "levles:");
    let err = refused(&agent, &unknown);
    assert!(
        err.contains(&format!("{file}:4:")) && err.contains("levles"),
        "{err}"
    );
    let yaml = USER_PARSER.replace("levels: {D: DEBUG", "levels: {D: DEBUG: X");
    let err = refused(&agent, &yaml);
    assert!(err.contains(&format!("{file}:4:")), "{err}");
    let failing = USER_PARSER.replace("message: connection lost", "message: connection lost!");
    let err = refused(&agent, &failing);
    assert!(
        err.contains(&format!("{file}:6:"))
            && err.contains("message: expected \"connection lost!\""),
        "{err}"
    );
    // `parsers check DIR` shows the same failure as a diff, with a non-zero exit.
    let out = agent.run(&["parsers", "check", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("- expected \"connection lost!\"")
            && text.contains("+ got      \"connection lost\""),
        "{text}"
    );
}

#[test]
fn the_shipped_parsers_pass_their_examples() {
    let agent = Agent::new();
    let out = agent.run(&[
        "parsers",
        "check",
        repo_root().join("parsers").to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success() && text.contains("all pass"), "{text}");
    let out = agent.run(&["parsers", "check"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let list = agent.json_lines(&["parsers", "list"]);
    let names: Vec<&str> = list.iter().map(|p| p["name"].as_str().unwrap()).collect();
    for name in [
        "java",
        "go-panic",
        "node",
        "ruby",
        "rails",
        "rust-panic",
        "glog",
        "loguru",
        "structlog",
        "rich-traceback",
        "python-logging",
        "python-traceback",
    ] {
        assert!(names.contains(&name), "{name} not in {names:?}");
    }
}

/// `parsers test` over every capture, compared with the committed snapshot.
/// `PMON_UPDATE_SNAPSHOTS=1` rewrites it (review the diff).
#[test]
fn parsers_test_explains_every_line_of_the_captures() {
    let agent = Agent::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(captured())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.to_string_lossy();
            (name.ends_with(".stderr") || name.ends_with(".stdout"))
                && std::fs::metadata(p).unwrap().len() > 0
        })
        .collect();
    files.sort();
    let mut snapshot = String::new();
    for f in &files {
        let out = agent.run(&["parsers", "test", f.to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr_text(&out));
        snapshot.push_str(&format!(
            "=== {}\n",
            f.file_name().unwrap().to_string_lossy()
        ));
        snapshot.push_str(&String::from_utf8(out.stdout).unwrap());
    }
    let path = repo_root().join("tests/e2e/snapshots/parsers_test.txt");
    if std::env::var_os("PMON_UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &snapshot).unwrap();
    }
    let expected =
        std::fs::read_to_string(&path).expect("snapshot: run with PMON_UPDATE_SNAPSHOTS=1 once");
    pretty_assertions::assert_eq!(expected, snapshot);
}

#[test]
fn a_parser_file_broken_while_a_program_runs_never_takes_the_agent_down() {
    use crate::util::{shippers_of, until_go, wait_until, Bounded};
    let (agent, dir) = agent_with_user_parser(USER_PARSER);
    let go = agent.dir.path().join("go");
    let wrap = agent
        .cmd(&[
            "wrap",
            "-e",
            "edit",
            "--no-echo",
            "--",
            "python3",
            "-c",
            &until_go("<<I|work>> line"),
        ])
        .env("PMON_GO", &go)
        .stderr(std::process::Stdio::piped())
        .start("pmon-agent wrap -e");
    let stored = |extra: &str| {
        agent.count(&format!(
            "SELECT count(*) FROM pipeline_logs WHERE experiment_id = 'edit' AND message LIKE '%line %' {extra}"
        ))
    };
    wait_until("the user parser's records are stored", || {
        stored("AND fields IS NOT NULL") > 50
    });
    std::fs::write(dir.join("bracket.yml"), USER_PARSER.replace(")$'", "$'")).unwrap();
    let shipper = shippers_of(wrap.id())[0];
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shipper as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_until(
        "a new shipper, without the broken parser, stores more",
        || stored("AND fields IS NULL") > 50,
    );
    std::fs::write(&go, "").unwrap();
    let out = wrap.wait_with_output().unwrap();
    let err = stderr_text(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("my-parsers/bracket.yml:3: `regex` is not a valid regex")
            && err.contains("left out"),
        "{err}"
    );
    let printed: i64 = std::fs::read_to_string(go.with_extension("count"))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(stored(""), printed, "every line once");
}
