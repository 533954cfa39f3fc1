//! `tail`: follow log files, directories and named pipes, exactly once across
//! restarts and rotation.
//!
//! A file is known by its identity — device, inode and the first bytes of its
//! content (`head`) — never by its path, so a rename (logrotate's default), a
//! new file at the old path, a `copytruncate`, a deleted file still being
//! written, and an inode the kernel reused for a different file are all told
//! apart. Every file has its own framing and parser state in the pipeline.
//!
//! Exactly once: a record read from a file is keyed by (run, origin, byte
//! offset), where the origin is `file:<dev>:<ino>:<generation>`; the run is
//! continued across restarts. Read positions (checkpoints) are stored in the
//! same SQLite transaction as the records — or the spooled batch — up to
//! them; with PostgreSQL, as tentative just before its commit and for good
//! after it, a tentative one settled against PostgreSQL's ledger at the next
//! start (`sink::spool::positions`). A restart after SIGKILL re-reads from
//! the checkpoint: nothing is lost, and what PostgreSQL already had is
//! dropped by its key.
//!
//! The tailer sleeps until inotify reports a change in a watched directory
//! (see `watch.rs`), so idle files cost nothing but a rescan a second; where
//! inotify is unavailable it polls every 250 ms.

mod discover;
mod fifo;
mod watch;

pub use discover::Glob;
pub use watch::wake;

use crate::pipeline::{FileMeta, Msg};
use crossbeam_channel::Sender;
use rusqlite::Connection;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How many leading bytes identify a file's content.
const HEAD_LEN: usize = 256;
/// Fewer leading bytes than this cannot tell a copy from a new file: such a
/// file waits (briefly) for more before it is read.
const MIN_IDENTITY: usize = 64;
/// A small file that stays small this long is read as a new file.
const SMALL_FILE_WAIT: Duration = Duration::from_secs(1);
/// A file no longer at any watched path is read for this long after its last
/// new byte (a writer may still finish a line after rotation), then closed.
const ROTATED_GRACE: Duration = Duration::from_secs(2);
const CHUNK: usize = pmon_core::framing::CHUNK_BYTES;
/// Per file and pass, so one busy file cannot starve the others.
const MAX_PER_PASS: u64 = 4 << 20;

pub struct TailOptions {
    pub paths: Vec<PathBuf>,
    pub glob: Glob,
    /// Files without a checkpoint found at start are read from their end.
    pub from_end: bool,
    /// Read what is there and return.
    pub once: bool,
}

/// A read position stored in the store.
#[derive(Debug, Clone)]
pub struct StoredCheckpoint {
    pub head: Vec<u8>,
    pub generation: u64,
    pub offset: u64,
    pub earlier: Option<(Vec<u8>, u64)>,
}

/// The checkpoints of an experiment, by (dev, ino).
pub fn load_checkpoints(
    conn: &Connection,
    experiment: &str,
) -> rusqlite::Result<HashMap<(u64, u64), StoredCheckpoint>> {
    let mut stmt = conn.prepare(
        "SELECT dev, ino, head, generation, offset, earlier_head, earlier_offset FROM pmon_checkpoints WHERE experiment_id = ?1",
    )?;
    let rows = stmt.query_map([experiment], |r| {
        Ok((
            (r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64),
            StoredCheckpoint {
                head: r.get(2)?,
                generation: r.get::<_, i64>(3)? as u64,
                offset: r.get::<_, i64>(4)? as u64,
                earlier: match (r.get::<_, Option<Vec<u8>>>(5)?, r.get::<_, Option<i64>>(6)?) {
                    (Some(head), Some(offset)) => Some((head, offset as u64)),
                    _ => None,
                },
            },
        ))
    })?;
    rows.collect()
}

struct Tracked {
    dev: u64,
    ino: u64,
    path: PathBuf,
    file: File,
    offset: u64,
    head: Vec<u8>,
    generation: u64,
    last_size: u64,
    last_data: Instant,
    /// Seen at a watched path in the latest discovery pass.
    watched: bool,
    /// No checkpoint names it and its first bytes are too few to tell whether
    /// it is a copy (copytruncate) of a file already read.
    undecided: bool,
    /// Content this inode held before it was truncated: (head, offset read).
    earlier: Vec<(Vec<u8>, u64)>,
}

