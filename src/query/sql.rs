//! What differs between the two stores' SQL (placeholders, a function name,
//! timestamp parameters) and the values both drivers bind: the bottom of
//! `query/`, used by the filters and by `db.rs`, using nothing of them.

use chrono::{DateTime, Utc};
use pmon_core::record::format_ts;
use rusqlite::types::ToSqlOutput;

/// The SQL dialect of a store, for the few places where the text differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The placeholder for the `n`th (1-based) bound value.
    pub fn placeholder(self, n: usize) -> String {
        match self {
            Dialect::Sqlite => "?".to_string(),
            Dialect::Postgres => format!("${n}"),
        }
    }

    /// The function giving where a substring starts (0 if absent):
    /// `instr(haystack, needle)` in SQLite, `strpos(haystack, needle)` in
    /// PostgreSQL, both case-sensitive like `grep`.
    pub fn find_function(self) -> &'static str {
        match self {
            Dialect::Sqlite => "instr",
            Dialect::Postgres => "strpos",
        }
    }

    /// A bound stored-format timestamp (`2026-11-27T10:00:00.000000Z`) that
    /// can be compared with the `timestamp` column.
    pub fn timestamp_param(self, placeholder: &str) -> String {
        match self {
            Dialect::Sqlite => placeholder.to_string(),
            Dialect::Postgres => format!("{placeholder}::timestamptz"),
        }
    }
}

/// A value bound to a query parameter, in a form both drivers take.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Text(String),
    Int(i64),
    Time(DateTime<Utc>),
}

impl rusqlite::ToSql for SqlValue {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            SqlValue::Text(text) => ToSqlOutput::from(text.as_str()),
            SqlValue::Int(n) => ToSqlOutput::from(*n),
            SqlValue::Time(time) => ToSqlOutput::from(format_ts(time)),
        })
    }
}
