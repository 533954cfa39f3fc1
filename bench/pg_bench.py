#!/usr/bin/env python3
"""pmon-agent PostgreSQL benchmark (bench/run.sh --postgres) against a `psql \\copy` baseline.

Called by bench/run.sh; python3 standard library only, plus the PostgreSQL
server binaries (/usr/lib/postgresql/<highest>/bin, or PG_BINDIR).  Reuses the
workload parsing and timing helpers of bench.py.  Steps, all in one invocation:

1. generate the workload; pre-split it (untimed) into COPY text rows of
   pipeline_logs' shape;
2. start a private PostgreSQL server (initdb in a temp dir, a free port,
   127.0.0.1 only; stopped with `pg_ctl -m immediate stop` at the end, also on
   failure or SIGINT/SIGTERM);
3. baseline: time `psql -c '\\copy pipeline_logs (...) FROM rows.copy'` into a
   fresh database (with UNIQUE (run_id, source, seq); informational: without it,
   and with the agent's two extra indexes);
4. agent end to end: `PMON_DATABASE_URL=... pmon-agent wrap --no-echo -e bench
   -- cat workload.log` into a fresh database; verify it;
5. replay: stop the server, run the agent again (records go to the spool),
   check `spool status`, start the server, time `pmon-agent spool replay` into
   another fresh database; verify it;
6. print a Markdown table; exit 1 if a check failed.
"""

import glob
import hashlib
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import schema  # bench/schema.py: pipeline_logs from migrations/
import bench  # bench/bench.py: iter_records, run_timed, agent_env, machine_facts, ...

EXPERIMENT = bench.EXPERIMENT
COLS = ["experiment_id", "run_id", "seq", "timestamp", "level", "logger", "message", "traceback",
        "exception_type", "exception_message", "stream", "source"]
CMP_COLS = ["level", "logger", "message", "traceback", "exception_type", "exception_message", "stream", "source"]


# The pre-0005 table: pipeline_logs of migrations/postgres/0001_init.sql,
# less `origin` (the pre-split rows have none); with UNIQUE, its old key.
def base_table(extra=""):
    return schema.table("postgres", extra=extra, drop=("origin",))


UNIQUE = ",\n    UNIQUE (run_id, source, seq)"
# The baseline the agent is measured against: the same 13 columns (origin
# for id, as the agent's rows have it), no key, no index: what `\copy` does
# at its fastest.
PLAIN_TABLE = schema.table("postgres", drop=("id",), defaults={"origin": "'stdout'"})
EXTRA_INDEXES = schema.indexes("postgres")

log = bench.log


class Failure(Exception):
    pass


def copy_escape(s):
    return s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def presplit_copy(workload, out):
    """COPY text-format rows (tab separated, \\N = NULL); returns (records, tracebacks)."""
    tracebacks = []
    n = 0
    with open(out, "w", encoding="utf-8", newline="") as f:
        w = f.write
        for n, (ts, level, logger, message, cont) in enumerate(bench.iter_records(workload), 1):
            tb = etype = emsg = "\\N"
            if cont:
                t = bench.traceback_text(cont)
                e1, e2 = bench.exception_of(cont)
                tracebacks.append((ts, t, e1, e2))
                tb, etype, emsg = copy_escape(t), copy_escape(e1), copy_escape(e2)
            w("\t".join((EXPERIMENT, "baseline", str(n), ts, level, copy_escape(logger) if logger else "\\N",
                         copy_escape(message), tb, etype, emsg, "stdout", "stdout")) + "\n")
    return n, tracebacks


# --------------------------------------------------------------------------
# The private server
# --------------------------------------------------------------------------

def pg_bindir():
    if os.environ.get("PG_BINDIR"):
        return os.environ["PG_BINDIR"]
    cands = [d for d in glob.glob("/usr/lib/postgresql/*/bin") if os.path.exists(os.path.join(d, "initdb"))]
    if not cands:
        raise Failure("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin (set PG_BINDIR)")

    def ver(d):
        return [int(x) for x in re.findall(r"\d+", d.split("/")[-2])] or [0]
    return max(cands, key=ver)