impl Tracked {
    fn origin(&self) -> String {
        pmon_store::file_origin(self.dev, self.ino, self.generation)
    }

    fn meta(&self) -> FileMeta {
        FileMeta {
            origin: self.origin(),
            path: self.path.display().to_string(),
            dev: self.dev,
            ino: self.ino,
            head: self.head.clone(),
            generation: self.generation,
            offset: self.offset,
            earlier: self.earlier.last().cloned(),
            copy_of: None,
            stream: pmon_core::record::StreamKind::File,
            source: None,
            append_only: false,
        }
    }
}

pub struct Tailer<'a> {
    opts: &'a TailOptions,
    checkpoints: HashMap<(u64, u64), StoredCheckpoint>,
    tracked: Vec<Tracked>,
    tx: Sender<Msg>,
    first_pass: bool,
}

impl<'a> Tailer<'a> {
    pub fn new(
        opts: &'a TailOptions,
        checkpoints: HashMap<(u64, u64), StoredCheckpoint>,
        tx: Sender<Msg>,
    ) -> Tailer<'a> {
        Tailer {
            opts,
            checkpoints,
            tracked: Vec::new(),
            tx,
            first_pass: true,
        }
    }

    /// Follows until `stop` is set (or, with `--once`, until everything is read).
    pub fn run(&mut self, stop: &AtomicBool) {
        let fifos = fifo::start_readers(&self.opts.paths, self.tx.clone(), stop, self.opts.once);
        let mut watcher = watch::Watcher::new();
        loop {
            if !self.opts.once {
                watcher.watch(&self.opts.paths);
            }
            self.discover();
            let read = self.read_all();
            self.close_finished();
            self.first_pass = false;
            if self.opts.once && read == 0 {
                break;
            }
            if stop.load(Ordering::SeqCst) {
                break;
            }
            if read == 0 {
                watcher.wait();
            }
        }
        for t in self.tracked.drain(..) {
            let _ = self.tx.send(Msg::FileClosed(t.origin()));
        }
        for handle in fifos {
            let _ = handle.join();
        }
    }

    fn discover(&mut self) {
        for t in &mut self.tracked {
            t.watched = false;
        }
        let mut found = discover::candidates(&self.opts.paths, &self.opts.glob);
        if self.first_pass {
            found.extend(discover::rotated_while_away(
                &self.opts.paths,
                &self.checkpoints,
            ));
        }
        for (path, meta) in found {
            let key = (meta.dev(), meta.ino());
            if let Some(t) = self.tracked.iter_mut().find(|t| (t.dev, t.ino) == key) {
                let watched = discover::is_watched(&path, &self.opts.paths, &self.opts.glob);
                t.watched |= watched;
                if t.path != path && watched {
                    t.path = path.clone();
                    let _ = self
                        .tx
                        .send(Msg::FileRenamed(t.origin(), path.display().to_string()));
                    tracing::info!(target: "tail", origin = %t.origin(), now_at = %path.display(), "file renamed (rotated)");
                }
                continue;
            }
            if let Some(t) = self.open(&path, key) {
                // An undecided file is announced once it is known where to start.
                if !t.undecided {
                    let _ = self.tx.send(Msg::FileOpen(t.meta()));
                }
                self.tracked.push(t);
            }
        }
    }

    /// Starts tracking a file: from its checkpoint if its content is the one
    /// the checkpoint saw, else from the start (or the end, for `--from-end`
    /// files present at start-up).
    fn open(&self, path: &Path, (dev, ino): (u64, u64)) -> Option<Tracked> {
        let file = File::open(path).ok()?;
        let size = file.metadata().ok()?.len();
        let head = read_head(&file);
        let mut undecided = false;
        let mut earlier = Vec::new();
        let (offset, generation) = match self.checkpoints.get(&(dev, ino)) {
            // Nothing was read at that position, so it says nothing about
            // whose content this is (an empty file's inode may have been
            // reused, by a copy of a file already read): decide as for a
            // new file, in the same generation.
            Some(cp) if cp.offset == 0 => {
                undecided = true;
                (0, cp.generation)
            }
            Some(cp) if head.starts_with(&cp.head) && size >= cp.offset => {
                earlier.extend(cp.earlier.clone());
                (cp.offset, cp.generation)
            }
            Some(cp) => {
                // Truncated, or the inode reused, while we were away: the new
                // content may still be a copy of something already read.
                earlier.push((cp.head.clone(), cp.offset));
                undecided = true;
                (0, cp.generation + 1)
            }
            None if self.opts.from_end && self.first_pass => (size, 0),
            None => {
                undecided = true;
                (0, 0)
            }
        };
        Some(Tracked {
            dev,
            ino,
            path: path.to_path_buf(),
            file,
            offset,
            head,
            generation,
            last_size: size,
            last_data: Instant::now(),
            watched: discover::is_watched(path, &self.opts.paths, &self.opts.glob),
            undecided,
            earlier,
        })
    }

    /// Reads what every file has beyond its offset. Files already identified
    /// come first — among them those that left their watched path, so a
    /// rotated file is finished before its successor — then new ones, each
    /// compared with what has been read by then: a live file read further in
    /// this same pass than its copy reaches leaves the copy nothing to read.
    fn read_all(&mut self) -> u64 {
        self.tracked.sort_by_key(|t| (t.undecided, t.watched));
        let mut total = 0;
        for i in 0..self.tracked.len() {
            if self.tracked[i].undecided {
                // Compared with what is known now, not at the start of the
                // pass: a file read just before may have gone past the point
                // its copy starts from, or found itself truncated.
                let (before, rest) = self.tracked.split_at_mut(i);
                let (t, after) = rest.split_first_mut().expect("i is in range");
                let others = before.iter().chain(after.iter());
                let known = known_contents(others, &self.checkpoints);
                if !decide(t, known, self.opts.once, &self.tx) {
                    continue;
                }
            }
            total += read_file(&mut self.tracked[i], &self.tx);
        }
        total
    }

    fn close_finished(&mut self) {
        let once = self.opts.once;
        let tx = &self.tx;
        self.tracked.retain(|t| {
            let done = !t.watched && (once || t.last_data.elapsed() >= ROTATED_GRACE);
            if done {
                let _ = tx.send(Msg::FileClosed(t.origin()));
            }
            !done
        });
    }
}

