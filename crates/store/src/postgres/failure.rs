//! What a failure to reach or write to PostgreSQL means, in plain words.
//!
//! Two kinds matter to the agent. An **outage** passes by itself: nothing
//! listens yet, the server is starting up or shutting down, it has no
//! connection left, a pooler has no free server connection, the database is
//! read-only for now (a standby, before a failover). Records spool and the
//! agent tries again quietly. A **refusal** lasts until someone changes
//! something: the database or role does not exist, the password is wrong,
//! the certificate does not verify, the port is not PostgreSQL's, the role
//! may not create the tables. Records spool too, but the user is told once,
//! with what to do.
//!
//! sqlx's own messages carry source locations (`… at line 948`,
//! `(sqlx_postgres::connection::tls:96)`): [`describe`] words each failure
//! from its parts instead, so no crate path or source line reaches a user.

/// Whether a failure passes by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lasting {
    /// Try again later; nothing to tell but that records spool meanwhile.
    Outage,
    /// Told once with the fix; tried again, less often.
    Refusal,
}

/// A failure, worded for the user: what happened and, for a refusal, the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub lasting: Lasting,
    pub text: String,
}

impl Failure {
    fn outage(text: impl Into<String>) -> Failure {
        Failure {
            lasting: Lasting::Outage,
            text: text.into(),
        }
    }

    fn refusal(text: impl Into<String>) -> Failure {
        Failure {
            lasting: Lasting::Refusal,
            text: text.into(),
        }
    }
}

/// Who the agent is to the server, for the words of a refusal.
pub struct Peer<'a> {
    pub user: &'a str,
    pub database: &'a str,
    pub host: &'a str,
    pub port: u16,
}

/// What `e` means and what to do about it.
pub fn describe(e: &sqlx::Error, peer: &Peer<'_>) -> Failure {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            server_said(&code, db.message(), peer)
        }
        sqlx::Error::Io(io) => io_failure(io, peer),
        sqlx::Error::Tls(tls) => tls_failure(&tls.to_string()),
        sqlx::Error::Protocol(text) => not_postgres(text, peer),
        sqlx::Error::Configuration(c) => Failure::refusal(format!(
            "the database URL cannot be used: {}",
            without_location(&c.to_string())
        )),
        sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed => {
            Failure::outage("the connection did not become ready in time")
        }
        other => Failure::outage(without_location(&other.to_string())),
    }
}

/// The server answered with an error: its SQLSTATE says which kind.
fn server_said(code: &str, message: &str, peer: &Peer<'_>) -> Failure {
    let Peer {
        user,
        database,
        host,
        port,
    } = peer;
    match code {
        "3D000" => Failure::refusal(format!(
            "database \"{database}\" does not exist on {host}:{port}; create it (createdb -h {host} -p {port} {database}) or correct the database name in the URL"
        )),
        "28P01" => Failure::refusal(format!(
            "password authentication failed for role \"{user}\"; correct the password in the URL, in PGPASSWORD or in ~/.pgpass"
        )),
        "28000" if message.contains("does not exist") => Failure::refusal(format!(
            "role \"{user}\" does not exist on {host}:{port}; create it (CREATE ROLE {user} LOGIN) or correct the user name in the URL"
        )),
        "28000" if message.contains("no encryption") => Failure::refusal(format!(
            "the server only accepts role \"{user}\" over TLS ({message}); use sslmode=prefer or require in the URL"
        )),
        "28000" | "42501" => Failure::refusal(format!(
            "{message}; ask the server's administrator to let role \"{user}\" in (pg_hba.conf, GRANT), or use another role in the URL"
        )),
        // PgBouncer: a database its [databases] section does not name.
        "08P01" if message.contains("no such database") => Failure::refusal(format!(
            "the pooler at {host}:{port} knows no database \"{database}\" ({message}); add it to the pooler's [databases] or correct the URL"
        )),
        // Starting up, shutting down, in recovery (57P0x); out of
        // connections or memory (53xxx); a pooler with no free server
        // connection (08P01); a standby, read-only until a failover
        // (25006); cut by an administrator: all outages, below.
        // Anything else may pass too: try again rather than give up on
        // records, and say what the server said.
        c => Failure::outage(format!("{message} (SQLSTATE {c})")),
    }
}

