//! `pmon-agent parsers list|test FILE|check [DIR]` (see `parser_report`).

use crate::app::App;
use crate::cli::{GlobalArgs, ParsersCommand};
use crate::parser_report::{check, list, test};

pub fn run(global: &GlobalArgs, cmd: ParsersCommand) -> anyhow::Result<i32> {
    let mut app = App::new(global)?;
    match cmd {
        ParsersCommand::List { format } => list(&app, format.format),
        ParsersCommand::Test {
            file,
            parsers,
            summary,
            format,
        } => {
            app.parser_selection = parsers;
            test(&app, &file, format.format, summary)
        }
        ParsersCommand::Check { dir } => check(&app, dir.as_deref()),
    }
}
