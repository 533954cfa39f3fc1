//! What the pipeline notes of the errors that pass: the last one (for a
//! daemon's status and the end-of-run notification), the error groups new
//! to the run (for `new_error_group` notifications), and the crash site a
//! faulthandler dump names (for the `exit` event).

use super::PipelineCounters;
use std::sync::atomic::Ordering;

/// A run that died of a signal after Python's faulthandler printed where:
/// its `exit` event says so (`"crash": "SIGSEGV in crash() at seg.py:9"`).
/// The dump's record was parsed before the event arrived: the streams are
/// closed, and so finished, before the shipper sends it.
pub(super) fn with_crash_site(
    mut event: pmon_core::record::Event,
    counters: &PipelineCounters,
) -> pmon_core::record::Event {
    if event.event_type != "exit" || event.details["signal"].is_null() {
        return event;
    }
    let crash = counters.last_error_record.lock().ok().and_then(|last| {
        let r = last.as_ref()?;
        pmon_core::parse::fault::crash_words(
            r.exception_type.as_deref(),
            r.exception_message.as_deref(),
            &r.message,
        )
    });
    let signal = event.details["signal_name"].as_str().map(str::to_string);
    if let (Some(crash), Some(map)) = (crash, event.details.as_object_mut()) {
        if signal.is_some_and(|s| crash.starts_with(&s)) {
            map.insert("crash".into(), crash.into());
        }
    }
    event
}

/// The error groups of a run, as its records pass.
#[derive(Debug, Default)]
pub struct ErrorGroupsSeen {
    /// Someone takes `fresh` (new_error_group notifications are wanted):
    /// otherwise nothing is kept.
    pub watched: bool,
    seen: std::collections::HashSet<String>,
    /// First records of groups new to this run, oldest first.
    pub fresh: Vec<(String, pmon_core::record::LogRecord)>,
}

/// Past this many groups in one run (a message whose variable part the
/// masking misses), new ones are no longer noticed.
const MAX_GROUPS_NOTICED: usize = 10_000;
/// First records waiting to be taken, at most.
const MAX_FRESH: usize = 100;

impl ErrorGroupsSeen {
    fn note(&mut self, record: &pmon_core::record::LogRecord) {
        if !self.watched {
            return;
        }
        let Some(group) = pmon_core::parse::fingerprint::error_group(record) else {
            return;
        };
        if self.seen.len() < MAX_GROUPS_NOTICED
            && self.fresh.len() < MAX_FRESH
            && self.seen.insert(group.clone())
        {
            self.fresh.push((group, record.clone()));
        }
    }
}

pub(super) fn note_error(record: &pmon_core::record::LogRecord, counters: &PipelineCounters) {
    if record.level.is_error() {
        counters.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = counters.last_error_record.lock() {
            *last = Some(record.clone());
        }
        if let Ok(mut groups) = counters.error_groups.lock() {
            groups.note(record);
        }
    }
    let crash = pmon_core::parse::fault::crash_words(
        record.exception_type.as_deref(),
        record.exception_message.as_deref(),
        &record.message,
    );
    let text = match (&record.exception_type, &record.exception_message) {
        _ if crash.is_some() => crash.unwrap_or_default(),
        (Some(t), Some(m)) if !m.is_empty() => format!("{t}: {}", m.lines().next().unwrap_or("")),
        (Some(t), _) => t.clone(),
        _ => record.message.clone(),
    };
    if let Ok(mut last) = counters.last_error.lock() {
        *last = Some(text);
    }
}
