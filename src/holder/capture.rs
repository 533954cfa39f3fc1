//! The files through which the holder hands a run's output to its shipper.
//!
//! `capture/<run id>/` in the data dir holds, per stream, the bytes exactly
//! as the program wrote them (`stdout`, `stderr`) and when each chunk arrived
//! (`stdout.times`: 16-byte entries, the chunk's offset and its arrival time
//! in microseconds, little-endian, written before the chunk); `events.jsonl`,
//! the events only the holder sees (start, signals, a shipper restart); and
//! `end.json`, written last, how the program ended.
//!
//! Why files and not a pipe: a file outlives the process reading it. A
//! shipper that dies (SIGKILL, OOM) loses nothing the program wrote, and its
//! successor starts where the last one's delivered records end — the read
//! position is a checkpoint stored with the records, exactly as `tail` does
//! for any other file, so the same code keeps it exactly once. Writing a
//! file never blocks the program the way a full pipe to a stuck reader
//! would.

use chrono::{DateTime, Utc};
use pmon_core::record::{Event, StreamKind};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A run's capture directory.
#[derive(Debug, Clone)]
pub struct CaptureDir {
    dir: PathBuf,
}

/// How the program ended, as the holder saw it (`end.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgramEnd {
    pub pid: u32,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// The last signal the holder forwarded to the program, if any.
    pub forwarded: Option<i32>,
    /// Why the program could not be started.
    #[serde(default)]
    pub error: Option<String>,
}

