//! `run_monitored.sh` under real tmux: the five windows and seven titled
//! panes, the pipeline's records in the store, a `--daemon` pipeline that
//! outlives `tmux kill-session`, each error case with its message, and
//! `shellcheck` on the script. Every test has a private tmux server
//! (`TMUX_TMPDIR`), so none touches a user's sessions or another test's.

use crate::util::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A private tmux server for one test: its socket lives in the test's dir.
struct Server {
    dir: PathBuf,
}

impl Server {
    fn new(agent: &Agent) -> Server {
        let dir = agent.dir.path().join("tmux");
        std::fs::create_dir_all(&dir).unwrap();
        Server { dir }
    }

    fn tmux(&self, args: &[&str]) -> Output {
        command("tmux")
            .args(args)
            .env("TMUX_TMPDIR", &self.dir)
            .env_remove("TMUX")
            .run_within("tmux")
    }

    fn lines(&self, args: &[&str]) -> Vec<String> {
        let out = self.tmux(args);
        assert!(out.status.success(), "tmux {args:?}: {}", stderr_text(&out));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}

fn which(tool: &str) -> String {
    let found = command("sh")
        .args(["-c", &format!("command -v {tool}")])
        .run_within("sh");
    String::from_utf8(found.stdout).unwrap().trim().to_string()
}

fn script() -> PathBuf {
    repo_root().join("run_monitored.sh")
}

/// The directory of the agent binary under test, first on PATH.
fn path_with_agent() -> String {
    let bin = Path::new(env!("CARGO_BIN_EXE_pmon-agent"))
        .parent()
        .unwrap();
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// `run_monitored.sh ARGS` in the agent's dir, with its data dir and the
/// private tmux server.
fn run_monitored(agent: &Agent, server: &Server, args: &[&str]) -> Command {
    run_script(&script(), agent, server, args)
}

fn run_script(script: &Path, agent: &Agent, server: &Server, args: &[&str]) -> Command {
    // By its path: a test may give the script a PATH without bash on it.
    let mut cmd = command(which("bash"));
    cmd.arg(script)
        .args(args)
        .current_dir(agent.dir.path())
        .env("PMON_DATA_DIR", agent.data_dir())
        .env("TMUX_TMPDIR", &server.dir)
        .env("PATH", path_with_agent())
        .env_remove("TMUX")
        .env_remove("VIRTUAL_ENV")
        .env_remove("CONDA_PREFIX")
        .env_remove("PMON_CONFIG")
        .env_remove("PMON_DATABASE_URL");
    cmd
}

const PIPELINE: &str = "import time\nfor i in range(5):\n    print(f'INFO:pipe:line {i}', flush=True)\nprint('ERROR:pipe:one error', flush=True)\ntime.sleep(1)\n";

#[test]
fn five_windows_seven_titled_panes_and_the_records_in_the_store() {
    let agent = Agent::new();
    let server = Server::new(&agent);
    // A project venv: found and named (a python3 link is a venv enough for it).
    let venv = agent.dir.path().join(".venv/bin");
    std::fs::create_dir_all(&venv).unwrap();
    std::os::unix::fs::symlink(which("python3"), venv.join("python")).unwrap();
    let out = run_monitored(
        &agent,
        &server,
        &[
            "--no-attach",
            "--experiment-name",
            "layout",
            "--",
            "python3",
            "-c",
            PIPELINE,
        ],
    )
    .run_within("run_monitored.sh --experiment-name layout");
    assert!(out.status.success(), "{}", stderr_text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!(
            "using the Python environment at {}",
            agent.dir.path().join(".venv").display()
        )),
        "{said}"
    );
    let windows = server.lines(&[
        "list-windows",
        "-t",
        "layout",
        "-F",
        "#{window_index} #{window_name}",
    ]);
    assert_eq!(
        windows,
        [
            "0 pipeline",
            "1 monitoring",
            "2 logs",
            "3 system",
            "4 control"
        ]
    );
    let panes = server.lines(&[
        "list-panes",
        "-s",
        "-t",
        "layout",
        "-F",
        "#{window_name}/#{pane_title}",
    ]);
    let host = server.lines(&["display-message", "-p", "#{host}"]).join("");
    let titled: Vec<&String> = panes
        .iter()
        .filter(|p| !p.ends_with(&format!("/{host}")))
        .collect();
    assert_eq!(
        titled,
        [
            "monitoring/progress",
            "monitoring/memory",
            "monitoring/errors",
            "logs/all logs",
            "logs/errors with tracebacks",
            "system/processes",
            "system/disk"
        ],
        "all panes: {panes:?}"
    );
    wait_until("the pipeline's run ends in the store", || {
        agent.count("SELECT count(*) FROM pipeline_runs WHERE experiment_id = 'layout' AND state = 'succeeded'") == 1
    });
    assert_eq!(agent.line_counts("layout"), (5, 5));
    // The panes show what they are for.
    wait_until("the error pane shows the error", || {
        let out = server.tmux(&["capture-pane", "-p", "-t", "layout:logs.1"]);
        String::from_utf8_lossy(&out.stdout).contains("one error")
    });
    wait_until("the progress pane is the dashboard", || {
        let out = server.tmux(&["capture-pane", "-p", "-t", "layout:monitoring.0"]);
        String::from_utf8_lossy(&out.stdout).contains("┌ progress")
    });
}

#[test]
fn a_daemon_pipeline_outlives_the_tmux_session() {
    let agent = Agent::new();
    let server = Server::new(&agent);
    let out = run_monitored(
        &agent,
        &server,
        &[
            "--no-attach",
            "--daemon",
            "--experiment-name",
            "longrun",
            "--",
            "python3",
            "-c",
            "import time\nprint('up', flush=True)\ntime.sleep(600)",
        ],
    )
    .run_within("run_monitored.sh --daemon");
    assert!(out.status.success(), "{}", stderr_text(&out));
    let running = || {
        let out = agent.run(&["daemon", "status", "longrun", "--format", "json"]);
        let state: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        state["state"] == "running" && !state["pid"].is_null()
    };
    wait_until("the daemon runs", running);
    assert!(server
        .tmux(&["kill-session", "-t", "longrun"])
        .status
        .success());
    assert!(!server
        .tmux(&["has-session", "-t", "longrun"])
        .status
        .success());
    assert!(running(), "the daemon is still running after kill-session");
    assert!(agent.run(&["daemon", "stop", "longrun"]).status.success());
}

fn fails_with(out: Output, message: &str) {
    assert!(
        !out.status.success(),
        "should fail: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = stderr_text(&out);
    assert!(err.contains(message), "expected {message:?} in: {err}");
}

#[test]
fn each_missing_piece_is_a_clear_error() {
    let agent = Agent::new();
    let server = Server::new(&agent);
    let program = ["--", "python3", "-c", "print(1)"];

    // No tmux: a PATH with only what the script needs before its check.
    let bare = agent.dir.path().join("bare-bin");
    std::fs::create_dir_all(&bare).unwrap();
    for tool in ["basename", "dirname"] {
        std::os::unix::fs::symlink(which(tool), bare.join(tool)).unwrap();
    }
    let mut cmd = run_monitored(&agent, &server, &["--no-attach"]);
    cmd.args(program).env("PATH", &bare);
    fails_with(
        cmd.run_within("run_monitored.sh missing a piece"),
        "tmux is not installed; install it",
    );

    // A session of that name already exists.
    assert!(server
        .tmux(&["new-session", "-d", "-s", "taken", "sleep 600"])
        .status
        .success());
    let mut cmd = run_monitored(
        &agent,
        &server,
        &["--no-attach", "--experiment-name", "taken"],
    );
    cmd.args(program);
    fails_with(
        cmd.run_within("run_monitored.sh missing a piece"),
        "a tmux session named 'taken' already exists; attach to it with tmux attach -t 'taken'",
    );

    // No pmon-agent on PATH nor in ./target/release (the script run from a
    // copy, so the checkout's own target/ is not beside it).
    let copy = agent.dir.path().join("copy/run_monitored.sh");
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    std::fs::copy(script(), &copy).unwrap();
    let without_agent: Vec<String> = std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .filter(|dir| !Path::new(dir).join("pmon-agent").exists())
        .map(str::to_string)
        .collect();
    let mut cmd = run_script(&copy, &agent, &server, &["--no-attach"]);
    cmd.args(program).env("PATH", without_agent.join(":"));
    fails_with(
        cmd.run_within("run_monitored.sh missing a piece"),
        "pmon-agent is not on PATH nor in ./target/release; build it with cargo build --release",
    );

    // No command after -- and no pipeline.command in config.yml.
    let out = run_monitored(
        &agent,
        &server,
        &["--no-attach", "--experiment-name", "nothing"],
    )
    .run_within("run_monitored.sh missing a piece");
    fails_with(out, "no pipeline command: put it after --");
}

#[test]
fn the_pipeline_command_comes_from_config_yml_when_none_follows() {
    let agent = Agent::new().with_config(
        "pipeline:\n  command: [python3, -c, \"print('INFO:cfg:line from config')\"]\n",
    );
    let server = Server::new(&agent);
    let out = run_monitored(
        &agent,
        &server,
        &["--no-attach", "--experiment-name", "fromcfg"],
    )
    .run_within("run_monitored.sh --experiment-name fromcfg");
    assert!(out.status.success(), "{}", stderr_text(&out));
    wait_until("the configured pipeline's record", || {
        agent.line_counts("fromcfg") == (1, 1)
    });
}

#[test]
fn the_script_is_clean_under_shellcheck() {
    let out = command("shellcheck").arg(script()).run_within("shellcheck");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr_text(&out)
    );
}
