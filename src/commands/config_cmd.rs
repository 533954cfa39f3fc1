//! `pmon-agent config default|show`.

use crate::cli::{ConfigCommand, GlobalArgs};
use crate::config::{Config, DEFAULT_CONFIG};

pub fn run(global: &GlobalArgs, cmd: ConfigCommand) -> anyhow::Result<i32> {
    match cmd {
        ConfigCommand::Default => print!("{DEFAULT_CONFIG}"),
        ConfigCommand::Show => {
            let (config, path) = Config::load(global.config.as_deref())?;
            match path {
                Some(p) => println!("# from {}", p.display()),
                None => println!("# built-in defaults (no config file found)"),
            }
            println!("{config:#?}");
        }
    }
    Ok(0)
}
