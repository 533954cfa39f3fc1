#!/usr/bin/env python3
"""pmon-agent `tail` benchmark (bench/run.sh --tail): throughput and append-to-queryable latency.

Called by bench/run.sh; python3 standard library only (plus the PostgreSQL
server binaries with --postgres).  Reuses bench.py (workload parsing, timing,
verification) and pg_bench.py (private server, verification).  In one invocation:

Throughput (skipped with --latency-only):
1. generate the workload; hard-link it as workload-dir/workload.log (the only
   file in that directory); pre-split it (untimed) into rows of pipeline_logs'
   shape as `tail` stores them: stream `file`, source `workload-dir/workload.log`,
   seq = byte offset of the record's first line;
2. time `cat workload.log > /dev/null` (the cost of reading the file);
3. time the `sqlite3 .import` baseline (as in bench.py);
4. time `pmon-agent tail --once -e bench workload-dir/` into the embedded store;
   verify every field of every record (seq included);
   and, informational, `pmon-agent wrap --no-echo -- cat workload.log`;
5. with --postgres: a private server, `psql \\copy` baseline, `tail --once` into
   PostgreSQL, verified the same way.

Latency (skipped with --no-latency):
6. `pmon-agent tail -e lat DIR` in follow mode (embedded store); a writer
   appends one line `<now> LEVEL app: probe N` every 50 ms (flush after each),
   a separate poller process runs `SELECT message FROM pipeline_logs WHERE
   message LIKE 'probe %'` every 2 ms on a read-only connection and notes when
   each probe first shows; p50/p90/p99/max of (first seen - append).  Runs:
   ERROR lines, INFO lines with the default flush_interval, INFO lines with a
   short flush_interval from a config file.  Then SIGTERM; the agent must exit
   0 with every probe stored once.

Prints Markdown tables; exit 1 if a correctness check failed, 2 on a setup error.
"""

import math
import multiprocessing
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

import bench  # bench/bench.py
import pg_bench  # bench/pg_bench.py (standard library only; the server is only started with --postgres)

EXPERIMENT = bench.EXPERIMENT
TAIL_DIR = "workload-dir"
SOURCE = TAIL_DIR + "/workload.log"  # what `tail` stores as source for the file under TAIL_DIR/
US, RS = bench.US, bench.RS
log = bench.log


Failure = pg_bench.Failure


# --------------------------------------------------------------------------
# Workload with byte offsets
# --------------------------------------------------------------------------

def iter_records_at(path):
    """bench.iter_records plus the byte offset of each record's first line (what
    `tail` stores as seq): yields (offset, ts, level, logger, message, cont)."""
    cur = None
    cont = []
    pos = 0
    with open(path, "rb") as f:
        for raw in f:
            start = pos
            pos += len(raw)
            line = raw.decode("utf-8")
            line = line[:-1] if line.endswith("\n") else line
            if bench.is_head(line):
                if cur is not None:
                    yield cur + (cont,)
                level, rest = line[24:].split(" ", 1)
                logger, message = rest.split(": ", 1)
                cur = (start, bench.rfc3339(line[:23]), level, logger, message)
                cont = []
            elif cur is None:
                raise Failure("workload: continuation line before the first record: %r" % line)
            else:
                cont.append(line)
    if cur is not None:
        yield cur + (cont,)


def presplit_tail(workload, rows_ascii, rows_copy=None):
    """Writes the `.import` rows (and the COPY rows for PostgreSQL); returns
    (records, tracebacks as bench.presplit lists them)."""
    copy_escape = pg_bench.copy_escape
    tracebacks = []
    n = 0
    fc = open(rows_copy, "w", encoding="utf-8", newline="") if rows_copy else None
    try:
        with open(rows_ascii, "w", encoding="utf-8", newline="") as fa:
            for n, (off, ts, level, logger, message, cont) in enumerate(iter_records_at(workload), 1):
                tb = etype = emsg = ""
                if cont:
                    tb = bench.traceback_text(cont)
                    etype, emsg = bench.exception_of(cont)
                    tracebacks.append((ts, tb, etype, emsg,
                                       sum(1 for c in cont if c.startswith("Traceback (most recent")) > 1))
                so = str(off)
                fa.write(US.join((str(n), EXPERIMENT, "baseline", so, ts, level, logger, message,
                                  tb, etype, emsg, "file", SOURCE)) + RS)
                if fc:
                    nul = "\\N"
                    fc.write("\t".join((EXPERIMENT, "baseline", so, ts, level,
                                        copy_escape(logger) if logger else nul, copy_escape(message),
                                        copy_escape(tb) if cont else nul, copy_escape(etype) if cont else nul,
                                        copy_escape(emsg) if cont else nul, "file", SOURCE)) + "\n")
    finally:
        if fc:
            fc.close()
    return n, tracebacks


