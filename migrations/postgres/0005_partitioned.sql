-- A schema for append-heavy logs, chosen by measurement (bench/README.md,
-- "Schema variants"), upgrading databases of 0001–0004 in place.
--
-- * pipeline_logs and pipeline_metrics are partitioned by day (UTC) on
--   `timestamp`. The agent creates each day's partition before it writes
--   the first row of that day (and the next day's ahead); `db prune` drops
--   whole days. Rows stored before this migration stay where they are, as
--   the partition `…_legacy` covering every day up to the upgrade.
-- * No per-row unique key on pipeline_logs: it cost ~40% of COPY's rate.
--   Exactly-once comes from `pipeline_batches`, a ledger with one row per
--   batch and origin naming the seq range it stored, written in the same
--   transaction as the batch's rows; a batch delivered again (replayed from
--   the spool, a file re-read after a crash) skips the seqs the ledger holds.
-- * `id` is given by the agent: batch number (sequence
--   pipeline_log_batches) × 32768 + position in the batch. Ordered by
--   arrival like the old bigserial, without a sequence call per row; found
--   by a BRIN index, as the rows are appended in id order.
-- * Indexes: BRIN on time and on id, and the two partial indexes of
--   ERROR/CRITICAL rows (a small share) for the error queries. No index has
--   an entry per row: a b-tree on (experiment_id, timestamp) cost ~25% of
--   COPY's rate, a bloom BRIN on experiment_id a quarter of the server's
--   CPU per row. An experiment's rows are found through the ledger instead:
--   each batch's id range, read by the BRIN on id.
-- * Every key leads with experiment_id, so each table can be distributed by
--   it on Citus (`pmon-agent db distribute`): Citus refuses a unique key
--   that does not include the distribution column.

-- The ledger.
CREATE TABLE IF NOT EXISTS pipeline_batches (
    experiment_id TEXT NOT NULL,
    run_id        TEXT NOT NULL,
    origin        TEXT NOT NULL,
    first_seq     BIGINT NOT NULL,
    last_seq      BIGINT NOT NULL,
    batch         BIGINT NOT NULL,
    rows          INTEGER NOT NULL,
    first_time    TIMESTAMPTZ,
    last_time     TIMESTAMPTZ,
    stored_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (experiment_id, run_id, origin, last_seq)
);
CREATE INDEX IF NOT EXISTS pipeline_batches_time ON pipeline_batches (last_time);
-- The highest stored batch number: where `query logs -f` starts following.
CREATE INDEX IF NOT EXISTS pipeline_batches_batch ON pipeline_batches (batch);
CREATE SEQUENCE IF NOT EXISTS pipeline_log_batches;

-- pipeline_logs: the old table becomes the legacy partition.
ALTER TABLE pipeline_logs RENAME TO pipeline_logs_legacy;
ALTER TABLE pipeline_logs_legacy ALTER COLUMN id DROP DEFAULT;
ALTER TABLE pipeline_logs_legacy DROP CONSTRAINT IF EXISTS pipeline_logs_pkey;
ALTER TABLE pipeline_logs_legacy DROP CONSTRAINT IF EXISTS pipeline_logs_run_id_origin_seq_key;
ALTER TABLE pipeline_logs_legacy ALTER COLUMN id SET NOT NULL;
DROP SEQUENCE IF EXISTS pipeline_logs_id_seq;
ALTER INDEX IF EXISTS pipeline_logs_experiment_time RENAME TO pipeline_logs_legacy_experiment_time;
ALTER INDEX IF EXISTS pipeline_logs_errors RENAME TO pipeline_logs_legacy_errors;
ALTER INDEX IF EXISTS pipeline_logs_errors_run RENAME TO pipeline_logs_legacy_errors_run;

CREATE TABLE pipeline_logs (
    id                BIGINT NOT NULL,
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
    fields            JSONB
) PARTITION BY RANGE (timestamp);

-- pipeline_metrics likewise (samples are few; they keep a unique key).
ALTER TABLE pipeline_metrics RENAME TO pipeline_metrics_legacy;
ALTER TABLE pipeline_metrics_legacy DROP CONSTRAINT IF EXISTS pipeline_metrics_pkey;
ALTER TABLE pipeline_metrics_legacy DROP COLUMN IF EXISTS id;
DROP INDEX IF EXISTS pipeline_metrics_key;
ALTER INDEX IF EXISTS pipeline_metrics_experiment RENAME TO pipeline_metrics_legacy_experiment;
ALTER INDEX IF EXISTS pipeline_metrics_run_time RENAME TO pipeline_metrics_legacy_run_time;

