//! `pmon-agent config default|show|get KEY`.

use crate::cli::{ConfigCommand, GlobalArgs};
use crate::config::{Config, DEFAULT_CONFIG};

pub fn run(global: &GlobalArgs, cmd: ConfigCommand) -> anyhow::Result<i32> {
    match cmd {
        ConfigCommand::Default => print!("{DEFAULT_CONFIG}"),
        ConfigCommand::Show => {
            let (config, path) = Config::load(global.config.as_deref())?;
            if let Some(warning) = path
                .as_deref()
                .and_then(|p| config.exposed_password_warning(p))
            {
                eprintln!("pmon-agent: warning: {warning}");
            }
            match path {
                Some(p) => println!("# from {}", p.display()),
                None => println!("# built-in defaults (no config file found)"),
            }
            println!("{config:#?}");
        }
        ConfigCommand::Get { key } => {
            let (config, _) = Config::load(global.config.as_deref())?;
            match key.as_str() {
                // One argument a line; nothing when it is not set.
                "pipeline.command" => {
                    for arg in config.pipeline.command.iter().flat_map(|c| c.argv()) {
                        println!("{arg}");
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
