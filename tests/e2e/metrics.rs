//! Metrics and the progress tree as a user meets them: real Python programs
//! with multiprocessing children, real tqdm bars, `##pmon[…]` lines, read
//! back with `query metrics` and `query status` from the embedded store and
//! from PostgreSQL through an outage. Each program waits for a file the test
//! writes once the store shows what it should (`$PMON_GO`): the outcome, not
//! the clock, decides when it ends.

use crate::pg_server::PgServer;
use crate::util::*;
use pretty_assertions::assert_eq;
use serde_json::Value;
use std::process::Stdio;

/// Samples often and stores them at once, so the tests see them soon.
const FAST: &str = "monitoring:\n  metrics_interval: 0.2\n  progress_update_interval: 0.2\nlogging:\n  database:\n    flush_interval: 0.2\n";

const MIB: f64 = 1048576.0;

/// `wrap -e EXP --no-echo -- python3 -c PROGRAM` with `$PMON_GO` set.
fn wrap_until_go(agent: &Agent, exp: &str, program: &str, extra: &[&str]) -> Running {
    let go = go_file(agent);
    let mut args = vec!["wrap", "-e", exp, "--no-echo"];
    args.extend(extra);
    args.extend(["--", "python3", "-c", program]);
    agent
        .cmd(&args)
        .env("PMON_GO", go)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .start(&format!("pmon-agent wrap -e {exp}"))
}

fn go_file(agent: &Agent) -> std::path::PathBuf {
    agent.dir.path().join("go")
}

fn go_and_wait(agent: &Agent, child: Running) {
    std::fs::write(go_file(agent), "").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_text(&out));
}

/// The largest stored value of a series (none yet: 0).
fn max_sample(agent: &Agent, metric_type: &str, name: &str) -> f64 {
    if !agent.db_path().exists() {
        return 0.0;
    }
    agent
        .sql()
        .query_row(
            "SELECT coalesce(max(value), 0) FROM pipeline_metrics WHERE metric_type = ?1 AND name = ?2",
            [metric_type, name],
            |r| r.get(0),
        )
        .unwrap_or(0.0)
}

fn samples(agent: &Agent, exp: &str, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["query", "metrics", exp];
    args.extend(extra);
    agent.json_lines(&args)
}

fn text(agent: &Agent, args: &[&str]) -> String {
    let out = agent.run(args);
    assert!(out.status.success(), "{args:?}: {}", stderr_text(&out));
    String::from_utf8(out.stdout).unwrap()
}

const HOLD_300_MB: &str = r#"
import multiprocessing as mp, os, time
def hold(go):
    block = b'x' * (300 * 1024 * 1024)  # written, so every page is resident
    while not os.path.exists(go):
        time.sleep(0.05)
if __name__ == '__main__':
    print('INFO:main:starting the worker', flush=True)
    worker = mp.Process(target=hold, args=(os.environ['PMON_GO'],))
    worker.start()
    worker.join()
    print('INFO:main:worker done', flush=True)
"#;

/// Wraps `program` (which waits for `$PMON_GO`) until a `type/name` sample
/// of at least `at_least` is stored.
fn wrap_until_sampled(
    exp: &str,
    program: &str,
    series: (&str, &str),
    at_least: f64,
) -> (Agent, Running) {
    let agent = Agent::new().with_config(FAST);
    let child = wrap_until_go(&agent, exp, program, &[]);
    wait_until(
        &format!("a {series:?} sample of at least {at_least}"),
        || max_sample(&agent, series.0, series.1) >= at_least,
    );
    (agent, child)
}

