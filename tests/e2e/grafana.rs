//! The Grafana dashboard (`contrib/grafana/pmon-agent.json`) against a real
//! PostgreSQL filled by a real wrapped program: every panel's SQL, taken from
//! the JSON itself so the two cannot drift, is expanded as Grafana expands it
//! (template variables, then the PostgreSQL data source's macros), runs, and
//! returns the columns its panel shows and at least one row; with another
//! experiment, another run or another time range it returns none, so every
//! panel really follows the dashboard's selection.

use crate::pg_server::{shared_database, PgServer};
use crate::util::*;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    /// `format: time_series`: a `time` column, a `metric` column naming the
    /// series, numeric value columns.
    TimeSeries,
    /// `format: table`: these columns in this order.
    Table,
}

/// What a panel is expected to return, keyed by its title.
struct Expected {
    title: &'static str,
    panel_type: &'static str,
    kind: Kind,
    /// Every column, in order (time series: `time`, `metric`, values).
    columns: &'static [&'static str],
    /// Text some row must hold, with every run of the experiment selected.
    shows: &'static [&'static str],
    /// Limited by the dashboard's time range (`$__timeFilter`, `$__timeFrom()`…).
    time_filtered: bool,
}

const PANELS: &[Expected] = &[
    Expected {
        title: "Run states",
        panel_type: "table",
        kind: Kind::Table,
        columns: &[
            "run",
            "state",
            "exit_code",
            "signal",
            "started_at",
            "ended_at",
            "duration",
            "host",
            "command",
            "run_id",
        ],
        shows: &["succeeded", "failed", "demo_pipeline.py"],
        time_filtered: true,
    },
    Expected {
        title: "Runs by state",
        panel_type: "stat",
        kind: Kind::Table,
        columns: &["state", "runs"],
        shows: &["failed,1", "succeeded,1"],
        time_filtered: true,
    },
    Expected {
        title: "Errors over time by exception type",
        panel_type: "timeseries",
        kind: Kind::TimeSeries,
        columns: &["time", "metric", "errors"],
        shows: &["PipelineError", "json.decoder.JSONDecodeError"],
        time_filtered: true,
    },
    Expected {
        title: "Errors over time by error group",
        panel_type: "timeseries",
        kind: Kind::TimeSeries,
        columns: &["time", "metric", "errors"],
        shows: &["PipelineError ", "json.decoder.JSONDecodeError "],
        time_filtered: true,
    },
    Expected {
        title: "Error groups",
        panel_type: "table",
        kind: Kind::Table,
        columns: &[
            "error_group",
            "exception_type",
            "errors",
            "runs",
            "first_seen",
            "last_seen",
            "last_message",
        ],
        shows: &["PipelineError", "stage 'transform' failed"],
        time_filtered: true,
    },
    Expected {
        title: "Latest errors with tracebacks",
        panel_type: "table",
        kind: Kind::Table,
        columns: &[
            "time",
            "run",
            "level",
            "logger",
            "exception_type",
            "exception_message",
            "message",
            "traceback",
            "error_group",
        ],
        shows: &[
            "Traceback (most recent call last):",
            "The above exception was the direct cause of the following exception:",
            "skipping shard 3: corrupt JSON",
            "pipeline.loader",
        ],
        time_filtered: true,
    },
    Expected {
        title: "Progress",
        panel_type: "table",
        kind: Kind::Table,
        columns: &[
            "run",
            "task",
            "current",
            "total",
            "percent",
            "unit",
            "rate",
            "eta",
            "updated_at",
        ],
        shows: &["loading shards", "transform", "100.0"],
        time_filtered: false,
    },
    Expected {
        title: "Memory per run (RSS)",
        panel_type: "timeseries",
        kind: Kind::TimeSeries,
        columns: &["time", "metric", "rss_bytes"],
        shows: &["run 2"],
        time_filtered: true,
    },
    Expected {
        title: "CPU per run",
        panel_type: "timeseries",
        kind: Kind::TimeSeries,
        columns: &["time", "metric", "cpu_percent"],
        shows: &["run 2"],
        time_filtered: true,
    },
    Expected {
        title: "Log volume by level",
        panel_type: "timeseries",
        kind: Kind::TimeSeries,
        columns: &["time", "metric", "records"],
        shows: &["INFO", "WARNING", "ERROR"],
        time_filtered: true,
    },
    Expected {
        title: "Latest log lines",
        panel_type: "table",
        kind: Kind::Table,
        columns: &[
            "time",
            "run",
            "level",
            "logger",
            "message",
            "exception_type",
            "stream",
        ],
        shows: &[
            "pipeline starting: 6 shards",
            "warm-up done",
            "loaded 8 rows",
        ],
        time_filtered: true,
    },
];