fn io_failure(io: &std::io::Error, peer: &Peer<'_>) -> Failure {
    if let Some(failure) = foreign_answer(&io.to_string(), peer) {
        return failure;
    }
    let what = match io.kind() {
        std::io::ErrorKind::ConnectionRefused => "nothing listens there".to_string(),
        std::io::ErrorKind::TimedOut => "it did not answer in time".to_string(),
        std::io::ErrorKind::NotFound if peer.host.starts_with('/') => {
            "there is no server socket in that directory".to_string()
        }
        _ => without_location(&io.to_string()),
    };
    Failure::outage(format!(
        "could not reach {}:{}: {what}",
        peer.host, peer.port
    ))
}

/// TLS failed. The certificate not verifying is a refusal that names what
/// to trust; anything else (the server's TLS set-up) likewise lasts.
fn tls_failure(text: &str) -> Failure {
    let text = without_location(text);
    let lower = text.to_ascii_lowercase();
    if lower.contains("hostname mismatch") || lower.contains("ip address mismatch") {
        return Failure::refusal(format!(
            "the server's certificate is not for the host name in the URL ({text}); connect by a name the certificate lists, or use sslmode=verify-ca to check the CA only"
        ));
    }
    if lower.contains("certificate verify failed") || lower.contains("unable to get local issuer") {
        return Failure::refusal(format!(
            "the server's certificate could not be verified ({text}); name the CA that signed it with sslrootcert=FILE (or PGSSLROOTCERT, or ~/.postgresql/root.crt), or use sslmode=require to encrypt without verifying"
        ));
    }
    if lower.contains("does not support tls") {
        return Failure::refusal(
            "the server does not accept TLS connections and the URL requires TLS (sslmode=require or verify-*); turn ssl on in the server, or use sslmode=prefer",
        );
    }
    Failure::refusal(format!("the TLS connection failed: {text}"))
}

/// Something answered, but not as PostgreSQL does.
fn not_postgres(text: &str, peer: &Peer<'_>) -> Failure {
    let text = without_location(text);
    let looks_http = text.contains("0x48") || text.contains("'H'");
    let what = if looks_http {
        "it answered like an HTTP server".to_string()
    } else {
        format!("it answered {text}")
    };
    Failure::refusal(format!(
        "{}:{} is not a PostgreSQL server ({what}); check the host and port in the URL (PostgreSQL listens on 5432 by default)",
        peer.host, peer.port
    ))
}

/// A plain connection's first answer read as a PostgreSQL message whose
/// length is absurd (PostgreSQL's messages stay under 1 GiB): the length's
/// four bytes are the peer's text, e.g. `TTP/` of an HTTP server's
/// `HTTP/1.1 400`. sqlx says "expected to read 1414811696 bytes".
fn foreign_answer(text: &str, peer: &Peer<'_>) -> Option<Failure> {
    let after = text.split("expected to read ").nth(1)?;
    let length: u64 = after.split(' ').next()?.parse().ok()?;
    if length < 1 << 30 {
        return None;
    }
    // sqlx counts the length field in; the peer's bytes are one less.
    let bytes = ((length - 1) as u32).to_be_bytes();
    let looks_http = bytes.starts_with(b"TTP") || bytes == *b"TTP/";
    let what = if looks_http {
        "it answered like an HTTP server".to_string()
    } else {
        "its answer is not PostgreSQL's protocol".to_string()
    };
    Some(Failure::refusal(format!(
        "{}:{} is not a PostgreSQL server ({what}); check the host and port in the URL (PostgreSQL listens on 5432 by default)",
        peer.host, peer.port
    )))
}

