//! A small harness that runs the real `pmon-agent` binary in a private data dir
//! (ripgrep's `tests/util.rs` is the model): every test gets its own temp dir,
//! so tests run in parallel without seeing each other's runs.

#![allow(dead_code)]

pub use crate::bounded::{command, kill_owned, Bounded, Running};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture_program(name: &str) -> PathBuf {
    repo_root()
        .join("fixtures/programs")
        .join(format!("{name}.py"))
}

/// One test's agent: a private data dir, and every process its commands
/// start (programs, shippers, daemons, tmux servers) marked as its own, so
/// that whatever is still running when the test ends, passed or failed, is
/// killed with it.
pub struct Agent {
    pub dir: tempfile::TempDir,
    owner: String,
}

impl Agent {
    pub fn new() -> Agent {
        Agent {
            dir: tempfile::tempdir().expect("temp dir"),
            owner: crate::bounded::new_owner(),
        }
    }

    /// A command (any program) that belongs to this agent: started with
    /// default signal dispositions, in the agent's dir, killed with it.
    pub fn program(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = command(program);
        cmd.env(crate::bounded::OWNER, &self.owner)
            .current_dir(self.dir.path());
        cmd
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir().join("pmon.db")
    }

    /// A command for the agent binary with this test's data dir and no stray config.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = self.program(env!("CARGO_BIN_EXE_pmon-agent"));
        cmd.args(args)
            .env("PMON_DATA_DIR", self.data_dir())
            .env("XDG_CONFIG_HOME", self.dir.path().join("xdg-config"))
            .env("PMON_LOG_LEVEL", "DEBUG")
            .env_remove("PMON_CONFIG")
            .env_remove("PMON_DATABASE_URL");
        cmd
    }

    /// `pmon-agent wrap -e EXP --no-echo -- python3 -c PROGRAM`, to start.
    pub fn wrap_python(&self, exp: &str, program: &str) -> Command {
        self.cmd(&[
            "wrap",
            "-e",
            exp,
            "--no-echo",
            "--",
            "python3",
            "-c",
            program,
        ])
    }

    /// Runs `pmon-agent ARGS` to its end (within [`PATIENCE`]).
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args)
            .run_within(&format!("pmon-agent {}", args.join(" ")))
    }

    /// Runs a query with `--format json` and parses its JSON Lines.
    pub fn json_lines(&self, args: &[&str]) -> Vec<Value> {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--format", "json"]);
        let out = self.run(&all);
        assert!(
            out.status.success(),
            "pmon-agent {all:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf-8 output")
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
            .collect()
    }

    pub fn status(&self, experiment: &str) -> Value {
        let mut lines = self.json_lines(&["query", "status", experiment]);
        assert_eq!(lines.len(), 1, "status prints one object");
        lines.remove(0)
    }

    /// `count(*)` and `count(DISTINCT message)` of the experiment's `line …`
    /// records: both equal to the lines written means none lost or doubled.
    pub fn line_counts(&self, experiment: &str) -> (i64, i64) {
        self.sql()
            .query_row(
                "SELECT count(*), count(DISTINCT message) FROM pipeline_logs WHERE experiment_id = ?1 AND message LIKE 'line %'",
                [experiment],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
    }

    /// Writes `./config.yml` in the agent's working dir (where it looks first).
    pub fn with_config(self, yaml: &str) -> Agent {
        std::fs::write(self.dir.path().join("config.yml"), yaml).unwrap();
        self
    }

    /// One number from the store (`SELECT count(*) …`); 0 while there is no
    /// store yet or the query finds nothing.
    pub fn count(&self, sql: &str) -> i64 {
        if !self.db_path().exists() {
            return 0;
        }
        self.sql()
            .query_row(sql, [], |r| r.get::<_, Option<i64>>(0))
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    /// Opens the store directly, as a user with `sqlite3` would.
    pub fn sql(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.db_path()).expect("opening the store")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        kill_owned(&self.owner);
    }
}

/// A fixture program's run: what it printed and what it says it printed.
pub struct FixtureRun {
    pub output: Output,
    pub expect: Value,
}

