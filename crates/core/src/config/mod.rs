//! Configuration: built-in defaults, then a `config.yml`, then `PMON_*`
//! environment variables, then flags.
//!
//! What a pipeline is belongs here; how one invocation behaves belongs in flags.
//! Unknown keys and wrong types are errors that name the file, line and key.
//! The documented default file is built into the binary (`config default`).

mod load;
mod settings;
mod values;

pub use load::{ConfigError, ForeignConfig, Loaded, YamlError};
pub use settings::*;
pub use values::{check_database_url, parse_duration, redact_url, xdg_dir};

#[cfg(test)]
mod tests;
