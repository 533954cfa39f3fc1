//! Telling an out-of-memory kill from any other SIGKILL.
//!
//! The kernel's OOM killer ends a process with SIGKILL and leaves no trace in
//! its exit status, so a pipeline that ran out of memory in the night looks
//! exactly like one someone killed with `kill -9`. [`MemoryWatch`] samples the
//! program's resident memory, and the limit and OOM-kill count of its memory
//! cgroup (v2 `memory.max`/`memory.events.local`, v1
//! `memory.limit_in_bytes`/`memory.oom_control`), while it runs. When the
//! program dies of SIGKILL, [`MemoryWatch::verdict`] says "likely out of
//! memory" if the kernel killed something for memory in the program's cgroup
//! during the run (the machine-wide count in `/proc/vmstat` when the cgroup
//! keeps none), or if the last sample was within 10% of the limit.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often the program's memory is sampled: often enough that the last
/// sample before an OOM kill is close to the peak, cheap enough to forget.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// A memory sample within this fraction of the limit counts as "at the limit".
const NEAR_LIMIT: f64 = 0.9;

/// Samples one program's memory on a small thread until dropped.
pub struct MemoryWatch {
    shared: Arc<Shared>,
    oom_kills_at_start: Option<u64>,
}

#[derive(Default)]
struct Shared {
    pid: AtomicU32,
    last_rss: AtomicU64,
    /// The program's memory cgroup as last seen, with its OOM-kill count
    /// when first seen (a program may move itself into another cgroup).
    cgroup: Mutex<Option<(MemoryCgroup, Option<u64>)>>,
    done: AtomicBool,
}

/// Why a SIGKILL was probably the OOM killer, with the numbers that say so.
#[derive(Debug, Clone, PartialEq)]
pub struct OomVerdict {
    pub last_rss_bytes: Option<u64>,
    pub limit_bytes: Option<u64>,
    /// The kernel's OOM-kill count rose while the program ran.
    pub kernel_oom_kill: bool,
}

impl OomVerdict {
    /// `killed by SIGKILL (likely out of memory: …)`, as status shows it.
    pub fn describe(&self) -> String {
        let mut why = Vec::new();
        if self.kernel_oom_kill {
            why.push("the kernel's OOM killer ran during the run".to_string());
        }
        match (self.last_rss_bytes, self.limit_bytes) {
            (Some(rss), Some(limit)) => why.push(format!(
                "last memory sample {} of a {} limit",
                mib(rss),
                mib(limit)
            )),
            (Some(rss), None) => why.push(format!("last memory sample {}", mib(rss))),
            _ => {}
        }
        format!(
            "killed by SIGKILL (likely out of memory: {})",
            why.join("; ")
        )
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1048576.0)
}

impl MemoryWatch {
    /// Starts sampling; [`MemoryWatch::watch`] names the process once it exists.
    pub fn start() -> MemoryWatch {
        let shared = Arc::new(Shared::default());
        let sampler = shared.clone();
        let _ = std::thread::Builder::new()
            .name("pmon-memory".into())
            .spawn(move || sample_until_done(&sampler));
        MemoryWatch {
            shared,
            oom_kills_at_start: machine_oom_kills(),
        }
    }

    pub fn watch(&self, pid: u32) {
        self.shared.pid.store(pid, Ordering::SeqCst);
        sample(&self.shared);
    }

    /// The last resident-memory sample, in bytes.
    pub fn last_rss(&self) -> Option<u64> {
        Some(self.shared.last_rss.load(Ordering::SeqCst)).filter(|v| *v > 0)
    }

    /// For a program that died of `signal`: whether it was likely the OOM killer.
    pub fn verdict(&self, signal: Option<i32>) -> Option<OomVerdict> {
        if signal != Some(nix::sys::signal::Signal::SIGKILL as i32) {
            return None;
        }
        let cgroup = self.shared.cgroup.lock().ok().and_then(|c| c.clone());
        let counted = cgroup
            .as_ref()
            .and_then(|(group, first)| Some((first.as_ref()?, group.oom_kills()?)));
        let machine_count_rose = matches!((self.oom_kills_at_start, machine_oom_kills()),
            (Some(before), Some(after)) if after > before);
        let kernel_oom_kill = match counted {
            // A cgroup first seen in the moment of the kill already counts it:
            // then the machine's count rising says the same.
            Some((first, now)) => now > *first || (now > 0 && machine_count_rose),
            // No count for the cgroup: the machine-wide one.
            None => machine_count_rose,
        };
        let last_rss_bytes = self.last_rss();
        let limit_bytes = cgroup
            .as_ref()
            .and_then(|(group, _)| group.limit())
            .or_else(machine_memory);
        let near_limit = matches!((last_rss_bytes, limit_bytes),
            (Some(rss), Some(limit)) if rss as f64 >= NEAR_LIMIT * limit as f64);
        (kernel_oom_kill || near_limit).then_some(OomVerdict {
            last_rss_bytes,
            limit_bytes,
            kernel_oom_kill,
        })
    }
}

impl Drop for MemoryWatch {
    fn drop(&mut self) {
        self.shared.done.store(true, Ordering::SeqCst);
    }
}

fn sample_until_done(shared: &Shared) {
    while !shared.done.load(Ordering::SeqCst) {
        sample(shared);
        std::thread::sleep(SAMPLE_EVERY);
    }
}

