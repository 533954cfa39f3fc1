//! A program killed by the kernel's OOM killer is reported as such, not as a
//! bare SIGKILL: the program moves itself into a memory cgroup with a 64 MiB
//! limit (made here, at the root of the memory hierarchy, so no other test's
//! cgroup counts its kill) and allocates until the kernel kills it.

use crate::util::*;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const LIMIT_MIB: u64 = 64;

/// A memory cgroup with a limit, removed again on drop.
struct LimitedCgroup {
    dir: PathBuf,
}

impl LimitedCgroup {
    fn new(name: &str) -> LimitedCgroup {
        let name = format!("pmon-test-{name}-{}", std::process::id());
        let bytes = (LIMIT_MIB * 1048576).to_string();
        let v1 = PathBuf::from("/sys/fs/cgroup/memory");
        let (dir, file) = if v1.join("memory.limit_in_bytes").exists() {
            (v1.join(&name), "memory.limit_in_bytes")
        } else {
            (PathBuf::from("/sys/fs/cgroup").join(&name), "memory.max")
        };
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| {
            panic!("these tests need a memory cgroup they can create (root, cgroup v1 or v2 with the memory controller): {} : {e}", dir.display())
        });
        std::fs::write(dir.join(file), &bytes).unwrap();
        LimitedCgroup { dir }
    }
}

impl Drop for LimitedCgroup {
    fn drop(&mut self) {
        // The killed program may take a moment to leave the cgroup.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::remove_dir(&self.dir).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Grows by 4 MiB every 100 ms (touched, so it is resident) until the
/// kernel kills it: about 1.5 s in a 64 MiB cgroup, so the agent's memory
/// samples see it there.
const HOG: &str = r#"
import time
print("allocating", flush=True)
hog = []
while True:
    hog.append(b"x" * (4 << 20))
    time.sleep(0.1)
"#;

/// The program joins the cgroup first and then becomes the hog, as a
/// program started by `systemd-run` or a container would be.
fn hog_command(cgroup: &LimitedCgroup) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        r#"echo $$ > "$1/cgroup.procs" && exec python3 -c "$2""#.into(),
        "hog".into(),
        cgroup.dir.display().to_string(),
        HOG.into(),
    ]
}

fn assert_oom_text(text: &str, context: &str) {
    assert!(
        text.contains("killed by SIGKILL (likely out of memory: the kernel's OOM killer ran during the run; last memory sample")
            && text.contains(&format!("of a {LIMIT_MIB}.0 MiB limit)")),
        "{text}\n{context}"
    );
}

#[test]
fn wrap_reports_an_oom_kill_with_the_last_memory_sample() {
    let agent = Agent::new().with_config("monitoring:\n  metrics_interval: 0.1\n");
    let cgroup = LimitedCgroup::new("wrap");
    let mut args = vec!["wrap", "-e", "hog", "--"];
    let command = hog_command(&cgroup);
    args.extend(command.iter().map(String::as_str));
    let out = agent.run(&args);
    assert_eq!(out.status.code(), Some(137), "{}", stderr_text(&out));
    let details: String = agent
        .sql()
        .query_row(
            "SELECT details FROM pipeline_events WHERE event_type = 'exit'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_oom_text(&stderr_text(&out), &format!("exit event: {details}"));
    let details: serde_json::Value = serde_json::from_str(&details).unwrap();
    assert_eq!(details["signal_name"], "SIGKILL");
    assert_oom_text(details["likely_out_of_memory"].as_str().unwrap(), "");
    let rss = details["last_rss_bytes"].as_u64().unwrap();
    // Python alone is about 10 MiB. VmRSS also counts shared library pages
    // charged to another cgroup, so it can pass the limit a little.
    assert!(rss > 20 * 1048576 && rss < LIMIT_MIB * 1048576 * 2, "{rss}");
    // The cgroup's limit is sampled once the program has moved into it (the
    // dashboard draws it above the memory chart).
    let limits = agent.json_lines(&[
        "query",
        "metrics",
        "hog",
        "--type",
        "memory",
        "--name",
        "limit_bytes",
    ]);
    assert_eq!(limits.len(), 1, "sent once, when first seen: {limits:?}");
    assert_eq!(
        limits[0]["value"].as_f64(),
        Some((LIMIT_MIB * 1048576) as f64)
    );
}

#[test]
fn a_daemon_killed_for_memory_says_so_in_its_status() {
    let agent = Agent::new();
    let cgroup = LimitedCgroup::new("daemon");
    let mut args = vec!["daemon", "start", "--name", "hog", "--"];
    let command = hog_command(&cgroup);
    args.extend(command.iter().map(String::as_str));
    let out = agent.run(&args);
    assert!(out.status.success(), "{}", stderr_text(&out));
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut status = serde_json::Value::Null;
    while Instant::now() < deadline {
        status = agent.json_lines(&["daemon", "status", "hog"]).remove(0);
        if status["state"] == "crashed" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(status["state"], "crashed", "{status}");
    let events: Vec<String> = {
        let db = agent.sql();
        let mut stmt = db
            .prepare("SELECT event_type || ' ' || details FROM pipeline_events ORDER BY id")
            .unwrap();
        let rows = stmt.query_map([], |r| r.get(0)).unwrap();
        rows.map(Result::unwrap).collect()
    };
    let last_error = status["last_error"].as_str().unwrap_or_default();
    assert_oom_text(last_error, &format!("events: {events:#?}"));
    let text = String::from_utf8(agent.run(&["daemon", "status", "hog"]).stdout).unwrap();
    assert!(text.contains("likely out of memory"), "{text}");
}

#[test]
fn an_oom_kill_posts_one_oom_notification() {
    let hook = crate::notify::Hook::start();
    let agent = Agent::new().with_config(&format!(
        "monitoring:\n  metrics_interval: 0.1\nnotify:\n  webhook: {}\n",
        hook.url()
    ));
    let cgroup = LimitedCgroup::new("notify");
    let mut args = vec!["wrap", "-e", "hog", "--"];
    let command = hog_command(&cgroup);
    args.extend(command.iter().map(String::as_str));
    let out = agent.run(&args);
    assert_eq!(out.status.code(), Some(137), "{}", stderr_text(&out));
    wait_until("the notification is sent", || {
        agent.count(
            "SELECT count(*) FROM pipeline_events WHERE event_type IN ('notify', 'notify_failed')",
        ) >= 1
    });
    let posts = hook.posts();
    assert_eq!(posts.len(), 1, "{posts:#?}");
    assert_eq!(posts[0]["event"], "oom");
    assert_eq!(posts[0]["state"], "crashed");
    assert_eq!(posts[0]["signal"], "SIGKILL");
    let text = posts[0]["text"].as_str().unwrap();
    assert!(text.starts_with("hog (run 1) crashed after "), "{text}");
    assert_oom_text(text, "");
    assert_oom_text(posts[0]["oom"].as_str().unwrap(), "");
}
