//! `pmon-agent ship` (internal): the shipper of a run whose program a holder
//! runs (see `holder`). It registers the run (or, started again after a
//! crash, attaches to it), reads the capture files from where the stored
//! records end, and feeds them through the pipeline — parsing, metrics,
//! batches, the store, the spool — exactly as `wrap` did in one process.
//!
//! Its read position in each capture file is a checkpoint stored in the same
//! transaction as the records before it (the tail machinery), and records
//! are keyed by their offset in the file: a successor re-reading from the
//! checkpoint stores nothing twice and misses nothing.

use super::recording::Recording;
use crate::app::App;
use crate::cli::ShipArgs;
use crate::daemon::live::LiveRefresher;
use crate::daemon::DaemonDir;
use crate::holder::capture::{CaptureDir, EventsReader, ProgramEnd, TimesReader};
use crate::holder::{end_state, ShipResult};
use crate::metrics::stall::{StallChange, StallWatch};
use crate::metrics::MetricsSampler;
use crate::notify;
use crate::pipeline::PipelineCounters;
use crate::pipeline::{sample_into, FileMeta, Msg};
use crate::source::tail::{load_checkpoints, StoredCheckpoint};
use anyhow::Context;
use chrono::{DateTime, Utc};
use crossbeam_channel::Sender;
use pmon_core::procinfo::oom::{MemoryWatch, OomVerdict};
use pmon_core::procinfo::pyspy::{self, PySpyError};
use pmon_core::record::format_ts;
use pmon_core::record::{Event, StreamKind};
use pmon_core::run::{RunState, StartMode};
use serde_json::json;
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the shipper sleeps when the capture has nothing new.
const IDLE: Duration = Duration::from_millis(10);
/// Most bytes read from a capture file at once (and handed on in one message).
const READ_CHUNK: usize = pmon_core::framing::CHUNK_BYTES;

pub fn run(global: &crate::cli::GlobalArgs, args: ShipArgs) -> anyhow::Result<i32> {
    let mut app = match App::new(global) {
        Ok(app) => app,
        // The first shipper reads the configuration for `wrap`: what is
        // wrong with it stops the run before the program starts.
        Err(e) if args.run_id.is_none() => {
            refuse(&format!("{e:#}"));
            return Ok(1);
        }
        Err(e) => return Err(e),
    };
    app.parser_selection = args.parsers.clone();
    ship(&app, args)
}

