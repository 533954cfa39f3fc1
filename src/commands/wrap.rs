//! `pmon-agent wrap [-e EXP] [--resume|--new-run] [--pty] [--no-echo] [--tag k=v]… -- CMD…`
//!
//! This process is the run's holder (`holder`): it runs the program and
//! hands its output to a shipper process that parses and stores it.
//! Usually it is `pmon-agent-holder` by the time it parses its command line
//! ([`hold_here`]); `pmon-agent` itself gets here ([`run`]) when that
//! executable is missing.

use crate::cli::{GlobalArgs, WrapArgs};
use crate::holder::{self, ChildSpec, HolderEnv};
use pmon_core::run::{self, StartMode};

/// `wrap` parsed by `pmon-agent`: becomes a fresh holder image (or, if it
/// cannot, holds the run as it is).
pub fn run(global: &GlobalArgs, args: WrapArgs) -> anyhow::Result<i32> {
    let (env, spec) = plan(global, args)?;
    let _ = holder::exec_as_holder(&env, &spec);
    let ran = holder::run(&env, &spec, |_, _| {})?;
    Ok(holder::exit_code(&ran))
}

/// `wrap` parsed by `pmon-agent-holder`: holds the run in this process.
pub fn hold_here(global: &GlobalArgs, args: WrapArgs) -> anyhow::Result<i32> {
    let (env, spec) = plan(global, args)?;
    let ran = holder::run(&env, &spec, |_, _| {})?;
    Ok(holder::exit_code(&ran))
}

fn plan(global: &GlobalArgs, args: WrapArgs) -> anyhow::Result<(HolderEnv, ChildSpec)> {
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
        parsers: args.parsers,
        notify: args.notify.as_override(),
        no_faulthandler: args.no_faulthandler,
    };
    Ok((HolderEnv::from_args(global)?, spec))
}