/// The values the dashboard's selection gives Grafana's interpolation.
#[derive(Clone)]
struct Selection {
    experiment: String,
    /// The run variable's selected values (multi-value, with "All").
    runs: Vec<String>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    /// `$__interval`, as Grafana writes it, and in seconds.
    interval: &'static str,
}

#[test]
fn every_dashboard_panel_sql_runs_on_real_data_and_follows_the_selection() {
    let (server, db) = shared_database();
    let url = server.url(&db);
    let agent = Agent::new().with_config("monitoring:\n  metrics_interval: 0.1\n");
    let exp = "grafana_demo";
    // Run 1 succeeds quickly; run 2 is the README demo: tqdm bars, logging at
    // several levels, a logger.exception, and a chained uncaught exception.
    let warm_up = "import logging\nlogging.basicConfig(level=logging.DEBUG)\nlog = logging.getLogger('warmup')\nlog.debug('warm-up starting')\nlog.info('warm-up done')\n";
    let out = agent
        .cmd(&["wrap", "-e", exp, "--", "python3", "-c", warm_up])
        .env("PMON_DATABASE_URL", &url)
        .run_within("pmon-agent wrap -e");
    assert_eq!(out.status.code(), Some(0), "{}", stderr_text(&out));
    let demo = fixture_program("demo_pipeline");
    let out = agent
        .cmd(&["wrap", "-e", exp, "--", "python3", demo.to_str().unwrap()])
        .env("PMON_DATABASE_URL", &url)
        .run_within("pmon-agent wrap -e");
    assert_eq!(out.status.code(), Some(1), "{}", stderr_text(&out));
    let runs: Vec<String> = server
        .psql(
            &db,
            &format!(
                "SELECT run_id FROM pipeline_runs WHERE experiment_id = '{exp}' ORDER BY ordinal DESC"
            ),
        )
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(runs.len(), 2, "{runs:?}");
    let demo_run = runs[0].clone();

    let dashboard = read_json(&repo_root().join("contrib/grafana/pmon-agent.json"));
    check_data_source(&dashboard);
    let now = Utc::now();
    let all = Selection {
        experiment: exp.to_string(),
        runs: Vec::new(),
        from: now - chrono::Duration::hours(1),
        to: now + chrono::Duration::minutes(1),
        interval: "1s",
    };

    // The template variables: the experiment list holds the experiment, the
    // run list every run of it, newest first, with its ordinal as text.
    let experiments = run_sql(
        server,
        &db,
        &expand(&variable_query(&dashboard, "experiment"), &all),
    );
    assert_eq!(experiments.columns, ["experiment_id"]);
    assert!(
        experiments.rows.iter().any(|r| r[0] == exp),
        "{experiments:?}"
    );
    let run_var = variable(&dashboard, "run");
    assert_eq!(run_var["multi"], true, "the run variable is multi-value");
    assert_eq!(run_var["includeAll"], true, "the run variable offers All");
    let run_options = run_sql(
        server,
        &db,
        &expand(&variable_query(&dashboard, "run"), &all),
    );
    let value = column(&run_options, "__value");
    let text = column(&run_options, "__text");
    let values: Vec<String> = run_options.rows.iter().map(|r| r[value].clone()).collect();
    assert_eq!(values, runs, "the run variable's values are the run ids");
    assert_eq!(run_options.rows[0][text], "#2 failed");
    assert_eq!(run_options.rows[1][text], "#1 succeeded");

    // "All": Grafana puts every option's value in the list.
    let all = Selection {
        runs: values.clone(),
        ..all
    };
    let panels = dashboard_panels(&dashboard);
    let mut seen = BTreeSet::new();
    for panel in &panels {
        let title = panel["title"].as_str().unwrap_or_default();
        let expected = PANELS.iter().find(|e| e.title == title).unwrap_or_else(|| {
            panic!("the test does not know the panel {title:?}: add it to PANELS")
        });
        assert!(seen.insert(title), "two panels are titled {title:?}");
        assert_eq!(panel["type"], expected.panel_type, "panel {title:?}");
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "panel {title:?} reads the dashboard's data source"
        );
        let targets = panel["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        assert_eq!(targets.len(), 1, "panel {title:?} has one query");
        let target = &targets[0];
        let raw = target["rawSql"]
            .as_str()
            .unwrap_or_else(|| panic!("panel {title:?} has no rawSql"));
        assert_eq!(target["rawQuery"], true, "panel {title:?}");
        assert_eq!(target["editorMode"], "code", "panel {title:?}");
        assert_eq!(
            target["format"],
            match expected.kind {
                Kind::TimeSeries => "time_series",
                Kind::Table => "table",
            },
            "panel {title:?}"
        );
        assert_eq!(
            target["datasource"]["uid"], "${datasource}",
            "panel {title:?}"
        );
        check_variable_use(title, raw);
        let time_macros = raw.contains("$__timeFilter(") || raw.contains("$__timeFrom()");
        assert_eq!(
            time_macros, expected.time_filtered,
            "panel {title:?}: limited by the time range or not, as PANELS says"
        );

        // Every run of the experiment selected.
        let sql = expand(raw, &all);
        let result = run_sql(server, &db, &sql);
        assert_eq!(result.columns, expected.columns, "panel {title:?}:\n{sql}");
        assert!(
            !result.rows.is_empty(),
            "panel {title:?} returned no row:\n{sql}"
        );
        let types = column_types(server, &db, &sql);
        check_types(title, expected.kind, &result, &types);
        for text in expected.shows {
            assert!(
                result.raw.contains(text),
                "panel {title:?} does not show {text:?}:\n{sql}\n{}",
                result.raw
            );
        }

        // Only the failed demo run selected: every panel has something to show.
        let one_run = Selection {
            runs: vec![demo_run.clone()],
            ..all.clone()
        };
        let result = run_sql(server, &db, &expand(raw, &one_run));
        assert!(
            !result.rows.is_empty(),
            "panel {title:?}, the demo run alone"
        );
        if title == "Run states" {
            assert_eq!(result.rows.len(), 1, "{result:?}");
        }

        // Another experiment, another run, another time: nothing.
        let others = [
            (
                "another experiment",
                Selection {
                    experiment: "no_such_experiment".into(),
                    ..one_run.clone()
                },
            ),
            (
                "another run",
                Selection {
                    runs: vec!["01NOSUCHRUN0000000000000000".into()],
                    ..all.clone()
                },
            ),
        ];
        for (what, selection) in others {
            let result = run_sql(server, &db, &expand(raw, &selection));
            assert!(
                result.rows.is_empty(),
                "panel {title:?} with {what}: {result:?}"
            );
        }
        let long_ago = Selection {
            from: "2001-01-01T00:00:00Z".parse().unwrap(),
            to: "2001-01-01T06:00:00Z".parse().unwrap(),
            interval: "20s",
            ..all.clone()
        };
        let result = run_sql(server, &db, &expand(raw, &long_ago));
        assert_eq!(
            result.rows.is_empty(),
            expected.time_filtered,
            "panel {title:?} in 2001: {result:?}"
        );
    }
    let missing: Vec<&str> = PANELS
        .iter()
        .map(|e| e.title)
        .filter(|t| !seen.contains(t))
        .collect();
    assert!(
        missing.is_empty(),
        "panels gone from the dashboard: {missing:?}"
    );
}

