//! PostgreSQL as a user meets it: records arrive, the spec's SQL runs verbatim,
//! and nothing is lost or stored twice when the server is down, dies mid-run,
//! or the agent is killed in the middle of a replay. Counts are checked by
//! content: every line is unique, so count(*) = count(DISTINCT message) = N
//! means none missing and none doubled.

use crate::pg_server::{shared_database, PgServer, PASSWORD};
use crate::util::*;
use pretty_assertions::assert_eq;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn pg_agent(_url: &str) -> Agent {
    Agent::new()
}

fn with_db(agent: &Agent, url: &str, args: &[&str]) -> Command {
    let mut cmd = agent.cmd(args);
    cmd.env("PMON_DATABASE_URL", url);
    cmd
}

/// A program printing `n` unique lines, `per_tick` at a time with a pause between.
fn lines_program(n: usize, per_tick: usize, pause: f64) -> String {
    format!("import time\nfor i in range({n}):\n    print(f'INFO:load:line {{i}}')\n    if i % {per_tick} == {per_tick} - 1:\n        time.sleep({pause})\n")
}

fn counts(server: &PgServer, db: &str, exp: &str) -> (i64, i64) {
    let out = server.psql(db, &format!("SELECT count(*), count(DISTINCT message) FROM pipeline_logs WHERE experiment_id = '{exp}' AND message LIKE 'line %'"));
    let mut parts = out.split('|').map(|p| p.parse::<i64>().unwrap());
    (parts.next().unwrap(), parts.next().unwrap())
}

fn no_password(out: &std::process::Output) {
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !all.contains(PASSWORD),
        "the database password leaked into output: {all}"
    );
}

