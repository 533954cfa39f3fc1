//! `db check`: what the agent gets from its database URL, without changing
//! anything — reachable or not (and why), TLS, the server, the schema's
//! version, the privileges the agent lacks, Citus. It connects as the agent
//! does ([`super::connect`]) but applies no migration.

use super::connect::{self, Target};
use super::failure::{self, Lasting};
use super::{applied_count, unnamed, PostgresStore, MIGRATIONS, MIN_SERVER_VERSION};
use serde::Serialize;
use sqlx::postgres::PgConnection;
use sqlx::Row;

/// What a connection attempt found.
#[derive(Debug, Default, Serialize)]
pub struct Inspection {
    pub url: String,
    pub reachable: bool,
    /// Why the agent cannot store records there, if it cannot.
    pub problem: Option<String>,
    /// Whether `problem` passes by itself (an outage) or needs a fix.
    pub outage: bool,
    pub server_version: Option<String>,
    pub user: Option<String>,
    pub database: Option<String>,
    pub tls: Option<Tls>,
    pub schema: Option<Schema>,
    /// Privileges the agent needs and lacks, each with what it is for.
    pub missing_privileges: Vec<String>,
    pub citus: Option<Citus>,
}

#[derive(Debug, Serialize)]
pub struct Tls {
    pub encrypted: bool,
    pub version: Option<String>,
    pub cipher: Option<String>,
    /// How the server's certificate is verified; `None`: it is not.
    pub verified: Option<String>,
    pub sslmode: String,
}

#[derive(Debug, Serialize)]
pub struct Schema {
    pub version: usize,
    pub latest: usize,
    pub pending: usize,
}

#[derive(Debug, Serialize)]
pub struct Citus {
    pub version: String,
    pub distributed: Vec<String>,
    pub not_distributed: Vec<String>,
}

impl Inspection {
    /// Whether records sent now would be stored.
    pub fn would_land(&self) -> bool {
        self.reachable && self.problem.is_none() && self.missing_privileges.is_empty()
    }
}

/// The tables the agent writes, with the rights each write takes.
const WRITES: [(&str, &str); 6] = [
    ("pipeline_logs", "INSERT, SELECT"),
    ("pipeline_events", "INSERT, SELECT"),
    ("pipeline_metrics", "INSERT, SELECT"),
    ("pipeline_progress", "INSERT, SELECT, UPDATE"),
    ("pipeline_runs", "INSERT, SELECT, UPDATE"),
    ("pipeline_batches", "INSERT, SELECT"),
];

impl PostgresStore {
    /// Connects without migrating and looks.
    pub fn inspect(&mut self) -> Inspection {
        let mut found = Inspection {
            url: self.display_url.clone(),
            ..Inspection::default()
        };
        let target = self.target.clone();
        let wait = self.limit(super::CONNECT_TIMEOUT);
        self.rt.block_on(async {
            let conn = match tokio::time::timeout(wait, connect::connect(&target)).await {
                Err(_) => {
                    found.problem = Some(format!(
                        "no answer within {}",
                        humantime::format_duration(wait)
                    ));
                    found.outage = true;
                    return;
                }
                Ok(Err(f)) => {
                    found.outage = f.lasting == Lasting::Outage;
                    found.problem = Some(f.text);
                    return;
                }
                Ok(Ok(conn)) => conn,
            };
            found.reachable = true;
            if let Err(e) = look(conn, &target, &mut found).await {
                let f = failure::describe(&e, &target.peer());
                found.outage = f.lasting == Lasting::Outage;
                found.problem = Some(f.text);
            }
        });
        found
    }
}