fn ship(app: &App, args: ShipArgs) -> anyhow::Result<i32> {
    let holder = nix::unistd::getppid();
    let recording = match &args.run_id {
        Some(run_id) => Recording::attach(app, run_id)?,
        None => match begin(app, &args, holder.as_raw() as u32) {
            Some(recording) => recording,
            None => return Ok(0),
        },
    };
    let Some(run) = recording.run.clone() else {
        return Ok(0);
    };
    let _span = tracing::info_span!(target: "pmon", "run", experiment = %run.experiment_id, run = %run.run_id).entered();
    tracing::info!(target: "holder", ordinal = run.ordinal, restarts = args.restarts, "shipping the run's capture");
    let capture = CaptureDir::new(app.data_dir.root(), &run.run_id);
    let flags = args
        .notify_json
        .as_deref()
        .and_then(|j| serde_json::from_str(j).ok());
    let notify = app.config.notify.with_override(flags.as_ref());
    let facts = notify::RunFacts {
        experiment_id: run.experiment_id.clone(),
        run_id: run.run_id.clone(),
        ordinal: Some(run.ordinal),
        daemon: args.daemon.clone(),
        started_at: run.started_at.clone(),
    };
    let mut new_groups = notify::NewGroupWatch::new(
        notify.clone(),
        facts.clone(),
        &recording.pipeline.counters(),
    );
    let checkpoints = recording
        .registry()
        .map(|store| load_checkpoints(store.conn(), &run.experiment_id))
        .transpose()
        .context("could not read the capture's read positions from the store")?
        .unwrap_or_default();
    let tx = recording.pipeline.sender();
    let counters = recording.pipeline.counters();
    let program = Arc::new(AtomicU32::new(0));
    report_on_sigusr1(program.clone(), counters.clone(), tx.clone());
    let _live = args.daemon.as_ref().map(|name| {
        LiveRefresher::start(
            DaemonDir::new(&app.data_dir),
            name.clone(),
            Some(run.run_id.clone()),
            counters.clone(),
        )
    });
    let memory = MemoryWatch::start();
    let interval = Some(app.config.monitoring.metrics_interval).filter(|i| !i.is_zero());
    let sampler = MetricsSampler::start(
        interval,
        app.data_dir.root().to_path_buf(),
        sample_into(tx.clone()),
    );
    let kinds: &[StreamKind] = if args.pty {
        &[StreamKind::Stdout]
    } else {
        &[StreamKind::Stdout, StreamKind::Stderr]
    };
    let mut streams: Vec<CaptureStream> = kinds.iter().map(|k| CaptureStream::new(*k)).collect();
    let mut events: Option<EventsReader> = None;
    let told = EndFromHolder::listen();
    let mut stall = StallWatch::new(app.config.monitoring.stall_after, Instant::now());
    let end = loop {
        // Read before the streams: once it is known, what they hold is final.
        let end = told.end().or_else(|| capture.read_end());
        let holder_gone = told.holder_gone() || nix::unistd::getppid() != holder;
        let mut progressed = false;
        if events.is_none() {
            events = EventsReader::open(&capture.events()).ok();
        }
        for event in events
            .as_mut()
            .map(|e| e.read_new())
            .transpose()?
            .unwrap_or_default()
        {
            if event.event_type == "start" && end.is_none() {
                if let Some(pid) = event.details["pid"].as_u64() {
                    let pid = pid as u32;
                    program.store(pid, Ordering::SeqCst);
                    memory.watch(pid);
                    sampler.watch(pid);
                    if let Some(stall) = stall.as_mut() {
                        stall.watch(pid);
                    }
                    recording.set_child_pid(pid);
                }
            }
            recording.event(event);
            progressed = true;
        }
        let mut output = false;
        for stream in &mut streams {
            output |= stream.pump(&capture, &checkpoints, &tx)?;
        }
        progressed |= output;
        if let Some(stall) = stall.as_mut() {
            let updates = counters.progress_updates.load(Ordering::Relaxed);
            match stall.check(output, updates, Instant::now()) {
                // A program that has ended is not stuck.
                Some(StallChange::Stalled { .. }) if end.is_some() => {}
                Some(change) => note_stall(
                    &recording,
                    &counters,
                    program.load(Ordering::SeqCst),
                    change,
                ),
                None => {}
            }
        }
        new_groups.look(app, &counters);
        if !progressed && (end.is_some() || holder_gone) {
            break end;
        }
        if !progressed {
            std::thread::sleep(IDLE);
        }
    };
    for stream in &streams {
        stream.close(&tx);
    }
    let Some(end) = end else {
        // The holder died before the program ended: what it captured is
        // shipped; the run shows as lost (its agent is gone).
        recording.pipeline.finish();
        new_groups.finish(app, &counters, None);
        if notify.wants(pmon_core::options::NotifyOn::Lost) {
            notify::send_detached(app, &notify, notify::lost(&facts, Utc::now()));
        }
        return Ok(0);
    };
    sampler.exited();
    let result = record_the_end(&recording, &end, &memory);
    let state = match end.error {
        Some(_) => RunState::Failed,
        None => end_state(end.exit_code, end.signal, end.forwarded),
    };
    tracing::info!(target: "holder", state = state.as_str(), exit_code = ?end.exit_code, signal = ?end.signal, "program ended");
    recording.finish(state, end.exit_code, end.signal)?;
    let result = ShipResult {
        last_error: counters.last_error.lock().ok().and_then(|e| e.clone()),
        ..result
    };
    std::fs::write(
        capture.result(),
        serde_json::to_vec(&result).unwrap_or_default(),
    )
    .with_context(|| format!("could not write {}", capture.result().display()))?;
    let last_error = counters
        .last_error_record
        .lock()
        .ok()
        .and_then(|r| r.clone());
    // The end's notification names the error it died of; if that error is
    // new to the experiment it says so, rather than a second notification.
    let ended_by = matches!(state, RunState::Failed | RunState::Crashed)
        .then(|| {
            last_error
                .as_ref()
                .and_then(pmon_core::parse::fingerprint::error_group)
        })
        .flatten();
    let new_error = new_groups.finish(app, &counters, ended_by.as_deref());
    let ended = notify::RunEnd {
        new_error,
        state,
        exit_code: end.exit_code,
        signal: end.signal,
        oom: result.oom.as_deref(),
        last_error: last_error.as_ref(),
    };
    if let Some(n) = notify::run_end(&facts, &ended, |on| notify.wants(on), Utc::now()) {
        notify::send_detached(app, &notify, n);
    }
    Ok(0)
}

