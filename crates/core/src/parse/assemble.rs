//! One stream's parsing state: frames in, records, progress and metrics out.
//!
//! [`RecordAssembler`] runs each line through the progress parser, the
//! traceback state machine and the parser chain, and decides which record a
//! traceback belongs to: the log line printed just before it (`logging.exception`,
//! loguru, structlog), or a record of its own. Each stream or file has its own
//! assembler, so stdout lines never land inside a stderr traceback.
//!
//! The assembler never reads a clock by itself: the caller passes `now` and
//! calls [`RecordAssembler::on_idle`] when [`RecordAssembler::deadline`] has
//! passed, which is how a traceback at the very end of a burst is finished
//! without waiting for the next line.

use super::chain::{LineScan, ParserChain};
use super::declarative::{Fed, Finished, MultilineRecord};
use super::directive::{self, Directive};
use super::fault::{self, FaultDump};
use super::line::LineFields;
use super::progress::{ProgressMatch, ProgressParser};
use super::traceback::{IdlePolicy, Traceback, TracebackCollector, TracebackEvent};
use crate::framing::{Frame, Framed};
use crate::record::{Level, LogRecord, Metric, ProgressUpdate, StreamKind};
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the assembler produces.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Record(LogRecord),
    Progress(ProgressUpdate),
    /// A value the program reported (`##pmon[metric …]`).
    Metric(Metric),
    /// A directive line that could not be read (it is also a record).
    ParseError {
        line: String,
        reason: String,
    },
}

/// How long a stream may be quiet before pending work is finished.
#[derive(Debug, Clone, Copy)]
pub struct AssemblerTiming {
    /// A log record waits this long for a traceback to follow it.
    pub log_attach: Duration,
    /// After the final exception line, this much quiet ends a traceback.
    pub traceback_idle: Duration,
    /// A traceback still missing its exception line is ended after this much quiet.
    pub traceback_max_wait: Duration,
}

impl Default for AssemblerTiming {
    fn default() -> Self {
        AssemblerTiming {
            log_attach: Duration::from_millis(50),
            traceback_idle: Duration::from_millis(100),
            traceback_max_wait: Duration::from_secs(2),
        }
    }
}

pub struct RecordAssembler {
    chain: Arc<ParserChain>,
    progress: Arc<ProgressParser>,
    timing: AssemblerTiming,
    stream: StreamKind,
    source: Arc<str>,
    tracebacks: TracebackCollector,
    /// A declarative parser's record that spans lines, in progress.
    multiline: Option<MultilineRecord>,
    /// A faulthandler dump in progress (lines of other threads pass by it).
    fault: Option<FaultDump>,
    /// The last log record, held while a traceback may still follow it.
    pending: Option<LogRecord>,
    traceback_started: DateTime<Utc>,
    /// Stream offset of the first line of the traceback in progress.
    traceback_offset: u64,
    last_activity: Instant,
    events: Vec<TracebackEvent>,
    /// When the bytes being parsed arrived, if not now (a capture file read
    /// by a shipper that restarted): what records without a time of their
    /// own are stamped with.
    clock: Option<DateTime<Utc>>,
    /// The last stamp given from the clock.
    last_stamp: Option<DateTime<Utc>>,
    /// The task name of the tqdm bar last drawn on each row (0: the
    /// cursor's row, 1: the row below…): a bar's parent is the row above it.
    bars: Vec<String>,
}

/// Rows below the cursor a nested bar may be drawn on; deeper ones (or a
/// hostile cursor-up count) are taken as top-level bars.
const MAX_BAR_ROWS: usize = 16;

impl RecordAssembler {
    pub fn new(
        chain: Arc<ParserChain>,
        progress: Arc<ProgressParser>,
        timing: AssemblerTiming,
        stream: StreamKind,
        source: &str,
    ) -> RecordAssembler {
        RecordAssembler {
            chain,
            progress,
            timing,
            stream,
            source: Arc::from(source),
            tracebacks: TracebackCollector::new(),
            multiline: None,
            fault: None,
            pending: None,
            traceback_started: Utc::now(),
            traceback_offset: 0,
            last_activity: Instant::now(),
            events: Vec::new(),
            clock: None,
            last_stamp: None,
            bars: Vec::new(),
        }
    }

