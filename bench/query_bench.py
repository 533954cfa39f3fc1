#!/usr/bin/env python3
"""How fast the query commands answer as the stores grow (bench/run.sh --queries).

Fills each store — the embedded SQLite store and a private PostgreSQL — with
N records (default 10,000,000) over 1,000 experiments (3 runs each) and 30
days ending now, generated in SQL by the bench (nothing is committed), then
times the commands a user runs, each -r times on experiments picked at
random, and reports p50 and p99 per command and store:

  query errors EXP --traceback      query logs EXP --since 1h --limit 100
  query logs EXP -f (to its first line)   query status EXP   query list

About 1% of records are ERROR with a traceback. Times include starting the
`pmon-agent` process, as a user sees them.

Then every SQL statement those commands run is checked to read through an
index (or partition pruning), not a scan of a large table: in SQLite each
statement the agent traced (`PMON_TRACE_SQL`) goes through `EXPLAIN QUERY
PLAN` and no `SCAN` of pipeline_logs may appear; in PostgreSQL `auto_explain`
logs the plan of each statement as it runs and no `Seq Scan` of a
pipeline_logs partition or the ledger may cost more than 1,000 (reading
about 1,000 pages or more). A statement that fails the check fails the
bench (exit 1).

Last, retention: `db prune --older-than 15d` on each store, timed, and checked
against the store itself — every record older than the cutoff it reports is
gone, every newer one is still there, the runs that ended before it are gone.
It reports the space given back: PostgreSQL drops whole day partitions (their
files go at once); SQLite deletes in chunks and keeps the freed pages for the
rows that come next, which a follow-up `ingest` of new records shows (the file
does not grow while free pages are left).
"""

import json
import os
import random
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
import pg_bench  # noqa: E402

EXPERIMENTS = 1000
RUNS = 3
DAYS = 30
# Records per batch in PostgreSQL (one experiment's, as an agent writes
# them): 500, fewer for small fills so every run of every experiment has
# batches.


