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
use crate::sink::{Batcher, BatcherSettings, RunContext, Sink, SinkStats, SinkWorker};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A message from a source to the pipeline thread.
pub enum Msg {
    Data(StreamKind, Vec<u8>),
    Eof(StreamKind),
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
}

/// Counters readable while the run goes on (for the SIGUSR1 status report).
#[derive(Debug, Default)]
pub struct PipelineCounters {
    pub lines: AtomicU64,
    pub records: AtomicU64,
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

impl Pipeline {
    pub fn start(
        settings: PipelineSettings,
        sink: Box<dyn Sink>,
        ctx: RunContext,
        first_seq: u64,
    ) -> Pipeline {
        // Bounded: a source that outruns parsing waits here instead of the
        // agent's memory growing without limit.
        let (tx, rx) = crossbeam_channel::bounded::<Msg>(32);
        let counters = Arc::new(PipelineCounters::default());
        let thread_counters = counters.clone();
        let handle = std::thread::Builder::new()
            .name("pmon-pipeline".into())
            .spawn(move || {
                let (batch_tx, worker) = SinkWorker::spawn(sink, ctx);
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
    let mut frames = Vec::new();
    let mut outputs = Vec::new();
    loop {
        let deadline = streams
            .values()
            .filter_map(|s| s.assembler.deadline())
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
            Ok(Msg::Event(event)) => batcher.event(event),
            Ok(Msg::Run(run)) => batcher.run(run),
            Ok(Msg::Close) | Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {}
        }
        for state in streams.values_mut() {
            state.assembler.on_idle(now, &mut outputs);
        }
        deliver(&mut outputs, &mut batcher, now, counters);
        batcher.tick(now);
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
    for output in outputs.drain(..) {
        match output {
            Output::Record(record) => batcher.record(record, now),
            Output::Progress(update) => batcher.progress(update, now),
        }
    }
    counters
        .records
        .store(batcher.records_sent, Ordering::Relaxed);
}

/// How long `wrap` waits for pipes to close after the child exited (a
/// grandchild may hold them open forever).
pub const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);