    pub fn frame(&mut self, (start, frame): Framed, now: Instant, out: &mut Vec<Output>) {
        self.last_activity = now;
        match frame {
            Frame::Line(line) => self.line(line, start, out),
            Frame::Overwrite(text) => self.drawn(&text, 0, out),
            Frame::Drawn { text, rows_up } => self.drawn(&text, rows_up.into(), out),
        }
    }

    /// Text the terminal shows in place (a bar redrawn), not as output.
    fn drawn(&mut self, text: &str, row: usize, out: &mut Vec<Output>) {
        if let Some(m) = self.progress.parse(text) {
            let update = self.place(m, row);
            out.push(Output::Progress(update));
        }
    }

    /// Names a tqdm bar after the bar drawn on the row above it
    /// (`epoch/batch` for `batch` at `position=1` under `epoch`).
    fn place(&mut self, m: ProgressMatch, row: usize) -> ProgressUpdate {
        let mut update = m.update;
        if !m.nests || row >= MAX_BAR_ROWS {
            return update;
        }
        if let Some(parent) = row.checked_sub(1).and_then(|above| self.bars.get(above)) {
            if !parent.is_empty() {
                update.task = format!("{parent}/{}", update.task);
            }
        }
        if self.bars.len() <= row {
            self.bars.resize(row + 1, String::new());
        }
        self.bars[row].clone_from(&update.task);
        update
    }

    /// The offset of the first line still held back (a log record waiting for
    /// its traceback, or a traceback in progress): nothing before it is pending.
    pub fn held_offset(&self) -> Option<u64> {
        let pending = self.pending.as_ref().and_then(|r| r.offset);
        let traceback = self.tracebacks.is_active().then_some(self.traceback_offset);
        let multiline = self.multiline.as_ref().map(MultilineRecord::first_offset);
        let fault = self.fault.as_ref().map(FaultDump::offset);
        [pending, traceback, multiline, fault]
            .into_iter()
            .flatten()
            .min()
    }

    /// The bytes that follow arrived at `at`.
    pub fn set_clock(&mut self, at: DateTime<Utc>) {
        self.clock = Some(at);
    }

    /// The time a record made now is stamped with. From a capture, that is
    /// its chunk's arrival; the lines of one chunk get a microsecond each
    /// after it, so they keep their order in time and do not pile up on one
    /// timestamp (which a time index pays for).
    fn now(&mut self) -> DateTime<Utc> {
        let Some(arrived) = self.clock else {
            return Utc::now();
        };
        let next = self
            .last_stamp
            .map(|last| last + chrono::Duration::microseconds(1));
        let stamp = next.filter(|n| *n > arrived).unwrap_or(arrived);
        self.last_stamp = Some(stamp);
        stamp
    }

    /// Records from now on name this source (a file renamed by rotation).
    pub fn set_source(&mut self, source: &str) {
        if &*self.source != source {
            self.source = Arc::from(source);
        }
    }

