use super::super::filter::PageAfter;
use super::super::output::local_time;
use super::super::rows::LOG_COLUMNS;
use super::super::sql::{Dialect, SqlValue};
use super::follow::print_new_records;
use super::*;
use crate::query::tests::{insert_log, insert_run, temp_store, TestLog};
use rusqlite::{params_from_iter, Connection};

fn experiment(conn: &Connection) -> Experiment {
    Experiment::load(&mut QueryDb::Sqlite(conn), "x").unwrap()
}

fn options() -> LogsOptions {
    LogsOptions {
        level: None,
        search: None,
        regex: None,
        since: None,
        limit: None,
        follow: false,
        follow_later_runs: false,
        traceback: false,
        format: Format::Json,
    }
}

fn messages(output: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(output)
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            value["message"].as_str().unwrap().to_string()
        })
        .collect()
}

fn run_logs(
    conn: &Connection,
    exp: &Experiment,
    choice: RunChoice,
    options: &LogsOptions,
) -> Vec<u8> {
    let scope = exp.pick(&choice).unwrap();
    let mut out = Vec::new();
    write_logs(
        &mut QueryDb::Sqlite(conn),
        exp,
        scope,
        options,
        &mut out,
        &|| true,
    )
    .unwrap();
    out
}

/// Run 1 has one line; run 2 has four, inserted out of time order.
fn two_runs() -> (tempfile::TempDir, pmon_store::SqliteStore) {
    let (dir, store) = temp_store();
    let conn = store.conn();
    insert_run(conn, "x", 1, "R1", "failed");
    insert_run(conn, "x", 2, "R2", "running");
    insert_log(conn, TestLog::new("R1", "10:00:00", "INFO", "old run"));
    insert_log(conn, TestLog::new("R2", "10:00:02", "WARNING", "third"));
    insert_log(conn, TestLog::new("R2", "10:00:01", "DEBUG", "second"));
    insert_log(conn, TestLog::new("R2", "10:00:00", "INFO", "first"));
    insert_log(
        conn,
        TestLog {
            traceback: Some(
                "Traceback (most recent call last):\n  File \"x.py\"\nValueError: bad shard\n",
            ),
            exception_type: Some("ValueError"),
            exception_message: Some("bad shard"),
            logger: Some("pipeline.loader"),
            ..TestLog::new("R2", "10:00:03", "ERROR", "failed to load shard 3")
        },
    );
    (dir, store)
}

#[test]
fn logs_are_oldest_first_for_the_latest_run() {
    let (_dir, store) = two_runs();
    let exp = experiment(store.conn());
    let out = run_logs(store.conn(), &exp, RunChoice::Latest, &options());
    assert_eq!(
        messages(&out),
        ["first", "second", "third", "failed to load shard 3"]
    );
}

#[test]
fn json_records_carry_exactly_the_spec_fields() {
    let (_dir, store) = two_runs();
    let exp = experiment(store.conn());
    let out = run_logs(store.conn(), &exp, RunChoice::Latest, &options());
    let last = String::from_utf8(out)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_string();
    let value: serde_json::Value = serde_json::from_str(&last).unwrap();
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
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
            "traceback",
        ]
    );
    assert_eq!(value["timestamp"], "2026-11-27T10:00:03.000000Z");
    assert!(value["traceback"]
        .as_str()
        .unwrap()
        .contains("ValueError: bad shard"));
}

#[test]
fn level_search_and_regex_filter() {
    let (_dir, store) = two_runs();
    let exp = experiment(store.conn());
    let warn_up = LogsOptions {
        level: Some(Level::Warning),
        ..options()
    };
    assert_eq!(
        messages(&run_logs(store.conn(), &exp, RunChoice::Latest, &warn_up)),
        ["third", "failed to load shard 3"]
    );
    let in_traceback = LogsOptions {
        search: Some("bad shard".into()),
        ..options()
    };
    assert_eq!(
        messages(&run_logs(
            store.conn(),
            &exp,
            RunChoice::Latest,
            &in_traceback
        )),
        ["failed to load shard 3"]
    );
    let case_sensitive = LogsOptions {
        search: Some("FIRST".into()),
        ..options()
    };
    assert!(messages(&run_logs(
        store.conn(),
        &exp,
        RunChoice::Latest,
        &case_sensitive
    ))
    .is_empty());
    let regex = LogsOptions {
        regex: Some(Regex::new("^(fir|sec)").unwrap()),
        ..options()
    };
    assert_eq!(
        messages(&run_logs(store.conn(), &exp, RunChoice::Latest, &regex)),
        ["first", "second"]
    );
}