/// The data source: a variable whose default is the provisioned one.
fn check_data_source(dashboard: &Value) {
    let ds = variable(dashboard, "datasource");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "grafana-postgresql-datasource");
    assert_eq!(ds["current"]["value"], "pmon-postgres");
    let provisioned = std::fs::read_to_string(
        repo_root().join("contrib/grafana/provisioning/datasources/pmon.yml"),
    )
    .unwrap();
    let provisioned: Value = serde_saphyr::from_str(&provisioned).unwrap();
    let source = &provisioned["datasources"][0];
    assert_eq!(source["uid"], "pmon-postgres", "{provisioned:#}");
    assert_eq!(source["type"], "grafana-postgresql-datasource");
    let dashboards = std::fs::read_to_string(
        repo_root().join("contrib/grafana/provisioning/dashboards/pmon.yml"),
    )
    .unwrap();
    let dashboards: Value = serde_saphyr::from_str(&dashboards).unwrap();
    assert_eq!(dashboards["providers"][0]["type"], "file", "{dashboards:#}");
    for name in ["experiment", "run"] {
        assert_eq!(
            variable(dashboard, name)["datasource"]["uid"],
            "${datasource}"
        );
    }
}

/// How the panel's SQL uses the variables, as Grafana formats them: the
/// single-value experiment inside quotes (Grafana inserts it bare, quotes
/// doubled), the multi-value run list inside `IN (…)` (Grafana inserts
/// `'a','b'`).
fn check_variable_use(title: &str, raw: &str) {
    let experiment = raw.matches("$experiment").count();
    assert!(experiment > 0, "panel {title:?} does not use $experiment");
    assert_eq!(
        raw.matches("'$experiment'").count(),
        experiment,
        "panel {title:?}: $experiment is used quoted"
    );
    let run = raw.matches("$run").count();
    assert!(run > 0, "panel {title:?} does not use $run");
    assert_eq!(
        raw.matches("IN ($run)").count(),
        run,
        "panel {title:?}: $run is used as IN ($run)"
    );
    assert!(
        !raw.contains(';'),
        "panel {title:?}: one statement, no semicolon"
    );
}

