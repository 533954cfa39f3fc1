//! The data path of one run, wired together: chunks of bytes from the sources
//! go through framing and parsing on one thread, and finished batches go to the
//! sink on another.
//!
//! Sources (wrap, stdin) only read and echo; they hand bytes to
//! [`Pipeline::sender`] and never wait on parsing or storage beyond a bounded
//! queue. The pipeline thread owns every [`RecordAssembler`] and the
//! [`Batcher`], and keeps the clock: it wakes when a traceback or batch is due.

mod errors;
mod outlet;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
pub use errors::ErrorGroupsSeen;
use errors::{note_error, with_crash_site};
use outlet::Outlet;
use pmon_core::framing::LineFramer;
use pmon_core::parse::{AssemblerTiming, Output, ParserChain, ProgressParser, RecordAssembler};
use pmon_core::record::{Event, Metric, ProgressUpdate, StreamKind};
use pmon_store::{Batcher, BatcherSettings, Checkpoint, RunContext, Sink, SinkStats, SinkWorker};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

/// A tailed file as the pipeline knows it: its identity and where reading starts.
#[derive(Debug, Clone)]
pub struct FileMeta {
    /// `file:<dev>:<ino>:<generation>`: the idempotency origin of its records.
    pub origin: String,
    pub path: String,
    pub dev: u64,
    pub ino: u64,
    pub head: Vec<u8>,
    pub generation: u64,
    /// Offset of the first byte that will be sent.
    pub offset: u64,
    /// What the inode held before its last truncation, and how far it was read.
    pub earlier: Option<(Vec<u8>, u64)>,
    /// The origin of the live file this one is a copy of (copytruncate),
    /// read from `offset` on because that file was read that far.
    pub copy_of: Option<String>,
    /// The stream its records say they came from (`file` for tailed files;
    /// `stdout`/`stderr` for a wrapped program's capture files).
    pub stream: StreamKind,
    /// The `source` of its records; `None`: the path.
    pub source: Option<String>,
    /// Only ever appended to, never rotated or truncated (a capture file).
    pub append_only: bool,
}

/// A message from a source to the pipeline thread.
pub enum Msg {
    Data(StreamKind, Vec<u8>),
    Eof(StreamKind),
    /// A file starts (or restarts after truncation) at `meta.offset`.
    FileOpen(FileMeta),
    /// The next bytes of a file, by origin.
    FileData(String, Vec<u8>),
    /// More of the file's first bytes are known (it was short when opened).
    FileHead(String, Vec<u8>),
    /// The bytes of the file that follow arrived at this time: records made
    /// from them are stamped with it (a capture file read later, or again).
    FileClock(String, chrono::DateTime<chrono::Utc>),
    /// The file is now known under another path (rotation).
    FileRenamed(String, String),
    /// No more bytes will come for this origin: finish what is pending.
    FileClosed(String),
    Event(Event),
    /// A metrics sample of the program and the host (the `throughput/*`
    /// series are added on the pipeline thread, which counts lines).
    Sample(Vec<Metric>),
    /// The run's registry row changed (start, end): stores that keep their own copy need it.
    Run(pmon_core::run::Run),
    /// No more input: finish everything and stop. (Senders may outlive the run,
    /// e.g. the signal thread, so the channel closing is not the signal.)
    Close,
}

/// The metrics sampler's series, delivered into the pipeline's inbox (the
/// pipeline only goes away at the end of the run, so a send that fails is
/// one nobody would read).
pub fn sample_into(tx: crossbeam_channel::Sender<Msg>) -> crate::metrics::Deliver {
    Box::new(move |metrics| {
        let _ = tx.send(Msg::Sample(metrics));
    })
}

#[derive(Clone)]
pub struct PipelineSettings {
    /// The parsers every stream and file goes through.
    pub chain: Arc<ParserChain>,
    pub batcher: BatcherSettings,
    pub timing: AssemblerTiming,
    pub max_line_bytes: usize,
    /// How long the sink may spend shipping its spool after the last batch.
    pub shutdown_timeout: std::time::Duration,
}

