//! The pipeline's outlet: the batcher, and what the pipeline keeps beside it
//! about the run's pace — rates for progress without one, the throughput
//! series at each metrics sample, the newest resources and top-level tasks
//! for status reports, and a bounded number of `parse_error` events.

use super::{PipelineCounters, Resources};
use crate::metrics::{ProgressPace, Throughput};
use pmon_core::record::{Event, Metric, MetricType, ProgressUpdate};
use pmon_store::Batcher;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// The batcher and what the pipeline keeps beside it about the run's pace.
pub(super) struct Outlet {
    pub(super) batcher: Batcher,
    pace: ProgressPace,
    throughput: Throughput,
    parse_errors: u32,
}

/// Top-level tasks a status report lists at most.
const MAX_REPORTED_TASKS: usize = 16;

/// A program that gets the directive protocol wrong on every line is told
/// about it this many times, not once a line.
const MAX_PARSE_ERROR_EVENTS: u32 = 20;

impl Outlet {
    pub(super) fn new(batcher: Batcher) -> Outlet {
        Outlet {
            batcher,
            pace: ProgressPace::default(),
            throughput: Throughput::new(Instant::now()),
            parse_errors: 0,
        }
    }

    pub(super) fn progress(
        &mut self,
        mut update: ProgressUpdate,
        now: Instant,
        counters: &PipelineCounters,
    ) {
        self.pace.pace(&mut update, now);
        self.throughput.progress(&update, now);
        counters
            .progress_updates
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if !update.task.contains('/') {
            if let Ok(mut top) = counters.top_progress.lock() {
                match top.iter_mut().find(|t| t.task == update.task) {
                    Some(task) => task.clone_from(&update),
                    None => {
                        // A description that changes every update is a new
                        // task each time: the status report keeps the newest.
                        if top.len() >= MAX_REPORTED_TASKS {
                            top.remove(0);
                        }
                        top.push(update.clone())
                    }
                }
            }
        }
        self.batcher.progress(update, now);
    }

    /// A sample from the sampler, completed with the throughput series.
    pub(super) fn sample(
        &mut self,
        mut metrics: Vec<Metric>,
        now: Instant,
        counters: &PipelineCounters,
    ) {
        let timestamp = metrics
            .first()
            .map_or_else(chrono::Utc::now, |m| m.timestamp);
        metrics.extend(self.throughput.sample(
            now,
            timestamp,
            counters.lines.load(Ordering::Relaxed),
            counters.errors.load(Ordering::Relaxed),
        ));
        let value = |metric_type, name: &str| {
            metrics
                .iter()
                .find(|m| m.metric_type == metric_type && m.name == name)
                .map(|m| m.value)
        };
        let now_resources = Resources {
            rss_bytes: value(MetricType::Memory, "rss_bytes").map(|v| v as u64),
            cpu_percent: value(MetricType::Cpu, "cpu_percent"),
        };
        if let Ok(mut resources) = counters.resources.lock() {
            resources.rss_bytes = now_resources.rss_bytes.or(resources.rss_bytes);
            resources.cpu_percent = now_resources.cpu_percent.or(resources.cpu_percent);
        }
        self.batcher.metrics(metrics, now);
    }

    pub(super) fn parse_error(&mut self, line: String, reason: String, source: &str) {
        self.parse_errors += 1;
        if self.parse_errors > MAX_PARSE_ERROR_EVENTS {
            return;
        }
        let mut line = line;
        if line.len() > 500 {
            let mut cut = 500;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
        }
        let last = self.parse_errors == MAX_PARSE_ERROR_EVENTS;
        self.batcher.event(Event::now(
            "parse_error",
            serde_json::json!({"source": source, "line": line, "reason": reason,
                "further_errors_not_reported": last}),
        ));
    }
}
