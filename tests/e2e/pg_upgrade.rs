//! A database of the old schema (migrations 0001–0004, as agents before the
//! day-partitioned schema left it) upgraded in place by today's agent:
//! migration 0005 runs when the agent first connects, the old records become
//! the partition `pipeline_logs_legacy`, the ledger learns their seq ranges,
//! and old and new records are stored and queried together, nothing lost.

use crate::pg_server::{shared_database, PgServer};
use crate::util::*;
use pretty_assertions::assert_eq;
use serde_json::Value;
use std::process::Output;

const EXP: &str = "upgraded";

/// What an old agent's sqlx recorded: version, description (the MIGRATIONS
/// array of src/sink/postgres/mod.rs) and file.
const OLD_MIGRATIONS: [(i64, &str, &str); 4] = [
    (1, "init", "0001_init.sql"),
    (2, "metrics", "0002_metrics.sql"),
    (3, "fields", "0003_fields.sql"),
    (4, "errors by run", "0004_errors_by_run.sql"),
];

const ALL_MIGRATION_FILES: [&str; 7] = [
    "0001_init.sql",
    "0002_metrics.sql",
    "0003_fields.sql",
    "0004_errors_by_run.sql",
    "0005_partitioned.sql",
    "0006_error_groups.sql",
    "0007_one_brin.sql",
];

/// sqlx 0.9's bookkeeping table, as its `ensure_migrations_table` makes it.
const SQLX_MIGRATIONS_TABLE: &str = "
CREATE TABLE IF NOT EXISTS _sqlx_migrations (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    installed_on TIMESTAMPTZ NOT NULL DEFAULT now(),
    success BOOLEAN NOT NULL,
    checksum BYTEA NOT NULL,
    execution_time BIGINT NOT NULL
);";

/// Every column of a log record, as one text per row (NULLs told apart):
/// equal digests mean equal rows.
const LOG_ROW: &str = "ROW(id, experiment_id, run_id, origin, seq, timestamp, level, logger, message, traceback, exception_type, exception_message, stream, source, fields)::text";

fn migration_path(file: &str) -> std::path::PathBuf {
    repo_root().join("migrations/postgres").join(file)
}