fn variable<'a>(dashboard: &'a Value, name: &str) -> &'a Value {
    dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no template variable {name}"))
}

fn variable_query(dashboard: &Value, name: &str) -> String {
    let var = variable(dashboard, name);
    assert_eq!(var["type"], "query");
    // Grafana 10 keeps a SQL variable's query as a string.
    let query = var["query"].as_str().unwrap().to_string();
    assert_eq!(var["definition"], query.as_str(), "variable {name}");
    query
}

/// Every panel, those inside rows too (a collapsed row holds its panels).
fn dashboard_panels(dashboard: &Value) -> Vec<Value> {
    fn walk(panels: &Value, out: &mut Vec<Value>) {
        for panel in panels.as_array().map(Vec::as_slice).unwrap_or_default() {
            if panel["type"] == "row" {
                walk(&panel["panels"], out);
            } else {
                out.push(panel.clone());
            }
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// The panel's SQL as PostgreSQL receives it from Grafana: first the
/// template variables (Grafana's SQL data sources insert a single-value
/// variable bare with `'` doubled, each value of a multi-value one quoted and
/// joined by commas), `$__interval` and `$__interval_ms`; then the macros of
/// the PostgreSQL data source (pkg/tsdb/grafana-postgresql-datasource/
/// macros.go), those this dashboard uses. Anything else is a failure: a
/// `$` left over would reach PostgreSQL.
fn expand(raw: &str, selection: &Selection) -> String {
    let interval_secs = parse_interval(selection.interval);
    let variables = regex::Regex::new(r"\$\{(\w+)\}|\$(\w+)").unwrap();
    let sql = variables.replace_all(raw, |caps: &regex::Captures| {
        let name = caps.get(1).or(caps.get(2)).unwrap().as_str();
        match name {
            "experiment" => selection.experiment.replace('\'', "''"),
            "run" => selection
                .runs
                .iter()
                .map(|v| format!("'{}'", v.replace('\'', "''")))
                .collect::<Vec<_>>()
                .join(","),
            "__interval" => selection.interval.to_string(),
            "__interval_ms" => format!("{}", (interval_secs * 1000.0) as i64),
            _ => caps[0].to_string(),
        }
    });
    assert!(
        !sql.contains("[["),
        "the [[variable]] syntax is not supported here: {sql}"
    );
    let macros = regex::Regex::new(r"\$([_a-zA-Z0-9]+)\(([^\)]*)\)").unwrap();
    let sql = macros.replace_all(&sql, |caps: &regex::Captures| {
        let args: Vec<&str> = caps[2].split(',').map(str::trim).collect();
        match &caps[1] {
            "__timeFilter" => format!(
                "{} BETWEEN '{}' AND '{}'",
                args[0],
                rfc3339_nano(selection.from),
                rfc3339_nano(selection.to)
            ),
            "__timeFrom" => format!("'{}'", rfc3339_nano(selection.from)),
            "__timeTo" => format!("'{}'", rfc3339_nano(selection.to)),
            "__timeGroupAlias" => {
                assert_eq!(
                    args.len(),
                    2,
                    "no fill mode is supported here: {}",
                    &caps[0]
                );
                let secs = parse_interval(args[1].trim_matches('\''));
                format!(
                    "floor(extract(epoch from {})/{secs})*{secs} AS \"time\"",
                    args[0]
                )
            }
            other => panic!("macro ${other} is not expanded by this test: {raw}"),
        }
    });
    assert!(
        !sql.contains('$'),
        "a variable or macro was left unexpanded:\n{sql}"
    );
    sql.into_owned()
}

/// A Grafana interval (`1s`, `500ms`, `5m`, `1h`, `1d`) in seconds.
fn parse_interval(text: &str) -> f64 {
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or_else(|| panic!("interval {text:?} has no unit"));
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().unwrap();
    let unit = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        "w" => 7.0 * 86400.0,
        _ => panic!("interval {text:?}: unknown unit"),
    };
    number * unit
}

/// Go's `time.RFC3339Nano` of a UTC time: trailing zeros of the fraction dropped.
fn rfc3339_nano(time: DateTime<Utc>) -> String {
    let text = time.to_rfc3339_opts(SecondsFormat::Nanos, true);
    let (head, fraction) = text.trim_end_matches('Z').split_once('.').unwrap();
    let fraction = fraction.trim_end_matches('0');
    if fraction.is_empty() {
        format!("{head}Z")
    } else {
        format!("{head}.{fraction}Z")
    }
}

#[derive(Debug)]
struct Rows {
    columns: Vec<String>,
    rows: Vec<Vec<String>>,
    /// psql's CSV output, for error messages and text searches.
    raw: String,
}

fn column(rows: &Rows, name: &str) -> usize {
    rows.columns
        .iter()
        .position(|c| c == name)
        .unwrap_or_else(|| panic!("no column {name}: {rows:?}"))
}

fn psql_bin() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let version = e.file_name().to_str()?.parse().ok()?;
                    Some((version, e.path().join("bin/psql")))
                })
                .filter(|(_, p)| p.exists())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop().map(|(_, p)| p).unwrap_or_else(|| "psql".into())
}