/// Runs a fixture program bare (no agent), with its side file.
pub fn run_bare(name: &str, dir: &Path) -> FixtureRun {
    let expect_path = dir.join(format!("{name}.bare.json"));
    let mut cmd = command("python3");
    cmd.arg(fixture_program(name))
        .current_dir(repo_root())
        .env("PYTHONUNBUFFERED", "1")
        .env("PMON_FIXTURE_EXPECT", &expect_path);
    write_expect_helper(name, &expect_path);
    let output = cmd.run_within(&format!("the fixture program {name}, bare"));
    FixtureRun {
        output,
        expect: read_json(&expect_path),
    }
}

/// Runs a fixture program under `pmon-agent wrap -e NAME`.
pub fn run_wrapped(agent: &Agent, name: &str, extra: &[&str]) -> FixtureRun {
    let expect_path = agent.dir.path().join(format!("{name}.wrapped.json"));
    write_expect_helper(name, &expect_path);
    let program = fixture_program(name);
    let mut args = vec!["wrap", "-e", name];
    args.extend_from_slice(extra);
    args.extend(["--", "python3", program.to_str().unwrap()]);
    let output = agent
        .cmd(&args)
        .current_dir(repo_root())
        .env("PMON_FIXTURE_EXPECT", &expect_path)
        .run_within(&format!("the fixture program {name} under pmon-agent wrap"));
    FixtureRun {
        output,
        expect: read_json(&expect_path),
    }
}

/// `syntax_error_compile.py` cannot run, so a helper writes its side file.
fn write_expect_helper(name: &str, expect_path: &Path) {
    if name != "syntax_error_compile" {
        return;
    }
    let status = command("python3")
        .arg(fixture_program("syntax_error_compile_expect"))
        .arg(fixture_program(name))
        .current_dir(repo_root())
        .env("PMON_FIXTURE_EXPECT", expect_path)
        .status_within("the expect helper of syntax_error_compile");
    assert!(status.success());
}

pub fn read_json(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).expect("valid JSON")
}

/// Output with digit runs folded, for comparing runs that print times.
pub fn fold_digits(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    let mut in_digits = false;
    for c in text.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('0');
            }
            in_digits = true;
        } else {
            in_digits = false;
            out.push(c);
        }
    }
    out
}

pub fn stderr_text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Truncates a file in place to nothing, as logrotate's copytruncate does.
pub fn truncate(path: &Path) {
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .unwrap();
}

/// Waits until `done` holds, polling; fails loudly after a generous deadline
/// (a slow, busy machine waits longer, it never fails sooner).
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "gave up waiting until {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The shippers running now under the holder `holder` (the `wrap` or daemon
/// supervisor process): its children running `pmon-agent ship`.
pub fn shippers_of(holder: u32) -> Vec<u32> {
    children_with_arg(holder, b"ship")
}

/// The holder processes a daemon's supervisor runs (one per run).
pub fn holders_of(supervisor: u32) -> Vec<u32> {
    children_with_arg(supervisor, b"hold")
}

/// Live (not zombie) children of `parent` with `arg` among their arguments.
fn children_with_arg(parent: u32, arg: &[u8]) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let after = &stat[stat.rfind(')')? + 2..];
            let mut fields = after.split(' ');
            let state = fields.next()?;
            let ppid: u32 = fields.next()?.parse().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let has = cmdline.split(|b| *b == 0).any(|a| a == arg);
            (ppid == parent && has && state != "Z").then_some(pid)
        })
        .collect()
}

/// The parent pid of `pid`, if it lives.
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split(' ').nth(1)?.parse().ok()
}

/// A Python program that prints `{prefix} N` every 2 ms until the file
/// `$PMON_GO` exists, then writes how many lines it printed to
/// `$PMON_GO.count` and exits with code 3: the test, not a clock, decides
/// when it ends.
pub fn until_go(prefix: &str) -> String {
    format!(
        r#"
import os, time
go = os.environ['PMON_GO']
i = 0
while not os.path.exists(go):
    print(f'{prefix} {{i}}', flush=True)
    i += 1
    time.sleep(0.002)
with open(go + '.count', 'w') as f:
    f.write(str(i))
raise SystemExit(3)
"#
    )
}