/// Registers the run and tells the holder (one line on stdout): `ready RUN`,
/// `refused "REASON"` (a live run exists, a bad config…) or `unrecorded` (no usable store;
/// the reason is on stderr already). `None`: nothing to ship.
fn begin(app: &App, args: &ShipArgs, holder: u32) -> Option<Recording> {
    let command: Vec<String> = args
        .command_json
        .as_deref()
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_default();
    let tags: Vec<(String, String)> = args
        .tags_json
        .as_deref()
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_default();
    let mode = match args.mode.as_deref() {
        Some("new-run") => StartMode::NewRun,
        Some("resume") => StartMode::Resume,
        Some("continue") => StartMode::Continue,
        _ => StartMode::Exclusive,
    };
    let said = match Recording::start_for(app, &args.experiment, &command, &tags, mode, holder) {
        Err(err) => {
            refuse(&format!("{err:#}"));
            return None;
        }
        Ok(recording) => match &recording.run {
            Some(run) => {
                // A resumed run's capture still says how its last session
                // ended: this session has not ended.
                let capture = CaptureDir::new(app.data_dir.root(), &run.run_id);
                let _ = std::fs::remove_file(capture.end());
                let _ = std::fs::remove_file(capture.result());
                say(&format!("ready {}", run.run_id));
                Some(recording)
            }
            None => {
                say("unrecorded");
                None
            }
        },
    };
    // Nothing more goes to the holder's handshake pipe.
    if let Ok(null) = File::options().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(null);
    }
    said
}

/// `refused "REASON"`: the reason as a JSON string, so that its lines
/// (a config error's snippet) reach the user as they were.
fn refuse(reason: &str) {
    say(&format!("refused {}", serde_json::Value::from(reason)));
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", line.replace('\n', " "));
    let _ = out.flush();
}

/// A `stall` event (with the program's Python stacks, when py-spy can read
/// them) or a `resume` event; the live status says since when it is stuck.
fn note_stall(recording: &Recording, counters: &PipelineCounters, pid: u32, change: StallChange) {
    match change {
        StallChange::Stalled { quiet, cpu_percent } => {
            let since = Utc::now() - chrono::Duration::from_std(quiet).unwrap_or_default();
            let (stack, stack_error) = match python_stacks(pid) {
                Ok(stack) => (Some(stack), None),
                Err(e) => (None, Some(e.to_string())),
            };
            tracing::info!(target: "holder", quiet = ?quiet, cpu_percent, "the program is stalled");
            recording.event(Event::now(
                "stall",
                json!({"since": format_ts(&since), "quiet_s": quiet.as_secs_f64(), "cpu_percent": cpu_percent,
                       "pid": pid, "stack": stack, "stack_error": stack_error}),
            ));
            if let Ok(mut stalled) = counters.stalled_since.lock() {
                *stalled = Some(format_ts(&since));
            }
        }
        StallChange::Resumed { stalled_for } => {
            tracing::info!(target: "holder", stalled_for = ?stalled_for, "the program goes on");
            recording.event(Event::now(
                "resume",
                json!({"stalled_s": stalled_for.as_secs_f64()}),
            ));
            if let Ok(mut stalled) = counters.stalled_since.lock() {
                *stalled = None;
            }
        }
    }
}