    /// When `on_idle` should next be called, if anything is waiting.
    pub fn deadline(&self) -> Option<Instant> {
        let fault = self.fault_deadline();
        match (fault, self.line_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A dump ends after the same quiet as a traceback missing its end.
    fn fault_deadline(&self) -> Option<Instant> {
        self.fault
            .as_ref()
            .map(|_| self.last_activity + self.timing.traceback_max_wait)
    }

    fn line_deadline(&self) -> Option<Instant> {
        if let Some(m) = &self.multiline {
            return Some(self.last_activity + m.timeout());
        }
        let wait = match self.tracebacks.idle_policy() {
            IdlePolicy::Short => self.timing.traceback_idle,
            IdlePolicy::Long => self.timing.traceback_max_wait,
            IdlePolicy::None if self.pending.is_some() => self.timing.log_attach,
            IdlePolicy::None => return None,
        };
        Some(self.last_activity + wait)
    }

    /// Finishes what has waited past its deadline.
    pub fn on_idle(&mut self, now: Instant, out: &mut Vec<Output>) {
        if self.fault_deadline().is_some_and(|d| now >= d) {
            self.finish_fault(out);
        }
        if self.line_deadline().is_some_and(|d| now >= d) {
            if self.multiline.is_some() {
                self.finish_multiline(out);
            } else if self.tracebacks.is_active() {
                self.tracebacks.finish(&mut self.events);
                self.drain_events(out);
            } else {
                self.release_pending(out);
            }
        }
    }

    /// End of stream: everything pending is emitted.
    pub fn finish(&mut self, out: &mut Vec<Output>) {
        self.finish_fault(out);
        self.finish_multiline(out);
        self.tracebacks.finish(&mut self.events);
        self.drain_events(out);
        self.release_pending(out);
    }

    fn line(&mut self, line: String, start: u64, out: &mut Vec<Output>) {
        match self.fault.as_mut().map(|dump| dump.feed(&line)) {
            Some(fault::Fed::Taken) => return,
            Some(fault::Fed::Over) => self.finish_fault(out),
            Some(fault::Fed::Stray) => {}
            None if fault::is_start(&line) => {
                // What was in progress ends here; the dump is a record of its own.
                self.finish_multiline(out);
                self.tracebacks.finish(&mut self.events);
                self.drain_events(out);
                self.release_pending(out);
                let started = self.now();
                self.fault = Some(FaultDump::start(line, start, started));
                return;
            }
            None => {}
        }
        if let Some(m) = &mut self.multiline {
            match m.feed(&line, start) {
                Fed::Joined => return,
                Fed::Ended => return self.finish_multiline(out),
                Fed::NotMine => self.finish_multiline(out),
            }
        }
        if self.tracebacks.is_active() {
            let (chain, progress) = (&self.chain, &self.progress);
            let taken = self.tracebacks.feed(
                &line,
                |l| {
                    chain.parse(l).is_some()
                        || progress.parse(l).is_some()
                        || directive::is_directive(l)
                },
                &mut self.events,
            );
            let finished = self
                .events
                .iter()
                .any(|e| matches!(e, TracebackEvent::Finished(_)));
            self.drain_events(out);
            if taken {
                if finished && self.tracebacks.is_active() {
                    // The line that ended one traceback began the next: its
                    // record is keyed by where it starts, not by the last's.
                    self.traceback_started = self.now();
                    self.traceback_offset = start;
                }
                return;
            }
        }
        if TracebackCollector::is_start(&line) {
            self.traceback_started = self.now();
            self.traceback_offset = start;
            self.tracebacks.feed(&line, |_| false, &mut self.events);
            return;
        }
        let scan = self.chain.scan(&line);
        if let Some(index) = self.chain.multiline_start(&line, &scan) {
            if let Some(parser) = self.chain.declarative(index).cloned() {
                let started = self.now();
                self.multiline = Some(MultilineRecord::start(index, parser, line, start, started));
                return;
            }
        }
        self.structured_line(line, Some(start), Some(scan), out);
    }

    /// Ends the faulthandler dump in progress: one CRITICAL record.
    fn finish_fault(&mut self, out: &mut Vec<Output>) {
        if let Some(dump) = self.fault.take() {
            out.push(Output::Record(
                dump.finish(self.stream, self.source.clone()),
            ));
        }
    }

    /// Ends the multi-line record in progress: a record of its own, the
    /// traceback of the log line before it, or (too short) its lines again.
    fn finish_multiline(&mut self, out: &mut Vec<Output>) {
        let Some(m) = self.multiline.take() else {
            return;
        };
        let (index, started) = (m.parser_index, m.started);
        match m.finish() {
            Finished::Released(lines) => {
                let mut lines = lines.into_iter();
                if let Some((offset, first)) = lines.next() {
                    self.structured_line(first, Some(offset), None, out);
                }
                for (offset, line) in lines {
                    self.line(line, offset, out);
                }
            }
            Finished::Record {
                fields,
                log_line,
                offset,
            } => {
                if !log_line {
                    if let Some(mut record) = self.pending.take() {
                        record.traceback = fields.traceback;
                        record.exception_type = fields.exception_type;
                        record.exception_message = fields.exception_message;
                        record.fields = record.fields.or(fields.fields);
                        return out.push(Output::Record(record));
                    }
                }
                self.release_pending(out);
                let mut record = self.record_from(*fields, index, Some(offset));
                if record.timestamp == DateTime::<Utc>::MIN_UTC {
                    record.timestamp = started;
                }
                out.push(Output::Record(record));
            }
        }
    }

    /// A record from what a parser extracted; without a time of its own it
    /// is stamped `MIN_UTC` for the caller to fill in.
    fn record_from(&self, fields: LineFields, parser: usize, offset: Option<u64>) -> LogRecord {
        LogRecord {
            timestamp: fields.timestamp.unwrap_or(DateTime::<Utc>::MIN_UTC),
            level: fields.level,
            logger: fields.logger,
            message: fields.message,
            traceback: fields.traceback,
            exception_type: fields.exception_type,
            exception_message: fields.exception_message,
            fields: fields.fields,
            stream: self.stream,
            source: self.source.clone(),
            parsed_by: Some(parser),
            offset,
        }
    }

    fn structured_line(
        &mut self,
        line: String,
        offset: Option<u64>,
        scan: Option<LineScan>,
        out: &mut Vec<Output>,
    ) {
        if line.trim().is_empty() {
            // Blank lines carry nothing to search for; the plain log file keeps them.
            return;
        }
        match directive::parse(&line) {
            Some(Ok(Directive::Metric(metric))) => return out.push(Output::Metric(metric)),
            Some(Ok(Directive::Progress(update))) => {
                self.release_pending(out);
                return out.push(Output::Progress(update));
            }
            Some(Err(reason)) => out.push(Output::ParseError {
                line: line.clone(),
                reason,
            }),
            None => {}
        }
        if let Some(m) = self.progress.parse(&line) {
            self.release_pending(out);
            let also_log = m.also_log;
            let update = self.place(m, 0);
            out.push(Output::Progress(update));
            if !also_log {
                return;
            }
        }
        let scan = scan.unwrap_or_else(|| self.chain.scan(&line));
        let Some((parser, mut fields)) = self.chain.parse_scanned(&line, &scan) else {
            self.release_pending(out);
            let mut record = LogRecord::plain(line, self.stream, self.source.clone());
            record.timestamp = self.now();
            record.offset = offset;
            out.push(Output::Record(record));
            return;
        };
        self.release_pending(out);
        if let Some(update) = fields.progress.take() {
            out.push(Output::Progress(update));
        }
        let traceback = fields.traceback.take();
        let mut record = self.record_from(fields, parser, offset);
        if record.timestamp == DateTime::<Utc>::MIN_UTC {
            record.timestamp = self.now();
        }
        match traceback {
            Some(text) => {
                let lines = text.lines().map(str::to_string).collect();
                attach(&mut record, super::traceback::describe(lines));
                out.push(Output::Record(record));
            }
            // logging.exception (and loguru's, and exc_info=True on an error)
            // prints at ERROR or above. A lower line just before an uncaught
            // exception is not its owner: the crash must show up as an error.
            None if record.level >= Level::Error => self.pending = Some(record),
            None => out.push(Output::Record(record)),
        }
    }

    fn drain_events(&mut self, out: &mut Vec<Output>) {
        let events = std::mem::take(&mut self.events);
        for event in events {
            match event {
                TracebackEvent::Finished(tb) => {
                    let record = match self.pending.take() {
                        Some(mut record) => {
                            attach(&mut record, tb);
                            record
                        }
                        None => self.standalone(tb),
                    };
                    out.push(Output::Record(record));
                }
                TracebackEvent::Released(line) => self.structured_line(line, None, None, out),
            }
        }
    }

    fn standalone(&self, tb: Traceback) -> LogRecord {
        let mut record =
            LogRecord::plain(tb.exception_line.clone(), self.stream, self.source.clone());
        record.level = Level::Error;
        record.timestamp = self.traceback_started;
        record.offset = Some(self.traceback_offset);
        attach(&mut record, tb);
        record
    }

    fn release_pending(&mut self, out: &mut Vec<Output>) {
        if let Some(record) = self.pending.take() {
            out.push(Output::Record(record));
        }
    }
}

/// Runs `bytes` through a fresh assembler as one file, `source`, handing on
/// each output as it comes: what `parsers test` and parser examples see.
pub fn assemble_bytes(
    chain: &Arc<ParserChain>,
    source: &str,
    bytes: &[u8],
    mut each: impl FnMut(Output),
) {
    let mut assembler = RecordAssembler::new(
        chain.clone(),
        Arc::new(ProgressParser::new()),
        AssemblerTiming::default(),
        StreamKind::File,
        source,
    );
    let mut framer = crate::framing::LineFramer::new(1 << 20);
    let (mut frames, mut outputs) = (Vec::new(), Vec::new());
    let now = Instant::now();
    for chunk in bytes.chunks(crate::framing::CHUNK_BYTES) {
        framer.push(chunk, &mut frames);
        for f in frames.drain(..) {
            assembler.frame(f, now, &mut outputs);
        }
        outputs.drain(..).for_each(&mut each);
    }
    framer.finish(&mut frames);
    for f in frames.drain(..) {
        assembler.frame(f, now, &mut outputs);
    }
    assembler.finish(&mut outputs);
    outputs.drain(..).for_each(each);
}

fn attach(record: &mut LogRecord, tb: Traceback) {
    record.traceback = Some(tb.text);
    record.exception_type = Some(tb.exception_type);
    record.exception_message = Some(tb.exception_message);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assemble(stream_text: &str) -> Vec<Output> {
        let mut out = Vec::new();
        let chain = Arc::new(ParserChain::builtin());
        assemble_bytes(&chain, "stderr", stream_text.as_bytes(), |o| out.push(o));
        out
    }

    fn records(out: &[Output]) -> Vec<&LogRecord> {
        out.iter()
            .filter_map(|o| match o {
                Output::Record(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    const TB: &str = "Traceback (most recent call last):\n  File \"a.py\", line 1, in <module>\nValueError: bad shard 3\n";

    #[test]
    fn traceback_after_a_log_line_belongs_to_that_record() {
        let out = assemble(&format!(
            "ERROR:pipeline.loader:failed to load shard 3\n{TB}INFO:root:next\n"
        ));
        let recs = records(&out);
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].message, "failed to load shard 3");
        assert_eq!(recs[0].logger.as_deref(), Some("pipeline.loader"));
        assert_eq!(recs[0].traceback.as_deref(), Some(TB));
        assert_eq!(recs[0].exception_type.as_deref(), Some("ValueError"));
        assert_eq!(recs[1].message, "next");
    }

    #[test]
    fn a_warning_before_an_uncaught_exception_keeps_its_own_record() {
        let out = assemble(&format!("WARNING:shards:shard 2: 1 rows\n{TB}"));
        let recs = records(&out);
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].traceback, None);
        assert_eq!(recs[1].message, "ValueError: bad shard 3");
        assert_eq!(recs[1].traceback.as_deref(), Some(TB));
    }

    #[test]
    fn a_traceback_alone_is_an_error_record_named_by_its_exception() {
        let out = assemble(&format!("plain chatter\n{TB}"));
        let recs = records(&out);
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1].level, Level::Error);
        assert_eq!(recs[1].message, "ValueError: bad shard 3");
        assert_eq!(recs[1].logger, None);
        assert_eq!(recs[1].traceback.as_deref(), Some(TB));
    }