def batch_size(records):
    return max(1, min(500, records // (EXPERIMENTS * RUNS * 4)))

SQLITE_FILL = """
PRAGMA journal_mode = WAL;
PRAGMA synchronous = OFF;
BEGIN;
WITH RECURSIVE e(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM e WHERE i + 1 < {experiments}),
     r(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM r WHERE k < {runs})
INSERT INTO pipeline_runs (run_id, experiment_id, ordinal, state, command, tags, host, started_at, ended_at, exit_code)
SELECT printf('R%04d_%d', i, k), printf('exp_%04d', i), k, 'succeeded', '["python3","train.py"]', '{{}}', 'bench',
       strftime('%Y-%m-%dT%H:%M:%f000Z', 'now', printf('-%d days', {days} - ({days} * (k - 1)) / {runs})),
       strftime('%Y-%m-%dT%H:%M:%f000Z', 'now', printf('-%d days', {days} - ({days} * k) / {runs})), 0
FROM e, r;
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < {records})
INSERT INTO pipeline_logs (experiment_id, run_id, origin, seq, timestamp, level, logger, message, traceback,
                           exception_type, exception_message, stream, source)
SELECT printf('exp_%04d', i % {experiments}),
       printf('R%04d_%d', i % {experiments}, 1 + (i * {runs}) / {records}),
       'stdout', i,
       strftime('%Y-%m-%dT%H:%M:%f000Z', 'now', printf('-%d seconds', ({records} - i) * {span} / {records})),
       CASE WHEN i % 100 = 7 THEN 'ERROR' ELSE 'INFO' END,
       'pipeline.step',
       printf('processed shard %d of batch %d', i % 977, i / 977),
       CASE WHEN i % 100 = 7 THEN 'Traceback (most recent call last):' || char(10) || '  File "train.py", line 88, in <module>' || char(10) || 'ValueError: bad shard ' || (i % 977) || char(10) END,
       CASE WHEN i % 100 = 7 THEN 'ValueError' END,
       CASE WHEN i % 100 = 7 THEN 'bad shard ' || (i % 977) END,
       'stdout', 'stdout'
FROM n;
COMMIT;
ANALYZE;
"""

PG_FILL = """
SET synchronous_commit = off;
INSERT INTO pipeline_runs (run_id, experiment_id, ordinal, state, command, tags, host, started_at, ended_at, exit_code)
SELECT format('R%s_%s', lpad(e::text, 4, '0'), k), format('exp_%s', lpad(e::text, 4, '0')), k, 'succeeded',
       '["python3","train.py"]'::jsonb, '{{}}'::jsonb, 'bench',
       now() - make_interval(days => {days} - ({days} * (k - 1)) / {runs}),
       now() - make_interval(days => {days} - ({days} * k) / {runs}), 0
FROM generate_series(0, {experiments} - 1) e, generate_series(1, {runs}) k;
-- Day partitions, as the agent makes them before writing a day's rows.
DO $$
DECLARE
    today date := (now() AT TIME ZONE 'UTC')::date;
BEGIN
    FOR d IN 0..{days} + 1 LOOP
        EXECUTE format('CREATE TABLE IF NOT EXISTS pipeline_logs_p%s PARTITION OF pipeline_logs FOR VALUES FROM (%L) TO (%L)',
                       to_char(today - d, 'YYYYMMDD'), (today - d) || ' 00:00:00+00', (today - d + 1) || ' 00:00:00+00');
    END LOOP;
END $$;
-- Rows in batches of {batch} records of one experiment each, as agents write them:
-- id = batch number x 32768 + position, one ledger row per batch.
INSERT INTO pipeline_logs (id, experiment_id, run_id, origin, seq, timestamp, level, logger, message, traceback,
                           exception_type, exception_message, stream, source)
SELECT (1 + i / {batch}) * 32768 + i % {batch},
       format('exp_%s', lpad(((i / {batch}) % {experiments})::text, 4, '0')),
       format('R%s_%s', lpad(((i / {batch}) % {experiments})::text, 4, '0'), 1 + (i * {runs}) / {records}),
       'stdout', i,
       now() - make_interval(secs => ({records} - i) * {span}::float8 / {records}),
       CASE WHEN i % 100 = 7 THEN 'ERROR' ELSE 'INFO' END,
       'pipeline.step',
       format('processed shard %s of batch %s', i % 977, i / 977),
       CASE WHEN i % 100 = 7 THEN E'Traceback (most recent call last):\\n  File "train.py", line 88, in <module>\\nValueError: bad shard ' || (i % 977) || E'\\n' END,
       CASE WHEN i % 100 = 7 THEN 'ValueError' END,
       CASE WHEN i % 100 = 7 THEN 'bad shard ' || (i % 977) END,
       'stdout', 'stdout'
FROM generate_series(0, {records} - 1) i;
INSERT INTO pipeline_batches (experiment_id, run_id, origin, first_seq, last_seq, batch, rows, first_time, last_time)
SELECT experiment_id, run_id, origin, min(seq), max(seq), id / 32768, count(*), min(timestamp), max(timestamp)
FROM pipeline_logs GROUP BY experiment_id, run_id, origin, id / 32768;
SELECT setval('pipeline_log_batches', (SELECT max(batch) FROM pipeline_batches));
-- What autovacuum does to a table in steady use: statistics, and the
-- visibility map that lets counts be answered from an index alone.
VACUUM (ANALYZE) pipeline_logs;
VACUUM (ANALYZE) pipeline_batches;
ANALYZE;
"""

COMMANDS = [
    ("query errors EXP --traceback", ["query", "errors", "{exp}", "--traceback"]),
    ("query logs EXP --since 1h --limit 100", ["query", "logs", "{exp}", "--since", "1h", "--limit", "100"]),
    ("query logs EXP -f (first line)", None),
    ("query status EXP", ["query", "status", "{exp}"]),
    ("query list", ["query", "list"]),
]


def fill_sqlite(agent, tmp, env, records):
    """Creates the store through the agent (its migrations), then fills it."""
    data = env["PMON_DATA_DIR"]
    subprocess.run([agent, "ingest", "-e", "init"], input=b"x\n", env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = os.path.join(data, "pmon.db")
    sql = SQLITE_FILL.format(experiments=EXPERIMENTS, runs=RUNS, days=DAYS, records=records,
                             span=DAYS * 86400)
    t0 = time.perf_counter()
    subprocess.run(["sqlite3", db], input=sql.encode(), check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def fill_pg(agent, srv, db, env, records):
    srv.createdb(db)
    subprocess.run([agent, "db", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
    sql = PG_FILL.format(experiments=EXPERIMENTS, runs=RUNS, days=DAYS, records=records, batch=batch_size(records),
                         span=DAYS * 86400)
    t0 = time.perf_counter()
    srv.sql(db, sql)
    return time.perf_counter() - t0


def first_line_time(argv, env):
    """Seconds until a following query prints its first line; then stops it."""
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    import select
    if not select.select([p.stdout], [], [], 60)[0]:
        p.kill()
        p.wait()
        raise pg_bench.Failure("%s printed nothing within 60 s" % " ".join(argv))
    p.stdout.readline()
    t = time.perf_counter() - t0
    p.kill()
    p.wait()
    return t


def time_commands(agent, env, repeat, rng):
    out = []
    for label, args in COMMANDS:
        times = []
        for _ in range(repeat):
            exp = "exp_%04d" % rng.randrange(EXPERIMENTS)
            if args is None:
                times.append(first_line_time([agent, "query", "logs", exp, "-f"], env))
                continue
            argv = [agent] + [a.format(exp=exp) for a in args]
            t0 = time.perf_counter()
            r = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            times.append(time.perf_counter() - t0)
            if r.returncode != 0:
                raise pg_bench.Failure("%s failed: %s" % (" ".join(argv), r.stderr.decode()[-500:]))
        times.sort()
        p50 = times[len(times) // 2]
        p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
        out.append((label, p50, p99))
    return out


# A sequential scan cheaper than this reads a small table or an empty
# partition (the planner's cost units: about one per page read).
SEQ_SCAN_COST_LIMIT = 1000


def command_argvs(agent):
    """(label, argv, follow) for one run of each command on exp_0001."""
    out = []
    for label, args in COMMANDS:
        if args is None:
            out.append((label, [agent, "query", "logs", "exp_0001", "-f"], True))
        else:
            out.append((label, [agent] + [a.replace("{exp}", "exp_0001") for a in args], False))
    return out


def run_once(argv, env, follow):
    if follow:
        first_line_time(argv, env)
    else:
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def sqlite_plans(agent, env, tmp):
    """Per command: the statements' query plans and the full scans among them."""
    db = os.path.join(env["PMON_DATA_DIR"], "pmon.db")
    out = []
    for label, argv, follow in command_argvs(agent):
        trace = os.path.join(tmp, "trace.sql")
        if os.path.exists(trace):
            os.unlink(trace)
        run_once(argv, dict(env, PMON_TRACE_SQL=trace), follow)
        used, scans = set(), []
        with open(trace, encoding="utf-8") as f:
            statements = [line.strip() for line in f if line.lstrip().upper().startswith(("SELECT", "WITH"))]
        for sql in statements:
            if "pipeline_" not in sql:
                continue
            plan = subprocess.run(["sqlite3", db, "EXPLAIN QUERY PLAN " + sql], capture_output=True,
                                  text=True, check=True).stdout
            for line in plan.splitlines():
                detail = line.strip("|-` ")
                if detail.startswith("SEARCH") or "USING" in detail:
                    used.add(detail.split(" USING ", 1)[-1].replace("COVERING ", "").split(" (")[0])
                if detail.startswith("SCAN pipeline_logs") or detail.startswith("SCAN pipeline_metrics"):
                    scans.append((sql[:160], detail))
        out.append((label, len(statements), sorted(used), scans))
    return out


def pg_plans(agent, env, srv, db):
    """The same from PostgreSQL's auto_explain, which logs each statement's plan."""
    srv.sql("postgres", "ALTER DATABASE %s SET session_preload_libraries = 'auto_explain';"
                        "ALTER DATABASE %s SET auto_explain.log_min_duration = 0;" % (db, db))
    out = []
    for label, argv, follow in command_argvs(agent):
        start = os.path.getsize(srv.logfile)
        run_once(argv, env, follow)
        with open(srv.logfile, encoding="utf-8", errors="replace") as f:
            f.seek(start)
            log_text = f.read()
        used, scans, statements = set(), [], 0
        for block in log_text.split("LOG:  duration:")[1:]:
            if "pipeline_" not in block:
                continue
            statements += 1
            for line in block.splitlines():
                node = line.strip().lstrip("->").strip()
                index = None
                if " using " in node and "Scan" in node:
                    index = node.split(" using ", 1)[1].split(" ")[0]
                elif node.startswith("Bitmap Index Scan on "):
                    index = node.split(" on ", 1)[1].split(" ")[0]
                if index:
                    # One name for an index's copies in every day partition.
                    used.add(re.sub(r"_p\d{8}_", "_p<day>_", index))
                if node.startswith("Seq Scan on pipeline_logs") or node.startswith("Seq Scan on pipeline_batches"):
                    cost = float(node.split("..", 1)[1].split(" ", 1)[0]) if ".." in node else 0.0
                    if cost > SEQ_SCAN_COST_LIMIT:
                        scans.append((node.split("  (")[0], cost))
        out.append((label, statements, sorted(used), scans))
    srv.sql("postgres", "ALTER DATABASE %s RESET ALL;" % db)
    return out


PRUNE_AGE = "15d"
# Records ingested after the prune, to show SQLite reusing the freed pages:
# at most this many, and no more than half of what the prune removed.
REFILL_LINES = 200_000


def prune(agent, env):
    """Runs `db prune`; returns (seconds, its JSON report)."""
    t0 = time.perf_counter()
    r = subprocess.run([agent, "db", "prune", "--older-than", PRUNE_AGE, "--format", "json"], env=env,
                       capture_output=True, text=True)
    took = time.perf_counter() - t0
    if r.returncode != 0:
        raise pg_bench.Failure("db prune failed: %s" % r.stderr.strip()[-1000:])
    return took, json.loads(r.stdout)


def refill(agent, env, tmp, lines):
    """Ingests `lines` new lines (stamped as received) into experiment `refill`."""
    path = os.path.join(tmp, "refill.log")
    with open(path, "w") as f:
        for i in range(lines):
            f.write("refill line %d of the pruned store\n" % i)
    with open(path, "rb") as f:
        subprocess.run([agent, "ingest", "-e", "refill"], stdin=f, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def sqlite_pages(db):
    out = subprocess.run(["sqlite3", db, "PRAGMA page_count; PRAGMA freelist_count; PRAGMA page_size;"],
                         capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]), int(out[1]), int(out[2])


def sqlite_one(db, sql):
    return subprocess.run(["sqlite3", db, sql], capture_output=True, text=True, check=True).stdout.strip()


def prune_sqlite(agent, env, tmp):
    """db prune on the embedded store, then a refill; returns (row, checks)."""
    db = os.path.join(env["PMON_DATA_DIR"], "pmon.db")
    before = int(sqlite_one(db, "SELECT count(*) FROM pipeline_logs"))
    pages0, free0, size = sqlite_pages(db)
    took, rep = prune(agent, env)
    cutoff = rep["cutoff"]
    pages1, free1, _ = sqlite_pages(db)
    older = int(sqlite_one(db, "SELECT count(*) FROM pipeline_logs WHERE timestamp < '%s'" % cutoff))
    after = int(sqlite_one(db, "SELECT count(*) FROM pipeline_logs"))
    ended = int(sqlite_one(db, "SELECT count(*) FROM pipeline_runs WHERE ended_at < '%s'" % cutoff))
    lines = max(1, min(REFILL_LINES, rep["logs"] // 2))
    refill(agent, env, tmp, lines)
    pages2, free2, _ = sqlite_pages(db)
    checks = [
        ("SQLite: no record older than the cutoff left", older == 0, "%d left" % older),
        ("SQLite: removed + kept = before", rep["logs"] + after == before,
         "%d + %d vs %d" % (rep["logs"], after, before)),
        ("SQLite: no run that ended before the cutoff left", ended == 0, "%d left" % ended),
        ("SQLite: the refill reused freed pages (file did not grow)", pages2 == pages1 and free2 < free1,
         "pages %d -> %d, free %d -> %d" % (pages1, pages2, free1, free2)),
    ]
    mib = lambda pages: pages * size / 2**20
    row = ("SQLite", took, rep, before, after,
           "%.0f MiB of pages freed (%.0f → %.0f MiB in use; the file stays %.0f MiB); %d new records "
           "then took %.0f MiB of them, the file went from %.0f to %.0f MiB"
           % (mib(free1 - free0), mib(pages0 - free0), mib(pages1 - free1), mib(pages1),
              lines, mib(free1 - free2), mib(pages1), mib(pages2)))
    return row, checks


def prune_pg(agent, env, srv, db):
    """db prune on PostgreSQL; returns (row, checks)."""
    size_sql = ("SELECT count(*), coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_inherits i "
                "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'pipeline_logs'::regclass")
    before = int(srv.one(db, "SELECT count(*) FROM pipeline_logs"))
    parts0, bytes0 = (int(x) for x in srv.sql(db, size_sql)[0])
    took, rep = prune(agent, env)
    cutoff = rep["cutoff"]
    parts1, bytes1 = (int(x) for x in srv.sql(db, size_sql)[0])
    older = int(srv.one(db, "SELECT count(*) FROM pipeline_logs WHERE timestamp < '%s'" % cutoff))
    after = int(srv.one(db, "SELECT count(*) FROM pipeline_logs"))
    ended = int(srv.one(db, "SELECT count(*) FROM pipeline_runs WHERE ended_at < '%s'" % cutoff))
    checks = [
        ("PostgreSQL: no record older than the cutoff left", older == 0, "%d left" % older),
        ("PostgreSQL: removed + kept = before", rep["logs"] + after == before,
         "%d + %d vs %d" % (rep["logs"], after, before)),
        ("PostgreSQL: no run that ended before the cutoff left", ended == 0, "%d left" % ended),
        ("PostgreSQL: day partitions dropped", parts1 < parts0, "%d -> %d" % (parts0, parts1)),
    ]
    row = ("PostgreSQL", took, rep, before, after,
           "%d of %d day partitions dropped whole; pipeline_logs %.0f → %.0f MiB on disk at once"
           % (parts0 - parts1, parts0, bytes0 / 2**20, bytes1 / 2**20))
    return row, checks


def print_prune(rows, checks):
    print("### `db prune --older-than %s` on the filled stores" % PRUNE_AGE)
    print()
    print("| store | took | removed | records before → after | space |")
    print("| --- | --- | --- | --- | --- |")
    for store, took, rep, before, after, space in rows:
        print("| %s | %.1f s | %d runs, %d log records | %d → %d | %s |"
              % (store, took, rep["runs"], rep["logs"], before, after, space))
    print()
    for name, ok, detail in checks:
        print("- [%s] %s%s" % ("x" if ok else " ", name, "" if ok else ": " + detail))
    print()
    return [c for c in checks if not c[1]]


def print_plans(store, plans):
    print("#### Plans (%s)" % store)
    print("| command | statements | indexes used | large scans |")
    print("| --- | --- | --- | --- |")
    for label, n, used, scans in plans:
        used_text = ", ".join(used) if len(used) <= 6 else "%s … (%d indexes)" % (", ".join(used[:4]), len(used))
        print("| %s | %d | %s | %s |" % (label, n, used_text or "—",
                                         "; ".join("%s" % (x,) for x in scans) or "none"))
    print()
    return [(store, label, scans) for label, _, _, scans in plans if scans]


def main():
    ap = bench.arguments(__doc__)
    ap.add_argument("-r", "--repeat", type=int, default=30)
    ap.add_argument("--records", type=int, default=10_000_000)
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument("--no-prune", action="store_true", help="skip the db prune phase")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    t_start, tmp = bench.begin()
    srv = None
    rng = random.Random(42)
    try:
        agent = os.path.join(tmp, "pmon-agent")
        bench.copy_agent(a.agent, agent)
        open(os.path.join(tmp, "empty-config.yml"), "w").close()
        results = {}
        env = bench.agent_env(tmp, os.path.join(tmp, "data"))
        fill = fill_sqlite(agent, tmp, env, a.records)
        bench.log("SQLite: %d records in %.0fs" % (a.records, fill))
        results["SQLite"] = time_commands(agent, env, a.repeat, rng)
        plans = {"SQLite": sqlite_plans(agent, env, tmp)}
        prune_rows, prune_checks = [], []
        if not a.no_prune:
            row, checks = prune_sqlite(agent, env, tmp)
            prune_rows.append(row)
            prune_checks += checks
        if not a.no_postgres:
            srv = pg_bench.PgServer(pg_bench.pg_bindir(), os.environ.get("BENCH_TMPDIR"))
            srv.initdb()
            srv.start()
            env_pg = dict(bench.agent_env(tmp, os.path.join(tmp, "data-pg")), PMON_DATABASE_URL=srv.url("q"))
            fill = fill_pg(agent, srv, "q", env_pg, a.records)
            bench.log("PostgreSQL: %d records in %.0fs" % (a.records, fill))
            results["PostgreSQL"] = time_commands(agent, env_pg, a.repeat, rng)
            plans["PostgreSQL"] = pg_plans(agent, env_pg, srv, "q")
            if not a.no_prune:
                row, checks = prune_pg(agent, env_pg, srv, "q")
                prune_rows.append(row)
                prune_checks += checks
        print("### Query times with %d records, %d experiments x %d runs, %d days (%d runs each, p50 / p99)"
              % (a.records, EXPERIMENTS, RUNS, DAYS, a.repeat))
        stores = list(results)
        print("| command | " + " | ".join(stores) + " |")
        print("| --- |" + " --- |" * len(stores))
        for i, (label, _) in enumerate(COMMANDS):
            cells = ["%.0f / %.0f ms" % (results[s][i][1] * 1e3, results[s][i][2] * 1e3) for s in stores]
            print("| %s | %s |" % (label, " | ".join(cells)))
        print()
        bad = []
        for store, store_plans in plans.items():
            bad += print_plans(store, store_plans)
        for store, label, scans in bad:
            print("FAILED: %s: %s reads a large table without an index: %s" % (store, label, scans))
        print("RESULT: %s" % ("plan check failed" if bad else "every statement reads through an index or partition pruning"))
        failed = print_prune(prune_rows, prune_checks) if prune_rows else []
        if prune_rows:
            print("RESULT: %s" % ("a prune check failed" if failed else "db prune removed what is older and nothing else"))
        return 1 if bad or failed else 0
    except pg_bench.Failure as e:
        return bench.setup_error("query_bench", e, srv)
    finally:
        bench.clean_up(tmp, a.keep, srv)


if __name__ == "__main__":
    sys.exit(main())
