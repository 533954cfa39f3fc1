//! `pmon-core`: the lowest layer of pmon-agent, which every other layer
//! speaks — the records that flow from parsers to stores, the framing of
//! bytes into lines, the parsers themselves, the configuration, what a run
//! is, and facts about processes read from `/proc`.
//!
//! Nothing here knows where bytes come from (a pipe, a file) or where
//! records go (SQLite, PostgreSQL): that is `pmon-store`'s and the agent's.

pub mod config;
pub mod framing;
pub mod options;
pub mod parse;
pub mod paths;
pub mod procinfo;
pub mod record;
pub mod run;
pub mod text;
