//! `pmon-agent stack EXP|--daemon NAME`: where a running program is, now —
//! every thread's Python stack, of the program and its Python children,
//! read by `py-spy dump` without stopping it. For a program that looks
//! stuck (see the stall detector), this is the first thing to ask.

use crate::app::App;
use crate::cli::StackArgs;
use crate::daemon::{DaemonDir, DaemonState};
use anyhow::{bail, Context};
use pmon_core::options::Format;
use pmon_core::procinfo::pyspy;
use pmon_core::text::escape_text;
use serde_json::{json, Value};
use std::io::Write;

pub fn run(app: &App, args: &StackArgs) -> anyhow::Result<i32> {
    let (pid, what) = match (&args.daemon, &args.experiment) {
        (Some(name), _) => (daemon_pid(app, name)?, format!("daemon {name}")),
        (None, Some(experiment)) => (
            experiment_pid(app, experiment)?,
            format!("experiment {experiment}"),
        ),
        (None, None) => bail!("name an experiment, or a daemon with --daemon NAME"),
    };
    let mut pids = pyspy::python_processes(pid);
    if pids.is_empty() {
        // Not Python by its executable (an embedded interpreter?): py-spy says.
        pids.push(pid);
    }
    let mut out = std::io::stdout().lock();
    for pid in pids {
        let dump = pyspy::dump(pid, args.format.format == Format::Json)
            .with_context(|| format!("could not read the stacks of {what} (pid {pid})"))?;
        match args.format.format {
            Format::Text => {
                for line in dump.lines() {
                    writeln!(out, "{}", escape_text(line))?;
                }
            }
            Format::Json => write_threads(&mut out, &dump)?,
        }
    }
    Ok(0)
}

/// py-spy's JSON (an array of threads), as JSON Lines: one thread a line,
/// frames innermost first as `{function, file, line}`.
fn write_threads(out: &mut dyn Write, dump: &str) -> anyhow::Result<()> {
    let threads: Vec<Value> =
        serde_json::from_str(dump).context("py-spy's JSON output could not be read")?;
    for t in threads {
        let frames: Vec<Value> = t["frames"]
            .as_array()
            .map(|frames| {
                frames
                    .iter()
                    .map(|f| json!({"function": f["name"], "file": f["filename"], "line": f["line"]}))
                    .collect()
            })
            .unwrap_or_default();
        let line = json!({
            "pid": t["pid"], "thread_id": t["thread_id"], "os_thread_id": t["os_thread_id"],
            "thread_name": thread_name(&t), "active": t["active"], "owns_gil": t["owns_gil"],
            "frames": frames,
        });
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// The thread's Python name; when py-spy could not read it (it reads
/// `threading`'s table, which a busy program may be changing), the thread
/// by its native id, as `ps -L` and `top -H` show it, so no thread goes
/// nameless.
fn thread_name(thread: &Value) -> Value {
    match (
        &thread["thread_name"],
        &thread["os_thread_id"],
        &thread["thread_id"],
    ) {
        (Value::String(name), _, _) => Value::String(name.clone()),
        (_, Value::Number(id), _) | (_, Value::Null, Value::Number(id)) => {
            Value::String(format!("thread {id}"))
        }
        _ => Value::Null,
    }
}

fn daemon_pid(app: &App, name: &str) -> anyhow::Result<u32> {
    let dir = DaemonDir::new(&app.data_dir);
    let state = dir
        .read(name)
        .map(DaemonState::with_liveness)
        .with_context(|| format!("no daemon named '{name}'; pmon-agent daemon list shows them"))?;
    match (state.state.is_live(), state.pid) {
        (true, Some(pid)) => Ok(pid),
        _ => bail!(
            "daemon '{name}' has no running program (it is {}); pmon-agent stack reads a program while it runs",
            state.state.as_str()
        ),
    }
}

fn experiment_pid(app: &App, name: &str) -> anyhow::Result<u32> {
    let mut store = crate::query::db::Store::open(app)?
        .with_context(|| format!("no experiment named '{name}'; nothing has been recorded yet"))?;
    let runs = store.db().runs_of(name)?;
    let Some(run) = runs.last() else {
        bail!("no experiment named '{name}'; pmon-agent query list shows them");
    };
    let host = pmon_core::procinfo::hostname();
    if !run.state.is_live() {
        bail!(
            "experiment '{name}' has no running program: its latest run, run {}, is {}; pmon-agent stack reads a program while it runs",
            run.ordinal,
            run.state.as_str()
        );
    }
    if run.host != host {
        bail!(
            "the running program of experiment '{name}' runs on {}, not here ({host}); run pmon-agent stack there",
            run.host
        );
    }
    run.child_pid.with_context(|| {
        format!(
            "the run of experiment '{name}' has not started its program yet; try again in a moment"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_py_spy_could_not_name_is_named_by_its_id() {
        let named = json!({"thread_name": "MainThread", "os_thread_id": 41, "thread_id": 7});
        assert_eq!(thread_name(&named), json!("MainThread"));
        let unnamed = json!({"thread_name": null, "os_thread_id": 41, "thread_id": 7});
        assert_eq!(thread_name(&unnamed), json!("thread 41"));
        let no_native = json!({"thread_id": 140012});
        assert_eq!(thread_name(&no_native), json!("thread 140012"));
    }
}
