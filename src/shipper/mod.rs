//! The shipper: the process that carries every record of a wrapped run.
//!
//! The holder (`holder/`) runs the program and writes what it prints to the
//! run's capture files; the shipper, a child of the holder in a process
//! group of its own and the OOM killer's first pick, reads them and does the
//! rest. It registers the run (or, started again after a crash, attaches to
//! it) and tells the holder so ([`handshake`]); then it follows the capture
//! ([`capture`]) and the holder's events, feeding everything through the
//! pipeline — parsing, metrics, batches, the store, the spool — and watches
//! for stalls ([`stall`]), new error groups and SIGUSR1 ([`report`]); when
//! the holder says how the program ended, it records the end and notifies
//! ([`end`]).
//!
//! Its read position in each capture file is a checkpoint stored in the same
//! transaction as the records before it (the tail machinery), and records
//! are keyed by their offset in the file: a successor re-reading from the
//! checkpoint stores nothing twice and misses nothing.

mod capture;
mod end;
mod handshake;
mod report;
mod stall;

use crate::app::App;
use crate::daemon::live::LiveRefresher;
use crate::daemon::DaemonDir;
use crate::holder::capture::{CaptureDir, EventsReader, ProgramEnd};
use crate::holder::{end_state, ShipResult};
use crate::metrics::stall::{StallChange, StallWatch};
use crate::metrics::MetricsSampler;
use crate::notify;
use crate::pipeline::{sample_into, Msg, PipelineCounters};
use crate::recording::Recording;
use crate::source::tail::{load_checkpoints, StoredCheckpoint};
use anyhow::Context;
use capture::{CaptureStream, EndFromHolder};
use chrono::Utc;
use crossbeam_channel::Sender;
use pmon_core::config::NotifyConfig;
use pmon_core::options::{NotifyOn, NotifyOverride};
use pmon_core::procinfo::oom::MemoryWatch;
use pmon_core::record::StreamKind;
use pmon_core::run::{Run, RunState, StartMode};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use handshake::refuse;

/// How the shipper sleeps when the capture has nothing new.
const IDLE: Duration = Duration::from_millis(10);

/// What the holder tells a shipper it starts.
pub struct ShipOptions {
    pub experiment: String,
    /// How a new run is registered (the first shipper of a run).
    pub mode: StartMode,
    pub command: Vec<String>,
    pub tags: Vec<(String, String)>,
    /// The run to go on shipping (a shipper started again).
    pub run_id: Option<String>,
    /// How many shippers of this run came before.
    pub restarts: u32,
    /// The program runs on a pseudo-terminal: one stream, stdout.
    pub pty: bool,
    /// The daemon the run belongs to (its live status file).
    pub daemon: Option<String>,
    /// The run's `--notify` flags.
    pub notify: Option<NotifyOverride>,
}

/// Ships one run's capture until the program has ended and all of it is
/// shipped, or the holder is gone.
pub fn run(app: &App, opts: ShipOptions) -> anyhow::Result<i32> {
    let holder = nix::unistd::getppid();
    let recording = match &opts.run_id {
        Some(run_id) => Recording::attach(app, run_id)?,
        None => match handshake::begin(app, &opts, holder.as_raw() as u32) {
            Some(recording) => recording,
            None => return Ok(0),
        },
    };
    let Some(run) = recording.run.clone() else {
        return Ok(0);
    };
    let _span = tracing::info_span!(target: "pmon", "run", experiment = %run.experiment_id, run = %run.run_id).entered();
    tracing::info!(target: "holder", ordinal = run.ordinal, restarts = opts.restarts, "shipping the run's capture");
    let mut shipping = Shipping::start(app, &opts, recording, &run)?;
    let end = shipping.follow(holder)?;
    shipping.finish(end)
}

/// One run being shipped: what follows the capture, and what watches it.
struct Shipping<'a> {
    app: &'a App,
    recording: Recording,
    capture: CaptureDir,
    notify: NotifyConfig,
    facts: notify::RunFacts,
    new_groups: notify::NewGroupWatch,
    checkpoints: HashMap<(u64, u64), StoredCheckpoint>,
    tx: Sender<Msg>,
    counters: Arc<PipelineCounters>,
    /// The program's pid once its start is read (0 before).
    program: Arc<AtomicU32>,
    memory: MemoryWatch,
    sampler: MetricsSampler,
    streams: Vec<CaptureStream>,
    events: Option<EventsReader>,
    told: EndFromHolder,
    stall: Option<StallWatch>,
    _live: Option<LiveRefresher>,
}