#[test]
fn limit_keeps_the_newest_but_prints_oldest_first() {
    let (_dir, store) = two_runs();
    let exp = experiment(store.conn());
    let limited = LogsOptions {
        limit: Some(2),
        ..options()
    };
    assert_eq!(
        messages(&run_logs(store.conn(), &exp, RunChoice::Latest, &limited)),
        ["third", "failed to load shard 3"]
    );
    let regex_limited = LogsOptions {
        limit: Some(1),
        regex: Some(Regex::new("ir").unwrap()),
        ..options()
    };
    assert_eq!(
        messages(&run_logs(
            store.conn(),
            &exp,
            RunChoice::Latest,
            &regex_limited
        )),
        ["third"]
    );
}

#[test]
fn since_and_run_selection() {
    let (_dir, store) = two_runs();
    let exp = experiment(store.conn());
    let recent = LogsOptions {
        since: Some("2026-11-27T10:00:02.000000Z".into()),
        ..options()
    };
    assert_eq!(
        messages(&run_logs(store.conn(), &exp, RunChoice::Latest, &recent)),
        ["third", "failed to load shard 3"]
    );
    assert_eq!(
        messages(&run_logs(
            store.conn(),
            &exp,
            RunChoice::Ordinal(1),
            &options()
        )),
        ["old run"]
    );
    assert_eq!(
        messages(&run_logs(store.conn(), &exp, RunChoice::All, &options())).len(),
        5
    );
}

#[test]
fn since_accepts_durations_and_times() {
    let now = parse_ts("2026-11-27T12:00:00Z").unwrap();
    assert_eq!(
        parse_since("1h", now).unwrap().unwrap(),
        "2026-11-27T11:00:00.000000Z"
    );
    assert_eq!(
        parse_since("90", now).unwrap().unwrap(),
        "2026-11-27T11:58:30.000000Z"
    );
    assert_eq!(
        parse_since("2026-11-27T10:00:00+01:00", now)
            .unwrap()
            .unwrap(),
        "2026-11-27T09:00:00.000000Z"
    );
    let err = parse_since("yesterday", now).unwrap_err().to_string();
    assert!(
        err.contains("'yesterday'") && err.contains("RFC 3339"),
        "{err}"
    );
}

