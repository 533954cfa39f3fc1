-- Captures of a declarative parser (parsers/*.yml) beyond the record's own
-- columns, as a JSON object text (`json_extract(fields, '$.thread')`); NULL
-- when there are none.
ALTER TABLE pipeline_logs ADD COLUMN fields TEXT;
