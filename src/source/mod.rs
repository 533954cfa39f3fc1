//! Sources: where bytes come from. `wrap` runs a command and reads its
//! stdout/stderr (or one pseudo-terminal); `stdin` reads standard input.
//! Sources echo and hand bytes to the pipeline; they never parse.

mod child;
pub mod stdin;
pub mod tail;
pub mod wrap;

use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use pmon_core::framing::CHUNK_BYTES;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where a reader copies what it reads, besides the pipeline.
pub struct Tee {
    /// The agent's own stdout or stderr; `None` with `--no-echo` or after it broke.
    pub echo: Option<std::mem::ManuallyDrop<File>>,
    /// The run's plain log file, shared by the streams of a run.
    pub plain_log: Option<Arc<Mutex<File>>>,
}

/// Reads `input` until end of file, copying every chunk to the echo target,
/// the plain log and `deliver` (the pipeline, or the holder's capture
/// files), in that order: the terminal never waits for parsing or storage. With `exit`, the reader also stops once the program has
/// exited and the pipe has been quiet for [`ProgramExit::QUIET`] (a background
/// process may hold it open forever); time spent handing chunks to a slow
/// pipeline never counts, so what the program wrote before it exited is
/// always read to the end.
/// `deliver` returning false (nobody takes more) ends the reading.
pub fn pump<R: Read + AsFd>(
    mut input: R,
    mut tee: Tee,
    deliver: &mut dyn FnMut(&[u8]) -> bool,
    exit: Option<&ProgramExit>,
) {
    let mut buf = vec![0u8; CHUNK_BYTES];
    loop {
        if exit.is_some_and(|exit| !exit.wait_for_input(&input)) {
            break;
        }
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
        if !deliver(chunk) {
            break;
        }
    }
}

/// Tells the readers of a program's output that the program has exited.
///
/// A pipe reaches end of file when every process holding its write end has
/// closed it, and a background process the program started may hold it for
/// ever. So once the program has exited, a reader stops at end of file *or*
/// when the pipe has been quiet for [`ProgramExit::QUIET`]. Readers wait in
/// `poll` on their input and on this self-pipe, which becomes readable (and
/// stays so) when [`ProgramExit::exited`] is called.
pub struct ProgramExit {
    read: OwnedFd,
    write: OwnedFd,
}

impl ProgramExit {
    /// How long a pipe may stay quiet after the program exited before its
    /// reader stops.
    pub const QUIET: Duration = Duration::from_secs(2);

    pub fn new() -> std::io::Result<ProgramExit> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        Ok(ProgramExit { read, write })
    }

    /// The program has exited: readers drain what is left, then stop.
    pub fn exited(&self) {
        let _ = nix::unistd::write(&self.write, b"x");
    }

    /// Waits until `input` has something to read (or has reached its end).
    /// False when the program has exited and `input` stayed quiet for `QUIET`.
    fn wait_for_input(&self, input: &impl AsFd) -> bool {
        let mut fds = [
            PollFd::new(input.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.read.as_fd(), PollFlags::POLLIN),
        ];
        loop {
            match poll(&mut fds, PollTimeout::NONE) {
                Err(nix::errno::Errno::EINTR) => continue,
                // A poll that fails says nothing: let read() decide.
                Err(_) => return true,
                Ok(_) => break,
            }
        }
        if fds[0].revents().is_some_and(|r| !r.is_empty()) {
            return true;
        }
        // The program has exited and the pipe is quiet: give a background
        // process that still holds it a moment to finish.
        let quiet =
            PollTimeout::try_from(Self::QUIET.as_millis() as i32).unwrap_or(PollTimeout::NONE);
        let mut input_only = [PollFd::new(input.as_fd(), PollFlags::POLLIN)];
        loop {
            match poll(&mut input_only, quiet) {
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return true,
                Ok(n) => return n > 0,
            }
        }
    }
}

/// The agent's stdout (1) or stderr (2) as an unbuffered file that is never closed.
pub fn raw_fd_file(fd: i32) -> std::mem::ManuallyDrop<File> {
    use std::os::fd::FromRawFd;
    // SAFETY: fds 1 and 2 stay open for the life of the process; ManuallyDrop
    // keeps us from closing them.
    std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(fd) })
}
