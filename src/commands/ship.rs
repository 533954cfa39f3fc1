//! `pmon-agent ship` (internal): the shipper of a run whose program a holder
//! runs. The work is `shipper`'s; this reads the configuration and the
//! holder's flags.

use crate::app::App;
use crate::cli::{GlobalArgs, ShipArgs};
use crate::shipper::{self, ShipOptions};
use pmon_core::run::StartMode;

pub fn run(global: &GlobalArgs, args: ShipArgs) -> anyhow::Result<i32> {
    let mut app = match App::new(global) {
        Ok(app) => app,
        // The first shipper reads the configuration for `wrap`: what is
        // wrong with it stops the run before the program starts.
        Err(e) if args.run_id.is_none() => {
            shipper::refuse(&format!("{e:#}"));
            return Ok(1);
        }
        Err(e) => return Err(e),
    };
    app.parser_selection = args.parsers.clone();
    shipper::run(&app, options(args))
}

/// The holder's flags as the shipper's options; JSON it cannot read is
/// taken as not given.
fn options(args: ShipArgs) -> ShipOptions {
    ShipOptions {
        mode: match args.mode.as_deref() {
            Some("new-run") => StartMode::NewRun,
            Some("resume") => StartMode::Resume,
            Some("continue") => StartMode::Continue,
            _ => StartMode::Exclusive,
        },
        command: from_json(args.command_json).unwrap_or_default(),
        tags: from_json(args.tags_json).unwrap_or_default(),
        notify: from_json(args.notify_json),
        experiment: args.experiment,
        run_id: args.run_id,
        restarts: args.restarts,
        pty: args.pty,
        daemon: args.daemon,
    }
}

fn from_json<T: serde::de::DeserializeOwned>(text: Option<String>) -> Option<T> {
    text.and_then(|j| serde_json::from_str(&j).ok())
}