/// `py-spy dump` of every Python process of the program, one after another.
fn python_stacks(pid: u32) -> Result<String, PySpyError> {
    let pids = pyspy::python_processes(pid);
    let pids = if pids.is_empty() { vec![pid] } else { pids };
    let mut all = Vec::new();
    for pid in pids {
        all.push(pyspy::dump(pid, false)?);
    }
    Ok(all.join("\n"))
}

/// The `exit` event, with the OOM verdict; returns what the holder is told.
fn record_the_end(recording: &Recording, end: &ProgramEnd, memory: &MemoryWatch) -> ShipResult {
    let oom = memory.verdict(end.signal);
    let last_rss_bytes = memory.last_rss();
    let details = match &end.error {
        Some(error) => json!({"error": error}),
        None => {
            let state = end_state(end.exit_code, end.signal, end.forwarded);
            let signal_name = end.signal.map(pmon_core::text::signal_name);
            json!({"pid": end.pid, "exit_code": end.exit_code, "signal": end.signal, "signal_name": signal_name, "state": state.as_str(),
                "last_rss_bytes": last_rss_bytes, "likely_out_of_memory": oom.as_ref().map(OomVerdict::describe)})
        }
    };
    recording.event(Event::now("exit", details));
    ShipResult {
        last_error: None,
        last_rss_bytes,
        oom: oom.as_ref().map(OomVerdict::describe),
    }
}

/// What the holder says on the shipper's stdin: how the program ended (one
/// JSON line); end of file without it, that the holder is gone.
struct EndFromHolder {
    end: Arc<std::sync::Mutex<Option<ProgramEnd>>>,
    gone: Arc<std::sync::atomic::AtomicBool>,
}

impl EndFromHolder {
    fn listen() -> EndFromHolder {
        let told = EndFromHolder {
            end: Default::default(),
            gone: Default::default(),
        };
        let (end, gone) = (told.end.clone(), told.gone.clone());
        let _ = std::thread::Builder::new()
            .name("pmon-ship-end".into())
            .spawn(move || {
                use std::io::BufRead;
                for line in std::io::stdin().lock().lines() {
                    let Ok(line) = line else { break };
                    if let Ok(said) = serde_json::from_str::<ProgramEnd>(&line) {
                        if let Ok(mut end) = end.lock() {
                            *end = Some(said);
                        }
                        return;
                    }
                }
                gone.store(true, Ordering::SeqCst);
            });
        told
    }

    fn end(&self) -> Option<ProgramEnd> {
        self.end.lock().ok().and_then(|e| e.clone())
    }

    fn holder_gone(&self) -> bool {
        self.gone.load(Ordering::SeqCst)
    }
}

/// SIGUSR1 (passed on by the holder): the status report. SIGTERM ends the
/// shipper (the holder starts another if the run is not over).
fn report_on_sigusr1(
    program: Arc<AtomicU32>,
    counters: Arc<crate::pipeline::PipelineCounters>,
    tx: Sender<Msg>,
) {
    use nix::sys::signal::{SigSet, Signal};
    let started = Instant::now();
    let _ = std::thread::Builder::new()
        .name("pmon-ship-signals".into())
        .spawn(move || {
            let mut set = SigSet::empty();
            set.add(Signal::SIGUSR1);
            set.add(Signal::SIGTERM);
            while let Ok(signal) = set.wait() {
                if signal == Signal::SIGTERM {
                    std::process::exit(143);
                }
                let pid = program.load(Ordering::SeqCst);
                crate::source::wrap::status_report(pid, started, &counters, &tx);
            }
        });
}