#[test]
fn records_reach_postgresql_and_the_spec_sql_runs_verbatim() {
    let (server, db) = shared_database();
    let url = server.url(&db);
    let agent = pg_agent(&url);
    let migrate = with_db(&agent, &url, &["db", "migrate"]).output().unwrap();
    assert!(migrate.status.success(), "{}", stderr_text(&migrate));
    no_password(&migrate);
    let program = fixture_program("logging_exception");
    let out = with_db(
        &agent,
        &url,
        &[
            "wrap",
            "-e",
            "my_experiment",
            "--",
            "python3",
            program.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_text(&out));
    no_password(&out);
    let rows = server.psql(
        &db,
        "SELECT timestamp, level, message, traceback FROM pipeline_logs
WHERE experiment_id = 'my_experiment' AND level IN ('ERROR', 'CRITICAL')
ORDER BY timestamp DESC LIMIT 10;",
    );
    assert_eq!(
        rows.matches("Traceback (most recent call last):").count(),
        3,
        "{rows}"
    );
    let tracebacks = server.psql(&db, "SELECT count(*) FROM pipeline_logs WHERE experiment_id = 'my_experiment' AND traceback IS NOT NULL AND exception_type IS NOT NULL");
    assert_eq!(tracebacks, "2");
    server.psql(
        &db,
        "SELECT * FROM pipeline_progress_summary WHERE experiment_id = 'my_experiment';",
    );
    let run = server.psql(
        &db,
        "SELECT state, exit_code FROM pipeline_runs WHERE experiment_id = 'my_experiment'",
    );
    assert_eq!(run, "succeeded|0");
    let events = server.psql(
        &db,
        "SELECT string_agg(event_type, ',' ORDER BY timestamp) FROM pipeline_events",
    );
    assert_eq!(events, "start,exit");
    let spool = agent.json_lines(&["spool", "status"]);
    assert_eq!(spool[0]["pending"], 0);
}

#[test]
fn a_bad_password_in_a_bad_url_is_never_shown() {
    let agent = Agent::new();
    let url = format!("postgres://postgres:{PASSWORD}@127.0.0.1:notaport/db");
    let out = with_db(&agent, &url, &["wrap", "-e", "x", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    no_password(&out);
    assert!(
        stderr_text(&out).contains("postgres://postgres:***@"),
        "{}",
        stderr_text(&out)
    );
}

#[test]
fn database_down_for_the_whole_run_then_spool_replay_ships_everything_once() {
    let server = PgServer::start();
    let url = server.url("postgres");
    let agent = pg_agent(&url);
    server.stop_immediate();
    let program = lines_program(20_000, 5_000, 0.01);
    let out = with_db(
        &agent,
        &url,
        &[
            "wrap",
            "-e",
            "down",
            "--no-echo",
            "--",
            "python3",
            "-c",
            &program,
        ],
    )
    .output()
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "the program is not hurt by the outage"
    );
    no_password(&out);
    assert!(
        stderr_text(&out).contains("spooled"),
        "the user is told: {}",
        stderr_text(&out)
    );
    let spool = agent.json_lines(&["spool", "status"]);
    assert_eq!(spool[0]["pending"], 20_000);
    let failed = with_db(&agent, &url, &["spool", "replay"])
        .output()
        .unwrap();
    assert_ne!(
        failed.status.code(),
        Some(0),
        "replay must fail while the database is down"
    );
    no_password(&failed);
    server.start_again();
    let replay = with_db(&agent, &url, &["spool", "replay"])
        .output()
        .unwrap();
    assert!(replay.status.success(), "{}", stderr_text(&replay));
    assert_eq!(counts(&server, "postgres", "down"), (20_000, 20_000));
    assert_eq!(agent.json_lines(&["spool", "status"])[0]["pending"], 0);
    let events = server.psql(
        "postgres",
        "SELECT string_agg(event_type, ',' ORDER BY event_type) FROM pipeline_events",
    );
    assert_eq!(
        events, "exit,spool,start",
        "each event once, the spool included"
    );
    // Replaying again changes nothing.
    assert!(with_db(&agent, &url, &["spool", "replay"])
        .output()
        .unwrap()
        .status
        .success());
    assert_eq!(counts(&server, "postgres", "down"), (20_000, 20_000));
}

#[test]
fn database_killed_mid_run_and_restarted_loses_and_doubles_nothing() {
    let server = PgServer::start();
    let url = server.url("postgres");
    let agent = pg_agent(&url);
    // 200,000 lines over about four seconds.
    let program = lines_program(200_000, 2_000, 0.04);
    let child = with_db(
        &agent,
        &url,
        &[
            "wrap",
            "-e",
            "crash",
            "--no-echo",
            "--",
            "python3",
            "-c",
            &program,
        ],
    )
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    server.stop_immediate();
    std::thread::sleep(Duration::from_millis(1500));
    server.start_again();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    no_password(&out);
    assert_eq!(
        agent.json_lines(&["spool", "status"])[0]["pending"],
        0,
        "the agent replayed its spool once the database was back"
    );
    assert_eq!(counts(&server, "postgres", "crash"), (200_000, 200_000));
}

#[test]
fn agent_killed_during_replay_and_run_again_stores_everything_once() {
    let server = PgServer::start();
    let url = server.url("postgres");
    let agent = pg_agent(&url);
    server.stop_immediate();
    let program = lines_program(100_000, 100_000, 0.0);
    let out = with_db(
        &agent,
        &url,
        &[
            "wrap",
            "-e",
            "replay",
            "--no-echo",
            "--",
            "python3",
            "-c",
            &program,
        ],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(0));
    server.start_again();
    let mut replay: Child = with_db(&agent, &url, &["spool", "replay"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once some, but not all, batches are shipped.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let shipped: i64 = server
            .try_psql("postgres", "SELECT count(*) FROM pipeline_logs")
            .map_or(0, |n| n.parse().unwrap());
        if shipped > 0 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    replay.kill().unwrap();
    replay.wait().unwrap();
    let partial = counts(&server, "postgres", "replay").0;
    assert!(
        partial < 100_000,
        "the replay was killed before it finished ({partial} shipped)"
    );
    let again = with_db(&agent, &url, &["spool", "replay"])
        .output()
        .unwrap();
    assert!(again.status.success(), "{}", stderr_text(&again));
    assert_eq!(counts(&server, "postgres", "replay"), (100_000, 100_000));
}

#[test]
fn eight_agents_writing_to_one_database_collide_on_nothing() {
    let (server, db) = shared_database();
    let url = server.url(&db);
    let agents: Vec<Agent> = (0..8).map(|_| Agent::new()).collect();
    let program = lines_program(5_000, 1_000, 0.01);
    let children: Vec<Child> = agents
        .iter()
        .enumerate()
        .map(|(i, a)| {
            with_db(
                a,
                &url,
                &[
                    "wrap",
                    "-e",
                    &format!("many{i}"),
                    "--no-echo",
                    "--",
                    "python3",
                    "-c",
                    &program,
                ],
            )
            .spawn()
            .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    for i in 0..8 {
        assert_eq!(
            counts(server, &db, &format!("many{i}")),
            (5_000, 5_000),
            "agent {i}"
        );
    }
    assert_eq!(
        server.psql(&db, "SELECT count(DISTINCT run_id) FROM pipeline_runs"),
        "8"
    );
}

#[test]
fn queries_say_plainly_that_they_cannot_read_postgresql_yet() {
    let agent = Agent::new();
    let url = format!("postgres://postgres:{PASSWORD}@127.0.0.1:1/db");
    let out = with_db(&agent, &url, &["query", "errors", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    no_password(&out);
    assert!(
        stderr_text(&out).contains("cannot read PostgreSQL yet"),
        "{}",
        stderr_text(&out)
    );
}
