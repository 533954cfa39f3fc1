//! The queue between the pipeline and the sink thread, bounded by bytes.
//!
//! A count of batches bounds nothing: a batch of 100 records is 20 KiB of
//! ordinary log lines or 100 MiB of lines at the 1 MiB cap. So the queue
//! holds at most `max_bytes` of records (by [`Batch::heap_bytes`]); a
//! sender waits while a batch would not fit. One batch larger than the
//! whole budget is let in alone, when the queue is empty, so nothing waits
//! forever. When the receiver is gone, senders no longer wait.

use crate::sink::Batch;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

pub fn batch_queue(max_bytes: usize) -> (BatchSender, BatchReceiver) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let budget = Arc::new(Budget {
        state: Mutex::new(BudgetState::default()),
        freed: Condvar::new(),
        max_bytes,
    });
    (
        BatchSender {
            tx,
            budget: budget.clone(),
        },
        BatchReceiver { rx, budget },
    )
}

struct Budget {
    state: Mutex<BudgetState>,
    freed: Condvar,
    max_bytes: usize,
}

#[derive(Default)]
struct BudgetState {
    queued: usize,
    closed: bool,
}

impl Budget {
    fn take(&self, bytes: usize) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        while !state.closed && state.queued > 0 && state.queued + bytes > self.max_bytes {
            state = match self.freed.wait(state) {
                Ok(state) => state,
                Err(_) => return,
            };
        }
        state.queued += bytes;
    }

    fn give(&self, bytes: usize) {
        if let Ok(mut state) = self.state.lock() {
            state.queued = state.queued.saturating_sub(bytes);
        }
        self.freed.notify_all();
    }

    fn close(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.closed = true;
        }
        self.freed.notify_all();
    }
}

#[derive(Clone)]
pub struct BatchSender {
    tx: Sender<(Batch, usize)>,
    budget: Arc<Budget>,
}

impl BatchSender {
    /// Queues a batch, waiting while the queue is full; false when the
    /// sink is gone (the batch is dropped).
    pub fn send(&self, batch: Batch) -> bool {
        let bytes = batch.heap_bytes();
        self.budget.take(bytes);
        let sent = self.tx.send((batch, bytes)).is_ok();
        if !sent {
            self.budget.give(bytes);
        }
        sent
    }
}

pub struct BatchReceiver {
    rx: Receiver<(Batch, usize)>,
    budget: Arc<Budget>,
}

impl BatchReceiver {
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Batch, RecvTimeoutError> {
        let (batch, bytes) = self.rx.recv_timeout(timeout)?;
        self.budget.give(bytes);
        Ok(batch)
    }

    /// Adds to `batch` what else waits, while the result stays under
    /// `max_records` and `max_bytes` (see [`crate::limits::COALESCE_BYTES`]): a burst
    /// becomes one write.
    pub fn coalesce(&self, batch: &mut Batch, max_records: usize, max_bytes: usize) {
        let mut bytes = batch.heap_bytes();
        while batch.logs.len() < max_records && bytes < max_bytes {
            let Ok((more, more_bytes)) = self.rx.try_recv() else {
                break;
            };
            self.budget.give(more_bytes);
            bytes += more_bytes;
            batch.append(more);
        }
    }

    /// The next batch if one waits, without waiting.
    pub fn try_recv(&self) -> Result<Batch, crossbeam_channel::TryRecvError> {
        let (batch, bytes) = self.rx.try_recv()?;
        self.budget.give(bytes);
        Ok(batch)
    }

    /// Every batch that waits, without waiting.
    pub fn try_iter(&self) -> impl Iterator<Item = Batch> + '_ {
        std::iter::from_fn(|| self.try_recv().ok())
    }
}

impl Drop for BatchReceiver {
    fn drop(&mut self) {
        self.budget.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::SeqRecord;
    use pmon_core::record::{LogRecord, StreamKind};

    fn batch_of(message_bytes: usize) -> Batch {
        let record = LogRecord::plain("x".repeat(message_bytes), StreamKind::Stdout, "stdout");
        Batch {
            logs: vec![SeqRecord {
                origin: "stdout".into(),
                seq: 0,
                record,
            }],
            ..Batch::default()
        }
    }

    #[test]
    fn a_sender_waits_while_the_bytes_queued_would_pass_the_budget() {
        let (tx, rx) = batch_queue(1000);
        assert!(tx.send(batch_of(600)));
        let sent = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sender = {
            let (tx, sent) = (tx.clone(), sent.clone());
            std::thread::spawn(move || {
                assert!(tx.send(batch_of(600)));
                sent.store(true, std::sync::atomic::Ordering::SeqCst);
            })
        };
        // It cannot get in while the first waits: nothing is received, so
        // however long we look, it has not been sent.
        std::thread::sleep(Duration::from_millis(50));
        assert!(!sent.load(std::sync::atomic::Ordering::SeqCst));
        rx.recv_timeout(Duration::from_secs(60)).unwrap();
        sender.join().unwrap();
        assert!(sent.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(rx.try_iter().count(), 1);
    }

    #[test]
    fn a_batch_larger_than_the_budget_gets_in_alone() {
        let (tx, rx) = batch_queue(1000);
        assert!(tx.send(batch_of(5000)));
        assert_eq!(rx.try_iter().count(), 1);
    }

    #[test]
    fn senders_do_not_wait_for_a_receiver_that_is_gone() {
        let (tx, rx) = batch_queue(1000);
        assert!(tx.send(batch_of(600)));
        let sender = std::thread::spawn(move || !tx.send(batch_of(600)));
        drop(rx);
        assert!(sender.join().unwrap());
    }

    #[test]
    fn coalescing_stops_at_the_byte_budget() {
        let (tx, rx) = batch_queue(usize::MAX);
        for _ in 0..8 {
            assert!(tx.send(batch_of(crate::limits::COALESCE_BYTES / 4)));
        }
        let mut first = rx.recv_timeout(Duration::from_secs(60)).unwrap();
        rx.coalesce(&mut first, 20_000, crate::limits::COALESCE_BYTES);
        assert_eq!(first.logs.len(), 4);
        assert_eq!(rx.try_iter().count(), 4);
    }
}