#[test]
fn memory_of_a_multiprocessing_child_counts_in_the_programs_rss() {
    // The worker's 300 MiB count in the tree's sum.
    let (agent, child) =
        wrap_until_sampled("mem", HOLD_300_MB, ("memory", "rss_bytes"), 300.0 * MIB);
    assert!(max_sample(&agent, "cpu", "processes") >= 2.0);
    go_and_wait(&agent, child);

    let memory = samples(&agent, "mem", &["--type", "memory"]);
    assert!(memory.len() >= 2, "a sample at start and more: {memory:?}");
    for sample in &memory {
        assert_eq!(sample["experiment_id"], "mem");
        assert_eq!(sample["metric_type"], "memory");
        assert_eq!(sample["name"], "rss_bytes");
        assert_eq!(sample["unit"], "bytes");
    }
    let peak = memory
        .iter()
        .map(|s| s["value"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert!(peak >= 300.0 * MIB, "{peak}");
    // The table says it in MiB, one row for the one memory series.
    let table = text(&agent, &["query", "metrics", "mem", "--type", "memory"]);
    let row = table
        .lines()
        .find(|l| l.trim_start().starts_with("rss_bytes"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains(" MiB"), "{row}");
    assert!(
        !table.contains("cpu_percent"),
        "--type memory only: {table}"
    );
    // Every sample of every type went through the one sink, keyed once.
    let all = samples(&agent, "mem", &[]);
    for series in [
        "cpu/cpu_percent",
        "cpu/threads",
        "io/read_bytes",
        "io/write_bytes",
        "host/memory_available_bytes",
        "host/load1",
        "host/disk_free_bytes",
        "throughput/lines_per_s",
        "throughput/errors",
    ] {
        assert!(
            all.iter().any(|s| format!(
                "{}/{}",
                s["metric_type"].as_str().unwrap(),
                s["name"].as_str().unwrap()
            ) == series),
            "no {series} sample"
        );
    }
    let status = text(&agent, &["query", "status", "mem"]);
    assert!(
        status.lines().any(|l| l.starts_with("resources: rss ")),
        "{status}"
    );
}

const BURN: &str = r#"
import multiprocessing as mp, os
def burn(go):
    n = 0
    while True:
        n += 1
        if n % 200000 == 0 and os.path.exists(go):
            return
if __name__ == '__main__':
    worker = mp.Process(target=burn, args=(os.environ['PMON_GO'],))
    worker.start()
    worker.join()
"#;

#[test]
fn a_child_burning_a_core_shows_as_cpu_percent() {
    let (agent, child) = wrap_until_sampled("burn", BURN, ("cpu", "cpu_percent"), 70.0);
    go_and_wait(&agent, child);
    let cpu = samples(&agent, "burn", &["--type", "cpu", "--name", "cpu_percent"]);
    assert!(cpu.iter().all(|s| s["unit"] == "percent"), "{cpu:?}");
    assert!(cpu.iter().any(|s| s["value"].as_f64().unwrap() >= 70.0));
}

#[test]
fn user_metrics_round_trip_and_a_malformed_one_is_a_line_and_one_parse_error() {
    let agent = Agent::new().with_config(FAST);
    let program = "import sys\nprint('##pmon[metric name=loss value=0.12 step=300]')\nprint('##pmon[metric name=loss value=0.08 step=301 unit=nats]', file=sys.stderr)\nprint('##pmon[metric name=acc value=high]')\nprint('INFO:train:epoch done')\n";
    let out = agent.run(&["wrap", "-e", "um", "--", "python3", "-c", program]);
    assert!(out.status.success(), "{}", stderr_text(&out));
    // The program's output passes through unchanged, directives included.
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains("##pmon[metric name=loss value=0.12 step=300]"));

    let user = samples(&agent, "um", &["--type", "user"]);
    // Two streams: their order against each other is the pipes', so by step.
    let mut got: Vec<(String, f64, Option<i64>, Option<String>)> = user
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["value"].as_f64().unwrap(),
                s["step"].as_i64(),
                s["unit"].as_str().map(str::to_string),
            )
        })
        .collect();
    got.sort_by_key(|m| m.2);
    assert_eq!(
        got,
        vec![
            ("loss".into(), 0.12, Some(300), None),
            ("loss".into(), 0.08, Some(301), Some("nats".into()))
        ]
    );
    let logs = agent.json_lines(&["query", "logs", "um"]);
    let messages: Vec<&str> = logs
        .iter()
        .map(|r| r["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        messages,
        ["##pmon[metric name=acc value=high]", "epoch done"]
    );
    let errors: Vec<String> = agent
        .sql()
        .prepare("SELECT details FROM pipeline_events WHERE event_type = 'parse_error'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let details: Value = serde_json::from_str(&errors[0]).unwrap();
    assert_eq!(details["line"], "##pmon[metric name=acc value=high]");
    assert_eq!(details["reason"], "value=high is not a number");
}

const TREE: &str = r#"
import os, sys, time
from tqdm import tqdm
for epoch in tqdm(range(2), desc="epoch", mininterval=0):
    for batch in tqdm(range(30), desc="batch", position=1, leave=False, mininterval=0):
        time.sleep(0.001)
    # Printed right after the inner bar cleared its row and moved the cursor up.
    print(f'INFO:train:epoch {epoch} done', file=sys.stderr, flush=True)
print('##pmon[progress task=load/shard_3 current=1 total=10 unit=files]', flush=True)
time.sleep(0.3)
print('##pmon[progress task=load/shard_3 current=3 total=10 unit=files]', flush=True)
while not os.path.exists(os.environ['PMON_GO']):
    time.sleep(0.05)
"#;

fn task<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["progress"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task"] == name)
        .unwrap_or_else(|| panic!("no task {name} in {status}"))
}

#[test]
fn nested_tqdm_and_pmon_progress_build_the_tree_with_rates_and_eta() {
    let agent = Agent::new().with_config(FAST);
    let child = wrap_until_go(&agent, "tree", TREE, &[]);
    wait_until("the shard's second update is stored with a rate", || {
        agent.db_path().exists() && {
            let status = agent.status("tree");
            status["progress"].as_array().is_some_and(|p| {
                p.iter()
                    .any(|t| t["task"] == "load/shard_3" && t["current"] == 3.0)
            })
        }
    });
    // Live: the shard has a rate from its two updates, so an ETA.
    let live = agent.status("tree");
    let shard = task(&live, "load/shard_3");
    assert_eq!(shard["parent"], "load");
    assert_eq!(shard["total"], 10.0);
    assert_eq!(shard["unit"], "files");
    assert!(shard["rate"].as_f64().unwrap() > 0.0, "{shard}");
    assert!(shard["eta_s"].as_f64().unwrap() > 0.0, "{shard}");
    let text_status = text(&agent, &["query", "status", "tree"]);
    let lines: Vec<&str> = text_status.lines().collect();
    let at = |prefix: &str| {
        lines
            .iter()
            .position(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in\n{text_status}"))
    };
    assert!(at("  epoch ") < at("    batch "), "{text_status}");
    assert!(at("  load") < at("    shard_3 "), "{text_status}");
    let shard_line = lines[at("    shard_3 ")];
    assert!(
        shard_line.contains("[######--------------]  3/10 files (30%)")
            && shard_line.contains(", ETA "),
        "{shard_line}"
    );
    go_and_wait(&agent, child);

    let done = agent.status("tree");
    let epoch = task(&done, "epoch");
    assert_eq!(
        (epoch["current"].as_f64(), epoch["total"].as_f64()),
        (Some(2.0), Some(2.0))
    );
    assert_eq!(epoch["parent"], Value::Null);
    let batch = task(&done, "epoch/batch");
    assert_eq!(batch["parent"], "epoch");
    assert_eq!(batch["total"], 30.0);
    assert_eq!(
        task(&done, "load/shard_3")["eta_s"],
        Value::Null,
        "no ETA once the run ended"
    );
    let logs = agent.json_lines(&["query", "logs", "tree"]);
    let messages: Vec<&str> = logs
        .iter()
        .map(|r| r["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        messages,
        ["epoch 0 done", "epoch 1 done"],
        "log lines between bars are records, bars are not"
    );
    let per_task = samples(&agent, "tree", &["--type", "throughput"]);
    assert!(
        per_task
            .iter()
            .any(|s| s["name"] == "epoch/batch/items_per_s"),
        "items/s per task: {per_task:?}"
    );
}

#[test]
fn a_finished_tqdm_loop_ends_at_its_total_and_no_frame_is_a_record() {
    let program = "import time\nfrom tqdm import tqdm\nfor _ in tqdm(range(200), desc='steps', mininterval=0):\n    time.sleep(0.001)\nprint('done', flush=True)\n";
    for pty in [false, true] {
        let agent = Agent::new();
        let mut args = vec!["wrap", "-e", "loop"];
        if pty {
            args.push("--pty");
        }
        args.extend(["--", "python3", "-c", program]);
        let out = agent.run(&args);
        assert!(out.status.success(), "pty {pty}: {}", stderr_text(&out));
        let status = agent.status("loop");
        let steps = task(&status, "steps");
        assert_eq!(
            (steps["current"].as_f64(), steps["total"].as_f64()),
            (Some(200.0), Some(200.0)),
            "pty {pty}"
        );
        let logs = agent.json_lines(&["query", "logs", "loop"]);
        let messages: Vec<&str> = logs
            .iter()
            .map(|r| r["message"].as_str().unwrap())
            .collect();
        assert_eq!(messages, ["done"], "pty {pty}: only the print is a record");
    }
}

/// Prints a user metric `tick` (step = i) every 10 ms until `$PMON_GO`
/// exists, then writes how many it printed to `$PMON_GO.count`.
const TICKS: &str = r#"
import os, time
go = os.environ['PMON_GO']
i = 0
while not os.path.exists(go):
    print(f'##pmon[metric name=tick value={i} step={i}]', flush=True)
    i += 1
    time.sleep(0.01)
with open(go + '.count', 'w') as f:
    f.write(str(i))
"#;

fn pg_count(server: &PgServer, sql: &str) -> i64 {
    server
        .try_psql("postgres", sql)
        .map_or(0, |n| n.parse().unwrap_or(0))
}

fn spooled(agent: &Agent) -> bool {
    let out = agent.run(&["spool", "status", "--format", "json"]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .next()
        .and_then(|l| serde_json::from_str::<Value>(l).ok())
        .is_some_and(|v| v["bytes"].as_u64().unwrap_or(0) > 0)
}

#[test]
fn metrics_reach_postgresql_through_an_outage_exactly_once() {
    let server = PgServer::start();
    let url = server.url("postgres");
    let agent = Agent::new().with_config(&format!(
        "{FAST}    shutdown_timeout: 10m\n    retry_first_backoff: 100ms\n    retry_max_backoff: 500ms\n"
    ));
    let go = go_file(&agent);
    let child = agent
        .cmd(&[
            "wrap",
            "-e",
            "pgm",
            "--no-echo",
            "--",
            "python3",
            "-c",
            TICKS,
        ])
        .env("PMON_DATABASE_URL", &url)
        .env("PMON_GO", &go)
        .stderr(Stdio::piped())
        .start("pmon-agent wrap -e");
    let ticks = "SELECT count(*) FROM pipeline_metrics WHERE metric_type = 'user'";
    wait_until("user metrics reach PostgreSQL", || {
        pg_count(&server, ticks) >= 20
    });
    server.stop_immediate();
    wait_until("samples are spooled", || spooled(&agent));
    server.start_again();
    std::fs::write(&go, "").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_text(&out));
    let printed: i64 = std::fs::read_to_string(go.with_extension("count"))
        .unwrap()
        .parse()
        .unwrap();
    // Every tick once: as many rows as printed, each step once, 0..printed.
    assert_eq!(
        server.psql("postgres", "SELECT count(*), count(DISTINCT step), min(step), max(step) FROM pipeline_metrics WHERE metric_type = 'user' AND name = 'tick'"),
        format!("{printed}|{printed}|0|{}", printed - 1)
    );
    // The sampler's rows too: one run, seq 0..n without a gap or a double.
    assert_eq!(
        server.psql("postgres", "SELECT count(*) = count(DISTINCT seq) AND count(*) = max(seq) + 1 AND min(seq) = 0 FROM pipeline_metrics"),
        "t"
    );
    assert!(
        pg_count(
            &server,
            "SELECT count(*) FROM pipeline_metrics WHERE metric_type = 'memory'"
        ) >= 2
    );
    // Both queries answer from PostgreSQL.
    let with_db = |args: &[&str]| {
        let out = agent
            .cmd(args)
            .env("PMON_DATABASE_URL", &url)
            .run_within(&format!("pmon-agent {}", args.join(" ")));
        assert!(out.status.success(), "{args:?}: {}", stderr_text(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    let memory = with_db(&["query", "metrics", "pgm", "--type", "memory"]);
    assert!(
        memory
            .lines()
            .any(|l| l.trim_start().starts_with("rss_bytes") && l.contains("MiB")),
        "{memory}"
    );
    let user_json = with_db(&[
        "query", "metrics", "pgm", "--type", "user", "--format", "json",
    ]);
    assert_eq!(user_json.lines().count() as i64, printed);
    let status = with_db(&["query", "status", "pgm"]);
    assert!(
        status.lines().any(|l| l.starts_with("resources: rss ")),
        "{status}"
    );
}

/// A resumed run numbers its records after the earlier session's, even when
/// those are in PostgreSQL where the local store cannot count them.
#[test]
fn a_resumed_run_in_postgresql_keeps_every_record_of_both_sessions() {
    let (server, db) = crate::pg_server::shared_database();
    let url = server.url(&db);
    let agent = Agent::new().with_config(FAST);
    let wrap = |args: &[&str], program: &str| {
        let mut all = vec!["wrap", "-e", "res", "--no-echo"];
        all.extend(args);
        all.extend(["--", "python3", "-c", program]);
        let out = agent
            .cmd(&all)
            .env("PMON_DATABASE_URL", &url)
            .run_within("pmon-agent wrap -e res");
        assert!(out.status.success(), "{}", stderr_text(&out));
    };
    wrap(&[], "for i in range(50): print(f'INFO:a:line first {i}')\nprint('##pmon[metric name=m value=1]')");
    wrap(&["--resume"], "for i in range(50): print(f'INFO:a:line second {i}')\nprint('##pmon[metric name=m value=2]')");
    assert_eq!(
        server.psql(&db, "SELECT count(DISTINCT run_id), count(*), count(DISTINCT message) FROM pipeline_logs WHERE message LIKE 'line %'"),
        "1|100|100"
    );
    assert_eq!(
        server.psql(
            &db,
            "SELECT count(*) FROM pipeline_metrics WHERE metric_type = 'user'"
        ),
        "2"
    );
}
