-- Captures of a declarative parser (parsers/*.yml) beyond the record's own
-- columns: `{"thread": "main", "file": "train.py", "line": "10"}`. NULL when
-- the parser captured none (and for every record of the built-in parsers).
-- jsonb so that `fields->>'thread'` can be filtered on and indexed.
ALTER TABLE pipeline_logs ADD COLUMN IF NOT EXISTS fields jsonb;