/// Counters readable while the run goes on (for the SIGUSR1 status report).
#[derive(Debug, Default)]
pub struct PipelineCounters {
    pub lines: AtomicU64,
    pub records: AtomicU64,
    /// The newest error seen, as `Type: message` (or the message): what a
    /// daemon's status shows after a crash.
    pub last_error: std::sync::Mutex<Option<String>>,
    /// The newest ERROR or CRITICAL record itself, for the run's end notification.
    pub last_error_record: std::sync::Mutex<Option<pmon_core::record::LogRecord>>,
    /// Error groups this run has shown, and the first record of each one
    /// not yet looked up in the store (`new_error_group` notifications).
    pub error_groups: std::sync::Mutex<ErrorGroupsSeen>,
    /// Records waiting in the spool for PostgreSQL.
    pub spool_pending: Arc<AtomicU64>,
    /// The run is over: the sink stops waiting for a full disk after
    /// `shutdown_timeout`.
    pub closing: Arc<std::sync::atomic::AtomicBool>,
    /// ERROR and CRITICAL records seen.
    pub errors: AtomicU64,
    /// The newest memory and CPU sample of the program's process tree.
    pub resources: std::sync::Mutex<Resources>,
    /// The latest state of each top-level progress task, in order of appearance.
    pub top_progress: std::sync::Mutex<Vec<ProgressUpdate>>,
    /// Progress updates seen (any task): the stall detector's "it moves".
    pub progress_updates: AtomicU64,
    /// When the program stalled (no output, no progress, idle CPU), while it is.
    pub stalled_since: std::sync::Mutex<Option<String>>,
}

/// The program's memory and CPU at the newest sample, for status reports.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Resources {
    pub rss_bytes: Option<u64>,
    pub cpu_percent: Option<f64>,
}

impl Resources {
    /// `rss 812.4 MiB, cpu 97%`, or `None` before the first sample.
    pub fn describe(&self) -> Option<String> {
        let rss = self
            .rss_bytes
            .map(|b| format!("rss {:.1} MiB", b as f64 / 1048576.0));
        let cpu = self.cpu_percent.map(|c| format!("cpu {c:.0}%"));
        let parts: Vec<String> = [rss, cpu].into_iter().flatten().collect();
        (!parts.is_empty()).then(|| parts.join(", "))
    }
}

pub struct Pipeline {
    tx: Sender<Msg>,
    handle: JoinHandle<SinkStats>,
    counters: Arc<PipelineCounters>,
}

struct StreamState {
    framer: LineFramer,
    assembler: RecordAssembler,
}

struct FileState {
    meta: FileMeta,
    /// `meta.origin`, shared by every record of the file.
    origin: Arc<str>,
    framer: LineFramer,
    assembler: RecordAssembler,
    /// The last checkpoint offset handed to the batcher.
    checkpointed: u64,
    /// For a copy (copytruncate): the live file it copies, while that file
    /// has not yet handed over its records up to where the copy starts.
    /// Until then the copy's position is not stored: were it stored, a crash
    /// before those records are would leave them in neither file's future.
    owed_by: Option<String>,
}

impl FileState {
    fn checkpoint(&self, offset: u64) -> Checkpoint {
        Checkpoint {
            dev: self.meta.dev,
            ino: self.meta.ino,
            head: self.meta.head.clone(),
            generation: self.meta.generation,
            path: self.meta.path.clone(),
            offset,
            earlier: self.meta.earlier.clone(),
            may_lag: self.meta.append_only,
        }
    }

    /// How far this file's records have been handed to the batcher.
    fn handed_over(&self) -> u64 {
        if self.checkpointed == u64::MAX {
            self.meta.offset
        } else {
            self.checkpointed
        }
    }

    /// Nothing before this offset is still waiting inside the pipeline.
    fn safe_offset(&self) -> u64 {
        let unframed = self.framer.unframed_offset();
        self.assembler
            .held_offset()
            .map_or(unframed, |held| held.min(unframed))
    }
}

impl Pipeline {
    pub fn start(
        settings: PipelineSettings,
        sink: Box<dyn Sink>,
        ctx: RunContext,
        first_seq: pmon_core::run::SeqStart,
    ) -> Pipeline {
        // Bounded: a source that outruns parsing waits here instead of the
        // agent's memory growing without limit. No message carries more
        // than `framing::CHUNK_BYTES`: at most 512 KiB waits here.
        let (tx, rx) = crossbeam_channel::bounded::<Msg>(8);
        let counters = Arc::new(PipelineCounters::default());
        let thread_counters = counters.clone();
        let handle = std::thread::Builder::new()
            .name("pmon-pipeline".into())
            .spawn(move || {
                let (batch_tx, worker) = SinkWorker::spawn(
                    sink,
                    ctx,
                    thread_counters.spool_pending.clone(),
                    thread_counters.closing.clone(),
                    settings.shutdown_timeout,
                );
                let batcher = Batcher::new(settings.batcher, first_seq, batch_tx);
                process(settings, rx, Outlet::new(batcher), &thread_counters);
                worker.join()
            })
            .expect("spawning the pipeline thread");
        Pipeline {
            tx,
            handle,
            counters,
        }
    }

