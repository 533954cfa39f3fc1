//! SIGUSR1, passed on by the holder: the status report.

use crate::pipeline::{Msg, PipelineCounters};
use crossbeam_channel::Sender;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// SIGUSR1 (passed on by the holder): the status report. SIGTERM ends the
/// shipper (the holder starts another if the run is not over).
pub(super) fn report_on_sigusr1(
    program: Arc<AtomicU32>,
    counters: Arc<PipelineCounters>,
    tx: Sender<Msg>,
) {
    use nix::sys::signal::{SigSet, Signal};
    let started = Instant::now();
    let _ = std::thread::Builder::new()
        .name("pmon-ship-signals".into())
        .spawn(move || {
            let mut set = SigSet::empty();
            set.add(Signal::SIGUSR1);
            set.add(Signal::SIGTERM);
            while let Ok(signal) = set.wait() {
                if signal == Signal::SIGTERM {
                    std::process::exit(143);
                }
                let pid = program.load(Ordering::SeqCst);
                crate::source::wrap::status_report(pid, started, &counters, &tx);
            }
        });
}