/// Drops a trailing source location that sqlx appends to its protocol
/// errors, `(sqlx_postgres::connection::tls:96)`, and a ` at line N`.
pub fn without_location(text: &str) -> String {
    let mut text = text.trim();
    if let Some(open) = text.rfind(" (") {
        let tail = &text[open + 2..];
        if tail.ends_with(')') && tail.contains("::") {
            text = &text[..open];
        }
    }
    if let Some(at) = text.rfind(" at line ") {
        if text[at + " at line ".len()..]
            .chars()
            .all(|c| c.is_ascii_digit())
        {
            text = &text[..at];
        }
    }
    text.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: Peer<'static> = Peer {
        user: "pmon",
        database: "metrics",
        host: "db.example",
        port: 5432,
    };

    #[test]
    fn sqlx_source_locations_are_dropped() {
        assert_eq!(
            without_location(
                "unexpected response from SSLRequest: 0x48 (sqlx_postgres::connection::tls:96)"
            ),
            "unexpected response from SSLRequest: 0x48"
        );
        assert_eq!(
            without_location("database \"x\" does not exist at line 948"),
            "database \"x\" does not exist"
        );
        assert_eq!(without_location("plain (words)"), "plain (words)");
    }

    #[test]
    fn an_http_port_is_not_postgres() {
        let e = sqlx::Error::Protocol(
            "unexpected response from SSLRequest: 0x48 (sqlx_postgres::connection::tls:96)".into(),
        );
        let f = describe(&e, &PEER);
        assert_eq!(f.lasting, Lasting::Refusal);
        assert_eq!(
            f.text,
            "db.example:5432 is not a PostgreSQL server (it answered like an HTTP server); check the host and port in the URL (PostgreSQL listens on 5432 by default)"
        );
    }

    #[test]
    fn an_http_answer_to_a_plain_startup_is_not_postgres() {
        let io = std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "expected to read 1414811696 bytes, got 309 bytes at EOF",
        );
        let f = describe(&sqlx::Error::Io(io), &PEER);
        assert_eq!(f.lasting, Lasting::Refusal);
        assert!(
            f.text.starts_with(
                "db.example:5432 is not a PostgreSQL server (it answered like an HTTP server)"
            ),
            "{}",
            f.text
        );
        let short = std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "expected to read 20 bytes, got 3 bytes at EOF",
        );
        assert_eq!(
            describe(&sqlx::Error::Io(short), &PEER).lasting,
            Lasting::Outage
        );
    }

    #[test]
    fn a_refused_connection_is_an_outage() {
        let e = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let f = describe(&e, &PEER);
        assert_eq!(f.lasting, Lasting::Outage);
        assert_eq!(
            f.text,
            "could not reach db.example:5432: nothing listens there"
        );
    }

    #[test]
    fn lasting_refusals_by_sqlstate() {
        let refused = |code, message| {
            let f = server_said(code, message, &PEER);
            assert_eq!(f.lasting, Lasting::Refusal, "{code}: {}", f.text);
            f.text
        };
        assert_eq!(
            refused("3D000", "database \"metrics\" does not exist"),
            "database \"metrics\" does not exist on db.example:5432; create it (createdb -h db.example -p 5432 metrics) or correct the database name in the URL"
        );
        assert!(
            refused("28P01", "password authentication failed for user \"pmon\"")
                .contains("correct the password in the URL, in PGPASSWORD or in ~/.pgpass")
        );
        assert!(refused("28000", "role \"pmon\" does not exist")
            .starts_with("role \"pmon\" does not exist on db.example:5432; create it"));
        assert!(refused(
            "28000",
            "no pg_hba.conf entry for host \"10.0.0.1\", user \"pmon\", database \"metrics\", no encryption"
        )
        .contains("use sslmode=prefer or require"));
        assert!(refused("42501", "permission denied for schema public").contains("GRANT"));
        assert!(refused("08P01", "no such database: metrics").contains("[databases]"));
    }

    #[test]
    fn passing_troubles_by_sqlstate_are_outages() {
        for (code, message) in [
            ("57P03", "the database system is starting up"),
            ("57P03", "the database system is shutting down"),
            (
                "57P01",
                "terminating connection due to administrator command",
            ),
            ("53300", "sorry, too many clients already"),
            ("53300", "too many connections for role \"pmon\""),
            ("08P01", "no more connections allowed (max_client_conn)"),
            ("08P01", "query_wait_timeout"),
            ("25006", "cannot execute INSERT in a read-only transaction"),
            ("40001", "could not serialize access"),
        ] {
            let f = server_said(code, message, &PEER);
            assert_eq!(f.lasting, Lasting::Outage, "{code} {message}");
            assert_eq!(f.text, format!("{message} (SQLSTATE {code})"));
        }
    }

    #[test]
    fn tls_verification_failures_are_refusals_that_say_what_to_trust() {
        let f = tls_failure("error:0A000086:SSL routines:tls_post_process_server_certificate:certificate verify failed:../ssl/statem/statem_clnt.c:1889: (self-signed certificate)");
        assert_eq!(f.lasting, Lasting::Refusal);
        assert!(f.text.contains("sslrootcert=FILE"), "{}", f.text);
        let f = tls_failure(
            "error:0A000086:SSL routines::certificate verify failed (Hostname mismatch)",
        );
        assert!(f.text.contains("not for the host name"), "{}", f.text);
    }
}
