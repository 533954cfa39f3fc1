-- ERROR and CRITICAL records by run (see migrations/postgres/0004): the
-- error counts of `query list` read this small index, not every row of a run.
CREATE INDEX IF NOT EXISTS pipeline_logs_errors_run ON pipeline_logs (run_id)
    WHERE level IN ('ERROR', 'CRITICAL');
