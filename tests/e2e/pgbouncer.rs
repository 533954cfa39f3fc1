//! Behind PgBouncer (Debian's 1.18) in transaction pooling, as many teams
//! run PostgreSQL: a wrapped program's records, its traceback and its
//! metrics arrive (on a database never migrated before, so the migrations
//! too go through the pooler), and every query answers through it.
//! PgBouncer refuses startup parameters it does not know and lends each
//! transaction whichever server connection is free, so the agent sends no
//! `extra_float_digits` and no named prepared statements.

use crate::pg_server::{free_port, is_root, shared_database};
use crate::util::*;
use std::path::PathBuf;

struct PgBouncer {
    dir: tempfile::TempDir,
    port: u16,
}

impl PgBouncer {
    fn start(server_port: u16) -> PgBouncer {
        let dir = tempfile::Builder::new()
            .prefix("pmon-pgbouncer-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let path = |name: &str| dir.path().join(name);
        std::fs::write(
            path("pgbouncer.ini"),
            format!(
                "[databases]\n* = host=127.0.0.1 port={server_port}\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nauth_type = trust\nauth_file = {}\npool_mode = transaction\nunix_socket_dir =\nlogfile = {}\npidfile = {}\n",
                path("users.txt").display(),
                path("pgbouncer.log").display(),
                path("pgbouncer.pid").display(),
            ),
        )
        .unwrap();
        std::fs::write(path("users.txt"), "\"postgres\" \"\"\n").unwrap();
        // Debian puts it in /usr/sbin, which a user's PATH may lack.
        let program = if std::path::Path::new("/usr/sbin/pgbouncer").exists() {
            "/usr/sbin/pgbouncer"
        } else {
            "pgbouncer"
        };
        let mut cmd = if is_root() {
            // PgBouncer will not run as root.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
            let mut c = command("runuser");
            c.args(["-u", "postgres", "--", program]);
            c
        } else {
            command(program)
        };
        let out = cmd
            .arg("-d")
            .arg(path("pgbouncer.ini"))
            .run_within("runuser");
        assert!(out.status.success(), "pgbouncer: {}", stderr_text(&out));
        let bouncer = PgBouncer { dir, port };
        wait_until("PgBouncer listens", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        bouncer
    }

    fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pgbouncer.log")).unwrap_or_default()
    }

    fn pidfile(&self) -> PathBuf {
        self.dir.path().join("pgbouncer.pid")
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.pidfile()) {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
    }
}

#[test]
fn everything_works_through_pgbouncer_in_transaction_pooling() {
    let (server, db) = shared_database();
    let bouncer = PgBouncer::start(server.port);
    let agent = Agent::new().with_config("monitoring:\n  metrics_interval: 0.1\n");
    let program = "import time\nfor i in range(300):\n    print(f'INFO:pool:line {i}', flush=True)\n    time.sleep(0.001)\nprint('##pmon[metric name=loss value=0.5 step=1]', flush=True)\nraise ValueError('pooled')\n";
    let with_url = |args: &[&str]| {
        let out = agent
            .cmd(args)
            .env("PMON_DATABASE_URL", bouncer.url(&db))
            .run_within(&format!("pmon-agent {} through pgbouncer", args.join(" ")));
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr_text(&out),
        )
    };
    let (code, _, err) = with_url(&[
        "wrap",
        "-e",
        "pooled",
        "--no-echo",
        "--",
        "python3",
        "-c",
        program,
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        !err.contains("warning"),
        "nothing spooled, no error: {err}\n{}",
        bouncer.log()
    );
    assert_eq!(
        server.psql(&db, "SELECT count(*), count(DISTINCT message) FROM pipeline_logs WHERE message LIKE 'line %'"),
        "300|300"
    );
    assert_eq!(
        server.psql(
            &db,
            "SELECT exception_type FROM pipeline_logs WHERE traceback IS NOT NULL"
        ),
        "ValueError"
    );
    for args in [
        &["query", "list"][..],
        &["query", "status", "pooled"],
        &["query", "logs", "pooled", "--limit", "5"],
        &["query", "errors", "pooled", "--traceback"],
        &["query", "metrics", "pooled", "--type", "user"],
    ] {
        // Twice: a second round lands on server connections the first used.
        for _ in 0..2 {
            let (code, out, err) = with_url(args);
            assert_eq!(code, Some(0), "{args:?}: {err}\n{}", bouncer.log());
            assert!(!out.is_empty(), "{args:?} printed nothing");
        }
    }
    assert!(
        server.psql(
            &db,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
        ) == "0",
        "no advisory lock left held on a pooled server connection"
    );
}
