//! The metrics sampler of one run: a small thread that reads the program's
//! process tree and the host every `monitoring.metrics_interval`, plus once
//! when the program starts and once when it has exited (before it is
//! reaped, so the CPU of its last moments still counts), and hands each
//! sample to the pipeline, which adds the `throughput/*` series and stores
//! it like any record: embedded store, PostgreSQL, spool and replay.

use super::{host_sample, TreeSample, TreeSampler};
use chrono::Utc;
use pmon_core::record::{Metric, MetricType};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

pub struct MetricsSampler {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    data_dir: PathBuf,
    deliver: Deliver,
}

/// Where each sample's series go (the pipeline's inbox): the sampler knows
/// nothing of the pipeline above it.
pub type Deliver = Box<dyn Fn(Vec<Metric>) + Send + Sync>;

#[derive(Default)]
struct State {
    tree: Option<TreeSampler>,
    root: u32,
    /// The memory limit of the program's cgroup as last sent.
    limit: Option<u64>,
    done: bool,
}

impl State {
    /// Samples the tree and sends the series; `alive`: the program still runs.
    fn sample(&mut self, shared: &Shared, alive: bool) {
        let Some(tree) = self.tree.as_mut() else {
            return;
        };
        let sample = tree.sample();
        // The limit of the program's cgroup (the dashboard draws it above the
        // memory chart), sent when first seen and when it changes: a program
        // may move itself into a cgroup after it starts.
        let limit = alive
            .then(|| pmon_core::procinfo::oom::memory_limit(self.root))
            .flatten();
        let changed = limit.is_some() && limit != self.limit;
        if changed {
            self.limit = limit;
        }
        shared.send(sample, alive, limit.filter(|_| changed));
    }
}

impl MetricsSampler {
    /// Starts sampling every `interval`; `None` (`metrics_interval: 0`)
    /// samples nothing at all.
    pub fn start(
        interval: Option<Duration>,
        data_dir: PathBuf,
        deliver: Deliver,
    ) -> MetricsSampler {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                done: interval.is_none(),
                ..State::default()
            }),
            wake: Condvar::new(),
            data_dir,
            deliver,
        });
        if let Some(interval) = interval {
            let sampler = shared.clone();
            let _ = std::thread::Builder::new()
                .name("pmon-metrics".into())
                .spawn(move || sample_every(&sampler, interval));
        }
        MetricsSampler { shared }
    }

    /// The program has started as `pid`: its first sample, now.
    pub fn watch(&self, pid: u32) {
        let Ok(mut state) = self.shared.state.lock() else {
            return;
        };
        if state.done {
            return;
        }
        state.tree = Some(TreeSampler::new(pid));
        state.root = pid;
        state.sample(&self.shared, true);
    }

    /// The program has exited and is not reaped yet: the last sample, and
    /// the end of sampling.
    pub fn exited(&self) {
        let Ok(mut state) = self.shared.state.lock() else {
            return;
        };
        if !state.done {
            state.sample(&self.shared, false);
        }
        state.done = true;
        self.shared.wake.notify_all();
    }
}

impl Drop for MetricsSampler {
    fn drop(&mut self) {
        if let Ok(mut state) = self.shared.state.lock() {
            state.done = true;
        }
        self.shared.wake.notify_all();
    }
}

fn sample_every(shared: &Shared, interval: Duration) {
    let Ok(mut state) = shared.state.lock() else {
        return;
    };
    loop {
        let (next, _) = match shared.wake.wait_timeout(state, interval) {
            Ok(woken) => woken,
            Err(_) => return,
        };
        state = next;
        if state.done {
            return;
        }
        state.sample(shared, true);
    }
}

impl Shared {
    /// Sends one sample's series. `alive`: the program runs; at its exit only
    /// a zombie is left, whose memory and thread counts would read as zero,
    /// so those series end with the last sample of the running program.
    fn send(&self, tree: TreeSample, alive: bool, limit: Option<u64>) {
        let mut metrics = series(&tree, alive, &host_sample(&self.data_dir));
        if let (Some(limit), Some(first)) = (limit, metrics.first()) {
            metrics.push(Metric {
                name: "limit_bytes".into(),
                value: limit as f64,
                metric_type: MetricType::Memory,
                unit: Some("bytes".into()),
                ..first.clone()
            });
        }
        (self.deliver)(metrics);
    }
}

/// The spec's series of one sample, values in base units.
fn series(tree: &TreeSample, alive: bool, host: &super::HostSample) -> Vec<Metric> {
    let timestamp = Utc::now();
    let metric = |metric_type, name: &str, value: f64, unit: &str| Metric {
        timestamp,
        metric_type,
        name: name.to_string(),
        value,
        unit: Some(unit.to_string()),
        step: None,
    };
    let mut out = Vec::with_capacity(11);
    let program_alive = alive || tree.processes > 1 || tree.rss_bytes > 0;
    if program_alive {
        out.push(metric(
            MetricType::Memory,
            "rss_bytes",
            tree.rss_bytes as f64,
            "bytes",
        ));
    }
    if let Some(cpu) = tree.cpu_percent {
        out.push(metric(MetricType::Cpu, "cpu_percent", cpu, "percent"));
    }
    if program_alive {
        out.push(metric(
            MetricType::Cpu,
            "threads",
            tree.threads as f64,
            "threads",
        ));
        out.push(metric(
            MetricType::Cpu,
            "processes",
            tree.processes.into(),
            "processes",
        ));
    }
    out.push(metric(
        MetricType::Io,
        "read_bytes",
        tree.read_bytes as f64,
        "bytes",
    ));
    out.push(metric(
        MetricType::Io,
        "write_bytes",
        tree.write_bytes as f64,
        "bytes",
    ));
    if let Some(v) = host.memory_available_bytes {
        out.push(metric(
            MetricType::Host,
            "memory_available_bytes",
            v as f64,
            "bytes",
        ));
    }
    if let Some(v) = host.load1 {
        out.push(metric(MetricType::Host, "load1", v, "load"));
    }
    if let Some(v) = host.disk_free_bytes {
        out.push(metric(
            MetricType::Host,
            "disk_free_bytes",
            v as f64,
            "bytes",
        ));
    }
    out
}
