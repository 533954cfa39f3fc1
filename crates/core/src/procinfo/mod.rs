//! Facts about processes read from /proc: whether a pid is still the process
//! we started (pid reuse is real on long-running hosts), and its start time.
//! [`oom`] watches a program's memory to tell an out-of-memory kill from any
//! other SIGKILL.

pub mod oom;
pub mod pyspy;

/// The start time of `pid` in clock ticks since boot (field 22 of
/// `/proc/PID/stat`), or `None` if the process does not exist.
pub fn start_time(pid: u32) -> Option<u64> {
    stat_fields(pid)?.1
}

/// The state letter (field 3) and start time (field 22) of `pid`.
fn stat_fields(pid: u32) -> Option<(char, Option<u64>)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses.
    let after_comm = &stat[stat.rfind(')')? + 2..];
    let state = after_comm.chars().next()?;
    Some((
        state,
        after_comm.split(' ').nth(19).and_then(|s| s.parse().ok()),
    ))
}

/// True if `pid` is a running (or stopped, or sleeping) process and, when
/// `start` is known, the same process. A zombie is dead: it has exited and
/// only waits to be reaped, which a container's PID 1 may never do.
pub fn is_alive(pid: u32, start: Option<u64>) -> bool {
    match stat_fields(pid) {
        None => false,
        Some(('Z' | 'X' | 'x', _)) => false,
        Some((_, now)) => start.is_none() || now == start,
    }
}

/// Resident set size of `pid` in bytes (`VmRSS` in /proc/PID/status).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// This machine's name, for telling runs on different hosts apart.
/// The parent of `pid`, if it lives.
pub fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split(' ').nth(1)?.parse().ok()
}

pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_a_reused_pid_is_not() {
        let me = std::process::id();
        let start = start_time(me);
        assert!(start.is_some());
        assert!(is_alive(me, start));
        assert!(!is_alive(me, start.map(|s| s + 1)));
        assert!(!is_alive(u32::MAX - 1, None));
    }

    #[test]
    fn a_zombie_is_dead() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Exited, not yet reaped: a zombie until `wait`.
        while stat_fields(pid).is_some_and(|(state, _)| state != 'Z') {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(stat_fields(pid).map(|(s, _)| s), Some('Z'));
        assert!(!is_alive(pid, None));
        assert!(!is_alive(pid, start_time(pid)));
        child.wait().unwrap();
    }
}
