//! PostgreSQL connections as the ecosystem expects them: a URL without a
//! password takes it from `PGPASSWORD` or a `.pgpass` file (`PGPASSFILE`),
//! as psql does; with neither, the agent says the login failed, spools, and
//! the program is unharmed. A config file that holds a password and that
//! others can read is warned about.

use crate::pg_server::PgServer;
use crate::util::*;
use std::process::Output;

const ROLE: &str = "pmon_writer";
const SECRET: &str = "writer-pw-71c2";

fn wrap(agent: &Agent, server: &PgServer, exp: &str, env: &[(&str, &str)]) -> Output {
    let url = format!("postgres://{ROLE}@127.0.0.1:{}/postgres", server.port);
    let mut cmd = agent.cmd(&[
        "wrap",
        "-e",
        exp,
        "--",
        "python3",
        "-c",
        "print('INFO:auth:line 1')",
    ]);
    cmd.env("PMON_DATABASE_URL", url)
        .env_remove("PGPASSWORD")
        .env("PGPASSFILE", agent.dir.path().join("no-such-pgpass"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.run_within("pmon-agent wrap -e")
}

fn stored(server: &PgServer, exp: &str) -> String {
    server
        .try_psql(
            "postgres",
            &format!("SELECT count(*) FROM pipeline_logs WHERE experiment_id = '{exp}'"),
        )
        .unwrap_or_default()
}

#[test]
fn the_password_comes_from_pgpassword_or_pgpass_like_psql() {
    let server = PgServer::start();
    server.require_password(ROLE, SECRET);
    let agent = Agent::new();

    let out = wrap(&agent, &server, "from_env", &[("PGPASSWORD", SECRET)]);
    assert!(out.status.success(), "{}", stderr_text(&out));
    assert_eq!(stderr_text(&out), "", "no warning: the login worked");
    assert_eq!(stored(&server, "from_env"), "1");

    let pgpass = agent.dir.path().join("pgpass");
    std::fs::write(
        &pgpass,
        format!("127.0.0.1:{}:*:{ROLE}:{SECRET}\n", server.port),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = wrap(
        &agent,
        &server,
        "from_file",
        &[("PGPASSFILE", pgpass.to_str().unwrap())],
    );
    assert!(out.status.success(), "{}", stderr_text(&out));
    assert_eq!(stored(&server, "from_file"), "1");

    // Neither: the login fails, the records wait in the spool, the program is fine.
    let out = wrap(&agent, &server, "no_password", &[]);
    assert!(
        out.status.success(),
        "the program's exit code, not the store's trouble"
    );
    let err = stderr_text(&out);
    assert!(err.contains("password") && err.contains(ROLE), "{err}");
    assert!(!err.contains(SECRET));
    assert_eq!(stored(&server, "no_password"), "0");
}

#[test]
fn a_config_file_others_can_read_with_a_password_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let agent = Agent::new().with_config(
        "logging:\n  database:\n    url: postgres://u:hunter2-secret@127.0.0.1:1/db\n",
    );
    let config = agent.dir.path().join("config.yml");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = agent.run(&["config", "show"]);
    let err = stderr_text(&out);
    assert!(
        err.contains(
            "holds a database password and other users can read it (mode 644); chmod 600 it"
        ),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = agent.run(&["config", "show"]);
    assert!(!stderr_text(&out).contains("holds a database password"));
}