    #[test]
    fn tqdm_updates_are_progress_not_records() {
        let out = assemble("\r  0%|          | 0/3 [00:00<?, ?it/s]\r 33%|###3      | 1/3 [00:00<00:00, 9.9it/s]\r100%|##########| 3/3 [00:00<00:00, 9.9it/s]\nINFO:root:done\n");
        assert_eq!(records(&out).len(), 1);
        let progress: Vec<_> = out
            .iter()
            .filter(|o| matches!(o, Output::Progress(_)))
            .collect();
        assert_eq!(progress.len(), 3);
    }

    fn tasks(out: &[Output]) -> Vec<(String, f64)> {
        out.iter()
            .filter_map(|o| match o {
                Output::Progress(p) => Some((p.task.clone(), p.current)),
                _ => None,
            })
            .collect()
    }

    /// tqdm 4.70's bytes in a pipe for `tqdm(desc="epoch")` around
    /// `tqdm(desc="batch", leave=False)` (`position=1`).
    #[test]
    fn a_bar_drawn_below_another_is_its_child() {
        let out = assemble("\repoch:   0%|          | 0/2 [00:00<?, ?it/s]\n\rbatch:   0%|          | 0/3 [00:00<?, ?it/s]\x1b[A\n\r                    \x1b[A\n\rbatch: 100%|##########| 3/3 [00:00<00:00, 9.9it/s]\x1b[A\n\r                    \x1b[A\repoch: 100%|##########| 2/2 [00:00<00:00,  3.2it/s]\n");
        assert_eq!(
            tasks(&out),
            vec![
                ("epoch".into(), 0.0),
                ("epoch/batch".into(), 0.0),
                ("epoch/batch".into(), 3.0),
                ("epoch".into(), 2.0)
            ]
        );
        assert!(records(&out).is_empty(), "{out:?}");
    }

