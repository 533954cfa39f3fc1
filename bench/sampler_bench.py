#!/usr/bin/env python3
"""What the metrics sampler costs: the agent's own CPU while it wraps a program
whose process tree holds N processes (default 50) that do nothing, with
sampling off (`metrics_interval: 0`, the baseline), every second, and every
100 ms, all in one invocation. The difference to the baseline is the sampler;
divided by the samples taken it is the cost of one sample.

Usage: bench/sampler_bench.py [--agent PATH] [--processes 50] [--seconds 30]
Needs python3 only (standard library). See bench/README.md.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

PROGRAM = r"""
import os, sys, time
go, ready, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
def wait():
    while not os.path.exists(go):
        time.sleep(1)
children = []
for _ in range(n - 1):
    pid = os.fork()
    if pid == 0:
        wait()
        os._exit(0)
    children.append(pid)
open(ready, 'w').close()
wait()
for pid in children:
    os.waitpid(pid, 0)
"""

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """utime + stime of one process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def host_processes():
    return sum(1 for e in os.listdir("/proc") if e.isdigit())


def measure(agent, work, interval, processes, seconds):
    """The agent's CPU seconds over `seconds` of a quiet tree of `processes`."""
    run = tempfile.mkdtemp(dir=work)
    go, ready = os.path.join(run, "go"), os.path.join(run, "ready")
    config = os.path.join(run, "config.yml")
    with open(config, "w") as f:
        f.write(f"monitoring:\n  metrics_interval: {interval}\n")
    env = dict(os.environ, PMON_DATA_DIR=os.path.join(run, "data"), PMON_CONFIG=config)
    env.pop("PMON_DATABASE_URL", None)
    agent_proc = subprocess.Popen(
        [agent, "wrap", "--no-echo", "-e", "sampler", "--", sys.executable, "-c", PROGRAM, go, ready, str(processes)],
        env=env, cwd=run, stdin=subprocess.DEVNULL,
    )
    while not os.path.exists(ready):
        if agent_proc.poll() is not None:
            sys.exit(f"sampler_bench: the agent exited early ({agent_proc.returncode})")
        time.sleep(0.05)
    time.sleep(1)  # past start-up
    before, start = cpu_seconds(agent_proc.pid), time.monotonic()
    time.sleep(seconds)
    after, elapsed = cpu_seconds(agent_proc.pid), time.monotonic() - start
    open(go, "w").close()
    if agent_proc.wait() != 0:
        sys.exit(f"sampler_bench: the wrapped program failed ({agent_proc.returncode})")
    return after - before, elapsed


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent", default=os.environ.get("PMON_AGENT", os.path.join(here, "..", "target", "release", "pmon-agent")))
    parser.add_argument("--processes", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    if not os.access(args.agent, os.X_OK):
        sys.exit(f"sampler_bench: {args.agent} is not an executable; run cargo build --release or set PMON_AGENT")
    with tempfile.TemporaryDirectory() as work:
        rows = []
        for label, interval in [("sampling off (baseline)", 0), ("every 1 s", 1.0), ("every 100 ms", 0.1)]:
            cpu, elapsed = measure(args.agent, work, interval, args.processes, args.seconds)
            rows.append((label, interval, cpu, elapsed))
    base_cpu, base_elapsed = rows[0][2], rows[0][3]
    print(f"agent CPU while wrapping a quiet tree of {args.processes} processes for {args.seconds:g} s "
          f"({host_processes()} processes on the host, {os.cpu_count()} cores)\n")
    print("| sampling | agent CPU | % of a core | above baseline |")
    print("|---|---|---|---|")
    for label, interval, cpu, elapsed in rows:
        above = (cpu / elapsed - base_cpu / base_elapsed) * 100
        print(f"| {label} | {cpu:.2f} s | {cpu / elapsed * 100:.2f}% | {above:+.2f}% |")
    fast = rows[2]
    samples = fast[3] / fast[1]
    per_sample = max(fast[2] - base_cpu * fast[3] / base_elapsed, 0.0) / samples
    print(f"\none sample: {per_sample * 1000:.2f} ms of CPU ({samples:.0f} samples at 100 ms); "
          f"at the 1 s interval that is {per_sample * 100:.2f}% of one core, at the default 10 s {per_sample * 10:.3f}%")


if __name__ == "__main__":
    main()
