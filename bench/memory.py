#!/usr/bin/env python3
"""pmon-agent memory benchmark (bench/run.sh --memory): peak RSS of every process on every path.

For each path the shared workload takes, the peak resident memory (VmHWM, polled
every 10 ms from /proc) of each process the agent runs, by role:

  launcher the process the user started with `wrap` while it is still
           `pmon-agent`, before it executes `pmon-agent-holder` (same pid; an
           instant, usually missed by the poller): shown, not bounded
  holder   that process once it is `pmon-agent-holder` (owns the program's pipes)
  shipper  its `pmon-agent ship` child (parses and stores)
  agent    the one process of `tail --once` and `spool replay`

Paths: wrap → embedded SQLite; wrap → PostgreSQL; wrap with PostgreSQL down
(→ spool); `spool replay`; `tail --once` → SQLite; `tail --once` → PostgreSQL;
and one 100 MB line (no newline in it) through `wrap` into SQLite. Every run is
checked: the records stored (or spooled) equal the workload's, and the 100 MB
line is stored cut to `max_line_bytes`.

Exit status: 0 all checks passed and every figure within its bound (holder
≤ 5 MiB, shipper and agent ≤ 20 MiB), 1 otherwise, 2 setup error.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
from pg_bench import PgServer, pg_bindir, Failure  # noqa: E402

EXPERIMENT = "bench"
BOUNDS_KIB = {"holder": 5 * 1024, "shipper": 20 * 1024, "agent": 20 * 1024}
log = bench.log


def ppid_of(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def exe_of(pid):
    try:
        return os.readlink("/proc/%d/exe" % pid)
    except OSError:
        return ""


def hwm_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


class RolePoller(threading.Thread):
    """Peak VmHWM of `root` (role `root_role`) and of its `pmon-agent ship` children."""

    def __init__(self, root, root_role):
        super().__init__(daemon=True)
        self.root, self.root_role = root, root_role
        self.peak = {}
        self.stop = threading.Event()

    def shippers(self):
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and ppid_of(int(entry)) == self.root and b"ship" in cmdline(int(entry)):
                found.append(int(entry))
        return found

    def run(self):
        known = []
        scan = 0
        while not self.stop.is_set():
            if scan % 10 == 0:  # every 100 ms: a restarted shipper is found too
                known = list(set(known) | set(self.shippers()))
            scan += 1
            for role, pid in [(self.root_role, self.root)] + [("shipper", p) for p in known]:
                if role == "holder" and not exe_of(pid).endswith("pmon-agent-holder"):
                    role = "launcher"  # `wrap` before it becomes the holder (exec resets VmHWM)
                kib = hwm_kib(pid)
                if kib is not None:
                    self.peak[role] = max(self.peak.get(role, 0), kib)
            # Every 1 ms at first: `wrap` parses its command line and config
            # for a few ms before it becomes the holder (exec resets VmHWM).
            self.stop.wait(0.001 if scan < 300 else 0.01)


def run_polled(argv, cwd, env, root_role, stdin=None):
    p = subprocess.Popen(argv, cwd=cwd, env=env, stdin=stdin, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    poller = RolePoller(p.pid, root_role)
    poller.start()
    _, err = p.communicate()
    poller.stop.set()
    poller.join()
    return p.returncode, poller.peak, err.decode("utf-8", "replace")


def sqlite_count(data_dir):
    db = os.path.join(data_dir, "pmon.db")
    r = subprocess.run(["sqlite3", db, "SELECT count(*) FROM pipeline_logs"], capture_output=True, text=True)
    return int(r.stdout.strip() or -1)


def main():
    ap = bench.arguments(__doc__)
    ap.add_argument("--no-postgres", action="store_true", help="only the embedded-store paths")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()

    t_start, tmp = bench.begin()
    srv = None
    rows = []  # (path, {role: kib}, ok, detail)
    try:
        agent = os.path.join(tmp, "pmon-agent")
        bench.copy_agent(a.agent, agent)
        with open(os.path.join(tmp, "empty-config.yml"), "w"):
            pass
        workload, summary, _ = bench.generate_workload(a.gen, a.lines, tmp)
        exp = summary["records"]
        tail_dir = os.path.join(tmp, "tail")
        os.mkdir(tail_dir)
        os.link(workload, os.path.join(tail_dir, "workload.log"))

        def fresh_env(url=None):
            data_dir = tempfile.mkdtemp(prefix="pmon-data-", dir=tmp)
            env = bench.agent_env(tmp, data_dir)
            if url:
                env["PMON_DATABASE_URL"] = url
            return data_dir, env

        wrap = [agent, "wrap", "--no-echo", "-e", EXPERIMENT, "--", "cat", "workload.log"]
        tail = [agent, "tail", "--once", "-e", EXPERIMENT, tail_dir]

        def measure(name, argv, env, role, count, stdin=None):
            log("%s…" % name)
            rc, peak, err = run_polled(argv, tmp, env, role, stdin)
            got = count()
            ok = rc == 0 and got == exp
            rows.append((name, peak, ok, "rc %d, %d of %d records%s" % (rc, got, exp, (": " + err[-300:]) if rc else "")))
            log("  %s; %s" % (", ".join("%s %s" % (k, bench.mib(v)) for k, v in sorted(peak.items())), rows[-1][3]))

        data_dir, env = fresh_env()
        measure("wrap → SQLite", wrap, env, "holder", lambda: sqlite_count(data_dir))
        data_dir, env = fresh_env()
        measure("tail --once → SQLite", tail, env, "agent", lambda: sqlite_count(data_dir))

        # One 100 MB line: read and cut while it is read, never held whole.
        big = os.path.join(tmp, "big.line")
        with open(big, "wb") as f:
            chunk = b"x" * (1 << 20)
            for _ in range(100):
                f.write(chunk)
            f.write(b"\nafter\n")
        data_dir, env = fresh_env()
        log("one 100 MB line → SQLite…")
        rc, peak, err = run_polled([agent, "wrap", "--no-echo", "-e", EXPERIMENT, "--", "cat", big], tmp, env, "holder")
        got = sqlite_count(data_dir)
        ok = rc == 0 and got == 2
        rows.append(("wrap of one 100 MB line → SQLite", peak, ok, "rc %d, %d records (2 expected)" % (rc, got)))
        log("  %s; %s" % (", ".join("%s %s" % (k, bench.mib(v)) for k, v in sorted(peak.items())), rows[-1][3]))

        if not a.no_postgres:
            srv = PgServer(pg_bindir(), os.environ.get("BENCH_TMPDIR"))
            srv.initdb()
            srv.start()

            def pg_count(db):
                return lambda: int(srv.one(db, "SELECT count(*) FROM pipeline_logs"))

            for db in ("m_wrap", "m_tail", "m_spool"):
                srv.createdb(db)
            _, env = fresh_env(srv.url("m_wrap"))
            measure("wrap → PostgreSQL", wrap, env, "holder", pg_count("m_wrap"))
            _, env = fresh_env(srv.url("m_tail"))
            measure("tail --once → PostgreSQL", tail, env, "agent", pg_count("m_tail"))

            spool_dir, spool_env = fresh_env(srv.url("m_spool"))
            srv.stop()

            def spooled():
                r = subprocess.run([agent, "spool", "status", "--format", "json"], env=spool_env,
                                   capture_output=True, text=True)
                try:
                    return json.loads(r.stdout).get("pending", -1)
                except ValueError:
                    return -1
            measure("wrap, PostgreSQL down → spool", wrap, spool_env, "holder", spooled)
            srv.start()
            measure("spool replay → PostgreSQL", [agent, "spool", "replay"], spool_env, "agent",
                    pg_count("m_spool"))
    except (Failure, OSError, subprocess.SubprocessError) as e:
        log("setup error: %s" % e)
        return 2
    finally:
        if srv:
            srv.cleanup()
        bench.clean_up(tmp, a.keep)

    failed = False
    print()
    print("| path | launcher | holder | shipper | agent | checks |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, peak, ok, detail in rows:
        cells = []
        for role in ("launcher", "holder", "shipper", "agent"):
            kib = peak.get(role)
            within = kib is None or kib <= BOUNDS_KIB.get(role, kib)
            failed |= not within
            cells.append("–" if kib is None else "%s%s" % (bench.mib(kib), "" if within else " (over)"))
        failed |= not ok
        print("| %s | %s | %s | %s | %s | %s |" % (name, cells[0], cells[1], cells[2], cells[3], "ok" if ok else "FAILED: " + detail))
    print()
    print("Peak RSS = VmHWM polled every 10 ms; bounds: holder %s, shipper and agent %s. %.0f s in all."
          % (bench.mib(BOUNDS_KIB["holder"]), bench.mib(BOUNDS_KIB["shipper"]), time.perf_counter() - t_start))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
