#!/usr/bin/env python3
"""What loading every shipped declarative parser costs, on the shared workload.

Two measurements, each against its baseline in the same invocation:

1. Parsing alone: `pmon-agent parsers test WORKLOAD --summary` (framing, the
   parser chain, tracebacks, progress; no store) with the whole chain (every
   parsers/*.yml, then the built-in parsers) against `--parser python-logging`
   (the Python-logging parser alone). Best of -r runs each, alternating.
2. End to end: `tail --once` of the workload into the embedded store with the
   whole chain against `--parser python-logging`.

Checks: both chains make the same number of records (the workload is Python
logging output: no shipped parser may claim a line of it), and the tail runs
store every record.
"""

import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

ALONE = ["--parser", "python-logging"]


def timed(argv, env):
    t0 = time.perf_counter()
    out = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if out.returncode != 0:
        raise SystemExit("parsers_bench: %s failed:\n%s" % (" ".join(argv), out.stderr.decode()))
    return time.perf_counter() - t0, out.stdout.decode()


def records_of(summary):
    return sum(int(line.split()[-1]) for line in summary.splitlines() if line.strip())


def main():
    ap = bench.arguments(__doc__)
    ap.add_argument("-r", "--repeat", type=int, default=3)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    t_start, tmp = bench.begin()
    try:
        workload, summary, t_gen = bench.generate_workload(args.gen, args.lines, tmp)
        agent = os.path.join(tmp, "pmon-agent")
        bench.copy_agent(args.agent, agent)
        open(os.path.join(tmp, "empty-config.yml"), "w").close()
        env = bench.agent_env(tmp, os.path.join(tmp, "data"))
        best = {"alone": None, "all": None}
        counts = {}
        for _ in range(args.repeat):
            for name, extra in (("alone", ALONE), ("all", [])):
                secs, out = timed([agent, "parsers", "test", workload, "--summary"] + extra, env)
                counts[name] = records_of(out)
                if best[name] is None or secs < best[name]:
                    best[name] = secs
        lines = args.lines
        print("### Parser chain cost (%d lines, best of %d)" % (lines, args.repeat))
        print("| chain | seconds | lines/s | cost |")
        print("| --- | --- | --- | --- |")
        for name, label in (("alone", "python-logging alone"), ("all", "every shipped parser + built-ins")):
            print("| %s | %.2f | %.0f | %.2f× |" % (label, best[name], lines / best[name], best[name] / best["alone"]))
        tail = {}
        for name, extra in (("alone", ALONE), ("all", [])):
            data = os.path.join(tmp, "data-" + name)
            env_t = bench.agent_env(tmp, data)
            secs, _ = timed([agent, "tail", "--once", "-e", "w"] + extra + [workload], env_t)
            stored = subprocess.run(["sqlite3", os.path.join(data, "pmon.db"), "SELECT count(*) FROM pipeline_logs"],
                                    check=True, stdout=subprocess.PIPE).stdout.decode().strip()
            tail[name] = (secs, int(stored))
        print()
        print("### tail --once into the embedded store")
        print("| chain | seconds | records/s | cost |")
        print("| --- | --- | --- | --- |")
        for name, label in (("alone", "python-logging alone"), ("all", "every shipped parser + built-ins")):
            secs, n = tail[name]
            print("| %s | %.2f | %.0f | %.2f× |" % (label, secs, n / secs, secs / tail["alone"][0]))
        expected = summary.get("records") or summary.get("logical_records")
        checks = [
            ("both chains make the same records", counts["alone"] == counts["all"],
             "%s vs %s" % (counts["alone"], counts["all"])),
            ("tail stores every record (%s)" % expected, all(n == expected for _, n in tail.values()) if expected else True,
             str(tail)),
            ("whole chain costs at most 1.5× python-logging alone", best["all"] <= 1.5 * best["alone"],
             "%.2f×" % (best["all"] / best["alone"])),
        ]
        print()
        failed = bench.print_run_checks([("parsers", checks)])
        bench.print_result(t_start, t_gen, 0.0, failed)
        return 1 if failed else 0
    finally:
        bench.clean_up(tmp, args.keep)


if __name__ == "__main__":
    sys.exit(main())
