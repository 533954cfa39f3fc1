//! `new_error_group`: the first record of each error group a run shows is
//! looked up in the store; a group none of the experiment's earlier runs
//! had is notified, once, while the run goes on.

use super::RunFacts;
use crate::app::App;
use crate::pipeline::PipelineCounters;
use crate::query::db::Store;
use pmon_core::config::NotifyConfig;
use pmon_core::options::NotifyOn;
use pmon_core::record::LogRecord;
use std::time::{Duration, Instant};

/// Groups are looked up at most this often (a store that is down is not
/// asked again and again).
const LOOK_EVERY: Duration = Duration::from_secs(1);
/// Groups waiting for a store that answers, at most.
const MAX_WAITING: usize = 100;
/// A new group waits this long before it is notified: a program that dies
/// of the error it just printed gets one notification, its end's, which
/// says the error is new (see [`NewGroupWatch::finish`]).
const GRACE: Duration = Duration::from_secs(5);

pub struct NewGroupWatch {
    config: NotifyConfig,
    facts: RunFacts,
    store: Option<Store>,
    /// Groups new to this run, when first taken, and their first record.
    waiting: Vec<(String, LogRecord, Instant)>,
    last_look: Option<Instant>,
}

impl NewGroupWatch {
    /// Starts watching `counters`' error groups, if `config` wants them.
    pub fn new(
        config: NotifyConfig,
        facts: RunFacts,
        counters: &PipelineCounters,
    ) -> NewGroupWatch {
        if let Ok(mut groups) = counters.error_groups.lock() {
            groups.watched = config.wants(NotifyOn::NewErrorGroup);
        }
        NewGroupWatch {
            config,
            facts,
            store: None,
            waiting: Vec::new(),
            last_look: None,
        }
    }

    /// Takes the groups the pipeline saw first since the last call and
    /// notifies those past [`GRACE`] that are new to the experiment.
    pub fn look(&mut self, app: &App, counters: &PipelineCounters) {
        self.take(counters);
        if self.last_look.is_some_and(|t| t.elapsed() < LOOK_EVERY) {
            return;
        }
        let due = self
            .waiting
            .iter()
            .take_while(|(_, _, since)| since.elapsed() >= GRACE)
            .count();
        if due > 0 {
            self.last_look = Some(Instant::now());
            self.notify_new(app, due, None);
        }
    }

    /// The run is over: every group waiting is looked up now. `ended_by`
    /// is the group of the error its end notification names: that one is
    /// not notified apart; returns whether it was new to the experiment.
    pub fn finish(
        &mut self,
        app: &App,
        counters: &PipelineCounters,
        ended_by: Option<&str>,
    ) -> bool {
        self.take(counters);
        self.notify_new(app, self.waiting.len(), ended_by)
    }

    fn take(&mut self, counters: &PipelineCounters) {
        let fresh = counters
            .error_groups
            .lock()
            .map(|mut groups| std::mem::take(&mut groups.fresh))
            .unwrap_or_default();
        if !self.config.wants(NotifyOn::NewErrorGroup) {
            return;
        }
        let now = Instant::now();
        self.waiting.extend(
            fresh
                .into_iter()
                .map(|(group, record)| (group, record, now)),
        );
        self.waiting.truncate(MAX_WAITING);
    }

    /// Looks up the first `count` waiting groups; notifies the new ones
    /// (but `absorbed`, whose newness is returned).
    fn notify_new(&mut self, app: &App, count: usize, absorbed: Option<&str>) -> bool {
        if count == 0 {
            return false;
        }
        let Some(mut store) = self
            .store
            .take()
            .or_else(|| Store::open(app).ok().flatten())
        else {
            return false;
        };
        let mut db = store.db();
        let mut looked = 0;
        let mut healthy = true;
        let mut absorbed_is_new = false;
        for (group, record, _) in self.waiting.iter().take(count) {
            match db.group_seen_before(&self.facts.experiment_id, group, &self.facts.run_id) {
                Ok(seen) => {
                    looked += 1;
                    if seen {
                        continue;
                    }
                    if absorbed == Some(group.as_str()) {
                        absorbed_is_new = true;
                        continue;
                    }
                    let n = super::new_error_group(&self.facts, record, group, chrono::Utc::now());
                    super::send_detached(app, &self.config, n);
                }
                Err(_) => {
                    // Asked again, on a fresh connection, at the next look.
                    healthy = false;
                    break;
                }
            }
        }
        self.waiting.drain(..looked);
        if healthy {
            self.store = Some(store);
        }
        absorbed_is_new
    }
}
