//! Queries as a user runs them: formats, filters, and helpful errors.

use crate::util::*;
use pretty_assertions::assert_eq;

fn logged(agent: &Agent, exp: &str, script: &str) {
    let out = agent.run(&["wrap", "-e", exp, "--", "python3", "-c", script]);
    assert!(out.status.code().is_some());
}

const LEVELS: &str = "import logging, sys\nlogging.basicConfig(level=logging.DEBUG)\nlog = logging.getLogger('app')\nlog.debug('d1')\nlog.info('i1 needle')\nlog.warning('w1')\nlog.error('e1 needle')\nlog.critical('c1')\n";

#[test]
fn logs_filter_by_level_search_and_limit() {
    let agent = Agent::new();
    logged(&agent, "lv", LEVELS);
    let msgs = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["query", "logs", "lv"];
        all.extend_from_slice(args);
        agent
            .json_lines(&all)
            .iter()
            .map(|r| r["message"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(msgs(&[]), ["d1", "i1 needle", "w1", "e1 needle", "c1"]);
    assert_eq!(msgs(&["--level", "warning"]), ["w1", "e1 needle", "c1"]);
    assert_eq!(msgs(&["--search", "needle"]), ["i1 needle", "e1 needle"]);
    assert_eq!(msgs(&["--search-regex", "^[ew]1"]), ["w1", "e1 needle"]);
    assert_eq!(msgs(&["--limit", "2"]), ["e1 needle", "c1"]);
    assert_eq!(msgs(&["--since", "1h"]).len(), 5);
    let errors: Vec<String> = agent
        .json_lines(&["query", "errors", "lv"])
        .iter()
        .map(|r| r["message"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(errors, ["c1", "e1 needle"]);
}

#[test]
fn json_records_carry_the_spec_fields() {
    let agent = Agent::new();
    logged(&agent, "fields", LEVELS);
    let record = &agent.json_lines(&["query", "errors", "fields", "--limit", "1"])[0];
    let mut keys: Vec<&str> = record
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "exception_message",
            "exception_type",
            "experiment_id",
            "fields",
            "level",
            "logger",
            "message",
            "run_id",
            "source",
            "stream",
            "timestamp",
            "traceback"
        ]
    );
    assert_eq!(record["level"], "CRITICAL");
    assert_eq!(record["logger"], "app");
    assert_eq!(record["stream"], "stderr");
    assert!(chrono::DateTime::parse_from_rfc3339(record["timestamp"].as_str().unwrap()).is_ok());
}

#[test]
fn status_reports_a_failed_run_with_its_last_error() {
    let agent = Agent::new();
    let program = fixture_program("plain_uncaught");
    agent.run(&[
        "wrap",
        "-e",
        "st",
        "--",
        "python3",
        program.to_str().unwrap(),
    ]);
    let status = agent.status("st");
    assert_eq!(status["state"], "failed");
    assert_eq!(status["exit_code"], 1);
    assert_eq!(status["signal"], serde_json::Value::Null);
    assert_eq!(status["last_error"]["exception_type"], "ValueError");
    assert_eq!(status["spool_pending"], 0);
    for key in [
        "experiment_id",
        "run_id",
        "started_at",
        "ended_at",
        "progress",
    ] {
        assert!(status.get(key).is_some(), "status lacks {key}");
    }
    let text = String::from_utf8(agent.run(&["query", "status", "st"]).stdout).unwrap();
    assert!(
        text.contains("failed") && text.contains("ValueError"),
        "{text}"
    );
}

#[test]
fn runs_are_numbered_and_selectable() {
    let agent = Agent::new();
    logged(&agent, "runs", "print('first')");
    logged(&agent, "runs", "print('second')");
    let latest: Vec<String> = agent
        .json_lines(&["query", "logs", "runs"])
        .iter()
        .map(|r| r["message"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(latest, ["second"]);
    let first: Vec<String> = agent
        .json_lines(&["query", "logs", "runs", "--run", "1"])
        .iter()
        .map(|r| r["message"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(first, ["first"]);
    assert_eq!(
        agent
            .json_lines(&["query", "logs", "runs", "--run", "all"])
            .len(),
        2
    );
}

#[test]
fn list_shows_every_experiment_with_its_latest_run() {
    let agent = Agent::new();
    logged(&agent, "alpha", "import sys; sys.exit(2)");
    logged(&agent, "beta", LEVELS);
    let list = agent.json_lines(&["query", "list"]);
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["experiment_id"], "alpha");
    assert_eq!(list[0]["state"], "failed");
    assert_eq!(list[1]["error_count"], 2);
    let text = String::from_utf8(agent.run(&["query", "list"]).stdout).unwrap();
    assert!(text.contains("alpha") && text.contains("beta"), "{text}");
}

#[test]
fn an_unknown_experiment_says_so_and_lists_the_known_ones() {
    let agent = Agent::new();
    logged(&agent, "known_one", "print(1)");
    let out = agent.run(&["query", "errors", "unknown_exp"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_text(&out);
    assert!(
        err.contains("unknown_exp") && err.contains("known_one"),
        "{err}"
    );
}

#[test]
fn the_spec_sql_runs_verbatim_on_the_embedded_store() {
    let agent = Agent::new();
    logged(&agent, "my_experiment", "import sys\nprint('##pmon[progress task=load/shard_3 current=3 total=10 unit=files]')\nraise SystemExit('giving up')");
    agent.run(&[
        "wrap",
        "-e",
        "my_experiment",
        "--",
        "python3",
        fixture_program("plain_uncaught").to_str().unwrap(),
    ]);
    let db = agent.sql();
    let mut stmt = db
        .prepare("SELECT timestamp, level, message, traceback FROM pipeline_logs\nWHERE experiment_id = 'my_experiment' AND level IN ('ERROR', 'CRITICAL')\nORDER BY timestamp DESC LIMIT 10;")
        .unwrap();
    let rows: Vec<(String, Option<String>)> = stmt
        .query_map([], |r| Ok((r.get(1)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len(), 1);
    assert!(rows[0]
        .1
        .as_deref()
        .unwrap()
        .starts_with("Traceback (most recent call last):"));
    let mut stmt = db
        .prepare("SELECT * FROM pipeline_progress_summary WHERE experiment_id = 'my_experiment';")
        .unwrap();
    let n = stmt.query_map([], |_| Ok(())).unwrap().count();
    assert_eq!(n, 1);
}
