//! Wrong database settings as a user meets them. A URL that is not
//! PostgreSQL's stops `wrap` before the program starts. A server that
//! answers and refuses for good (no such database or role, a wrong
//! password, a port that is not PostgreSQL's) is said once, plainly, with
//! the fix, while the program runs and its records spool. A server that
//! cannot take records for now (no connection left, read-only) is an
//! outage: retried quietly until the records land. `db check` says what the
//! agent would get.

use crate::pg_server::{shared_database, PgServer, PASSWORD};
use crate::util::*;
use serde_json::Value;

/// Retries every 200 ms, so a short run makes many attempts.
const FAST_RETRY: &str =
    "logging:\n  database:\n    flush_interval: 0.1\n    retry_first_backoff: 100ms\n    retry_max_backoff: 200ms\n    shutdown_timeout: 2s\n";

/// 60 lines over about 1.5 s.
const LINES: &str = "import time\nfor i in range(60):\n    print(f'INFO:load:line {i}', flush=True)\n    time.sleep(0.025)\n";

fn wrap(agent: &Agent, url: &str, exp: &str, program: &str) -> std::process::Output {
    agent
        .wrap_python(exp, program)
        .env("PMON_DATABASE_URL", url)
        .run_within(&format!("wrap -e {exp} with a database URL"))
}

fn pending(agent: &Agent) -> u64 {
    agent.json_lines(&["spool", "status"])[0]["pending"]
        .as_u64()
        .unwrap()
}

/// What a user must never see: a password, a crate path, a source line.
fn clean(text: &str) {
    for bad in [PASSWORD, "pw-s3cret", "sqlx", "::", " at line ", ".rs:"] {
        assert!(!text.contains(bad), "{bad:?} in {text}");
    }
}

