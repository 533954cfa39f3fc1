//! The spool, shipped in the background by a daemon's supervisor.
//!
//! Each run of a daemon ships its own batches and, when it ends, tries once
//! more (bounded by `logging.database.shutdown_timeout`) to ship what an
//! outage left in the spool. What is still left then would otherwise wait for
//! someone to run `pmon-agent spool replay`: nobody is at a daemon's terminal
//! to be told. So the supervisor keeps shipping it — while it waits to
//! restart the program, and after the daemon has ended for good, until the
//! spool is empty or `daemon stop` says enough.

use crate::app::App;
use pmon_store::spool::SpoolingSink;
use std::time::{Duration, Instant};

/// How long one step may ship before the supervisor looks at its stop file.
pub const STEP: Duration = Duration::from_secs(1);

pub struct BackgroundReplay {
    /// `None` without a database (nothing is ever spooled) or when the
    /// spool cannot be opened (the runs say why).
    sink: Option<SpoolingSink>,
}

impl BackgroundReplay {
    pub fn new(app: &App) -> BackgroundReplay {
        BackgroundReplay {
            sink: app.open_spooling_sink().ok().flatten(),
        }
    }

    /// Records waiting in the spool (0 without a database).
    pub fn pending(&mut self) -> u64 {
        self.sink.as_mut().map_or(0, SpoolingSink::recount)
    }

    /// Ships for at most `budget` when records wait and PostgreSQL is due
    /// to be tried (`logging.database.retry_*_backoff`). Returns the records
    /// still waiting.
    pub fn step(&mut self, budget: Duration) -> u64 {
        let Some(sink) = self.sink.as_mut() else {
            return 0;
        };
        if sink.recount() == 0 {
            return 0;
        }
        sink.replay_when_due(Instant::now() + budget)
    }
}
