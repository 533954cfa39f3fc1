//! The data path of one run, wired together: chunks of bytes from the sources
//! go through framing and parsing on one thread, and finished batches go to the
//! sink on another.
//!
//! Sources (wrap, stdin) only read and echo; they hand bytes to
//! [`Pipeline::sender`] and never wait on parsing or storage beyond a bounded
//! queue. The pipeline thread owns every [`RecordAssembler`] and the
//! [`Batcher`], and keeps the clock: it wakes when a traceback or batch is due.

use crate::framing::LineFramer;
use crate::parse::{AssemblerTiming, Output, ParserChain, ProgressParser, RecordAssembler};
use crate::record::{Event, StreamKind};
use crate::sink::{Batcher, BatcherSettings, Checkpoint, RunContext, Sink, SinkStats, SinkWorker};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
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
    /// The file is now known under another path (rotation).
    FileRenamed(String, String),
    /// No more bytes will come for this origin: finish what is pending.
    FileClosed(String),
    Event(Event),
    /// The run's registry row changed (start, end): stores that keep their own copy need it.
    Run(crate::run::Run),
    /// No more input: finish everything and stop. (Senders may outlive the run,
    /// e.g. the signal thread, so the channel closing is not the signal.)
    Close,
}

#[derive(Debug, Clone, Copy)]
pub struct PipelineSettings {
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
    /// Records waiting in the spool for PostgreSQL.
    pub spool_pending: Arc<AtomicU64>,
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
        first_seq: u64,
    ) -> Pipeline {
        // Bounded: a source that outruns parsing waits here instead of the
        // agent's memory growing without limit.
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
                    settings.shutdown_timeout,
                );
                let batcher = Batcher::new(settings.batcher, first_seq, batch_tx);
                process(settings, rx, batcher, &thread_counters);
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
        let _ = self.tx.send(Msg::Close);
        self.handle.join().unwrap_or_default()
    }
}

fn process(
    settings: PipelineSettings,
    rx: Receiver<Msg>,
    mut batcher: Batcher,
    counters: &PipelineCounters,
) {
    let chain = Arc::new(ParserChain::builtin());
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
            .chain(batcher.deadline())
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
                    finish_file(&mut old, &mut frames, &mut outputs, &mut batcher, counters);
                }
                let assembler = RecordAssembler::new(
                    chain.clone(),
                    progress.clone(),
                    settings.timing,
                    StreamKind::File,
                    &meta.path,
                );
                let framer = LineFramer::new(settings.max_line_bytes).starting_at(meta.offset);
                // Record where reading starts even before any record arrives:
                // a copy opened past its end must be known as read after a restart.
                let checkpointed = u64::MAX;
                files.insert(
                    meta.origin.clone(),
                    FileState {
                        origin: Arc::from(meta.origin.as_str()),
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
                    deliver_file(file, &mut outputs, &mut batcher, now, counters);
                }
            }
            Ok(Msg::FileHead(origin, head)) => {
                if let Some(file) = files.get_mut(&origin) {
                    file.meta.head = head;
                    file.checkpointed = u64::MAX;
                }
            }
            Ok(Msg::FileRenamed(origin, path)) => {
                if let Some(file) = files.get_mut(&origin) {
                    file.assembler.set_source(&path);
                    file.meta.path = path;
                }
            }
            Ok(Msg::FileClosed(origin)) => {
                if let Some(mut file) = files.remove(&origin) {
                    finish_file(&mut file, &mut frames, &mut outputs, &mut batcher, counters);
                }
            }
            Ok(Msg::Event(event)) => batcher.event(event),
            Ok(Msg::Run(run)) => batcher.run(run),
            Ok(Msg::Close) | Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {}
        }
        for state in streams.values_mut() {
            state.assembler.on_idle(now, &mut outputs);
        }
        deliver(&mut outputs, &mut batcher, now, counters);
        for file in files.values_mut() {
            file.assembler.on_idle(now, &mut outputs);
            deliver_file(file, &mut outputs, &mut batcher, now, counters);
        }
        batcher.tick(now);
    }
    for mut file in std::mem::take(&mut files).into_values() {
        finish_file(&mut file, &mut frames, &mut outputs, &mut batcher, counters);
    }
    for state in streams.values_mut() {
        state.framer.finish(&mut frames);
        let now = Instant::now();
        for frame in frames.drain(..) {
            state.assembler.frame(frame, now, &mut outputs);
        }
        state.assembler.finish(&mut outputs);
    }
    deliver(&mut outputs, &mut batcher, Instant::now(), counters);
    batcher.close();
}

fn deliver(
    outputs: &mut Vec<Output>,
    batcher: &mut Batcher,
    now: Instant,
    counters: &PipelineCounters,
) {
    deliver_from(None, outputs, batcher, now, counters);
}

fn deliver_from(
    origin: Option<&Arc<str>>,
    outputs: &mut Vec<Output>,
    batcher: &mut Batcher,
    now: Instant,
    counters: &PipelineCounters,
) {
    for output in outputs.drain(..) {
        match output {
            Output::Record(record) => {
                if record.is_urgent() {
                    note_error(&record, counters);
                }
                batcher.record(record, origin, now)
            }
            Output::Progress(update) => batcher.progress(update, now),
        }
    }
    counters
        .records
        .store(batcher.records_sent, Ordering::Relaxed);
}

fn note_error(record: &crate::record::LogRecord, counters: &PipelineCounters) {
    let text = match (&record.exception_type, &record.exception_message) {
        (Some(t), Some(m)) if !m.is_empty() => format!("{t}: {}", m.lines().next().unwrap_or("")),
        (Some(t), _) => t.clone(),
        _ => record.message.clone(),
    };
    if let Ok(mut last) = counters.last_error.lock() {
        *last = Some(text);
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
    batcher: &mut Batcher,
    now: Instant,
    counters: &PipelineCounters,
) {
    let group_size = batcher.batch_size().max(1);
    let mut rest = std::mem::take(outputs);
    loop {
        let take = group_size.min(rest.len());
        let mut group: Vec<Output> = rest.drain(..take).collect();
        let next_offset = rest.iter().find_map(|o| match o {
            Output::Record(r) => r.offset,
            Output::Progress(_) => None,
        });
        batcher.hold();
        deliver_from(Some(&file.origin), &mut group, batcher, now, counters);
        let offset = next_offset.unwrap_or_else(|| file.safe_offset());
        if offset != file.checkpointed {
            file.checkpointed = offset;
            batcher.checkpoint(file.checkpoint(offset), now);
        }
        batcher.release();
        if rest.is_empty() {
            break;
        }
    }
    *outputs = rest;
}

fn finish_file(
    file: &mut FileState,
    frames: &mut Vec<crate::framing::Framed>,
    outputs: &mut Vec<Output>,
    batcher: &mut Batcher,
    counters: &PipelineCounters,
) {
    let now = Instant::now();
    file.framer.finish(frames);
    for frame in frames.drain(..) {
        file.assembler.frame(frame, now, outputs);
    }
    file.assembler.finish(outputs);
    deliver_file(file, outputs, batcher, now, counters);
}
