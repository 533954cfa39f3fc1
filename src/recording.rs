//! What `wrap` and `ingest` share: registering the run, opening its plain log
//! file, starting the pipeline into the store, and recording how it ended.
//!
//! If the store cannot be opened the program still runs: its output still
//! reaches the terminal (and the plain log file if the data dir is writable),
//! and the user is told once on stderr why nothing is stored.

use crate::app::App;
use crate::pipeline::{Msg, Pipeline, PipelineSettings};
use anyhow::Context;
use pmon_core::record::Event;
use pmon_core::run::{NewRun, Run, RunState, StartMode};
use pmon_store::registry;
use pmon_store::{Batch, BatcherSettings, RunContext, Sink, SinkError, SinkStats, SqliteStore};
use std::fs::File;
use std::path::PathBuf;

pub struct Recording {
    pub run: Option<Run>,
    pub pipeline: Pipeline,
    registry: Option<SqliteStore>,
    pub plain_log_path: Option<PathBuf>,
}

/// Accepts batches and drops them: used when the store is unavailable.
struct DiscardSink;

impl Sink for DiscardSink {
    fn write(&mut self, _: &RunContext, _: &Batch) -> Result<(), SinkError> {
        Ok(())
    }
}

impl Recording {
    /// Registers the run and starts the pipeline. Errors that the user must fix
    /// before anything runs (a live run already exists) are returned; store
    /// trouble is reported and the run goes ahead unrecorded.
    pub fn start(
        app: &App,
        experiment: &str,
        command: &[String],
        tags: &[(String, String)],
        mode: StartMode,
    ) -> anyhow::Result<Recording> {
        Self::start_for(app, experiment, command, tags, mode, std::process::id())
    }

    /// As [`Recording::start`], for a run whose agent (the process whose
    /// death makes it `lost`) is `agent_pid`.
    pub fn start_for(
        app: &App,
        experiment: &str,
        command: &[String],
        tags: &[(String, String)],
        mode: StartMode,
        agent_pid: u32,
    ) -> anyhow::Result<Recording> {
        let settings = pipeline_settings(app)?;
        match Self::open(app, experiment, command, tags, mode, agent_pid) {
            Ok((registry, run, sink, continued)) => {
                let ctx = RunContext {
                    experiment_id: run.experiment_id.clone(),
                    run_id: run.run_id.clone(),
                };
                let first_seq = registry::first_seqs(registry.conn(), &run, continued)?;
                let pipeline = Pipeline::start(settings, sink, ctx, first_seq);
                let _ = pipeline.sender().send(Msg::Run(run.clone()));
                let plain_log_path = Some(app.data_dir.run_log_path(experiment, &run.run_id));
                Ok(Recording {
                    run: Some(run),
                    pipeline,
                    registry: Some(registry),
                    plain_log_path,
                })
            }
            Err(err) => {
                let refused = err
                    .downcast_ref::<registry::RunError>()
                    .is_some_and(|e| matches!(e, registry::RunError::AlreadyLive { .. }));
                if refused
                    || err
                        .downcast_ref::<pmon_store::postgres::PgError>()
                        .is_some()
                {
                    return Err(err);
                }
                eprintln!("pmon-agent: warning: {err:#}; the command runs anyway, but its records are not stored");
                let ctx = RunContext {
                    experiment_id: experiment.to_string(),
                    run_id: String::new(),
                };
                Ok(Recording {
                    run: None,
                    pipeline: Pipeline::start(
                        settings,
                        Box::new(DiscardSink),
                        ctx,
                        pmon_core::run::SeqStart {
                            logs: 0,
                            metrics: 0,
                        },
                    ),
                    registry: None,
                    plain_log_path: None,
                })
            }
        }
    }

    fn open(
        app: &App,
        experiment: &str,
        command: &[String],
        tags: &[(String, String)],
        mode: StartMode,
        agent_pid: u32,
    ) -> anyhow::Result<(SqliteStore, Run, Box<dyn Sink>, bool)> {
        let sink = app.open_sink()?;
        let mut registry = app.open_store()?;
        let new = NewRun {
            experiment_id: experiment,
            command,
            tags,
            agent_pid,
        };
        // As stored: to the microsecond.
        let session_start = pmon_core::record::format_ts(&chrono::Utc::now());
        let run = registry::begin(registry.conn_mut(), &new, mode)?;
        // A new run starts now; a continued one started in an earlier session.
        let continued = run.started_at < session_start;
        Ok((registry, run, sink, continued))
    }

    /// Records more of a run that an earlier process began (a shipper that
    /// restarted): its records continue under new keys, never reusing one.
    pub fn attach(app: &App, run_id: &str) -> anyhow::Result<Recording> {
        let sink = app.open_sink()?;
        let registry = app.open_store()?;
        let run = registry::by_id(registry.conn(), run_id)?
            .with_context(|| format!("no run {run_id} in the store"))?;
        let ctx = RunContext {
            experiment_id: run.experiment_id.clone(),
            run_id: run.run_id.clone(),
        };
        let first_seq = registry::first_seqs(registry.conn(), &run, true)?;
        let pipeline = Pipeline::start(pipeline_settings(app)?, sink, ctx, first_seq);
        let plain_log_path = Some(app.data_dir.run_log_path(&run.experiment_id, &run.run_id));
        Ok(Recording {
            run: Some(run),
            pipeline,
            registry: Some(registry),
            plain_log_path,
        })
    }

    /// The run's plain log file, opened for appending (mode 0600).
    pub fn open_plain_log(&self) -> Option<File> {
        crate::holder::open_plain_log(self.plain_log_path.as_ref()?)
    }

    /// The local store holding the run registry (and tail checkpoints).
    pub fn registry(&self) -> Option<&SqliteStore> {
        self.registry.as_ref()
    }

    pub fn event(&self, event: Event) {
        let _ = self.pipeline.sender().send(Msg::Event(event));
    }

    pub fn set_child_pid(&self, pid: u32) {
        if let (Some(reg), Some(run)) = (&self.registry, &self.run) {
            let _ = registry::set_child_pid(reg.conn(), &run.run_id, pid);
        }
    }

    /// Flushes everything and records the end of the run.
    pub fn finish(
        self,
        state: RunState,
        exit_code: Option<i32>,
        signal: Option<i32>,
    ) -> anyhow::Result<SinkStats> {
        if let (Some(reg), Some(run)) = (&self.registry, &self.run) {
            registry::end(reg.conn(), &run.run_id, state, exit_code, signal)
                .context("could not record the end of the run in the store")?;
            if let Some(ended) = registry::runs_of(reg.conn(), &run.experiment_id)?
                .into_iter()
                .find(|r| r.run_id == run.run_id)
            {
                let _ = self.pipeline.sender().send(Msg::Run(ended));
            }
        }
        Ok(self.pipeline.finish())
    }
}

fn pipeline_settings(app: &App) -> anyhow::Result<PipelineSettings> {
    let c = &app.config;
    Ok(PipelineSettings {
        chain: app.parser_chain()?,
        batcher: BatcherSettings {
            batch_size: c.logging.database.batch_size,
            flush_interval: c.logging.database.flush_interval,
            progress_interval: c.monitoring.progress_update_interval,
            min_level: c.logging.level,
        },
        timing: Default::default(),
        max_line_bytes: c.parsers.max_line_bytes,
        shutdown_timeout: c.logging.database.shutdown_timeout,
    })
}
