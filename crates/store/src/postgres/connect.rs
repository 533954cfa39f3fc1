//! Reaching PostgreSQL as libpq (and so `psql`) does.
//!
//! sqlx parses the URL and the `PG*` variables; this adds what libpq does
//! and sqlx does not. `sslmode=prefer` (the default) falls back to a plain
//! connection when TLS fails, and `allow` tries plain first and TLS when
//! the server wants it. `require` verifies the server as `verify-ca` does
//! when a root certificate file exists. `verify-ca`/`verify-full` read
//! `~/.postgresql/root.crt` when no `sslrootcert` is given, and
//! `sslrootcert=system` means the system's CAs. The client certificate
//! defaults to `~/.postgresql/postgresql.crt` and `.key`.
//!
//! TLS itself is OpenSSL's, through native-tls, as libpq's is: a server's
//! self-signed X.509 version 1 certificate (what every Citus node makes for
//! itself) is accepted where no verification is asked for. rustls refuses
//! such certificates outright (`UnsupportedCertVersion`), even to check the
//! handshake's signature, which is why the agent does not use it here.

use super::failure::{self, Failure, Peer};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgSslMode};
use sqlx::Connection;
use std::path::PathBuf;
use std::str::FromStr;

/// Where verification finds the CAs it trusts.
#[derive(Debug, Clone, PartialEq)]
pub enum Roots {
    /// A file of CA certificates (`sslrootcert`, or `~/.postgresql/root.crt`).
    File(PathBuf),
    /// `sslrootcert=system`: the system's CAs.
    System,
    /// None given and libpq's default file does not exist.
    Missing(PathBuf),
}

/// A database URL ready to connect with.
#[derive(Clone)]
pub struct Target {
    options: PgConnectOptions,
    /// The `sslmode` asked for: the URL's, else `PGSSLMODE`, else prefer
    /// (verify-full with `sslrootcert=system`, as libpq).
    pub mode: PgSslMode,
    pub roots: Roots,
}

impl Target {
    /// Parses `url` (the caller checked its scheme) and applies libpq's rules.
    pub fn parse(url: &str) -> Result<Target, String> {
        let params = query_params(url);
        let param = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let root_given = param("sslrootcert").or_else(|| env("PGSSLROOTCERT"));
        let system = root_given.as_deref() == Some("system");
        // sqlx would read `system` as a file name: parse without it.
        let url = if system {
            without_param(url, "sslrootcert")
        } else {
            url.to_string()
        };
        let mut options = PgConnectOptions::from_str(&url)
            .map_err(|e| failure::without_location(&e.to_string()))?;
        let mode_given = param("sslmode").is_some() || env("PGSSLMODE").is_some();
        let mut mode = options.get_ssl_mode();
        if system && !mode_given {
            mode = PgSslMode::VerifyFull;
        }
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let default_file = |name: &str| home.as_ref().map(|h| h.join(".postgresql").join(name));
        let roots = match (&root_given, system) {
            (_, true) => Roots::System,
            (Some(file), false) => Roots::File(PathBuf::from(file)),
            (None, false) => match default_file("root.crt") {
                Some(file) if file.is_file() => {
                    options = options.ssl_root_cert(&file);
                    Roots::File(file)
                }
                Some(file) => Roots::Missing(file),
                None => Roots::Missing(PathBuf::from("~/.postgresql/root.crt")),
            },
        };
        let cert_given = param("sslcert").or_else(|| env("PGSSLCERT")).is_some();
        let key_given = param("sslkey").or_else(|| env("PGSSLKEY")).is_some();
        if !cert_given && !key_given {
            if let (Some(cert), Some(key)) = (
                default_file("postgresql.crt"),
                default_file("postgresql.key"),
            ) {
                if cert.is_file() && key.is_file() {
                    options = options.ssl_client_cert(&cert).ssl_client_key(&key);
                }
            }
        }
        Ok(Target {
            options,
            mode,
            roots,
        })
    }

    /// The target with its connect options changed by `f`.
    pub fn map_options(mut self, f: impl FnOnce(PgConnectOptions) -> PgConnectOptions) -> Target {
        self.options = f(self.options);
        self
    }

