-- One BRIN index over (id, timestamp) instead of one on each column.
--
-- PostgreSQL up to 16 reads a BRIN index's meta page and range map anew for
-- every row it inserts, per index: with two of them that was a sixth of the
-- server's CPU per COPY (`bench/run.sh --ratios`; see bench/README.md). One
-- index summarising both columns pays that once, and still serves both the
-- id ranges queries take from the ledger and conditions on time alone: a
-- multi-column BRIN is used for a condition on any of its columns.
CREATE INDEX IF NOT EXISTS pipeline_logs_brin ON pipeline_logs USING brin (id, timestamp);
DROP INDEX IF EXISTS pipeline_logs_ids;
DROP INDEX IF EXISTS pipeline_logs_time;
