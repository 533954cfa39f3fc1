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
`pmon-agent` process, as a user sees them. With `--plans`, the EXPLAIN of the
statements behind them is printed for each store.
"""

import os
import random
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
import pg_bench  # noqa: E402

EXPERIMENTS = 1000
RUNS = 3
DAYS = 30

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
INSERT INTO pipeline_logs (experiment_id, run_id, origin, seq, timestamp, level, logger, message, traceback,
                           exception_type, exception_message, stream, source)
SELECT format('exp_%s', lpad((i % {experiments})::text, 4, '0')),
       format('R%s_%s', lpad((i % {experiments})::text, 4, '0'), 1 + (i * {runs}) / {records}),
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
-- What autovacuum does to a table in steady use: statistics, and the
-- visibility map that lets counts be answered from an index alone.
VACUUM (ANALYZE) pipeline_logs;
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
    sql = PG_FILL.format(experiments=EXPERIMENTS, runs=RUNS, days=DAYS, records=records,
                         span=DAYS * 86400)
    t0 = time.perf_counter()
    srv.sql(db, sql)
    return time.perf_counter() - t0


def first_line_time(argv, env):
    """Seconds until a following query prints its first line; then stops it."""
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
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


def main():
    ap = bench.arguments(__doc__)
    ap.add_argument("-r", "--repeat", type=int, default=30)
    ap.add_argument("--records", type=int, default=10_000_000)
    ap.add_argument("--no-postgres", action="store_true")
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
        if not a.no_postgres:
            srv = pg_bench.PgServer(pg_bench.pg_bindir(), os.environ.get("BENCH_TMPDIR"))
            srv.initdb()
            srv.start()
            env_pg = dict(bench.agent_env(tmp, os.path.join(tmp, "data-pg")), PMON_DATABASE_URL=srv.url("q"))
            fill = fill_pg(agent, srv, "q", env_pg, a.records)
            bench.log("PostgreSQL: %d records in %.0fs" % (a.records, fill))
            results["PostgreSQL"] = time_commands(agent, env_pg, a.repeat, rng)
        print("### Query times with %d records, %d experiments x %d runs, %d days (%d runs each, p50 / p99)"
              % (a.records, EXPERIMENTS, RUNS, DAYS, a.repeat))
        stores = list(results)
        print("| command | " + " | ".join(stores) + " |")
        print("| --- |" + " --- |" * len(stores))
        for i, (label, _) in enumerate(COMMANDS):
            cells = ["%.0f / %.0f ms" % (results[s][i][1] * 1e3, results[s][i][2] * 1e3) for s in stores]
            print("| %s | %s |" % (label, " | ".join(cells)))
        return 0
    except pg_bench.Failure as e:
        return bench.setup_error("query_bench", e, srv)
    finally:
        bench.clean_up(tmp, a.keep, srv)


if __name__ == "__main__":
    sys.exit(main())
