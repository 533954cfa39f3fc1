//! PostgreSQL as a user meets it: records arrive, the spec's SQL runs verbatim,
//! and nothing is lost or stored twice when the server is down, dies mid-run,
//! or the agent is killed in the middle of a replay. Counts are checked by
//! content: every line is unique, so count(*) = count(DISTINCT message) = N
//! means none missing and none doubled.

use crate::pg_server::{shared_database, PgServer, PASSWORD};
use crate::util::*;
use pretty_assertions::assert_eq;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `cmd` with its stderr on a pseudo-terminal; returns what the
/// terminal showed (stdout is captured as usual).
fn with_stderr_on_a_terminal(mut cmd: Command) -> (Output, String) {
    let pty = nix::pty::openpty(None, None).unwrap();
    let mut master = std::fs::File::from(pty.master);
    let reader = std::thread::spawn(move || {
        let mut shown = Vec::new();
        // Ends with EIO once the last holder of the other side closes it.
        let _ = std::io::Read::read_to_end(&mut master, &mut shown);
        String::from_utf8_lossy(&shown).into_owned()
    });
    cmd.stderr(Stdio::from(pty.slave)).stdout(Stdio::piped());
    let out = cmd
        .start("a command with its stderr on a terminal")
        .wait_with_output()
        .unwrap();
    drop(cmd);
    (out, reader.join().unwrap())
}

fn with_db(agent: &Agent, url: &str, args: &[&str]) -> Command {
    let mut cmd = agent.cmd(args);
    cmd.env("PMON_DATABASE_URL", url);
    cmd
}

/// `wrap --no-echo -e EXP -- python3 -c PROGRAM` with the database URL set.
fn wrap_lines(agent: &Agent, url: &str, exp: &str, program: &str) -> Command {
    with_db(
        agent,
        url,
        &[
            "wrap",
            "-e",
            exp,
            "--no-echo",
            "--",
            "python3",
            "-c",
            program,
        ],
    )
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
    let agent = Agent::new();
    let migrate = with_db(&agent, &url, &["db", "migrate"]).run_within("pmon-agent db migrate");
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
    .run_within("logging_exception");
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
    let out =
        with_db(&agent, &url, &["wrap", "-e", "x", "--", "true"]).run_within("pmon-agent wrap -e");
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
    let agent = Agent::new();
    server.stop_immediate();
    let program = lines_program(20_000, 5_000, 0.01);
    let out = wrap_lines(&agent, &url, "down", &program).run_within("pmon-agent wrap -e down");
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
    // At exit the agent tried once more, and says what waits and what to do.
    let told = stderr_text(&out);
    assert!(
        told.contains("20000 records wait in the spool")
            && told.contains("cannot be reached")
            && told.contains("pmon-agent spool replay"),
        "the user is told what waits and how it is shipped: {told}"
    );
    let spool = agent.json_lines(&["spool", "status"]);
    assert_eq!(spool[0]["pending"], 20_000);
    let failed = with_db(&agent, &url, &["spool", "replay"]).run_within("pmon-agent spool replay");
    assert_ne!(
        failed.status.code(),
        Some(0),
        "replay must fail while the database is down"
    );
    no_password(&failed);
    server.start_again();
    // On a terminal, replay draws a progress bar on stderr.
    let (replay, terminal) = with_stderr_on_a_terminal(with_db(&agent, &url, &["spool", "replay"]));
    assert!(replay.status.success(), "{terminal}");
    assert_eq!(
        String::from_utf8_lossy(&replay.stdout),
        "replayed 20000 records\n"
    );
    assert!(
        terminal.contains("replaying [") && terminal.contains("20,000/20,000 records (100%)"),
        "{terminal:?}"
    );
    assert_eq!(counts(&server, "postgres", "down"), (20_000, 20_000));
    assert_eq!(agent.json_lines(&["spool", "status"])[0]["pending"], 0);
    let events = server.psql(
        "postgres",
        "SELECT string_agg(event_type, ',' ORDER BY event_type) FROM pipeline_events",
    );
    assert_eq!(
        events, "exit,replay,spool,start",
        "each event once, the spool and the replay included"
    );
    let replay = server.psql(
        "postgres",
        "SELECT details->>'records', details->>'by' FROM pipeline_events WHERE event_type = 'replay'",
    );
    assert_eq!(replay, "20000|spool replay");
    // Replaying again changes nothing; with stderr not a terminal, no bar.
    let again = with_db(&agent, &url, &["spool", "replay"]).run_within("pmon-agent spool replay");
    assert!(again.status.success());
    assert_eq!(
        String::from_utf8_lossy(&again.stdout),
        "replayed 0 records\n"
    );
    assert_eq!(stderr_text(&again), "");
    assert_eq!(counts(&server, "postgres", "down"), (20_000, 20_000));
}

fn spool_pending(agent: &Agent) -> u64 {
    agent.json_lines(&["spool", "status"])[0]["pending"]
        .as_u64()
        .unwrap()
}

fn count_lines(server: &PgServer, db: &str, exp: &str) -> i64 {
    server
        .try_psql(
            db,
            &format!("SELECT count(*) FROM pipeline_logs WHERE experiment_id = '{exp}'"),
        )
        .map_or(0, |n| n.parse().unwrap_or(0))
}

/// Starts `wrap` of a program that waits for the file `go` (`$PMON_GO`).
fn wrap_until_go(agent: &Agent, url: &str, exp: &str, program: &str, go: &Path) -> Running {
    wrap_lines(agent, url, exp, program)
        .env("PMON_GO", go)
        .stderr(Stdio::piped())
        .start(&format!("pmon-agent wrap -e {exp}"))
}

