#!/usr/bin/env python3
"""What the table's shape costs: `psql \\copy` of the same rows into schema variants.

Measures, in one invocation on a private PostgreSQL server, the shared
workload's records (pre-split into pipeline_logs rows, 13 columns with
`origin`) copied into each candidate shape of `pipeline_logs`: a plain table,
one index at a time, the schema the agent ships today, and time-partitioned
variants with the idempotency key the agent could keep. Each variant is a
fresh database, timed best of -r; the ratio is against the plain table.
This is the measurement behind issue 13's schema choice (bench/README.md);
it does not run the agent.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
import pg_bench  # noqa: E402

COLUMNS = """
    experiment_id     TEXT NOT NULL,
    run_id            TEXT NOT NULL,
    origin            TEXT NOT NULL DEFAULT 'stdout',
    seq               BIGINT NOT NULL,
    timestamp         TIMESTAMPTZ NOT NULL,
    level             TEXT NOT NULL,
    logger            TEXT,
    message           TEXT NOT NULL,
    traceback         TEXT,
    exception_type    TEXT,
    exception_message TEXT,
    stream            TEXT NOT NULL,
    source            TEXT NOT NULL"""

ERRORS = "CREATE INDEX ON pipeline_logs (experiment_id, timestamp) WHERE level IN ('ERROR', 'CRITICAL');"


def plain(extra=""):
    return "CREATE TABLE pipeline_logs (%s%s);" % (COLUMNS, extra)


def partitioned(extra, days):
    parts = "".join(
        "CREATE TABLE pipeline_logs_%s PARTITION OF pipeline_logs FOR VALUES FROM ('%s') TO ('%s');\n"
        % (d.replace("-", ""), d, n) for d, n in days)
    return "CREATE TABLE pipeline_logs (%s%s) PARTITION BY RANGE (timestamp);\n%s" % (COLUMNS, extra, parts)


def variants(days):
    return [
        ("plain 13-column table (**baseline**)", plain()),
        ("+ bigserial id (no key)", plain(",\n    id BIGSERIAL")),
        ("+ BRIN (timestamp)", plain() + "CREATE INDEX ON pipeline_logs USING brin (timestamp);"),
        ("+ partial errors index (experiment_id, timestamp)", plain() + ERRORS),
        ("+ b-tree (experiment_id, timestamp)", plain() + "CREATE INDEX ON pipeline_logs (experiment_id, timestamp);"),
        ("+ UNIQUE (run_id, origin, seq)", plain(",\n    UNIQUE (run_id, origin, seq)")),
        ("today's pipeline_logs: bigserial PK, UNIQUE (run_id, origin, seq), 2 b-trees",
         plain(",\n    id BIGSERIAL PRIMARY KEY,\n    UNIQUE (run_id, origin, seq)")
         + "CREATE INDEX ON pipeline_logs (experiment_id, timestamp);" + ERRORS),
        ("partitioned by day + BRIN (timestamp) + partial errors index",
         partitioned("", days) + "CREATE INDEX ON pipeline_logs USING brin (timestamp);" + ERRORS),
        ("partitioned by day + BRIN + errors + UNIQUE (run_id, origin, seq, timestamp)",
         partitioned(",\n    UNIQUE (run_id, origin, seq, timestamp)", days)
         + "CREATE INDEX ON pipeline_logs USING brin (timestamp);" + ERRORS),
        ("partitioned by day + BRIN + errors + b-tree (experiment_id, timestamp)",
         partitioned("", days) + "CREATE INDEX ON pipeline_logs USING brin (timestamp);" + ERRORS
         + "CREATE INDEX ON pipeline_logs (experiment_id, timestamp);"),
    ]


def days_of(rows):
    """The UTC days the rows' timestamps fall on, each with the next day."""
    import datetime
    seen = set()
    with open(rows, encoding="utf-8") as f:
        for line in f:
            seen.add(line.split("\t", 4)[3][:10])
    out = []
    for d in sorted(seen):
        nxt = (datetime.date.fromisoformat(d) + datetime.timedelta(days=1)).isoformat()
        out.append((d, nxt))
    return out


def main():
    ap = bench.arguments(__doc__)
    ap.add_argument("-r", "--repeat", type=int, default=2)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    t_start, tmp = bench.begin()
    srv = None
    try:
        workload, summary, t_gen = bench.generate_workload(a.gen, a.lines, tmp)
        rows = os.path.join(tmp, "rows.copy")
        t0 = time.perf_counter()
        n, _ = pg_bench.presplit_copy(workload, rows)
        t_split = time.perf_counter() - t0
        os.chmod(tmp, 0o755)
        days = days_of(rows)
        srv = pg_bench.PgServer(pg_bench.pg_bindir(), os.environ.get("BENCH_TMPDIR"))
        srv.initdb()
        srv.start()
        version = srv.one("postgres", "SHOW server_version")
        results = []
        checks = []
        for i, (label, ddl) in enumerate(variants(days)):
            best, counts = None, []
            for r in range(a.repeat):
                db = "v%d_%d" % (i, r)
                srv.createdb(db)
                srv.sql(db, ddl)
                t = srv.copy_in(db, rows, tmp=tmp)["wall"]
                counts.append(int(srv.one(db, "SELECT count(*) FROM pipeline_logs")))
                best = t if best is None else min(best, t)
                srv.sql("postgres", "DROP DATABASE %s;" % db)
            checks.append(("%s: every run stored %d rows" % (label, n), all(c == n for c in counts), str(counts)))
            results.append((label, best))
            bench.log("%-80s %.2fs" % (label, best))
        base = results[0][1]
        print("### `psql \\copy` of %d records into schema variants (PostgreSQL %s, best of %d, %d day partition(s))"
              % (n, version, a.repeat, len(days)))
        print("| table | seconds | records/s | vs plain |")
        print("| --- | --- | --- | --- |")
        for label, secs in results:
            print("| %s | %.2f | %.0f | %.2f× |" % (label, secs, n / secs, base / secs))
        print()
        failed = bench.print_run_checks([("schema", checks)])
        bench.print_result(t_start, t_gen, t_split, failed)
        return 1 if failed else 0
    except pg_bench.Failure as e:
        return bench.setup_error("schema_bench", e, srv)
    finally:
        bench.clean_up(tmp, a.keep, srv)


if __name__ == "__main__":
    sys.exit(main())