impl<'a> Shipping<'a> {
    fn start(
        app: &'a App,
        opts: &ShipOptions,
        recording: Recording,
        run: &Run,
    ) -> anyhow::Result<Shipping<'a>> {
        let notify = app.config.notify.with_override(opts.notify.as_ref());
        let facts = notify::RunFacts {
            experiment_id: run.experiment_id.clone(),
            run_id: run.run_id.clone(),
            ordinal: Some(run.ordinal),
            daemon: opts.daemon.clone(),
            started_at: run.started_at.clone(),
        };
        let counters = recording.pipeline.counters();
        let new_groups = notify::NewGroupWatch::new(notify.clone(), facts.clone(), &counters);
        let checkpoints = recording
            .registry()
            .map(|store| load_checkpoints(store.conn(), &run.experiment_id))
            .transpose()
            .context("could not read the capture's read positions from the store")?
            .unwrap_or_default();
        let tx = recording.pipeline.sender();
        let program = Arc::new(AtomicU32::new(0));
        report::report_on_sigusr1(program.clone(), counters.clone(), tx.clone());
        let live = opts.daemon.as_ref().map(|name| {
            LiveRefresher::start(
                DaemonDir::new(&app.data_dir),
                name.clone(),
                Some(run.run_id.clone()),
                counters.clone(),
            )
        });
        let interval = Some(app.config.monitoring.metrics_interval).filter(|i| !i.is_zero());
        let sampler = MetricsSampler::start(
            interval,
            app.data_dir.root().to_path_buf(),
            sample_into(tx.clone()),
        );
        let kinds: &[StreamKind] = if opts.pty {
            &[StreamKind::Stdout]
        } else {
            &[StreamKind::Stdout, StreamKind::Stderr]
        };
        Ok(Shipping {
            app,
            capture: CaptureDir::new(app.data_dir.root(), &run.run_id),
            recording,
            notify,
            facts,
            new_groups,
            checkpoints,
            tx,
            counters,
            program,
            memory: MemoryWatch::start(),
            sampler,
            streams: kinds.iter().map(|k| CaptureStream::new(*k)).collect(),
            events: None,
            told: EndFromHolder::listen(),
            stall: StallWatch::new(app.config.monitoring.stall_after, Instant::now()),
            _live: live,
        })
    }

    /// Ships what comes until nothing more will: the program's end, once
    /// what it printed is all shipped (`Some`), or the holder gone (`None`).
    fn follow(&mut self, holder: nix::unistd::Pid) -> anyhow::Result<Option<ProgramEnd>> {
        loop {
            // Read before the streams: once it is known, what they hold is final.
            let end = self.told.end().or_else(|| self.capture.read_end());
            let holder_gone = self.told.holder_gone() || nix::unistd::getppid() != holder;
            let progressed = self.step(end.is_some())?;
            if !progressed && (end.is_some() || holder_gone) {
                return Ok(end);
            }
            if !progressed {
                std::thread::sleep(IDLE);
            }
        }
    }

    /// One pass over the holder's events and the streams; true if anything
    /// new was shipped.
    fn step(&mut self, ended: bool) -> anyhow::Result<bool> {
        let mut progressed = false;
        if self.events.is_none() {
            self.events = EventsReader::open(&self.capture.events()).ok();
        }
        let events = self
            .events
            .as_mut()
            .map(|e| e.read_new())
            .transpose()?
            .unwrap_or_default();
        for event in events {
            if event.event_type == "start" && !ended {
                if let Some(pid) = event.details["pid"].as_u64() {
                    self.program_started(pid as u32);
                }
            }
            self.recording.event(event);
            progressed = true;
        }
        let mut output = false;
        for stream in &mut self.streams {
            output |= stream.pump(&self.capture, &self.checkpoints, &self.tx)?;
        }
        self.watch_for_stalls(output, ended);
        self.new_groups.look(self.app, &self.counters);
        Ok(progressed || output)
    }

    fn program_started(&mut self, pid: u32) {
        self.program.store(pid, Ordering::SeqCst);
        self.memory.watch(pid);
        self.sampler.watch(pid);
        if let Some(stall) = self.stall.as_mut() {
            stall.watch(pid);
        }
        self.recording.set_child_pid(pid);
    }

    fn watch_for_stalls(&mut self, output: bool, ended: bool) {
        let Some(watch) = self.stall.as_mut() else {
            return;
        };
        let updates = self.counters.progress_updates.load(Ordering::Relaxed);
        match watch.check(output, updates, Instant::now()) {
            // A program that has ended is not stuck.
            Some(StallChange::Stalled { .. }) if ended => {}
            Some(change) => stall::note_stall(
                &self.recording,
                &self.counters,
                self.program.load(Ordering::SeqCst),
                change,
            ),
            None => {}
        }
    }

    /// Records how the run ended, tells the holder (`result.json`) and
    /// notifies; a holder gone before the program ended makes the run lost.
    fn finish(self, end: Option<ProgramEnd>) -> anyhow::Result<i32> {
        let Shipping {
            app,
            recording,
            capture,
            notify,
            facts,
            mut new_groups,
            tx,
            counters,
            memory,
            sampler,
            streams,
            ..
        } = self;
        for stream in &streams {
            stream.close(&tx);
        }
        let Some(end) = end else {
            // The holder died before the program ended: what it captured is
            // shipped; the run shows as lost (its agent is gone).
            recording.pipeline.finish();
            new_groups.finish(app, &counters, None);
            if notify.wants(NotifyOn::Lost) {
                notify::send_detached(app, &notify, notify::lost(&facts, Utc::now()));
            }
            return Ok(0);
        };
        sampler.exited();
        let result = end::record_the_end(&recording, &end, &memory);
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
        let ended = end::Ended {
            state,
            end: &end,
            result: &result,
        };
        end::notify(app, &notify, &facts, &mut new_groups, &counters, ended);
        Ok(0)
    }
}
