-- Metric samples get an idempotency key, as log records have: a sample
-- replayed from the spool after a crash mid-commit is stored once. `seq`
-- numbers a run's samples; `step` is the program's own counter
-- (`##pmon[metric name=loss value=0.12 step=300]`).
ALTER TABLE pipeline_metrics ADD COLUMN IF NOT EXISTS seq BIGINT;
ALTER TABLE pipeline_metrics ADD COLUMN IF NOT EXISTS step BIGINT;
CREATE UNIQUE INDEX IF NOT EXISTS pipeline_metrics_key ON pipeline_metrics (run_id, seq);
-- `query metrics` reads one run's series over a window.
CREATE INDEX IF NOT EXISTS pipeline_metrics_run_time ON pipeline_metrics (run_id, timestamp);
