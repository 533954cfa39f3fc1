//! A full disk: the data dir on a small tmpfs this test mounts (as root),
//! filled until the capture, the store and the plain log cannot grow. The
//! program keeps running and echoing and ends with its own exit code; the
//! agent warns (not once a line), never leaves a corrupt SQLite file, keeps
//! what it had stored, and resumes by itself when space returns.

use crate::util::*;
use std::process::Stdio;

/// A tmpfs of `size` mounted on `dir`, unmounted when dropped.
struct SmallDisk {
    dir: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(dir: &std::path::Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(dir).unwrap();
        let out = command("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .run_within("mount");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs and needs root (CI runs as root): {}",
            stderr_text(&out)
        );
        SmallDisk {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = command("umount")
            .arg("-l")
            .arg(&self.dir)
            .status_within("umount");
    }
}

/// Prints 3,000 lines (the disk fills on the way), says so in a file
/// outside the data dir, waits for `$PMON_GO`, prints 300 more, exits 0.
const PROGRAM: &str = r#"
import os, sys
go = os.environ['PMON_GO']
for i in range(3000):
    print(f'INFO:disk:line first {i} ' + 'x' * 200, flush=True)
open(go + '.filled', 'w').close()
while not os.path.exists(go):
    import time; time.sleep(0.05)
for i in range(300):
    print(f'INFO:disk:line after {i}', flush=True)
"#;

#[test]
fn a_full_data_dir_never_harms_the_program_and_recovers_by_itself() {
    let agent = Agent::new();
    let _disk = SmallDisk::mount(&agent.data_dir(), "2m");
    // The store exists before the disk fills (as it would for a user's
    // second run); then almost everything is taken.
    assert!(agent
        .run(&["wrap", "-e", "first", "--", "true"])
        .status
        .success());
    let ballast = agent.data_dir().join("ballast");
    let free = nix::sys::statvfs::statvfs(&agent.data_dir()).unwrap();
    let keep = 150 * 1024;
    let fill = (free.blocks_available() as u64 * free.fragment_size() as u64).saturating_sub(keep);
    std::fs::write(&ballast, vec![0u8; fill as usize]).unwrap();

    let go = agent.dir.path().join("go");
    let mut child = agent
        .cmd(&["wrap", "-e", "disk", "--", "python3", "-c", PROGRAM])
        .env("PMON_GO", &go)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .start("pmon-agent wrap -e");
    // The echo is read as it comes, as a terminal would.
    let mut stdout = child.stdout.take().unwrap();
    let echo = std::thread::spawn(move || {
        let mut all = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut all).unwrap();
        all
    });
    let wrap = child;
    wait_until("the program printed while the disk filled", || {
        go.with_extension("filled").exists()
    });
    // Space returns while the program still runs.
    std::fs::remove_file(&ballast).unwrap();
    std::fs::write(&go, "").unwrap();
    let out = wrap.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_text(&out));
    let echoed = String::from_utf8(echo.join().unwrap()).unwrap();
    assert_eq!(
        echoed.lines().count(),
        3300,
        "every line reached the terminal"
    );
    let err = stderr_text(&out);
    let warnings = err.lines().filter(|l| l.contains("warning")).count();
    assert!(
        (1..=6).contains(&warnings),
        "warned, not once a line ({warnings}):\n{err}"
    );
    assert!(
        err.contains("free space"),
        "the warning says what to do:\n{err}"
    );

    let integrity: String = agent
        .sql()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    // Resumed by itself: everything printed after space returned is stored.
    wait_until("the lines after the disk emptied are stored", || {
        agent.count("SELECT count(*) FROM pipeline_logs WHERE message LIKE 'line after %'") == 300
    });
    assert_eq!(
        agent.count("SELECT count(*) - count(DISTINCT message) FROM pipeline_logs"),
        0,
        "nothing twice"
    );
    let status = agent.status("disk");
    assert_eq!(status["state"], "succeeded");
    // What could not be kept is counted, in an event written once space returned.
    let lost: i64 = agent.count(
        "SELECT coalesce(sum(json_extract(details, '$.bytes_lost')), 0) FROM pipeline_events WHERE event_type = 'capture_incomplete'",
    );
    assert!(
        lost > 0,
        "the lost bytes are counted in a capture_incomplete event"
    );
}
