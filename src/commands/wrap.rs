//! `pmon-agent wrap [-e EXP] [--resume|--new-run] [--pty] [--no-echo] [--tag k=v]… -- CMD…`
//!
//! This process is the run's holder (`holder`): it runs the program and
//! hands its output to a shipper process that parses and stores it.

use crate::app::App;
use crate::cli::WrapArgs;
use crate::holder::{self, ChildSpec, HolderEnv};
use crate::run::{self, StartMode};

pub fn run(app: &App, args: WrapArgs) -> anyhow::Result<i32> {
    let experiment = args
        .experiment
        .clone()
        .unwrap_or_else(|| run::default_experiment(&args.command));
    let mode = match (args.resume, args.new_run) {
        (true, _) => StartMode::Resume,
        (_, true) => StartMode::NewRun,
        _ => StartMode::Exclusive,
    };
    let spec = ChildSpec {
        experiment,
        command: args.command,
        tags: args.tags,
        mode,
        pty: args.pty,
        echo: !args.no_echo,
        daemon: None,
    };
    let env = HolderEnv::of(app);
    // This process becomes a fresh holder, without the pages parsing and
    // configuration touched; if it cannot, it holds the run as it is.
    let _ = holder::exec_as_holder(&env, &spec);
    let ran = holder::run(&env, &spec, |_, _| {})?;
    Ok(holder::exit_code(&ran))
}
