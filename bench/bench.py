#!/usr/bin/env python3
"""pmon-agent throughput benchmark against a `sqlite3 .import` baseline.

Called by bench/run.sh (which finds the workload generator and the binary);
python3 standard library only.  Steps, all in one private temp dir:

1. generate the shared workload (gen_workload.py -n LINES -o workload.log) and
   read workload.log.json for the expected counts;
2. pre-split it (untimed) into rows of pipeline_logs' shape;
3. baseline: time `sqlite3 DB .mode ascii .import ROWS pipeline_logs` (WAL, one
   transaction);
4. time `pmon-agent wrap --no-echo -e bench -- cat workload.log` (and once with
   echo to /dev/null), peak RSS via /usr/bin/time %M and a VmHWM poller;
5. verify the agent's store (counts, tracebacks, every field of every record);
6. print a Markdown table and the machine facts; exit 1 if a check failed.
"""

import argparse
import hashlib
import json
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import schema  # bench/schema.py: pipeline_logs from migrations/

US, RS = "\x1f", "\x1e"  # sqlite3 `.mode ascii` field and record separators
EXPERIMENT = "bench"

# pipeline_logs as migrations/sqlite/0001_init.sql makes it, less its
# `origin` (the pre-split rows have none): the `.import` baseline.
BASELINE_TABLE = schema.table("sqlite", drop=("origin",))
# The secondary indexes pmon.db has on the same table, its key on `source`.
BASELINE_INDEXES = (
    "CREATE UNIQUE INDEX pl_run_source_seq ON pipeline_logs (%s);\n"
    % ", ".join("source" if c == "origin" else c for c in schema.unique_key("sqlite"))
    + schema.indexes("sqlite")
)
BASELINE4_TABLE = schema.table("sqlite", keep=("id", "timestamp", "level", "logger", "message"))


