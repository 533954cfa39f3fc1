//! The command edge: each command's orchestration, with `anyhow` context that
//! names the thing that failed and what to do about it.

mod config_cmd;
mod daemon;
mod database;
mod docs;
mod ingest;
mod parsers_cmd;
pub(crate) mod ship;
mod stack;
mod tail;
pub mod wrap;

use crate::app::App;
use crate::cli::{Cli, Command};

/// Runs a command; returns the process exit code.
pub fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    let supervises = matches!(
        &cli.command,
        Command::Daemon(crate::cli::DaemonCommand::Supervise(_))
    );
    if supervises
        || matches!(
            &cli.command,
            Command::Wrap(_) | Command::Ingest(_) | Command::Tail(_) | Command::Ship(_)
        )
    {
        // Before any thread exists, so every thread inherits the mask.
        crate::source::wrap::block_signals();
    }
    match cli.command {
        Command::Config(cmd) => config_cmd::run(&cli.global, cmd),
        Command::Ship(args) => ship::run(&cli.global, args),
        Command::Parsers(cmd) => parsers_cmd::run(&cli.global, cmd),
        Command::Wrap(args) => wrap::run(&cli.global, args),
        Command::Tail(args) => tail::run(&App::with_parsers(&cli.global, &args.parsers)?, args),
        Command::Ingest(args) => ingest::run(&App::with_parsers(&cli.global, &args.parsers)?, args),
        Command::Daemon(cmd) => daemon::run(&cli.global, cmd),
        Command::Spool(cmd) => database::spool(&App::new(&cli.global)?, cmd),
        Command::Db(cmd) => database::db(&App::new(&cli.global)?, cmd),
        Command::Query(cmd) => crate::query::run(&App::new(&cli.global)?, cmd),
        Command::NotifySend => notify_send(&cli.global),
        Command::Stack(args) => stack::run(&App::new(&cli.global)?, &args),
        Command::Completions { shell } => crate::cli::docs::completions(shell),
        Command::Man { dir } => crate::cli::docs::man(&dir),
        Command::CompleteNames { what } => docs::complete_names(&App::new(&cli.global)?, what),
    }
}

/// `notify-send`: one notification from stdin, sent; its events go to the
/// store when one can be opened (the notification matters more).
fn notify_send(global: &crate::cli::GlobalArgs) -> anyhow::Result<i32> {
    use anyhow::Context;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
        .context("could not read the notification from stdin")?;
    let parcel: crate::notify::Parcel =
        serde_json::from_str(&text).context("the notification on stdin is not valid JSON")?;
    let app = App::new(global).ok();
    Ok(crate::notify::deliver(app.as_ref(), &parcel))
}
