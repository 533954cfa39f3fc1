//! A real PostgreSQL server for the tests: `initdb` into a temp dir, started
//! with `pg_ctl` on a free port. initdb refuses to run as root, so as root the
//! server runs as the `postgres` user. One shared server serves the tests that
//! only need a database (each gets its own database); a test that stops the
//! server owns its own. A missing PostgreSQL is a loud failure, never a skip.

#![allow(dead_code)]

use super::bounded::{command, Bounded};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

pub const PASSWORD: &str = "pw-s3cret-9d2f";

pub struct PgServer {
    dir: tempfile::TempDir,
    bindir: PathBuf,
    pub port: u16,
}

static SHARED: OnceLock<PgServer> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// The shared server; each caller gets a fresh database on it.
pub fn shared_database() -> (&'static PgServer, String) {
    let server = SHARED.get_or_init(|| {
        // Statics are never dropped: stop the shared server when the test binary exits.
        extern "C" fn stop_shared() {
            if let Some(server) = SHARED.get() {
                server.stop_immediate();
            }
        }
        unsafe { libc::atexit(stop_shared) };
        PgServer::start()
    });
    let name = format!(
        "t{}_{}",
        std::process::id(),
        NEXT_DB.fetch_add(1, Ordering::SeqCst)
    );
    server.psql("postgres", &format!("CREATE DATABASE {name}"));
    (server, name)
}

