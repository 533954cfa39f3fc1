//! `pmon-agent spool status|replay`, `pmon-agent db migrate` and `db prune`.

use crate::app::App;
use crate::cli::{DbCommand, Format, SpoolCommand};
use crate::sink::postgres::PostgresStore;
use crate::sink::retention::{self, PruneReport};
use crate::sink::spool::{RetryBackoff, Spool, SpoolStats, SpoolingSink};
use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub fn spool(app: &App, cmd: SpoolCommand) -> anyhow::Result<i32> {
    match cmd {
        SpoolCommand::Status { format } => {
            let stats = match app.existing_store()? {
                Some(store) => Spool::new(store).stats()?,
                None => SpoolStats::default(),
            };
            match format.format {
                Format::Json => println!(
                    "{}",
                    serde_json::json!({"pending": stats.pending, "oldest": stats.oldest, "bytes": stats.bytes})
                ),
                Format::Text => println!(
                    "{} records waiting in {} batches ({} bytes){}",
                    stats.pending,
                    stats.batches,
                    stats.bytes,
                    stats
                        .oldest
                        .map(|o| format!(", oldest spooled {o}"))
                        .unwrap_or_default()
                ),
            }
            Ok(0)
        }
        SpoolCommand::Replay => replay(app),
    }
}

fn replay(app: &App) -> anyhow::Result<i32> {
    let url = database_url(app)?;
    let Some(store) = app.existing_store()? else {
        println!(
            "nothing to replay: there is no spool in {}",
            app.data_dir.root().display()
        );
        return Ok(0);
    };
    let pg = PostgresStore::new(url)?;
    let mut sink = SpoolingSink::new(
        pg,
        Spool::new(store),
        app.config.logging.database.spool_max_bytes,
        RetryBackoff::default(),
        app.data_dir.db_path().display().to_string(),
    );
    // Drawn on a terminal only (indicatif hides it otherwise), on stderr.
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "replaying [{bar:25}] {human_pos}/{human_len} records ({percent}%), {eta} left",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let shipped = sink.replay_all(|done, total| {
        bar.set_length(total.max(done));
        bar.set_position(done);
    });
    // The finished bar stays on screen; a failed or empty replay leaves none.
    match &shipped {
        Ok(_) if bar.length().is_some() => bar.finish(),
        _ => bar.finish_and_clear(),
    }
    let shipped = shipped.context("the spool was not replayed; records stay in the spool until the database answers (run `pmon-agent spool replay` again)")?;
    println!("replayed {shipped} records");
    Ok(0)
}

pub fn db(app: &App, cmd: DbCommand) -> anyhow::Result<i32> {
    match cmd {
        DbCommand::Migrate => {
            let url = database_url(app)?;
            let mut pg = PostgresStore::new(url)?;
            let applied = pg.connect()?;
            println!(
                "{}: {applied} migrations applied; the schema is up to date",
                pg.display_url()
            );
            Ok(0)
        }
        DbCommand::Prune {
            older_than,
            dry_run,
            format,
        } => {
            let age = match (&older_than, app.config.logging.database.retention) {
                (Some(text), _) => crate::config::parse_duration(text).map_err(anyhow::Error::msg)?,
                (None, Some(age)) => age,
                (None, None) => anyhow::bail!(
                    "say how old: pmon-agent db prune --older-than 30d (or set logging.database.retention in config.yml)"
                ),
            };
            let report = prune(app, age, dry_run)?;
            match format.format {
                Format::Json => println!("{}", serde_json::to_string(&report)?),
                Format::Text => println!("{}", prune_text(&report, age)),
            }
            Ok(0)
        }
        DbCommand::Distribute { format } => {
            let mut pg = PostgresStore::new(database_url(app)?)?;
            let report = pg.distribute()?;
            match format.format {
                Format::Json => println!("{}", serde_json::to_string(&report)?),
                Format::Text => println!("{}", distribute_text(&report, pg.display_url())),
            }
            Ok(0)
        }
    }
}

fn distribute_text(r: &crate::sink::postgres::DistributeReport, url: &str) -> String {
    let list = |t: &[String]| {
        if t.is_empty() {
            "none".to_string()
        } else {
            t.join(", ")
        }
    };
    format!(
        "{url}: Citus {} with {} workers; distributed by experiment_id now: {}; already: {}; day partitions made for the next week",
        r.citus_version,
        r.workers,
        list(&r.distributed),
        list(&r.already)
    )
}

/// Prunes the store in effect (PostgreSQL when configured, else the
/// embedded one) of what is older than `age`.
pub fn prune(app: &App, age: std::time::Duration, dry_run: bool) -> anyhow::Result<PruneReport> {
    let url = app.config.logging.database.url.as_deref();
    retention::prune_store(url, &app.data_dir.db_path(), age, dry_run)
}

fn prune_text(r: &PruneReport, age: std::time::Duration) -> String {
    let verb = if r.dry_run { "would remove" } else { "removed" };
    let mut text = format!(
        "{verb} {} runs that ended, {} log records, {} events, {} metric samples and {} progress rows older than {} ({} ago)",
        r.runs,
        r.logs,
        r.events,
        r.metrics,
        r.progress,
        r.cutoff,
        humantime::format_duration(age)
    );
    if r.live_runs_kept > 0 {
        text.push_str(&format!(
            "; {} live runs with older records are kept whole",
            r.live_runs_kept
        ));
    }
    text
}

fn database_url(app: &App) -> anyhow::Result<&str> {
    app.config.logging.database.url.as_deref().context(
        "no database is configured; set PMON_DATABASE_URL, pass --database-url, or set logging.database.url in config.yml",
    )
}
