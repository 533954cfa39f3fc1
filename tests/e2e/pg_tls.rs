//! TLS to PostgreSQL as libpq does it, against real servers: a node's own
//! self-signed X.509 version 1 certificate, made as every Citus node makes
//! its own, with the default `prefer`, `allow` and `require`; a CA-signed
//! certificate verified with `verify-ca`/`verify-full`, from the URL, the
//! `PGSSL*` variables or `~/.postgresql`; `require` that verifies when a
//! root file exists; a wrong host name, a missing root file and a CA that
//! did not sign the server's certificate refused in plain words while the
//! program runs; client certificates.

use crate::pg_server::PgServer;
use crate::util::*;
use std::path::Path;

/// `wrap` of one line with `url`; `env` adds variables (HOME, PGSSLMODE…).
fn wrap(agent: &Agent, url: &str, exp: &str, env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = agent.wrap_python(exp, "print('INFO:tls:line 1')");
    cmd.env("PMON_DATABASE_URL", url)
        // No ~/.postgresql of the machine's: each case gives its own.
        .env("HOME", agent.dir.path().join("home-none"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.run_within(&format!("wrap -e {exp} over TLS"))
}

fn stored(server: &PgServer, exp: &str) -> String {
    server
        .try_psql(
            "postgres",
            &format!("SELECT count(*) FROM pipeline_logs WHERE experiment_id = '{exp}'"),
        )
        // No table yet: nothing stored.
        .unwrap_or_else(|_| "0".into())
}

/// Stored, and nothing said.
fn lands(server: &PgServer, out: &std::process::Output, exp: &str) {
    assert_eq!(stderr_text(out), "", "{exp}");
    assert_eq!(stored(server, exp), "1", "{exp}");
}

/// Refused with `reason` in one warning; the program unharmed, nothing stored.
fn refused(server: &PgServer, out: &std::process::Output, exp: &str, reason: &str) {
    assert!(out.status.success(), "{exp}: the program is unharmed");
    let err = stderr_text(out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{exp}: said once, then what waits: {err}");
    assert!(
        lines[0].contains("refused the agent: ")
            && lines[0].contains(reason)
            && lines[0].contains("Records are spooled"),
        "{exp}: {err}"
    );
    assert!(
        lines[1].contains(" in the spool (") && lines[1].contains("refused them (said above)"),
        "{exp}: {err}"
    );
    assert!(!err.contains("sqlx") && !err.contains("::"), "{exp}: {err}");
    assert_eq!(stored(server, exp), "0", "{exp}");
}

/// A home directory whose `~/.postgresql` holds `files` (name, source).
fn home_with(agent: &Agent, name: &str, files: &[(&str, &Path)]) -> String {
    let home = agent.dir.path().join(name);
    let dir = home.join(".postgresql");
    std::fs::create_dir_all(&dir).unwrap();
    for (file, from) in files {
        std::fs::copy(from, dir.join(file)).unwrap();
    }
    home.to_str().unwrap().to_string()
}

#[test]
fn a_self_signed_version_1_certificate_is_taken_where_nothing_is_verified() {
    let server = PgServer::start();
    // As a Citus node makes its own (citus' enable_ssl.c, CreateCertificate):
    // self-signed, no version set (so version 1), no extensions, valid for
    // zero seconds (notBefore = notAfter: expired as soon as it is made).
    server.openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=citus-auto-ssl",
        "-keyout",
        "node.key",
        "-out",
        "node.csr",
    ]);
    server.openssl(&[
        "x509", "-req", "-in", "node.csr", "-signkey", "node.key", "-days", "0", "-out", "node.crt",
    ]);
    let text = command("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(server.file("node.crt"))
        .run_within("openssl x509 -text");
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("Version: 1 (0x0)"),
        "the test certificate must be X.509 version 1"
    );
    server.serve_tls(&server.file("node.crt"), &server.file("node.key"), None);
    server.tls_only("citus_like");
    let agent = Agent::new();
    let base = format!("postgres://citus_like@127.0.0.1:{}/postgres", server.port);
    for (exp, query) in [
        ("default", ""),
        ("prefer", "?sslmode=prefer"),
        ("require", "?sslmode=require"),
        ("allow", "?sslmode=allow"),
    ] {
        let out = wrap(&agent, &format!("{base}{query}"), exp, &[]);
        lands(&server, &out, exp);
    }
    // Verified with itself as the root, it is refused: it has expired.
    let root = server.file("node.crt");
    let out = wrap(
        &agent,
        &format!("{base}?sslmode=verify-ca&sslrootcert={}", root.display()),
        "verify_ca",
        &[],
    );
    refused(
        &server,
        &out,
        "verify_ca",
        "the server's certificate could not be verified",
    );

    // The server sees the agent's connection encrypted while a run goes on.
    let go = agent.dir.path().join("go");
    let running = agent
        .wrap_python("live", &until_go("live"))
        .env("PMON_DATABASE_URL", format!("{base}?sslmode=require"))
        .env("PMON_GO", &go)
        .start("a run over TLS");
    wait_until("the run's first records are stored", || {
        stored(&server, "live") != "0"
    });
    let ssl = server.psql(
        "postgres",
        "SELECT bool_and(s.ssl), count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'pmon-agent'",
    );
    assert_eq!(ssl, "t|1", "the agent's one connection is encrypted");
    std::fs::write(&go, "").unwrap();
    let out = running.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3));

    let check = agent
        .cmd(&["db", "check"])
        .env("PMON_DATABASE_URL", &base)
        .env("HOME", agent.dir.path().join("home-none"))
        .run_within("db check over TLS");
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(
        text.lines().any(|l| l.starts_with("tls:        on (TLSv1.")
            && l.ends_with(", certificate not verified; sslmode=prefer")),
        "{text}"
    );
}