# --------------------------------------------------------------------------
# Latency: a follow-mode agent, a writer, a poller process
# --------------------------------------------------------------------------

POLL_SQL = "SELECT message FROM pipeline_logs WHERE message LIKE 'probe %'"
# Longer than 64 bytes as a line: the agent reads a new file shorter than that
# only after it has stayed that short for 1 s (it cannot yet tell a copy from a
# new file); the warm-up measures start-up, not that wait (new_file_run does).
WARMUP_MSG = "warmup: the agent follows the file and its store is open"


class StoreReader:
    """Reads the store the agent writes: the embedded SQLite file (read-only,
    WAL) or, with `pg_url`, PostgreSQL through one long-lived `psql` (a
    connection kept open, as the SQLite reader keeps its own)."""

    def __init__(self, db, pg_url=None):
        self.db, self.pg_url, self.con, self.psql = db, pg_url, None, None

    def rows(self, sql, args=()):
        if self.pg_url is None:
            if self.con is None:
                self.con = sqlite3.connect("file:%s?mode=ro" % self.db, uri=True, timeout=1.0)
            return self.con.execute(sql, args).fetchall()
        if self.psql is None:
            self.psql = subprocess.Popen([os.path.join(pg_bench.pg_bindir(), "psql"), "-X", "-A", "-t", "-q",
                                          self.pg_url], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.DEVNULL, text=True, bufsize=1)
        for value in args:  # only our own probe texts: quote them as SQL literals
            sql = sql.replace("?", "'%s'" % str(value).replace("'", "''"), 1)
        self.psql.stdin.write(sql + ";\n\\echo __END__\n")
        self.psql.stdin.flush()
        out = []
        for line in self.psql.stdout:
            line = line.rstrip("\n")
            if line == "__END__":
                break
            if line:
                out.append((line,))
        return out

    def close(self):
        if self.con is not None:
            self.con.close()
        if self.psql is not None:
            self.psql.stdin.close()
            self.psql.wait()


def poller_main(db, expected, interval, ready, done, stop, out, pg_url=None):
    """Runs in its own process (no GIL shared with the writer). Notes
    time.monotonic() (CLOCK_MONOTONIC, the same clock in every process) right
    after the query in which a probe first shows."""
    seen = {}
    polls = 0
    errors = 0
    gaps_max = 0.0
    reader = StoreReader(db, pg_url)
    ready.set()
    last = None
    while not stop.is_set():
        try:
            rows = reader.rows(POLL_SQL)
        except sqlite3.Error:
            errors += 1
            rows = []
        t = time.monotonic()
        polls += 1
        if last is not None:
            gaps_max = max(gaps_max, t - last)
        last = t
        for (m,) in rows:
            if m not in seen:
                seen[m] = t
        if len(seen) >= expected:
            done.set()
        time.sleep(interval)
    reader.close()
    out.send({"seen": seen, "polls": polls, "errors": errors, "max_gap": gaps_max})
    out.close()


def asctime(t):
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) + ",%03d" % (int(t * 1000) % 1000)