/// Content read before, as a copy of it is compared with.
struct Known<'a> {
    head: &'a [u8],
    /// How far it has been read.
    offset: u64,
    /// The tracked file that holds it now, when it is that file's current
    /// content: its records up to `offset` may not be stored yet. `None` for
    /// what is stored (checkpoints, content finished before a truncation).
    live: Option<&'a Tracked>,
}

/// Content already read, and how far: the tracked files, what they held
/// before a truncation, and the stored checkpoints.
fn known_contents<'a>(
    tracked: impl Iterator<Item = &'a Tracked> + Clone + 'a,
    checkpoints: &'a HashMap<(u64, u64), StoredCheckpoint>,
) -> impl Iterator<Item = Known<'a>> + 'a {
    let tracked = tracked.filter(|t| !t.undecided);
    let stored = |(head, offset): &'a (Vec<u8>, u64)| Known {
        head,
        offset: *offset,
        live: None,
    };
    let live = tracked.clone().map(|t| Known {
        head: &t.head,
        offset: t.offset,
        live: Some(t),
    });
    let checkpointed = checkpoints.values().map(|c| Known {
        head: &c.head,
        offset: c.offset,
        live: None,
    });
    live.chain(tracked.flat_map(move |t| t.earlier.iter().map(stored)))
        .chain(checkpointed)
        .chain(
            checkpoints
                .values()
                .filter_map(move |c| c.earlier.as_ref().map(stored)),
        )
        .filter(|k| k.head.len() >= MIN_IDENTITY)
}

