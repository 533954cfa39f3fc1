//! What a daemon's program is doing right now — memory, CPU and the progress
//! of its top-level tasks — for `daemon status`, without a database.
//!
//! While a run goes on, the supervisor copies the pipeline's newest sample
//! into `daemons/NAME.live` whenever it changes. It is a file of its own, not
//! part of `NAME.json`, so that these frequent writes can never overwrite a
//! state change written at the same moment (`daemon pause`, the run's end).

use super::DaemonDir;
use crate::pipeline::{PipelineCounters, Resources};
use pmon_core::record::ProgressUpdate;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the supervisor looks for a newer sample to copy.
const REFRESH_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LiveStatus {
    /// The run the numbers belong to.
    pub run_id: Option<String>,
    pub rss_bytes: Option<u64>,
    pub cpu_percent: Option<f64>,
    /// Top-level progress tasks (`train`, not `train/batch`).
    pub progress: Vec<ProgressUpdate>,
    /// When the program stalled, while it is stalled.
    #[serde(default)]
    pub stalled_since: Option<String>,
}

impl LiveStatus {
    fn from_counters(run_id: Option<&str>, counters: &PipelineCounters) -> LiveStatus {
        let Resources {
            rss_bytes,
            cpu_percent,
        } = counters.resources.lock().map(|r| *r).unwrap_or_default();
        LiveStatus {
            run_id: run_id.map(str::to_string),
            rss_bytes,
            cpu_percent,
            progress: counters
                .top_progress
                .lock()
                .map(|p| p.clone())
                .unwrap_or_default(),
            stalled_since: counters.stalled_since.lock().ok().and_then(|s| s.clone()),
        }
    }
}

impl DaemonDir {
    fn live_path(&self, name: &str) -> std::path::PathBuf {
        self.state_path(name).with_extension("live")
    }

    /// The live numbers of the daemon's run `run_id`, if they are of that run.
    pub fn read_live(&self, name: &str, run_id: Option<&str>) -> Option<LiveStatus> {
        let text = std::fs::read_to_string(self.live_path(name)).ok()?;
        let live: LiveStatus = serde_json::from_str(&text).ok()?;
        (live.run_id.as_deref() == run_id).then_some(live)
    }

    fn write_live(&self, name: &str, live: &LiveStatus) -> std::io::Result<()> {
        let tmp = self.live_path(name).with_extension("live.tmp");
        std::fs::write(&tmp, serde_json::to_vec(live).unwrap_or_default())?;
        std::fs::rename(tmp, self.live_path(name))
    }
}

/// Copies one run's newest sample to the live file until dropped.
pub struct LiveRefresher {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl LiveRefresher {
    pub fn start(
        dir: DaemonDir,
        name: String,
        run_id: Option<String>,
        counters: Arc<PipelineCounters>,
    ) -> LiveRefresher {
        let stop = Arc::new(AtomicBool::new(false));
        let until = stop.clone();
        let handle = std::thread::Builder::new()
            .name("pmon-live".into())
            .spawn(move || {
                let mut written = None;
                while !until.load(Ordering::SeqCst) {
                    let live = LiveStatus::from_counters(run_id.as_deref(), &counters);
                    if written.as_ref() != Some(&live) && dir.write_live(&name, &live).is_ok() {
                        written = Some(live);
                    }
                    std::thread::park_timeout(REFRESH_EVERY);
                }
            })
            .ok();
        LiveRefresher { stop, handle }
    }
}

impl Drop for LiveRefresher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(handle) = self.handle.take() {
            handle.thread().unpark();
            let _ = handle.join();
        }
    }
}