async fn look(mut conn: PgConnection, target: &Target, found: &mut Inspection) -> sqlx::Result<()> {
    let row = unnamed(
        "SELECT current_setting('server_version'), current_setting('server_version_num')::bigint,
                current_user::text, current_database()::text, pg_is_in_recovery()",
    )
    .fetch_one(&mut conn)
    .await?;
    found.server_version = Some(row.get(0));
    found.user = Some(row.get(2));
    found.database = Some(row.get(3));
    if row.get::<i64, _>(1) < MIN_SERVER_VERSION {
        found.problem = Some(format!(
            "PostgreSQL {} is too old; pmon-agent needs 13 or newer",
            row.get::<String, _>(0)
        ));
    }
    if row.get::<bool, _>(4) {
        found.problem = Some(
            "the server is a read-only standby; records wait in the spool until the URL leads to the primary"
                .into(),
        );
        found.outage = true;
    }
    let tls = unnamed("SELECT ssl, version, cipher FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_optional(&mut conn)
        .await?;
    let encrypted = tls.as_ref().is_some_and(|r| r.get::<bool, _>(0));
    found.tls = Some(Tls {
        encrypted,
        version: tls.as_ref().and_then(|r| r.get(1)),
        cipher: tls.as_ref().and_then(|r| r.get(2)),
        verified: target
            .verification()
            .filter(|_| encrypted)
            .map(str::to_string),
        sslmode: format!("{:?}", target.mode)
            .to_lowercase()
            .replace("verify", "verify-"),
    });
    let version = applied_count(&mut conn).await;
    found.schema = Some(Schema {
        version,
        latest: MIGRATIONS.len(),
        pending: MIGRATIONS.len().saturating_sub(version),
    });
    privileges(&mut conn, version, found).await?;
    citus(&mut conn, found).await?;
    Ok(())
}

/// The rights a write takes that the role lacks.
async fn privileges(
    conn: &mut PgConnection,
    version: usize,
    found: &mut Inspection,
) -> sqlx::Result<()> {
    let pending = version < MIGRATIONS.len();
    if pending {
        let may_create: bool = unnamed("SELECT has_schema_privilege(current_schema(), 'CREATE')")
            .fetch_one(&mut *conn)
            .await?
            .get(0);
        if !may_create {
            found.missing_privileges.push(
                "CREATE on the current schema, to create the tables (or run pmon-agent db migrate once as a role that may)"
                    .into(),
            );
        }
    }
    if version == 0 {
        return Ok(());
    }
    for (table, rights) in WRITES {
        let mut lacking = Vec::new();
        for right in rights.split(", ") {
            let has: Option<bool> = unnamed(
                "SELECT CASE WHEN to_regclass($1) IS NULL THEN NULL ELSE has_table_privilege($1, $2) END",
            )
            .bind(table)
            .bind(right)
            .fetch_one(&mut *conn)
            .await?
            .get(0);
            if has == Some(false) {
                lacking.push(right);
            }
        }
        if !lacking.is_empty() {
            found.missing_privileges.push(format!(
                "{} on {table}, to store records",
                lacking.join(", ")
            ));
        }
    }
    // A day partition is created by a member of the parent table's owner.
    let owns: Option<bool> = unnamed(
        "SELECT pg_has_role(current_user, relowner, 'USAGE') FROM pg_class WHERE oid = to_regclass('pipeline_logs')",
    )
    .fetch_optional(&mut *conn)
    .await?
    .map(|r| r.get(0));
    if owns == Some(false) {
        found.missing_privileges.push(
            "membership in the role that owns pipeline_logs, to create a day's partitions".into(),
        );
    }
    Ok(())
}

async fn citus(conn: &mut PgConnection, found: &mut Inspection) -> sqlx::Result<()> {
    let version = unnamed("SELECT extversion FROM pg_extension WHERE extname = 'citus'")
        .fetch_optional(&mut *conn)
        .await?;
    let Some(version) = version.map(|r| r.get::<String, _>(0)) else {
        return Ok(());
    };
    let distributed: Vec<String> =
        unnamed("SELECT logicalrelid::regclass::text FROM pg_dist_partition")
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
    let not_distributed = super::citus::TABLES
        .iter()
        .filter(|t| !distributed.iter().any(|d| d == *t))
        .map(|t| t.to_string())
        .collect();
    found.citus = Some(Citus {
        version,
        distributed: distributed
            .into_iter()
            .filter(|d| super::citus::TABLES.contains(&d.as_str()))
            .collect(),
        not_distributed,
    });
    Ok(())
}