/// Decides whether an unidentified file is new or a `copytruncate` copy of
/// content already read (a copy starts with the same bytes; only what lies
/// beyond the read position is new). Returns false to wait for more bytes.
fn decide<'a>(
    t: &mut Tracked,
    known: impl Iterator<Item = Known<'a>>,
    once: bool,
    tx: &Sender<Msg>,
) -> bool {
    let head = read_head(&t.file);
    if head.len() < MIN_IDENTITY && !once && t.last_data.elapsed() < SMALL_FILE_WAIT {
        if head.len() != t.head.len() {
            t.head = head;
            t.last_data = Instant::now();
        }
        return false;
    }
    // The furthest read of this content; at equal offsets a stored one, as
    // nothing is then owed by a live file.
    let copied = known
        .filter(|k| {
            head.len() >= MIN_IDENTITY && (k.head.starts_with(&head) || head.starts_with(k.head))
        })
        .max_by_key(|k| (k.offset, k.live.is_none()));
    // A copy of a live file that still has bytes to read (one pass reads at
    // most MAX_PER_PASS of it) waits until that file is read to its end:
    // whatever the copy holds is then behind the file's read position.
    if copied
        .as_ref()
        .is_some_and(|k| k.live.is_some_and(|live| live.offset < live.last_size))
    {
        return false;
    }
    let copied = copied.map(|k| (k.offset, k.live.map(Tracked::origin)));
    t.undecided = false;
    t.head = head;
    let mut meta = t.meta();
    if let Some((offset, copy_of)) = copied {
        t.offset = offset;
        meta = FileMeta {
            offset,
            copy_of,
            ..meta
        };
    }
    tracing::info!(target: "tail", path = %meta.path, origin = %meta.origin, offset = meta.offset, copy_of = ?meta.copy_of, "reading file");
    let _ = tx.send(Msg::FileOpen(meta));
    true
}

fn read_head(file: &File) -> Vec<u8> {
    let mut head = vec![0u8; HEAD_LEN];
    let n = file.read_at(&mut head, 0).unwrap_or(0);
    head.truncate(n);
    head
}

/// Reads new bytes of one file; handles truncation. Returns bytes read.
fn read_file(t: &mut Tracked, tx: &Sender<Msg>) -> u64 {
    let _span = tracing::trace_span!(target: "pmon", "file", path = %t.path.display()).entered();
    let Ok(size) = t.file.metadata().map(|m| m.len()) else {
        return 0;
    };
    // A file that shrank, or whose first bytes changed, was truncated. A file
    // merely shorter than the read position is a copy still being written.
    let rewritten = size != t.last_size && !read_head(&t.file).starts_with(&t.head);
    if size < t.last_size || rewritten {
        // copytruncate or truncation: the same inode holds new content. What
        // it held is remembered, to recognise its copy.
        tracing::info!(target: "tail", was = t.last_size, now = size, "file truncated (copytruncate?): reading it from the start");
        let _ = tx.send(Msg::FileClosed(t.origin()));
        t.earlier.push((std::mem::take(&mut t.head), t.offset));
        if t.earlier.len() > 4 {
            t.earlier.remove(0);
        }
        t.generation += 1;
        t.offset = 0;
        t.head = read_head(&t.file);
        let _ = tx.send(Msg::FileOpen(t.meta()));
    }
    t.last_size = size;
    let mut read = 0;
    let mut buf = vec![0u8; CHUNK];
    while t.offset < size && read < MAX_PER_PASS {
        let n = match t.file.read_at(&mut buf, t.offset) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if t.head.len() < HEAD_LEN && t.offset < HEAD_LEN as u64 {
            t.head = read_head(&t.file);
            let _ = tx.send(Msg::FileHead(t.origin(), t.head.clone()));
        }
        t.offset += n as u64;
        read += n as u64;
        if tx
            .send(Msg::FileData(t.origin(), buf[..n].to_vec()))
            .is_err()
        {
            break;
        }
    }
    if read > 0 {
        tracing::trace!(target: "tail", bytes = read, offset = t.offset, "read");
        t.last_data = Instant::now();
    }
    read
}
