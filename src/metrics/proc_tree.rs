//! The wrapped program's whole process tree (the program and every
//! descendant), sampled from `/proc` directly.
//!
//! Why not the `sysinfo` crate: to find one program's children it refreshes
//! every process on the host and allocates per process, and it does not give
//! `cutime`/`cstime`, which is what keeps the CPU of a short-lived worker
//! that exits between two samples. We need one tree, once a second, cheaply;
//! reading `/proc` for it is a few hundred lines. Descendants are found through
//! `/proc/PID/task/TID/children` (every thread's file: a child's parent is the
//! thread that forked it); a kernel without `CONFIG_PROC_CHILDREN` has no such
//! file, and then one scan of `/proc/[0-9]*/stat` for parent pids is used.
//! Small files are read into one reused buffer and directories with
//! `readdir`, so a sample allocates nothing once the buffers have grown.
//!
//! What the numbers mean:
//! - `processes`, `threads`: the root (even a zombie root: exited, not yet
//!   reaped) and every descendant alive at that moment. Zombie descendants are
//!   not counted, but their CPU is.
//! - `rss_bytes`: the sum of every process's resident set. Pages shared
//!   between processes (copy-on-write pages of forked workers, shared
//!   libraries) are counted once per process, so with forked workers the sum
//!   overstates the tree's real memory and can exceed physical memory. It is
//!   an upper bound; the exact figure (PSS, `/proc/PID/smaps_rollup`) costs far
//!   more to read.
//! - `cpu_percent`: CPU ticks used since the previous sample, per process
//!   identity (pid + start time, so a reused pid is a new process), of
//!   utime+stime+cutime+cstime, so a worker that exits and is reaped by a tree
//!   member between two samples still counts. When a worker we had seen is
//!   reaped, the kernel adds its whole time to the reaper's cutime; the part we
//!   had already counted is taken off again so it is not counted twice.
//!   100 = one core busy; meaningful at intervals well above one tick (10 ms).
//! - `read_bytes`, `write_bytes`: storage I/O (`read_bytes`/`write_bytes` of
//!   `/proc/PID/io`: page-cache hits are not reads; writes count when pages
//!   are dirtied) since the first sample's totals, never decreasing: a process
//!   that exits keeps what it contributed. The kernel also adds a reaped
//!   child's I/O to its parent's; as for CPU, what was already counted for the
//!   child is not counted again. A process whose `io` file is unreadable
//!   (another user's) contributes nothing.

use std::collections::HashMap;
use std::ffi::{CStr, OsStr};
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::time::Instant;

/// Samples the process tree rooted at one pid (the wrapped program and every descendant alive at that moment).
pub struct TreeSampler {
    root: u32,
    /// Start time of the root when first read: a reused pid is not the root.
    root_start: Option<u64>,
    /// `Some(true)`: children files; `Some(false)`: scan; `None`: not known yet.
    children_files: Option<bool>,
    seen: HashMap<Key, Seen>,
    generation: u64,
    last: Option<Instant>,
    /// CPU ticks counted since the first sample.
    ticks_total: u64,
    read_total: u64,
    write_total: u64,
    clk_tck: f64,
    page_size: u64,
    path: Vec<u8>,
    buf: Vec<u8>,
    queue: Vec<Pending>,
    ids: Vec<u32>,
    scan: Vec<(u32, Stat)>,
    gone: Vec<(Key, Seen)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TreeSample {
    /// Live processes in the tree, root included (a zombie root counts).
    pub processes: u32,
    /// Sum of num_threads.
    pub threads: u64,
    /// Sum of RSS (stat field 24 * page size); shared pages count once per process.
    pub rss_bytes: u64,
    /// CPU used by the tree since the previous sample, in percent of one core (100 = one core busy); None on the first sample.
    pub cpu_percent: Option<f64>,
    /// Bytes the tree has read/written from storage so far (/proc/PID/io read_bytes/write_bytes), monotonic: a process that exits keeps contributing the last value seen for it.
    pub read_bytes: u64,
    pub write_bytes: u64,
}

/// A process identity: pid and start time (ticks since boot).
type Key = (u32, u64);

/// What one sample needs from `/proc/PID/stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Stat {
    ppid: u32,
    zombie: bool,
    /// utime + stime + cutime + cstime.
    ticks: u64,
    /// cutime + cstime.
    child_ticks: u64,
    threads: u64,
    start: u64,
    rss_pages: u64,
}