/// Runs psql in CSV mode (a header line, then the rows) with `input` on stdin.
fn psql_csv(server: &PgServer, db: &str, args: &[&str], input: &str) -> String {
    let mut child = command(psql_bin())
        .args(["-X", "-h", "127.0.0.1", "-p", &server.port.to_string()])
        .args(["-U", "postgres", "-d", db, "-v", "ON_ERROR_STOP=1", "--csv"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .start("psql --csv");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "psql failed: {}\n{input}{}",
        stderr_text(&out),
        args.join(" ")
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The statement's result: column names and rows, as Grafana would get them.
fn run_sql(server: &PgServer, db: &str, sql: &str) -> Rows {
    let raw = psql_csv(server, db, &["-c", sql], "");
    let mut records = parse_csv(&raw).into_iter();
    let columns = records.next().expect("a header line");
    Rows {
        columns,
        rows: records.collect(),
        raw,
    }
}

/// The statement's column types, as PostgreSQL describes them without
/// running it (psql's `\gdesc`).
fn column_types(server: &PgServer, db: &str, sql: &str) -> Vec<String> {
    let raw = psql_csv(server, db, &[], &format!("{sql}\n\\gdesc\n"));
    parse_csv(&raw)
        .into_iter()
        .skip(1)
        .map(|r| r[1].clone())
        .collect()
}

/// What Grafana needs of a time series: time as a timestamp or epoch
/// seconds (`$__timeGroup` gives `numeric` on PostgreSQL 14 and later,
/// `double precision` before), `metric` as text, numbers for every other
/// column.
fn check_types(title: &str, kind: Kind, rows: &Rows, types: &[String]) {
    assert_eq!(types.len(), rows.columns.len(), "panel {title:?}");
    if kind != Kind::TimeSeries {
        return;
    }
    let numeric = ["bigint", "integer", "numeric", "double precision", "real"];
    for (name, ty) in rows.columns.iter().zip(types) {
        let ok = match name.as_str() {
            "time" => ty == "timestamp with time zone" || numeric.contains(&ty.as_str()),
            "metric" => ty == "text",
            _ => numeric.contains(&ty.as_str()),
        };
        assert!(ok, "panel {title:?}: column {name} is {ty}");
    }
    // Sorted by time, as Grafana requires of a time series.
    // (Epoch seconds of this century and ISO timestamps both sort as text.)
    let times: Vec<&str> = rows.rows.iter().map(|r| r[0].as_str()).collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "panel {title:?}: {times:?}"
    );
    let values: Vec<f64> = rows
        .rows
        .iter()
        .flat_map(|r| r[2..].iter().map(|v| v.parse::<f64>().unwrap()))
        .collect();
    assert!(
        values.iter().any(|v| *v > 0.0),
        "panel {title:?}: {values:?}"
    );
}

/// RFC 4180 CSV as psql writes it: quoted fields may hold commas, quotes
/// (doubled) and newlines (tracebacks).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\n') => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (false, c) => field.push(c),
        }
    }
    assert!(!quoted && field.is_empty() && record.is_empty(), "{text}");
    records
}
