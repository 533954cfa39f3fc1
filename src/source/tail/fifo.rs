//! Named pipes: read until the writer goes away, then wait for the next one.
//! A pipe cannot be re-read, so its records are keyed per agent invocation.

use super::discover;
use crate::pipeline::{FileMeta, Msg};
use crossbeam_channel::Sender;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

/// One reader thread per FIFO among `paths`. With `once`, only what a writer
/// has already put in the pipe is read, and the threads are returned to join;
/// otherwise they run for the life of the agent.
pub fn start_readers(
    paths: &[PathBuf],
    tx: Sender<Msg>,
    _stop: &AtomicBool,
    once: bool,
) -> Vec<JoinHandle<()>> {
    let invocation = ulid::Ulid::new().to_string();
    let mut handles = Vec::new();
    for path in discover::fifos(paths) {
        let tx = tx.clone();
        let origin = format!("fifo:{}:{invocation}", path.display());
        let handle = std::thread::Builder::new()
            .name("pmon-fifo".into())
            .spawn(move || follow(&path, &origin, &tx, once));
        if let Ok(h) = handle {
            if once {
                handles.push(h);
            }
        }
    }
    handles
}

fn follow(path: &Path, origin: &str, tx: &Sender<Msg>, once: bool) {
    let stop = AtomicBool::new(false);
    let mut offset = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let mut options = OpenOptions::new();
        options.read(true);
        if once {
            options.custom_flags(libc::O_NONBLOCK);
        }
        // Blocks until a writer opens the pipe (unless `once`).
        let Ok(mut fifo) = options.open(path) else {
            return;
        };
        let meta = fifo.metadata().ok();
        let _ = tx.send(Msg::FileOpen(FileMeta {
            origin: origin.to_string(),
            path: path.display().to_string(),
            dev: meta.as_ref().map_or(0, |m| m.dev()),
            ino: meta.as_ref().map_or(0, |m| m.ino()),
            head: Vec::new(),
            generation: 0,
            offset,
            earlier: None,
            copy_of: None,
            stream: pmon_core::record::StreamKind::File,
            source: None,
            append_only: false,
        }));
        offset += pump(&mut fifo, origin, tx);
        let _ = tx.send(Msg::FileClosed(origin.to_string()));
        if once {
            return;
        }
    }
}

fn pump(fifo: &mut File, origin: &str, tx: &Sender<Msg>) -> u64 {
    let mut buf = vec![0u8; pmon_core::framing::CHUNK_BYTES];
    let mut total = 0;
    loop {
        match fifo.read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => {
                total += n as u64;
                if tx
                    .send(Msg::FileData(origin.to_string(), buf[..n].to_vec()))
                    .is_err()
                {
                    return total;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return total,
        }
    }
}
