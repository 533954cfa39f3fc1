-- Error groups (see migrations/postgres/0006): the fingerprint of an ERROR or
-- CRITICAL record; NULL for other levels and for records stored before this.
ALTER TABLE pipeline_logs ADD COLUMN error_group TEXT;
CREATE INDEX IF NOT EXISTS pipeline_logs_groups ON pipeline_logs (experiment_id, error_group)
    WHERE error_group IS NOT NULL;