    /// Who the agent is to the server, for messages.
    pub fn peer(&self) -> Peer<'_> {
        let user = self.options.get_username();
        Peer {
            user,
            database: self.options.get_database().unwrap_or(user),
            host: self
                .options
                .get_socket()
                .and_then(|p| p.to_str())
                .unwrap_or(self.options.get_host()),
            port: self.options.get_port(),
        }
    }

    /// Whether the server's certificate is verified, and how.
    pub fn verification(&self) -> Option<&'static str> {
        match self.effective_mode() {
            PgSslMode::VerifyFull => Some("verify-full: the CA and the host name"),
            PgSslMode::VerifyCa => Some("verify-ca: the CA"),
            _ => None,
        }
    }

    /// `require` with a root certificate file verifies as `verify-ca`.
    fn effective_mode(&self) -> PgSslMode {
        match (self.mode, &self.roots) {
            (PgSslMode::Require, Roots::File(_)) => PgSslMode::VerifyCa,
            (mode, _) => mode,
        }
    }

    fn with_mode(&self, mode: PgSslMode) -> PgConnectOptions {
        self.options.clone().ssl_mode(mode)
    }
}

/// Connects as libpq would for the target's `sslmode`.
pub async fn connect(target: &Target) -> Result<PgConnection, Failure> {
    let peer = target.peer();
    let attempt = |mode| {
        let options = target.with_mode(mode);
        async move { PgConnection::connect_with(&options).await }
    };
    let result = match target.effective_mode() {
        PgSslMode::Disable => attempt(PgSslMode::Disable).await,
        // Plain first; TLS when the server turns a plain connection away.
        PgSslMode::Allow => match attempt(PgSslMode::Disable).await {
            Err(e) if wants_tls(&e) => attempt(PgSslMode::Require).await,
            other => other,
        },
        // TLS if the server offers it; plain when the TLS handshake fails.
        PgSslMode::Prefer => match attempt(PgSslMode::Prefer).await {
            Err(sqlx::Error::Tls(_)) => attempt(PgSslMode::Disable).await,
            other => other,
        },
        PgSslMode::Require => attempt(PgSslMode::Require).await,
        verify @ (PgSslMode::VerifyCa | PgSslMode::VerifyFull) => {
            if let Roots::Missing(file) = &target.roots {
                return Err(missing_root(file));
            }
            attempt(verify).await
        }
    };
    result.map_err(|e| failure::describe(&e, &peer))
}

/// A plain connection the server refused because it wants TLS.
fn wants_tls(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("28000") && db.message().contains("no encryption"))
}

fn missing_root(file: &std::path::Path) -> Failure {
    Failure {
        lasting: failure::Lasting::Refusal,
        text: format!(
            "the URL asks to verify the server's certificate, but the root certificate file {} does not exist; put the CA that signed the server's certificate there, name it with sslrootcert=FILE (or PGSSLROOTCERT), use sslrootcert=system for the system's CAs, or use sslmode=require to encrypt without verifying",
            file.display()
        ),
    }
}

/// The URL's query parameters, percent-decoded.
fn query_params(url: &str) -> Vec<(String, String)> {
    let Some((_, query)) = url.split_once('?') else {
        return Vec::new();
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// `url` without the query parameter `name`.
fn without_param(url: &str, name: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_string();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| percent_decode(p.split_once('=').map_or(*p, |(k, _)| k)) != name)
        .collect();
    if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_read_and_removed() {
        let url = "postgres://u@h/db?sslmode=require&sslrootcert=%2Ftmp%2Fca.crt";
        assert_eq!(
            query_params(url),
            vec![
                ("sslmode".to_string(), "require".to_string()),
                ("sslrootcert".to_string(), "/tmp/ca.crt".to_string())
            ]
        );
        assert_eq!(
            without_param(url, "sslrootcert"),
            "postgres://u@h/db?sslmode=require"
        );
        assert_eq!(
            without_param("postgres://h/db?sslrootcert=system", "sslrootcert"),
            "postgres://h/db"
        );
        assert_eq!(percent_decode("a%2"), "a%2");
    }

    #[test]
    fn libpq_modes_and_roots() {
        let t = Target::parse("postgres://u@h/db?sslrootcert=system").unwrap();
        assert_eq!(t.roots, Roots::System);
        assert!(
            matches!(t.mode, PgSslMode::VerifyFull),
            "system implies verify-full"
        );
        let t = Target::parse("postgres://u@h/db?sslmode=require&sslrootcert=/x/ca.crt").unwrap();
        assert!(matches!(t.effective_mode(), PgSslMode::VerifyCa));
        assert_eq!(t.peer().database, "db");
        let t = Target::parse("postgres://u@h:6432").unwrap();
        assert_eq!((t.peer().database, t.peer().port), ("u", 6432));
    }
}
