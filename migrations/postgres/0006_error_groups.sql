-- Error groups: the fingerprint of an ERROR or CRITICAL record (exception type
-- and the innermost frames of the program's own code, or the logger and the
-- message with its variable parts masked; see src/parse/fingerprint.rs).
-- `query errors --group` counts by it, `new_error_group` notifications look
-- it up. NULL for other levels and for records stored before this migration.
ALTER TABLE pipeline_logs ADD COLUMN IF NOT EXISTS error_group TEXT;
CREATE INDEX IF NOT EXISTS pipeline_logs_groups ON pipeline_logs (experiment_id, error_group)
    WHERE error_group IS NOT NULL;