#[test]
fn verification_finds_its_roots_as_libpq_does_and_refusals_say_why() {
    let server = PgServer::start();
    let ca = server.enable_tls("pmon_tls");
    let other = server.make_ca("other");
    let agent = Agent::new();
    let port = server.port;
    let base = format!("postgres://pmon_tls@127.0.0.1:{port}/postgres");

    // Without TLS the role is turned away (so the cases below really use it).
    let out = wrap(&agent, &format!("{base}?sslmode=disable"), "plain", &[]);
    refused(
        &server,
        &out,
        "plain",
        "the server only accepts role \"pmon_tls\" over TLS",
    );

    let url = format!("{base}?sslmode=verify-full&sslrootcert={}", ca.display());
    lands(&server, &wrap(&agent, &url, "url_root", &[]), "url_root");
    let ca_text = ca.to_str().unwrap();
    let env = [("PGSSLMODE", "verify-full"), ("PGSSLROOTCERT", ca_text)];
    lands(&server, &wrap(&agent, &base, "env_root", &env), "env_root");
    let home = home_with(&agent, "home-ca", &[("root.crt", &ca)]);
    let url = format!("{base}?sslmode=verify-full");
    lands(
        &server,
        &wrap(&agent, &url, "home_root", &[("HOME", &home)]),
        "home_root",
    );

    // No root file anywhere: said, with where it was looked for.
    let out = wrap(&agent, &url, "no_root", &[]);
    let expected = format!(
        "the root certificate file {}/home-none/.postgresql/root.crt does not exist",
        agent.dir.path().display()
    );
    refused(&server, &out, "no_root", &expected);

    // A CA that did not sign the server's certificate.
    let url = format!("{base}?sslmode=verify-full&sslrootcert={}", other.display());
    let out = wrap(&agent, &url, "mistrusted", &[]);
    refused(
        &server,
        &out,
        "mistrusted",
        "the server's certificate could not be verified",
    );

    // `require` verifies when a root file exists (libpq's rule), else not.
    let url = format!("{base}?sslmode=require");
    let home = home_with(&agent, "home-other", &[("root.crt", &other)]);
    let out = wrap(&agent, &url, "require_other", &[("HOME", &home)]);
    refused(&server, &out, "require_other", "could not be verified");
    lands(
        &server,
        &wrap(&agent, &url, "require_none", &[]),
        "require_none",
    );

    // A certificate for another host name: verify-full refuses, verify-ca takes it.
    let (crt, key) = server.issue(
        "ca",
        "elsewhere",
        "db.elsewhere.example",
        Some("DNS:db.elsewhere.example"),
    );
    server.serve_tls(&crt, &key, None);
    let url = format!("{base}?sslmode=verify-full&sslrootcert={}", ca.display());
    let out = wrap(&agent, &url, "wrong_host", &[]);
    refused(
        &server,
        &out,
        "wrong_host",
        "the server's certificate is not for the host name in the URL",
    );
    let url = format!("{base}?sslmode=verify-ca&sslrootcert={}", ca.display());
    lands(&server, &wrap(&agent, &url, "any_host", &[]), "any_host");
}

#[test]
fn a_client_certificate_logs_in_from_the_url_or_from_home() {
    let server = PgServer::start();
    let ca = server.make_ca("ca");
    let (crt, key) = server.issue("ca", "server", "127.0.0.1", Some("IP:127.0.0.1"));
    server.serve_tls(&crt, &key, Some(&ca));
    server.psql("postgres", "CREATE ROLE certrole LOGIN SUPERUSER");
    server.hba_first(
        "hostssl all certrole 127.0.0.1/32 cert\nhostnossl all certrole 127.0.0.1/32 reject",
    );
    let (client_crt, client_key) = server.issue("ca", "client", "certrole", None);
    let agent = Agent::new();
    let base = format!(
        "postgres://certrole@127.0.0.1:{}/postgres?sslmode=verify-full&sslrootcert={}",
        server.port,
        ca.display()
    );
    let url = format!(
        "{base}&sslcert={}&sslkey={}",
        client_crt.display(),
        client_key.display()
    );
    lands(&server, &wrap(&agent, &url, "url_cert", &[]), "url_cert");
    let home = home_with(
        &agent,
        "home-cert",
        &[
            ("postgresql.crt", &client_crt),
            ("postgresql.key", &client_key),
        ],
    );
    lands(
        &server,
        &wrap(&agent, &base, "home_cert", &[("HOME", &home)]),
        "home_cert",
    );
    let out = wrap(&agent, &base, "no_cert", &[]);
    refused(&server, &out, "no_cert", "certificate");
}
