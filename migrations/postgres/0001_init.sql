-- pmon-agent schema for PostgreSQL (13 or newer). The same table and column
-- names as the embedded SQLite store, so the README's SQL runs on both.
-- Every log record carries (run_id, origin, seq): a batch delivered twice
-- (replayed from the spool after a crash mid-commit) is stored once.

CREATE TABLE IF NOT EXISTS pipeline_runs (
    run_id        TEXT PRIMARY KEY,
    experiment_id TEXT NOT NULL,
    ordinal       BIGINT NOT NULL,
    state         TEXT NOT NULL,
    command       JSONB NOT NULL DEFAULT '[]',
    tags          JSONB NOT NULL DEFAULT '{}',
    host          TEXT NOT NULL,
    agent_pid     BIGINT,
    agent_start   BIGINT,
    child_pid     BIGINT,
    started_at    TIMESTAMPTZ NOT NULL,
    ended_at      TIMESTAMPTZ,
    exit_code     INTEGER,
    signal        INTEGER
);
CREATE INDEX IF NOT EXISTS pipeline_runs_experiment ON pipeline_runs (experiment_id, started_at);

CREATE TABLE IF NOT EXISTS pipeline_logs (
    id                BIGSERIAL PRIMARY KEY,
    experiment_id     TEXT NOT NULL,
    run_id            TEXT NOT NULL,
    origin            TEXT NOT NULL DEFAULT '',
    seq               BIGINT NOT NULL,
    timestamp         TIMESTAMPTZ NOT NULL,
    level             TEXT NOT NULL,
    logger            TEXT,
    message           TEXT NOT NULL,
    traceback         TEXT,
    exception_type    TEXT,
    exception_message TEXT,
    stream            TEXT NOT NULL,
    source            TEXT NOT NULL,
    UNIQUE (run_id, origin, seq)
);
CREATE INDEX IF NOT EXISTS pipeline_logs_experiment_time ON pipeline_logs (experiment_id, timestamp);
CREATE INDEX IF NOT EXISTS pipeline_logs_errors ON pipeline_logs (experiment_id, timestamp)
    WHERE level IN ('ERROR', 'CRITICAL');

CREATE TABLE IF NOT EXISTS pipeline_events (
    id            BIGSERIAL PRIMARY KEY,
    event_id      TEXT NOT NULL UNIQUE,
    experiment_id TEXT NOT NULL,
    run_id        TEXT NOT NULL,
    timestamp     TIMESTAMPTZ NOT NULL,
    event_type    TEXT NOT NULL,
    details       JSONB NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS pipeline_events_run ON pipeline_events (run_id, timestamp);

CREATE TABLE IF NOT EXISTS pipeline_progress (
    experiment_id TEXT NOT NULL,
    run_id        TEXT NOT NULL,
    task          TEXT NOT NULL,
    current       DOUBLE PRECISION NOT NULL,
    total         DOUBLE PRECISION,
    unit          TEXT,
    rate          DOUBLE PRECISION,
    updated_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (run_id, task)
);

CREATE TABLE IF NOT EXISTS pipeline_metrics (
    id            BIGSERIAL PRIMARY KEY,
    experiment_id TEXT NOT NULL,
    run_id        TEXT NOT NULL,
    timestamp     TIMESTAMPTZ NOT NULL,
    metric_type   TEXT NOT NULL,
    name          TEXT NOT NULL,
    value         DOUBLE PRECISION NOT NULL,
    unit          TEXT
);
CREATE INDEX IF NOT EXISTS pipeline_metrics_experiment ON pipeline_metrics (experiment_id, metric_type, timestamp);

CREATE OR REPLACE VIEW pipeline_progress_summary AS
SELECT p.experiment_id,
       p.run_id,
       r.ordinal AS run,
       p.task,
       p.current,
       p.total,
       CASE WHEN p.total > 0 THEN ROUND((100.0 * p.current / p.total)::numeric, 1) END AS percent,
       p.unit,
       p.rate,
       p.updated_at
FROM pipeline_progress p
LEFT JOIN pipeline_runs r ON r.run_id = p.run_id;
