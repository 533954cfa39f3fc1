//! What the dashboard shows, read from the store once a refresh: the run
//! (the latest of the experiment, so a restarted daemon's next run takes
//! over as it starts), its progress, its memory and CPU over the run (read
//! incrementally: only the samples taken since the last refresh), the
//! latest errors and the log tail.

use crate::query::db::{QueryDb, Store};
use crate::query::filter::{IdBound, LogFilter, Order};
use crate::query::metrics_read::MetricFilter;
use crate::query::rows::LogRow;
use crate::query::rows::ProgressRow;
use crate::query::select::Experiment;
use chrono::{DateTime, Utc};
use pmon_core::record::{parse_ts, Level};
use pmon_core::run::Run;
use pmon_store::sqlite::levels_from;

/// Errors and log lines kept for the panels: more than a screen shows.
const ERRORS_SHOWN: usize = 50;
const LOG_TAIL: usize = 200;

/// One refresh's worth of what the dashboard draws.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub experiment: String,
    /// `None` while the experiment has no run yet.
    pub run: Option<Run>,
    /// How many runs the experiment has.
    pub runs: i64,
    /// Why there is nothing to show yet (no store, no such experiment).
    pub waiting: Option<String>,
    pub progress: Vec<ProgressRow>,
    /// (seconds since the run started, bytes) and (seconds, percent).
    pub memory: Vec<(f64, f64)>,
    pub cpu: Vec<(f64, f64)>,
    /// The memory limit of the program's cgroup, when it has one.
    pub limit: Option<f64>,
    /// Newest first.
    pub errors: Vec<LogRow>,
    /// Oldest first.
    pub logs: Vec<LogRow>,
    /// When this snapshot was read.
    pub at: DateTime<Utc>,
    /// When the live run stalled, while it is stalled.
    pub stalled_since: Option<String>,
}

impl Snapshot {
    /// Seconds the run has lasted (so far, while it is live).
    pub fn elapsed(&self) -> Option<f64> {
        let run = self.run.as_ref()?;
        let start = parse_ts(&run.started_at)?;
        let end = match run.ended_at.as_deref().and_then(parse_ts) {
            Some(end) => end,
            None if run.state.is_live() => self.at,
            None => return None,
        };
        Some((end - start).num_milliseconds().max(0) as f64 / 1000.0)
    }
}

/// Keeps what earlier refreshes read, so each reads only what is new.
pub struct Watcher {
    experiment: String,
    run_id: Option<String>,
    last_seq: Option<i64>,
    memory: Vec<(f64, f64)>,
    cpu: Vec<(f64, f64)>,
    limit: Option<f64>,
}

impl Watcher {
    pub fn new(experiment: &str) -> Watcher {
        Watcher {
            experiment: experiment.to_string(),
            run_id: None,
            last_seq: None,
            memory: Vec::new(),
            cpu: Vec::new(),
            limit: None,
        }
    }

    /// Reads the current state; a store that cannot be read yet is a
    /// waiting message, not an error (the run may not have started).
    pub fn refresh(&mut self, store: Option<&mut Store>) -> anyhow::Result<Snapshot> {
        let mut snapshot = Snapshot {
            experiment: self.experiment.clone(),
            at: Utc::now(),
            ..Snapshot::default()
        };
        let Some(store) = store else {
            snapshot.waiting = Some(format!(
                "waiting for experiment '{}' to start: nothing has been recorded here yet",
                self.experiment
            ));
            return Ok(snapshot);
        };
        let mut db = store.db();
        let experiment = match Experiment::load(&mut db, &self.experiment) {
            Ok(experiment) => experiment,
            Err(_) => {
                snapshot.waiting = Some(format!(
                    "waiting for experiment '{}' to start (pmon-agent wrap -e {} -- CMD)",
                    self.experiment, self.experiment
                ));
                return Ok(snapshot);
            }
        };
        let run = experiment.latest().clone();
        if self.run_id.as_deref() != Some(&run.run_id) {
            // A new run (a daemon restarted): its own charts from the start.
            *self = Watcher::new(&self.experiment);
            self.run_id = Some(run.run_id.clone());
        }
        self.read_metrics(&mut db, &run)?;
        snapshot.progress =
            crate::query::status::progress_with_eta(db.progress(&run.run_id)?, run.state);
        snapshot.errors = newest(&mut db, &run, Some(Level::Error), ERRORS_SHOWN)?;
        let mut logs = newest(&mut db, &run, None, LOG_TAIL)?;
        logs.reverse();
        snapshot.logs = logs;
        snapshot.memory = self.memory.clone();
        snapshot.cpu = self.cpu.clone();
        snapshot.limit = self.limit;
        snapshot.runs = experiment.latest().ordinal;
        if run.state.is_live() {
            snapshot.stalled_since = db.stalled_since(&run.experiment_id, &run.run_id)?;
        }
        snapshot.run = Some(run);
        Ok(snapshot)
    }

    fn read_metrics(&mut self, db: &mut QueryDb<'_>, run: &Run) -> anyhow::Result<()> {
        let start = parse_ts(&run.started_at).unwrap_or_default();
        let filter = MetricFilter {
            run_id: run.run_id.clone(),
            after_seq: self.last_seq,
            ..MetricFilter::default()
        };
        db.each_metric(&filter, |row| {
            self.last_seq = Some(row.seq);
            let at = parse_ts(&row.timestamp).unwrap_or(start);
            let t = (at - start).num_milliseconds().max(0) as f64 / 1000.0;
            match (row.metric_type.as_str(), row.name.as_str()) {
                ("memory", "rss_bytes") => self.memory.push((t, row.value)),
                ("memory", "limit_bytes") => self.limit = Some(row.value),
                ("cpu", "cpu_percent") => self.cpu.push((t, row.value)),
                _ => {}
            }
            Ok(true)
        })
    }
}

/// The newest `n` records of the run (at `level` and above), newest first.
fn newest(
    db: &mut QueryDb<'_>,
    run: &Run,
    level: Option<Level>,
    n: usize,
) -> anyhow::Result<Vec<LogRow>> {
    let filter = LogFilter {
        experiment: run.experiment_id.clone(),
        run_id: Some(run.run_id.clone()),
        levels: level.map(levels_from),
        ..LogFilter::default()
    };
    let mut rows = Vec::new();
    db.each_log(
        &filter,
        IdBound::AtMost(i64::MAX),
        Order::NewestFirst,
        |row| {
            rows.push(row);
            Ok(rows.len() < n)
        },
    )?;
    Ok(rows)
}