/// Prints `line N` in bursts of 2,000 every 40 ms until the file `$PMON_GO`
/// exists, then 10,000 more lines, writes how many it printed to
/// `$PMON_GO.count` and exits: the test, not the clock, decides when the
/// outage overlaps the program and when the program ends.
const UNTIL_GO: &str = r#"
import os, time
go = os.environ['PMON_GO']
i = 0
while not os.path.exists(go):
    for _ in range(2000):
        print(f'INFO:load:line {i}')
        i += 1
    time.sleep(0.04)
    assert i < 5_000_000, 'the test never said go'
for _ in range(10000):
    print(f'INFO:load:line {i}')
    i += 1
with open(go + '.count', 'w') as f:
    f.write(str(i))
"#;

#[test]
fn database_killed_mid_run_and_restarted_loses_and_doubles_nothing() {
    let server = PgServer::start();
    let url = server.url("postgres");
    // This test is about what arrives, not how fast: however slow the
    // machine, the agent may take what it needs to ship the spool at exit.
    let agent = Agent::new().with_config("logging:\n  database:\n    shutdown_timeout: 10m\n");
    let go = agent.dir.path().join("go");
    let child = wrap_until_go(&agent, &url, "crash", UNTIL_GO, &go);
    // Killed while records stream in (mid-batch, connections cut)...
    wait_until("records reach PostgreSQL", || {
        count_lines(&server, "postgres", "crash") >= 20_000
    });
    server.stop_immediate();
    // ...down while the program goes on printing...
    wait_until("records are spooled", || spool_pending(&agent) >= 20_000);
    // ...and back while it still prints; it ends right after.
    server.start_again();
    std::fs::write(&go, "").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_text(&out));
    no_password(&out);
    let printed: i64 = std::fs::read_to_string(go.with_extension("count"))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        spool_pending(&agent),
        0,
        "the agent shipped its spool before it exited: {}",
        stderr_text(&out)
    );
    assert_eq!(counts(&server, "postgres", "crash"), (printed, printed));
    let replayed = server.psql(
        "postgres",
        "SELECT count(*) > 0, sum((details->>'records')::bigint) >= 20000 FROM pipeline_events WHERE event_type = 'replay' AND details->>'by' = 'automatic'",
    );
    assert_eq!(replayed, "t|t", "replay events when the database came back");
    let run = server.psql(
        "postgres",
        "SELECT state, exit_code FROM pipeline_runs WHERE experiment_id = 'crash'",
    );
    assert_eq!(run, "succeeded|0", "the run's end reached PostgreSQL too");
}

/// PostgreSQL comes back only after the program has ended, while the
/// agent's retry backoff still waits: the agent tries once more at exit and
/// ships the spool then, instead of leaving it for someone to notice.
#[test]
fn database_back_just_as_the_program_ends_is_tried_once_more_at_exit() {
    let server = PgServer::start();
    let url = server.url("postgres");
    // Once PostgreSQL has failed, the agent would not retry for an hour.
    let agent = Agent::new().with_config(
        "logging:\n  database:\n    shutdown_timeout: 10m\n    retry_first_backoff: 1h\n    retry_max_backoff: 1h\n",
    );
    server.stop_immediate();
    // The program waits for the test, which starts the server and only then
    // lets it end: the agent's last retry failed while it waited.
    let program = r#"
import os, time
for i in range(30000):
    print(f'INFO:load:line {i}')
go = os.environ['PMON_GO']
while not os.path.exists(go):
    time.sleep(0.01)
"#;
    let go = agent.dir.path().join("go");
    let child = wrap_until_go(&agent, &url, "late", program, &go);
    wait_until("records are spooled", || spool_pending(&agent) >= 30_000);
    server.start_again();
    std::fs::write(&go, "").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_text(&out));
    assert_eq!(spool_pending(&agent), 0, "{}", stderr_text(&out));
    assert_eq!(counts(&server, "postgres", "late"), (30_000, 30_000));
}

#[test]
fn agent_killed_during_replay_and_run_again_stores_everything_once() {
    let server = PgServer::start();
    let url = server.url("postgres");
    let agent = Agent::new();
    server.stop_immediate();
    let program = lines_program(100_000, 100_000, 0.0);
    let out = wrap_lines(&agent, &url, "replay", &program).run_within("pmon-agent wrap -e replay");
    assert_eq!(out.status.code(), Some(0));
    server.start_again();
    let mut replay: Running = with_db(&agent, &url, &["spool", "replay"])
        .stdout(Stdio::null())
        .start("pmon-agent spool replay");
    // Kill it once some, but not all, batches are shipped.
    let deadline = Instant::now() + Duration::from_secs(120);
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
    let again = with_db(&agent, &url, &["spool", "replay"]).run_within("pmon-agent spool replay");
    assert!(again.status.success(), "{}", stderr_text(&again));
    assert_eq!(counts(&server, "postgres", "replay"), (100_000, 100_000));
}

