//! What the pipeline itself knows about a run's pace: lines and errors per
//! second, and how fast each progress task advances.
//!
//! [`ProgressPace`] gives a rate to progress updates that come without one
//! (`Epoch 3/10`, `##pmon[progress …]` without `rate=`), from how far the task
//! moved since it last started over, so every task with a total gets an ETA.
//! [`Throughput`] turns the counters into the `throughput/*` series at each
//! metrics sample.

use chrono::{DateTime, Utc};
use pmon_core::record::{Metric, MetricType, ProgressUpdate};
use std::collections::HashMap;
use std::time::Instant;

/// Tasks tracked at most: a bar whose description changes on every update
/// (`set_description(f"loss {loss:.4f}")`) is a new task each time, and
/// must not grow the agent's memory without bound. The task updated least
/// recently makes room.
const MAX_TASKS: usize = 512;

/// Makes room for one more task in `tasks` by forgetting the one `age` says
/// was updated least recently.
fn make_room<V>(tasks: &mut HashMap<String, V>, key: &str, age: impl Fn(&V) -> Instant) {
    if tasks.len() < MAX_TASKS || tasks.contains_key(key) {
        return;
    }
    if let Some(oldest) = tasks
        .iter()
        .min_by_key(|(_, v)| age(v))
        .map(|(k, _)| k.clone())
    {
        tasks.remove(&oldest);
    }
}

/// Where a task's current stretch began: its value then, and when.
#[derive(Debug, Clone, Copy)]
struct Stretch {
    from: f64,
    since: Instant,
    last: f64,
    seen: Instant,
}

/// Fills in the rate of progress updates that have none.
#[derive(Debug, Default)]
pub struct ProgressPace {
    tasks: HashMap<String, Stretch>,
}

impl ProgressPace {
    /// Gives `update` a rate if it has none: the task's average pace since it
    /// last went backwards (a new epoch restarts an inner bar).
    pub fn pace(&mut self, update: &mut ProgressUpdate, now: Instant) {
        make_room(&mut self.tasks, &update.task, |s| s.seen);
        let fresh = Stretch {
            from: update.current,
            since: now,
            last: update.current,
            seen: now,
        };
        let stretch = self.tasks.entry(update.task.clone()).or_insert(fresh);
        if update.current < stretch.last {
            *stretch = fresh;
        }
        stretch.last = update.current;
        stretch.seen = now;
        if update.rate.is_none() {
            let seconds = now.duration_since(stretch.since).as_secs_f64();
            let moved = update.current - stretch.from;
            if seconds > 0.0 && moved > 0.0 {
                update.rate = Some(moved / seconds);
            }
        }
    }
}

/// The `throughput/*` series, computed at each metrics sample.
#[derive(Debug)]
pub struct Throughput {
    last_sample: Instant,
    last_lines: u64,
    /// Each task's value at the previous sample, and whether it moved since.
    tasks: HashMap<String, TaskPace>,
}

#[derive(Debug, Clone)]
struct TaskPace {
    at_last_sample: Option<f64>,
    latest: ProgressUpdate,
    changed: bool,
    seen: Instant,
}

impl Throughput {
    pub fn new(start: Instant) -> Throughput {
        Throughput {
            last_sample: start,
            last_lines: 0,
            tasks: HashMap::new(),
        }
    }

    pub fn progress(&mut self, update: &ProgressUpdate, now: Instant) {
        make_room(&mut self.tasks, &update.task, |t| t.seen);
        let task = self
            .tasks
            .entry(update.task.clone())
            .or_insert_with(|| TaskPace {
                at_last_sample: None,
                latest: update.clone(),
                changed: true,
                seen: now,
            });
        task.latest = update.clone();
        task.changed = true;
        task.seen = now;
    }

