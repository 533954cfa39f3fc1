//! A few facts about the host the wrapped program runs on, read from `/proc`
//! and `statvfs`. Each is `None` when it cannot be read; nothing errors.

use std::path::Path;

#[derive(Debug, Clone, PartialEq)]
pub struct HostSample {
    /// `MemAvailable` of /proc/meminfo: memory that can be had without swapping.
    pub memory_available_bytes: Option<u64>,
    /// The 1-minute load average.
    pub load1: Option<f64>,
    /// Free space of the data directory's file system for unprivileged users.
    pub disk_free_bytes: Option<u64>,
}

/// `MemAvailable` from /proc/meminfo, the first field of /proc/loadavg, and free space (f_bavail * f_frsize via nix::sys::statvfs) of `data_dir` for unprivileged users.
pub fn host_sample(data_dir: &Path) -> HostSample {
    HostSample {
        memory_available_bytes: std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| mem_available(&text)),
        load1: std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|text| text.split_whitespace().next()?.parse().ok()),
        // Both are `u64` on 64-bit Linux, not on every target.
        #[allow(clippy::unnecessary_cast)]
        disk_free_bytes: nix::sys::statvfs::statvfs(data_dir)
            .ok()
            .map(|fs| (fs.blocks_available() as u64).saturating_mul(fs.fragment_size() as u64)),
    }
}

/// `MemAvailable:   24221792 kB` in bytes.
fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?;
    let mut words = line.split_whitespace();
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => value.checked_mul(1024),
        None => Some(value),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_the_host() {
        let dir = tempfile::tempdir().unwrap();
        let sample = host_sample(dir.path());
        assert!(
            sample.memory_available_bytes.is_some_and(|b| b > 0),
            "{sample:?}"
        );
        assert!(sample.load1.is_some_and(|l| l >= 0.0), "{sample:?}");
        assert!(sample.disk_free_bytes.is_some_and(|b| b > 0), "{sample:?}");
    }

    #[test]
    fn a_missing_dir_has_no_disk_figure() {
        let dir = tempfile::tempdir().unwrap();
        let sample = host_sample(&dir.path().join("missing"));
        assert_eq!(sample.disk_free_bytes, None);
    }

    #[test]
    fn parses_mem_available() {
        let text = "MemTotal:       32000000 kB\nMemFree:  1 kB\nMemAvailable:   24221792 kB\n";
        assert_eq!(mem_available(text), Some(24221792 * 1024));
        assert_eq!(mem_available("MemTotal: 1 kB\n"), None);
    }
}
