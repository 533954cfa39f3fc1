//! The holder in a fresh process of its own.
//!
//! A process's resident memory is every page it has ever touched, and the
//! kernel maps code in 64 KiB blocks around each page touched: in the
//! 12 MB `pmon-agent`, parsing the command line alone (clap) takes a
//! process from 3.2 to 4.7 MiB, and reading the configuration adds 2 MiB
//! more. A holder that did either would keep those pages for the whole run.
//!
//! So the holder is `pmon-agent-holder`, an executable built from the same
//! library that holds nothing but the holder's code — and parsing `wrap`'s
//! command line, which in a small executable is cheap. `pmon-agent wrap …`
//! executes it at once, before parsing anything ([`hand_wrap_to_holder`]):
//! same pid, same arguments, so the shell, `ps` and job control see no
//! change. The holder never reads the configuration (the first shipper does,
//! and refuses the run if it is wrong). When it cannot make sense of the
//! command line (`--help`, a mistake) it hands it back to `pmon-agent`
//! ([`back_to_agent`]), which says what every command says. Measured on the
//! 1M-line workload: 7.1 MiB holding the run inside `pmon-agent`, 5.7 MiB
//! re-executing `pmon-agent`, figures with `pmon-agent-holder` in the
//! docs/PERFORMANCE.md. Without `pmon-agent-holder` beside it,
//! `pmon-agent` parses `wrap` itself and re-executes itself as the holder
//! with the run's plan in `PMON_HOLDER_PLAN` ([`exec_as_holder`]).
//!
//! The daemon supervisor starts one holder process per run
//! ([`run_in_own_process`]), with the plan, and reads how the run went from
//! its stdout, so a supervisor that dies leaves the program and its holder
//! running.

use super::{ChildSpec, HolderEnv, Ran};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// The environment variable that carries a holder's plan to its new image.
const PLAN_VAR: &str = "PMON_HOLDER_PLAN";

#[derive(Serialize, Deserialize)]
struct Plan {
    env: HolderEnv,
    spec: ChildSpec,
    /// Say on stdout when the program started and how the run ended (for
    /// the daemon supervisor).
    report: bool,
}

/// What a reporting holder prints on its stdout, one JSON object a line.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Report {
    Spawned { pid: u32, run_id: Option<String> },
    Ran(Ran),
    Failed { error: String },
}

/// Replaces this process with a fresh holder for the run (same pid, same
/// arguments). Returns only if that could not be done; the caller then
/// holds the run in this process.
pub fn exec_as_holder(env: &HolderEnv, spec: &ChildSpec) -> std::io::Error {
    let plan = Plan {
        env: env.clone(),
        spec: spec.clone(),
        report: false,
    };
    let (exe, json) = match prepare(&plan) {
        Ok(prepared) => prepared,
        Err(e) => return e,
    };
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| "pmon-agent".into());
    Command::new(exe)
        .arg0(arg0)
        .args(args)
        .env(PLAN_VAR, json)
        .exec()
}

fn prepare(plan: &Plan) -> std::io::Result<(std::path::PathBuf, String)> {
    let json = serde_json::to_string(plan).map_err(std::io::Error::other)?;
    Ok((holder_exe()?, json))
}

/// `pmon-agent-holder` beside this executable, or this executable itself
/// (a copy of `pmon-agent` alone still works, its holder only larger).
fn holder_exe() -> std::io::Result<std::path::PathBuf> {
    let me = std::env::current_exe()?;
    let beside = me.with_file_name(HOLDER_EXE);
    Ok(if beside.is_file() { beside } else { me })
}

/// The holder's own executable: it holds only the holder's code.
const HOLDER_EXE: &str = "pmon-agent-holder";

/// Set on `pmon-agent` when the holder hands a command line back to it.
const HANDED_BACK_VAR: &str = "PMON_WRAP_HANDED_BACK";

/// `pmon-agent` itself (from `pmon-agent-holder`: the one beside it), which
/// shippers run.
pub fn agent_exe() -> std::path::PathBuf {
    match std::env::current_exe() {
        Ok(me) if me.file_name().is_some_and(|n| n == HOLDER_EXE) => {
            me.with_file_name("pmon-agent")
        }
        Ok(me) => me,
        Err(_) => "pmon-agent".into(),
    }
}

/// `pmon-agent wrap …`: becomes `pmon-agent-holder` at once, before parsing
/// anything. Returns (and `pmon-agent` goes on) if the command is not
/// `wrap`, if there is no `pmon-agent-holder` beside it, or if the holder
/// handed the command line back.
pub fn hand_wrap_to_holder() {
    if std::env::var_os(HANDED_BACK_VAR).is_some() {
        // Not passed on to the program, nor to a `pmon-agent wrap` in it.
        std::env::remove_var(HANDED_BACK_VAR);
        return;
    }
    if !is_wrap(std::env::args_os().skip(1)) {
        return;
    }
    let Ok(me) = std::env::current_exe() else {
        return;
    };
    let holder = me.with_file_name(HOLDER_EXE);
    if holder.is_file() {
        let mut args = std::env::args_os();
        let arg0 = args.next().unwrap_or_else(|| "pmon-agent".into());
        let _ = Command::new(holder).arg0(arg0).args(args).exec();
    }
}

/// Whether the subcommand is `wrap`: the first argument that is not a
/// global option (nor the value of one).
fn is_wrap(mut args: impl Iterator<Item = std::ffi::OsString>) -> bool {
    while let Some(arg) = args.next() {
        let arg = arg.to_string_lossy();
        match arg.as_ref() {
            "--config" | "--data-dir" | "--database-url" => {
                args.next();
            }
            "--quiet-config" => {}
            a if ["--config=", "--data-dir=", "--database-url="]
                .iter()
                .any(|o| a.starts_with(o)) => {}
            a => return a == "wrap",
        }
    }
    false
}