def log(msg):
    print("[bench] " + msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Workload parsing (the reference the store is checked against)
# --------------------------------------------------------------------------

def is_head(line):
    """A record's first line starts with `YYYY-MM-DD HH:MM:SS,mmm `."""
    return (len(line) >= 24 and line[4] == "-" and line[7] == "-" and line[10] == " "
            and line[13] == ":" and line[16] == ":" and line[19] == ","
            and line[:4].isdigit())


def rfc3339(ts):
    """`2026-11-27 10:00:00,123` -> `2026-11-27T10:00:00.123000Z` (the agent's
    format; the agent runs with TZ=UTC so the naive asctime is taken as UTC)."""
    return ts[:10] + "T" + ts[11:19] + "." + ts[20:23] + "000Z"


def iter_records(path):
    """Yields (ts_rfc3339, level, logger, message, continuation_lines) per record."""
    cur = None
    cont = []
    with open(path, encoding="utf-8", newline="\n") as f:
        for line in f:
            line = line[:-1] if line.endswith("\n") else line
            if is_head(line):
                if cur is not None:
                    yield cur + (cont,)
                ts = rfc3339(line[:23])
                level, rest = line[24:].split(" ", 1)
                logger, message = rest.split(": ", 1)
                cur = (ts, level, logger, message)
                cont = []
            elif cur is None:
                raise SystemExit("workload: continuation line before the first record: %r" % line)
            else:
                cont.append(line)
    if cur is not None:
        yield cur + (cont,)


def traceback_text(cont):
    """What the agent stores: the continuation lines as printed, each ending in \\n."""
    return "\n".join(cont) + "\n"


def exception_of(cont):
    """Final exception line `Type: message` -> (type, message)."""
    etype, _, emsg = cont[-1].partition(": ")
    return etype, emsg


def presplit(workload, rows_full, rows4):
    """Writes the baseline input files; returns (records, tracebacks list)."""
    tracebacks = []  # (ts, traceback text, exc type, exc message, chained?)
    n = 0
    with open(rows_full, "w", encoding="utf-8", newline="") as full, \
            open(rows4, "w", encoding="utf-8", newline="") as four:
        wf, w4 = full.write, four.write
        for n, (ts, level, logger, message, cont) in enumerate(iter_records(workload), 1):
            tb = etype = emsg = ""
            if cont:
                tb = traceback_text(cont)
                etype, emsg = exception_of(cont)
                tracebacks.append((ts, tb, etype, emsg,
                                   sum(1 for c in cont if c.startswith("Traceback (most recent")) > 1))
            sn = str(n)
            wf(US.join((sn, EXPERIMENT, "baseline", sn, ts, level, logger, message,
                        tb, etype, emsg, "stdout", "stdout")) + RS)
            w4(US.join((sn, ts, level, logger, message)) + RS)
    return n, tracebacks


# --------------------------------------------------------------------------
# Timing helpers
# --------------------------------------------------------------------------

def have_gnu_time():
    try:
        r = subprocess.run(["/usr/bin/time", "-f", "%M", "true"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        return r.returncode == 0 and r.stderr.strip().isdigit()
    except OSError:
        return False


class HwmPoller(threading.Thread):
    """Polls VmHWM of the child of `parent_pid` (the agent under /usr/bin/time)
    or of parent_pid itself; a cross-check of ru_maxrss."""

    def __init__(self, parent_pid, through_child):
        super().__init__(daemon=True)
        self.parent_pid = parent_pid
        self.through_child = through_child
        self.kib = 0
        self.samples = 0
        self.stop = threading.Event()

    def target(self):
        if not self.through_child:
            return self.parent_pid
        try:
            with open("/proc/%d/task/%d/children" % (self.parent_pid, self.parent_pid)) as f:
                kids = f.read().split()
            return int(kids[0]) if kids else None
        except (OSError, ValueError):
            return None

    def run(self):
        pid = None
        while not self.stop.is_set():
            pid = pid or self.target()
            if pid:
                try:
                    with open("/proc/%d/status" % pid) as f:
                        for line in f:
                            if line.startswith("VmHWM:"):
                                self.kib = max(self.kib, int(line.split()[1]))
                                self.samples += 1
                                break
                except (OSError, ValueError):
                    pass
            self.stop.wait(0.02)


def run_timed(argv, cwd=None, env=None, stdout=subprocess.DEVNULL, poll_child_hwm=False, tmp=None):
    """Runs argv; returns dict(wall, rc, maxrss_kib, hwm_kib, stderr)."""
    use_time = have_gnu_time.cached
    tfile = None
    full = list(argv)
    if use_time:
        tfile = os.path.join(tmp, "time.out")
        full = ["/usr/bin/time", "-o", tfile, "-f", "%M"] + full
    t0 = time.perf_counter()
    p = subprocess.Popen(full, cwd=cwd, env=env, stdout=stdout, stderr=subprocess.PIPE)
    poller = None
    if poll_child_hwm:
        poller = HwmPoller(p.pid, through_child=use_time)
        poller.start()
    # wait4 for the rusage when /usr/bin/time is missing (same semantics:
    # ru_maxrss of the child, i.e. the max over it and the children it waited for).
    stderr_chunks = []
    reader = threading.Thread(target=lambda: stderr_chunks.append(p.stderr.read()), daemon=True)
    reader.start()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    reader.join()
    if poller:
        poller.stop.set()
        poller.join()
    maxrss = ru.ru_maxrss
    if use_time:
        try:
            with open(tfile) as f:
                lines = [l for l in f.read().split("\n") if l.strip()]
            maxrss = int(lines[-1])
        except (OSError, ValueError, IndexError):
            pass
    return {
        "wall": wall,
        "rc": p.returncode,
        "maxrss_kib": maxrss,
        "hwm_kib": poller.kib if poller else None,
        "stderr": b"".join(x for x in stderr_chunks if x).decode("utf-8", "replace"),
    }


have_gnu_time.cached = False


# --------------------------------------------------------------------------
# Baseline
# --------------------------------------------------------------------------

def baseline(tmp, name, table_sql, rows_file, expected, keep=False):
    db = os.path.join(tmp, name + ".db")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db + suffix):
            os.remove(db + suffix)
    # Untimed: create the schema and switch to WAL.
    subprocess.run(["sqlite3", db], input="PRAGMA journal_mode=WAL;\n" + table_sql,
                   text=True, check=True, stdout=subprocess.DEVNULL)
    # Timed: only the import. The shell wraps .import in one BEGIN…COMMIT.
    r = run_timed(["sqlite3", db, "PRAGMA synchronous=NORMAL", ".mode ascii",
                   ".import " + rows_file + " pipeline_logs"], tmp=tmp)
    if r["rc"] != 0 or r["stderr"].strip():
        raise SystemExit("baseline %s: sqlite3 failed (rc=%s): %s" % (name, r["rc"], r["stderr"][:2000]))
    con = sqlite3.connect(db)
    n, mode = con.execute("SELECT count(*), (SELECT journal_mode FROM pragma_journal_mode) FROM pipeline_logs").fetchone()
    con.close()
    if n != expected:
        raise SystemExit("baseline %s: imported %d rows, expected %d" % (name, n, expected))
    if mode != "wal":
        raise SystemExit("baseline %s: journal_mode is %s, not wal" % (name, mode))
    r["db"] = db
    r["rate"] = expected / r["wall"]
    if not keep:
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(db + suffix):
                os.remove(db + suffix)
    return r


# --------------------------------------------------------------------------
# Agent run + verification
# --------------------------------------------------------------------------

def agent_env(tmp, data_dir):
    env = dict(os.environ)
    env.pop("PMON_DATABASE_URL", None)  # the embedded SQLite store, always
    env.update({
        "PMON_DATA_DIR": data_dir,
        "PMON_CONFIG": os.path.join(tmp, "empty-config.yml"),  # built-in defaults only
        "PMON_LOG_LEVEL": "DEBUG",  # store every record
        "TZ": "UTC",  # asctime is local time to the agent; UTC maps it 1:1
    })
    return env


def run_agent(agent, tmp, label, echo, expected):
    data_dir = tempfile.mkdtemp(prefix="pmon-data-", dir=tmp)
    argv = [agent, "wrap"] + ([] if echo else ["--no-echo"]) + ["-e", EXPERIMENT, "--", "cat", "workload.log"]
    with open(os.devnull, "wb") as devnull:
        # cwd=tmp: no ./config.yml or ./parsers of the caller is picked up.
        r = run_timed(argv, cwd=tmp, env=agent_env(tmp, data_dir), stdout=devnull,
                      poll_child_hwm=True, tmp=tmp)
    r.update(label=label, data_dir=data_dir, argv=argv, rate=expected / r["wall"])
    return r


def verify(r, summary, tracebacks, ref_db, workload_sha, sample_n, plain_log=True, extra_cols=()):
    """Checks the agent's store; returns a list of (name, ok, detail).

    plain_log=False skips the plain log file check (`tail` writes none);
    extra_cols are compared too (tail_bench.py: `seq`, a file record's byte offset)."""
    checks = []

    def check(name, ok, detail=""):
        checks.append((name, bool(ok), detail))

    exp_records = summary["records"]
    check("agent exit code 0", r["rc"] == 0, "rc=%s stderr=%r" % (r["rc"], r["stderr"][-500:]))
    db = os.path.join(r["data_dir"], "pmon.db")
    if not os.path.exists(db):
        check("store exists", False, db)
        return checks
    con = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
    runs = con.execute("SELECT run_id, state, exit_code FROM pipeline_runs WHERE experiment_id = ?",
                       (EXPERIMENT,)).fetchall()
    check("exactly one run, succeeded", len(runs) == 1 and runs[0][1] == "succeeded", repr(runs))
    if not runs:
        return checks
    run_id = runs[0][0]
    r["run_id"] = run_id
    q = lambda sql, *a: con.execute(sql, (run_id,) + a).fetchone()[0]
    n = q("SELECT count(*) FROM pipeline_logs WHERE run_id = ?")
    nd = q("SELECT count(DISTINCT timestamp) FROM pipeline_logs WHERE run_id = ?")
    ntb = q("SELECT count(*) FROM pipeline_logs WHERE run_id = ? AND traceback IS NOT NULL")
    r["counts"] = (n, nd, ntb)
    check("count(*) = %d records" % exp_records, n == exp_records, "got %d" % n)
    check("count(DISTINCT timestamp) = %d (lost %d, doubled %d)" % (exp_records, exp_records - nd, n - nd),
          nd == exp_records, "got %d" % nd)
    check("records with a traceback = %d" % summary["tracebacks"], ntb == summary["tracebacks"], "got %d" % ntb)
    by_level = dict(con.execute("SELECT level, count(*) FROM pipeline_logs WHERE run_id = ? GROUP BY level",
                                (run_id,)).fetchall())
    exp_levels = {k: v for k, v in summary["records_by_level"].items() if v}
    check("records by level match", by_level == exp_levels, "got %r want %r" % (by_level, exp_levels))

    # The brief's sample check, straight from the workload file: evenly spaced
    # traceback records, plus the first chained one if the sample has none.
    if tracebacks:
        k = min(sample_n, len(tracebacks))
        idx = sorted({i * len(tracebacks) // k for i in range(k)})
        sample = [tracebacks[i] for i in idx]
        if not any(t[4] for t in sample):
            sample += [t for t in tracebacks if t[4]][:1]
        bad = []
        for ts, tb, etype, emsg, _ in sample:
            row = con.execute("SELECT traceback, exception_type, exception_message FROM pipeline_logs "
                              "WHERE run_id = ? AND timestamp = ?", (run_id, ts)).fetchall()
            if len(row) != 1 or row[0][0] != tb:
                bad.append((ts, tb, row))
        detail = ""
        if bad:
            ts, tb, row = bad[0]
            detail = "%d of %d differ; first at %s:\n  want %r\n  got  %r" % (
                len(bad), len(sample), ts, tb, [x[0] for x in row])
        check("traceback text of %d sampled records (%d chained) = continuation lines + \\n"
              % (len(sample), sum(1 for t in sample if t[4])), not bad, detail)

    # Every field of every record, joined on the unique timestamp against the
    # pre-split rows (the baseline database, indexed after its timed import).
    con.execute("ATTACH DATABASE ? AS ref", ("file:%s?mode=ro" % ref_db,))
    missing = con.execute(
        "SELECT count(*) FROM ref.pipeline_logs r WHERE NOT EXISTS (SELECT 1 FROM main.pipeline_logs a "
        "WHERE a.experiment_id = ? AND a.timestamp = r.timestamp AND a.run_id = ?)",
        (EXPERIMENT, run_id)).fetchone()[0]
    extra = con.execute(
        "SELECT count(*) FROM main.pipeline_logs a WHERE a.run_id = ? AND NOT EXISTS "
        "(SELECT 1 FROM ref.pipeline_logs r WHERE r.timestamp = a.timestamp)", (run_id,)).fetchone()[0]
    cols = ["level", "logger", "message", "traceback", "exception_type", "exception_message", "stream", "source"]
    cols += list(extra_cols)
    cond = " OR ".join("a.%s IS NOT NULLIF(r.%s, '')" % (c, c) for c in cols)
    diff_sql = ("FROM main.pipeline_logs a JOIN ref.pipeline_logs r ON r.timestamp = a.timestamp "
                "WHERE a.run_id = ? AND (%s)" % cond)
    ndiff = con.execute("SELECT count(*) " + diff_sql, (run_id,)).fetchone()[0]
    examples = []
    for row in con.execute("SELECT a.timestamp, %s, %s %s LIMIT 3" % (
            ", ".join("a." + c for c in cols), ", ".join("NULLIF(r.%s, '')" % c for c in cols), diff_sql), (run_id,)):
        got, want = row[1:1 + len(cols)], row[1 + len(cols):]
        examples.append("%s: " % row[0] + "; ".join(
            "%s got %r want %r" % (c, g, w) for c, g, w in zip(cols, got, want) if g != w))
    by_field = {}
    if ndiff:
        for c in cols:
            by_field[c] = con.execute("SELECT count(*) FROM main.pipeline_logs a JOIN ref.pipeline_logs r "
                                      "ON r.timestamp = a.timestamp WHERE a.run_id = ? AND a.%s IS NOT NULLIF(r.%s, '')"
                                      % (c, c), (run_id,)).fetchone()[0]
    check("no workload record missing from the store (by timestamp)", missing == 0, "missing %d" % missing)
    check("no stored record absent from the workload", extra == 0, "extra %d" % extra)
    check("every field of every record = the workload (%s)" % ", ".join(cols), ndiff == 0,
          "%d records differ, by field %r; e.g.\n    %s" % (ndiff, by_field, "\n    ".join(examples)))
    smin, smax, sdist = con.execute("SELECT min(seq), max(seq), count(DISTINCT seq) FROM pipeline_logs "
                                    "WHERE run_id = ?", (run_id,)).fetchone()
    r["seq"] = (smin, smax, sdist)
    con.close()

    # The plain log file is documented as the text exactly as printed.
    if plain_log:
        check_plain_log(check, r["data_dir"], run_id, workload_sha)
    return checks


def check_plain_log(check, data_dir, run_id, workload_sha):
    """The run's plain log file holds exactly the workload's bytes."""
    plain = os.path.join(data_dir, "logs", EXPERIMENT, run_id + ".log")
    if not os.path.exists(plain):
        check("plain log file exists", False, plain)
        return
    h = hashlib.sha256()
    with open(plain, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    check("plain log file = workload bytes (sha256)", h.hexdigest() == workload_sha, plain)


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------

def machine_facts(agent, repo):
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = "%.1f GiB" % (int(line.split()[1]) / 1024 / 1024)
    except OSError:
        pass
    def out(argv, cwd=None):
        try:
            return subprocess.run(argv, cwd=cwd, capture_output=True, text=True).stdout.strip()
        except OSError:
            return "?"
    rev = out(["git", "rev-parse", "--short", "HEAD"], cwd=repo) or "?"
    dirty = out(["git", "status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock", "migrations"], cwd=repo)
    state = "clean" if not dirty else "working tree differs from HEAD"
    return [
        ("nproc", str(os.cpu_count())),
        ("CPU", cpu),
        ("memory", mem),
        ("kernel", platform.release()),
        ("sqlite3", out(["sqlite3", "--version"]).split(" ")[0]),
        ("python3", platform.python_version()),
        ("pmon-agent", "%s (git %s, %s)" % (out([agent, "--version"]), rev, state)),
    ]


def begin():
    """What every bench does first: notes the start, finds GNU time, turns
    SIGTERM/SIGHUP into a clean exit (so the temp dir and server go away),
    and makes the private temp dir. Returns (start time, temp dir)."""
    t_start = time.perf_counter()
    have_gnu_time.cached = have_gnu_time()
    if not have_gnu_time.cached:
        log("/usr/bin/time (GNU time) not found: peak RSS from wait4() ru_maxrss instead "
            "(same number; `apt-get install time` to use it)")

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    return t_start, tempfile.mkdtemp(prefix="pmon-bench-", dir=os.environ.get("BENCH_TMPDIR"))


def generate_workload(gen, lines, tmp):
    """Runs the shared generator into TMP/workload.log (untimed for the rates).
    Returns the path, its summary (the .json beside it) and the seconds it took."""
    log("generating %d lines into %s" % (lines, tmp))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, gen, "-n", str(lines), "-o", "workload.log"],
                   cwd=tmp, check=True, stdout=subprocess.DEVNULL)
    t_gen = time.perf_counter() - t0
    workload = os.path.join(tmp, "workload.log")
    with open(workload + ".json") as f:
        summary = json.load(f)
    return workload, summary, t_gen


def print_run_checks(all_checks):
    """The checks of each run, one line each; returns True if any failed."""
    failed = False
    print("### Correctness checks (runs: %s)" % ", ".join(name for name, _ in all_checks))
    for name, checks in all_checks:
        for cname, ok, detail in checks:
            failed = failed or not ok
            print("- [%s] %s: %s" % ("x" if ok else " ", name, cname))
            if not ok:
                print("  - **FAILED**: %s" % detail)
    return failed


def print_result(t_start, t_gen, t_split, failed):
    total = time.perf_counter() - t_start
    print()
    print("Bench wall time: %.0fs (workload generation %.0fs, pre-split %.0fs)." % (total, t_gen, t_split))
    print("\nRESULT: " + ("FAILED (see unchecked items above)" if failed else "all checks passed"))


def setup_error(prog, error, srv):
    """Says what went wrong before anything could be measured; exit status 2."""
    print("%s: setup error: %s" % (prog, error), file=sys.stderr)
    if srv is not None and os.path.exists(srv.logfile):
        print("server log tail:\n" + open(srv.logfile, errors="replace").read()[-2000:], file=sys.stderr)
    return 2


def clean_up(tmp, keep, srv=None):
    """Stops (--keep) or removes the private server, then keeps or removes TMP."""
    if srv is not None:
        if keep:
            srv.stop()
            log("kept server dir %s (stopped)" % srv.root)
        else:
            srv.cleanup()
    if keep:
        log("kept %s" % tmp)
    else:
        shutil.rmtree(tmp, ignore_errors=True)


def arguments(doc):
    """The arguments run.sh gives every bench script (--gen, --agent, --repo,
    -n); each script adds its own."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--gen", required=True, help="path of gen_workload.py")
    ap.add_argument("--agent", required=True, help="pmon-agent binary (copied into the temp dir)")
    ap.add_argument("--repo", required=True)
    ap.add_argument("-n", "--lines", type=int, default=1_000_000)
    return ap


def copy_agent(src, dst):
    """Copies the agent (and `pmon-agent-holder` beside it, which `wrap` runs
    as its holder) into the temp dir: immune to a rebuild meanwhile."""
    shutil.copy2(src, dst)
    holder = os.path.join(os.path.dirname(src), "pmon-agent-holder")
    if os.path.exists(holder):
        shutil.copy2(holder, os.path.join(os.path.dirname(dst), "pmon-agent-holder"))


def mib(kib):
    return "%.1f MiB" % (kib / 1024.0) if kib else "—"


def main():
    ap = arguments(__doc__)
    ap.add_argument("-r", "--repeat", type=int, default=1,
                    help="time the main baseline and the --no-echo agent run this many times; best is reported")
    ap.add_argument("--no-echo-run", action="store_true", help="skip the extra run with echo to /dev/null")
    ap.add_argument("--no-extra-baselines", action="store_true",
                    help="skip the informational baselines (with indexes; 4 columns)")
    ap.add_argument("--sample", type=int, default=20, help="traceback records to compare text of (default 20)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    a = ap.parse_args()

    t_start, tmp = begin()
    failed = False
    try:
        agent = os.path.join(tmp, "pmon-agent")
        copy_agent(a.agent, agent)  # immune to the binary being rebuilt meanwhile
        with open(os.path.join(tmp, "empty-config.yml"), "w"):
            pass

        # 1. workload
        workload, summary, t_gen = generate_workload(a.gen, a.lines, tmp)
        exp = summary["records"]
        log("workload: %d lines, %d records, %d tracebacks (%d chained), %.1f MB, %.1fs"
            % (summary["lines"], exp, summary["tracebacks"], summary["chained_tracebacks"],
               summary["bytes"] / 1e6, t_gen))

        # 2. pre-split (untimed)
        t0 = time.perf_counter()
        rows_full = os.path.join(tmp, "rows.ascii")
        rows4 = os.path.join(tmp, "rows4.ascii")
        n, tracebacks = presplit(workload, rows_full, rows4)
        t_split = time.perf_counter() - t0
        if n != exp or len(tracebacks) != summary["tracebacks"]:
            raise SystemExit("pre-split found %d records / %d tracebacks, workload.log.json says %d / %d"
                             % (n, len(tracebacks), exp, summary["tracebacks"]))
        log("pre-split: %d rows in %.1fs" % (n, t_split))

        # 3. baselines
        base_runs = []
        for i in range(max(1, a.repeat)):
            b = baseline(tmp, "baseline%d" % i, BASELINE_TABLE, rows_full, exp, keep=(i == 0))
            log("baseline sqlite3 .import: %.2fs = %.0f records/s" % (b["wall"], b["rate"]))
            base_runs.append(b)
        ref_db = base_runs[0]["db"]
        con = sqlite3.connect(ref_db)  # untimed: index for the verification join
        con.execute("CREATE INDEX ref_ts ON pipeline_logs (timestamp)")
        con.commit()
        con.close()
        extras = []
        if not a.no_extra_baselines:
            b = baseline(tmp, "baseline_idx", BASELINE_TABLE + BASELINE_INDEXES, rows_full, exp)
            log("baseline with pmon.db's indexes: %.2fs = %.0f records/s" % (b["wall"], b["rate"]))
            extras.append(("`sqlite3` `.import`, same + pmon.db's UNIQUE and 2 indexes", b))
            b = baseline(tmp, "baseline4", BASELINE4_TABLE, rows4, exp)
            log("baseline 4 columns: %.2fs = %.0f records/s" % (b["wall"], b["rate"]))
            extras.append(("`sqlite3` `.import`, only (id, timestamp, level, logger, message)", b))

        # 4./5. agent runs + verification
        all_checks = []
        agent_runs = []
        for i in range(max(1, a.repeat)):
            log("agent run %d (--no-echo)…" % (i + 1))
            r = run_agent(agent, tmp, "no-echo", False, exp)
            log("  %.2fs = %.0f records/s, peak RSS %s (VmHWM poller %s)"
                % (r["wall"], r["rate"], mib(r["maxrss_kib"]), mib(r["hwm_kib"])))
            checks = verify(r, summary, tracebacks, ref_db, summary["sha256"], a.sample)
            all_checks.append(("wrap --no-echo run %d" % (i + 1), checks))
            agent_runs.append(r)
            shutil.rmtree(r["data_dir"], ignore_errors=True)
        echo_run = None
        if not a.no_echo_run:
            log("agent run with echo to /dev/null…")
            echo_run = run_agent(agent, tmp, "echo", True, exp)
            log("  %.2fs = %.0f records/s, peak RSS %s" % (echo_run["wall"], echo_run["rate"],
                                                           mib(echo_run["maxrss_kib"])))
            all_checks.append(("wrap (echo to /dev/null)",
                               verify(echo_run, summary, tracebacks, ref_db, summary["sha256"], a.sample)))
            shutil.rmtree(echo_run["data_dir"], ignore_errors=True)

        # 6. report
        best_base = min(base_runs, key=lambda x: x["wall"])
        best_agent = min(agent_runs, key=lambda x: x["wall"])
        base_rate = best_base["rate"]

        def rate(x):
            return "{:,.0f}".format(x)

        def times(runs):
            if len(runs) < 2:
                return ""
            return ", best of %d, median %.2f s" % (len(runs), statistics.median(x["wall"] for x in runs))

        print()
        print("## pmon-agent benchmark: %s lines, %s records, %s tracebacks"
              % ("{:,}".format(summary["lines"]), "{:,}".format(exp), "{:,}".format(summary["tracebacks"])))
        print()
        print("| what | records/s | ratio vs baseline | peak RSS |")
        print("| --- | --- | --- | --- |")
        print("| `sqlite3` `.import` of the pre-split rows into a pipeline_logs-shaped table, WAL, one transaction "
              "(**baseline**, %.2f s%s) | %s | 1.00× | %s |"
              % (best_base["wall"], times(base_runs), rate(base_rate), mib(best_base["maxrss_kib"])))
        for label, b in extras:
            print("| %s (%.2f s) | %s | %.2f× | %s |" % (label, b["wall"], rate(b["rate"]), b["rate"] / base_rate,
                                                     mib(b["maxrss_kib"])))
        print("| `pmon-agent wrap --no-echo -e bench -- cat workload.log` → embedded SQLite (%.2f s%s) | %s | %.2f× | %s |"
              % (best_agent["wall"], times(agent_runs), rate(best_agent["rate"]), best_agent["rate"] / base_rate,
                 mib(best_agent["maxrss_kib"])))
        if echo_run:
            print("| `pmon-agent wrap -e bench -- cat workload.log > /dev/null` (echo on, %.2f s) | %s | %.2f× | %s |"
                  % (echo_run["wall"], rate(echo_run["rate"]), echo_run["rate"] / base_rate,
                     mib(echo_run["maxrss_kib"])))
        print()
        print("Machine: " + "; ".join("%s: %s" % kv for kv in machine_facts(a.agent, a.repo)) + ".")
        print("Workload: gen_workload.py seed %s, %s bytes, sha256 %s…; records/s = records / wall time of the "
              "whole command (agent: start to exit, incl. the final flush; baseline: the `.import` only). "
              "Peak RSS: ru_maxrss (/usr/bin/time %%M) of the agent process (VmHWM poller agreed: %s)."
              % (summary["seed"], "{:,}".format(summary["bytes"]), summary["sha256"][:12],
                 ", ".join(mib(r["hwm_kib"]) for r in agent_runs + ([echo_run] if echo_run else []))))
        print()
        print("### Correctness checks (runs: %s)" % ", ".join(name for name, _ in all_checks))
        order, results = [], {}
        for name, checks in all_checks:
            for cname, ok, detail in checks:
                if cname not in results:
                    order.append(cname)
                    results[cname] = []
                results[cname].append((name, ok, detail))
        for cname in order:
            bad = [(name, detail) for name, ok, detail in results[cname] if not ok]
            failed = failed or bool(bad)
            print("- [%s] %s%s" % (" " if bad else "x", cname,
                                   "" if bad else " (%d/%d runs)" % (len(results[cname]), len(all_checks))))
            for name, detail in bad:
                print("  - **FAILED** in %s: %s" % (name, detail))
        seqs = sorted({r["seq"] for r in agent_runs + ([echo_run] if echo_run else []) if r.get("seq")})
        print("- (info, not checked) seq per run: %s" % "; ".join("%s..%s, %s distinct" % q for q in seqs))
        print_result(t_start, t_gen, t_split, failed)
    finally:
        clean_up(tmp, a.keep)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