CREATE TABLE pipeline_metrics (
    experiment_id TEXT NOT NULL,
    run_id        TEXT NOT NULL,
    timestamp     TIMESTAMPTZ NOT NULL,
    metric_type   TEXT NOT NULL,
    name          TEXT NOT NULL,
    value         DOUBLE PRECISION NOT NULL,
    unit          TEXT,
    seq           BIGINT,
    step          BIGINT
) PARTITION BY RANGE (timestamp);

-- Old rows: attached as one partition up to the end of their last day (an
-- empty old table is simply dropped); the ledger learns the seq range of
-- every (run, origin) already stored, so a batch stored before the upgrade
-- and replayed after it is still stored once. Those ledger rows have a
-- negative batch, -N: their rows' ids are below N × 32768.
DO $$
DECLARE
    upper TIMESTAMPTZ;
BEGIN
    SELECT date_trunc('day', max(timestamp), 'UTC') + interval '1 day' INTO upper FROM pipeline_logs_legacy;
    IF upper IS NULL THEN
        DROP TABLE pipeline_logs_legacy;
    ELSE
        EXECUTE format('ALTER TABLE pipeline_logs ATTACH PARTITION pipeline_logs_legacy FOR VALUES FROM (MINVALUE) TO (%L)', upper);
        INSERT INTO pipeline_batches (experiment_id, run_id, origin, first_seq, last_seq, batch, rows, first_time, last_time)
            SELECT experiment_id, run_id, origin, min(seq), max(seq), -1 - (SELECT max(id) FROM pipeline_logs_legacy) / 32768,
                   count(*), min(timestamp), max(timestamp)
            FROM pipeline_logs_legacy GROUP BY experiment_id, run_id, origin;
        PERFORM setval('pipeline_log_batches', (SELECT max(id) FROM pipeline_logs_legacy) / 32768 + 1);
    END IF;
    SELECT date_trunc('day', max(timestamp), 'UTC') + interval '1 day' INTO upper FROM pipeline_metrics_legacy;
    IF upper IS NULL THEN
        DROP TABLE pipeline_metrics_legacy;
    ELSE
        EXECUTE format('ALTER TABLE pipeline_metrics ATTACH PARTITION pipeline_metrics_legacy FOR VALUES FROM (MINVALUE) TO (%L)', upper);
    END IF;
END $$;

-- A catch-all for rows of a day with no partition (written by hand, or by
-- another tool): they are kept, and `db prune` deletes them by chunks. The
-- agent itself always makes the day's partition first.
CREATE TABLE IF NOT EXISTS pipeline_logs_default PARTITION OF pipeline_logs DEFAULT;
CREATE TABLE IF NOT EXISTS pipeline_metrics_default PARTITION OF pipeline_metrics DEFAULT;

CREATE INDEX IF NOT EXISTS pipeline_logs_time ON pipeline_logs USING brin (timestamp);
CREATE INDEX IF NOT EXISTS pipeline_logs_ids ON pipeline_logs USING brin (id);
CREATE INDEX IF NOT EXISTS pipeline_logs_errors ON pipeline_logs (experiment_id, timestamp)
    WHERE level IN ('ERROR', 'CRITICAL');
CREATE INDEX IF NOT EXISTS pipeline_logs_errors_run ON pipeline_logs (run_id)
    WHERE level IN ('ERROR', 'CRITICAL');

CREATE UNIQUE INDEX IF NOT EXISTS pipeline_metrics_key ON pipeline_metrics (experiment_id, run_id, seq, timestamp);
CREATE INDEX IF NOT EXISTS pipeline_metrics_experiment ON pipeline_metrics (experiment_id, metric_type, timestamp);
CREATE INDEX IF NOT EXISTS pipeline_metrics_run_time ON pipeline_metrics (run_id, timestamp);

-- Keys led by experiment_id (see above).
ALTER TABLE pipeline_runs DROP CONSTRAINT IF EXISTS pipeline_runs_pkey;
ALTER TABLE pipeline_runs ADD PRIMARY KEY (experiment_id, run_id);
CREATE INDEX IF NOT EXISTS pipeline_runs_run ON pipeline_runs (run_id);

ALTER TABLE pipeline_events DROP CONSTRAINT IF EXISTS pipeline_events_pkey;
ALTER TABLE pipeline_events DROP CONSTRAINT IF EXISTS pipeline_events_event_id_key;
ALTER TABLE pipeline_events ADD CONSTRAINT pipeline_events_key UNIQUE (experiment_id, event_id);

ALTER TABLE pipeline_progress DROP CONSTRAINT IF EXISTS pipeline_progress_pkey;
ALTER TABLE pipeline_progress ADD PRIMARY KEY (experiment_id, run_id, task);

-- Citus joins distributed tables only on their distribution column.
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
LEFT JOIN pipeline_runs r ON r.experiment_id = p.experiment_id AND r.run_id = p.run_id;
