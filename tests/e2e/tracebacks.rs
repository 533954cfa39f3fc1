//! Every traceback form, printed by real `python3` under `wrap`, comes back from
//! `query errors --traceback --format json` as exactly one record whose
//! traceback is byte-identical to Python's own `traceback.format_exception`.

use crate::util::*;
use pretty_assertions::assert_eq;
use serde_json::Value;

/// Runs the fixture bare and wrapped and checks everything the user would see.
fn check_fixture(name: &str) {
    let agent = Agent::new();
    let bare = run_bare(name, agent.dir.path());
    let wrapped = run_wrapped(&agent, name, &[]);

    // The program's exit code and output pass through unchanged.
    assert_eq!(
        wrapped.output.status.code(),
        Some(exit_code_as_shell_sees(&bare.output)),
        "exit code of {name}; agent stderr: {}",
        stderr_text(&wrapped.output)
    );
    assert_eq!(
        fold_digits(&wrapped.output.stdout),
        fold_digits(&bare.output.stdout),
        "stdout of {name}"
    );
    if name != "interleaved" && name != "tqdm_progress" {
        assert_eq!(
            fold_digits(&wrapped.output.stderr),
            fold_digits(&bare.output.stderr),
            "stderr of {name}"
        );
    }

    let expected = wrapped.expect["records"].as_array().unwrap().clone();
    let errors = agent.json_lines(&["query", "errors", name, "--traceback"]);
    let with_tb: Vec<&Value> = errors
        .iter()
        .filter(|r| !r["traceback"].is_null())
        .collect();
    assert_eq!(
        with_tb.len(),
        expected.len(),
        "one record per traceback in {name}: {errors:#?}"
    );
    // `errors` is newest first; the side file is in print order.
    for (want, got) in expected.iter().zip(with_tb.iter().rev()) {
        for key in [
            "traceback",
            "exception_type",
            "exception_message",
            "level",
            "logger",
            "message",
            "stream",
        ] {
            assert_eq!(got[key], want[key], "{key} of a traceback record in {name}");
        }
        assert_eq!(got["experiment_id"], name);
    }

    // No traceback text leaks into other records.
    let all = agent.json_lines(&["query", "logs", name]);
    for record in &all {
        if record["traceback"].is_null() {
            let msg = record["message"].as_str().unwrap();
            assert!(
                !msg.starts_with("Traceback (most recent call last)")
                    && !msg.starts_with("  File \""),
                "stray traceback line {msg:?} in {name}"
            );
        }
    }
}

/// A shell reports death by signal N as 128+N, and so does the agent.
fn exit_code_as_shell_sees(out: &std::process::Output) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (out.status.code(), out.status.signal()) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        _ => unreachable!(),
    }
}

#[test]
fn plain_uncaught_exception() {
    check_fixture("plain_uncaught");
}

#[test]
fn chained_by_cause() {
    check_fixture("chained_cause");
}

#[test]
fn chained_by_context_three_deep() {
    check_fixture("chained_context");
}

#[test]
fn nested_exception_groups() {
    check_fixture("exception_group");
}

#[test]
fn syntax_error_raised_at_run_time() {
    check_fixture("syntax_error_runtime");
}

#[test]
fn syntax_error_at_compile_time_has_no_header() {
    check_fixture("syntax_error_compile");
}

#[test]
fn caret_marker_lines() {
    check_fixture("caret_markers");
}

#[test]
fn recursion_error_with_repeated_line_marker() {
    check_fixture("recursion");
}

#[test]
fn keyboard_interrupt_without_colon_and_death_by_sigint() {
    check_fixture("keyboard_interrupt");
    let agent = Agent::new();
    run_wrapped(&agent, "keyboard_interrupt", &[]);
    let status = agent.status("keyboard_interrupt");
    assert_eq!(status["state"], "crashed");
    assert_eq!(status["signal"], 2);
}

#[test]
fn notes_added_with_add_note() {
    check_fixture("notes");
}

#[test]
fn multi_line_exception_message() {
    check_fixture("multiline_message");
}

#[test]
fn logging_exception_attaches_the_traceback_to_its_log_record() {
    check_fixture("logging_exception");
}

#[test]
fn dotted_exception_type() {
    check_fixture("dotted_type");
}

