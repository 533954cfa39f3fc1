//! What every command needs: the configuration in effect and the data dir.

use crate::cli::GlobalArgs;
use crate::config::Config;
use crate::paths::DataDir;
use crate::sink::SqliteStore;
use anyhow::Context;

pub struct App {
    pub config: Config,
    pub data_dir: DataDir,
}

impl App {
    pub fn new(global: &GlobalArgs) -> anyhow::Result<App> {
        // An empty PMON_CONFIG / --config "" means "not given".
        let explicit = global
            .config
            .as_deref()
            .filter(|p| !p.as_os_str().is_empty());
        let (mut config, _) = Config::load(explicit)?;
        if let Some(url) = &global.database_url {
            config.logging.database.url = Some(url.clone());
        }
        if let Some(url) = &config.logging.database.url {
            eprintln!(
                "pmon-agent: warning: a PostgreSQL database is configured ({}), but this version only has the embedded SQLite store; records go to the data dir",
                crate::config::redact_url(url)
            );
        }
        let data_dir = DataDir::resolve(
            global
                .data_dir
                .as_deref()
                .filter(|p| !p.as_os_str().is_empty()),
        )?;
        Ok(App { config, data_dir })
    }

    /// The store, created if needed (commands that write).
    pub fn open_store(&self) -> anyhow::Result<SqliteStore> {
        let path = self.data_dir.db_path();
        SqliteStore::open(&path).with_context(|| {
            format!(
                "could not open the store in {}; check that the directory is writable, or pass --data-dir",
                self.data_dir.root().display()
            )
        })
    }

    /// The store if it exists (commands that only read).
    pub fn existing_store(&self) -> anyhow::Result<Option<SqliteStore>> {
        Ok(SqliteStore::open_existing(&self.data_dir.db_path())?)
    }
}
