//! `pmon-agent spool status|replay` and `pmon-agent db check|migrate|prune|distribute`
//! (the work is `admin`'s).

use crate::admin::{check, database_url, distribute_text, prune, prune_text, replay};
use crate::app::App;
use crate::cli::{DbCommand, SpoolCommand};
use crate::query::output::outln;
use pmon_core::options::Format;
use pmon_core::text::plural;
use pmon_store::postgres::PostgresStore;
use pmon_store::spool::{Spool, SpoolStats};

pub fn spool(app: &App, cmd: SpoolCommand) -> anyhow::Result<i32> {
    match cmd {
        SpoolCommand::Status { format } => {
            let stats = match app.existing_store()? {
                Some(store) => Spool::new(store).stats()?,
                None => SpoolStats::default(),
            };
            match format.format {
                Format::Json => outln!(
                    "{}",
                    serde_json::json!({"pending": stats.pending, "oldest": stats.oldest, "bytes": stats.bytes})
                )?,
                Format::Text => outln!(
                    "{} waiting in {} ({} bytes){}",
                    plural(stats.pending, "record", "records"),
                    plural(stats.batches, "batch", "batches"),
                    stats.bytes,
                    stats
                        .oldest
                        .map(|o| format!(", oldest spooled {o}"))
                        .unwrap_or_default()
                )?,
            }
            Ok(0)
        }
        SpoolCommand::Replay => replay(app),
    }
}

pub fn db(app: &App, cmd: DbCommand) -> anyhow::Result<i32> {
    match cmd {
        DbCommand::Check { format } => check(app, format.format),
        DbCommand::Migrate => {
            let url = database_url(app)?;
            let mut pg = PostgresStore::new(url)?;
            let applied = pg.connect()?;
            outln!(
                "{}: {} applied; the schema is up to date",
                pg.display_url(),
                plural(applied as u64, "migration", "migrations")
            )?;
            Ok(0)
        }
        DbCommand::Prune {
            older_than,
            dry_run,
            format,
        } => {
            let age = match (&older_than, app.config.logging.database.retention) {
                (Some(text), _) => pmon_core::config::parse_duration(text).map_err(anyhow::Error::msg)?,
                (None, Some(age)) => age,
                (None, None) => anyhow::bail!(
                    "say how old: pmon-agent db prune --older-than 30d (or set logging.database.retention in config.yml)"
                ),
            };
            let report = prune(app, age, dry_run)?;
            match format.format {
                Format::Json => outln!("{}", serde_json::to_string(&report)?)?,
                Format::Text => outln!("{}", prune_text(&report, age))?,
            }
            Ok(0)
        }
        DbCommand::Distribute { format } => {
            let mut pg = PostgresStore::new(database_url(app)?)?;
            let report = pg.distribute()?;
            match format.format {
                Format::Json => outln!("{}", serde_json::to_string(&report)?)?,
                Format::Text => outln!("{}", distribute_text(&report, pg.display_url()))?,
            }
            Ok(0)
        }
    }
}