    #[test]
    fn metric_directives_are_samples_and_bad_ones_are_lines_with_a_reason() {
        let out = assemble(
            "##pmon[metric name=loss value=0.12 step=300]\n##pmon[metric name=loss value=nan]\n",
        );
        let Output::Metric(m) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(
            (m.name.as_str(), m.value, m.step),
            ("loss", 0.12, Some(300))
        );
        assert!(
            matches!(&out[1], Output::ParseError { reason, .. } if reason.contains("not a finite number"))
        );
        let recs = records(&out);
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].message, "##pmon[metric name=loss value=nan]");
    }

    /// Tracebacks printed back to back (`traceback.print_exc()` in a loop)
    /// are records of their own, each keyed by the offset of its first line
    /// (two with one key would be stored once).
    #[test]
    fn tracebacks_back_to_back_each_start_where_they_start() {
        let out = assemble(&format!("{TB}{TB}{TB}"));
        let offsets: Vec<Option<u64>> = records(&out).iter().map(|r| r.offset).collect();
        let len = TB.len() as u64;
        assert_eq!(offsets, [Some(0), Some(len), Some(2 * len)]);
    }

    #[test]
    fn idle_finishes_a_traceback_without_waiting_for_another_line() {
        let mut a = RecordAssembler::new(
            Arc::new(ParserChain::builtin()),
            Arc::new(ProgressParser::new()),
            AssemblerTiming::default(),
            StreamKind::Stderr,
            "stderr",
        );
        let t0 = Instant::now();
        let mut out = Vec::new();
        for l in TB.lines() {
            a.frame((0, Frame::Line(l.to_string())), t0, &mut out);
        }
        assert!(out.is_empty());
        let deadline = a.deadline().unwrap();
        a.on_idle(deadline - Duration::from_millis(1), &mut out);
        assert!(out.is_empty());
        a.on_idle(deadline, &mut out);
        assert_eq!(records(&out).len(), 1);
        assert_eq!(a.deadline(), None);
    }
}