impl CaptureDir {
    pub fn new(data_dir: &Path, run_id: &str) -> CaptureDir {
        CaptureDir {
            dir: data_dir.join("capture").join(run_id),
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn stream(&self, kind: StreamKind) -> PathBuf {
        self.dir.join(kind.as_str())
    }

    pub fn times(&self, kind: StreamKind) -> PathBuf {
        self.dir.join(format!("{}.times", kind.as_str()))
    }

    pub fn events(&self) -> PathBuf {
        self.dir.join("events.jsonl")
    }

    pub fn end(&self) -> PathBuf {
        self.dir.join("end.json")
    }

    /// What the shipper tells the holder about the run when it is done.
    pub fn result(&self) -> PathBuf {
        self.dir.join("result.json")
    }

    pub fn create(&self) -> io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
    }

    /// Marks the program's end; written after everything it printed.
    pub fn write_end(&self, end: &ProgramEnd) -> io::Result<()> {
        let tmp = self.dir.join(".end.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(end).unwrap_or_default())?;
        std::fs::rename(tmp, self.end())
    }

    pub fn read_end(&self) -> Option<ProgramEnd> {
        serde_json::from_slice(&std::fs::read(self.end()).ok()?).ok()
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// Appends one stream's chunks and their arrival times.
pub struct StreamWriter {
    data: File,
    times: File,
    offset: u64,
    /// A write failed part-way (a full disk): the line it was in is torn.
    torn: bool,
}

impl StreamWriter {
    /// Opens (or continues, for a resumed run) the stream's capture.
    pub fn open(capture: &CaptureDir, kind: StreamKind) -> io::Result<StreamWriter> {
        let data = open_append(&capture.stream(kind))?;
        let times = open_append(&capture.times(kind))?;
        let offset = data.metadata()?.len();
        Ok(StreamWriter {
            data,
            times,
            offset,
            torn: false,
        })
    }

    /// The time first, so a reader that sees the bytes also sees when they
    /// came. A short write (a full disk) loses the rest of the chunk, never
    /// the program's output on the terminal or its pace.
    pub fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        if self.torn {
            // The line a failed write cut is ended here, so that it stays
            // one (damaged) record and the program's next line is whole.
            self.data.write_all(b"\n")?;
            self.offset += 1;
            self.torn = false;
        }
        let mut entry = [0u8; 16];
        entry[..8].copy_from_slice(&self.offset.to_le_bytes());
        entry[8..].copy_from_slice(&Utc::now().timestamp_micros().to_le_bytes());
        let written = self
            .times
            .write_all(&entry)
            .and_then(|()| self.data.write_all(chunk));
        // After a short write the file, not the count, says where it ends.
        self.offset = match written {
            Ok(()) => self.offset + chunk.len() as u64,
            Err(_) => {
                self.torn = true;
                self.data.metadata().map_or(self.offset, |m| m.len())
            }
        };
        written
    }
}

/// Appends events as JSON lines.
pub struct EventWriter {
    file: File,
}

impl EventWriter {
    pub fn open(capture: &CaptureDir) -> io::Result<EventWriter> {
        Ok(EventWriter {
            file: open_append(&capture.events())?,
        })
    }

    pub fn write(&mut self, event: &Event) -> io::Result<()> {
        let mut line = serde_json::to_vec(event).unwrap_or_default();
        line.push(b'\n');
        self.file.write_all(&line)
    }
}

/// Reads a stream's arrival times as they are appended.
pub struct TimesReader {
    file: File,
    pending: Vec<u8>,
}

impl TimesReader {
    pub fn open(path: &Path) -> io::Result<TimesReader> {
        Ok(TimesReader {
            file: File::open(path)?,
            pending: Vec::new(),
        })
    }

    /// The entries appended since the last call: (chunk offset, arrival).
    pub fn read_new(&mut self) -> io::Result<Vec<(u64, DateTime<Utc>)>> {
        self.file.read_to_end(&mut self.pending)?;
        let whole = self.pending.len() / 16 * 16;
        let entries = self.pending[..whole]
            .chunks_exact(16)
            .map(|e| {
                let offset = u64::from_le_bytes(e[..8].try_into().unwrap_or_default());
                let micros = i64::from_le_bytes(e[8..].try_into().unwrap_or_default());
                (
                    offset,
                    DateTime::from_timestamp_micros(micros).unwrap_or_default(),
                )
            })
            .collect();
        self.pending.drain(..whole);
        Ok(entries)
    }
}

/// Reads the events file from the start, and then as it grows.
pub struct EventsReader {
    file: File,
    pending: Vec<u8>,
}

impl EventsReader {
    pub fn open(path: &Path) -> io::Result<EventsReader> {
        let mut file = File::open(path)?;
        file.seek(SeekFrom::Start(0))?;
        Ok(EventsReader {
            file,
            pending: Vec::new(),
        })
    }

    /// Whole lines appended since the last call; a line that is not an event
    /// (torn by a crash) is skipped.
    pub fn read_new(&mut self) -> io::Result<Vec<Event>> {
        self.file.read_to_end(&mut self.pending)?;
        let Some(last) = self.pending.iter().rposition(|b| *b == b'\n') else {
            return Ok(Vec::new());
        };
        let events = self.pending[..last]
            .split(|b| *b == b'\n')
            .filter_map(|line| serde_json::from_slice(line).ok())
            .collect();
        self.pending.drain(..=last);
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_times_and_events_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let capture = CaptureDir::new(dir.path(), "R1");
        capture.create().unwrap();
        let mut out = StreamWriter::open(&capture, StreamKind::Stdout).unwrap();
        out.write(b"hello\n").unwrap();
        out.write(b"world\n").unwrap();
        let mut times = TimesReader::open(&capture.times(StreamKind::Stdout)).unwrap();
        let entries = times.read_new().unwrap();
        assert_eq!(entries.iter().map(|e| e.0).collect::<Vec<_>>(), [0, 6]);
        // A resumed run continues the stream where it ended.
        let mut again = StreamWriter::open(&capture, StreamKind::Stdout).unwrap();
        again.write(b"!\n").unwrap();
        assert_eq!(times.read_new().unwrap()[0].0, 12);
        assert_eq!(
            std::fs::read(capture.stream(StreamKind::Stdout)).unwrap(),
            b"hello\nworld\n!\n"
        );

        let mut events = EventWriter::open(&capture).unwrap();
        events
            .write(&Event::now("start", serde_json::json!({"pid": 7})))
            .unwrap();
        let mut reader = EventsReader::open(&capture.events()).unwrap();
        let read = reader.read_new().unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].details["pid"], 7);
        assert!(reader.read_new().unwrap().is_empty());

        assert_eq!(capture.read_end(), None);
        let end = ProgramEnd {
            pid: 7,
            exit_code: Some(3),
            signal: None,
            forwarded: None,
            error: None,
        };
        capture.write_end(&end).unwrap();
        assert_eq!(capture.read_end(), Some(end));
    }
}