fn sample(shared: &Shared) {
    let pid = shared.pid.load(Ordering::SeqCst);
    if pid == 0 {
        return;
    }
    if let Some(now) = MemoryCgroup::of(pid) {
        if let Ok(mut seen) = shared.cgroup.lock() {
            remember(&mut seen, now);
        }
    }
    if let Some(rss) = super::rss_bytes(pid) {
        shared.last_rss.store(rss, Ordering::SeqCst);
    }
}

/// Keeps the cgroup a sample found, with its OOM-kill count when first seen.
/// A process being killed already shows the root cgroup: a "move" from a
/// cgroup to the root is the end of the process, and the cgroup it died in
/// is the one that counts.
fn remember(seen: &mut Option<(MemoryCgroup, Option<u64>)>, now: MemoryCgroup) {
    let exiting = now.root && seen.as_ref().is_some_and(|(group, _)| !group.root);
    if !exiting && seen.as_ref().is_none_or(|(group, _)| *group != now) {
        let first = now.oom_kills();
        *seen = Some((now, first));
    }
}

/// The memory limit of `pid`'s cgroup, in bytes, when it has one below the
/// machine's memory (what the dashboard draws above the memory chart).
pub fn memory_limit(pid: u32) -> Option<u64> {
    MemoryCgroup::of(pid)?.limit()
}

/// How many processes the kernel's OOM killer has ended on this machine since
/// boot (`oom_kill` in /proc/vmstat, Linux 4.13 and later).
fn machine_oom_kills() -> Option<u64> {
    let vmstat = std::fs::read_to_string("/proc/vmstat").ok()?;
    field(&vmstat, "oom_kill")
}

/// `name N` on a line of its own, as /proc and cgroup files write counters.
fn field(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok())?
    })
}

/// A process's memory cgroup directory.
#[derive(Debug, Clone, PartialEq)]
struct MemoryCgroup {
    dir: PathBuf,
    v2: bool,
    /// The root of the hierarchy (as this namespace sees it).
    root: bool,
}

impl MemoryCgroup {
    /// From `/proc/PID/cgroup`: the v1 `memory` controller's line, else the
    /// v2 line (`0::/path`) when that hierarchy has the memory controller.
    fn of(pid: u32) -> Option<MemoryCgroup> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        Self::from_proc(&text, Path::new("/sys/fs/cgroup"))
    }

    fn from_proc(text: &str, root: &Path) -> Option<MemoryCgroup> {
        let mut v2 = None;
        for line in text.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let relative = path.trim_start_matches('/');
            if controllers.split(',').any(|c| c == "memory") {
                return Some(MemoryCgroup {
                    dir: root.join("memory").join(relative),
                    v2: false,
                    root: relative.is_empty(),
                });
            }
            if controllers.is_empty() {
                v2 = Some(MemoryCgroup {
                    dir: root.join(relative),
                    v2: true,
                    root: relative.is_empty(),
                });
            }
        }
        v2.filter(|group| group.dir.join("memory.max").exists() || group.dir == root)
    }

    /// The limit in bytes; `None` when there is none ("max", or v1's huge number).
    fn limit(&self) -> Option<u64> {
        let file = if self.v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        std::fs::read_to_string(self.dir.join(file))
            .ok()?
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|&bytes| bytes < machine_memory().unwrap_or(u64::MAX))
    }

    /// OOM kills of processes in this cgroup itself (not its children).
    fn oom_kills(&self) -> Option<u64> {
        let (file, name) = if self.v2 {
            ("memory.events.local", "oom_kill")
        } else {
            ("memory.oom_control", "oom_kill")
        };
        field(&std::fs::read_to_string(self.dir.join(file)).ok()?, name)
    }
}

fn machine_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sigkill_can_be_an_oom_kill() {
        let watch = MemoryWatch::start();
        watch.watch(std::process::id());
        assert_eq!(watch.verdict(Some(15)), None);
        assert_eq!(watch.verdict(None), None);
    }

    #[test]
    fn the_verdict_names_the_numbers() {
        let verdict = OomVerdict {
            last_rss_bytes: Some(63 * 1048576),
            limit_bytes: Some(64 * 1048576),
            kernel_oom_kill: true,
        };
        assert_eq!(
            verdict.describe(),
            "killed by SIGKILL (likely out of memory: the kernel's OOM killer ran during the run; last memory sample 63.0 MiB of a 64.0 MiB limit)"
        );
    }

    #[test]
    fn the_memory_cgroup_comes_from_the_v1_line_before_the_v2_one() {
        let root = Path::new("/sys/fs/cgroup");
        let v1 = MemoryCgroup::from_proc("4:memory:/jobs/a\n0::/\n", root).unwrap();
        assert_eq!(v1.dir, Path::new("/sys/fs/cgroup/memory/jobs/a"));
        assert!(!v1.v2);
        assert_eq!(MemoryCgroup::from_proc("3:cpu:/\n", root), None);
    }

    #[test]
    fn a_process_shown_in_the_root_as_it_dies_keeps_the_cgroup_it_died_in() {
        let root = Path::new("/sys/fs/cgroup");
        let group = |line: &str| MemoryCgroup::from_proc(line, root).unwrap();
        let mut seen = None;
        remember(&mut seen, group("4:memory:/\n"));
        remember(&mut seen, group("4:memory:/jobs/a\n"));
        remember(&mut seen, group("4:memory:/\n"));
        assert_eq!(seen.map(|(g, _)| g), Some(group("4:memory:/jobs/a\n")));
    }

    #[test]
    fn counters_are_read_by_name() {
        let text = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(field(text, "oom_kill"), Some(3));
        assert_eq!(field(text, "oom"), None);
    }
}