/// `pmon-agent-holder` could not parse its command line: `pmon-agent`
/// parses it again and says what is wrong (or shows the help). Returns
/// only if that could not be done.
pub fn back_to_agent() -> std::io::Error {
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| "pmon-agent".into());
    Command::new(agent_exe())
        .arg0(arg0)
        .args(args)
        .env(HANDED_BACK_VAR, "1")
        .exec()
}

/// If this process was started as a holder, runs the run and returns the
/// exit code to end with; `None` for every other process.
pub fn run_if_held() -> Option<anyhow::Result<i32>> {
    let text = std::env::var_os(PLAN_VAR)?;
    // Not passed on to the program (or to the shipper).
    std::env::remove_var(PLAN_VAR);
    // Before any thread starts, as for every command that runs a program.
    crate::source::wrap::block_signals();
    Some(hold(std::os::unix::ffi::OsStrExt::as_bytes(
        text.as_os_str(),
    )))
}

fn hold(text: &[u8]) -> anyhow::Result<i32> {
    let plan: Plan = serde_json::from_slice(text).with_context(|| {
        format!("{PLAN_VAR} does not hold a plan this pmon-agent understands; it is set by pmon-agent for its own processes: unset it and run the command again")
    })?;
    if plan.report {
        report(&plan);
        return Ok(0);
    }
    let ran = super::run(&plan.env, &plan.spec, |_, _| {})?;
    Ok(exit_code(&ran))
}

/// `wrap`'s exit code for a run (the program's), after saying what the
/// user must know first.
pub fn exit_code(ran: &Ran) -> i32 {
    if let Some(oom) = &ran.result.oom {
        eprintln!("pmon-agent: the program was {oom}");
    }
    ran.outcome.agent_exit_code()
}

fn report(plan: &Plan) {
    let say = |report: &Report| {
        let mut out = std::io::stdout().lock();
        let _ = serde_json::to_writer(&mut out, report);
        let _ = writeln!(out).and_then(|()| out.flush());
    };
    let result = super::run(&plan.env, &plan.spec, |pid, run_id| {
        say(&Report::Spawned {
            pid,
            run_id: run_id.map(str::to_string),
        })
    });
    match result {
        Ok(ran) => say(&Report::Ran(ran)),
        Err(e) => say(&Report::Failed {
            error: format!("{e:#}"),
        }),
    }
}

/// Runs the command once under a holder process of its own and waits for
/// it; `holder` is kept set to that process's pid while it runs (0 after),
/// so signals can be passed on to it ([`forward_signals`]).
pub fn run_in_own_process(
    env: &HolderEnv,
    spec: &ChildSpec,
    holder: &AtomicU32,
    on_spawn: impl FnOnce(u32, Option<&str>),
) -> anyhow::Result<Ran> {
    let plan = Plan {
        env: env.clone(),
        spec: spec.clone(),
        report: true,
    };
    let (exe, json) = prepare(&plan).context("could not prepare the run's holder process")?;
    let mut child = Command::new(exe)
        .arg0("pmon-agent")
        .arg("hold")
        .arg("--")
        .args(&spec.command)
        .env(PLAN_VAR, json)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("could not start the run's holder process")?;
    holder.store(child.id(), Ordering::SeqCst);
    let mut on_spawn = Some(on_spawn);
    let mut ended = None;
    if let Some(stdout) = child.stdout.take() {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str::<Report>(&line) {
                Ok(Report::Spawned { pid, run_id }) => {
                    if let Some(f) = on_spawn.take() {
                        f(pid, run_id.as_deref());
                    }
                }
                Ok(Report::Ran(ran)) => ended = Some(Ok(ran)),
                Ok(Report::Failed { error }) => ended = Some(Err(anyhow::anyhow!(error))),
                Err(_) => {}
            }
        }
    }
    let status = child.wait();
    holder.store(0, Ordering::SeqCst);
    ended.unwrap_or_else(|| {
        let how = status.map_or_else(|e| e.to_string(), |s| s.to_string());
        Err(anyhow::anyhow!(
            "the run's holder process (pid {}) ended before saying how the program ended ({how}); the program may still be running",
            child.id()
        ))
    })
}

/// Passes the signals `wrap` forwards (and SIGUSR1) on to the live holder
/// in `holder`, from a thread of their own; with no holder they are
/// dropped. The signals must already be blocked in every thread.
pub fn forward_signals(holder: Arc<AtomicU32>) {
    let set = crate::source::wrap::handled_signals();
    let _ = std::thread::Builder::new()
        .name("pmon-signals".into())
        .spawn(move || loop {
            let Ok(signal) = set.wait() else { continue };
            let pid = holder.load(Ordering::SeqCst);
            if pid != 0 && signal != nix::sys::signal::Signal::SIGTTOU {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
            }
        });
}

#[cfg(test)]
mod tests {
    use super::is_wrap;

    fn wrap(args: &str) -> bool {
        is_wrap(args.split(' ').filter(|a| !a.is_empty()).map(Into::into))
    }

    #[test]
    fn the_subcommand_is_found_past_global_options_and_their_values() {
        assert!(wrap("wrap -- true"));
        assert!(wrap("--data-dir wrap wrap -- true"));
        assert!(wrap("--config=c.yml --quiet-config wrap -e x -- true"));
        assert!(!wrap("--config wrap query list"));
        assert!(!wrap("query logs wrap"));
        assert!(!wrap("--help wrap"));
        assert!(!wrap("-e x wrap"));
        assert!(!wrap(""));
    }
}
