//! Waking up when watched files change: inotify on the watched directories
//! (a directory watch also reports writes to the files in it), with a slow
//! rescan as a safety net for file systems that do not report (NFS, FUSE).
//! Without inotify — none available, or its limits reached — the tailer
//! polls, and says once which sysctl to raise.

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use std::collections::HashSet;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long to wait for an event before rescanning anyway.
const RESCAN_WITH_EVENTS: Duration = Duration::from_secs(1);
/// How often to poll when there are no events to wait for.
const POLL_WITHOUT_EVENTS: Duration = Duration::from_millis(250);

/// The write end of the wake-up pipe of the live watcher (-1: none): how a
/// signal handler thread makes `wait` return at once instead of at the rescan.
static WAKE_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

/// Makes a waiting `Watcher::wait` return now (SIGTERM: stop following).
pub fn wake() {
    let fd = WAKE_FD.load(std::sync::atomic::Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: writing one byte to a pipe fd this process owns.
        unsafe { libc::write(fd, b"x".as_ptr().cast(), 1) };
    }
}

pub struct Watcher {
    inotify: Option<Inotify>,
    /// Read end of the wake-up pipe.
    wake: Option<std::os::fd::OwnedFd>,
    watched: HashSet<PathBuf>,
    warned: bool,
}

impl Watcher {
    pub fn new() -> Watcher {
        let inotify = match Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC) {
            Ok(i) => Some(i),
            Err(e) => {
                warn_polling(&limit_advice(
                    e,
                    "inotify instances",
                    "fs.inotify.max_user_instances",
                ));
                None
            }
        };
        let wake = nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC)
            .ok()
            .map(|(read, write)| {
                use std::os::fd::IntoRawFd;
                WAKE_FD.store(write.into_raw_fd(), std::sync::atomic::Ordering::SeqCst);
                read
            });
        Watcher {
            warned: inotify.is_none(),
            inotify,
            wake,
            watched: HashSet::new(),
        }
    }

    /// Watches the directories that hold the named paths (and named directories).
    pub fn watch(&mut self, paths: &[PathBuf]) {
        let Some(inotify) = &self.inotify else {
            return;
        };
        for path in paths {
            let dir = if path.is_dir() {
                path.as_path()
            } else {
                parent_dir(path)
            };
            if self.watched.contains(dir) || !dir.is_dir() {
                continue;
            }
            let flags = AddWatchFlags::IN_MODIFY
                | AddWatchFlags::IN_CREATE
                | AddWatchFlags::IN_MOVED_FROM
                | AddWatchFlags::IN_MOVED_TO
                | AddWatchFlags::IN_DELETE
                | AddWatchFlags::IN_CLOSE_WRITE
                | AddWatchFlags::IN_ATTRIB;
            match inotify.add_watch(dir, flags) {
                Ok(_) => {
                    self.watched.insert(dir.to_path_buf());
                }
                Err(e) if !self.warned => {
                    self.warned = true;
                    let advice = limit_advice(e, "inotify watches", "fs.inotify.max_user_watches");
                    warn_polling(&format!("cannot watch {}: {advice}", dir.display()));
                }
                Err(_) => {}
            }
        }
    }

    /// Waits until something may have changed (or the rescan interval passed).
    pub fn wait(&self) {
        let Some(inotify) = &self.inotify else {
            std::thread::sleep(POLL_WITHOUT_EVENTS);
            return;
        };
        if self.watched.is_empty() {
            std::thread::sleep(POLL_WITHOUT_EVENTS);
            return;
        }
        let timeout = PollTimeout::try_from(RESCAN_WITH_EVENTS.as_millis() as i32)
            .unwrap_or(PollTimeout::NONE);
        let mut fds = vec![PollFd::new(inotify.as_fd(), PollFlags::POLLIN)];
        if let Some(wake) = &self.wake {
            fds.push(PollFd::new(wake.as_fd(), PollFlags::POLLIN));
        }
        if let Ok(n) = poll(&mut fds, timeout) {
            if n > 0 {
                // Drain: one pass handles however many events arrived.
                while inotify.read_events().is_ok_and(|events| !events.is_empty()) {}
                if let Some(wake) = &self.wake {
                    let mut buf = [0u8; 64];
                    while nix::unistd::read(wake, &mut buf).is_ok_and(|n| n > 0) {}
                }
            }
        }
    }
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Turns inotify's limit errors into the sysctl to raise.
fn limit_advice(err: Errno, what: &str, sysctl: &str) -> String {
    match err {
        Errno::ENOSPC | Errno::EMFILE => format!(
            "the limit on {what} is reached; raise it with `sysctl {sysctl}=524288` (and in /etc/sysctl.conf to keep it)"
        ),
        other => format!("inotify is not available ({other})"),
    }
}

fn warn_polling(reason: &str) {
    eprintln!(
        "pmon-agent: warning: {reason}; checking files every {} ms instead",
        POLL_WITHOUT_EVENTS.as_millis()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_errors_name_the_sysctl_to_raise() {
        let advice = limit_advice(
            Errno::ENOSPC,
            "inotify watches",
            "fs.inotify.max_user_watches",
        );
        assert!(
            advice.contains("sysctl fs.inotify.max_user_watches="),
            "{advice}"
        );
    }

    #[test]
    fn a_write_in_a_watched_directory_wakes_the_waiter_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Watcher::new();
        w.watch(&[dir.path().to_path_buf()]);
        let file = dir.path().join("a.log");
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            std::fs::write(file, "x\n").unwrap();
        });
        let started = std::time::Instant::now();
        w.wait();
        writer.join().unwrap();
        assert!(
            started.elapsed() < Duration::from_millis(900),
            "woke by the event, not the rescan"
        );
    }
}
