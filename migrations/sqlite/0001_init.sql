-- The embedded store: the same table names and columns as PostgreSQL, so the
-- SQL in the README runs verbatim on both. Timestamps are RFC 3339 text in UTC
-- with a fixed width (microseconds), so text order is time order.

CREATE TABLE pipeline_runs (
    run_id        TEXT PRIMARY KEY,
    experiment_id TEXT NOT NULL,
    ordinal       INTEGER NOT NULL,
    state         TEXT NOT NULL,
    command       TEXT NOT NULL,           -- JSON array of argv
    tags          TEXT NOT NULL DEFAULT '{}', -- JSON object
    host          TEXT NOT NULL,
    agent_pid     INTEGER,
    agent_start   INTEGER,                 -- /proc start time, guards against pid reuse
    child_pid     INTEGER,
    started_at    TEXT NOT NULL,
    ended_at      TEXT,
    exit_code     INTEGER,
    signal        INTEGER,
    UNIQUE (experiment_id, ordinal)
);
CREATE INDEX pipeline_runs_experiment ON pipeline_runs (experiment_id, ordinal);

CREATE TABLE pipeline_logs (
    id                INTEGER PRIMARY KEY,
    experiment_id     TEXT NOT NULL,
    run_id            TEXT NOT NULL,
    origin            TEXT NOT NULL DEFAULT '',  -- stdout/stderr/stdin, or file:<dev>:<inode>:<head hash>
    seq               INTEGER NOT NULL,    -- a counter per run, or a file record's byte offset
    timestamp         TEXT NOT NULL,
    level             TEXT NOT NULL,
    logger            TEXT,
    message           TEXT NOT NULL,
    traceback         TEXT,
    exception_type    TEXT,
    exception_message TEXT,
    stream            TEXT NOT NULL,
    source            TEXT NOT NULL,
    UNIQUE (run_id, origin, seq)          -- the idempotency key
);
CREATE INDEX pipeline_logs_experiment_time ON pipeline_logs (experiment_id, timestamp);
CREATE INDEX pipeline_logs_errors ON pipeline_logs (experiment_id, timestamp)
    WHERE level IN ('ERROR', 'CRITICAL');

CREATE TABLE pipeline_events (
    id            INTEGER PRIMARY KEY,
    event_id      TEXT NOT NULL UNIQUE,      -- ULID: a replayed event lands once
    experiment_id TEXT NOT NULL,
    run_id        TEXT NOT NULL,
    timestamp     TEXT NOT NULL,
    event_type    TEXT NOT NULL,
    details       TEXT NOT NULL DEFAULT '{}'  -- JSON object
);
CREATE INDEX pipeline_events_run ON pipeline_events (run_id, timestamp);

CREATE TABLE pipeline_progress (
    experiment_id TEXT NOT NULL,
    run_id        TEXT NOT NULL,
    task          TEXT NOT NULL,
    current       REAL NOT NULL,
    total         REAL,
    unit          TEXT,
    rate          REAL,
    updated_at    TEXT NOT NULL,
    PRIMARY KEY (run_id, task)
);

CREATE TABLE pipeline_metrics (
    id            INTEGER PRIMARY KEY,
    experiment_id TEXT NOT NULL,
    run_id        TEXT NOT NULL,
    timestamp     TEXT NOT NULL,
    metric_type   TEXT NOT NULL,
    name          TEXT NOT NULL,
    value         REAL NOT NULL,
    unit          TEXT
);
CREATE INDEX pipeline_metrics_experiment ON pipeline_metrics (experiment_id, metric_type, timestamp);

CREATE VIEW pipeline_progress_summary AS
SELECT p.experiment_id,
       p.run_id,
       r.ordinal AS run,
       p.task,
       p.current,
       p.total,
       CASE WHEN p.total > 0 THEN ROUND(100.0 * p.current / p.total, 1) END AS percent,
       p.unit,
       p.rate,
       p.updated_at
FROM pipeline_progress p
LEFT JOIN pipeline_runs r ON r.run_id = p.run_id;

-- The spool: batches waiting for PostgreSQL when it is configured but down.
-- A batch is deleted only after PostgreSQL has committed it.
CREATE TABLE pmon_spool (
    id            INTEGER PRIMARY KEY,
    experiment_id TEXT NOT NULL,
    run_id        TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    records       INTEGER NOT NULL,
    bytes         INTEGER NOT NULL,
    payload       BLOB NOT NULL               -- the batch as JSON
);

-- How far `tail` has read each file, by file identity (not path). Advanced in
-- the same transaction as the records (or the spooled batch) up to that offset.
CREATE TABLE pmon_checkpoints (
    experiment_id TEXT NOT NULL,
    dev           INTEGER NOT NULL,
    ino           INTEGER NOT NULL,
    head          BLOB NOT NULL,               -- the file's first bytes: tells inode reuse apart
    generation    INTEGER NOT NULL DEFAULT 0,  -- bumped on truncation or inode reuse
    earlier_head  BLOB,                        -- what the inode held before, and how far it was read:
    earlier_offset INTEGER,                    -- recognises a copytruncate copy after a restart
    path          TEXT NOT NULL,               -- where it was last seen
    offset        INTEGER NOT NULL,
    updated_at    TEXT NOT NULL,
    PRIMARY KEY (experiment_id, dev, ino)
);
