//! Notifications and error groups, end to end: a real HTTP server on
//! 127.0.0.1 receives the webhook's POSTs, a real shell command receives the
//! `PMON_*` variables, and real Python programs fail, crash and log errors.

use crate::util::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A webhook receiver: records the JSON body of every POST and answers 200,
/// or (`holding`) accepts connections and never answers.
pub struct Hook {
    port: u16,
    posts: Arc<Mutex<Vec<Value>>>,
    accepted: Arc<AtomicUsize>,
}

impl Hook {
    pub fn start() -> Hook {
        Hook::serve(true)
    }

    fn holding() -> Hook {
        Hook::serve(false)
    }

    fn serve(answer: bool) -> Hook {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let posts = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (seen, count) = (posts.clone(), accepted.clone());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming().flatten() {
                count.fetch_add(1, Ordering::SeqCst);
                if answer {
                    if let Some(body) = read_post(&stream) {
                        seen.lock().unwrap().push(body);
                    }
                    let _ = (&stream).write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    );
                } else {
                    held.push(stream);
                }
            }
        });
        Hook {
            port,
            posts,
            accepted,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    pub fn posts(&self) -> Vec<Value> {
        self.posts.lock().unwrap().clone()
    }
}

/// The JSON body of one HTTP/1.1 POST with a Content-Length.
fn read_post(stream: &TcpStream) -> Option<Value> {
    let mut reader = BufReader::new(stream);
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    serde_json::from_slice(&body).ok()
}

/// How many notifications the store says were sent or failed.
fn notify_events(agent: &Agent) -> i64 {
    agent.count(
        "SELECT count(*) FROM pipeline_events WHERE event_type IN ('notify', 'notify_failed')",
    )
}

/// Dies of SIGKILL right after printing a traceback, as a process killed
/// by a watchdog after an error would.
const CRASHER: &str = r#"
import os, signal, sys, traceback
print("starting", flush=True)
def load_shard(n):
    raise ValueError(f"shard {n} is corrupt")
try:
    load_shard(7)
except ValueError:
    traceback.print_exc()
    sys.stderr.flush()
os.kill(os.getpid(), signal.SIGKILL)
"#;

