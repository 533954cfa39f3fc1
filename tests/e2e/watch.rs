//! `query watch` in a real terminal: a tmux pane running a shell, the
//! dashboard started in it while a real tqdm program runs, read back with
//! `capture-pane` until progress, memory and the program's final error show,
//! then `q` — and the shell's prompt is back with the terminal's modes as they
//! were. Also: off a terminal it refuses with exit code 2.

use crate::pg_server::shared_database;
use crate::util::*;
use std::process::{Command, Output, Stdio};

/// A private tmux server (its own socket), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new() -> Tmux {
        let socket = format!("pmon-test-{}-{}", std::process::id(), rand_suffix());
        Tmux { socket }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = command("tmux");
        cmd.args(["-L", &self.socket, "-f", "/dev/null"]).args(args);
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = self.cmd(args).run_within("tmux");
        assert!(out.status.success(), "tmux {args:?}: {}", stderr_text(&out));
        out
    }

    /// A session `name` of `width`x`height` running a bare bash (prompt
    /// `READY$ `, the agent's data dir, colour allowed), once its prompt shows.
    fn shell(&self, name: &str, (width, height): (u16, u16), agent: &Agent) {
        let shell = format!(
            "env -u NO_COLOR PMON_DATA_DIR={} PS1='READY$ ' bash --norc --noprofile",
            agent.data_dir().display()
        );
        let (width, height) = (width.to_string(), height.to_string());
        self.run(&[
            "new-session",
            "-d",
            "-x",
            &width,
            "-y",
            &height,
            "-s",
            name,
            &shell,
        ]);
        wait_until("the shell's prompt", || {
            self.capture(name).contains("READY$")
        });
    }

    fn capture(&self, target: &str) -> String {
        let out = self
            .cmd(&["capture-pane", "-p", "-t", target])
            .run_within("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self
            .cmd(&["kill-server"])
            .stderr(Stdio::null())
            .status_within("tmux kill-server");
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64)
}

const PROGRAM: &str = r#"
import os, time
from tqdm import tqdm
block = b'x' * (50 * 1024 * 1024)
for _ in tqdm(range(200), desc="train", mininterval=0):
    time.sleep(0.002)
print('INFO:trainer:waiting for the test', flush=True)
while not os.path.exists(os.environ['PMON_GO']):
    time.sleep(0.05)
raise ValueError('loss is nan at step 200')
"#;

#[test]
fn the_dashboard_in_a_real_pane_shows_the_run_and_gives_the_terminal_back() {
    let agent = Agent::new().with_config(
        "monitoring:\n  metrics_interval: 0.2\n  progress_update_interval: 0.2\nlogging:\n  database:\n    flush_interval: 0.2\n",
    );
    let go = agent.dir.path().join("go");
    let program = agent
        .cmd(&[
            "wrap",
            "-e",
            "tw",
            "--no-echo",
            "--",
            "python3",
            "-c",
            PROGRAM,
        ])
        .env("PMON_GO", &go)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .start("pmon-agent wrap -e");
    let tmux = Tmux::new();
    tmux.shell("w", (100, 30), &agent);
    let watch = format!(
        "cd {} && {} query watch tw",
        agent.dir.path().display(),
        env!("CARGO_BIN_EXE_pmon-agent")
    );
    tmux.run(&["send-keys", "-t", "w", &watch, "Enter"]);
    wait_until("progress and memory on the dashboard", || {
        let screen = tmux.capture("w");
        screen.contains("200/200") && screen.contains("┌ memory ") && screen.contains(" MiB")
    });
    std::fs::write(&go, "").unwrap();
    let out = program.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    wait_until("the final error on the dashboard", || {
        let screen = tmux.capture("w");
        screen.contains("ValueError: loss is nan at step 200") && screen.contains("failed (exit 1)")
    });
    tmux.run(&["send-keys", "-t", "w", "q"]);
    assert_terminal_restored(&tmux, "w");
}

/// The pane's shell prompt is back, off the alternate screen, with the
/// line discipline's modes as they were (not left raw).
fn assert_terminal_restored(tmux: &Tmux, pane: &str) {
    wait_until("the prompt is back", || {
        let screen = tmux.capture(pane);
        screen.trim_end().ends_with("READY$") && !screen.contains("┌ ")
    });
    let alternate = tmux.run(&["display-message", "-p", "-t", pane, "#{alternate_on}"]);
    assert_eq!(String::from_utf8_lossy(&alternate.stdout).trim(), "0");
    tmux.run(&[
        "send-keys",
        "-t",
        pane,
        "stty -a | tr ' ' '\\n' | grep -E '^-?(icanon|echo|isig)$' | tr '\\n' ' '; echo",
        "Enter",
    ]);
    wait_until("the terminal's modes", || {
        tmux.capture(pane)
            .lines()
            .any(|l| l.trim() == "isig icanon echo")
    });
}