#[test]
fn eight_agents_writing_to_one_database_collide_on_nothing() {
    let (server, db) = shared_database();
    let url = server.url(&db);
    let agents: Vec<Agent> = (0..8).map(|_| Agent::new()).collect();
    let program = lines_program(5_000, 1_000, 0.01);
    let children: Vec<Running> = agents
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
            .start("pmon-agent wrap -e")
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

/// Runs the agent against the database; no output may show the password.
fn pg_run(agent: &Agent, url: &str, args: &[&str]) -> Output {
    let out = with_db(agent, url, args).run_within(&format!("pmon-agent {}", args.join(" ")));
    no_password(&out);
    out
}

/// A query with `--format json` against the database, its JSON Lines parsed.
fn pg_json(agent: &Agent, url: &str, args: &[&str]) -> Vec<Value> {
    let mut all = args.to_vec();
    all.extend(["--format", "json"]);
    let out = pg_run(agent, url, &all);
    assert!(
        out.status.success(),
        "pmon-agent {all:?} failed: {}",
        stderr_text(&out)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// Wraps a fixture program as experiment `name`, into PostgreSQL when a URL
/// is given, else into the embedded store.
fn wrap_fixture(agent: &Agent, url: Option<&str>, name: &str) {
    let program = fixture_program(name);
    let args = [
        "wrap",
        "-e",
        name,
        "--",
        "python3",
        program.to_str().unwrap(),
    ];
    let out = match url {
        Some(url) => pg_run(agent, url, &args),
        None => agent.run(&args),
    };
    assert!(out.status.code().is_some(), "{}", stderr_text(&out));
}

/// Records without what differs between two runs of the same program.
fn without_run_and_time(records: &[Value]) -> Vec<Value> {
    records
        .iter()
        .map(|record| {
            let mut record = record.clone();
            let fields = record.as_object_mut().expect("a JSON object");
            fields.remove("run_id");
            fields.remove("timestamp");
            record
        })
        .collect()
}

fn messages(records: &[Value]) -> Vec<&str> {
    records
        .iter()
        .map(|r| r["message"].as_str().unwrap())
        .collect()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

/// A value of the embedded store as a PostgreSQL literal (text dollar-quoted).
fn sql_literal(value: rusqlite::types::Value) -> String {
    use rusqlite::types::Value as V;
    match value {
        V::Null => "NULL".into(),
        V::Integer(n) => n.to_string(),
        V::Real(x) => format!("{x:?}"),
        V::Text(text) => {
            assert!(!text.contains("$pmon$"), "{text}");
            format!("$pmon${text}$pmon$")
        }
        V::Blob(_) => panic!("no blobs in the record tables"),
    }
}

/// Copies the embedded store's runs, records, progress and metrics into PostgreSQL
/// row for row, ids and times included, so that both stores hold the same
/// data and every query must answer byte for byte alike; then enters the
/// records in the batch ledger as the agent would have.
fn copy_store_into_postgres(local: &Agent, server: &PgServer, db: &str) {
    let conn = local.sql();
    let tables = [
        ("pipeline_runs", "run_id, experiment_id, ordinal, state, command, tags, host, agent_pid, agent_start, child_pid, started_at, ended_at, exit_code, signal"),
        ("pipeline_logs", "id, experiment_id, run_id, origin, seq, timestamp, level, logger, message, traceback, exception_type, exception_message, stream, source"),
        ("pipeline_progress", "experiment_id, run_id, task, current, total, unit, rate, updated_at"),
        ("pipeline_metrics", "experiment_id, run_id, seq, timestamp, metric_type, name, value, unit, step"),
    ];
    for (table, columns) in tables {
        let mut stmt = conn
            .prepare(&format!("SELECT {columns} FROM {table}"))
            .unwrap();
        let width = stmt.column_count();
        let rows: Vec<String> = stmt
            .query_map([], |row| {
                let values = (0..width)
                    .map(|i| row.get(i).map(sql_literal))
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(format!("({})", values.join(", ")))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        // psql takes the SQL as one argument, which Linux caps at 128 KiB.
        for chunk in rows.chunks(200) {
            server.psql(
                db,
                &format!(
                    "INSERT INTO {table} ({columns}) VALUES {}",
                    chunk.join(", ")
                ),
            );
        }
    }
    // What the agent writes with each batch: the ledger, through which the
    // queries find an experiment's rows (ids as given: the form an upgraded
    // database's ledger has, a negative batch covering every id below it).
    server.psql(
        db,
        "INSERT INTO pipeline_batches (experiment_id, run_id, origin, first_seq, last_seq, batch, rows, first_time, last_time)
         SELECT experiment_id, run_id, origin, min(seq), max(seq), -1 - max(id) / 32768, count(*), min(timestamp), max(timestamp)
         FROM pipeline_logs GROUP BY experiment_id, run_id, origin",
    );
}

#[test]
fn queries_answer_from_postgresql_byte_for_byte_as_from_the_embedded_store() {
    let (server, db) = shared_database();
    let url = server.url(&db);
    let (pg, local) = (Agent::new(), Agent::new());
    for fixture in [
        "logging_exception",
        "plain_uncaught",
        "plain_uncaught",
        "tqdm_progress",
    ] {
        wrap_fixture(&local, None, fixture);
    }
    let program = lines_program(3_000, 1_000, 0.0);
    assert!(local
        .run(&[
            "wrap",
            "-e",
            "long",
            "--no-echo",
            "--",
            "python3",
            "-c",
            &program
        ])
        .status
        .success());
    assert!(pg_run(&pg, &url, &["db", "migrate"]).status.success());
    copy_store_into_postgres(&local, server, &db);

    let queries: &[&[&str]] = &[
        &["query", "list"],
        &["query", "status", "plain_uncaught"],
        &["query", "status", "plain_uncaught", "--run", "1"],
        &["query", "status", "tqdm_progress"],
        &["query", "metrics", "tqdm_progress"],
        &[
            "query",
            "metrics",
            "plain_uncaught",
            "--run",
            "1",
            "--type",
            "cpu",
        ],
        &["query", "errors", "logging_exception", "--traceback"],
        &["query", "errors", "logging_exception", "--limit", "1"],
        &["query", "errors", "plain_uncaught", "--run", "all"],
        &["query", "logs", "logging_exception"],
        &["query", "logs", "logging_exception", "--traceback"],
        &["query", "logs", "logging_exception", "--level", "warning"],
        &["query", "logs", "logging_exception", "--search", "shard"],
        &[
            "query",
            "logs",
            "logging_exception",
            "--search-regex",
            "^(loaded|retry)",
        ],
        &[
            "query",
            "logs",
            "logging_exception",
            "--since",
            "1h",
            "--limit",
            "3",
        ],
        &["query", "logs", "plain_uncaught", "--run", "1"],
        &[
            "query",
            "logs",
            "plain_uncaught",
            "--run",
            "all",
            "--level",
            "info",
        ],
        &["query", "logs", "long"],
        &["query", "logs", "long", "--limit", "2500"],
        &["query", "logs", "long", "--search-regex", "line 1\\d*$"],
        &[
            "query", "logs", "long", "--search", "line 29", "--limit", "5",
        ],
    ];
    for args in queries {
        for format in ["text", "json"] {
            let mut all = args.to_vec();
            all.extend(["--format", format]);
            let (from_pg, from_local) = (pg_run(&pg, &url, &all), local.run(&all));
            assert!(
                from_pg.status.success(),
                "{all:?}: {}",
                stderr_text(&from_pg)
            );
            assert!(!from_pg.stdout.is_empty(), "{all:?} printed nothing");
            assert_eq!(
                String::from_utf8_lossy(&from_pg.stdout),
                String::from_utf8_lossy(&from_local.stdout),
                "{all:?}"
            );
            assert_eq!(stderr_text(&from_pg), stderr_text(&from_local), "{all:?}");
        }
    }
}

#[test]
fn programs_wrapped_into_postgresql_are_queried_like_the_embedded_store() {
    let (server, db) = shared_database();
    let url = server.url(&db);
    let (pg, local) = (Agent::new(), Agent::new());
    for fixture in ["logging_exception", "plain_uncaught"] {
        wrap_fixture(&pg, Some(&url), fixture);
        wrap_fixture(&local, None, fixture);
    }
    // Records of one stream keep their order from run to run (stdout and
    // stderr lines may swap places by microseconds), so compare those.
    let queries: [&[&str]; 5] = [
        &["query", "errors", "logging_exception", "--traceback"],
        &["query", "errors", "plain_uncaught", "--traceback"],
        &["query", "errors", "logging_exception", "--limit", "1"],
        &["query", "logs", "logging_exception", "--level", "warning"],
        &[
            "query",
            "logs",
            "plain_uncaught",
            "--level",
            "warning",
            "--traceback",
            "--run",
            "1",
        ],
    ];
    for args in queries {
        let from_pg = pg_json(&pg, &url, args);
        assert!(!from_pg.is_empty(), "{args:?} found nothing in PostgreSQL");
        assert_eq!(
            without_run_and_time(&from_pg),
            without_run_and_time(&local.json_lines(args)),
            "{args:?}"
        );
    }
    // Error groups: the same groups, counts and latest records.
    let when = ["first_seen", "last_seen", "first_run_id", "latest_run_id"];
    let without_when = |groups: Vec<Value>| -> Vec<Value> {
        groups
            .into_iter()
            .map(|mut g| {
                let fields = g.as_object_mut().unwrap();
                when.iter()
                    .for_each(|k| assert!(fields.remove(*k).is_some(), "{k}"));
                g
            })
            .collect()
    };
    for args in [
        &[
            "query",
            "errors",
            "logging_exception",
            "--group",
            "--traceback",
        ][..],
        &["query", "errors", "plain_uncaught", "--group", "--new"],
    ] {
        let from_pg = pg_json(&pg, &url, args);
        assert!(!from_pg.is_empty(), "{args:?} found nothing in PostgreSQL");
        assert_eq!(
            without_when(from_pg),
            without_when(local.json_lines(args)),
            "{args:?}"
        );
    }
    let errors = pg_json(
        &pg,
        &url,
        &["query", "errors", "logging_exception", "--traceback"],
    );
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors.iter().all(|r| r["traceback"]
        .as_str()
        .unwrap()
        .starts_with("Traceback (most recent call last):")));
    let warnings = pg_json(
        &pg,
        &url,
        &["query", "logs", "logging_exception", "--level", "warning"],
    );
    assert!(warnings
        .iter()
        .all(|r| ["WARNING", "ERROR", "CRITICAL"].contains(&r["level"].as_str().unwrap())));
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    let all = pg_json(&pg, &url, &["query", "logs", "logging_exception"]);
    assert_eq!(
        all.len(),
        local
            .json_lines(&["query", "logs", "logging_exception"])
            .len()
    );

    // Timestamps read exactly as PostgreSQL formats them in UTC, microseconds included.
    let times: Vec<&str> = all
        .iter()
        .map(|r| r["timestamp"].as_str().unwrap())
        .collect();
    let stored = server.psql(
        &db,
        "SELECT to_char(timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM pipeline_logs WHERE experiment_id = 'logging_exception' ORDER BY timestamp, id",
    );
    assert_eq!(times.join("\n"), stored);

    let status = &pg_json(&pg, &url, &["query", "status", "plain_uncaught"])[0];
    assert_eq!(status["state"], "failed");
    assert_eq!(status["exit_code"], 1);
    assert_eq!(status["last_error"]["exception_type"], "ValueError");
    assert_eq!(status["spool_pending"], 0);
    let local_status = local.status("plain_uncaught");
    for key in [
        "experiment_id",
        "run",
        "state",
        "exit_code",
        "signal",
        "command",
        "progress",
    ] {
        assert_eq!(status[key], local_status[key], "status field {key}");
    }
    assert_eq!(
        without_run_and_time(&[status["last_error"].clone()]),
        without_run_and_time(&[local_status["last_error"].clone()])
    );
    let started = status["started_at"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(started).is_ok() && started.len() == 27,
        "{started}"
    );

    let list = pg_json(&pg, &url, &["query", "list"]);
    let local_list = local.json_lines(&["query", "list"]);
    assert_eq!(list.len(), 2);
    for (from_pg, from_local) in list.iter().zip(&local_list) {
        for key in [
            "experiment_id",
            "run",
            "state",
            "error_count",
            "exit_code",
            "signal",
        ] {
            assert_eq!(from_pg[key], from_local[key], "list field {key}");
        }
    }
    assert_eq!(list[1]["experiment_id"], "plain_uncaught");
    assert_eq!(list[1]["error_count"], 1);
}

#[test]
fn runs_in_postgresql_are_picked_by_number_and_dead_agents_show_lost() {
    let (server, db) = shared_database();
    let url = server.url(&db);
    let agent = Agent::new();
    for line in ["first", "second"] {
        let out = pg_run(
            &agent,
            &url,
            &[
                "wrap",
                "-e",
                "runs",
                "--",
                "python3",
                "-c",
                &format!("print('{line}')"),
            ],
        );
        assert_eq!(out.status.code(), Some(0), "{}", stderr_text(&out));
    }
    let logs = |extra: &[&str]| {
        let mut args = vec!["query", "logs", "runs"];
        args.extend_from_slice(extra);
        pg_json(&agent, &url, &args)
    };
    assert_eq!(messages(&logs(&[])), ["second"]);
    assert_eq!(messages(&logs(&["--run", "1"])), ["first"]);
    assert_eq!(messages(&logs(&["--run", "all"])), ["first", "second"]);
    let first = &pg_json(&agent, &url, &["query", "status", "runs", "--run", "1"])[0];
    assert_eq!(first["run"], 1);
    assert_eq!(first["state"], "succeeded");
    let text = pg_run(&agent, &url, &["query", "logs", "runs", "--run", "all"]);
    let headers: Vec<String> = String::from_utf8_lossy(&text.stdout)
        .lines()
        .filter(|l| l.starts_with("-- run "))
        .map(|l| l[..8].to_string())
        .collect();
    assert_eq!(headers, ["-- run 1", "-- run 2"]);
    let missing = pg_run(&agent, &url, &["query", "logs", "runs", "--run", "7"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr_text(&missing).contains("its runs are 1 to 2"),
        "{}",
        stderr_text(&missing)
    );

    // A live-looking run whose agent on this host is gone shows as lost, a
    // run on another host is not judged here, and nothing is written.
    let insert = |run_id: &str, experiment: &str, host: &str| {
        server.psql(&db, &format!(
            "INSERT INTO pipeline_runs (run_id, experiment_id, ordinal, state, host, agent_pid, started_at)
             VALUES ('{run_id}', '{experiment}', 1, 'running', '{host}', 999999999, now())"
        ));
    };
    insert("01DEADAGENT", "gone", &hostname());
    insert("01ELSEWHERE", "remote", "some-other-host");
    assert_eq!(
        pg_json(&agent, &url, &["query", "status", "gone"])[0]["state"],
        "lost"
    );
    assert_eq!(
        pg_json(&agent, &url, &["query", "status", "remote"])[0]["state"],
        "running"
    );
    let states: Vec<(String, String)> = pg_json(&agent, &url, &["query", "list"])
        .iter()
        .map(|s| {
            (
                s["experiment_id"].as_str().unwrap().into(),
                s["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        states.contains(&("gone".into(), "lost".into())),
        "{states:?}"
    );
    assert!(
        states.contains(&("remote".into(), "running".into())),
        "{states:?}"
    );
    let text = pg_run(&agent, &url, &["query", "status", "gone"]);
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("state: lost (the agent died"),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );
    assert_eq!(
        server.psql(
            &db,
            "SELECT state FROM pipeline_runs WHERE run_id = '01DEADAGENT'"
        ),
        "running",
        "a query only shows the run as lost"
    );
}

#[test]
fn queries_say_when_records_still_wait_in_the_local_spool() {
    let (server, db) = shared_database();
    let url = server.url(&db);
    let unreachable = format!("postgres://postgres:{PASSWORD}@127.0.0.1:1/{db}");
    let agent = Agent::new();
    let wrap = |url: &str, exp: &str| {
        let out = pg_run(
            &agent,
            url,
            &[
                "wrap",
                "-e",
                exp,
                "--",
                "python3",
                "-c",
                "import logging; logging.error('%s', 'boom')",
            ],
        );
        assert_eq!(out.status.code(), Some(0), "{}", stderr_text(&out));
    };
    wrap(&url, "shipped");
    wrap(&unreachable, "waiting");

    let text = pg_run(&agent, &url, &["query", "logs", "shipped"]);
    assert!(text.status.success(), "{}", stderr_text(&text));
    assert!(String::from_utf8_lossy(&text.stdout).contains("ERROR    root: boom"));
    let note = "1 record is still waiting in the local spool; they appear here once PostgreSQL has them (pmon-agent spool replay)";
    assert!(stderr_text(&text).contains(note), "{}", stderr_text(&text));
    let errors = pg_run(&agent, &url, &["query", "errors", "shipped"]);
    assert!(
        stderr_text(&errors).contains(note),
        "{}",
        stderr_text(&errors)
    );
    let json = pg_run(
        &agent,
        &url,
        &["query", "logs", "shipped", "--format", "json"],
    );
    assert_eq!(stderr_text(&json), "", "JSON output carries no note");
    assert_eq!(
        pg_json(&agent, &url, &["query", "status", "shipped"])[0]["spool_pending"],
        1
    );

    let not_there = pg_run(&agent, &url, &["query", "errors", "waiting"]);
    assert_eq!(not_there.status.code(), Some(1));
    let err = stderr_text(&not_there);
    assert!(err.contains(note), "{err}");
    assert!(
        err.contains("no experiment named 'waiting'; known experiments: shipped"),
        "{err}"
    );

    let replay = pg_run(&agent, &url, &["spool", "replay"]);
    assert!(replay.status.success(), "{}", stderr_text(&replay));
    let after = pg_run(&agent, &url, &["query", "errors", "waiting"]);
    assert!(after.status.success(), "{}", stderr_text(&after));
    assert!(String::from_utf8_lossy(&after.stdout).contains("boom"));
    assert_eq!(stderr_text(&after), "", "nothing waits any more");
}

#[test]
fn an_unreachable_database_is_named_with_its_password_masked() {
    let agent = Agent::new();
    let url = format!("postgres://postgres:{PASSWORD}@127.0.0.1:1/db");
    for args in [
        &["query", "list"][..],
        &["query", "status", "x"],
        &["query", "logs", "x", "-f"],
        &["query", "errors", "x", "--format", "json"],
    ] {
        let out = pg_run(&agent, &url, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        let err = stderr_text(&out);
        assert!(
            err.contains(
                "could not connect to PostgreSQL at postgres://postgres:***@127.0.0.1:1/db"
            ),
            "{err}"
        );
        assert!(err.contains("check that the server is running"), "{err}");
    }
}

#[test]
fn follow_prints_each_new_postgresql_record_once() {
    let (server, db) = shared_database();
    let url = server.url(&db);
    let agent = Agent::new();
    // Ship every few lines, so the follower sees records arrive over many polls.
    std::fs::write(
        agent.dir.path().join("config.yml"),
        "logging:\n  database:\n    flush_interval: 50ms\n",
    )
    .unwrap();
    let program = "import time\nprint('INFO:f:started', flush=True)\ntime.sleep(1.0)\nfor i in range(40):\n    print(f'INFO:f:line {i}', flush=True)\n    time.sleep(0.05)\n";
    let wrap = wrap_lines(&agent, &url, "follow", program).start("pmon-agent wrap -e follow");
    let deadline = Instant::now() + Duration::from_secs(120);
    while server
        .try_psql(
            &db,
            "SELECT count(*) FROM pipeline_logs WHERE experiment_id = 'follow'",
        )
        .map_or(true, |n| n == "0")
    {
        assert!(
            Instant::now() < deadline,
            "the run never reached PostgreSQL"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut follower = with_db(
        &agent,
        &url,
        &["query", "logs", "follow", "-f", "--format", "json"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .start("pmon-agent query logs");
    assert!(wait_for(wrap).success());
    // Read what the follower prints until the program's last line has come,
    // however long that takes; then one more run's record: a record printed
    // twice would come before it.
    let mut lines =
        std::io::BufRead::lines(std::io::BufReader::new(follower.stdout.take().unwrap()));
    let mut records: Vec<Value> = Vec::new();
    let mut read_until = |message: &str, records: &mut Vec<Value>| {
        for line in lines.by_ref() {
            let record: Value = serde_json::from_str(&line.unwrap()).unwrap();
            let done = record["message"] == message;
            records.push(record);
            if done {
                return;
            }
        }
        panic!("the follower ended before printing {message:?}: {records:#?}");
    };
    read_until("line 39", &mut records);
    let after = "print('INFO:f:after', flush=True)";
    let out = wrap_lines(&agent, &url, "follow", after).run_within("pmon-agent wrap -e follow");
    assert!(out.status.success(), "{}", stderr_text(&out));
    no_password(&out);
    read_until("after", &mut records);
    let out = stop(follower);
    no_password(&out);
    let mut expected = vec!["started".to_string()];
    expected.extend((0..40).map(|i| format!("line {i}")));
    expected.push("after".into());
    assert_eq!(messages(&records), expected);
}

fn wait_for(mut child: Running) -> std::process::ExitStatus {
    child.wait().unwrap()
}

/// Ends a follower the way Ctrl-C would and collects what it printed.
fn stop(follower: Running) -> Output {
    let pid = follower.id() as i32;
    unsafe { libc::kill(pid, libc::SIGINT) };
    follower.wait_with_output().unwrap()
}

#[test]
fn a_full_spool_drops_and_counts_but_the_program_and_plain_log_are_unharmed() {
    let agent = Agent::new();
    // Nothing listens on port 1: PostgreSQL is unreachable from the start.
    let url = format!("postgres://postgres:{PASSWORD}@127.0.0.1:1/db");
    std::fs::write(
        agent.dir.path().join("config.yml"),
        "logging:\n  database:\n    spool_max_bytes: 20000\n",
    )
    .unwrap();
    let program = lines_program(5_000, 5_000, 0.0);
    let out = with_db(
        &agent,
        &url,
        &["wrap", "-e", "full", "--", "python3", "-c", &program],
    )
    .run_within("pmon-agent wrap -e");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        5_000,
        "all output reached the terminal"
    );
    let err = stderr_text(&out);
    assert!(
        err.contains("the spool is full") && err.contains("spool_max_bytes"),
        "{err}"
    );
    no_password(&out);
    let spool = agent.json_lines(&["spool", "status"]);
    let pending = spool[0]["pending"].as_u64().unwrap();
    assert!(
        pending > 0 && pending < 5_000,
        "spooled until full: {pending}"
    );
    let dropped_events: i64 = agent
        .sql()
        .query_row(
            "SELECT count(*) FROM pmon_spool WHERE payload LIKE '%spool_full%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(dropped_events > 0);
    let logs = agent.data_dir().join("logs/full");
    let file = std::fs::read_dir(&logs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(
        std::fs::read_to_string(file).unwrap().lines().count(),
        5_000
    );
}

fn daemon_state(agent: &Agent, url: &str, name: &str) -> Value {
    pg_json(agent, url, &["daemon", "status", name]).remove(0)
}

fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// Starts a daemon that prints 5,000 lines and ends while the database is
/// down; returns its supervisor's pid once the daemon has ended.
fn daemon_ended_during_an_outage(agent: &Agent, url: &str) -> u64 {
    let program = lines_program(5_000, 1_000, 0.0);
    let out = pg_run(
        agent,
        url,
        &[
            "daemon",
            "start",
            "--name",
            "etl",
            "--restart",
            "never",
            "--",
            "python3",
            "-c",
            &program,
        ],
    );
    assert!(out.status.success(), "{}", stderr_text(&out));
    wait_until("the daemon's program has ended", || {
        daemon_state(agent, url, "etl")["state"] == "succeeded"
    });
    assert_eq!(spool_pending(agent), 5_000);
    daemon_state(agent, url, "etl")["supervisor_pid"]
        .as_u64()
        .unwrap()
}

fn supervisor_log(agent: &Agent) -> String {
    std::fs::read_to_string(agent.data_dir().join("daemons/etl.supervisor.log")).unwrap()
}

/// Nobody sits at a daemon's terminal to be told that records wait in the
/// spool: its supervisor stays and ships them once PostgreSQL is back.
#[test]
fn a_daemon_that_ended_during_an_outage_ships_its_spool_in_the_background() {
    let server = PgServer::start();
    let url = server.url("postgres");
    let agent = Agent::new();
    server.stop_immediate();
    let supervisor = daemon_ended_during_an_outage(&agent, &url);
    assert!(alive(supervisor), "the supervisor stays while records wait");
    server.start_again();
    wait_until("the supervisor has shipped the spool and gone", || {
        !alive(supervisor)
    });
    assert_eq!(counts(&server, "postgres", "etl"), (5_000, 5_000));
    assert_eq!(spool_pending(&agent), 0);
    let log = supervisor_log(&agent);
    assert!(
        log.contains("5000 records wait in the spool")
            && log.contains("keeps shipping them in the background")
            && log.contains("the spool of daemon etl is shipped"),
        "{log}"
    );
    assert!(!log.contains(PASSWORD), "{log}");
}

/// `daemon stop` ends the background shipping; the records stay spooled.
#[test]
fn daemon_stop_ends_the_background_shipping_of_an_ended_daemon() {
    let agent = Agent::new();
    // Nothing listens there: the database stays down for the whole test.
    let url = format!("postgres://postgres:{PASSWORD}@127.0.0.1:1/db");
    let supervisor = daemon_ended_during_an_outage(&agent, &url);
    let out = pg_run(&agent, &url, &["daemon", "stop", "etl"]);
    assert!(out.status.success(), "{}", stderr_text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("stopped shipping the spool"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!alive(supervisor));
    assert_eq!(
        spool_pending(&agent),
        5_000,
        "the records stay for spool replay"
    );
    assert!(supervisor_log(&agent).contains("5000 records stay in it"));
}

/// A declarative parser's other captures reach the `fields` column of both
/// stores and come back alike (jsonb in PostgreSQL, JSON text in SQLite).
#[test]
fn parser_fields_are_stored_and_queried_alike_in_postgresql() {
    let (server, db) = shared_database();
    let url = server.url(&db);
    let (pg, local) = (Agent::new(), Agent::new());
    let program = r#"import sys
sys.stderr.write('W1127 10:00:01.000001 7 cuda.cc:412] no TensorRT\n')
sys.stderr.write('Exception in thread "main" java.lang.IllegalStateException: shard 3\n\tat A.b(A.java:1)\n')
"#;
    let args = ["wrap", "-e", "fields", "--", "python3", "-c", program];
    assert!(pg_run(&pg, &url, &args).status.success());
    assert!(local.run(&args).status.success());
    let from_pg = without_run_and_time(&pg_json(&pg, &url, &["query", "logs", "fields"]));
    let from_local = without_run_and_time(&local.json_lines(&["query", "logs", "fields"]));
    assert_eq!(from_pg, from_local);
    let fields: Vec<&Value> = from_pg.iter().map(|r| &r["fields"]).collect();
    assert_eq!(
        fields,
        [
            &serde_json::json!({"thread": "7", "file": "cuda.cc", "line": "412"}),
            &serde_json::json!({"thread": "main"}),
        ]
    );
    let via_sql = server.psql(
        &db,
        "SELECT fields->>'file' FROM pipeline_logs WHERE experiment_id = 'fields' AND level = 'WARNING'",
    );
    assert_eq!(via_sql.trim(), "cuda.cc");
}

/// A following `tail` with nothing to write lets go of its connection, and
/// takes one again when lines come: a hundred idle agents do not hold a
/// hundred of the server's connections.
#[test]
fn an_idle_agent_releases_its_connection_and_reconnects_for_new_lines() {
    let (server, db) = shared_database();
    let url = server.url(&db);
    let agent = Agent::new();
    let file = agent.dir.path().join("app.log");
    std::fs::write(&file, "INFO:app:first\n").unwrap();
    let tail = with_db(
        &agent,
        &url,
        &["tail", "-e", "idle", file.to_str().unwrap()],
    )
    .env("PMON_TEST_IDLE_DISCONNECT", "1s")
    .start("pmon-agent tail -e");
    let connections = || {
        server
            .psql(
                &db,
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
            .trim()
            .parse::<i64>()
            .unwrap()
    };
    wait_until("the first line is stored", || {
        count_lines(server, &db, "idle") == 1
    });
    wait_until("the idle agent has closed its connection", || {
        connections() == 0
    });
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap();
    std::io::Write::write_all(&mut f, b"INFO:app:second\n").unwrap();
    wait_until("the next line is stored over a new connection", || {
        count_lines(server, &db, "idle") == 2
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(tail.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = tail.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr_text(&out));
}

#[test]
fn db_distribute_on_plain_postgresql_says_to_run_it_on_a_citus_coordinator() {
    let (server, db) = shared_database();
    let agent = Agent::new();
    let out = agent
        .cmd(&["db", "distribute"])
        .env("PMON_DATABASE_URL", server.url(&db))
        .run_within("pmon-agent db distribute");
    let err = stderr_text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("is not a Citus coordinator") && err.contains("CREATE EXTENSION citus"),
        "{err}"
    );
    assert!(!err.contains(PASSWORD), "{err}");
}

/// `tail` into PostgreSQL stores a file's read position just before the
/// commit, as tentative, and confirms it after. A tail stopped in between
/// settles it at its next start against the ledger: kept if PostgreSQL took
/// the records (a copytruncate copy made meanwhile is then read only past
/// it), dropped if it did not (the records are read again). Either way every
/// line is stored once.
#[test]
fn tail_settles_the_positions_a_stop_before_their_confirmation_left() {
    let (server, db) = shared_database();
    let url = server.url(&db);
    let agent = Agent::new();
    let logs = agent.dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let app = logs.join("app.log");
    let lines = |range: std::ops::Range<usize>| {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&app)
            .unwrap();
        for i in range {
            writeln!(f, "INFO:app:line {i:06}").unwrap(); // 21 bytes
        }
    };
    let tail_once = || {
        let out = with_db(
            &agent,
            &url,
            &["tail", "-e", "st", "--once", logs.to_str().unwrap()],
        )
        .run_within("pmon-agent tail -e");
        assert!(out.status.success(), "{}", stderr_text(&out));
    };
    lines(0..1000);
    tail_once();
    assert_eq!(counts(server, &db, "st"), (1000, 1000));
    let run = server.psql(
        &db,
        "SELECT DISTINCT run_id FROM pipeline_logs WHERE experiment_id = 'st'",
    );
    let store = rusqlite::Connection::open(agent.db_path()).unwrap();
    let app_path = app.to_str().unwrap();
    let leave_tentative = |offset: u64, last_seq: u64| {
        store
            .execute(
                "INSERT INTO pmon_checkpoints_tentative SELECT experiment_id, dev, ino, head, generation, earlier_head, earlier_offset, path, ?1, ?2, 'file:' || dev || ':' || ino || ':' || generation, ?3
                 FROM pmon_checkpoints WHERE experiment_id = 'st' AND path = ?4",
                rusqlite::params![offset as i64, run, last_seq as i64, app_path],
            )
            .unwrap()
    };
    // Committed, not confirmed: PostgreSQL has all 1,000 lines, the file's
    // position says 500, the tentative one 1,000. Then a copytruncate.
    assert_eq!(leave_tentative(21_000, 999 * 21), 1);
    store
        .execute(
            "UPDATE pmon_checkpoints SET offset = 10500 WHERE path = ?1",
            [app_path],
        )
        .unwrap();
    lines(1000..1100);
    std::fs::copy(&app, logs.join("app.log.1")).unwrap();
    truncate(&app);
    lines(1100..1150);
    tail_once();
    assert_eq!(
        counts(server, &db, "st"),
        (1150, 1150),
        "the copy read only past the settled position"
    );
    // Not committed: a tentative position past 50 lines PostgreSQL never got.
    lines(1150..1200);
    assert_eq!(leave_tentative(100 * 21, 99 * 21), 1);
    tail_once();
    assert_eq!(
        counts(server, &db, "st"),
        (1200, 1200),
        "the lines past the stored position read again"
    );
    let left: i64 = store
        .query_row("SELECT count(*) FROM pmon_checkpoints_tentative", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(left, 0);
}