/// A process as last seen, and what it added in the current sample.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    generation: u64,
    parent: Option<Key>,
    ticks: u64,
    child_ticks: u64,
    read: u64,
    write: u64,
    /// Increases in this sample.
    d_ticks: u64,
    d_child_ticks: u64,
    d_read: u64,
    d_write: u64,
    /// Already counted for descendants that vanished in this sample (reaped,
    /// so their totals now also show in this process's).
    x_ticks: u64,
    x_read: u64,
    x_write: u64,
}

#[derive(Clone, Copy)]
struct Pending {
    pid: u32,
    parent: Option<Key>,
    stat: Option<Stat>,
}

impl TreeSampler {
    pub fn new(root: u32) -> TreeSampler {
        // SAFETY: sysconf has no preconditions.
        let (clk_tck, page_size) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        TreeSampler {
            root,
            root_start: None,
            children_files: None,
            seen: HashMap::new(),
            generation: 0,
            last: None,
            ticks_total: 0,
            read_total: 0,
            write_total: 0,
            clk_tck: if clk_tck > 0 { clk_tck as f64 } else { 100.0 },
            page_size: if page_size > 0 {
                page_size as u64
            } else {
                4096
            },
            path: Vec::with_capacity(64),
            buf: vec![0; 4096],
            queue: Vec::new(),
            ids: Vec::new(),
            scan: Vec::new(),
            gone: Vec::new(),
        }
    }

    /// Reads the tree now. Never errors: processes that exit mid-sample are skipped.
    pub fn sample(&mut self) -> TreeSample {
        let now = Instant::now();
        self.generation += 1;
        let mut out = TreeSample {
            processes: 0,
            threads: 0,
            rss_bytes: 0,
            cpu_percent: None,
            read_bytes: 0,
            write_bytes: 0,
        };
        if let Some(root) = self.root_stat() {
            let children_files = *self.children_files.get_or_insert_with(|| {
                std::path::Path::new(&format!("/proc/{0}/task/{0}/children", self.root)).exists()
            });
            self.walk(root, children_files, &mut out);
        }
        let ticks = self.settle();
        self.ticks_total += ticks;
        out.read_bytes = self.read_total;
        out.write_bytes = self.write_total;
        out.cpu_percent = self.last.map(|then| {
            let secs = now.duration_since(then).as_secs_f64();
            if secs > 0.0 {
                ticks as f64 / self.clk_tck / secs * 100.0
            } else {
                0.0
            }
        });
        self.last = Some(now);
        out
    }

    /// The root's stat, unless it is gone (or its pid now names another process).
    fn root_stat(&mut self) -> Option<Stat> {
        let stat = self.read_stat(self.root)?;
        match self.root_start {
            Some(start) if start != stat.start => None,
            _ => {
                self.root_start = Some(stat.start);
                Some(stat)
            }
        }
    }

    /// Breadth first from the root, so a parent is always visited before its children.
    fn walk(&mut self, root: Stat, children_files: bool, out: &mut TreeSample) {
        self.queue.clear();
        self.queue.push(Pending {
            pid: self.root,
            parent: None,
            stat: Some(root),
        });
        if !children_files {
            self.scan_proc();
        }
        let mut next = 0;
        while let Some(&Pending { pid, parent, stat }) = self.queue.get(next) {
            next += 1;
            let Some(stat) = stat.or_else(|| self.read_stat(pid)) else {
                continue;
            };
            let Some(key) = self.visit(pid, parent, &stat, next == 1, out) else {
                continue;
            };
            if !children_files {
                for &(child, ref cstat) in &self.scan {
                    if cstat.ppid == pid && child != pid {
                        self.queue.push(Pending {
                            pid: child,
                            parent: Some(key),
                            stat: Some(*cstat),
                        });
                    }
                }
            } else if stat.threads <= 1 {
                self.read_children(pid, pid, key);
            } else {
                set_path(&mut self.path, format_args!("/proc/{pid}/task"));
                list_numeric(&mut self.path, &mut self.ids);
                for i in 0..self.ids.len() {
                    self.read_children(pid, self.ids[i], key);
                }
            }
        }
    }

