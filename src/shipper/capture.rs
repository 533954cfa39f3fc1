//! Reading the holder's capture as it grows: each stream's file with the
//! arrival times of its chunks, handed to the pipeline from the stored read
//! position; and how the holder says the program ended (on stdin).

use crate::holder::capture::{CaptureDir, ProgramEnd, TimesReader};
use crate::pipeline::{FileMeta, Msg};
use crate::source::tail::StoredCheckpoint;
use chrono::{DateTime, Utc};
use crossbeam_channel::Sender;
use pmon_core::record::StreamKind;
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Most bytes read from a capture file at once (and handed on in one message).
const READ_CHUNK: usize = pmon_core::framing::CHUNK_BYTES;

/// What the holder says on the shipper's stdin: how the program ended (one
/// JSON line); end of file without it, that the holder is gone.
pub(super) struct EndFromHolder {
    end: Arc<std::sync::Mutex<Option<ProgramEnd>>>,
    gone: Arc<std::sync::atomic::AtomicBool>,
}

impl EndFromHolder {
    pub(super) fn listen() -> EndFromHolder {
        let told = EndFromHolder {
            end: Default::default(),
            gone: Default::default(),
        };
        let (end, gone) = (told.end.clone(), told.gone.clone());
        let _ = std::thread::Builder::new()
            .name("pmon-ship-end".into())
            .spawn(move || {
                use std::io::BufRead;
                for line in std::io::stdin().lock().lines() {
                    let Ok(line) = line else { break };
                    if let Ok(said) = serde_json::from_str::<ProgramEnd>(&line) {
                        if let Ok(mut end) = end.lock() {
                            *end = Some(said);
                        }
                        return;
                    }
                }
                gone.store(true, Ordering::SeqCst);
            });
        told
    }

    pub(super) fn end(&self) -> Option<ProgramEnd> {
        self.end.lock().ok().and_then(|e| e.clone())
    }

    pub(super) fn holder_gone(&self) -> bool {
        self.gone.load(Ordering::SeqCst)
    }
}

/// One capture file, read as it grows.
pub(super) struct CaptureStream {
    kind: StreamKind,
    origin: String,
    file: Option<File>,
    offset: u64,
    times: Option<TimesReader>,
    /// Chunk starts not yet passed, with their arrival times.
    clocks: VecDeque<(u64, DateTime<Utc>)>,
    /// The arrival time last sent.
    clock: Option<DateTime<Utc>>,
    buf: Vec<u8>,
}

impl CaptureStream {
    pub(super) fn new(kind: StreamKind) -> CaptureStream {
        CaptureStream {
            kind,
            origin: format!("capture:{}", kind.as_str()),
            file: None,
            offset: 0,
            times: None,
            clocks: VecDeque::new(),
            clock: None,
            buf: vec![0; READ_CHUNK],
        }
    }

    /// Opens the file (once it exists) at its stored read position.
    fn open(
        &mut self,
        capture: &CaptureDir,
        checkpoints: &HashMap<(u64, u64), StoredCheckpoint>,
        tx: &Sender<Msg>,
    ) -> std::io::Result<bool> {
        let path = capture.stream(self.kind);
        // The holder creates the data file, then its times: wait for both.
        let (Ok(mut file), Ok(times)) = (
            File::open(&path),
            TimesReader::open(&capture.times(self.kind)),
        ) else {
            return Ok(false);
        };
        let meta = file.metadata()?;
        self.offset = checkpoints
            .get(&(meta.dev(), meta.ino()))
            .map_or(0, |c| c.offset);
        file.seek(SeekFrom::Start(self.offset))?;
        self.times = Some(times);
        let _ = tx.send(Msg::FileOpen(FileMeta {
            origin: self.origin.clone(),
            path: path.display().to_string(),
            dev: meta.dev(),
            ino: meta.ino(),
            head: Vec::new(),
            generation: 0,
            offset: self.offset,
            earlier: None,
            copy_of: None,
            stream: self.kind,
            source: Some(self.kind.as_str().to_string()),
            append_only: true,
        }));
        self.file = Some(file);
        Ok(true)
    }

    /// Hands what was appended since the last call to the pipeline, each
    /// piece after the time its chunk arrived. True if there was any.
    pub(super) fn pump(
        &mut self,
        capture: &CaptureDir,
        checkpoints: &HashMap<(u64, u64), StoredCheckpoint>,
        tx: &Sender<Msg>,
    ) -> std::io::Result<bool> {
        if self.file.is_none() && !self.open(capture, checkpoints, tx)? {
            return Ok(false);
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(false);
        };
        let n = file.read(&mut self.buf)?;
        if n == 0 {
            return Ok(false);
        }
        if let Some(times) = self.times.as_mut() {
            self.clocks.extend(times.read_new()?);
        }
        let end = self.offset + n as u64;
        let mut at = self.offset;
        while at < end {
            // The chunk `at` is in: the last clock at or before it.
            while self.clocks.len() > 1 && self.clocks[1].0 <= at {
                self.clocks.pop_front();
            }
            let arrived = self.clocks.front().filter(|c| c.0 <= at).map(|c| c.1);
            let next = self.clocks.get(1).map_or(end, |c| c.0.min(end));
            let piece_end = if next > at { next } else { end };
            if let Some(arrived) = arrived.filter(|a| Some(*a) != self.clock) {
                self.clock = Some(arrived);
                let _ = tx.send(Msg::FileClock(self.origin.clone(), arrived));
            }
            let from = (at - self.offset) as usize;
            let to = (piece_end - self.offset) as usize;
            let _ = tx.send(Msg::FileData(
                self.origin.clone(),
                self.buf[from..to].to_vec(),
            ));
            at = piece_end;
        }
        self.offset = end;
        Ok(true)
    }

    pub(super) fn close(&self, tx: &Sender<Msg>) {
        if self.file.is_some() {
            let _ = tx.send(Msg::FileClosed(self.origin.clone()));
        }
    }
}
