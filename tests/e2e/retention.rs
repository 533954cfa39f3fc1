//! Retention: `db prune --older-than D` removes what is older than D from the
//! store in effect — never a live run's records — and says what it removed;
//! `--dry-run` only says it.

use crate::pg_server::shared_database;
use crate::util::{stderr_text, wait_until, Agent, Bounded};
use serde_json::Value;

/// Lines of a Python logging file, one 400 days old and one from now.
fn old_and_new_lines() -> String {
    let now = chrono::Local::now();
    let old = now - chrono::Duration::days(400);
    format!(
        "{} INFO old: from last year\n{} INFO new: from today\n",
        old.format("%Y-%m-%d %H:%M:%S,000"),
        now.format("%Y-%m-%d %H:%M:%S,000")
    )
}

fn messages(agent: &Agent, exp: &str, url: Option<&str>) -> Vec<String> {
    try_messages(agent, exp, url).expect("query logs")
}

/// The experiment's messages, or `None` while it does not exist yet.
fn try_messages(agent: &Agent, exp: &str, url: Option<&str>) -> Option<Vec<String>> {
    let mut cmd = agent.cmd(&["query", "logs", exp, "--run", "all", "--format", "json"]);
    if let Some(url) = url {
        cmd.env("PMON_DATABASE_URL", url);
    }
    let out = cmd.run_within("pmon-agent query logs");
    if !out.status.success() {
        return None;
    }
    Some(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["message"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect(),
    )
}

fn prune(agent: &Agent, url: Option<&str>, extra: &[&str]) -> Value {
    let mut args = vec!["db", "prune", "--format", "json"];
    args.extend(extra);
    let mut cmd = agent.cmd(&args);
    if let Some(url) = url {
        cmd.env("PMON_DATABASE_URL", url);
    }
    let out = cmd.run_within("pmon-agent db prune");
    assert!(out.status.success(), "{}", stderr_text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A program that prints the old and new lines, then waits for `$PMON_GO`.
const LIVE: &str = r#"
import os, sys, time
sys.stdout.write(os.environ['PMON_LINES'])
sys.stdout.flush()
while not os.path.exists(os.environ['PMON_GO']):
    time.sleep(0.01)
"#;

/// `after_first_prune` runs once the live run's old line has been kept by a
/// prune (its day still holds a live run's row).
fn old_records_go_live_runs_stay(url: Option<&str>, after_first_prune: &dyn Fn()) {
    let agent = Agent::new();
    let lines = old_and_new_lines();
    let file = agent.dir.path().join("app.log");
    std::fs::write(&file, &lines).unwrap();
    let with_db = |mut cmd: std::process::Command| {
        if let Some(url) = url {
            cmd.env("PMON_DATABASE_URL", url);
        }
        cmd
    };
    let out = with_db(agent.cmd(&["tail", "--once", "-e", "ended", file.to_str().unwrap()]))
        .run_within("pmon-agent tail --once");
    assert!(out.status.success(), "{}", stderr_text(&out));
    let go = agent.dir.path().join("go");
    let live = with_db(agent.cmd(&[
        "wrap",
        "-e",
        "live",
        "--no-echo",
        "--",
        "python3",
        "-c",
        LIVE,
    ]))
    .env("PMON_LINES", &lines)
    .env("PMON_GO", &go)
    .start("pmon-agent wrap -e");
    wait_until("the live run's lines are stored", || {
        try_messages(&agent, "live", url).is_some_and(|m| m.len() == 2)
    });

    let dry = prune(&agent, url, &["--older-than", "30d", "--dry-run"]);
    assert_eq!(
        (dry["logs"].as_u64(), dry["live_runs_kept"].as_u64()),
        (Some(1), Some(1)),
        "{dry}"
    );
    assert_eq!(
        messages(&agent, "ended", url),
        ["from last year", "from today"],
        "a dry run removes nothing"
    );

    let done = prune(&agent, url, &["--older-than", "30d"]);
    assert_eq!(done["logs"], 1, "{done}");
    assert_eq!(done["dry_run"], false);
    assert_eq!(messages(&agent, "ended", url), ["from today"]);
    assert_eq!(
        messages(&agent, "live", url),
        ["from last year", "from today"],
        "a live run is kept whole"
    );
    assert_eq!(
        prune(&agent, url, &["--older-than", "30d"])["logs"],
        0,
        "nothing twice"
    );
    after_first_prune();

    std::fs::write(&go, "").unwrap();
    assert!(live.wait_with_output().unwrap().status.success());
    // Ended now, the run's old line goes too.
    assert_eq!(prune(&agent, url, &["--older-than", "30d"])["logs"], 1);
    assert_eq!(messages(&agent, "live", url), ["from today"]);
}

#[test]
fn prune_removes_old_records_from_the_embedded_store_but_not_a_live_runs() {
    old_records_go_live_runs_stay(None, &|| ());
}

#[test]
fn prune_removes_old_records_from_postgresql_but_not_a_live_runs() {
    let (server, db) = shared_database();
    let old_day = (chrono::Utc::now() - chrono::Duration::days(400)).format("%Y%m%d");
    let partition_exists = || {
        server.psql(
            &db,
            &format!("SELECT count(*) FROM pg_class WHERE relname = 'pipeline_logs_p{old_day}'"),
        ) == "1"
    };
    old_records_go_live_runs_stay(Some(&server.url(&db)), &|| {
        assert!(partition_exists(), "the day a live run wrote to is kept");
    });
    // The last prune found the old day free of live runs: dropped whole.
    assert!(!partition_exists(), "the old day's partition was dropped");
}

#[test]
fn prune_takes_its_age_from_retention_and_asks_for_one_without() {
    let agent = Agent::new();
    let out = agent.run(&["db", "prune"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_text(&out).contains("--older-than 30d"),
        "{}",
        stderr_text(&out)
    );
    let agent = agent.with_config("logging:\n  database:\n    retention: 30d\n");
    let file = agent.dir.path().join("app.log");
    std::fs::write(&file, old_and_new_lines()).unwrap();
    assert!(agent
        .run(&["tail", "--once", "-e", "cfg", file.to_str().unwrap()])
        .status
        .success());
    let out = agent.run(&["db", "prune"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success()
            && text.starts_with("removed 0 runs that ended, 1 log record, 0 events"),
        "{text}"
    );
}

#[test]
fn a_daemon_prunes_by_itself_when_retention_is_set() {
    let agent = Agent::new().with_config("logging:\n  database:\n    retention: 30d\n");
    let file = agent.dir.path().join("app.log");
    std::fs::write(&file, old_and_new_lines()).unwrap();
    assert!(agent
        .run(&["tail", "--once", "-e", "before", file.to_str().unwrap()])
        .status
        .success());
    assert_eq!(messages(&agent, "before", None).len(), 2);
    let go = agent.dir.path().join("go");
    let script = format!(
        "import os, time\nwhile not os.path.exists({:?}): time.sleep(0.05)",
        go.to_string_lossy()
    );
    let out = agent.run(&[
        "daemon", "start", "--name", "keeper", "--", "python3", "-c", &script,
    ]);
    assert!(out.status.success(), "{}", stderr_text(&out));
    wait_until("the daemon pruned the old record", || {
        messages(&agent, "before", None) == ["from today"]
    });
    std::fs::write(&go, "").unwrap();
    let out = agent.run(&["daemon", "stop", "keeper"]);
    assert!(out.status.success(), "{}", stderr_text(&out));
}