def proc_cpu_seconds(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def quantile(sorted_xs, p):
    """Nearest rank."""
    if not sorted_xs:
        return float("nan")
    return sorted_xs[max(0, min(len(sorted_xs) - 1, math.ceil(p * len(sorted_xs)) - 1))]


def latency_run(agent, tmp, name, level, config_text, flush_interval, probes, interval, poll_interval,
                pg_url=None):
    """One follow-mode run; returns a dict of results and a list of checks."""
    d = tempfile.mkdtemp(prefix="lat-%s-" % name, dir=tmp)
    data_dir = os.path.join(d, "data")
    watch = os.path.join(d, "logs")
    os.mkdir(watch)
    path = os.path.join(watch, "app.log")
    cfg = os.path.join(d, "config.yml")
    with open(cfg, "w") as f:
        f.write(config_text)
    env = bench.agent_env(tmp, data_dir)
    env["PMON_CONFIG"] = cfg
    if pg_url:
        env["PMON_DATABASE_URL"] = pg_url
    db = os.path.join(data_dir, "pmon.db")
    checks = []

    def check(cname, ok, detail=""):
        checks.append((cname, bool(ok), detail))

    res = {"name": name, "level": level, "probes": probes}
    # A warm-up ERROR line, there before the agent starts: once it is
    # queryable, the agent is following the file and its store is open.
    f = open(path, "a", encoding="utf-8")
    f.write("%s ERROR app: %s\n" % (asctime(time.time()), WARMUP_MSG))
    f.flush()
    argv = [agent, "tail", "-e", "lat", "logs/"]
    errf = open(os.path.join(d, "agent.stderr"), "w+b")
    t_spawn = time.monotonic()
    p = subprocess.Popen(argv, cwd=d, env=env, stdout=subprocess.DEVNULL, stderr=errf)
    ctx = multiprocessing.get_context("fork")
    poller = None
    try:
        deadline = time.monotonic() + 15
        warm = None
        while time.monotonic() < deadline and p.poll() is None:
            reader = StoreReader(db, pg_url)
            try:
                found = reader.rows("SELECT count(*) FROM pipeline_logs WHERE message = ?", (WARMUP_MSG,))
                if found and int(found[0][0]):
                    warm = time.monotonic() - t_spawn
                    break
            except (sqlite3.Error, ValueError):
                pass
            finally:
                reader.close()
            time.sleep(0.005)
        if warm is None:
            raise Failure("latency %s: the warm-up line never became queryable within 15 s (agent rc=%s): %s"
                          % (name, p.poll(), open(errf.name, errors="replace").read()[-1000:]))
        res["warmup"] = warm
        cpu0, t_cpu0 = proc_cpu_seconds(p.pid), time.monotonic()

        ready, done, stop = ctx.Event(), ctx.Event(), ctx.Event()
        rx, tx = ctx.Pipe(duplex=False)
        poller = ctx.Process(target=poller_main, args=(db, probes, poll_interval, ready, done, stop, tx, pg_url),
                             daemon=True)
        poller.start()
        tx.close()
        ready.wait(10)
        time.sleep(0.1)  # the poller's first queries, before the first probe

        appended = []
        late = 0.0
        t0 = time.monotonic() + 0.05
        for i in range(probes):
            target = t0 + i * interval
            delay = target - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                late = max(late, -delay)
            line = "%s %s app: probe %d\n" % (asctime(time.time()), level, i)
            t = time.monotonic()  # before the write: a conservative start
            f.write(line)
            f.flush()
            appended.append(t)
        t_last = time.monotonic()
        res["writer_late_max"] = late
        res["write_span"] = t_last - t0
        # Everything should show within flush_interval (+ the file poll and slack).
        done.wait(flush_interval + 5.0)
        res["drain"] = time.monotonic() - t_last
        stop.set()
        got = rx.recv() if rx.poll(10) else {"seen": {}, "polls": 0, "errors": 0, "max_gap": 0}
        poller.join(5)
        poller = None
        res["polls"] = got["polls"]
        res["poll_errors"] = got["errors"]
        res["poll_gap_max"] = got["max_gap"]
        cpu1 = proc_cpu_seconds(p.pid)
        if cpu0 is not None and cpu1 is not None:
            res["agent_cpu"] = cpu1 - cpu0
            res["agent_cpu_span"] = time.monotonic() - t_cpu0

        lat = []
        missing = []
        for i, t in enumerate(appended):
            s = got["seen"].get("probe %d" % i)
            if s is None:
                missing.append(i)
            else:
                lat.append((s - t) * 1000.0)
        lat.sort()
        res["seen"] = len(lat)
        res["lat"] = lat
        check("%s: every probe queryable within flush_interval + 5 s" % name, not missing,
              "%d of %d never seen (first: %s)" % (len(missing), probes, missing[:10]))
        check("%s: no probe seen before it was appended" % name, not lat or lat[0] >= 0,
              "min latency %.3f ms" % (lat[0] if lat else 0))
        unknown = [m for m in got["seen"] if m not in {"probe %d" % i for i in range(probes)}]
        check("%s: no unexpected probe message" % name, not unknown, repr(unknown[:5]))

        # SIGTERM: the agent flushes and exits 0.
        t_term = time.monotonic()
        p.send_signal(signal.SIGTERM)
        try:
            rc = p.wait(30)
        except subprocess.TimeoutExpired:
            rc = None
        res["term_exit"] = time.monotonic() - t_term
        errf.seek(0)
        stderr = errf.read().decode("utf-8", "replace")
        check("%s: agent exits 0 within 30 s of SIGTERM" % name, rc == 0,
              "rc=%s stderr=%r" % (rc, stderr[-500:]))
        res["rc"] = rc
    finally:
        if poller is not None:
            poller.terminate()
            poller.join(5)
        if p.poll() is None:
            p.kill()
            p.wait()
        f.close()
        errf.close()

    reader = StoreReader(db, pg_url)
    try:
        counts = reader.rows(
            "SELECT count(*), count(DISTINCT message), "
            "count(*) FILTER (WHERE level != ? OR coalesce(logger, '') != 'app' OR stream != 'file' OR source != ?) "
            "FROM pipeline_logs WHERE message LIKE 'probe %'", (level, "logs/app.log"))[0]
        runs = reader.rows("SELECT state, exit_code FROM pipeline_runs WHERE experiment_id = 'lat'")
    finally:
        reader.close()
    if pg_url:  # psql gives each row as one `a|b|c` line
        counts = [int(x) for x in counts[0].split("|")]
        runs = [(st, int(code)) for st, code in (r[0].split("|") for r in runs)]
    n, nd, bad = counts
    check("%s: every probe stored exactly once (count = count(DISTINCT message) = %d)" % (name, probes),
          n == probes and nd == probes, "count %d, distinct %d" % (n, nd))
    check("%s: probes stored with level %s, logger app, stream file, source logs/app.log" % (name, level),
          bad == 0, "%d differ" % bad)
    check("%s: one run, state stopped, exit code 0" % name, runs == [("stopped", 0)], repr(runs))
    shutil.rmtree(d, ignore_errors=True)
    return res, checks


def new_file_run(agent, tmp, samples, poll_interval):
    """Latency of the first line of a file created while the agent follows its
    directory: `samples` files with one short ERROR line (< 64 bytes) and as
    many with a long one. Sequential; each waits until queryable (max 5 s)."""
    d = tempfile.mkdtemp(prefix="lat-newfile-", dir=tmp)
    data_dir = os.path.join(d, "data")
    watch = os.path.join(d, "logs")
    os.mkdir(watch)
    env = bench.agent_env(tmp, data_dir)
    db = os.path.join(data_dir, "pmon.db")
    checks = []
    res = {"short": [], "long": [], "lost": []}
    errf = open(os.path.join(d, "agent.stderr"), "w+b")
    p = subprocess.Popen([agent, "tail", "-e", "newfile", "logs/"], cwd=d, env=env,
                         stdout=subprocess.DEVNULL, stderr=errf)
    con = None
    try:
        deadline = time.monotonic() + 15
        while con is None and time.monotonic() < deadline and p.poll() is None:
            try:
                c = sqlite3.connect("file:%s?mode=ro" % db, uri=True, timeout=1.0)
                c.execute("SELECT count(*) FROM pipeline_logs").fetchone()
                con = c
            except sqlite3.Error:
                time.sleep(0.01)
        if con is None:
            raise Failure("latency new files: no store after 15 s (agent rc=%s)" % p.poll())
        time.sleep(0.3)  # the agent's first pass over the (empty) directory
        for i in range(2 * samples):
            kind = "short" if i % 2 == 0 else "long"
            msg = "nf %d" % i if kind == "short" else "nf %d %s" % (i, "x" * 48)
            line = "%s ERROR app: %s\n" % (asctime(time.time()), msg)
            assert (len(line) < 64) == (kind == "short")
            t = time.monotonic()
            with open(os.path.join(watch, "new-%d.log" % i), "w") as f:
                f.write(line)
            seen = None
            while time.monotonic() - t < 5.0:
                try:
                    if con.execute("SELECT count(*) FROM pipeline_logs WHERE message = ?", (msg,)).fetchone()[0]:
                        seen = time.monotonic()
                        break
                except sqlite3.Error:
                    pass
                time.sleep(poll_interval)
            if seen is None:
                res["lost"].append(i)
            else:
                res[kind].append((seen - t) * 1000.0)
            time.sleep(0.1)
        p.send_signal(signal.SIGTERM)
        try:
            rc = p.wait(30)
        except subprocess.TimeoutExpired:
            rc = None
        errf.seek(0)
        checks.append(("new files: every first line queryable within 5 s", not res["lost"],
                       "not seen: %r" % res["lost"]))
        checks.append(("new files: agent exits 0 after SIGTERM", rc == 0,
                       "rc=%s stderr=%r" % (rc, errf.read().decode("utf-8", "replace")[-500:])))
    finally:
        if con is not None:
            con.close()
        if p.poll() is None:
            p.kill()
            p.wait()
        errf.close()
    shutil.rmtree(d, ignore_errors=True)
    return res, checks


# --------------------------------------------------------------------------

def main():
    ap = bench.arguments(__doc__)
    ap.add_argument("--postgres", action="store_true", help="also tail --once into a private PostgreSQL server")
    ap.add_argument("--no-extra-baselines", action="store_true",
                    help="skip the informational rows (sqlite3 with indexes, wrap, \\copy full schema)")
    ap.add_argument("--no-latency", action="store_true", help="throughput only")
    ap.add_argument("--latency-only", action="store_true", help="latency only (no workload)")
    ap.add_argument("--probes", type=int, default=400, help="probe lines per latency run (default 400)")
    ap.add_argument("--probe-interval-ms", type=float, default=50.0, help="between appends (default 50)")
    ap.add_argument("--poll-interval-ms", type=float, default=2.0, help="between store queries (default 2)")
    ap.add_argument("--info-flush-interval", default="100ms",
                    help="flush_interval of the third latency run (INFO lines; default 100ms; 'none' skips it)")
    ap.add_argument("--new-files", type=int, default=5,
                    help="new files per kind (short/long first line) for the new-file latency (default 5; 0 skips)")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    if a.no_latency and a.latency_only:
        print("tail_bench: --no-latency and --latency-only exclude each other", file=sys.stderr)
        return 2

    t_start, tmp = bench.begin()
    srv = None
    failed = False
    all_checks = []  # (group, [(name, ok, detail)])
    out = []  # report lines
    t_gen = t_split = 0.0
    try:
        agent = os.path.join(tmp, "pmon-agent")
        bench.copy_agent(a.agent, agent)  # immune to a rebuild meanwhile
        with open(os.path.join(tmp, "empty-config.yml"), "w"):
            pass
        facts = bench.machine_facts(a.agent, a.repo)
        # The git revision above is the checkout's, which may have moved on since
        # the binary was built: name the binary itself too.
        with open(agent, "rb") as f:
            facts.append(("binary", "%s, sha256 %s…, built %s UTC" % (
                a.agent, bench.hashlib.sha256(f.read()).hexdigest()[:12],
                time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(os.stat(a.agent).st_mtime)))))

        if not a.latency_only:
            # 1. workload
            workload, summary, t_gen = bench.generate_workload(a.gen, a.lines, tmp)
            exp = summary["records"]
            os.mkdir(os.path.join(tmp, TAIL_DIR))
            os.link(workload, os.path.join(tmp, SOURCE))  # the directory holds only this file
            log("workload: %d lines, %d records, %d tracebacks, %.1f MB, %.1fs"
                % (summary["lines"], exp, summary["tracebacks"], summary["bytes"] / 1e6, t_gen))
            t0 = time.perf_counter()
            rows = os.path.join(tmp, "rows.ascii")
            rows_copy = os.path.join(tmp, "rows.copy") if a.postgres else None
            n, tracebacks = presplit_tail(workload, rows, rows_copy)
            t_split = time.perf_counter() - t0
            if n != exp or len(tracebacks) != summary["tracebacks"]:
                raise Failure("pre-split found %d records / %d tracebacks, workload.log.json says %d / %d"
                              % (n, len(tracebacks), exp, summary["tracebacks"]))
            log("pre-split: %d rows in %.1fs" % (n, t_split))

            # 2. cat
            c = bench.run_timed(["cat", "workload.log"], cwd=tmp, tmp=tmp)
            if c["rc"] != 0:
                raise Failure("cat workload.log failed: %s" % c["stderr"])
            c["rate"] = exp / c["wall"]
            log("cat workload.log > /dev/null: %.2fs" % c["wall"])

            # 3. sqlite3 baselines
            b = bench.baseline(tmp, "baseline", bench.BASELINE_TABLE, rows, exp, keep=True)
            log("baseline sqlite3 .import: %.2fs = %.0f records/s" % (b["wall"], b["rate"]))
            ref_db = b["db"]
            con = sqlite3.connect(ref_db)  # untimed: index for the verification join
            con.execute("CREATE INDEX ref_ts ON pipeline_logs (timestamp)")
            con.commit()
            con.close()
            bidx = None
            if not a.no_extra_baselines:
                bidx = bench.baseline(tmp, "baseline_idx", bench.BASELINE_TABLE + bench.BASELINE_INDEXES, rows, exp)
                log("baseline with pmon.db's indexes: %.2fs = %.0f records/s" % (bidx["wall"], bidx["rate"]))

            # 4. tail --once → SQLite
            data_dir = tempfile.mkdtemp(prefix="pmon-data-", dir=tmp)
            argv = [agent, "tail", "--once", "-e", EXPERIMENT, TAIL_DIR + "/"]
            log("agent: tail --once → embedded SQLite…")
            r = bench.run_timed(argv, cwd=tmp, env=bench.agent_env(tmp, data_dir), poll_child_hwm=True, tmp=tmp)
            r.update(data_dir=data_dir, rate=exp / r["wall"])
            log("  %.2fs = %.0f records/s, peak RSS %s (VmHWM poller %s)"
                % (r["wall"], r["rate"], bench.mib(r["maxrss_kib"]), bench.mib(r["hwm_kib"])))
            all_checks.append(("tail --once → SQLite", bench.verify(
                r, summary, tracebacks, ref_db, summary["sha256"], 20, plain_log=False, extra_cols=("seq",))))
            shutil.rmtree(data_dir, ignore_errors=True)
            w = None
            if not a.no_extra_baselines:
                log("agent: wrap --no-echo -- cat workload.log (for comparison)…")
                w = bench.run_agent(agent, tmp, "no-echo", False, exp)
                log("  %.2fs = %.0f records/s, peak RSS %s" % (w["wall"], w["rate"], bench.mib(w["maxrss_kib"])))
                # wrap stores stream/source stdout and seq 1..n: compare the rest.
                wc = bench.verify(w, summary, tracebacks, ref_db, summary["sha256"], 20)
                wc = [x for x in wc if not x[0].startswith("every field")]
                con = sqlite3.connect("file:%s?mode=ro" % os.path.join(w["data_dir"], "pmon.db"), uri=True)
                con.execute("ATTACH DATABASE ? AS ref", ("file:%s?mode=ro" % ref_db,))
                cols = ["level", "logger", "message", "traceback", "exception_type", "exception_message"]
                nd = con.execute("SELECT count(*) FROM main.pipeline_logs a JOIN ref.pipeline_logs r "
                                 "ON r.timestamp = a.timestamp WHERE %s" % " OR ".join(
                                     "a.%s IS NOT NULLIF(r.%s, '')" % (x, x) for x in cols)).fetchone()[0]
                con.close()
                wc.append(("every field of every record = the workload (%s)" % ", ".join(cols), nd == 0,
                           "%d records differ" % nd))
                all_checks.append(("wrap --no-echo → SQLite (info)", wc))
                shutil.rmtree(w["data_dir"], ignore_errors=True)

            def rate(x):
                return "{:,.0f}".format(x)

            out.append("## pmon-agent tail: %s lines, %s records, %s tracebacks (%.1f MB)"
                       % ("{:,}".format(summary["lines"]), "{:,}".format(exp), "{:,}".format(summary["tracebacks"]),
                          summary["bytes"] / 1e6))
            out.append("")
            out.append("| what | wall | records/s | ratio vs `sqlite3 .import` | peak RSS |")
            out.append("| --- | --- | --- | --- | --- |")
            out.append("| `cat workload.log > /dev/null` (reading the file, page cache warm; info) | %.2f s | %s | %.2f× | %s |"
                       % (c["wall"], rate(c["rate"]), c["rate"] / b["rate"], bench.mib(c["maxrss_kib"])))
            out.append("| `sqlite3` `.import` of the pre-split rows, pipeline_logs-shaped table, WAL, one transaction "
                       "(**baseline**) | %.2f s | %s | 1.00× | %s |" % (b["wall"], rate(b["rate"]), bench.mib(b["maxrss_kib"])))
            if bidx:
                out.append("| `sqlite3` `.import`, same + pmon.db's UNIQUE and 2 indexes | %.2f s | %s | %.2f× | %s |"
                           % (bidx["wall"], rate(bidx["rate"]), bidx["rate"] / b["rate"], bench.mib(bidx["maxrss_kib"])))
            out.append("| **`pmon-agent tail --once -e bench %s/`** → embedded SQLite | %.2f s | **%s** | **%.2f×** | %s |"
                       % (TAIL_DIR, r["wall"], rate(r["rate"]), r["rate"] / b["rate"], bench.mib(r["maxrss_kib"])))
            if w:
                out.append("| `pmon-agent wrap --no-echo -e bench -- cat workload.log` → embedded SQLite (info) "
                           "| %.2f s | %s | %.2f× | %s |"
                           % (w["wall"], rate(w["rate"]), w["rate"] / b["rate"], bench.mib(w["maxrss_kib"])))
            out.append("")
            # Machine-readable, for `run.sh --ratios`.
            out.append("RATIO|tail --once → embedded SQLite|%.2f|0.7|%s" % (r["rate"] / b["rate"], bench.mib(r["maxrss_kib"])))
            if w:
                out.append("RATIO|wrap → embedded SQLite|%.2f|0.7|%s" % (w["rate"] / b["rate"], bench.mib(w["maxrss_kib"])))

            # 5. PostgreSQL
            if a.postgres:
                srv = pg_bench.PgServer(pg_bench.pg_bindir(), os.environ.get("BENCH_TMPDIR"))
                srv.initdb()
                srv.start()
                version = srv.one("postgres", "SHOW server_version")
                facts.insert(4, ("PostgreSQL", "%s (%s, default settings: fsync on, synchronous_commit on)"
                                 % (version, srv.bin)))
                log("PostgreSQL %s on 127.0.0.1:%d" % (version, srv.port))
                variants = [("base_plain", pg_bench.PLAIN_TABLE, "", "`psql \\copy` of the pre-split rows into "
                             "a plain 13-column table, no key or index (**baseline**)")]
                if not a.no_extra_baselines:
                    variants.append(("base_full", pg_bench.base_table(pg_bench.UNIQUE), pg_bench.EXTRA_INDEXES,
                                     "`psql \\copy`, the whole pre-0005 schema (bigserial key, UNIQUE, 2 indexes)"))
                bases = []
                for db, table, idx, label in variants:
                    srv.createdb(db)
                    srv.sql(db, table + idx)
                    pb = srv.copy_in(db, rows_copy, tmp=tmp)
                    got = int(srv.one(db, "SELECT count(*) FROM pipeline_logs"))
                    if got != exp:
                        raise Failure("baseline %s: %d rows, expected %d" % (db, got, exp))
                    pb.update(rate=exp / pb["wall"], label=label)
                    log("baseline %s: %.2fs = %.0f records/s" % (db, pb["wall"], pb["rate"]))
                    bases.append(pb)
                    srv.sql("postgres", "DROP DATABASE %s;" % db)
                srv.createdb("agent_tail")
                data_dir = tempfile.mkdtemp(prefix="pmon-data-", dir=tmp)
                env = bench.agent_env(tmp, data_dir)
                env["PMON_DATABASE_URL"] = srv.url("agent_tail")
                log("agent: tail --once → PostgreSQL…")
                pr = bench.run_timed(argv, cwd=tmp, env=env, poll_child_hwm=True, tmp=tmp)
                pr.update(data_dir=data_dir, rate=exp / pr["wall"])
                log("  %.2fs = %.0f records/s, peak RSS %s" % (pr["wall"], pr["rate"], bench.mib(pr["maxrss_kib"])))
                pc, pseq = pg_bench.verify_pg(srv, "agent_tail", pr, summary, tracebacks, rows_copy, tmp,
                                              summary["sha256"], plain_log=False,
                                              cmp_cols=pg_bench.CMP_COLS + ["seq"])
                spool = pg_bench.spool_status(agent, env)[0]
                pc.append(("spool empty after the run", spool is not None and spool.get("pending") == 0, repr(spool)))
                all_checks.append(("tail --once → PostgreSQL", pc))
                shutil.rmtree(data_dir, ignore_errors=True)
                srv.cleanup()
                srv = None
                base = bases[0]["rate"]
                out.append("### into PostgreSQL %s (private server, default settings)" % version)
                out.append("")
                out.append("| what | wall | records/s | ratio vs `\\copy` | peak RSS |")
                out.append("| --- | --- | --- | --- | --- |")
                for pb in bases:
                    out.append("| %s | %.2f s | %s | %.2f× | %s (psql) |" % (
                        pb["label"], pb["wall"], rate(pb["rate"]), pb["rate"] / base, bench.mib(pb["maxrss_kib"])))
                out.append("| **`PMON_DATABASE_URL=… pmon-agent tail --once -e bench %s/`** → PostgreSQL "
                           "| %.2f s | **%s** | **%.2f×** | %s |" % (TAIL_DIR, pr["wall"], rate(pr["rate"]),
                                                                   pr["rate"] / base, bench.mib(pr["maxrss_kib"])))
                out.append("")
                out.append("RATIO|tail --once → PostgreSQL|%.2f|0.6|%s" % (pr["rate"] / base, bench.mib(pr["maxrss_kib"])))

        # 6. latency
        if not a.no_latency:
            iv = a.probe_interval_ms / 1000.0
            pv = a.poll_interval_ms / 1000.0
            runs = [("error", "ERROR", "", 5.0, "ERROR lines, default config (`flush_interval` 5 s)"),
                    ("info", "INFO", "", 5.0, "INFO lines, default config (`flush_interval` 5 s, `batch_size` 100)")]
            if a.info_flush_interval.lower() != "none":
                fi = a.info_flush_interval
                secs = float(fi[:-2]) / 1000 if fi.endswith("ms") else float(fi.rstrip("s"))
                runs.append(("info-short", "INFO",
                             "logging:\n  database:\n    flush_interval: %s\n" % fi, secs,
                             "INFO lines, config file `logging.database.flush_interval: %s`" % fi))
            lres = []
            for name, level, cfg, fint, label in runs:
                log("latency %s: %d %s probes every %.0f ms, polling every %.0f ms…"
                    % (name, a.probes, level, a.probe_interval_ms, a.poll_interval_ms))
                res, checks = latency_run(agent, tmp, name, level, cfg, fint, a.probes, iv, pv)
                res["label"] = label
                lat = res["lat"]
                log("  seen %d/%d; p50 %.1f p90 %.1f p99 %.1f max %.1f ms; SIGTERM→exit %.2fs"
                    % (res["seen"], a.probes, quantile(lat, .5), quantile(lat, .9), quantile(lat, .99),
                       lat[-1] if lat else float("nan"), res["term_exit"]))
                lres.append(res)
                all_checks.append(("latency " + name, checks))
            if a.postgres:
                # The same ERROR probes into PostgreSQL: through the local
                # spool (tailed batches), then COPY and commit.
                lsrv = pg_bench.PgServer(pg_bench.pg_bindir(), os.environ.get("BENCH_TMPDIR"))
                try:
                    lsrv.initdb()
                    lsrv.start()
                    lsrv.createdb("lat")
                    log("latency error-pg: %d ERROR probes into PostgreSQL…" % a.probes)
                    res, checks = latency_run(agent, tmp, "error-pg", "ERROR", "", 5.0, a.probes, iv, pv,
                                              pg_url=lsrv.url("lat"))
                finally:
                    lsrv.cleanup()
                res["label"] = "ERROR lines into **PostgreSQL**, default config"
                lat = res["lat"]
                log("  seen %d/%d; p50 %.1f p90 %.1f p99 %.1f ms" % (res["seen"], a.probes, quantile(lat, .5),
                                                                     quantile(lat, .9), quantile(lat, .99)))
                lres.append(res)
                all_checks.append(("latency error-pg", checks))
            nf = None
            if a.new_files > 0:
                log("latency new files: %d files with a short first line, %d with a long one…"
                    % (a.new_files, a.new_files))
                nf, checks = new_file_run(agent, tmp, a.new_files, pv)
                all_checks.append(("latency new files", checks))
                log("  short: %s ms; long: %s ms" % (", ".join("%.0f" % x for x in nf["short"]),
                                                     ", ".join("%.0f" % x for x in nf["long"])))
            out.append("### Append → queryable latency, `pmon-agent tail -e lat DIR` (follow mode, embedded SQLite%s)"
                       % (" and PostgreSQL" if a.postgres else ""))
            out.append("")
            out.append("%d probes per run, one line every %g ms (`flush()` after each), store polled every %g ms "
                       "by a separate process (read-only connection, WAL)." % (a.probes, a.probe_interval_ms,
                                                                               a.poll_interval_ms))
            out.append("")
            out.append("| lines | seen | p50 | p90 | p99 | max | min | agent CPU while following | SIGTERM → exit |")
            out.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
            for res in lres:
                lat = res["lat"]
                cpu = ("%.1f%% of a core" % (100 * res["agent_cpu"] / res["agent_cpu_span"])
                       if res.get("agent_cpu") is not None else "?")
                fmt = lambda x: "%.0f ms" % x if x == x else "—"
                out.append("| %s | %d/%d | %s | %s | %s | %s | %s | %s | %.2f s |" % (
                    res["label"], res["seen"], res["probes"], fmt(quantile(lat, .5)), fmt(quantile(lat, .9)),
                    fmt(quantile(lat, .99)), fmt(lat[-1] if lat else float("nan")),
                    fmt(lat[0] if lat else float("nan")), cpu, res["term_exit"]))
            if nf:
                for kind, what in (("short", "< 64 bytes"), ("long", "≥ 64 bytes")):
                    xs = sorted(nf[kind])
                    out.append("| first line (ERROR, %s) of a file created while following (info) | %d/%d | %s | — "
                               "| — | %s | %s | — | — |" % (what, len(xs), a.new_files, fmt(quantile(xs, .5)),
                                                        fmt(xs[-1] if xs else float("nan")),
                                                        fmt(xs[0] if xs else float("nan"))))
            out.append("")
            e = lres[0]["lat"]
            p99 = quantile(e, .99)
            out.append("Target (issue): an appended ERROR line queryable in under 100 ms at p99 — **%s** (p99 %.0f ms)."
                       % ("met" if p99 < 100 else "not met", p99))
            out.append("Latency = time the poller first saw the row (after its query returned) − time just before "
                       "the `write()`; resolution ≈ the poll interval plus one query. Per run: %s." % "; ".join(
                           "%s: %d polls, max gap %.1f ms, %d query errors, writer at most %.1f ms late, "
                           "agent start → warm-up line queryable %.2f s" % (
                               r["name"], r["polls"], r["poll_gap_max"] * 1000, r["poll_errors"],
                               r["writer_late_max"] * 1000, r["warmup"]) for r in lres))
            out.append("")

        print()
        for line in out:
            print(line)
        print("Machine: " + "; ".join("%s: %s" % kv for kv in facts) + ".")
        if not a.latency_only:
            print("records/s = records / wall time of the whole command (agent: start to exit, incl. the final flush; "
                  "baselines: the `.import` / `\\copy` / `cat` process only). Peak RSS: ru_maxrss of that process.")
        print()
        failed = bench.print_run_checks(all_checks) or failed
        bench.print_result(t_start, t_gen, t_split, failed)
    except Failure as e:
        return bench.setup_error("tail_bench", e, srv)
    finally:
        bench.clean_up(tmp, a.keep, srv)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
