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
import schema  # noqa: E402

# pipeline_logs' columns as migrations/postgres/0001_init.sql makes them,
# the agent-assigned id instead of the sequence (each variant adds its own).
COLUMNS = "\n    " + ",\n    ".join(
    schema.columns("postgres", drop=("id",), defaults={"origin": "'stdout'"}))

ERRORS = "CREATE INDEX ON pipeline_logs (experiment_id, timestamp) WHERE level IN ('ERROR', 'CRITICAL');"
ERRORS_BY_RUN = "CREATE INDEX ON pipeline_logs (run_id) WHERE level IN ('ERROR', 'CRITICAL');"
# The shipped shape (migrations 0005 and 0007): rows carry an id the agent
# assigns (batch number << 15 | position, no sequence per row), no per-row
# key, one BRIN over id and time.
SHIPPED = "CREATE INDEX ON pipeline_logs USING brin (id, timestamp);" + ERRORS + ERRORS_BY_RUN
# Migration 0005 alone: a BRIN on each of the two columns.
TWO_BRINS = ("CREATE INDEX ON pipeline_logs USING brin (timestamp);"
             "CREATE INDEX ON pipeline_logs USING brin (id);" + ERRORS + ERRORS_BY_RUN)


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
        ("partitioned by day, agent-given id, BRIN (timestamp), BRIN (id), 2 partial errors indexes (0005)",
         partitioned(",\n    id BIGINT NOT NULL", days) + TWO_BRINS, True),
        ("… one BRIN (id, timestamp) instead (0007)",
         partitioned(",\n    id BIGINT NOT NULL", days) + SHIPPED, True),
        ("… + BRIN bloom (experiment_id), 16 pages per range",
         partitioned(",\n    id BIGINT NOT NULL", days) + SHIPPED
         + "CREATE INDEX ON pipeline_logs USING brin (experiment_id text_bloom_ops) WITH (pages_per_range = 16);",
         True),
        ("… + b-tree (experiment_id, timestamp)",
         partitioned(",\n    id BIGINT NOT NULL", days) + SHIPPED
         + "CREATE INDEX ON pipeline_logs (experiment_id, timestamp);", True),
        ("0005's shape, binary COPY",
         partitioned(",\n    id BIGINT NOT NULL", days) + TWO_BRINS, "binary"),
        ("partitioned by day, agent-given id, BRIN (id, timestamp), 2 partial errors indexes, **binary COPY**",
         partitioned(",\n    id BIGINT NOT NULL", days) + SHIPPED, "binary"),
        ("plain 13-column table + id, binary COPY", plain(",\n    id BIGINT NOT NULL"), "binary"),
    ]


def unescape_copy(field):
    """One COPY text field → its value (None for \\N)."""
    if field == "\\N":
        return None
    if "\\" not in field:
        return field
    out, i = [], 0
    table = {"t": "\t", "n": "\n", "r": "\r", "\\": "\\"}
    while i < len(field):
        c = field[i]
        if c == "\\" and i + 1 < len(field):
            out.append(table.get(field[i + 1], field[i + 1]))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def write_binary(rows, dest):
    """rows.copy (text) → COPY binary format with a leading id column: what
    the agent could send instead of text (no timestamp or escape parsing on
    the server)."""
    import datetime
    import struct
    epoch = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
    with open(rows, encoding="utf-8") as src, open(dest, "wb") as dst:
        dst.write(b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0))
        for n, line in enumerate(src):
            fields = [unescape_copy(f) for f in line.rstrip("\n").split("\t")]
            out = [struct.pack(">hiq", len(fields) + 1, 8, n + 1)]
            for i, f in enumerate(fields):
                if f is None:
                    out.append(struct.pack(">i", -1))
                elif i == 2:
                    out.append(struct.pack(">iq", 8, int(f)))
                elif i == 3:
                    t = datetime.datetime.fromisoformat(f.replace("Z", "+00:00"))
                    us = (t - epoch) // datetime.timedelta(microseconds=1)
                    out.append(struct.pack(">iq", 8, us))
                else:
                    b = f.encode("utf-8")
                    out.append(struct.pack(">i", len(b)) + b)
            dst.write(b"".join(out))
        dst.write(struct.pack(">h", -1))


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
        rows_id = os.path.join(tmp, "rows_id.copy")
        with open(rows, encoding="utf-8") as src, open(rows_id, "w", encoding="utf-8") as dst:
            for i, line in enumerate(src):
                dst.write("%d\t%s" % (i + 1, line))
        rows_bin = os.path.join(tmp, "rows.bin")
        write_binary(rows, rows_bin)
        for i, variant in enumerate(variants(days)):
            label, ddl, with_id = (variant + (False,))[:3]
            best, counts = None, []
            for r in range(a.repeat):
                db = "v%d_%d" % (i, r)
                srv.createdb(db)
                srv.sql(db, ddl)
                if with_id == "binary":
                    t = srv.copy_in(db, rows_bin, tmp=tmp, cols=["id"] + pg_bench.COLS, binary=True)["wall"]
                elif with_id:
                    t = srv.copy_in(db, rows_id, tmp=tmp, cols=["id"] + pg_bench.COLS)["wall"]
                else:
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
