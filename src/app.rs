//! What every command needs: the configuration in effect and the data dir.

use crate::cli::GlobalArgs;
use anyhow::Context;
use pmon_core::config::Config;
use pmon_core::paths::DataDir;
use pmon_store::SqliteStore;

pub struct App {
    pub config: Config,
    /// The config file in effect, if any (a shipper reads the same one).
    pub config_path: Option<std::path::PathBuf>,
    pub data_dir: DataDir,
    /// `--parser NAME…`: the chain restricted to these (empty: all).
    pub parser_selection: Vec<String>,
    /// Broken parser files are errors (a process the user started), not
    /// warnings (a shipper restarted under a running program).
    pub strict_parsers: bool,
}

/// The config file given (an empty PMON_CONFIG / --config "" means "not given").
pub fn explicit_config(global: &GlobalArgs) -> Option<&std::path::Path> {
    global
        .config
        .as_deref()
        .filter(|p| !p.as_os_str().is_empty())
}

/// The data dir in effect, from the flag (or PMON_DATA_DIR) or the default.
pub fn data_dir(global: &GlobalArgs) -> anyhow::Result<DataDir> {
    DataDir::resolve(
        global
            .data_dir
            .as_deref()
            .filter(|p| !p.as_os_str().is_empty()),
    )
}

impl App {
    pub fn new(global: &GlobalArgs) -> anyhow::Result<App> {
        let loaded = Config::load(explicit_config(global))?;
        let (mut config, config_path) = (loaded.config, loaded.path);
        // Said by the process the user started; a shipper it starts is quiet.
        if !global.quiet_config {
            for foreign in &loaded.skipped {
                eprintln!("pmon-agent: notice: {foreign}");
            }
            if let Some(warning) = config_path
                .as_deref()
                .and_then(|p| config.exposed_password_warning(p))
            {
                eprintln!("pmon-agent: warning: {warning}");
            }
        }
        if let Some(url) = global.database_url.as_ref().filter(|u| !u.is_empty()) {
            config.logging.database.url = Some(url.clone());
        }
        if let Some(url) = &config.logging.database.url {
            pmon_core::config::check_database_url(url).map_err(anyhow::Error::msg)?;
        }
        let data_dir = data_dir(global)?;
        tracing::info!(
            target: "app",
            config = ?config_path,
            data_dir = %data_dir.root().display(),
            store = %config.logging.database.url.as_deref().map_or("embedded SQLite".to_string(), pmon_core::config::redact_url),
            "configuration read"
        );
        Ok(App {
            config,
            config_path,
            data_dir,
            parser_selection: Vec::new(),
            strict_parsers: !global.quiet_config,
        })
    }

    /// As [`App::new`], for a command that parses with `--parser` given.
    pub fn with_parsers(global: &GlobalArgs, parsers: &[String]) -> anyhow::Result<App> {
        let mut app = App::new(global)?;
        app.parser_selection = parsers.to_vec();
        Ok(app)
    }

    /// The directories of `parsers.paths`; relative ones are relative to
    /// the config file's directory (to the working directory without one).
    pub fn parser_dirs(&self) -> Vec<std::path::PathBuf> {
        let base = self
            .config_path
            .as_deref()
            .and_then(std::path::Path::parent)
            .filter(|p| !p.as_os_str().is_empty());
        self.config
            .parsers
            .paths
            .iter()
            .map(|p| match base {
                Some(base) if p.is_relative() => base.join(p),
                _ => p.clone(),
            })
            .collect()
    }

    /// The parser chain of this invocation: the user's parser files, the
    /// shipped ones and the built-in parsers, restricted by `--parser`.
    pub fn parser_chain(&self) -> anyhow::Result<std::sync::Arc<pmon_core::parse::ParserChain>> {
        use pmon_core::parse::ParserChain;
        let loaded = pmon_core::parse::load(&self.parser_dirs(), self.strict_parsers).map_err(|e| {
            anyhow::anyhow!("invalid parser file {e}\nfix the file, or move it out of the parsers directory (parsers.paths in config.yml)")
        })?;
        for warning in &loaded.warnings {
            eprintln!("pmon-agent: warning: parser file {warning}");
        }
        let chain = ParserChain::select(&loaded, &self.parser_selection)?;
        Ok(std::sync::Arc::new(chain))
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

    /// Writes one event of a run to the store in effect. Best effort: the
    /// callers (a supervisor's restart, a notifier) have done what mattered.
    pub fn record_event(&self, ctx: &pmon_store::RunContext, event: pmon_core::record::Event) {
        if let Ok(mut sink) = self.open_sink() {
            let batch = pmon_store::Batch {
                events: vec![event],
                ..Default::default()
            };
            let _ = sink.write(ctx, &batch);
        }
    }

    /// The sink records go to: PostgreSQL with the spool when a database is
    /// configured, else the embedded store.
    pub fn open_sink(&self) -> anyhow::Result<Box<dyn pmon_store::Sink>> {
        match self.open_spooling_sink()? {
            Some(sink) => Ok(Box::new(sink)),
            None => Ok(Box::new(self.open_store()?)),
        }
    }

    /// PostgreSQL with the local spool, when a database is configured.
    pub fn open_spooling_sink(&self) -> anyhow::Result<Option<pmon_store::spool::SpoolingSink>> {
        use pmon_store::postgres::PostgresStore;
        use pmon_store::spool::{RetryBackoff, Spool, SpoolingSink};
        let Some(url) = &self.config.logging.database.url else {
            return Ok(None);
        };
        let pg = PostgresStore::new(url)?;
        let store = self.open_store()?;
        let database = &self.config.logging.database;
        Ok(Some(SpoolingSink::new(
            pg,
            Spool::new(store),
            database.spool_max_bytes,
            RetryBackoff {
                first: database.retry_first_backoff,
                max: database.retry_max_backoff,
            },
            self.data_dir.db_path().display().to_string(),
        )))
    }

    /// The store if it exists (commands that only read).
    pub fn existing_store(&self) -> anyhow::Result<Option<SqliteStore>> {
        Ok(SqliteStore::open_existing(&self.data_dir.db_path())?)
    }
}