    /// The series at `now`: lines/s since the last sample, errors so far, and
    /// items/s of each task that moved since the last sample.
    pub fn sample(
        &mut self,
        now: Instant,
        timestamp: DateTime<Utc>,
        lines: u64,
        errors: u64,
    ) -> Vec<Metric> {
        let seconds = now.duration_since(self.last_sample).as_secs_f64();
        let metric = |name: String, value: f64, unit: &str| Metric {
            timestamp,
            metric_type: MetricType::Throughput,
            name,
            value,
            unit: Some(unit.to_string()),
            step: None,
        };
        let mut out = Vec::new();
        if seconds > 0.0 {
            let lines_per_s = lines.saturating_sub(self.last_lines) as f64 / seconds;
            out.push(metric("lines_per_s".into(), lines_per_s, "lines/s"));
        }
        out.push(metric("errors".into(), errors as f64, "errors"));
        let mut names: Vec<&String> = self.tasks.keys().collect();
        names.sort();
        for name in names {
            let task = &self.tasks[name];
            if !task.changed {
                continue;
            }
            let moved = task
                .at_last_sample
                .map(|before| task.latest.current - before)
                .filter(|moved| *moved >= 0.0 && seconds > 0.0);
            let rate = match moved {
                Some(moved) => Some(moved / seconds),
                None => task.latest.rate,
            };
            if let Some(rate) = rate {
                let unit = format!("{}/s", task.latest.unit.as_deref().unwrap_or("items"));
                out.push(metric(format!("{name}/items_per_s"), rate, &unit));
            }
        }
        for task in self.tasks.values_mut() {
            task.at_last_sample = Some(task.latest.current);
            task.changed = false;
        }
        self.last_sample = now;
        self.last_lines = lines;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn update(task: &str, current: f64, rate: Option<f64>) -> ProgressUpdate {
        ProgressUpdate {
            task: task.into(),
            current,
            total: Some(10.0),
            unit: None,
            rate,
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn a_task_without_a_rate_gets_its_average_pace_since_it_restarted() {
        let mut pace = ProgressPace::default();
        let t0 = Instant::now();
        let mut first = update("epoch", 1.0, None);
        pace.pace(&mut first, t0);
        assert_eq!(first.rate, None);
        let mut third = update("epoch", 3.0, None);
        pace.pace(&mut third, t0 + Duration::from_secs(4));
        assert_eq!(third.rate, Some(0.5));
        let mut restarted = update("epoch", 0.0, None);
        pace.pace(&mut restarted, t0 + Duration::from_secs(5));
        assert_eq!(restarted.rate, None);
        let mut own = update("epoch", 1.0, Some(7.0));
        pace.pace(&mut own, t0 + Duration::from_secs(6));
        assert_eq!(own.rate, Some(7.0));
    }

    #[test]
    fn a_description_that_changes_every_update_keeps_memory_bounded() {
        let mut pace = ProgressPace::default();
        let mut tp = Throughput::new(Instant::now());
        let t0 = Instant::now();
        for i in 0..5000u64 {
            let now = t0 + Duration::from_millis(i);
            let mut u = update(&format!("loss {i}"), i as f64, None);
            pace.pace(&mut u, now);
            tp.progress(&u, now);
        }
        assert_eq!(pace.tasks.len(), MAX_TASKS);
        assert_eq!(tp.tasks.len(), MAX_TASKS);
        assert!(tp.tasks.contains_key("loss 4999") && !tp.tasks.contains_key("loss 0"));
    }

    #[test]
    fn throughput_counts_lines_per_second_and_moving_tasks() {
        let t0 = Instant::now();
        let mut tp = Throughput::new(t0);
        tp.progress(&update("load", 2.0, Some(9.0)), t0);
        let first = tp.sample(t0 + Duration::from_secs(2), Utc::now(), 100, 1);
        let values: Vec<(String, f64)> = first.iter().map(|m| (m.name.clone(), m.value)).collect();
        assert_eq!(
            values,
            vec![
                ("lines_per_s".into(), 50.0),
                ("errors".into(), 1.0),
                ("load/items_per_s".into(), 9.0)
            ]
        );
        tp.progress(&update("load", 6.0, Some(9.0)), t0);
        let second = tp.sample(t0 + Duration::from_secs(4), Utc::now(), 100, 1);
        assert_eq!(second[0].value, 0.0);
        assert_eq!(second[2].name, "load/items_per_s");
        assert_eq!(second[2].value, 2.0);
        assert_eq!(second[2].unit.as_deref(), Some("items/s"));
        // A task that did not move since is not repeated.
        let third = tp.sample(t0 + Duration::from_secs(6), Utc::now(), 100, 1);
        assert_eq!(third.len(), 2);
    }
}
