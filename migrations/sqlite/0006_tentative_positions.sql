-- Read positions of tailed files stored just before PostgreSQL commits the
-- records up to them (see src/sink/spool/positions.rs). After the commit they
-- replace the file's row in pmon_checkpoints and leave this table; a tail that
-- stopped in between finds them here at its next start and keeps each one only
-- if PostgreSQL's ledger holds its last record (run_id, origin, last_seq).
CREATE TABLE IF NOT EXISTS pmon_checkpoints_tentative (
    experiment_id  TEXT NOT NULL,
    dev            INTEGER NOT NULL,
    ino            INTEGER NOT NULL,
    head           BLOB NOT NULL,
    generation     INTEGER NOT NULL DEFAULT 0,
    earlier_head   BLOB,
    earlier_offset INTEGER,
    path           TEXT NOT NULL,
    offset         INTEGER NOT NULL,
    run_id         TEXT NOT NULL,
    origin         TEXT NOT NULL,
    last_seq       INTEGER,          -- NULL: no record of this file in that transaction
    PRIMARY KEY (experiment_id, dev, ino)
);