fn migration_sql(file: &str) -> String {
    let path = migration_path(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// SHA-384 of the file's bytes (what sqlx records), by coreutils, not by
/// the code under test.
fn sha384_hex(file: &str) -> String {
    let out = command("sha384sum")
        .arg(migration_path(file))
        .run_within("sha384sum");
    assert!(out.status.success(), "{}", stderr_text(&out));
    String::from_utf8(out.stdout).unwrap()[..96].to_string()
}

/// `text` as a dollar-quoted SQL literal.
fn quoted(text: &str) -> String {
    assert!(!text.contains("$pmon$"), "{text}");
    format!("$pmon${text}$pmon$")
}

fn with_db(agent: &Agent, url: &str, args: &[&str]) -> Output {
    agent
        .cmd(args)
        .env("PMON_DATABASE_URL", url)
        .run_within("sha384sum")
}

fn stdout_text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn lines(server: &PgServer, db: &str, sql: &str) -> Vec<String> {
    server.psql(db, sql).lines().map(String::from).collect()
}

/// Count, id range and a digest of every column of `table`'s rows that
/// `filter` keeps.
fn log_digest(server: &PgServer, db: &str, table: &str, filter: &str) -> String {
    server.psql(
        db,
        &format!(
            "SELECT count(*), min(id), max(id), md5(string_agg({LOG_ROW}, E'\\n' ORDER BY id)) FROM {table} WHERE {filter}"
        ),
    )
}

/// The database as an agent of migrations 0001–0004 left it: the schema
/// applied, and sqlx's record of having applied it.
fn old_schema(server: &PgServer, db: &str) {
    server.psql(db, SQLX_MIGRATIONS_TABLE);
    for (version, description, file) in OLD_MIGRATIONS {
        let sql = migration_sql(file);
        server.psql(db, &sql);
        server.psql(
            db,
            &format!(
                "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
                 VALUES ({version}, '{description}', TRUE, sha384(convert_to({}, 'UTF8')), 2500000)",
                quoted(&sql)
            ),
        );
    }
}

/// What the old agent stored of its run `run`: the run (succeeded), 300
/// records over stdout and stderr spread over two days (3 days ago and
/// yesterday, UTC), ten of them ERRORs with a traceback; two metric samples,
/// an event and a progress row.
fn old_records(server: &PgServer, db: &str, run: &str) {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    server.psql(
        db,
        &format!(
            "INSERT INTO pipeline_runs (run_id, experiment_id, ordinal, state, command, tags, host, agent_pid, agent_start, child_pid, started_at, ended_at, exit_code, signal)
             VALUES ('{run}', '{EXP}', 1, 'succeeded', '[\"python3\", \"train.py\"]', '{{\"lr\": \"0.1\"}}', '{}', 4242, 123456, 4243,
                     date_trunc('day', now(), 'UTC') - interval '3 days' + interval '10 hours',
                     date_trunc('day', now(), 'UTC') - interval '1 day' + interval '11 hours', 0, NULL)",
            host.trim()
        ),
    );
    // Each origin numbers its records from 1; ids come from the bigserial.
    server.psql(
        db,
        &format!(
            r#"INSERT INTO pipeline_logs (experiment_id, run_id, origin, seq, timestamp, level, logger, message, traceback, exception_type, exception_message, stream, source, fields)
            SELECT '{EXP}', '{run}', origin, row_number() OVER (PARTITION BY origin ORDER BY i),
                   day + interval '10 hours' + i * interval '7 seconds',
                   CASE WHEN i % 30 = 0 THEN 'ERROR' WHEN i % 3 = 0 THEN 'WARNING' ELSE 'INFO' END,
                   CASE WHEN i % 3 = 0 THEN 'train' END,
                   CASE WHEN i % 30 = 0 THEN 'old failure ' || i WHEN i % 3 = 0 THEN 'old warning ' || i ELSE 'old line ' || i END,
                   CASE WHEN i % 30 = 0 THEN E'Traceback (most recent call last):\n  File "train.py", line 40, in <module>\n    load(shard)\nValueError: bad shard ' || i END,
                   CASE WHEN i % 30 = 0 THEN 'ValueError' END,
                   CASE WHEN i % 30 = 0 THEN 'bad shard ' || i END,
                   CASE WHEN i % 3 = 0 THEN 'stderr' ELSE 'stdout' END,
                   CASE WHEN i % 3 = 0 THEN 'python-logging' ELSE 'plain' END,
                   CASE WHEN i % 30 = 0 THEN jsonb_build_object('shard', i) END
            FROM (SELECT i, CASE WHEN i % 3 = 0 THEN 'capture:stderr' ELSE 'capture:stdout' END AS origin,
                         date_trunc('day', now(), 'UTC') - CASE WHEN i <= 150 THEN interval '3 days' ELSE interval '1 day' END AS day
                  FROM generate_series(1, 300) AS i) s
            ORDER BY i"#
        ),
    );
    server.psql(
        db,
        &format!(
            "INSERT INTO pipeline_metrics (experiment_id, run_id, timestamp, metric_type, name, value, unit, seq, step) VALUES
             ('{EXP}', '{run}', date_trunc('day', now(), 'UTC') - interval '3 days' + interval '10 hours 30 minutes', 'user', 'loss', 0.5, NULL, 1, 100),
             ('{EXP}', '{run}', date_trunc('day', now(), 'UTC') - interval '1 day' + interval '10 hours 30 minutes', 'user', 'loss', 0.25, NULL, 2, 200)"
        ),
    );
    server.psql(
        db,
        &format!(
            "INSERT INTO pipeline_events (event_id, experiment_id, run_id, timestamp, event_type, details)
             VALUES ('01OLDEVENT0000000000000001', '{EXP}', '{run}', date_trunc('day', now(), 'UTC') - interval '3 days' + interval '10 hours', 'start', '{{\"pid\": 4243}}')"
        ),
    );
    server.psql(
        db,
        &format!(
            "INSERT INTO pipeline_progress (experiment_id, run_id, task, current, total, unit, rate, updated_at)
             VALUES ('{EXP}', '{run}', 'epochs', 3, 10, 'epoch', 0.5, date_trunc('day', now(), 'UTC') - interval '1 day' + interval '10 hours 59 minutes')"
        ),
    );
}

/// The rows of the tables other than pipeline_logs, for before/after.
fn other_rows(server: &PgServer, db: &str, metrics_table: &str) -> Vec<String> {
    let mut rows = lines(server, db, "SELECT * FROM pipeline_runs ORDER BY run_id");
    rows.extend(lines(
        server,
        db,
        &format!("SELECT experiment_id, run_id, timestamp, metric_type, name, value, unit, seq, step FROM {metrics_table} ORDER BY seq"),
    ));
    rows.extend(lines(
        server,
        db,
        "SELECT event_id, experiment_id, run_id, timestamp, event_type, details FROM pipeline_events ORDER BY event_id",
    ));
    rows.extend(lines(
        server,
        db,
        "SELECT * FROM pipeline_progress ORDER BY run_id, task",
    ));
    rows
}

fn messages(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| r["message"].as_str().unwrap().to_string())
        .collect()
}

fn json_lines(out: &Output) -> Vec<Value> {
    stdout_text(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// A program that prints to stdout and logs (with an exception) to stderr.
const NEW_PROGRAM: &str = r#"
import logging
logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(name)s - %(levelname)s - %(message)s")
log = logging.getLogger("train")
for i in range(5):
    print(f"new line {i}", flush=True)
log.info("new info after upgrade")
try:
    raise KeyError("missing shard")
except KeyError:
    log.exception("new failure after upgrade")
"#;

#[test]
fn an_old_schema_database_upgrades_in_place_with_nothing_lost() {
    let (server, db) = shared_database();
    let url = server.url(&db);
    let agent = Agent::new();

    // The old agent ran on this host with this data dir: the run registry is
    // local even when records go to PostgreSQL, so its run is run 1 there
    // too, and the new run will be run 2.
    let registered = agent.run(&["wrap", "-e", EXP, "--", "true"]);
    assert_eq!(
        registered.status.code(),
        Some(0),
        "{}",
        stderr_text(&registered)
    );
    let old_run: String = agent
        .sql()
        .query_row(
            "SELECT run_id FROM pipeline_runs WHERE experiment_id = ?1",
            [EXP],
            |r| r.get(0),
        )
        .unwrap();

    old_schema(server, &db);
    old_records(server, &db, &old_run);

    // What must survive the upgrade.
    let old_logs = log_digest(server, &db, "pipeline_logs", "true");
    assert!(old_logs.starts_with("300|1|300|"), "{old_logs}");
    let old_messages = lines(
        server,
        &db,
        "SELECT message FROM pipeline_logs ORDER BY timestamp, id",
    );
    let old_spans = lines(
        server,
        &db,
        "SELECT experiment_id, run_id, origin, min(seq), max(seq), count(*), min(timestamp), max(timestamp)
         FROM pipeline_logs GROUP BY experiment_id, run_id, origin ORDER BY origin",
    );
    assert_eq!(old_spans.len(), 2, "{old_spans:?}");
    let old_other = other_rows(server, &db, "pipeline_metrics");
    assert_eq!(old_other.len(), 1 + 2 + 1 + 1, "{old_other:?}");

    // The new agent's first connection (a query) upgrades the database, and
    // the query answers from the old records.
    let errors = with_db(&agent, &url, &["query", "errors", EXP, "--traceback"]);
    assert!(errors.status.success(), "{}", stderr_text(&errors));
    let text = stdout_text(&errors);
    assert_eq!(
        text.matches("Traceback (most recent call last):").count(),
        10,
        "{text}"
    );
    for i in (30..=300).step_by(30) {
        assert!(text.contains(&format!("old failure {i}")), "{text}");
        assert!(
            text.contains(&format!("ValueError: bad shard {i}")),
            "{text}"
        );
    }
    let errors = with_db(&agent, &url, &["query", "errors", EXP, "--format", "json"]);
    assert!(errors.status.success(), "{}", stderr_text(&errors));
    let newest_first: Vec<String> = (1..=10)
        .rev()
        .map(|k| format!("old failure {}", k * 30))
        .collect();
    assert_eq!(messages(&json_lines(&errors)), newest_first);

    // sqlx applied 0005 to 0007 only, and every recorded checksum is the file's.
    let applied = lines(
        server,
        &db,
        "SELECT version, description, success, encode(checksum, 'hex') FROM _sqlx_migrations ORDER BY version",
    );
    let expected: Vec<String> = [
        "init",
        "metrics",
        "fields",
        "errors by run",
        "partitioned",
        "error groups",
        "one brin",
    ]
    .iter()
    .zip(ALL_MIGRATION_FILES)
    .enumerate()
    .map(|(i, (description, file))| format!("{}|{description}|t|{}", i + 1, sha384_hex(file)))
    .collect();
    assert_eq!(applied, expected);

    // The old table is now the legacy partition, up to the end of its last
    // day, beside the default one; the agent made no day partition yet.
    assert_eq!(
        lines(
            server,
            &db,
            "SELECT c.relname, CASE WHEN c.relname = 'pipeline_logs_legacy'
                    THEN pg_get_expr(c.relpartbound, c.oid) = format('FOR VALUES FROM (MINVALUE) TO (%L)',
                         (SELECT date_trunc('day', max(timestamp), 'UTC') + interval '1 day' FROM pipeline_logs_legacy))
                    ELSE pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT' END
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'pipeline_logs'::regclass ORDER BY c.relname",
        ),
        ["pipeline_logs_default|t", "pipeline_logs_legacy|t"]
    );
    assert_eq!(
        lines(
            server,
            &db,
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'pipeline_metrics'::regclass ORDER BY c.relname",
        ),
        ["pipeline_metrics_default", "pipeline_metrics_legacy"]
    );
    // Old ids kept, their default, sequence and unique keys gone; the
    // metrics' id column dropped.
    assert_eq!(
        log_digest(server, &db, "pipeline_logs_legacy", "true"),
        old_logs
    );
    assert_eq!(
        server.psql(
            &db,
            "SELECT column_default IS NULL, is_nullable FROM information_schema.columns
             WHERE table_name = 'pipeline_logs_legacy' AND column_name = 'id'"
        ),
        "t|NO"
    );
    assert_eq!(
        server.psql(
            &db,
            "SELECT to_regclass('pipeline_logs_id_seq') IS NULL,
                    (SELECT count(*) FROM pg_constraint WHERE conrelid IN ('pipeline_logs'::regclass, 'pipeline_logs_legacy'::regclass) AND contype IN ('p', 'u')),
                    (SELECT count(*) FROM information_schema.columns WHERE table_name = 'pipeline_metrics_legacy' AND column_name = 'id')"
        ),
        "t|0|0"
    );
    // Keys led by experiment_id.
    assert_eq!(
        lines(
            server,
            &db,
            "SELECT conrelid::regclass::text, pg_get_constraintdef(oid) FROM pg_constraint
             WHERE conrelid IN ('pipeline_runs'::regclass, 'pipeline_events'::regclass, 'pipeline_progress'::regclass)
               AND contype IN ('p', 'u') ORDER BY 1, 2",
        ),
        [
            "pipeline_events|UNIQUE (experiment_id, event_id)",
            "pipeline_progress|PRIMARY KEY (experiment_id, run_id, task)",
            "pipeline_runs|PRIMARY KEY (experiment_id, run_id)",
        ]
    );
    // The legacy partition's indexes: the parent's (one BRIN over id and
    // time, the partial ones over errors) and its own old b-tree by
    // experiment and time, kept for the old rows it already covers.
    assert_eq!(
        lines(
            server,
            &db,
            "SELECT regexp_replace(indexdef, '^.* USING ', '') FROM pg_indexes
             WHERE tablename = 'pipeline_logs_legacy' ORDER BY 1",
        ),
        [
            "brin (id, \"timestamp\")",
            "btree (experiment_id, \"timestamp\")",
            "btree (experiment_id, \"timestamp\") WHERE (level = ANY (ARRAY['ERROR'::text, 'CRITICAL'::text]))",
            "btree (experiment_id, error_group) WHERE (error_group IS NOT NULL)",
            "btree (run_id) WHERE (level = ANY (ARRAY['ERROR'::text, 'CRITICAL'::text]))",
        ]
    );
    // The ledger holds each old (run, origin)'s seq range, and batch
    // numbers continue past the old ids.
    assert_eq!(
        lines(
            server,
            &db,
            "SELECT experiment_id, run_id, origin, first_seq, last_seq, rows, first_time, last_time
             FROM pipeline_batches ORDER BY origin",
        ),
        old_spans
    );
    assert_eq!(
        server.psql(
            &db,
            "SELECT (SELECT last_value FROM pipeline_log_batches) * 32768 > (SELECT max(id) FROM pipeline_logs_legacy)"
        ),
        "t"
    );

    // A new run into the upgraded database.
    let today_before = server.psql(&db, "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYYMMDD')");
    let wrap = with_db(
        &agent,
        &url,
        &["wrap", "-e", EXP, "--", "python3", "-c", NEW_PROGRAM],
    );
    assert_eq!(wrap.status.code(), Some(0), "{}", stderr_text(&wrap));
    let today_after = server.psql(&db, "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYYMMDD')");
    assert_eq!(agent.json_lines(&["spool", "status"])[0]["pending"], 0);
    let new_run = server.psql(
        &db,
        &format!("SELECT run_id FROM pipeline_runs WHERE experiment_id = '{EXP}' AND run_id <> '{old_run}'"),
    );
    assert_eq!(
        server.psql(
            &db,
            &format!(
                "SELECT ordinal, state, exit_code FROM pipeline_runs WHERE run_id = '{new_run}'"
            )
        ),
        "2|succeeded|0"
    );
    let mut new_messages = lines(
        server,
        &db,
        &format!("SELECT message FROM pipeline_logs WHERE run_id = '{new_run}'"),
    );
    new_messages.sort();
    assert_eq!(
        new_messages,
        [
            "new failure after upgrade",
            "new info after upgrade",
            "new line 0",
            "new line 1",
            "new line 2",
            "new line 3",
            "new line 4",
        ]
    );
    let new_error = server.psql(
        &db,
        &format!("SELECT level, logger, exception_type, traceback FROM pipeline_logs WHERE run_id = '{new_run}' AND level IN ('ERROR', 'CRITICAL')"),
    );
    assert!(
        new_error.starts_with("ERROR|train|KeyError|Traceback (most recent call last):")
            && new_error.contains("File \"<string>\", line 9, in <module>")
            && new_error.ends_with("KeyError: 'missing shard'"),
        "{new_error}"
    );

    // Nothing old lost or changed, nothing new in the legacy partition.
    assert_eq!(
        log_digest(server, &db, "pipeline_logs_legacy", "true"),
        old_logs
    );
    assert_eq!(
        log_digest(
            server,
            &db,
            "pipeline_logs",
            &format!("tableoid = 'pipeline_logs_legacy'::regclass OR run_id = '{old_run}'")
        ),
        old_logs
    );
    assert_eq!(
        server.psql(
            &db,
            "SELECT count(*), count(DISTINCT id) FROM pipeline_logs"
        ),
        format!("{}|{}", 300 + new_messages.len(), 300 + new_messages.len())
    );
    // New ids come after every old one.
    assert_eq!(
        server.psql(
            &db,
            &format!("SELECT count(*) FROM pipeline_logs WHERE run_id = '{new_run}' AND id <= (SELECT max(id) FROM pipeline_logs_legacy)")
        ),
        "0"
    );
    // New rows are in their (today's) day partition.
    assert_eq!(
        server.psql(
            &db,
            &format!("SELECT count(*) FROM pipeline_logs WHERE run_id = '{new_run}'
                      AND tableoid::regclass::text <> 'pipeline_logs_p' || to_char(timestamp AT TIME ZONE 'UTC', 'YYYYMMDD')")
        ),
        "0"
    );
    let new_partitions = lines(
        server,
        &db,
        &format!("SELECT DISTINCT tableoid::regclass::text FROM pipeline_logs WHERE run_id = '{new_run}'"),
    );
    for partition in &new_partitions {
        assert!(
            [&today_before, &today_after]
                .iter()
                .any(|day| *partition == format!("pipeline_logs_p{day}")),
            "{new_partitions:?} are not today's ({today_before})"
        );
    }
    assert!(
        lines(
            server,
            &db,
            "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = 'pipeline_logs'::regclass",
        )
        .contains(&"pipeline_logs_legacy".to_string()),
        "the legacy partition is still attached"
    );
    // The seeded ledger rows are untouched; the new run's rows are entered
    // under later batch numbers.
    assert_eq!(
        lines(
            server,
            &db,
            &format!("SELECT experiment_id, run_id, origin, first_seq, last_seq, rows, first_time, last_time
                      FROM pipeline_batches WHERE run_id = '{old_run}' ORDER BY origin"),
        ),
        old_spans
    );
    assert_eq!(
        lines(
            server,
            &db,
            &format!("SELECT b.origin, b.stored, l.rows, b.first_batch > (SELECT max(batch) FROM pipeline_batches WHERE run_id = '{old_run}')
                      FROM (SELECT origin, sum(rows) AS stored, min(batch) AS first_batch FROM pipeline_batches WHERE run_id = '{new_run}' GROUP BY origin) b
                      JOIN (SELECT origin, count(*) AS rows FROM pipeline_logs WHERE run_id = '{new_run}' GROUP BY origin) l USING (origin)
                      ORDER BY origin"),
        ),
        ["capture:stderr|2|2|t", "capture:stdout|5|5|t"]
    );
    // The old run, metrics, event and progress are all there.
    let mut expected_other = old_other.clone();
    let now_other: Vec<String> = other_rows(server, &db, "pipeline_metrics_legacy");
    assert!(
        old_other.iter().all(|row| now_other.contains(row)),
        "old rows lost: {old_other:#?}\nnow: {now_other:#?}"
    );
    expected_other.retain(|row| row.contains("|loss|"));
    assert_eq!(
        lines(
            server,
            &db,
            &format!("SELECT experiment_id, run_id, timestamp, metric_type, name, value, unit, seq, step FROM pipeline_metrics WHERE run_id = '{old_run}' ORDER BY seq"),
        ),
        expected_other
    );
    assert_eq!(
        server.psql(
            &db,
            &format!("SELECT count(*) FROM pipeline_metrics WHERE tableoid = 'pipeline_metrics_legacy'::regclass OR run_id = '{old_run}'")
        ),
        "2"
    );
    // The spec's SQL runs on the upgraded schema.
    let summary = lines(
        server,
        &db,
        &format!("SELECT * FROM pipeline_progress_summary WHERE experiment_id = '{EXP}'"),
    );
    assert_eq!(summary.len(), 1, "{summary:?}");
    assert!(
        summary[0].starts_with(&format!("{EXP}|{old_run}|1|epochs|3|10|30.0|epoch|0.5|")),
        "{summary:?}"
    );

    // Old and new records are read together, old first.
    let all = with_db(
        &agent,
        &url,
        &["query", "logs", EXP, "--run", "all", "--format", "json"],
    );
    assert!(all.status.success(), "{}", stderr_text(&all));
    let all = messages(&json_lines(&all));
    assert_eq!(all.len(), 300 + new_messages.len());
    assert_eq!(all[..300], old_messages[..]);
    let mut newest = all[300..].to_vec();
    newest.sort();
    assert_eq!(newest, new_messages);
    let text = with_db(&agent, &url, &["query", "logs", EXP, "--run", "all"]);
    assert!(text.status.success(), "{}", stderr_text(&text));
    let text = stdout_text(&text);
    let headers: Vec<&str> = text.lines().filter(|l| l.starts_with("-- run ")).collect();
    assert_eq!(
        headers,
        [
            format!("-- run 1 ({old_run}) --"),
            format!("-- run 2 ({new_run}) --")
        ]
    );
    for message in [
        "old line 1",
        "old warning 3",
        "old failure 300",
        "new line 4",
        "new failure after upgrade",
    ] {
        assert!(text.contains(message), "{message} missing from {text}");
    }
    // The old run is still picked by its number, with its last error.
    let status = with_db(
        &agent,
        &url,
        &["query", "status", EXP, "--run", "1", "--format", "json"],
    );
    assert!(status.status.success(), "{}", stderr_text(&status));
    let status = &json_lines(&status)[0];
    assert_eq!(status["state"], "succeeded", "{status}");
    assert_eq!(
        status["last_error"]["message"], "old failure 300",
        "{status}"
    );
    // Its metric samples are read from the legacy metrics partition.
    let metrics = with_db(
        &agent,
        &url,
        &["query", "metrics", EXP, "--run", "1", "--format", "json"],
    );
    assert!(metrics.status.success(), "{}", stderr_text(&metrics));
    let samples: Vec<(String, f64, i64)> = json_lines(&metrics)
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["value"].as_f64().unwrap(),
                s["step"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        samples,
        [
            ("loss".to_string(), 0.5, 100),
            ("loss".to_string(), 0.25, 200)
        ]
    );
    // The experiment's latest run is the new one, with its one error.
    let list = with_db(&agent, &url, &["query", "list", "--format", "json"]);
    assert!(list.status.success(), "{}", stderr_text(&list));
    let list = json_lines(&list);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["experiment_id"], EXP);
    assert_eq!(list[0]["run"], 2);
    assert_eq!(list[0]["error_count"], 1);
}
