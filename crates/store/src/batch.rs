//! Batching: when a batch is cut and sent.
//!
//! A batch is sent when it holds `batch_size` records, when its oldest record
//! is `flush_interval` old, or at once when an ERROR/CRITICAL record or a
//! traceback arrives (someone is waiting to read it). Progress is state, so
//! only the latest update per task is kept and sent every
//! `progress_update_interval`, and at once when a task completes. Metric
//! samples ride with the records (a sample's worth at a time). Records below the configured level are dropped
//! here, after parsing, so a DEBUG line still ends a traceback.

use crate::queue::BatchSender;
use crate::sink::{Batch, Checkpoint, SeqMetric, SeqRecord};
use pmon_core::record::{Event, Level, LogRecord, Metric, ProgressUpdate};
use pmon_core::run::SeqStart;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A batch is cut once its records hold this much text, whatever
/// `batch_size` says: a hundred lines at the 1 MiB line cap are 100 MiB.
const BATCH_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, Copy)]
pub struct BatcherSettings {
    pub batch_size: usize,
    pub flush_interval: Duration,
    pub progress_interval: Duration,
    pub min_level: Level,
}

pub struct Batcher {
    settings: BatcherSettings,
    current: Batch,
    oldest: Option<Instant>,
    next_seq: u64,
    next_metric_seq: u64,
    progress: BTreeMap<String, ProgressUpdate>,
    progress_due: Option<Instant>,
    /// The latest read position of each tailed file, sent with the next batch.
    checkpoints: BTreeMap<(u64, u64), Checkpoint>,
    checkpoints_due: Option<Instant>,
    tx: BatchSender,
    /// The text bytes of the records in `current`.
    current_bytes: usize,
    holding: bool,
    flush_wanted: bool,
    /// Records sent to the sink (after the level filter).
    pub records_sent: u64,
    /// `stdout`, `stderr`…: the origin of program output, made once.
    stream_origins: Vec<(pmon_core::record::StreamKind, Arc<str>)>,
}

impl Batcher {
    pub fn new(settings: BatcherSettings, first_seq: SeqStart, tx: BatchSender) -> Batcher {
        Batcher {
            settings,
            stream_origins: Vec::new(),
            current: Batch::default(),
            oldest: None,
            next_seq: first_seq.logs,
            next_metric_seq: first_seq.metrics,
            progress: BTreeMap::new(),
            progress_due: None,
            checkpoints: BTreeMap::new(),
            checkpoints_due: None,
            tx,
            current_bytes: 0,
            holding: false,
            flush_wanted: false,
            records_sent: 0,
        }
    }

    fn stream_origin(&mut self, stream: pmon_core::record::StreamKind) -> Arc<str> {
        if let Some((_, origin)) = self.stream_origins.iter().find(|(s, _)| *s == stream) {
            return origin.clone();
        }
        let origin: Arc<str> = Arc::from(stream.as_str());
        self.stream_origins.push((stream, origin.clone()));
        origin
    }

    /// Adds a record. A file record (`file_origin` given) is keyed by its byte
    /// offset in that file, so re-reading the file reproduces the same keys;
    /// program output is keyed by a counter per run.
    pub fn record(&mut self, record: LogRecord, file_origin: Option<&Arc<str>>, now: Instant) {
        if record.level < self.settings.min_level {
            return;
        }
        let urgent = record.is_urgent();
        self.current_bytes += record.text_bytes();
        let (origin, seq) = match (file_origin, record.offset) {
            (Some(origin), Some(offset)) => (origin.clone(), offset),
            _ => {
                self.next_seq += 1;
                (self.stream_origin(record.stream), self.next_seq - 1)
            }
        };
        self.current.logs.push(SeqRecord {
            origin,
            seq,
            record,
        });
        self.oldest.get_or_insert(now);
        if urgent
            || self.current.logs.len() >= self.settings.batch_size
            || self.current_bytes >= BATCH_BYTES
        {
            if self.holding {
                self.flush_wanted = true;
            } else {
                self.flush();
            }
        }
    }

    pub fn batch_size(&self) -> usize {
        self.settings.batch_size
    }

    /// Defers size and urgency flushes until `release`: a file's records and
    /// the checkpoint after them must land in the same batch, or a crash in
    /// between leaves a checkpoint that lags what is stored.
    pub fn hold(&mut self) {
        self.holding = true;
    }

    pub fn release(&mut self) {
        self.holding = false;
        if std::mem::take(&mut self.flush_wanted) {
            self.flush();
        }
    }

    pub fn progress(&mut self, update: ProgressUpdate, now: Instant) {
        let completed = update.total.is_some_and(|total| update.current >= total);
        self.progress_due
            .get_or_insert(now + self.settings.progress_interval);
        self.progress.insert(update.task.clone(), update);
        // A finished task is worth showing at once: it may be the last word.
        if completed {
            self.flush_progress();
            if self.holding {
                self.flush_wanted = true;
            } else {
                self.flush();
            }
        }
    }