    pub fn sender(&self) -> Sender<Msg> {
        self.tx.clone()
    }

    pub fn counters(&self) -> Arc<PipelineCounters> {
        self.counters.clone()
    }

    /// Closes the input and waits until everything is parsed and stored.
    pub fn finish(self) -> SinkStats {
        self.counters.closing.store(true, Ordering::SeqCst);
        let _ = self.tx.send(Msg::Close);
        self.handle.join().unwrap_or_default()
    }
}

fn process(
    settings: PipelineSettings,
    rx: Receiver<Msg>,
    mut outlet: Outlet,
    counters: &PipelineCounters,
) {
    let chain = settings.chain.clone();
    let progress = Arc::new(ProgressParser::new());
    let mut streams: HashMap<StreamKind, StreamState> = HashMap::new();
    let mut files: HashMap<String, FileState> = HashMap::new();
    let mut frames = Vec::new();
    let mut outputs = Vec::new();
    loop {
        let deadline = streams
            .values()
            .map(|s| &s.assembler)
            .chain(files.values().map(|f| &f.assembler))
            .filter_map(|a| a.deadline())
            .chain(outlet.batcher.deadline())
            .min();
        let msg = match deadline {
            Some(d) => rx.recv_timeout(d.saturating_duration_since(Instant::now())),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        let now = Instant::now();
        match msg {
            Ok(Msg::Data(kind, bytes)) => {
                let state = streams.entry(kind).or_insert_with(|| StreamState {
                    framer: LineFramer::new(settings.max_line_bytes),
                    assembler: RecordAssembler::new(
                        chain.clone(),
                        progress.clone(),
                        settings.timing,
                        kind,
                        kind.as_str(),
                    ),
                });
                state.framer.push(&bytes, &mut frames);
                counters
                    .lines
                    .fetch_add(frames.len() as u64, Ordering::Relaxed);
                for frame in frames.drain(..) {
                    state.assembler.frame(frame, now, &mut outputs);
                }
            }
            Ok(Msg::Eof(kind)) => {
                if let Some(state) = streams.get_mut(&kind) {
                    state.framer.finish(&mut frames);
                    for frame in frames.drain(..) {
                        state.assembler.frame(frame, now, &mut outputs);
                    }
                    state.assembler.finish(&mut outputs);
                }
            }
            Ok(Msg::FileOpen(meta)) => {
                if let Some(mut old) = files.remove(&meta.origin) {
                    finish_file(&mut old, &mut frames, &mut outputs, &mut outlet, counters);
                }
                let assembler = RecordAssembler::new(
                    chain.clone(),
                    progress.clone(),
                    settings.timing,
                    meta.stream,
                    meta.source.as_deref().unwrap_or(&meta.path),
                );
                let framer = LineFramer::new(settings.max_line_bytes).starting_at(meta.offset);
                // Record where reading starts even before any record arrives:
                // a copy opened past its end must be known as read after a restart.
                let checkpointed = u64::MAX;
                files.insert(
                    meta.origin.clone(),
                    FileState {
                        origin: Arc::from(meta.origin.as_str()),
                        owed_by: meta.copy_of.clone(),
                        meta,
                        framer,
                        assembler,
                        checkpointed,
                    },
                );
            }
            Ok(Msg::FileData(origin, bytes)) => {
                if let Some(file) = files.get_mut(&origin) {
                    file.framer.push(&bytes, &mut frames);
                    counters
                        .lines
                        .fetch_add(frames.len() as u64, Ordering::Relaxed);
                    for frame in frames.drain(..) {
                        file.assembler.frame(frame, now, &mut outputs);
                    }
                    deliver_file(file, &mut outputs, &mut outlet, now, counters);
                }
            }
            Ok(Msg::FileHead(origin, head)) => {
                if let Some(file) = files.get_mut(&origin) {
                    file.meta.head = head;
                    file.checkpointed = u64::MAX;
                }
            }
            Ok(Msg::FileClock(origin, at)) => {
                if let Some(file) = files.get_mut(&origin) {
                    file.assembler.set_clock(at);
                }
            }
            Ok(Msg::FileRenamed(origin, path)) => {
                if let Some(file) = files.get_mut(&origin) {
                    if file.meta.source.is_none() {
                        file.assembler.set_source(&path);
                    }
                    file.meta.path = path;
                }
            }
            Ok(Msg::FileClosed(origin)) => {
                if let Some(mut file) = files.remove(&origin) {
                    finish_file(&mut file, &mut frames, &mut outputs, &mut outlet, counters);
                }
            }
            Ok(Msg::Event(event)) => outlet.batcher.event(with_crash_site(event, counters)),
            Ok(Msg::Sample(metrics)) => outlet.sample(metrics, now, counters),
            Ok(Msg::Run(run)) => outlet.batcher.run(run),
            Ok(Msg::Close) | Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {}
        }
        for state in streams.values_mut() {
            state.assembler.on_idle(now, &mut outputs);
        }
        deliver(&mut outputs, &mut outlet, now, counters);
        settle_copies(&mut files);
        for file in files.values_mut() {
            file.assembler.on_idle(now, &mut outputs);
            deliver_file(file, &mut outputs, &mut outlet, now, counters);
        }
        outlet.batcher.tick(now);
    }
    // Sources before their copies, so that every copy's position is stored.
    while !files.is_empty() {
        settle_copies(&mut files);
        let mut ready: Vec<String> = files
            .iter()
            .filter(|(_, f)| f.owed_by.is_none())
            .map(|(origin, _)| origin.clone())
            .collect();
        if ready.is_empty() {
            ready = files.keys().cloned().collect();
        }
        for origin in ready {
            if let Some(mut file) = files.remove(&origin) {
                finish_file(&mut file, &mut frames, &mut outputs, &mut outlet, counters);
            }
        }
    }
    for state in streams.values_mut() {
        state.framer.finish(&mut frames);
        let now = Instant::now();
        for frame in frames.drain(..) {
            state.assembler.frame(frame, now, &mut outputs);
        }
        state.assembler.finish(&mut outputs);
    }
    deliver(&mut outputs, &mut outlet, Instant::now(), counters);
    outlet.batcher.close();
}

fn deliver(
    outputs: &mut Vec<Output>,
    outlet: &mut Outlet,
    now: Instant,
    counters: &PipelineCounters,
) {
    deliver_from(None, outputs, outlet, now, counters);
}

fn deliver_from(
    origin: Option<&Arc<str>>,
    outputs: &mut Vec<Output>,
    outlet: &mut Outlet,
    now: Instant,
    counters: &PipelineCounters,
) {
    for output in outputs.drain(..) {
        match output {
            Output::Record(record) => {
                if record.is_urgent() {
                    note_error(&record, counters);
                }
                outlet.batcher.record(record, origin, now)
            }
            Output::Progress(update) => outlet.progress(update, now, counters),
            Output::Metric(metric) => outlet.batcher.metrics(vec![metric], now),
            Output::ParseError { line, reason } => {
                let source = origin.map_or("program output", |o| o);
                outlet.parse_error(line, reason, source)
            }
        }
    }
    counters
        .records
        .store(outlet.batcher.records_sent, Ordering::Relaxed);
}

/// Lets a copy's position be stored once its source has handed over its
/// records up to where the copy starts (or is finished and gone).
fn settle_copies(files: &mut HashMap<String, FileState>) {
    let settled: Vec<String> = files
        .iter()
        .filter(|(_, file)| {
            file.owed_by.as_ref().is_some_and(|source| {
                files
                    .get(source)
                    .is_none_or(|s| s.handed_over() >= file.meta.offset)
            })
        })
        .map(|(origin, _)| origin.clone())
        .collect();
    for origin in settled {
        if let Some(file) = files.get_mut(&origin) {
            file.owed_by = None;
        }
    }
}

/// Hands a file's records to the batcher in groups of at most a batch, each
/// followed by the checkpoint it makes safe: the start of the next record (or,
/// after the last, the first byte still inside the pipeline). A batch is never
/// cut between records and their checkpoint, so the stored checkpoint never
/// lags the stored records — and memory stays bounded however short the lines.
fn deliver_file(
    file: &mut FileState,
    outputs: &mut Vec<Output>,
    outlet: &mut Outlet,
    now: Instant,
    counters: &PipelineCounters,
) {
    let group_size = outlet.batcher.batch_size().max(1);
    let mut rest = std::mem::take(outputs);
    loop {
        let take = group_size.min(rest.len());
        let mut group: Vec<Output> = rest.drain(..take).collect();
        let next_offset = rest.iter().find_map(|o| match o {
            Output::Record(r) => r.offset,
            _ => None,
        });
        outlet.batcher.hold();
        deliver_from(Some(&file.origin), &mut group, outlet, now, counters);
        let offset = next_offset.unwrap_or_else(|| file.safe_offset());
        if offset != file.checkpointed && file.owed_by.is_none() {
            file.checkpointed = offset;
            outlet.batcher.checkpoint(file.checkpoint(offset), now);
        }
        outlet.batcher.release();
        if rest.is_empty() {
            break;
        }
    }
    *outputs = rest;
}

fn finish_file(
    file: &mut FileState,
    frames: &mut Vec<pmon_core::framing::Framed>,
    outputs: &mut Vec<Output>,
    outlet: &mut Outlet,
    counters: &PipelineCounters,
) {
    let now = Instant::now();
    file.framer.finish(frames);
    for frame in frames.drain(..) {
        file.assembler.frame(frame, now, outputs);
    }
    file.assembler.finish(outputs);
    deliver_file(file, outputs, outlet, now, counters);
}

#[cfg(test)]
mod tests {
    use super::*;
    use pmon_core::record::Level;
    use pmon_store::Batch;
    use std::time::Duration;

    fn meta(origin: &str, ino: u64, offset: u64, copy_of: Option<&str>) -> FileMeta {
        FileMeta {
            origin: origin.into(),
            path: format!("/logs/{origin}"),
            dev: 1,
            ino,
            head: b"INFO:app:line 0".to_vec(),
            generation: 0,
            offset,
            earlier: None,
            copy_of: copy_of.map(str::to_string),
            stream: StreamKind::File,
            source: None,
            append_only: false,
        }
    }

    /// copytruncate, seen between copy and truncate: `app.log` (ino 1) has
    /// been read to its end, its last record still held in the pipeline (a
    /// log line waits for a traceback), when its copy (ino 2) opens there.
    /// After every batch — wherever a crash could strike — a stored position
    /// of the copy implies the live file's records before it are stored too.
    #[test]
    fn a_copys_position_is_never_stored_ahead_of_its_sources_records() {
        let settings = PipelineSettings {
            chain: Arc::new(ParserChain::builtin()),
            batcher: BatcherSettings {
                batch_size: 2,
                flush_interval: Duration::from_secs(3600),
                progress_interval: Duration::from_secs(3600),
                min_level: Level::Debug,
            },
            timing: AssemblerTiming {
                // The last log line of app.log stays held until the end.
                log_attach: Duration::from_secs(3600),
                ..AssemblerTiming::default()
            },
            max_line_bytes: 1 << 20,
            shutdown_timeout: Duration::ZERO,
        };
        // The batches as the batcher cuts them (the sink thread may merge
        // some into one write, never split them).
        let (batch_tx, batch_rx) = pmon_store::batch_queue(usize::MAX);
        let (tx, rx) = crossbeam_channel::unbounded();
        let text = "INFO:app:line 0\nINFO:app:line 1\nERROR:app:line 2\n";
        let end = text.len() as u64;
        tx.send(Msg::FileOpen(meta("a", 1, 0, None))).unwrap();
        tx.send(Msg::FileData("a".into(), text.as_bytes().to_vec()))
            .unwrap();
        tx.send(Msg::FileOpen(meta("c", 2, end, Some("a"))))
            .unwrap();
        tx.send(Msg::FileData(
            "c".into(),
            b"INFO:app:line 3\nINFO:app:line 4\nINFO:app:line 5\n".to_vec(),
        ))
        .unwrap();
        tx.send(Msg::Close).unwrap();
        let first = pmon_core::run::SeqStart {
            logs: 0,
            metrics: 0,
        };
        let batcher = Batcher::new(settings.batcher, first, batch_tx);
        process(
            settings,
            rx,
            Outlet::new(batcher),
            &PipelineCounters::default(),
        );

        let batches: Vec<Batch> = batch_rx.try_iter().collect();
        let mut stored_a = Vec::new();
        let mut copy_position = None;
        for (i, batch) in batches.iter().enumerate() {
            for r in &batch.logs {
                if &*r.origin == "a" {
                    stored_a.push(r.seq);
                }
            }
            for cp in batch.checkpoints.iter().filter(|cp| cp.ino == 2) {
                copy_position = Some(cp.offset);
            }
            if let Some(at) = copy_position {
                let line_2 = (text.len() - "ERROR:app:line 2\n".len()) as u64;
                assert!(
                    at < line_2 || stored_a.contains(&line_2),
                    "batch {i}: the copy's position {at} is stored, app.log's line 2 is not"
                );
            }
        }
        assert!(stored_a.contains(&((text.len() - "ERROR:app:line 2\n".len()) as u64)));
        assert!(
            copy_position.is_some_and(|at| at > end),
            "the copy's position is stored in the end"
        );
    }
}