#[test]
fn a_crashed_daemon_posts_one_message_naming_its_exception() {
    let hook = Hook::start();
    // The flag, not the configuration: it must reach each run's shipper
    // through the detached supervisor.
    let agent = Agent::new();
    let url = hook.url();
    let out = agent.run(&[
        "daemon", "start", "--name", "crashy", "--notify", &url, "--", "python3", "-c", CRASHER,
    ]);
    assert!(out.status.success(), "{}", stderr_text(&out));
    wait_until("the notification is sent", || notify_events(&agent) >= 1);
    let posts = hook.posts();
    assert_eq!(posts.len(), 1, "{posts:#?}");
    let n = &posts[0];
    assert_eq!(n["event"], "crashed");
    assert_eq!(n["experiment_id"], "crashy");
    assert_eq!(n["daemon"], "crashy");
    assert_eq!(n["run"], 1);
    assert_eq!(n["state"], "crashed");
    assert_eq!(n["signal"], "SIGKILL");
    assert_eq!(n["exception_type"], "ValueError");
    assert_eq!(n["exception_message"], "shard 7 is corrupt");
    assert_eq!(n["location"], "<string>:5 in load_shard");
    assert_eq!(n["new_error_group"], true, "the first run's error is new");
    let text = n["text"].as_str().unwrap();
    assert!(
        text.starts_with("daemon crashy (run 1) crashed after "),
        "{text}"
    );
    assert!(
        text.ends_with(": killed by SIGKILL; last error: ValueError: shard 7 is corrupt at <string>:5 (a new error)"),
        "{text}"
    );
    let sent: String = agent
        .sql()
        .query_row(
            "SELECT details FROM pipeline_events WHERE event_type = 'notify'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let sent: Value = serde_json::from_str(&sent).unwrap();
    assert_eq!(sent["event"], "crashed");
    assert_eq!(sent["to"], "webhook");
    assert_eq!(sent["target"], format!("http://127.0.0.1:{}/…", hook.port));
}

#[test]
fn a_command_notification_sees_the_run_in_its_environment() {
    let agent = Agent::new();
    let seen = agent.dir.path().join("seen");
    let command = format!(
        "env | grep ^PMON_ | sort > {0}.env; cat > {0}.json",
        seen.display()
    );
    let program = "d = {}\ndef lookup(key):\n    return d[key]\nlookup('user_id')\n";
    let out = agent.run(&[
        "wrap", "-e", "env-test", "--notify", &command, "--", "python3", "-c", program,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_text(&out));
    wait_until("the command has run", || notify_events(&agent) >= 1);
    let env = std::fs::read_to_string(seen.with_extension("env")).unwrap();
    let vars: std::collections::HashMap<&str, &str> =
        env.lines().filter_map(|l| l.split_once('=')).collect();
    assert_eq!(vars["PMON_EVENT"], "failed");
    assert_eq!(vars["PMON_EXPERIMENT"], "env-test");
    assert_eq!(vars["PMON_RUN"], "1");
    assert_eq!(vars["PMON_STATE"], "failed");
    assert_eq!(vars["PMON_EXIT_CODE"], "1");
    assert_eq!(vars.get("PMON_SIGNAL").copied().unwrap_or(""), "");
    assert_eq!(vars["PMON_EXCEPTION_TYPE"], "KeyError");
    assert_eq!(vars["PMON_EXCEPTION_MESSAGE"], "'user_id'");
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    assert_eq!(vars["PMON_HOST"], host);
    assert!(
        vars["PMON_TEXT"].starts_with("env-test (run 1) failed after "),
        "{env}"
    );
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(seen.with_extension("json")).unwrap())
            .unwrap();
    assert_eq!(json["event"], "failed");
    assert_eq!(json["exit_code"], 1);
    assert_eq!(json["text"], vars["PMON_TEXT"]);
}

#[test]
fn a_webhook_that_never_answers_does_not_hold_the_program_up() {
    let hook = Hook::holding();
    let agent = Agent::new().with_config(&format!(
        "notify:\n  webhook: {}\n  timeout: 10m\n  retries: 0\n",
        hook.url()
    ));
    // `output()` waits for the agent and for everything holding its
    // stdout and stderr: a notifier that kept them would show here.
    let out = agent.run(&[
        "wrap",
        "-e",
        "quiet",
        "--",
        "python3",
        "-c",
        "print('done'); raise SystemExit(3)",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr_text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "done\n");
    // The notifier did reach the webhook, and is still waiting for its
    // answer: the program's end did not wait for it.
    wait_until("the notifier connects", || {
        hook.accepted.load(Ordering::SeqCst) >= 1
    });
    assert_eq!(notify_events(&agent), 0);
    assert!(hook.posts().is_empty());
    // It would wait out its 10 minutes; it is not the test's to keep.
    let data_dir = agent.data_dir().display().to_string();
    for pid in processes_with_args(&["notify-send", &data_dir]) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Live processes with all of `args` among their arguments.
fn processes_with_args(args: &[&str]) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let have: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.iter()
                .all(|a| have.contains(&a.as_bytes()))
                .then_some(pid)
        })
        .collect()
}

/// Logs each bug named on its command line with its traceback, and goes on:
/// `A:n` a KeyError in load_user, `B:x` a ValueError in parse_row, `C` a
/// ZeroDivisionError in compute_rate.
const BUGS: &str = r#"
import logging, sys
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
log = logging.getLogger("app")
def load_user(uid):
    users = {}
    return users[f"user-{uid}"]
def parse_row(row):
    return int(row)
def compute_rate(n):
    return 100 / n
for arg in sys.argv[1:]:
    kind, _, value = arg.partition(":")
    try:
        {"A": load_user, "B": parse_row, "C": compute_rate}[kind](value if kind != "C" else 0)
    except Exception:
        log.exception("step %s failed", arg)
print("finished", flush=True)
"#;

