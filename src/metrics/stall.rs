//! The stall detector: a program that prints nothing, advances no progress
//! bar and uses (almost) no CPU for `monitoring.stall_after` is stuck — a
//! DataLoader or NCCL deadlock, a lock never released, a network call
//! without a timeout — though its log looks healthy. It is never signalled;
//! the agent records a `stall` event (once per stall, with every thread's
//! Python stack when py-spy is there) and a `resume` when it goes on.

use super::proc_tree::TreeSampler;
use std::time::{Duration, Instant};

/// Under this much CPU (percent of one core, over the quiet time) a quiet
/// program is stuck, not busy computing.
pub const IDLE_CPU_PERCENT: f64 = 2.0;
/// How often the program's CPU is read.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// What changed.
#[derive(Debug, Clone, PartialEq)]
pub enum StallChange {
    /// Quiet for `quiet` at `cpu_percent` on average.
    Stalled { quiet: Duration, cpu_percent: f64 },
    /// Output or progress came back after `stalled_for`.
    Resumed { stalled_for: Duration },
}

pub struct StallWatch {
    after: Duration,
    sampler: Option<TreeSampler>,
    last_sample: Option<Instant>,
    /// When output or progress was last seen.
    last_activity: Instant,
    /// CPU-seconds the program used since then.
    quiet_cpu: f64,
    progress_seen: u64,
    stalled_at: Option<Instant>,
}

impl StallWatch {
    /// `None` when the detector is off (`stall_after: 0`).
    pub fn new(after: Duration, now: Instant) -> Option<StallWatch> {
        (!after.is_zero()).then_some(StallWatch {
            after,
            sampler: None,
            last_sample: None,
            last_activity: now,
            quiet_cpu: 0.0,
            progress_seen: 0,
            stalled_at: None,
        })
    }

    /// The program to watch (its whole process tree's CPU counts).
    pub fn watch(&mut self, pid: u32) {
        let mut sampler = TreeSampler::new(pid);
        sampler.sample();
        self.sampler = Some(sampler);
        self.last_sample = Some(Instant::now());
    }

    /// Called often: `output` whether the program printed since the last
    /// call, `progress_updates` the count of progress updates so far.
    pub fn check(
        &mut self,
        output: bool,
        progress_updates: u64,
        now: Instant,
    ) -> Option<StallChange> {
        let moved = progress_updates != self.progress_seen;
        self.progress_seen = progress_updates;
        if output || moved {
            self.last_activity = now;
            self.quiet_cpu = 0.0;
            let stalled = self.stalled_at.take()?;
            return Some(StallChange::Resumed {
                stalled_for: now.saturating_duration_since(stalled),
            });
        }
        self.sample_cpu(now);
        let quiet = now.saturating_duration_since(self.last_activity);
        if self.stalled_at.is_some() || quiet < self.after || self.sampler.is_none() {
            return None;
        }
        let cpu_percent = self.quiet_cpu / quiet.as_secs_f64().max(0.001) * 100.0;
        if cpu_percent >= IDLE_CPU_PERCENT {
            return None;
        }
        self.stalled_at = Some(now);
        Some(StallChange::Stalled { quiet, cpu_percent })
    }

    fn sample_cpu(&mut self, now: Instant) {
        let (Some(sampler), Some(last)) = (self.sampler.as_mut(), self.last_sample) else {
            return;
        };
        if now.saturating_duration_since(last) < SAMPLE_EVERY {
            return;
        }
        let sample = sampler.sample();
        let secs = now.saturating_duration_since(last).as_secs_f64();
        self.quiet_cpu += sample.cpu_percent.unwrap_or(0.0) / 100.0 * secs;
        self.last_sample = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_idle_program_stalls_once_and_resumes_on_output() {
        let start = Instant::now();
        let mut watch = StallWatch::new(Duration::from_secs(2), start).unwrap();
        let mut sleeper = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        watch.watch(sleeper.id());
        assert_eq!(watch.check(false, 0, start + Duration::from_secs(1)), None);
        std::thread::sleep(Duration::from_millis(1100));
        let later = start + Duration::from_secs(3);
        let Some(StallChange::Stalled { quiet, cpu_percent }) = watch.check(false, 0, later) else {
            panic!("no stall");
        };
        assert!(quiet >= Duration::from_secs(2) && cpu_percent < IDLE_CPU_PERCENT);
        assert_eq!(
            watch.check(false, 0, later + Duration::from_secs(5)),
            None,
            "once per stall"
        );
        assert_eq!(
            watch.check(false, 1, later + Duration::from_secs(6)),
            Some(StallChange::Resumed {
                stalled_for: Duration::from_secs(6)
            }),
            "a progress update is activity"
        );
        assert_eq!(watch.check(true, 1, later + Duration::from_secs(7)), None);
        let _ = sleeper.kill();
        let _ = sleeper.wait();
    }

    #[test]
    fn off_when_zero() {
        assert!(StallWatch::new(Duration::ZERO, Instant::now()).is_none());
    }
}