#[test]
fn an_invalid_regex_is_named_in_the_error() {
    let err = compile_regex("(unclosed").unwrap_err().to_string();
    assert!(err.contains("'(unclosed'"), "{err}");
    assert!(err.contains("(unclosed group)"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn text_lines_escape_and_summarise_tracebacks() {
    let (_dir, store) = two_runs();
    let exp = experiment(store.conn());
    let text = LogsOptions {
        format: Format::Text,
        ..options()
    };
    let out = String::from_utf8(run_logs(store.conn(), &exp, RunChoice::Latest, &text)).unwrap();
    let last = out.lines().last().unwrap();
    let time = local_time("2026-11-27T10:00:03.000000Z", true);
    assert_eq!(
        last,
        format!("{time} ERROR    pipeline.loader: failed to load shard 3 [ValueError: bad shard]")
    );
    assert!(
        out.lines().next().unwrap().ends_with(" INFO     first"),
        "{out}"
    );
}

#[test]
fn traceback_lines_are_indented_and_escaped() {
    let record = LogRow {
        id: 1,
        experiment_id: "x".into(),
        run_id: "R".into(),
        timestamp: "2026-11-27T10:00:00.123000Z".into(),
        level: "ERROR".into(),
        logger: None,
        message: "boom\x1b[31m\r\x07two\nlines".into(),
        traceback: Some("Traceback:\n  File \"a\x1b.py\"\nKeyError: 'k'\n".into()),
        exception_type: Some("KeyError".into()),
        exception_message: Some("'k'".into()),
        stream: "stderr".into(),
        source: "stderr".into(),
        fields: None,
    };
    let text = text_record(&record, true);
    let time = local_time(&record.timestamp, true);
    assert_eq!(
        text,
        format!("{time} ERROR    boom\\x1b[31m\\r\\x07two\\nlines\n    Traceback:\n      File \"a\\x1b.py\"\n    KeyError: 'k'\n")
    );
    assert!(!text.contains('\x1b') && !text.contains('\r') && !text.contains('\x07'));
}

#[test]
fn all_runs_text_marks_where_each_run_begins() {
    let (_dir, store) = two_runs();
    let exp = experiment(store.conn());
    let text = LogsOptions {
        format: Format::Text,
        ..options()
    };
    let out = String::from_utf8(run_logs(store.conn(), &exp, RunChoice::All, &text)).unwrap();
    let headers: Vec<&str> = out.lines().filter(|l| l.starts_with("-- run")).collect();
    assert_eq!(headers, ["-- run 1 (R1) --", "-- run 2 (R2) --"]);
}

#[test]
fn follow_polls_walk_only_the_new_rows() {
    let (_dir, store) = temp_store();
    let filter = LogFilter {
        experiment: "x".into(),
        run_id: Some("R".into()),
        ..LogFilter::default()
    };
    let (sql, values) = filter.sql(IdBound::After(7), Order::Arrival);
    let plan: String = store
        .conn()
        .query_row(
            &format!("EXPLAIN QUERY PLAN {sql}"),
            params_from_iter(values),
            |row| row.get(3),
        )
        .unwrap();
    assert!(plan.contains("INTEGER PRIMARY KEY (rowid>?)"), "{plan}");
}

#[test]
fn postgresql_statements_number_their_parameters_and_resume_after_a_page() {
    let filter = LogFilter {
        experiment: "x".into(),
        run_id: Some("R".into()),
        levels: Some(levels_from(Level::Error)),
        search: Some("needle".into()),
        since: Some("2026-11-27T10:00:00.000000Z".into()),
        ..LogFilter::default()
    };
    let after = PageAfter {
        timestamp: parse_ts("2026-11-27T10:00:05Z").unwrap(),
        id: 9,
    };
    let (sql, values) = filter.render(
        Dialect::Postgres,
        IdBound::AtMost(100),
        Order::NewestFirst,
        Some(after),
        Some(50),
    );
    assert_eq!(
        sql,
        format!("SELECT {LOG_COLUMNS} FROM pipeline_logs WHERE experiment_id = $1 AND run_id = $2 AND level IN ('ERROR', 'CRITICAL') AND (strpos(message, $3) > 0 OR strpos(coalesce(traceback, ''), $4) > 0) AND timestamp >= $5::timestamptz AND id <= $6 AND (timestamp, id) < ($7, $8) ORDER BY timestamp DESC, id DESC LIMIT 50")
    );
    assert_eq!(values.len(), 8);
    assert_eq!(values[6], SqlValue::Time(after.timestamp));
    assert_eq!(values[7], SqlValue::Int(9));
    let (follow_sql, _) = filter.render(
        Dialect::Postgres,
        IdBound::After(7),
        Order::Arrival,
        None,
        Some(50),
    );
    assert!(
        follow_sql.contains(" AND id > $6 ORDER BY id LIMIT 50"),
        "{follow_sql}"
    );
}

#[test]
fn follow_stops_quietly_once_the_reader_is_gone() {
    let (_dir, store) = two_runs();
    let exp = experiment(store.conn());
    let following = LogsOptions {
        follow: true,
        limit: Some(1),
        ..options()
    };
    let scope = exp.pick(&RunChoice::Latest).unwrap();
    let mut out = Vec::new();
    let printed = write_logs(
        &mut QueryDb::Sqlite(store.conn()),
        &exp,
        scope,
        &following,
        &mut out,
        &|| true,
    )
    .unwrap();
    assert_eq!(printed, 1);
    assert_eq!(messages(&out), ["failed to load shard 3"]);
}

#[test]
fn follow_prints_only_new_matching_rows() {
    let (_dir, store) = two_runs();
    let conn = store.conn();
    let exp = experiment(conn);
    let scope = exp.pick(&RunChoice::Latest).unwrap();
    let filter = LogFilter {
        levels: Some(levels_from(Level::Info)),
        ..exp.log_filter(scope)
    };
    let mut printer = RecordPrinter::new(Format::Json, false, &exp, scope);
    let db = &mut QueryDb::Sqlite(conn);
    let start = db.max_log_id().unwrap();
    let mut cursor = FollowCursor::new(start, db.follow_lookback());
    insert_log(conn, TestLog::new("R2", "10:00:05", "DEBUG", "too quiet"));
    insert_log(conn, TestLog::new("R1", "10:00:06", "INFO", "other run"));
    insert_log(conn, TestLog::new("R2", "09:00:00", "INFO", "late arrival"));
    let mut out = Vec::new();
    print_new_records(db, &filter, None, &mut cursor, &mut printer, &mut out).unwrap();
    assert_eq!(messages(&out), ["late arrival"]);
    assert_eq!(cursor.highest(), start + 3);
    assert_eq!(cursor.floor(), start + 3);
    let mut again = Vec::new();
    print_new_records(db, &filter, None, &mut cursor, &mut printer, &mut again).unwrap();
    assert!(again.is_empty());
}

/// PostgreSQL may show a row after one with a higher id; with a look-back
/// the follow still prints it, once, and prints nothing twice.
#[test]
fn follow_with_a_look_back_prints_late_lower_ids_once() {
    let (_dir, store) = two_runs();
    let conn = store.conn();
    let exp = experiment(conn);
    let scope = exp.pick(&RunChoice::Latest).unwrap();
    let filter = exp.log_filter(scope);
    let mut printer = RecordPrinter::new(Format::Json, false, &exp, scope);
    let db = &mut QueryDb::Sqlite(conn);
    let start = db.max_log_id().unwrap();
    let mut cursor = FollowCursor::new(start, 2);
    let mut out = Vec::new();
    insert_log(conn, TestLog::new("R2", "10:00:05", "INFO", "a"));
    insert_log(conn, TestLog::new("R2", "10:00:06", "INFO", "c"));
    // "b" got an id before "c" but its transaction committed later.
    conn.execute(
        "UPDATE pipeline_logs SET id = id + 1 WHERE id = ?1",
        [start + 2],
    )
    .unwrap();
    print_new_records(db, &filter, None, &mut cursor, &mut printer, &mut out).unwrap();
    insert_log(conn, TestLog::new("R2", "10:00:07", "INFO", "b"));
    conn.execute(
        "UPDATE pipeline_logs SET id = ?1 WHERE message = 'b'",
        [start + 2],
    )
    .unwrap();
    print_new_records(db, &filter, None, &mut cursor, &mut printer, &mut out).unwrap();
    print_new_records(db, &filter, None, &mut cursor, &mut printer, &mut out).unwrap();
    print_new_records(db, &filter, None, &mut cursor, &mut printer, &mut out).unwrap();
    assert_eq!(messages(&out), ["a", "c", "b"]);
    assert_eq!(cursor.floor(), start + 3);
    assert!(cursor.seen.is_empty());
}

#[test]
fn errors_are_newest_first_with_a_limit() {
    let (_dir, store) = two_runs();
    let conn = store.conn();
    insert_log(
        conn,
        TestLog::new("R2", "10:00:04", "CRITICAL", "disk gone"),
    );
    let exp = experiment(conn);
    let args = |limit| ErrorsArgs {
        experiment: Some("x".into()),
        traceback: false,
        group: false,
        new: false,
        limit,
        run: None,
        format: crate::cli::FormatArg {
            format: Format::Json,
        },
    };
    let scope = exp.pick(&RunChoice::Latest).unwrap();
    let mut out = Vec::new();
    let db = &mut QueryDb::Sqlite(conn);
    write_errors(db, &exp, scope, &args(None), &mut out).unwrap();
    assert_eq!(messages(&out), ["disk gone", "failed to load shard 3"]);
    let mut out = Vec::new();
    write_errors(db, &exp, scope, &args(Some(1)), &mut out).unwrap();
    assert_eq!(messages(&out), ["disk gone"]);
}