#[test]
fn stdout_chatter_never_enters_a_stderr_traceback() {
    check_fixture("interleaved");
    let agent = Agent::new();
    run_wrapped(&agent, "interleaved", &[]);
    let logs = agent.json_lines(&["query", "logs", "interleaved"]);
    for r in logs.iter().filter(|r| !r["traceback"].is_null()) {
        assert!(
            !r["traceback"].as_str().unwrap().contains("stdout chatter"),
            "{r:#}"
        );
        assert_eq!(r["stream"], "stderr");
    }
    let mut chatter: Vec<&str> = logs
        .iter()
        .filter(|r| r["stream"] == "stdout")
        .filter_map(|r| r["message"].as_str())
        .filter(|m| m.starts_with("stdout chatter "))
        .collect();
    chatter.sort();
    chatter.dedup();
    assert_eq!(chatter.len(), 400, "every stdout line stored once");
}

#[test]
fn tqdm_bars_become_progress_not_log_records() {
    check_fixture("tqdm_progress");
    let agent = Agent::new();
    run_wrapped(&agent, "tqdm_progress", &[]);
    let logs = agent.json_lines(&["query", "logs", "tqdm_progress"]);
    for r in &logs {
        let m = r["message"].as_str().unwrap();
        assert!(
            !m.contains("%|"),
            "a progress bar was stored as a log record: {m:?}"
        );
    }
    let status = agent.status("tqdm_progress");
    assert!(
        !status["progress"].as_array().unwrap().is_empty(),
        "{status:#}"
    );
}

#[test]
fn demo_pipeline() {
    check_fixture("demo_pipeline");
}

/// The README's first command works on a machine without tqdm: the demo
/// draws the same bars itself, and the agent makes the same of them.
#[test]
fn the_demo_runs_without_tqdm_and_its_bars_are_progress() {
    let agent = Agent::new();
    // A `tqdm` that cannot be imported, ahead of any installed one.
    let hide = agent.dir.path().join("no-tqdm/tqdm");
    std::fs::create_dir_all(&hide).unwrap();
    std::fs::write(
        hide.join("__init__.py"),
        "raise ImportError('hidden by the test')\n",
    )
    .unwrap();
    let program = fixture_program("demo_pipeline");
    let out = agent
        .cmd(&[
            "wrap",
            "-e",
            "demo",
            "--",
            "python3",
            program.to_str().unwrap(),
        ])
        .env("PYTHONPATH", hide.parent().unwrap())
        .run_within("pmon-agent wrap -e");
    let stderr = stderr_text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        !stderr.contains("ModuleNotFoundError") && !stderr.contains("hidden by the test"),
        "{stderr}"
    );
    assert!(
        stderr.contains("loading shards: 100%|██████████| 6/6"),
        "{stderr}"
    );
    let status = agent.status("demo");
    let tasks: Vec<(String, f64, f64)> = status["progress"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["task"].as_str().unwrap().to_string(),
                t["current"].as_f64().unwrap(),
                t["total"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        tasks,
        [
            ("loading shards".to_string(), 6.0, 6.0),
            ("transform".to_string(), 7.0, 8.0)
        ]
    );
    let errors = agent.json_lines(&["query", "errors", "demo", "--traceback"]);
    let types: Vec<&str> = errors
        .iter()
        .map(|e| e["exception_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["PipelineError", "json.decoder.JSONDecodeError"]);
    let logs = agent.json_lines(&["query", "logs", "demo"]);
    assert!(
        logs.iter()
            .all(|r| !r["message"].as_str().unwrap().contains("%|")),
        "no bar was stored as a log record: {logs:#?}"
    );
}

#[test]
fn every_log_format_is_parsed_into_level_logger_and_message() {
    let agent = Agent::new();
    let run = run_wrapped(&agent, "chatter_formats", &[]);
    assert!(run.output.status.success());
    let logs = agent.json_lines(&["query", "logs", "chatter_formats"]);
    let expected = run.expect["lines"].as_array().unwrap();
    for stream in ["stdout", "stderr"] {
        let want: Vec<(Value, Value, Value)> = expected
            .iter()
            .filter(|l| l["stream"] == stream)
            .map(|l| {
                (
                    l["level"].clone(),
                    l["logger"].clone(),
                    l["message"].clone(),
                )
            })
            .collect();
        let got: Vec<(Value, Value, Value)> = logs
            .iter()
            .filter(|l| l["stream"] == stream)
            .map(|l| {
                (
                    l["level"].clone(),
                    l["logger"].clone(),
                    l["message"].clone(),
                )
            })
            .collect();
        // Lines carry their own (fixed) timestamps, and queries sort by time:
        // compare as sorted lists.
        let key = |t: &(Value, Value, Value)| t.2.to_string();
        let (mut got, mut want) = (got, want);
        got.sort_by_key(key);
        want.sort_by_key(key);
        assert_eq!(got, want, "records on {stream}");
    }
}