/// One capture file, read as it grows.
struct CaptureStream {
    kind: StreamKind,
    origin: String,
    file: Option<File>,
    offset: u64,
    times: Option<TimesReader>,
    /// Chunk starts not yet passed, with their arrival times.
    clocks: VecDeque<(u64, DateTime<Utc>)>,
    /// The arrival time last sent.
    clock: Option<DateTime<Utc>>,
    buf: Vec<u8>,
}

impl CaptureStream {
    fn new(kind: StreamKind) -> CaptureStream {
        CaptureStream {
            kind,
            origin: format!("capture:{}", kind.as_str()),
            file: None,
            offset: 0,
            times: None,
            clocks: VecDeque::new(),
            clock: None,
            buf: vec![0; READ_CHUNK],
        }
    }

    /// Opens the file (once it exists) at its stored read position.
    fn open(
        &mut self,
        capture: &CaptureDir,
        checkpoints: &HashMap<(u64, u64), StoredCheckpoint>,
        tx: &Sender<Msg>,
    ) -> std::io::Result<bool> {
        let path = capture.stream(self.kind);
        // The holder creates the data file, then its times: wait for both.
        let (Ok(mut file), Ok(times)) = (
            File::open(&path),
            TimesReader::open(&capture.times(self.kind)),
        ) else {
            return Ok(false);
        };
        let meta = file.metadata()?;
        self.offset = checkpoints
            .get(&(meta.dev(), meta.ino()))
            .map_or(0, |c| c.offset);
        file.seek(SeekFrom::Start(self.offset))?;
        self.times = Some(times);
        let _ = tx.send(Msg::FileOpen(FileMeta {
            origin: self.origin.clone(),
            path: path.display().to_string(),
            dev: meta.dev(),
            ino: meta.ino(),
            head: Vec::new(),
            generation: 0,
            offset: self.offset,
            earlier: None,
            copy_of: None,
            stream: self.kind,
            source: Some(self.kind.as_str().to_string()),
            append_only: true,
        }));
        self.file = Some(file);
        Ok(true)
    }

    /// Hands what was appended since the last call to the pipeline, each
    /// piece after the time its chunk arrived. True if there was any.
    fn pump(
        &mut self,
        capture: &CaptureDir,
        checkpoints: &HashMap<(u64, u64), StoredCheckpoint>,
        tx: &Sender<Msg>,
    ) -> std::io::Result<bool> {
        if self.file.is_none() && !self.open(capture, checkpoints, tx)? {
            return Ok(false);
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(false);
        };
        let n = file.read(&mut self.buf)?;
        if n == 0 {
            return Ok(false);
        }
        if let Some(times) = self.times.as_mut() {
            self.clocks.extend(times.read_new()?);
        }
        let end = self.offset + n as u64;
        let mut at = self.offset;
        while at < end {
            // The chunk `at` is in: the last clock at or before it.
            while self.clocks.len() > 1 && self.clocks[1].0 <= at {
                self.clocks.pop_front();
            }
            let arrived = self.clocks.front().filter(|c| c.0 <= at).map(|c| c.1);
            let next = self.clocks.get(1).map_or(end, |c| c.0.min(end));
            let piece_end = if next > at { next } else { end };
            if let Some(arrived) = arrived.filter(|a| Some(*a) != self.clock) {
                self.clock = Some(arrived);
                let _ = tx.send(Msg::FileClock(self.origin.clone(), arrived));
            }
            let from = (at - self.offset) as usize;
            let to = (piece_end - self.offset) as usize;
            let _ = tx.send(Msg::FileData(
                self.origin.clone(),
                self.buf[from..to].to_vec(),
            ));
            at = piece_end;
        }
        self.offset = end;
        Ok(true)
    }

    fn close(&self, tx: &Sender<Msg>) {
        if self.file.is_some() {
            let _ = tx.send(Msg::FileClosed(self.origin.clone()));
        }
    }
}