    /// Every process's stat, for finding children by parent pid.
    fn scan_proc(&mut self) {
        self.scan.clear();
        set_path(&mut self.path, format_args!("/proc"));
        list_numeric(&mut self.path, &mut self.ids);
        for i in 0..self.ids.len() {
            let pid = self.ids[i];
            if let Some(stat) = self.read_stat(pid) {
                self.scan.push((pid, stat));
            }
        }
    }

    fn read_children(&mut self, pid: u32, tid: u32, key: Key) {
        set_path(
            &mut self.path,
            format_args!("/proc/{pid}/task/{tid}/children"),
        );
        let Some(len) = read_into(&self.path, &mut self.buf) else {
            return;
        };
        for word in self.buf[..len].split(|b| b.is_ascii_whitespace()) {
            if let Some(child) = parse_num(word) {
                self.queue.push(Pending {
                    pid: child as u32,
                    parent: Some(key),
                    stat: None,
                });
            }
        }
    }

    /// Counts one process into `out` and notes its increases; `None` if it was already visited.
    fn visit(
        &mut self,
        pid: u32,
        parent: Option<Key>,
        stat: &Stat,
        is_root: bool,
        out: &mut TreeSample,
    ) -> Option<Key> {
        let key = (pid, stat.start);
        if self
            .seen
            .get(&key)
            .is_some_and(|s| s.generation == self.generation)
        {
            return None;
        }
        let io = self.read_io(pid);
        let s = self.seen.entry(key).or_default();
        let (read, write) = io.unwrap_or((s.read, s.write));
        *s = Seen {
            generation: self.generation,
            parent,
            ticks: s.ticks.max(stat.ticks),
            child_ticks: s.child_ticks.max(stat.child_ticks),
            read: s.read.max(read),
            write: s.write.max(write),
            d_ticks: stat.ticks.saturating_sub(s.ticks),
            d_child_ticks: stat.child_ticks.saturating_sub(s.child_ticks),
            d_read: read.saturating_sub(s.read),
            d_write: write.saturating_sub(s.write),
            x_ticks: 0,
            x_read: 0,
            x_write: 0,
        };
        if is_root || !stat.zombie {
            out.processes += 1;
            out.threads += stat.threads;
        }
        out.rss_bytes += stat.rss_pages * self.page_size;
        Some(key)
    }

    /// Takes off what vanished processes had already contributed from the
    /// nearest ancestor still in the tree (which reaped them, so its totals now
    /// include theirs), adds up this sample's increases, and forgets the
    /// vanished. Returns the CPU ticks of this sample.
    fn settle(&mut self) -> u64 {
        let generation = self.generation;
        self.gone.clear();
        self.gone.extend(
            self.seen
                .iter()
                .filter(|(_, s)| s.generation != generation)
                .map(|(k, s)| (*k, *s)),
        );
        for i in 0..self.gone.len() {
            let (key, was) = self.gone[i];
            // Still alive outside the tree (re-parented when its parent died): not reaped into it.
            if self.read_stat(key.0).is_some_and(|s| s.start == key.1) {
                continue;
            }
            let mut ancestor = was.parent;
            for _ in 0..64 {
                match ancestor.and_then(|k| self.seen.get(&k)) {
                    Some(s) if s.generation != generation => ancestor = s.parent,
                    _ => break,
                }
            }
            if let Some(s) = ancestor.and_then(|k| self.seen.get_mut(&k)) {
                if s.generation == generation {
                    s.x_ticks += was.ticks;
                    s.x_read += was.read;
                    s.x_write += was.write;
                }
            }
        }
        let mut ticks = 0;
        for s in self.seen.values().filter(|s| s.generation == generation) {
            ticks += s.d_ticks - s.x_ticks.min(s.d_child_ticks);
            self.read_total += s.d_read - s.x_read.min(s.d_read);
            self.write_total += s.d_write - s.x_write.min(s.d_write);
        }
        self.seen.retain(|_, s| s.generation == generation);
        ticks
    }