#[test]
fn error_groups_count_each_bug_once_across_runs_and_show_the_new_one() {
    let hook = Hook::start();
    let agent = Agent::new();
    let script = agent.dir.path().join("bugs.py");
    std::fs::write(&script, BUGS).unwrap();
    let script = script.display().to_string();
    for bugs in [&["A:1", "A:2", "B:x"][..], &["A:3", "B:y"]] {
        let mut args = vec!["wrap", "-e", "bugs", "--no-echo", "--", "python3", &script];
        args.extend(bugs);
        let out = agent.run(&args);
        assert!(out.status.success(), "{}", stderr_text(&out));
    }
    let url = hook.url();
    let out = agent.run(&[
        "wrap",
        "-e",
        "bugs",
        "--no-echo",
        "--notify",
        &url,
        "--",
        "python3",
        &script,
        "A:4",
        "C",
    ]);
    assert!(out.status.success(), "{}", stderr_text(&out));

    let groups = agent.json_lines(&["query", "errors", "bugs", "--group"]);
    let by_type: std::collections::HashMap<String, &Value> = groups
        .iter()
        .map(|g| (g["exception_type"].as_str().unwrap().to_string(), g))
        .collect();
    assert_eq!(groups.len(), 3, "{groups:#?}");
    let key_error = by_type["KeyError"];
    assert_eq!(
        (key_error["count"].as_i64(), key_error["runs"].as_i64()),
        (Some(4), Some(3))
    );
    assert_eq!(key_error["message"], "'user-4'", "the latest message");
    let value_error = by_type["ValueError"];
    assert_eq!(
        (value_error["count"].as_i64(), value_error["runs"].as_i64()),
        (Some(2), Some(2))
    );
    let zero = by_type["ZeroDivisionError"];
    assert_eq!(
        (zero["count"].as_i64(), zero["runs"].as_i64()),
        (Some(1), Some(1))
    );
    assert!(
        zero["traceback"].is_null(),
        "tracebacks only with --traceback"
    );
    assert!(key_error["first_seen"].as_str() < key_error["last_seen"].as_str());

    let new = agent.json_lines(&["query", "errors", "bugs", "--group", "--new", "--traceback"]);
    assert_eq!(new.len(), 1, "{new:#?}");
    assert_eq!(new[0]["exception_type"], "ZeroDivisionError");
    let traceback = new[0]["traceback"].as_str().unwrap();
    assert!(
        traceback.contains("in compute_rate\n")
            && traceback.ends_with("ZeroDivisionError: division by zero\n"),
        "{traceback}"
    );

    // Without an experiment: every experiment's groups, with its name.
    let all = agent.json_lines(&["query", "errors", "--group"]);
    assert_eq!(all.len(), 3);
    assert!(all.iter().all(|g| g["experiment_id"] == "bugs"));
    let text =
        String::from_utf8(agent.run(&["query", "errors", "bugs", "--group"]).stdout).unwrap();
    assert!(
        text.lines()
            .next()
            .unwrap()
            .starts_with(" COUNT  RUNS  FIRST SEEN"),
        "{text}"
    );
    assert!(
        text.contains("     4     3  ") && text.contains("KeyError: 'user-4'"),
        "{text}"
    );

    // Run 3 notified its one new group, once; the KeyError was not new.
    wait_until("the notification is sent", || notify_events(&agent) >= 1);
    let posts = hook.posts();
    assert_eq!(posts.len(), 1, "{posts:#?}");
    assert_eq!(posts[0]["event"], "new_error_group");
    assert_eq!(posts[0]["exception_type"], "ZeroDivisionError");
    assert_eq!(posts[0]["run"], 3);
    assert_eq!(posts[0]["error_group"], zero["group"]);
    let text = posts[0]["text"].as_str().unwrap();
    assert!(
        text.starts_with(
            "bugs (run 3): new error: ZeroDivisionError: division by zero at bugs.py:"
        ),
        "{text}"
    );
}

#[test]
fn a_run_whose_agent_is_killed_posts_lost() {
    let hook = Hook::start();
    let agent = Agent::new();
    let go = agent.dir.path().join("go");
    let url = hook.url();
    let program = until_go("tick");
    let mut cmd = agent.cmd(&[
        "wrap", "-e", "orphan", "--notify", &url, "--", "python3", "-c", &program,
    ]);
    cmd.env("PMON_GO", &go)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let running = cmd.start("pmon-agent wrap -e");
    wait_until("the program's lines are stored", || {
        agent.count("SELECT count(*) FROM pipeline_logs WHERE message LIKE 'tick %'") > 0
    });
    let holder = nix::unistd::Pid::from_raw(running.id() as i32);
    nix::sys::signal::kill(holder, nix::sys::signal::Signal::SIGKILL).unwrap();
    wait_until("the notification is sent", || notify_events(&agent) >= 1);
    // The program loses its terminal pipe; it is told to end in any case.
    std::fs::write(&go, "").unwrap();
    let posts = hook.posts();
    assert_eq!(posts.len(), 1, "{posts:#?}");
    assert_eq!(posts[0]["event"], "lost");
    assert_eq!(posts[0]["state"], "lost");
    let text = posts[0]["text"].as_str().unwrap();
    assert!(text.starts_with("orphan (run 1) lost after "), "{text}");
    let _ = running.wait_with_output().unwrap();
}

