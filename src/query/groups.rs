//! `query errors --group`: each distinct bug once — how often, in how many
//! runs, first and last seen, and its latest message (and traceback). The
//! 4,000 `ConnectionError`s of a night are one row; the one new error is
//! another, and `--new` shows only those first seen in the latest run.

use super::db::{self, GroupRow, Store};
use super::output::{local_time, write_json_line};
use super::select::{open_store_of, Experiment};
use crate::app::App;
use crate::cli::ErrorsArgs;
use pmon_core::options::Format;
use pmon_core::text::{escape_text, first_line};
use std::collections::HashMap;
use std::io::Write;

pub fn groups(app: &App, args: &ErrorsArgs) -> anyhow::Result<()> {
    let store = match &args.experiment {
        Some(name) => Some(open_store_of(app, name)?),
        None => Store::open(app)?,
    };
    let Some(mut store) = store else {
        if args.format.format == Format::Text {
            eprintln!("no experiments yet; run pmon-agent wrap -e NAME -- CMD");
        }
        return Ok(());
    };
    db::note_spooled_records(app, &store, args.format.format);
    let mut db = store.db();
    // The latest run of each experiment in scope: what `--new` compares with.
    let latest: HashMap<String, String> = match &args.experiment {
        Some(name) => {
            let experiment = Experiment::load(&mut db, name)?;
            HashMap::from([(name.clone(), experiment.latest().run_id.clone())])
        }
        None => db
            .latest_runs()?
            .into_iter()
            .map(|run| (run.experiment_id, run.run_id))
            .collect(),
    };
    let mut rows = db.error_groups(args.experiment.as_deref())?;
    if args.new {
        rows.retain(|g| latest.get(&g.experiment_id) == Some(&g.first_run_id));
    }
    rows.truncate(args.limit.unwrap_or(usize::MAX));
    if rows.is_empty() && args.format.format == Format::Text {
        let what = if args.new {
            "new error groups"
        } else {
            "error groups"
        };
        match &args.experiment {
            Some(name) => eprintln!("no {what} in experiment '{}'", escape_text(name)),
            None => eprintln!("no {what} in any experiment"),
        }
        return Ok(());
    }
    let all = args.experiment.is_none();
    super::output::to_stdout(|out| write_groups(&rows, args, all, out))
}

fn write_groups(
    rows: &[GroupRow],
    args: &ErrorsArgs,
    all: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    if args.format.format == Format::Json {
        for row in rows {
            if args.traceback {
                write_json_line(out, row)?;
            } else {
                write_json_line(
                    out,
                    &GroupRow {
                        traceback: None,
                        ..row.clone()
                    },
                )?;
            }
        }
        return Ok(());
    }
    let experiment_width = rows
        .iter()
        .map(|g| g.experiment_id.chars().count())
        .max()
        .unwrap_or(0)
        .max(10);
    if all {
        write!(out, "{:<experiment_width$}  ", "EXPERIMENT")?;
    }
    writeln!(
        out,
        "{:>6} {:>5}  {:<19}  {:<19}  ERROR",
        "COUNT", "RUNS", "FIRST SEEN", "LAST SEEN"
    )?;
    for g in rows {
        if all {
            write!(
                out,
                "{:<experiment_width$}  ",
                escape_text(&g.experiment_id)
            )?;
        }
        writeln!(
            out,
            "{:>6} {:>5}  {:<19}  {:<19}  {}",
            g.count,
            g.runs,
            local_time(&g.first_seen, false),
            local_time(&g.last_seen, false),
            escape_text(&summary(g))
        )?;
        if let Some(traceback) = g.traceback.as_deref().filter(|_| args.traceback) {
            for line in traceback.lines() {
                writeln!(out, "    {}", escape_text(line))?;
            }
        }
    }
    Ok(())
}

/// `ValueError: loss is nan`, or `pipeline.loader: failed to load shard 17`.
fn summary(g: &GroupRow) -> String {
    let message = first_line(&g.message);
    match (&g.exception_type, &g.logger) {
        (Some(kind), _) if message.is_empty() => kind.clone(),
        (Some(kind), _) => format!("{kind}: {message}"),
        (None, Some(logger)) => format!("{logger}: {message}"),
        (None, None) => message.to_string(),
    }
}
