//! `completions`, `man` (the CLI describing itself: `cli/docs.rs`) and
//! `complete-names`, which gives the bash completion script the experiment
//! and daemon names of this data dir.

use crate::app::App;
use crate::cli::NameKind;
use std::io::Write;

/// The names `completions bash` offers, one a line; nothing (and exit 0)
/// when there is no store yet.
pub fn complete_names(app: &App, what: NameKind) -> anyhow::Result<i32> {
    let names = match what {
        NameKind::Experiments => match crate::query::db::Store::open(app)? {
            Some(mut store) => store.db().experiments()?,
            None => Vec::new(),
        },
        NameKind::Daemons => crate::daemon::DaemonDir::new(&app.data_dir)
            .all()
            .into_iter()
            .map(|d| d.name)
            .collect(),
    };
    let mut out = std::io::stdout().lock();
    for name in names.iter().filter(|n| !n.contains(['\n', '\r'])) {
        writeln!(out, "{name}")?;
    }
    Ok(0)
}
