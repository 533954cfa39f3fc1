//! `pmon-agent config default|show|get KEY`.

use crate::cli::{ConfigCommand, GlobalArgs};
use crate::query::output::{out, outln};
use pmon_core::config::{Config, DEFAULT_CONFIG};

pub fn run(global: &GlobalArgs, cmd: ConfigCommand) -> anyhow::Result<i32> {
    match cmd {
        ConfigCommand::Default => out!("{DEFAULT_CONFIG}")?,
        ConfigCommand::Show => {
            let loaded = Config::load(crate::app::explicit_config(global))?;
            for foreign in &loaded.skipped {
                eprintln!("pmon-agent: notice: {foreign}");
            }
            let (config, path) = (loaded.config, loaded.path);
            if let Some(warning) = path
                .as_deref()
                .and_then(|p| config.exposed_password_warning(p))
            {
                eprintln!("pmon-agent: warning: {warning}");
            }
            match path {
                Some(p) => outln!("# from {}", p.display())?,
                None => outln!("# built-in defaults (no config file found)")?,
            }
            outln!("{config:#?}")?;
        }
        ConfigCommand::Get { key } => {
            let config = Config::load(crate::app::explicit_config(global))?.config;
            match key.as_str() {
                // One argument a line; nothing when it is not set.
                "pipeline.command" => {
                    for arg in config.pipeline.command.iter().flat_map(|c| c.argv()) {
                        outln!("{arg}")?;
                    }
                }
                _ => anyhow::bail!(
                    "config get knows pipeline.command; see pmon-agent config show for the rest"
                ),
            }
        }
    }
    Ok(0)
}