#[test]
fn a_daemon_whose_restarts_give_up_says_so_once() {
    let hook = Hook::start();
    let agent = Agent::new()
        .with_config("daemon:\n  first_backoff: 100ms\n  max_restarts: 1\n  restart_window: 10m\n");
    let url = hook.url();
    let out = agent.run(&[
        "daemon",
        "start",
        "--name",
        "flaky",
        "--restart",
        "on-failure",
        "--notify",
        &url,
        "--notify-on",
        "restart_gave_up",
        "--",
        "python3",
        "-c",
        "raise SystemExit(2)",
    ]);
    assert!(out.status.success(), "{}", stderr_text(&out));
    wait_until("the notification is sent", || notify_events(&agent) >= 1);
    let posts = hook.posts();
    assert_eq!(posts.len(), 1, "only what --notify-on asks for: {posts:#?}");
    assert_eq!(posts[0]["event"], "restart_gave_up");
    assert_eq!(posts[0]["daemon"], "flaky");
    let text = posts[0]["text"].as_str().unwrap();
    assert_eq!(
        text,
        "daemon flaky gave up after 1 restarts within 10m; its last run: exit code 2"
    );
}

/// An HTTPS webhook receiver (Python's http.server behind its ssl module)
/// with a certificate for 127.0.0.1 signed by a CA made here; appends each
/// POST's body to `posts.jsonl`. Returns it, its port and the CA.
fn https_hook(agent: &Agent) -> (Running, u16, std::path::PathBuf) {
    let dir = agent.dir.path().join("https");
    std::fs::create_dir_all(&dir).unwrap();
    let openssl = |args: &[&str]| {
        let out = command("openssl")
            .args(args)
            .current_dir(&dir)
            .run_within("openssl");
        assert!(out.status.success(), "{}", stderr_text(&out));
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=hook CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "hook.key",
        "-out",
        "hook.csr",
    ]);
    std::fs::write(dir.join("san.ext"), "subjectAltName = IP:127.0.0.1\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "hook.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "hook.crt",
    ]);
    let server = r#"
import http.server, ssl, sys
class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with open("posts.jsonl", "ab") as f:
            f.write(body + b"\n")
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Hook)
tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
tls.load_cert_chain("hook.crt", "hook.key")
server.socket = tls.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"#;
    let port = crate::pg_server::free_port();
    let running = agent
        .program("python3")
        .args(["-c", server, &port.to_string()])
        .current_dir(&dir)
        .start("an HTTPS webhook receiver");
    wait_until("the HTTPS receiver listens", || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (running, port, dir.join("ca.crt"))
}

#[test]
fn an_https_webhook_is_verified_against_the_trusted_cas() {
    let agent = Agent::new();
    let (_hook, port, ca) = https_hook(&agent);
    let config = agent.dir.path().join("hooked.yml");
    std::fs::write(
        &config,
        format!(
            "notify:\n  webhook: https://127.0.0.1:{port}/hook\n  retries: 0\n  timeout: 20s\n"
        ),
    )
    .unwrap();
    let posts = agent.dir.path().join("https/posts.jsonl");
    let fail = |exp: &str, trust: Option<&std::path::Path>| {
        let mut cmd = agent.cmd(&[
            "--config",
            config.to_str().unwrap(),
            "wrap",
            "-e",
            exp,
            "--",
            "python3",
            "-c",
            "raise SystemExit(4)",
        ]);
        // OpenSSL's own variable: the CAs it trusts instead of the system's.
        match trust {
            Some(ca) => cmd.env("SSL_CERT_FILE", ca),
            None => cmd.env_remove("SSL_CERT_FILE"),
        };
        let out = cmd.run_within("wrap with an HTTPS webhook");
        assert_eq!(out.status.code(), Some(4), "{}", stderr_text(&out));
    };
    fail("trusted", Some(&ca));
    wait_until("the POST arrives over TLS", || {
        std::fs::read_to_string(&posts).is_ok_and(|p| p.contains("\"trusted\""))
    });
    let post: Value = serde_json::from_str(
        std::fs::read_to_string(&posts)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        (post["event"].as_str(), post["experiment_id"].as_str()),
        (Some("failed"), Some("trusted"))
    );
    // The system's CAs do not include the test's: refused, never posted.
    fail("untrusted", None);
    wait_until("the failed delivery is recorded", || {
        agent.count(
            "SELECT count(*) FROM pipeline_events WHERE event_type = 'notify_failed' AND experiment_id = 'untrusted'",
        ) == 1
    });
    assert!(!std::fs::read_to_string(&posts)
        .unwrap()
        .contains("\"untrusted\""));
}
