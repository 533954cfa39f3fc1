//! The live Python stacks of a running program, through `py-spy dump`:
//! `pmon-agent stack` prints them, the stall detector attaches them to its
//! `stall` event. py-spy reads another process's memory without stopping
//! it (ptrace), so it needs the permission to; the errors say how to get it.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long one `py-spy dump` may take.
const DUMP_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum PySpyError {
    #[error("py-spy is not installed (it reads a running Python program's stacks without stopping it); install it with pip install py-spy, then run this again")]
    NotInstalled,
    #[error("py-spy may not read process {pid}: {detail}; it needs to ptrace the program: run as root (sudo -E pmon-agent …), or allow it with sysctl kernel.yama.ptrace_scope=0, or in a container start it with --cap-add SYS_PTRACE")]
    NotPermitted { pid: u32, detail: String },
    #[error("py-spy could not read the stacks of process {pid}: {detail}")]
    Failed { pid: u32, detail: String },
}

/// `py-spy` on PATH.
pub fn find() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("py-spy"))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `py-spy dump --pid PID` (with `json`, `--json`): its output.
///
/// A process can be traced by one tracer at a time: when another py-spy
/// holds it (the stall detector taking its own dump, a second `stack`),
/// suspending it fails with EPERM though ptrace is allowed. That is tried
/// again a few times before it is reported.
pub fn dump(pid: u32, json: bool) -> Result<String, PySpyError> {
    let mut tries = 0;
    loop {
        match dump_once(pid, json) {
            Err(PySpyError::NotPermitted { detail, .. })
                if tries < 4
                    && detail.contains("Failed to suspend")
                    && super::is_alive(pid, None) =>
            {
                tries += 1;
                std::thread::sleep(Duration::from_millis(250 * tries));
            }
            other => return other,
        }
    }
}

fn dump_once(pid: u32, json: bool) -> Result<String, PySpyError> {
    let exe = find().ok_or(PySpyError::NotInstalled)?;
    let mut cmd = Command::new(exe);
    cmd.args(["dump", "--pid", &pid.to_string()]);
    if json {
        cmd.arg("--json");
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| PySpyError::Failed {
            pid,
            detail: e.to_string(),
        })?;
    let deadline = Instant::now() + DUMP_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                break;
            }
        }
    }
    let out = child.wait_with_output().map_err(|e| PySpyError::Failed {
        pid,
        detail: e.to_string(),
    })?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    // py-spy may append its own Rust backtrace: not for the user.
    let detail = String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Stack backtrace"))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let detail = if detail.is_empty() {
        format!("it ended with {}", out.status)
    } else {
        detail
    };
    if is_permission_problem(&detail) {
        Err(PySpyError::NotPermitted { pid, detail })
    } else {
        Err(PySpyError::Failed { pid, detail })
    }
}

fn is_permission_problem(detail: &str) -> bool {
    let lower = detail.to_ascii_lowercase();
    [
        "permission denied",
        "operation not permitted",
        "ptrace",
        "eperm",
    ]
    .iter()
    .any(|w| lower.contains(w))
}

/// The Python processes of a program: its root and its descendants whose
/// executable is a Python interpreter, root first.
pub fn python_processes(root: u32) -> Vec<u32> {
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        tree.extend(children_of(tree[i]));
        i += 1;
    }
    tree.into_iter().filter(|pid| is_python(*pid)).collect()
}

fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| super::parent_pid(*child) == Some(pid))
        .collect()
}

fn is_python(pid: u32) -> bool {
    std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| {
        exe.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("python") || n.starts_with("pypy"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptrace_refusals_are_told_apart() {
        assert!(is_permission_problem(
            "Error: Permission Denied: Try running again with elevated permissions"
        ));
        assert!(is_permission_problem(
            "Failed to attach: Operation not permitted (os error 1)"
        ));
        assert!(!is_permission_problem(
            "Error: Failed to find python version from target process"
        ));
    }

    #[test]
    fn this_test_is_not_a_python_process() {
        assert!(python_processes(std::process::id()).is_empty());
    }
}
