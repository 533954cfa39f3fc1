//! Facts about processes read from /proc: whether a pid is still the process
//! we started (pid reuse is real on long-running hosts), and its start time.
//! [`oom`] watches a program's memory to tell an out-of-memory kill from any
//! other SIGKILL.

pub mod oom;

/// The start time of `pid` in clock ticks since boot (field 22 of
/// `/proc/PID/stat`), or `None` if the process does not exist.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses.
    let after_comm = &stat[stat.rfind(')')? + 2..];
    after_comm.split(' ').nth(19)?.parse().ok()
}

/// True if `pid` exists and, when `start` is known, is the same process.
pub fn is_alive(pid: u32, start: Option<u64>) -> bool {
    match (start_time(pid), start) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(now), Some(then)) => now == then,
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
}
