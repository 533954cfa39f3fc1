//! Values written in a configuration and the words that show them:
//! durations, database URLs (checked, and shown without their password),
//! XDG directories.

use std::path::PathBuf;
use std::time::Duration;

/// A database URL must be PostgreSQL's: another scheme (`mysql://`, a bare
/// host) is a mistake to say before anything runs, not an outage to retry.
pub fn check_database_url(url: &str) -> Result<(), String> {
    let scheme = url.split_once("://").map(|(scheme, _)| scheme);
    match scheme {
        Some(s) if s.eq_ignore_ascii_case("postgres") || s.eq_ignore_ascii_case("postgresql") => {
            Ok(())
        }
        Some(other) => Err(format!(
            "the database URL {} is not a PostgreSQL URL (its scheme is {other}://); pmon-agent stores records in PostgreSQL: use postgres://user@host:5432/dbname, or remove the URL to use the embedded SQLite store",
            redact_url(url)
        )),
        None => Err(format!(
            "the database URL {} is not a URL; use postgres://user@host:5432/dbname, or remove it to use the embedded SQLite store",
            redact_url(url)
        )),
    }
}

/// `$VAR` if set and absolute, else `~/<fallback>`.
pub fn xdg_dir(var: &str, fallback: &str) -> Option<PathBuf> {
    match std::env::var_os(var).map(PathBuf::from) {
        Some(p) if p.is_absolute() => Some(p),
        _ => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(fallback)),
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`, and
/// `?password=secret` → `?password=***`.
pub fn redact_url(url: &str) -> String {
    let redacted = redact_userinfo(url);
    match redacted.find("password=") {
        Some(pos) => {
            let value_start = pos + "password=".len();
            let value_end = redacted[value_start..]
                .find('&')
                .map_or(redacted.len(), |e| value_start + e);
            format!("{}***{}", &redacted[..value_start], &redacted[value_end..])
        }
        None => redacted,
    }
}

fn redact_userinfo(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}{}:***{}",
            &url[..scheme_end + 3],
            &authority[..colon],
            &rest[at..]
        ),
        _ => url.to_string(),
    }
}

/// Seconds as a number (`5`, `2.5`) or a humantime string (`5s`, `250ms`, `1h`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(secs)
            .map_err(|_| format!("'{text}' is not a duration of zero or more seconds"));
    }
    humantime::parse_duration(text).map_err(|e| {
        format!("'{text}' is not a duration ({e}); use seconds like 5.0 or 5s, 250ms, 1h")
    })
}
