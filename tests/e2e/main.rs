//! End-to-end tests: the real binary, real `python3` programs, real signals,
//! a real SQLite store. One test binary, one module per area.

mod bad_input;
mod bounded;
mod chaos;
mod cli_docs;
mod closed_pipe;
mod config_discovery;
mod daemon;
mod diagnostics;
mod end_of_run;
mod faulthandler;
mod full_disk;
mod grafana;
mod holder;
mod memory;
mod metrics;
mod notify;
mod oom;
mod parsers;
mod pg_auth;
mod pg_server;
mod pg_tls;
mod pg_upgrade;
mod pgbouncer;
mod postgres;
mod queries;
mod retention;
mod run_monitored;
mod stall;
mod tail;
mod tail_logrotate;
mod tail_model;
mod tracebacks;
mod util;
mod watch;
mod wrap;
