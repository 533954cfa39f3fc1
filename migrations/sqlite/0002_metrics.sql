-- Metric samples get an idempotency key, as log records have: a sample
-- written twice is stored once. `seq` numbers a run's samples; `step` is the
-- program's own counter (`##pmon[metric name=loss value=0.12 step=300]`).
ALTER TABLE pipeline_metrics ADD COLUMN seq INTEGER;
ALTER TABLE pipeline_metrics ADD COLUMN step INTEGER;
CREATE UNIQUE INDEX pipeline_metrics_key ON pipeline_metrics (run_id, seq);
-- `query metrics` reads one run's series over a window.
CREATE INDEX pipeline_metrics_run_time ON pipeline_metrics (run_id, timestamp);
