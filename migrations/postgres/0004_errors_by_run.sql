-- ERROR and CRITICAL records by run: `query list` counts each experiment's
-- latest run's errors, and `query status` a run's. Partial (errors are a
-- small share of records), so it costs writes little; it makes those counts
-- index-only instead of reading every error row of the experiments.
CREATE INDEX IF NOT EXISTS pipeline_logs_errors_run ON pipeline_logs (run_id)
    WHERE level IN ('ERROR', 'CRITICAL');
