-- One BRIN index over (id, timestamp) instead of one on each column.
--
-- PostgreSQL up to 16 reads a BRIN index's meta page and range map anew for
-- every row it inserts, per index: with two of them that was a sixth of the
-- server's CPU per COPY (`bench/run.sh --ratios`; see bench/README.md). One
-- index summarising both columns pays that once, and still serves both the
-- id ranges queries take from the ledger and conditions on time alone: a
-- multi-column BRIN is used for a condition on any of its columns.
--
-- One statement (a DO block), not three: the migration runs as one simple
-- query, and Citus propagates DDL on a distributed table with the text of
-- the query it came in; three statements in one text are refused by the
-- workers ("cannot insert multiple commands into a prepared statement").
DO $$
BEGIN
    EXECUTE 'CREATE INDEX IF NOT EXISTS pipeline_logs_brin ON pipeline_logs USING brin (id, timestamp)';
    EXECUTE 'DROP INDEX IF EXISTS pipeline_logs_ids';
    EXECUTE 'DROP INDEX IF EXISTS pipeline_logs_time';
END $$;