#[test]
fn a_url_that_is_not_postgresql_stops_wrap_before_the_program_starts() {
    let agent = Agent::new();
    let marker = agent.dir.path().join("ran");
    let program = format!("open({:?}, 'w').close()", marker.to_str().unwrap());
    for url in [
        "mysql://root:pw-s3cret@127.0.0.1:3306/app",
        "localhost:5432",
    ] {
        let out = wrap(&agent, url, "mysql", &program);
        assert_eq!(out.status.code(), Some(1), "{url}");
        let err = stderr_text(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with("pmon-agent: error: the database URL ")
                && (err.contains("is not a PostgreSQL URL (its scheme is mysql://)")
                    || err.contains("is not a URL")),
            "{err}"
        );
        clean(&err);
        assert!(!marker.exists(), "{url}: the program must not start");
    }
    // In the config file: the same, as any wrong setting.
    let agent =
        Agent::new().with_config("logging:\n  database:\n    url: mysql://root@127.0.0.1/app\n");
    let out = agent.run(&["wrap", "-e", "cfg", "--", "python3", "-c", &program]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_text(&out).contains("is not a PostgreSQL URL"),
        "{}",
        stderr_text(&out)
    );
    assert!(!marker.exists());
    let out = agent.run(&["query", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_text(&out).contains("is not a PostgreSQL URL"));
}

/// nginx on a port of its own, as a URL with a web server's port would
/// meet (it answers bytes that are not HTTP with a 400 at once).
fn http_server(agent: &Agent) -> (Running, u16) {
    let port = crate::pg_server::free_port();
    let dir = agent.dir.path().join("nginx");
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nmaster_process off;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log;\n\
             events {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {dir};\n  proxy_temp_path {dir};\n\
             fastcgi_temp_path {dir};\n  uwsgi_temp_path {dir};\n  scgi_temp_path {dir};\n\
             server {{ listen 127.0.0.1:{port}; return 200 \"a web page\\n\"; }}\n}}\n",
            dir = dir.display()
        ),
    )
    .unwrap();
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("nginx not found: install nginx-light (scripts/test does)");
    let server = agent
        .program(nginx)
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(dir.join("error.log"))
        .start("nginx");
    wait_until("nginx listens", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (server, port)
}

#[test]
fn refusals_are_said_once_with_the_fix_while_the_program_runs_and_records_spool() {
    let (server, db) = shared_database();
    server.require_password("pwuser", "right-password");
    let port = server.port;
    let agent = Agent::new().with_config(FAST_RETRY);
    let (_http, http_port) = http_server(&agent);
    let cases = [
        (
            "nodb",
            format!("postgres://postgres:{PASSWORD}@127.0.0.1:{port}/nope_db"),
            format!("database \"nope_db\" does not exist on 127.0.0.1:{port}; create it (createdb -h 127.0.0.1 -p {port} nope_db) or correct the database name in the URL"),
        ),
        (
            "norole",
            format!("postgres://ghost@127.0.0.1:{port}/{db}"),
            format!("role \"ghost\" does not exist on 127.0.0.1:{port}; create it (CREATE ROLE ghost LOGIN) or correct the user name in the URL"),
        ),
        (
            "badpw",
            format!("postgres://pwuser:{PASSWORD}@127.0.0.1:{port}/{db}"),
            "password authentication failed for role \"pwuser\"; correct the password in the URL, in PGPASSWORD or in ~/.pgpass".to_string(),
        ),
        (
            "http",
            format!("postgres://postgres@127.0.0.1:{http_port}/{db}"),
            format!("127.0.0.1:{http_port} is not a PostgreSQL server (it answered like an HTTP server); check the host and port in the URL"),
        ),
        (
            "http_plain",
            format!("postgres://postgres@127.0.0.1:{http_port}/{db}?sslmode=disable"),
            format!("127.0.0.1:{http_port} is not a PostgreSQL server"),
        ),
    ];
    for (exp, url, reason) in &cases {
        let before = pending(&agent);
        let out = wrap(&agent, url, exp, LINES);
        assert_eq!(out.status.code(), Some(0), "{exp}: {}", stderr_text(&out));
        let err = stderr_text(&out);
        assert_eq!(
            err.lines().count(),
            2,
            "{exp}: said once, then what waits: {err}"
        );
        let waiting = format!("pmon-agent: {} records wait in the spool", before + 60);
        assert!(
            err.lines().nth(1).unwrap().starts_with(&waiting)
                && err.contains("refused them (said above)"),
            "{exp}: {err}"
        );
        assert!(
            err.starts_with("pmon-agent: warning: PostgreSQL at postgres://")
                && err.contains(&format!("refused the agent: {reason}"))
                && err.contains("shipped once PostgreSQL takes them"),
            "{exp}: {err}"
        );
        clean(&err);
        assert_eq!(
            pending(&agent) - before,
            60,
            "{exp}: every record waits in the spool"
        );
        // db check says the same, and that records would not land.
        let check = agent
            .cmd(&["db", "check"])
            .env("PMON_DATABASE_URL", url)
            .run_within("db check");
        assert_eq!(check.status.code(), Some(1), "{exp}");
        let text = String::from_utf8_lossy(&check.stdout);
        assert!(
            text.contains(&format!("reachable:  no: {reason}"))
                && text.contains("verdict:    records would NOT land"),
            "{exp}: {text}"
        );
        clean(&text);
    }
    // Mended (the database created), the spool ships them all, once.
    server.psql("postgres", "CREATE DATABASE nope_db");
    let out = agent
        .cmd(&["spool", "replay"])
        .env("PMON_DATABASE_URL", &cases[0].1)
        .run_within("spool replay");
    assert!(out.status.success(), "{}", stderr_text(&out));
    let stored = server.psql(
        "nope_db",
        "SELECT count(*), count(DISTINCT message) FROM pipeline_logs WHERE experiment_id = 'nodb'",
    );
    assert_eq!(stored, "60|60");
}

/// A role that may log in to a database of its own, not a superuser.
fn own_database(server: &PgServer, role: &str) -> String {
    server.psql("postgres", &format!("CREATE ROLE {role} LOGIN"));
    server.psql(
        "postgres",
        &format!("CREATE DATABASE {role}_db OWNER {role}"),
    );
    format!("postgres://{role}@127.0.0.1:{}/{role}_db", server.port)
}

/// A run whose records cannot land at first: once they wait in the spool,
/// `mend` runs; the run goes on and every record lands, exactly once,
/// without a word but the outage's one warning.
fn outage_then_mended(agent: &Agent, url: &str, exp: &str, mend: impl FnOnce()) -> String {
    let go = agent.dir.path().join(format!("go-{exp}"));
    let program = until_go("line");
    let wrap = agent
        .wrap_python(exp, &program)
        .env("PMON_DATABASE_URL", url)
        .env("PMON_GO", &go)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .start(&format!("wrap -e {exp} through an outage"));
    wait_until("records wait in the spool", || pending(agent) > 0);
    mend();
    wait_until("records land without anyone replaying them", || {
        pending(agent) == 0
    });
    std::fs::write(&go, "").unwrap();
    let out = wrap.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr_text(&out));
    stderr_text(&out)
}

#[test]
fn too_many_connections_and_a_read_only_database_are_outages_retried_quietly() {
    let (server, _) = shared_database();
    let agent = Agent::new().with_config(FAST_RETRY);

    let url = own_database(server, "busy");
    server.psql("postgres", "ALTER ROLE busy CONNECTION LIMIT 0");
    let err = outage_then_mended(&agent, &url, "busy", || {
        server.psql("postgres", "ALTER ROLE busy CONNECTION LIMIT -1");
    });
    assert_eq!(err.lines().count(), 2, "{err}");
    assert!(
        err.contains(
            "too many connections for role \"busy\" (SQLSTATE 53300); records are spooled"
        ) && err.contains("answers again; replayed")
            && !err.contains("refused"),
        "{err}"
    );
    clean(&err);

    let url = own_database(server, "standby");
    server.psql(
        "postgres",
        "ALTER DATABASE standby_db SET default_transaction_read_only = on",
    );
    let err = outage_then_mended(&agent, &url, "standby", || {
        server.psql(
            "postgres",
            "ALTER DATABASE standby_db SET default_transaction_read_only = off",
        );
    });
    assert!(
        err.contains("read-only transaction (SQLSTATE 25006); records are spooled")
            && !err.contains("refused"),
        "{err}"
    );
    clean(&err);
    for (db, exp) in [("busy_db", "busy"), ("standby_db", "standby")] {
        let counted = server.psql(
            db,
            &format!("SELECT count(*) = count(DISTINCT message), count(*) > 0 FROM pipeline_logs WHERE experiment_id = '{exp}'"),
        );
        assert_eq!(counted, "t|t", "{exp}: stored, each once");
    }
}

fn check(agent: &Agent, url: &str) -> (Option<i32>, String, Value) {
    let run = |format: &str| {
        agent
            .cmd(&["db", "check", "--format", format])
            .env("PMON_DATABASE_URL", url)
            .run_within("db check")
    };
    let text = run("text");
    let json = run("json");
    assert_eq!(text.status.code(), json.status.code());
    let value = serde_json::from_slice(&json.stdout).expect("one JSON object");
    (
        text.status.code(),
        String::from_utf8_lossy(&text.stdout).into_owned(),
        value,
    )
}

#[test]
fn db_check_says_what_the_agent_would_get_and_changes_nothing() {
    let (server, db) = shared_database();
    let agent = Agent::new();
    let url = server.url(&db);
    let (code, text, json) = check(&agent, &url);
    assert_eq!(code, Some(0), "{text}");
    let version = server.psql("postgres", "SHOW server_version");
    for line in [
        format!("database:   postgres://postgres:***@127.0.0.1:{}/{db}", server.port),
        format!("reachable:  yes, PostgreSQL {version}, as role postgres in database {db}"),
        "tls:        off; sslmode=prefer".to_string(),
        "schema:     version 0 of 7, 7 migrations pending (applied at the agent's first connect, or by pmon-agent db migrate)".to_string(),
        "privileges: all the agent needs".to_string(),
        "citus:      not installed".to_string(),
        "spool:      0 records waiting".to_string(),
        "verdict:    records would land".to_string(),
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
    }
    assert_eq!(json["would_land"], true);
    assert_eq!(json["schema"]["pending"], 7);
    assert_eq!(json["tls"]["encrypted"], false);
    clean(&text);
    assert_eq!(
        server.psql(&db, "SELECT to_regclass('_sqlx_migrations') IS NULL"),
        "t",
        "db check migrates nothing"
    );

    // The first connect migrates, and leaves no error in the server's log.
    let out = wrap(&agent, &url, "first", "print('INFO:x:hello')");
    assert!(out.status.success(), "{}", stderr_text(&out));
    let log = server.log();
    assert!(!log.contains("_sqlx_migrations\" does not exist"), "{log}");
    let (code, text, _) = check(&agent, &url);
    assert_eq!(code, Some(0));
    assert!(
        text.contains("schema:     version 7 of 7, up to date"),
        "{text}"
    );

    // A role that may read but not write: named, and records would not land.
    server.psql(
        &db,
        "CREATE ROLE reader LOGIN; GRANT SELECT ON ALL TABLES IN SCHEMA public TO reader",
    );
    let reader = format!("postgres://reader@127.0.0.1:{}/{db}", server.port);
    let (code, text, json) = check(&agent, &reader);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("privileges: lacks INSERT on pipeline_logs, to store records;")
            && text.contains("membership in the role that owns pipeline_logs"),
        "{text}"
    );
    assert_eq!(json["would_land"], false);
    // On a database not yet migrated, the right to create the tables.
    server.psql("postgres", "CREATE DATABASE locked_db");
    server.psql("locked_db", "REVOKE CREATE ON SCHEMA public FROM PUBLIC");
    let locked = format!("postgres://reader@127.0.0.1:{}/locked_db", server.port);
    let (code, text, _) = check(&agent, &locked);
    assert_eq!(code, Some(1));
    assert!(
        text.contains("privileges: lacks CREATE on the current schema"),
        "{text}"
    );

    // Nothing listening: an outage.
    let (code, text, json) = check(&agent, "postgres://postgres@127.0.0.1:1/db");
    assert_eq!(code, Some(1));
    assert!(
        text.contains("reachable:  no (an outage: the agent retries): could not reach 127.0.0.1:1: nothing listens there"),
        "{text}"
    );
    assert_eq!(
        (json["reachable"].clone(), json["outage"].clone()),
        (Value::Bool(false), Value::Bool(true))
    );

    // No database configured: the embedded store, where records land.
    let out = agent.run(&["db", "check"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("no database URL is configured"));
}