    fn read_stat(&mut self, pid: u32) -> Option<Stat> {
        set_path(&mut self.path, format_args!("/proc/{pid}/stat"));
        let len = read_into(&self.path, &mut self.buf)?;
        parse_stat(&self.buf[..len])
    }

    fn read_io(&mut self, pid: u32) -> Option<(u64, u64)> {
        set_path(&mut self.path, format_args!("/proc/{pid}/io"));
        let len = read_into(&self.path, &mut self.buf)?;
        parse_io(&self.buf[..len])
    }
}

/// Parses `/proc/PID/stat`. The command name (field 2) may contain spaces
/// and `)`, so fields are counted after the last `)`.
fn parse_stat(text: &[u8]) -> Option<Stat> {
    let close = text.iter().rposition(|&b| b == b')')?;
    // fields[0] is field 3 (state).
    let mut fields = text[close + 1..]
        .split(|&b| b == b' ')
        .filter(|f| !f.is_empty());
    let state = fields.next()?;
    let mut stat = Stat {
        zombie: matches!(state, b"Z" | b"X"),
        ..Stat::default()
    };
    let mut last = 3;
    for (n, field) in (4..=24).zip(fields) {
        last = n;
        match n {
            4 => stat.ppid = parse_num(field)? as u32,
            14 | 15 => stat.ticks += parse_num(field)?,
            // cutime, cstime and rss are signed in the kernel: a "-" reads as 0.
            16 | 17 => {
                let t = parse_num(field).unwrap_or(0);
                stat.ticks += t;
                stat.child_ticks += t;
            }
            20 => stat.threads = parse_num(field)?,
            22 => stat.start = parse_num(field)?,
            24 => stat.rss_pages = parse_num(field).unwrap_or(0),
            _ => {}
        }
    }
    (last == 24).then_some(stat)
}

/// `read_bytes` and `write_bytes` of `/proc/PID/io`.
fn parse_io(text: &[u8]) -> Option<(u64, u64)> {
    let (mut read, mut write) = (None, None);
    for line in text.split(|&b| b == b'\n') {
        if let Some(v) = line.strip_prefix(b"read_bytes: ") {
            read = parse_num(v);
        } else if let Some(v) = line.strip_prefix(b"write_bytes: ") {
            write = parse_num(v);
        }
    }
    Some((read?, write?))
}

fn parse_num(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0, |n, &d| n * 10 + u64::from(d - b'0')))
}

fn set_path(path: &mut Vec<u8>, args: std::fmt::Arguments) {
    path.clear();
    let _ = path.write_fmt(args);
}

