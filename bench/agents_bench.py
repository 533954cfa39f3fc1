#!/usr/bin/env python3
"""Many agents, one PostgreSQL (bench/run.sh --agents): the number a team sizes its database by.

Runs 1, 8 and 32 agents at once (`--counts`), each `tail --once` of the shared
workload (`-n` lines, 100,000 by default) into one private PostgreSQL server,
each agent with its own data dir and experiment, and reports per count: the
aggregate records/s from the first start to the last exit, the same against
one `psql \\copy` of all those rows into a plain 13-column table
(same invocation), the server's CPU seconds per 100,000 records (all server
processes, from /proc), and the most connections the agents held at once
(backends of the bench database, polled every 20 ms). Checks: every agent
exits 0 and every record is stored once.
"""

import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
import pg_bench  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def server_pids(srv):
    """The postmaster and every process it started."""
    with open(os.path.join(srv.data, "postmaster.pid")) as f:
        master = int(f.readline())
    pids = [master]
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open("/proc/%s/stat" % p) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == master:
                    pids.append(int(p))
            except OSError:
                pass
    return pids


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
        except OSError:
            pass
    return total / TICKS


def backends_of(db):
    n = 0
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open("/proc/%s/cmdline" % p, "rb") as f:
                    cmd = f.read().replace(b"\0", b" ")
                if cmd.startswith(b"postgres: ") and (b" %s " % db.encode()) in cmd:
                    n += 1
            except OSError:
                pass
    return n


class ConnectionPoller(threading.Thread):
    def __init__(self, db):
        super().__init__(daemon=True)
        self.db, self.peak, self.done = db, 0, False

    def run(self):
        while not self.done:
            self.peak = max(self.peak, backends_of(self.db))
            time.sleep(0.02)


def run_agents(agent, tmp, srv, db, workload, count):
    url = srv.url(db)
    envs = []
    for i in range(count):
        env = bench.agent_env(tmp, os.path.join(tmp, "data-%s-%d" % (db, i)))
        env["PMON_DATABASE_URL"] = url
        envs.append(env)
    cpu0 = cpu_seconds(server_pids(srv))
    poller = ConnectionPoller(db)
    poller.start()
    t0 = time.perf_counter()
    procs = [subprocess.Popen([agent, "tail", "--once", "-e", "agent_%02d" % i, workload], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for i, env in enumerate(envs)]
    errors = [p.communicate()[1].decode()[-300:] for p in procs]
    wall = time.perf_counter() - t0
    poller.done = True
    poller.join()
    cpu = cpu_seconds(server_pids(srv)) - cpu0
    rcs = [p.returncode for p in procs]
    return wall, cpu, poller.peak, rcs, errors


def main():
    ap = bench.arguments(__doc__)
    ap.add_argument("--counts", default="1,8,32")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    t_start, tmp = bench.begin()
    srv = None
    try:
        agent = os.path.join(tmp, "pmon-agent")
        bench.copy_agent(a.agent, agent)
        open(os.path.join(tmp, "empty-config.yml"), "w").close()
        workload, summary, t_gen = bench.generate_workload(a.gen, a.lines, tmp)
        per_agent = summary["records"]
        rows = os.path.join(tmp, "rows.copy")
        pg_bench.presplit_copy(workload, rows)
        os.chmod(tmp, 0o755)
        srv = pg_bench.PgServer(pg_bench.pg_bindir(), os.environ.get("BENCH_TMPDIR"))
        srv.initdb()
        srv.start()
        version = srv.one("postgres", "SHOW server_version")
        results, checks = [], []
        for count in [int(c) for c in a.counts.split(",")]:
            total = per_agent * count
            # Baseline: one \copy of all the rows the agents will write.
            base_db = "copy%d" % count
            srv.createdb(base_db)
            srv.sql(base_db, pg_bench.PLAIN_TABLE)
            many = os.path.join(tmp, "rows-%d.copy" % count)
            with open(many, "w") as out, open(rows) as src:
                text = src.read()
                for i in range(count):
                    out.write(text.replace("\tbaseline\t", "\tbaseline%d\t" % i))
            base = srv.copy_in(base_db, many, tmp=tmp)["wall"]
            os.remove(many)
            db = "agents%d" % count
            srv.createdb(db)
            wall, cpu, peak, rcs, errors = run_agents(agent, tmp, srv, db, workload, count)
            stored = int(srv.one(db, "SELECT count(*) FROM pipeline_logs"))
            distinct = int(srv.one(db, "SELECT count(*) FROM (SELECT DISTINCT run_id, origin, seq FROM pipeline_logs) d"))
            checks.append(("%d agents exit 0" % count, all(rc == 0 for rc in rcs), str([e for e in errors if e][:2])))
            checks.append(("%d agents store %d records, each once" % (count, total),
                           stored == total and distinct == total, "%d stored, %d distinct" % (stored, distinct)))
            results.append((count, total, wall, base, cpu, peak))
            bench.log("%d agents: %.1fs (copy %.1fs), server CPU %.1fs, %d connections" % (count, wall, base, cpu, peak))
        print("### Agents into one PostgreSQL %s (tail --once of %d records each; `\\copy` of the same rows "
              "into a plain 13-column table in the same invocation)" % (version, per_agent))
        print("| agents | records | aggregate records/s | vs one `\\copy` | server CPU s / 100k records | peak connections |")
        print("| --- | --- | --- | --- | --- | --- |")
        for count, total, wall, base, cpu, peak in results:
            print("| %d | %d | %.0f | %.2f× | %.2f | %d |"
                  % (count, total, total / wall, base / wall, cpu / (total / 1e5), peak))
        print()
        failed = bench.print_run_checks([("agents", checks)])
        bench.print_result(t_start, t_gen, 0.0, failed)
        return 1 if failed else 0
    except pg_bench.Failure as e:
        return bench.setup_error("agents_bench", e, srv)
    finally:
        bench.clean_up(tmp, a.keep, srv)


if __name__ == "__main__":
    sys.exit(main())
