//! The sink thread: receives batches and writes them, so that a burst costs
//! one transaction: a store that takes more while its transaction is open
//! (PostgreSQL, `Sink::takes_more`) pulls the batches that queue up behind
//! the first as it goes; others get whatever has queued up, coalesced.

use crate::queue::{BatchReceiver, BatchSender};
use crate::sink::BatchFeed;
use crate::sink::{Batch, Fed, RunContext, Sink};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the worker did, reported when it ends.
#[derive(Debug, Default, Clone, Copy)]
pub struct SinkStats {
    pub records_written: u64,
    pub write_errors: u64,
}

impl SinkStats {
    /// Counts a batch written alone: its records, or one failed write.
    fn count(&mut self, batch: &Batch, written: bool) {
        if written {
            self.records_written += batch.logs.len() as u64;
        } else {
            self.write_errors += 1;
        }
    }
}

pub struct SinkWorker {
    handle: JoinHandle<SinkStats>,
}

impl SinkWorker {
    /// Starts the worker; batches sent on the returned channel are written in order.
    /// `pending` is kept up to date with the records waiting in a spool. When
    /// the channel closes, the worker spends at most `shutdown_timeout`
    /// shipping what waits in the spool.
    pub fn spawn(
        mut sink: Box<dyn Sink>,
        ctx: RunContext,
        pending: std::sync::Arc<std::sync::atomic::AtomicU64>,
        closing: std::sync::Arc<std::sync::atomic::AtomicBool>,
        shutdown_timeout: Duration,
    ) -> (BatchSender, SinkWorker) {
        let (tx, rx) = crate::queue::batch_queue(crate::limits::QUEUE_BYTES);
        let handle = std::thread::Builder::new()
            .name("pmon-sink".into())
            .spawn(move || {
                let waits = FullDiskWait {
                    closing,
                    shutdown_timeout,
                };
                let stats = run(&mut *sink, &ctx, rx, &pending, &waits);
                let left = sink.finish(Instant::now() + shutdown_timeout);
                pending.store(left, std::sync::atomic::Ordering::Relaxed);
                stats
            })
            .expect("spawning the sink thread");
        (tx, SinkWorker { handle })
    }

    /// Waits until every batch sent before the channel closed is written.
    pub fn join(self) -> SinkStats {
        self.handle.join().unwrap_or_default()
    }
}

/// How many records a coalesced write may hold. Larger writes are faster
/// (one COPY, one commit), but a tailed batch is also encoded whole for the
/// spool, so batches with read positions stay smaller to bound memory.
fn coalesce_limit(batch: &Batch) -> usize {
    if batch.checkpoints.is_empty() {
        20_000
    } else {
        4_000
    }
}

/// A pause before every write, from `PMON_TEST_SINK_DELAY` (`250ms`, `1s`):
/// a test-only hook that makes the store slow on purpose, so the tests can
/// widen the windows in which a slow store meets the end of a run. Never set
/// it in production; it is not part of the documented configuration.
fn test_delay() -> Option<Duration> {
    let text = std::env::var("PMON_TEST_SINK_DELAY").ok()?;
    pmon_core::config::parse_duration(&text).ok()
}

/// How long a batch waits for a full disk: while the run goes on, until
/// space returns; once it is closing, `shutdown_timeout` in all.
struct FullDiskWait {
    closing: std::sync::Arc<std::sync::atomic::AtomicBool>,
    shutdown_timeout: Duration,
}

/// Warnings about one trouble are said at most this often: the terminal is
/// the program's.
const WARN_EVERY: Duration = Duration::from_secs(60);

fn warn(last: &mut Option<Instant>, text: &str) {
    if last.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
        eprintln!("pmon-agent: warning: {text}");
        *last = Some(Instant::now());
    }
}

/// Writes a batch; a full disk is waited out (the batch stays in memory,
/// the pipeline behind it waits, the program does not), other errors drop
/// the batch. True if it was written.
fn write_one(
    sink: &mut dyn Sink,
    ctx: &RunContext,
    batch: &Batch,
    waits: &FullDiskWait,
    warned: &mut Option<Instant>,
) -> bool {
    let mut backoff = Duration::from_millis(500);
    let mut closing_since: Option<Instant> = None;
    loop {
        match sink.write(ctx, batch) {
            Ok(()) => return true,
            Err(e) if e.is_disk_full() => {
                if waits.closing.load(std::sync::atomic::Ordering::SeqCst) {
                    let since = *closing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= waits.shutdown_timeout {
                        eprintln!("pmon-agent: warning: {e}; {} of this run could not be stored before it ended (they are in the plain log file if it could grow); free space in the data dir", pmon_core::text::plural(batch.logs.len() as u64, "record", "records"));
                        return false;
                    }
                }
                warn(warned, &format!("{e}; the records wait and are written when space returns (the program is not affected); free space in the data dir"));
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                warn(
                    warned,
                    &format!(
                        "{e}; records could not be stored (they are still in the plain log file)"
                    ),
                );
                return false;
            }
        }
    }
}

fn run(
    sink: &mut dyn Sink,
    ctx: &RunContext,
    rx: BatchReceiver,
    pending: &std::sync::atomic::AtomicU64,
    waits: &FullDiskWait,
) -> SinkStats {
    let mut stats = SinkStats::default();
    let delay = test_delay();
    let mut warned = None;
    let mut carried: Option<Batch> = None;
    loop {
        let received = match carried.take() {
            Some(batch) => Ok(batch),
            None => rx.recv_timeout(Duration::from_millis(500)),
        };
        let mut batch = match received {
            Ok(batch) => batch,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                sink.idle();
                pending.store(sink.pending(), std::sync::atomic::Ordering::Relaxed);
                continue;
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        };
        if let Some(delay) = delay {
            std::thread::sleep(delay);
        }
        if sink.takes_more(&batch) {
            let mut feed = QueueFeed {
                rx: &rx,
                carried: None,
            };
            match sink.write_fed(ctx, batch, &mut feed) {
                Fed::Written(records) => stats.records_written += records,
                Fed::Unwritten(unwritten) => {
                    let written = write_one(sink, ctx, &unwritten, waits, &mut warned);
                    stats.count(&unwritten, written);
                }
            }
            carried = feed.carried;
        } else {
            let limit = coalesce_limit(&batch);
            rx.coalesce(&mut batch, limit, sink.coalesce_bytes());
            let written = write_one(sink, ctx, &batch, waits, &mut warned);
            stats.count(&batch, written);
        }
        pending.store(sink.pending(), std::sync::atomic::Ordering::Relaxed);
    }
    stats
}

/// How long an open transaction waits for the pipeline's next batch: under
/// load one comes within a millisecond; a quiet program costs its records
/// this much latency at most.
const LINGER: Duration = Duration::from_millis(2);

/// The queue, as an open transaction sees it.
struct QueueFeed<'r> {
    rx: &'r BatchReceiver,
    /// A batch the transaction could not take: the worker writes it next.
    carried: Option<Batch>,
}

impl BatchFeed for QueueFeed<'_> {
    fn next(&mut self) -> Option<Batch> {
        if self.carried.is_some() {
            return None;
        }
        self.rx.recv_timeout(LINGER).ok()
    }

    fn put_back(&mut self, batch: Batch) {
        self.carried = Some(batch);
    }

    fn sent(&mut self, _batch: Batch) {}
}
