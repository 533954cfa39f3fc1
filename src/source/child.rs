//! Starting the wrapped command: in its own process group with stdout and
//! stderr on pipes, or on a pseudo-terminal with `--pty`.
//!
//! When the agent runs in the foreground of a terminal, the child's process
//! group is made the terminal's foreground group (as a shell does), so that a
//! child reading the terminal is not stopped by SIGTTIN and Ctrl-C reaches it.

use nix::pty::{openpty, Winsize};
use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow, Signal};
use nix::unistd::{getpgrp, isatty, setsid, tcgetpgrp, tcsetpgrp, Pid};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

/// The started child and the readable ends of its output.
pub struct Spawned {
    pub child: Child,
    /// stdout pipe, or the pty master (everything the program writes).
    pub stdout: File,
    /// stderr pipe; `None` on a pty, where both streams are one.
    pub stderr: Option<File>,
    /// pty master for forwarding our stdin, with `--pty`.
    pub pty_master: Option<File>,
    /// The terminal's foreground group before, to give the terminal back.
    pub foreground_before: Option<Pid>,
}

/// `faulthandler`: a Python program that dies of a signal in C code (a
/// segfault in an extension, `abort()`) prints every thread's stack, which
/// the parser turns into one CRITICAL record; a user's own setting wins.
pub fn spawn(argv: &[String], pty: bool, faulthandler: bool) -> io::Result<Spawned> {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    if std::env::var_os("PYTHONUNBUFFERED").is_none() {
        cmd.env("PYTHONUNBUFFERED", "1");
    }
    if faulthandler && std::env::var_os("PYTHONFAULTHANDLER").is_none() {
        cmd.env("PYTHONFAULTHANDLER", "1");
    }
    // The agent blocks the signals it handles and ignores SIGPIPE; the program
    // must start with the defaults, as it would from a shell.
    // SAFETY: sigprocmask and signal are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
            for sig in [Signal::SIGPIPE, Signal::SIGXFSZ] {
                let _ = nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigDfl);
            }
            Ok(())
        });
    }
    if pty {
        spawn_pty(cmd)
    } else {
        spawn_pipes(cmd)
    }
}

fn spawn_pipes(mut cmd: Command) -> io::Result<Spawned> {
    let take_terminal = we_own_the_terminal();
    cmd.stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if take_terminal {
        // SAFETY: only async-signal-safe calls (sigprocmask, tcsetpgrp) run
        // between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                let mut ttou = SigSet::empty();
                ttou.add(Signal::SIGTTOU);
                let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&ttou), None);
                let _ = tcsetpgrp(io::stdin().as_fd(), getpgrp());
                let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&ttou), None);
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn()?;
    let mut foreground_before = None;
    if take_terminal {
        foreground_before = Some(getpgrp());
        let _ = tcsetpgrp(io::stdin().as_fd(), Pid::from_raw(child.id() as i32));
    }
    let stdout = File::from(OwnedFd::from(child.stdout.take().expect("piped stdout")));
    let stderr = File::from(OwnedFd::from(child.stderr.take().expect("piped stderr")));
    Ok(Spawned {
        child,
        stdout,
        stderr: Some(stderr),
        pty_master: None,
        foreground_before,
    })
}

fn spawn_pty(mut cmd: Command) -> io::Result<Spawned> {
    // Off a terminal (a script, CI), a pty of 0x0 would make programs that
    // size their output to it (tqdm) print nothing: give it the classic 80x24.
    let size = window_size().unwrap_or(Winsize {
        ws_row: 24,
        ws_col: 80,
        ws_xpixel: 0,
        ws_ypixel: 0,
    });
    let pty = openpty(Some(&size), None).map_err(io::Error::from)?;
    let slave = File::from(pty.slave);
    cmd.stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave));
    // SAFETY: setsid and ioctl are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            setsid().map_err(io::Error::from)?;
            if libc::ioctl(0, libc::TIOCSCTTY as _, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    // Our copies of the slave are dropped with `cmd`, so the master sees EOF
    // (EIO) once the child and its descendants close it.
    drop(cmd);
    let master = File::from(pty.master);
    Ok(Spawned {
        child,
        stdout: master.try_clone()?,
        stderr: None,
        pty_master: Some(master),
        foreground_before: None,
    })
}

/// True if stdin is a terminal whose foreground process group is ours.
fn we_own_the_terminal() -> bool {
    let stdin = io::stdin();
    isatty(stdin.as_fd()).unwrap_or(false)
        && tcgetpgrp(stdin.as_fd()).is_ok_and(|fg| fg == getpgrp())
}

/// Gives the terminal back to the agent's process group.
pub fn restore_terminal(foreground_before: Option<Pid>) {
    if let Some(pgrp) = foreground_before {
        let mut ttou = SigSet::empty();
        ttou.add(Signal::SIGTTOU);
        let mut old = SigSet::empty();
        let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&ttou), Some(&mut old));
        let _ = tcsetpgrp(io::stdin().as_fd(), pgrp);
        let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    }
}

fn window_size() -> Option<Winsize> {
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes a winsize into the pointer we pass.
    let ok = unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_row > 0).then_some(Winsize {
        ws_row: ws.ws_row,
        ws_col: ws.ws_col,
        ws_xpixel: ws.ws_xpixel,
        ws_ypixel: ws.ws_ypixel,
    })
}