    /// Adds metric samples; they go with the next batch of records (or
    /// after `flush_interval`, like a record).
    pub fn metrics(&mut self, samples: Vec<Metric>, now: Instant) {
        for metric in samples {
            self.current.metrics.push(SeqMetric {
                seq: self.next_metric_seq,
                metric,
            });
            self.next_metric_seq += 1;
        }
        if !self.current.metrics.is_empty() {
            self.oldest.get_or_insert(now);
        }
    }

    /// A file has been read (and its records handed over) up to `cp.offset`.
    pub fn checkpoint(&mut self, cp: Checkpoint, now: Instant) {
        self.checkpoints_due
            .get_or_insert(now + self.settings.flush_interval);
        self.checkpoints.insert((cp.dev, cp.ino), cp);
    }

    /// Events are rare and always wanted at once.
    pub fn event(&mut self, event: Event) {
        self.current.events.push(event);
        self.flush_progress();
        self.flush();
    }

    /// Run rows are rare and always wanted at once.
    pub fn run(&mut self, run: pmon_core::run::Run) {
        self.current.runs.push(run);
        self.flush();
    }

    pub fn deadline(&self) -> Option<Instant> {
        let logs = self.oldest.map(|t| t + self.settings.flush_interval);
        [logs, self.progress_due, self.checkpoints_due]
            .into_iter()
            .flatten()
            .min()
    }

    pub fn tick(&mut self, now: Instant) {
        if self.progress_due.is_some_and(|d| now >= d) {
            self.flush_progress();
            self.flush();
        }
        let logs_due = self
            .oldest
            .is_some_and(|t| now >= t + self.settings.flush_interval);
        if logs_due || self.checkpoints_due.is_some_and(|d| now >= d) {
            self.flush();
        }
    }

    /// Sends everything still held, progress included.
    pub fn close(&mut self) {
        self.flush_progress();
        self.flush();
    }

    fn flush_progress(&mut self) {
        self.current
            .progress
            .extend(std::mem::take(&mut self.progress).into_values());
        self.progress_due = None;
    }

    fn flush(&mut self) {
        self.current
            .checkpoints
            .extend(std::mem::take(&mut self.checkpoints).into_values());
        self.checkpoints_due = None;
        if self.current.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.current);
        self.current_bytes = 0;
        self.records_sent += batch.logs.len() as u64;
        self.oldest = None;
        // The worker only goes away when the agent is shutting down.
        let _ = self.tx.send(batch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pmon_core::record::StreamKind;

    fn settings() -> BatcherSettings {
        BatcherSettings {
            batch_size: 3,
            flush_interval: Duration::from_secs(5),
            progress_interval: Duration::from_secs(5),
            min_level: Level::Info,
        }
    }

    fn rec(level: Level) -> LogRecord {
        let mut r = LogRecord::plain("x".into(), StreamKind::Stdout, "stdout");
        r.level = level;
        r
    }

    #[test]
    fn batches_by_size_age_and_urgency_and_filters_by_level() {
        let (tx, rx) = crate::queue::batch_queue(usize::MAX);
        let mut b = Batcher::new(
            settings(),
            SeqStart {
                logs: 0,
                metrics: 0,
            },
            tx,
        );
        let t0 = Instant::now();
        b.record(rec(Level::Debug), None, t0);
        b.record(rec(Level::Info), None, t0);
        b.record(rec(Level::Info), None, t0);
        assert!(rx.try_recv().is_err());
        b.record(rec(Level::Warning), None, t0);
        let first = rx.try_recv().unwrap();
        assert_eq!(
            first.logs.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        b.record(rec(Level::Info), None, t0);
        b.tick(t0 + Duration::from_secs(4));
        assert!(rx.try_recv().is_err());
        b.tick(t0 + Duration::from_secs(5));
        assert_eq!(rx.try_recv().unwrap().logs.len(), 1);
        b.record(rec(Level::Error), None, t0);
        assert_eq!(rx.try_recv().unwrap().logs[0].seq, 4);
    }

    #[test]
    fn a_batch_is_cut_by_bytes_before_batch_size() {
        let (tx, rx) = crate::queue::batch_queue(usize::MAX);
        let big = BatcherSettings {
            batch_size: 100,
            ..settings()
        };
        let first = SeqStart {
            logs: 0,
            metrics: 0,
        };
        let mut b = Batcher::new(big, first, tx);
        let t0 = Instant::now();
        let line = |n: usize| LogRecord::plain("x".repeat(n), StreamKind::Stdout, "stdout");
        b.record(line(BATCH_BYTES / 2), None, t0);
        assert!(rx.try_recv().is_err());
        b.record(line(BATCH_BYTES / 2), None, t0);
        assert_eq!(rx.try_recv().unwrap().logs.len(), 2);
        b.record(line(10), None, t0);
        assert!(rx.try_recv().is_err(), "the count starts again");
    }
}
