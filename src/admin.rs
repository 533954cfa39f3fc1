//! Looking after the store: shipping the spool by hand, `db check`,
//! pruning, distributing over Citus — and what each says.

use crate::app::App;
use crate::query::output::{out, outln};
use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pmon_core::options::Format;
use pmon_core::text::plural;
use pmon_store::postgres::PostgresStore;
use pmon_store::retention::{self, PruneReport};
use pmon_store::spool::{RetryBackoff, Spool, SpoolStats, SpoolingSink};

/// `spool replay`: ships every spooled record now, with a progress bar on a
/// terminal.
pub fn replay(app: &App) -> anyhow::Result<i32> {
    let url = database_url(app)?;
    let Some(store) = app.existing_store()? else {
        outln!(
            "nothing to replay: there is no spool in {}",
            app.data_dir.root().display()
        )?;
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
    outln!("replayed {}", plural(shipped, "record", "records"))?;
    Ok(0)
}

/// `db check`: exit 0 only when records sent now would be stored.
pub fn check(app: &App, format: Format) -> anyhow::Result<i32> {
    let spool = match app.existing_store()? {
        Some(store) => Spool::new(store).stats()?,
        None => SpoolStats::default(),
    };
    let Some(url) = app.config.logging.database.url.as_deref() else {
        let store = app.data_dir.db_path();
        match format {
            Format::Json => outln!(
                "{}",
                serde_json::json!({"url": null, "store": store, "would_land": true})
            )?,
            Format::Text => outln!(
                "no database URL is configured: records go to the embedded SQLite store {}\n(set one with --database-url, PMON_DATABASE_URL or logging.database.url)",
                store.display()
            )?,
        }
        return Ok(0);
    };
    let found = PostgresStore::new(url)?.inspect();
    let lands = found.would_land();
    match format {
        Format::Json => {
            let mut value = serde_json::to_value(&found)?;
            value["spool_pending"] = spool.pending.into();
            value["would_land"] = lands.into();
            outln!("{value}")?;
        }
        Format::Text => out!("{}", check_text(&found, &spool))?,
    }
    Ok(if lands { 0 } else { 1 })
}

fn check_text(found: &pmon_store::postgres::Inspection, spool: &SpoolStats) -> String {
    use std::fmt::Write as _;
    let mut text = String::new();
    let _ = writeln!(text, "database:   {}", found.url);
    match (&found.server_version, &found.problem, found.reachable) {
        (Some(version), _, _) => {
            let _ = writeln!(
                text,
                "reachable:  yes, PostgreSQL {version}, as role {} in database {}",
                found.user.as_deref().unwrap_or("?"),
                found.database.as_deref().unwrap_or("?")
            );
        }
        (None, Some(problem), _) => {
            let kind = if found.outage {
                "no (an outage: the agent retries)"
            } else {
                "no"
            };
            let _ = writeln!(text, "reachable:  {kind}: {problem}");
        }
        _ => {}
    }
    if let Some(tls) = &found.tls {
        let how = match (&tls.version, &tls.cipher) {
            (Some(v), Some(c)) => format!(" ({v}, {c})"),
            _ => String::new(),
        };
        let verified = match &tls.verified {
            Some(how) => format!("certificate verified ({how})"),
            None if tls.encrypted => "certificate not verified".to_string(),
            None => String::new(),
        };
        let state = if tls.encrypted { "on" } else { "off" };
        let _ = writeln!(
            text,
            "tls:        {state}{how}{}{verified}; sslmode={}",
            if verified.is_empty() { "" } else { ", " },
            tls.sslmode
        );
    }
    if let Some(schema) = &found.schema {
        let state = match schema.pending {
            0 => "up to date".to_string(),
            n => format!(
                "{n} migration{} pending (applied at the agent's first connect, or by pmon-agent db migrate)",
                if n == 1 { "" } else { "s" }
            ),
        };
        let _ = writeln!(
            text,
            "schema:     version {} of {}, {state}",
            schema.version, schema.latest
        );
    }
    if found.reachable && found.server_version.is_some() {
        if found.missing_privileges.is_empty() {
            let _ = writeln!(text, "privileges: all the agent needs");
        } else {
            let _ = writeln!(
                text,
                "privileges: lacks {}",
                found.missing_privileges.join("; ")
            );
        }
        let citus = match &found.citus {
            None => "not installed".to_string(),
            Some(c) if c.not_distributed.is_empty() => {
                format!("{}: every table distributed", c.version)
            }
            Some(c) => format!(
                "{}: not distributed yet: {} (pmon-agent db distribute)",
                c.version,
                c.not_distributed.join(", ")
            ),
        };
        let _ = writeln!(text, "citus:      {citus}");
    }
    if let (Some(problem), true) = (&found.problem, found.server_version.is_some()) {
        let _ = writeln!(text, "problem:    {problem}");
    }
    let _ = writeln!(
        text,
        "spool:      {} record{} waiting",
        spool.pending,
        if spool.pending == 1 { "" } else { "s" }
    );
    let verdict = if found.would_land() {
        "records would land"
    } else {
        "records would NOT land: they wait in the spool"
    };
    let _ = writeln!(text, "verdict:    {verdict}");
    text
}

pub fn distribute_text(r: &pmon_store::postgres::DistributeReport, url: &str) -> String {
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

pub fn prune_text(r: &PruneReport, age: std::time::Duration) -> String {
    let verb = if r.dry_run { "would remove" } else { "removed" };
    let mut text = format!(
        "{verb} {} that ended, {}, {}, {} and {} older than {} ({} ago)",
        plural(r.runs, "run", "runs"),
        plural(r.logs, "log record", "log records"),
        plural(r.events, "event", "events"),
        plural(r.metrics, "metric sample", "metric samples"),
        plural(r.progress, "progress row", "progress rows"),
        r.cutoff,
        humantime::format_duration(age)
    );
    if r.live_runs_kept > 0 {
        text.push_str(&format!(
            "; {} with older records {} kept whole",
            plural(r.live_runs_kept, "live run", "live runs"),
            if r.live_runs_kept == 1 { "is" } else { "are" }
        ));
    }
    text
}

pub fn database_url(app: &App) -> anyhow::Result<&str> {
    app.config.logging.database.url.as_deref().context(
        "no database is configured; set PMON_DATABASE_URL, pass --database-url, or set logging.database.url in config.yml",
    )
}
