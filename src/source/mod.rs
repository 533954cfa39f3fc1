//! Sources: where bytes come from. `wrap` runs a command and reads its
//! stdout/stderr (or one pseudo-terminal); `stdin` reads standard input.
//! Sources echo and hand bytes to the pipeline; they never parse.

mod child;
pub mod stdin;
pub mod tail;
pub mod wrap;

use crate::pipeline::Msg;
use crate::record::StreamKind;
use crossbeam_channel::Sender;
use std::fs::File;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

/// Where a reader copies what it reads, besides the pipeline.
pub struct Tee {
    /// The agent's own stdout or stderr; `None` with `--no-echo` or after it broke.
    pub echo: Option<std::mem::ManuallyDrop<File>>,
    /// The run's plain log file, shared by the streams of a run.
    pub plain_log: Option<Arc<Mutex<File>>>,
}

/// Reads `input` until end of file, copying every chunk to the echo target,
/// the plain log and the pipeline, in that order: the terminal never waits for
/// parsing or storage.
pub fn pump(mut input: impl Read, kind: StreamKind, mut tee: Tee, tx: &Sender<Msg>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // EIO is how a pseudo-terminal says the other side has closed.
            Err(_) => break,
        };
        let chunk = &buf[..n];
        if let Some(out) = tee.echo.as_mut() {
            if out.write_all(chunk).is_err() {
                tee.echo = None;
            }
        }
        if let Some(log) = &tee.plain_log {
            if let Ok(mut f) = log.lock() {
                let _ = f.write_all(chunk);
            }
        }
        if tx.send(Msg::Data(kind, chunk.to_vec())).is_err() {
            break;
        }
    }
    let _ = tx.send(Msg::Eof(kind));
}

/// The agent's stdout (1) or stderr (2) as an unbuffered file that is never closed.
pub fn raw_fd_file(fd: i32) -> std::mem::ManuallyDrop<File> {
    use std::os::fd::FromRawFd;
    // SAFETY: fds 1 and 2 stay open for the life of the process; ManuallyDrop
    // keeps us from closing them.
    std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(fd) })
}
