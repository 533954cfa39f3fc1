//! TLS to PostgreSQL: `sslmode=require`, and `verify-full` with the server's
//! CA in `sslrootcert`, against a real server with TLS on and a role that may
//! only log in over TLS; a server whose certificate the CA did not sign is
//! refused (the records wait in the spool, the program is unharmed).

use crate::pg_server::PgServer;
use crate::util::*;

const ROLE: &str = "pmon_tls";

#[test]
fn tls_require_and_verify_full_connect_and_a_wrong_ca_is_refused() {
    let server = PgServer::start();
    let ca = server.enable_tls(ROLE);
    let agent = Agent::new();
    let base = format!("postgres://{ROLE}@127.0.0.1:{}/postgres", server.port);
    let wrap = |exp: &str, query: &str| {
        let url = format!("{base}?{query}");
        agent
            .cmd(&[
                "wrap",
                "-e",
                exp,
                "--no-echo",
                "--",
                "python3",
                "-c",
                "print('INFO:tls:line 1')",
            ])
            .env("PMON_DATABASE_URL", url)
            .output()
            .unwrap()
    };
    let stored = |exp: &str| {
        server
            .try_psql(
                "postgres",
                &format!("SELECT count(*) FROM pipeline_logs WHERE experiment_id = '{exp}'"),
            )
            // No table yet: nothing stored.
            .unwrap_or_else(|_| "0".into())
    };
    // Without TLS the role is turned away (so the two below really use it).
    let out = wrap("plain", "sslmode=disable");
    assert!(
        stderr_text(&out).contains("could not connect to PostgreSQL"),
        "{}",
        stderr_text(&out)
    );
    assert_eq!(stored("plain"), "0");

    let out = wrap("required", "sslmode=require");
    assert_eq!(stderr_text(&out), "");
    assert_eq!(stored("required"), "1");

    let out = wrap(
        "verified",
        &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
    );
    assert_eq!(stderr_text(&out), "");
    assert_eq!(stored("verified"), "1");

    // A CA that did not sign the server's certificate.
    let other = agent.dir.path().join("other-ca.crt");
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=other CA",
            "-keyout",
        ])
        .arg(agent.dir.path().join("other-ca.key"))
        .arg("-out")
        .arg(&other)
        .output()
        .unwrap();
    assert!(made.status.success());
    let out = wrap(
        "mistrusted",
        &format!("sslmode=verify-full&sslrootcert={}", other.display()),
    );
    assert!(out.status.success(), "the program is unharmed");
    let err = stderr_text(&out);
    assert!(
        err.contains("could not connect to PostgreSQL") && err.contains("records are spooled"),
        "{err}"
    );
    assert_eq!(stored("mistrusted"), "0");
}