/// SIGTERM (a `kill`, a closing session manager) ends the dashboard with the
/// terminal given back, as `q` does.
#[test]
fn sigterm_gives_the_terminal_back_too() {
    let agent = Agent::new();
    let tmux = Tmux::new();
    tmux.shell("t", (80, 24), &agent);
    let watch = format!("{} query watch term-me", env!("CARGO_BIN_EXE_pmon-agent"));
    tmux.run(&["send-keys", "-t", "t", &watch, "Enter"]);
    wait_until("the dashboard waits", || {
        tmux.capture("t")
            .contains("waiting for experiment 'term-me'")
    });
    let shell_pid = tmux.run(&["display-message", "-p", "-t", "t", "#{pane_pid}"]);
    let shell_pid = String::from_utf8_lossy(&shell_pid.stdout)
        .trim()
        .to_string();
    let children = std::fs::read_to_string(format!("/proc/{shell_pid}/task/{shell_pid}/children"))
        .ok()
        .filter(|c| !c.trim().is_empty())
        .unwrap_or_else(|| {
            let out = command("pgrep")
                .args(["-P", &shell_pid])
                .run_within("pgrep");
            String::from_utf8_lossy(&out.stdout).into_owned()
        });
    let watch_pid: i32 = children
        .split_whitespace()
        .next()
        .expect("the dashboard's pid")
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(watch_pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_terminal_restored(&tmux, "t");
}

/// A closed window or pane (here: the whole tmux server killed) ends the
/// dashboard; it must not go on reading a terminal that is gone.
#[test]
fn the_dashboard_ends_when_its_terminal_goes_away() {
    let agent = Agent::new();
    let tmux = Tmux::new();
    let command = format!(
        "env PMON_DATA_DIR={} {} query watch nobody-yet",
        agent.data_dir().display(),
        env!("CARGO_BIN_EXE_pmon-agent")
    );
    tmux.run(&[
        "new-session",
        "-d",
        "-x",
        "80",
        "-y",
        "24",
        "-s",
        "gone",
        &command,
    ]);
    wait_until("the dashboard waits for the run", || {
        tmux.capture("gone")
            .contains("waiting for experiment 'nobody-yet'")
    });
    let pid = tmux.run(&["display-message", "-p", "-t", "gone", "#{pane_pid}"]);
    let pid: u32 = String::from_utf8_lossy(&pid.stdout).trim().parse().unwrap();
    tmux.run(&["kill-server"]);
    wait_until("the dashboard has exited", || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
            stat.rsplit(')')
                .next()
                .is_some_and(|s| s.trim_start().starts_with('Z'))
        })
    });
}

/// The same dashboard over PostgreSQL: the run, its progress and its error.
#[test]
fn the_dashboard_reads_postgresql() {
    let (server, db) = shared_database();
    let url = server.url(&db);
    let agent = Agent::new().with_config("monitoring:\n  metrics_interval: 0.2\n");
    let program = "import time\nfrom tqdm import tqdm\nfor _ in tqdm(range(200), desc='fetch', mininterval=0):\n    time.sleep(0.001)\nraise KeyError('shard-7')\n";
    let out = agent
        .cmd(&[
            "wrap",
            "-e",
            "pgw",
            "--no-echo",
            "--",
            "python3",
            "-c",
            program,
        ])
        .env("PMON_DATABASE_URL", &url)
        .run_within("pmon-agent wrap -e");
    assert_eq!(out.status.code(), Some(1), "{}", stderr_text(&out));
    let tmux = Tmux::new();
    let command = format!(
        "cd {} && env PMON_DATA_DIR={} PMON_DATABASE_URL={url} {} query watch pgw",
        agent.dir.path().display(),
        agent.data_dir().display(),
        env!("CARGO_BIN_EXE_pmon-agent")
    );
    tmux.run(&[
        "new-session",
        "-d",
        "-x",
        "100",
        "-y",
        "30",
        "-s",
        "pg",
        &command,
    ]);
    wait_until("the PostgreSQL run on the dashboard", || {
        let screen = tmux.capture("pg");
        screen.contains("failed (exit 1)")
            && screen.contains("200/200")
            && screen.contains("KeyError: 'shard-7'")
            && screen.contains("┌ memory ")
    });
    tmux.run(&["send-keys", "-t", "pg", "q"]);
}

#[test]
fn off_a_terminal_it_points_at_query_status() {
    let agent = Agent::new();
    let out = agent.run(&["query", "watch", "anything"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_text(&out).contains(
            "needs a terminal; for a one-off report use pmon-agent query status anything"
        ),
        "{}",
        stderr_text(&out)
    );
}