fn bindir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    dirs.retain(|d| d.join("initdb").exists());
    dirs.sort_by_key(|d| {
        d.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop().expect(
        "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: install the postgresql package (.ci/run does)",
    )
}

pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

impl PgServer {
    pub fn start() -> PgServer {
        let dir = tempfile::Builder::new()
            .prefix("pmon-pg-")
            .tempdir()
            .expect("temp dir");
        if is_root() {
            let status = command("chown")
                .arg("postgres")
                .arg(dir.path())
                .status_within("chown of the PostgreSQL temp dir");
            assert!(
                status.success(),
                "chown of the PostgreSQL temp dir to postgres failed"
            );
        }
        let server = PgServer {
            bindir: bindir(),
            port: free_port(),
            dir,
        };
        let data = server.data_dir();
        let out = server.as_owner(
            &server.bindir.join("initdb"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        server.start_again();
        server
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn as_owner(&self, program: &Path, args: &[&str]) -> Output {
        let mut cmd = if is_root() {
            let mut c = command("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            command(program)
        };
        let what = format!("{} {}", program.display(), args.join(" "));
        cmd.args(args)
            .current_dir(self.dir.path())
            .run_within(&what)
    }

    /// Starts (or restarts) the server and waits until it accepts connections.
    pub fn start_again(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        let out = self.as_owner(
            &self.bindir.join("pg_ctl"),
            &[
                "-D",
                self.data_dir().to_str().unwrap(),
                "-o",
                &opts,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Makes `role` (created with `password`) log in over TCP with its
    /// password (SCRAM), as a production server would; everyone else keeps
    /// trust auth.
    pub fn require_password(&self, role: &str, password: &str) {
        self.psql(
            "postgres",
            &format!("CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{password}'"),
        );
        self.hba_first(&format!("host all {role} 127.0.0.1/32 scram-sha-256"));
    }

    /// Runs `openssl ARGS` in the server's temp dir (where the files it
    /// makes land).
    pub fn openssl(&self, args: &[&str]) {
        let out = command("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .run_within(&format!("openssl {}", args.join(" ")));
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A file in the server's temp dir.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Makes a CA: `NAME.crt` and `NAME.key`; returns the certificate.
    pub fn make_ca(&self, name: &str) -> PathBuf {
        let (crt, key) = (format!("{name}.crt"), format!("{name}.key"));
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &key,
            "-out",
            &crt,
        ]);
        self.file(&crt)
    }

    /// A certificate with common name `cn` (and `san`, e.g. `IP:127.0.0.1`)
    /// signed by the CA `ca`: `NAME.crt` and `NAME.key`.
    pub fn issue(&self, ca: &str, name: &str, cn: &str, san: Option<&str>) -> (PathBuf, PathBuf) {
        let (crt, key, csr) = (
            format!("{name}.crt"),
            format!("{name}.key"),
            format!("{name}.csr"),
        );
        self.openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            &key,
            "-out",
            &csr,
        ]);
        let mut args = vec![
            "x509".to_string(),
            "-req".into(),
            "-in".into(),
            csr,
            "-CA".into(),
            format!("{ca}.crt"),
            "-CAkey".into(),
            format!("{ca}.key"),
            "-CAcreateserial".into(),
            "-days".into(),
            "2".into(),
            "-out".into(),
            crt.clone(),
        ];
        if let Some(san) = san {
            let ext = format!("{name}.ext");
            std::fs::write(self.file(&ext), format!("subjectAltName = {san}\n")).unwrap();
            args.extend(["-extfile".into(), ext]);
        }
        self.openssl(&args.iter().map(String::as_str).collect::<Vec<_>>());
        (self.file(&crt), self.file(&key))
    }

    /// Serves `crt`/`key` as the server's certificate with TLS on; with
    /// `client_ca`, client certificates it signed can log in (`cert` auth).
    pub fn serve_tls(&self, crt: &Path, key: &Path, client_ca: Option<&Path>) {
        let data = self.data_dir();
        let mut files = vec![(crt, "server.crt"), (key, "server.key")];
        if let Some(ca) = client_ca {
            files.push((ca, "root.crt"));
        }
        for (from, to) in &files {
            std::fs::copy(from, data.join(to)).unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            data.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        if is_root() {
            for (_, to) in &files {
                let status = command("chown")
                    .arg("postgres")
                    .arg(data.join(to))
                    .status_within("chown of the server's TLS files");
                assert!(status.success());
            }
        }
        self.psql("postgres", "ALTER SYSTEM SET ssl = on");
        if client_ca.is_some() {
            self.psql("postgres", "ALTER SYSTEM SET ssl_ca_file = 'root.crt'");
        }
        self.reload();
    }

    /// Puts `lines` first in pg_hba.conf and reloads.
    pub fn hba_first(&self, lines: &str) {
        let hba = self.data_dir().join("pg_hba.conf");
        let old = std::fs::read_to_string(&hba).unwrap();
        std::fs::write(&hba, format!("{lines}\n{old}")).unwrap();
        self.reload();
    }

    /// Makes the server re-read its configuration, pg_hba.conf and TLS
    /// files, and waits until it has (a reload is asynchronous): until a
    /// new connection's `pg_conf_load_time()` is past the one before.
    fn reload(&self) {
        let loaded = || self.psql("postgres", "SELECT pg_conf_load_time()");
        let before = loaded();
        let out = self.as_owner(
            &self.bindir.join("pg_ctl"),
            &["-D", self.data_dir().to_str().unwrap(), "reload"],
        );
        assert!(out.status.success(), "pg_ctl reload failed");
        let deadline = std::time::Instant::now() + super::bounded::PATIENCE;
        while loaded() == before {
            assert!(
                std::time::Instant::now() < deadline,
                "gave up waiting for PostgreSQL to reload its configuration"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Turns TLS on with a certificate for 127.0.0.1 signed by a CA made
    /// here, and makes `role` log in over TLS only; returns the CA's
    /// certificate (what a client verifies the server with).
    pub fn enable_tls(&self, role: &str) -> PathBuf {
        let ca = self.make_ca("ca");
        let (crt, key) = self.issue("ca", "server", "127.0.0.1", Some("IP:127.0.0.1"));
        self.serve_tls(&crt, &key, None);
        self.tls_only(role);
        ca
    }

    /// Makes `role` (a superuser) that may log in over TLS only.
    pub fn tls_only(&self, role: &str) {
        self.psql("postgres", &format!("CREATE ROLE {role} LOGIN SUPERUSER"));
        self.hba_first(&format!(
            "hostssl all {role} 127.0.0.1/32 trust\nhostnossl all {role} 127.0.0.1/32 reject"
        ));
    }

    /// Kills the server the hard way: no checkpoint, connections cut.
    pub fn stop_immediate(&self) {
        self.as_owner(
            &self.bindir.join("pg_ctl"),
            &[
                "-D",
                self.data_dir().to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }

    /// What the server has written to its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// A URL with a password (trust auth ignores it), to check it never leaks.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres:{PASSWORD}@127.0.0.1:{}/{db}",
            self.port
        )
    }

    /// Runs SQL with psql; returns unaligned, tuples-only output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.try_psql(db, sql)
            .unwrap_or_else(|err| panic!("psql {sql:?} failed: {err}"))
    }

    /// Like `psql`, for SQL that may fail (a table not created yet).
    pub fn try_psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = command(self.bindir.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-v",
                "ON_ERROR_STOP=1",
                "-Atc",
                sql,
            ])
            .run_within(&format!("psql {sql:?}"));
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(String::from_utf8(out.stdout).unwrap().trim().to_string())
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop_immediate();
    }
}

pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().unwrap().port()
}