/// Reads the whole file at `path` into `buf` (grown as needed, never shrunk);
/// returns the length read.
fn read_into(path: &[u8], buf: &mut Vec<u8>) -> Option<usize> {
    let mut file = File::open(OsStr::from_bytes(path)).ok()?;
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(buf.len().max(2048) * 2, 0);
        }
        match file.read(&mut buf[len..]) {
            Ok(0) => return Some(len),
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

/// Puts the all-digit entry names of the directory at `path` into `out`
/// (empty if it cannot be read). `readdir` rather than `std::fs::read_dir`,
/// which allocates per entry.
fn list_numeric(path: &mut Vec<u8>, out: &mut Vec<u32>) {
    out.clear();
    path.push(0);
    let Ok(dir_path) = CStr::from_bytes_with_nul(path) else {
        return;
    };
    // SAFETY: `dir_path` is NUL-terminated; the stream is used only here and
    // closed once; each entry's name is a NUL-terminated string valid until
    // the next readdir.
    unsafe {
        let dir = libc::opendir(dir_path.as_ptr());
        if dir.is_null() {
            return;
        }
        loop {
            let entry = libc::readdir(dir);
            if entry.is_null() {
                break;
            }
            let name = CStr::from_ptr((*entry).d_name.as_ptr());
            if let Some(n) = parse_num(name.to_bytes()).and_then(|n| u32::try_from(n).ok()) {
                out.push(n);
            }
        }
        libc::closedir(dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::CommandExt;
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    /// The spawned process group, killed and reaped when the test ends, even by a failed assertion.
    struct Group(Child);

    impl Group {
        fn spawn(program: &str, args: &[&str]) -> Group {
            Group::spawn_with(Command::new(program).args(args))
        }

        fn spawn_with(command: &mut Command) -> Group {
            Group(command.process_group(0).spawn().expect("spawn"))
        }

        fn pid(&self) -> u32 {
            self.0.id()
        }
    }

    impl Drop for Group {
        fn drop(&mut self) {
            // SAFETY: kill has no memory preconditions; the group is ours.
            unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
            let _ = self.0.wait();
        }
    }

    /// Samples until `done` holds for a sample (giving up after 30 s); returns that sample.
    fn sample_until(
        sampler: &mut TreeSampler,
        what: &str,
        done: impl Fn(&TreeSample) -> bool,
    ) -> TreeSample {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let sample = sampler.sample();
            if done(&sample) {
                return sample;
            }
            assert!(
                Instant::now() < deadline,
                "gave up waiting until {what}; last: {sample:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stat_of(pid: u32) -> Stat {
        let text = std::fs::read(format!("/proc/{pid}/stat")).unwrap();
        parse_stat(&text).unwrap()
    }

    #[test]
    fn parses_stat_after_the_last_paren() {
        let line = b"42 (a) b) (c) S 7 42 42 0 -1 4194560 1 2 3 4 10 20 30 40 20 0 3 0 777 1000 25 18446744073709551615 0\n";
        let stat = parse_stat(line).unwrap();
        assert_eq!(
            stat,
            Stat {
                ppid: 7,
                zombie: false,
                ticks: 100,
                child_ticks: 70,
                threads: 3,
                start: 777,
                rss_pages: 25
            }
        );
        let zombie = b"9 (x) Z 1 9 9 0 -1 0 0 0 0 0 1 2 -3 0 20 0 1 0 5 0 0 0\n";
        let stat = parse_stat(zombie).unwrap();
        assert!(stat.zombie);
        assert_eq!(stat.ticks, 3);
        assert_eq!(
            parse_io(b"rchar: 1\nread_bytes: 4096\nwrite_bytes: 8192\ncancelled_write_bytes: 5\n"),
            Some((4096, 8192))
        );
    }

    #[test]
    fn counts_every_descendant() {
        let tree = Group::spawn("sh", &["-c", "sleep 30 & sleep 30 & sleep 30 & wait"]);
        let mut sampler = TreeSampler::new(tree.pid());
        let sample = sample_until(&mut sampler, "sh and its 3 sleeps are sampled", |s| {
            s.processes == 4
        });
        assert!(sample.threads >= 4, "{sample:?}");
        assert!(sample.rss_bytes > 0, "{sample:?}");
    }

    #[test]
    fn cpu_of_busy_grandchildren() {
        // Three busy loops, so that the tree still gets half a core when the
        // machine is busy with other tests.
        let busy = "python3 -c 'while True: pass'";
        let tree = Group::spawn("sh", &["-c", &format!("{busy} & {busy} & {busy} & wait")]);
        let mut sampler = TreeSampler::new(tree.pid());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            sampler.sample();
            std::thread::sleep(Duration::from_millis(500));
            let sample = sampler.sample();
            if sample.cpu_percent.is_some_and(|p| p >= 50.0) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the busy loops never showed >= 50%: {sample:?}"
            );
        }
    }

    #[test]
    fn rss_of_a_child_that_touched_100_mb() {
        let script = "import sys, time\nb = bytearray(100 * 1024 * 1024)\nfor i in range(0, len(b), 4096): b[i] = 1\nprint('ready', flush=True)\ntime.sleep(60)";
        let mut tree = Group::spawn_with(
            Command::new("python3")
                .args(["-c", script])
                .stdout(Stdio::piped()),
        );
        let mut line = String::new();
        BufReader::new(tree.0.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        let sample = TreeSampler::new(tree.pid()).sample();
        assert!(sample.rss_bytes >= 100 * 1024 * 1024, "{sample:?}");
        assert_eq!(sample.processes, 1);
    }

    #[test]
    fn processes_that_exit_and_a_root_that_is_gone() {
        let mut tree = Group::spawn(
            "sh",
            &[
                "-c",
                "for i in 1 2 3 4 5 6; do sleep 0.1 & done; wait; exec sleep 30",
            ],
        );
        let mut sampler = TreeSampler::new(tree.pid());
        let mut last = sampler.sample();
        let deadline = Instant::now() + Duration::from_secs(30);
        // Workers come and go; at the end sh has become the one sleep left.
        let comm = format!("/proc/{}/comm", tree.pid());
        loop {
            let sample = sampler.sample();
            assert!(sample.read_bytes >= last.read_bytes && sample.write_bytes >= last.write_bytes);
            assert!(sample.cpu_percent.is_some());
            last = sample;
            if last.processes == 1
                && std::fs::read_to_string(&comm).is_ok_and(|c| c.trim() == "sleep")
            {
                break;
            }
            assert!(Instant::now() < deadline, "{last:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: kill has no memory preconditions; the group is ours.
        unsafe { libc::kill(-(tree.pid() as i32), libc::SIGKILL) };
        tree.0.wait().unwrap();
        let gone = sample_until(&mut sampler, "the tree is gone", |s| s.processes == 0);
        assert_eq!(gone.rss_bytes, 0);
        assert_eq!(gone.threads, 0);
        assert_eq!(gone.cpu_percent, Some(0.0));
        assert!(gone.read_bytes >= last.read_bytes && gone.write_bytes >= last.write_bytes);
        assert_eq!(
            sampler.sample(),
            TreeSample {
                cpu_percent: Some(0.0),
                ..gone.clone()
            }
        );

        // A root that never existed (above any pid_max).
        let mut nobody = TreeSampler::new(u32::MAX - 1);
        let first = nobody.sample();
        assert_eq!(
            (first.processes, first.cpu_percent, first.read_bytes),
            (0, None, 0)
        );
        assert_eq!(nobody.sample().cpu_percent, Some(0.0));
    }

    #[test]
    fn a_zombie_root_is_sampled_with_its_cpu() {
        // Waits for a byte on stdin, burns 0.5 s of CPU, exits; never waited on until the end.
        let script = "import sys, time\nsys.stdin.read(1)\nt = time.process_time()\nwhile time.process_time() - t < 0.5: pass";
        let mut zombie = Group::spawn_with(
            Command::new("python3")
                .args(["-c", script])
                .stdin(Stdio::piped()),
        );
        let mut sampler = TreeSampler::new(zombie.pid());
        sample_until(&mut sampler, "python runs", |s| s.processes == 1);
        zombie.0.stdin.take().unwrap().write_all(b"x").unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !stat_of(zombie.pid()).zombie {
            assert!(Instant::now() < deadline, "python never exited");
            std::thread::sleep(Duration::from_millis(20));
        }
        let sample = sampler.sample();
        assert_eq!(sample.processes, 1, "{sample:?}");
        assert_eq!(sample.rss_bytes, 0, "{sample:?}");
        assert!(sample.cpu_percent.is_some_and(|p| p > 0.0), "{sample:?}");
        assert!(
            sampler.ticks_total >= 40,
            "0.5 s of CPU is 50 ticks: {}",
            sampler.ticks_total
        );
    }

    /// A Python parent whose forked worker runs `work` (indented lines),
    /// prints `done`, waits for a byte on stdin and exits; the parent then
    /// reaps it (the kernel adds the worker's CPU time and writes to the
    /// parent's) and prints `reaped`.
    struct ReapedWorker {
        tree: Group,
        stdout: BufReader<std::process::ChildStdout>,
    }

    impl ReapedWorker {
        fn start(work: &str, args: &[&str]) -> ReapedWorker {
            let script = format!("import os, sys, time\npid = os.fork()\nif pid == 0:\n{work}\n    print('done', flush=True)\n    sys.stdin.read(1)\n    os._exit(0)\nos.waitpid(pid, 0)\nprint('reaped', flush=True)\ntime.sleep(60)");
            let mut tree = Group::spawn_with(
                Command::new("python3")
                    .arg("-c")
                    .arg(script)
                    .args(args)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped()),
            );
            let stdout = BufReader::new(tree.0.stdout.take().unwrap());
            ReapedWorker { tree, stdout }
        }

        fn said(&mut self, expected: &str) {
            let mut line = String::new();
            self.stdout.read_line(&mut line).unwrap();
            assert_eq!(line.trim(), expected);
        }

        /// Lets the worker exit and waits until its parent has reaped it.
        fn reap(&mut self) {
            self.tree.0.stdin.take().unwrap().write_all(b"x").unwrap();
            self.said("reaped");
        }
    }

    #[test]
    fn a_reaped_worker_is_not_counted_twice() {
        // The worker burns 0.5 s of CPU first.
        let mut w = ReapedWorker::start(
            "    t = time.process_time()\n    while time.process_time() - t < 0.5: pass",
            &[],
        );
        let root = w.tree.pid();
        let mut sampler = TreeSampler::new(root);
        sampler.sample();
        w.said("done");
        sample_until(&mut sampler, "the worker is seen", |s| s.processes == 2);
        // Both are blocked now (stdin, waitpid), so their ticks stand still.
        let worker = sampler.seen.keys().find(|k| k.0 != root).unwrap().0;
        let worker_ticks = stat_of(worker).ticks;
        assert!(
            worker_ticks >= 40,
            "0.5 s of CPU is 50 ticks: {worker_ticks}"
        );
        let before = stat_of(root).ticks + worker_ticks;
        let counted_before = sampler.ticks_total;
        w.reap();
        let sample = sampler.sample();
        assert_eq!(sample.processes, 1);
        // What the tree used since `before`: the parent's few ticks, not the worker's 50 again.
        let truth = stat_of(root).ticks - before;
        let counted = sampler.ticks_total - counted_before;
        assert!(
            counted.abs_diff(truth) <= 5,
            "counted {counted} ticks, the kernel says {truth}"
        );
    }

    #[test]
    fn a_reaped_workers_writes_are_not_counted_twice() {
        // As above, for the 8 MB a worker writes first.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out");
        let mut w = ReapedWorker::start(
            "    with open(sys.argv[1], 'wb') as f:\n        f.write(b'x' * 8388608)\n        f.flush()\n        os.fsync(f.fileno())",
            &[file.to_str().unwrap()],
        );
        let mut sampler = TreeSampler::new(w.tree.pid());
        sampler.sample();
        w.said("done");
        let seen = sample_until(&mut sampler, "the worker is seen", |s| s.processes == 2);
        if seen.write_bytes < 8 << 20 {
            // tmpfs and some others do not count storage writes.
            eprintln!("skipped: the temp dir's file system does not count write_bytes: {seen:?}");
            return;
        }
        w.reap();
        let after = sampler.sample();
        assert_eq!(after.processes, 1);
        assert!(
            after.write_bytes >= seen.write_bytes
                && after.write_bytes < seen.write_bytes + (4 << 20),
            "8 MB written once: {seen:?} then {after:?}"
        );
    }
}