class PgServer:
    def __init__(self, bindir, parent):
        self.bin = bindir
        self.root = tempfile.mkdtemp(prefix="pmon-bench-pg-", dir=parent)
        self.data = os.path.join(self.root, "data")
        self.sock = os.path.join(self.root, "sock")
        self.logfile = os.path.join(self.root, "server.log")
        self.running = False
        self.as_root = os.geteuid() == 0
        os.mkdir(self.sock)
        if self.as_root:  # initdb refuses root: everything server-side runs as postgres
            pw = pwd.getpwnam("postgres")
            os.chmod(self.root, 0o755)
            for p in (self.root, self.sock):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]

    def _run(self, argv, check=True):
        full = (["runuser", "-u", "postgres", "--"] if self.as_root else []) + argv
        r = subprocess.run(full, capture_output=True, text=True)
        if check and r.returncode != 0:
            raise Failure("%s failed (rc=%d): %s%s" % (" ".join(argv[:2]), r.returncode, r.stdout[-1500:], r.stderr[-1500:]))
        return r

    def initdb(self):
        self._run([os.path.join(self.bin, "initdb"), "-D", self.data, "-U", "postgres", "--auth=trust",
                   "-E", "UTF8", "--locale=C", "--no-sync"])

    def start(self):
        self._run([os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-l", self.logfile, "-o",
                   "-p %d -k %s -c listen_addresses=127.0.0.1" % (self.port, self.sock), "-w", "start"])
        self.running = True

    def stop(self):
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            self._run([os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-m", "immediate", "-w", "stop"],
                      check=False)
        self.running = False

    def url(self, db):
        return "postgres://postgres@127.0.0.1:%d/%s" % (self.port, db)

    def psql_argv(self, db):
        return [os.path.join(self.bin, "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
                "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", db]

    def sql(self, db, sql):
        """Runs SQL (any number of statements) and returns the rows of the last result."""
        r = subprocess.run(self.psql_argv(db) + ["-F", "\t"], input=sql, capture_output=True, text=True,
                           env=dict(os.environ, PGTZ="UTC"))
        if r.returncode != 0:
            raise Failure("psql -d %s failed: %s\nSQL: %s" % (db, r.stderr.strip()[-2000:], sql[:500]))
        return [line.split("\t") for line in r.stdout.splitlines()]

    def one(self, db, sql):
        return self.sql(db, sql)[0][0]

    def createdb(self, db):
        self.sql("postgres", "CREATE DATABASE %s;" % db)

    def copy_in(self, db, rows_file, table="pipeline_logs", tmp=None, cols=COLS, binary=False):
        """Timed `psql -c '\\copy ...'`; returns bench.run_timed's dict."""
        options = " WITH (FORMAT binary)" if binary else ""
        argv = self.psql_argv(db) + ["-c", "\\copy %s (%s) FROM '%s'%s" % (table, ", ".join(cols), rows_file, options)]
        r = bench.run_timed(argv, tmp=tmp)
        if r["rc"] != 0:
            raise Failure("\\copy into %s failed: %s" % (db, r["stderr"][-2000:]))
        return r

    def cleanup(self):
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


# --------------------------------------------------------------------------
# Verification of an agent database
# --------------------------------------------------------------------------

def verify_pg(srv, db, r, summary, tracebacks, rows_file, tmp, workload_sha, sample_n=20, plain_log=True,
              cmp_cols=CMP_COLS):
    """cmp_cols: the columns compared with the pre-split rows (tail_bench.py adds `seq`)."""
    checks = []

    def check(name, ok, detail=""):
        checks.append((name, bool(ok), detail))

    exp = summary["records"]
    if r is not None:
        check("agent exit code 0", r["rc"] == 0, "rc=%s stderr=%r" % (r["rc"], r["stderr"][-500:]))
    have = srv.one(db, "SELECT to_regclass('pipeline_logs') IS NOT NULL")
    if have != "t":
        check("pipeline_logs exists", False, "database %s has no pipeline_logs" % db)
        return checks, (None, None, None)
    runs = srv.sql(db, "SELECT run_id, state, coalesce(exit_code::text, '') FROM pipeline_runs "
                       "WHERE experiment_id = '%s'" % EXPERIMENT)
    check("exactly one run, succeeded", len(runs) == 1 and runs[0][1] == "succeeded", repr(runs))
    where = "experiment_id = '%s'" % EXPERIMENT
    n, nd, ntb, nruns = (int(x) for x in srv.sql(
        db, "SELECT count(*), count(DISTINCT timestamp), count(traceback), count(DISTINCT run_id) "
            "FROM pipeline_logs WHERE %s" % where)[0])
    check("count(*) = %d records" % exp, n == exp, "got %d" % n)
    check("count(DISTINCT timestamp) = %d (lost %d, doubled %d)" % (exp, exp - nd, n - nd), nd == exp, "got %d" % nd)
    check("records with a traceback = %d" % summary["tracebacks"], ntb == summary["tracebacks"], "got %d" % ntb)
    check("all records belong to one run_id", nruns == 1, "got %d" % nruns)
    by_level = {k: int(v) for k, v in srv.sql(db, "SELECT level, count(*) FROM pipeline_logs WHERE %s "
                                                  "GROUP BY level" % where)}
    exp_levels = {k: v for k, v in summary["records_by_level"].items() if v}
    check("records by level match", by_level == exp_levels, "got %r want %r" % (by_level, exp_levels))

    # Every field of every record against the pre-split rows, loaded (untimed)
    # into this database as bench_ref and joined on the unique timestamp.
    srv.sql(db, "CREATE TABLE bench_ref (LIKE pipeline_logs INCLUDING DEFAULTS); "
                "ALTER TABLE bench_ref ALTER COLUMN id DROP DEFAULT, ALTER COLUMN id DROP NOT NULL;")
    srv.copy_in(db, rows_file, table="bench_ref", tmp=tmp)
    srv.sql(db, "CREATE INDEX ON bench_ref (timestamp); ANALYZE bench_ref; ANALYZE pipeline_logs;")
    missing = int(srv.one(db, "SELECT count(*) FROM bench_ref r WHERE NOT EXISTS (SELECT 1 FROM pipeline_logs a "
                              "WHERE a.%s AND a.timestamp = r.timestamp)" % where))
    extra = int(srv.one(db, "SELECT count(*) FROM pipeline_logs a WHERE a.%s AND NOT EXISTS "
                            "(SELECT 1 FROM bench_ref r WHERE r.timestamp = a.timestamp)" % where))
    def ref(c):  # the pre-split text columns carry no NULLs; seq is a number
        return "r.seq" if c == "seq" else "NULLIF(r.%s, '')" % c
    cond = " OR ".join("a.%s IS DISTINCT FROM %s" % (c, ref(c)) for c in cmp_cols)
    diff_from = "FROM pipeline_logs a JOIN bench_ref r ON r.timestamp = a.timestamp WHERE a.%s AND (%s)" % (where, cond)
    ndiff = int(srv.one(db, "SELECT count(*) " + diff_from))
    detail = ""
    if ndiff:
        by_field = srv.sql(db, "SELECT " + ", ".join(
            "count(*) FILTER (WHERE a.%s IS DISTINCT FROM %s)" % (c, ref(c)) for c in cmp_cols) + " " + diff_from)[0]
        ex = srv.sql(db, "SELECT a.timestamp, %s, %s %s LIMIT 3" % (
            ", ".join("quote_nullable(a.%s)" % c for c in cmp_cols),
            ", ".join("quote_nullable(%s)" % ref(c) for c in cmp_cols), diff_from))
        lines = []
        for row in ex:
            got, want = row[1:1 + len(cmp_cols)], row[1 + len(cmp_cols):]
            lines.append("%s: " % row[0] + "; ".join("%s got %s want %s" % (c, g[:200], w[:200])
                                                     for c, g, w in zip(cmp_cols, got, want) if g != w))
        detail = "%d records differ, by field %r; e.g.\n    %s" % (
            ndiff, dict(zip(cmp_cols, by_field)), "\n    ".join(lines))
    check("no workload record missing from PostgreSQL (by timestamp)", missing == 0, "missing %d" % missing)
    check("no stored record absent from the workload", extra == 0, "extra %d" % extra)
    check("every field of every record = the workload (%s)" % ", ".join(cmp_cols), ndiff == 0, detail)
    r_seq = srv.sql(db, "SELECT min(seq), max(seq), count(DISTINCT seq) FROM pipeline_logs WHERE %s" % where)[0]
    srv.sql(db, "DROP TABLE bench_ref;")

    if plain_log and r is not None and runs:
        bench.check_plain_log(check, r["data_dir"], runs[0][0], workload_sha)
    return checks, tuple(r_seq)


def spool_status(agent, env):
    p = subprocess.run([agent, "spool", "status", "--format", "json"], env=env, capture_output=True, text=True)
    try:
        return json.loads(p.stdout), p
    except ValueError:
        return None, p


# --------------------------------------------------------------------------

def main():
    ap = bench.arguments(__doc__)
    ap.add_argument("--no-extra-baselines", action="store_true",
                    help="skip the informational \\copy baselines (without UNIQUE; with all indexes)")
    ap.add_argument("--no-replay", action="store_true", help="skip the spool/replay phase")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()

    t_start, tmp = bench.begin()
    srv = None
    failed = False
    try:
        bindir = pg_bindir()
        agent = os.path.join(tmp, "pmon-agent")
        bench.copy_agent(a.agent, agent)
        with open(os.path.join(tmp, "empty-config.yml"), "w"):
            pass

        # 1. workload + pre-split (untimed)
        workload, summary, t_gen = bench.generate_workload(a.gen, a.lines, tmp)
        exp = summary["records"]
        log("workload: %d lines, %d records, %d tracebacks, %.1f MB, %.1fs"
            % (summary["lines"], exp, summary["tracebacks"], summary["bytes"] / 1e6, t_gen))
        t0 = time.perf_counter()
        rows = os.path.join(tmp, "rows.copy")
        n, tracebacks = presplit_copy(workload, rows)
        t_split = time.perf_counter() - t0
        if n != exp or len(tracebacks) != summary["tracebacks"]:
            raise Failure("pre-split found %d records / %d tracebacks, workload.log.json says %d / %d"
                          % (n, len(tracebacks), exp, summary["tracebacks"]))
        os.chmod(tmp, 0o755)  # not needed by the server (\copy reads client-side), harmless
        log("pre-split: %d rows in %.1fs" % (n, t_split))

        # 2. server
        srv = PgServer(bindir, os.environ.get("BENCH_TMPDIR"))
        srv.initdb()
        srv.start()
        version = srv.one("postgres", "SHOW server_version")
        log("PostgreSQL %s (%s) on 127.0.0.1:%d, data %s" % (version, bindir, srv.port, srv.data))

        # 3. baselines
        variants = [("base_plain", PLAIN_TABLE, "", "`psql \\copy` of the pre-split rows into a plain "
                     "13-column table, no key or index (**baseline**, ")]
        if not a.no_extra_baselines:
            variants += [("base_unique", base_table(UNIQUE), "", "`psql \\copy`, the pre-0005 table: bigserial key "
                          "and `UNIQUE (run_id, source, seq)` ("),
                         ("base_full", base_table(UNIQUE), EXTRA_INDEXES, "`psql \\copy`, same + its 2 other "
                          "indexes (the whole pre-0005 schema) (")]
        bases = []
        for db, table, idx, label in variants:
            srv.createdb(db)
            srv.sql(db, table + idx)
            b = srv.copy_in(db, rows, tmp=tmp)
            got = int(srv.one(db, "SELECT count(*) FROM pipeline_logs"))
            if got != exp:
                raise Failure("baseline %s: %d rows, expected %d" % (db, got, exp))
            b.update(rate=exp / b["wall"], label=label)
            log("baseline %s: %.2fs = %.0f records/s" % (db, b["wall"], b["rate"]))
            bases.append(b)
            srv.sql("postgres", "DROP DATABASE %s;" % db)  # keeps the server's disk use down
        base_rate = bases[0]["rate"]

        all_checks = []
        results = []

        # 4. agent end to end
        srv.createdb("agent_live")
        data_dir = tempfile.mkdtemp(prefix="pmon-data-", dir=tmp)
        env = bench.agent_env(tmp, data_dir)
        env["PMON_DATABASE_URL"] = srv.url("agent_live")
        argv = [agent, "wrap", "--no-echo", "-e", EXPERIMENT, "--", "cat", "workload.log"]
        log("agent run → PostgreSQL…")
        with open(os.devnull, "wb") as dn:
            r = bench.run_timed(argv, cwd=tmp, env=env, stdout=dn, poll_child_hwm=True, tmp=tmp)
        r.update(data_dir=data_dir, rate=exp / r["wall"])
        log("  %.2fs = %.0f records/s, peak RSS %s" % (r["wall"], r["rate"], bench.mib(r["maxrss_kib"])))
        checks, seq = verify_pg(srv, "agent_live", r, summary, tracebacks, rows, tmp, summary["sha256"])
        all_checks.append(("wrap → PostgreSQL", checks))
        results.append(("`pmon-agent wrap --no-echo -e bench -- cat workload.log` → PostgreSQL (%.2f s)" % r["wall"], r))
        shutil.rmtree(data_dir, ignore_errors=True)

        # 5. spool + replay
        replay = None
        if not a.no_replay:
            srv.stop()
            data_dir = tempfile.mkdtemp(prefix="pmon-data-", dir=tmp)
            env = bench.agent_env(tmp, data_dir)
            env["PMON_DATABASE_URL"] = srv.url("agent_spooled")  # server down: every batch goes to the spool
            log("agent run with PostgreSQL down → spool…")
            with open(os.devnull, "wb") as dn:
                s = bench.run_timed(argv, cwd=tmp, env=env, stdout=dn, poll_child_hwm=True, tmp=tmp)
            s.update(data_dir=data_dir, rate=exp / s["wall"])
            log("  %.2fs = %.0f records/s, peak RSS %s" % (s["wall"], s["rate"], bench.mib(s["maxrss_kib"])))
            sc = [("agent exit code 0 (PostgreSQL down)", s["rc"] == 0, "rc=%s stderr=%r" % (s["rc"], s["stderr"][-500:]))]
            st, p = spool_status(agent, env)
            log("  spool status: %s" % (st if st is not None else p.stdout + p.stderr))
            sc.append(("spool status pending = %d records" % exp, st is not None and st.get("pending") == exp,
                       "got %r (rc=%s %s)" % (st, p.returncode, p.stderr[-300:])))
            results.append(("`pmon-agent wrap …` with PostgreSQL down → spool (info, %.2f s)" % s["wall"], s))

            srv.start()
            srv.createdb("agent_replay")
            env["PMON_DATABASE_URL"] = srv.url("agent_replay")
            log("spool replay → PostgreSQL…")
            replay = bench.run_timed([agent, "spool", "replay"], cwd=tmp, env=env, poll_child_hwm=True, tmp=tmp)
            replay.update(data_dir=data_dir, rate=exp / replay["wall"])
            log("  %.2fs = %.0f records/s, peak RSS %s" % (replay["wall"], replay["rate"],
                                                         bench.mib(replay["maxrss_kib"])))
            sc.append(("`spool replay` exit code 0", replay["rc"] == 0,
                       "rc=%s stderr=%r" % (replay["rc"], replay["stderr"][-500:])))
            st2, p2 = spool_status(agent, env)
            sc.append(("spool status pending = 0 after replay", st2 is not None and st2.get("pending") == 0,
                       "got %r" % (st2,)))
            checks2, _ = verify_pg(srv, "agent_replay", None, summary, tracebacks, rows, tmp, summary["sha256"],
                                   plain_log=False)
            # The spool-phase run's plain log file, checked like the live run's.
            runs = srv.sql("agent_replay", "SELECT run_id FROM pipeline_runs WHERE experiment_id = '%s'" % EXPERIMENT)
            if runs:
                plain = os.path.join(data_dir, "logs", EXPERIMENT, runs[0][0] + ".log")
                ok = os.path.exists(plain) and hashlib.sha256(open(plain, "rb").read()).hexdigest() == summary["sha256"]
                sc.append(("plain log file = workload bytes (sha256)", ok, plain))
            all_checks.append(("spool + replay", sc + checks2))
            results.append(("`pmon-agent spool replay` of the spooled run → PostgreSQL (%.2f s)" % replay["wall"], replay))
            shutil.rmtree(data_dir, ignore_errors=True)

        # 6. report
        def rate(x):
            return "{:,.0f}".format(x)

        print()
        print("## pmon-agent → PostgreSQL benchmark: %s lines, %s records, %s tracebacks"
              % ("{:,}".format(summary["lines"]), "{:,}".format(exp), "{:,}".format(summary["tracebacks"])))
        print()
        print("| what | records/s | ratio vs \\copy | peak RSS |")
        print("| --- | --- | --- | --- |")
        for b in bases:
            print("| %s%.2f s) | %s | %.2f× | %s (psql) |" % (b["label"], b["wall"], rate(b["rate"]),
                                                              b["rate"] / base_rate, bench.mib(b["maxrss_kib"])))
        for label, x in results:
            print("| %s | %s | %.2f× | %s |" % (label, rate(x["rate"]), x["rate"] / base_rate, bench.mib(x["maxrss_kib"])))
        print()
        # Machine-readable, for `run.sh --ratios`.
        print("RATIO|wrap → PostgreSQL|%.2f|0.6|%s" % (r["rate"] / base_rate, bench.mib(r["maxrss_kib"])))
        if replay is not None:
            print("RATIO|spool replay → PostgreSQL|%.2f|0.6|%s" % (replay["rate"] / base_rate,
                                                             bench.mib(replay["maxrss_kib"])))
        print()
        facts = bench.machine_facts(a.agent, a.repo)
        facts.insert(4, ("PostgreSQL", "%s (%s, default settings: fsync on, synchronous_commit on)" % (version, bindir)))
        print("Machine: " + "; ".join("%s: %s" % kv for kv in facts) + ".")
        print("records/s = records / wall time of the whole command (agent: start to exit, incl. connecting, "
              "schema creation and the final flush; baseline: the `psql \\copy` process only). Peak RSS: ru_maxrss "
              "of the client process; the PostgreSQL server's memory is in no row.")
        print()
        failed = bench.print_run_checks(all_checks) or failed
        print("- (info, not checked) seq of the live run: %s..%s, %s distinct" % seq)
        bench.print_result(t_start, t_gen, t_split, failed)
    except Failure as e:
        return bench.setup_error("pg_bench", e, srv)
    finally:
        bench.clean_up(tmp, a.keep, srv)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
