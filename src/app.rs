//! What every command needs: the configuration in effect and the data dir.

use crate::cli::GlobalArgs;
use crate::config::Config;
use crate::paths::DataDir;
use crate::sink::SqliteStore;
use anyhow::Context;
use std::path::PathBuf;

pub struct App {
    pub config: Config,
    pub config_path: Option<PathBuf>,
    pub data_dir: DataDir,
}

impl App {
    pub fn new(global: &GlobalArgs) -> anyhow::Result<App> {
        let (mut config, config_path) = Config::load(global.config.as_deref())?;
        if let Some(url) = &global.database_url {
            config.logging.database.url = Some(url.clone());
        }
        let data_dir = DataDir::resolve(global.data_dir.as_deref())?;
        Ok(App {
            config,
            config_path,
            data_dir,
        })
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
