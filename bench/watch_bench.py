#!/usr/bin/env python3
"""What `query watch` costs while it follows a busy run in PostgreSQL: a
private PostgreSQL server, a program under `pmon-agent wrap` printing about
5,000 log lines a second with a tqdm bar and an error now and then (metrics
every second), and the dashboard in a real terminal (a tmux pane) refreshing
once a second. Its CPU is compared, in the same invocation and over the same
time, with the baseline a user would otherwise run: `pmon-agent query status`
once a second (`watch -n1`).

Usage: bench/watch_bench.py [--agent PATH] [--seconds 30]
Needs python3, tmux and PostgreSQL server binaries. See bench/README.md.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pg_bench  # noqa: E402  (the private server)

PROGRAM = r"""
import os, sys, time
from tqdm import tqdm
go = os.environ['PMON_GO']
step = 0
with tqdm(total=10**9, desc='train', mininterval=0.2) as bar:
    while not os.path.exists(go):
        for i in range(50):
            print(f'INFO:trainer:step {step} batch {i} loss {1.0 / (step + 1):.5f}')
        if step % 100 == 0:
            print(f'ERROR:trainer:step {step}: gradient overflow, skipping', flush=True)
        sys.stdout.flush()
        bar.update(1)
        step += 1
        time.sleep(0.01)
"""

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def children_cpu():
    usage = os.times()
    return usage.children_user + usage.children_system


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent", default=os.environ.get("PMON_AGENT", os.path.join(here, "..", "target", "release", "pmon-agent")))
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    agent = os.path.abspath(args.agent)
    if not os.access(agent, os.X_OK):
        sys.exit(f"watch_bench: {agent} is not an executable; run cargo build --release or set PMON_AGENT")
    if not shutil.which("tmux"):
        sys.exit("watch_bench: needs tmux (apt-get install tmux)")
    work = tempfile.mkdtemp(prefix="pmon-watch-bench-")
    os.chmod(work, 0o755)  # the server runs as postgres when we are root
    server = pg_bench.PgServer(pg_bench.pg_bindir(), work)
    tmux = ["tmux", "-L", f"pmon-watch-bench-{os.getpid()}", "-f", "/dev/null"]
    program = None
    try:
        server.initdb()
        server.start()
        url = server.url("postgres")
        go = os.path.join(work, "go")
        config = os.path.join(work, "config.yml")
        with open(config, "w") as f:
            f.write("monitoring:\n  metrics_interval: 1\n  progress_update_interval: 1\n")
        env = dict(os.environ, PMON_DATA_DIR=os.path.join(work, "data"), PMON_CONFIG=config,
                   PMON_DATABASE_URL=url, PMON_GO=go)
        program = subprocess.Popen([agent, "wrap", "--no-echo", "-e", "busy", "--", sys.executable, "-c", PROGRAM],
                                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work)
        while subprocess.run([agent, "query", "status", "busy"], env=env, capture_output=True).returncode != 0:
            time.sleep(0.2)
        time.sleep(3)  # the run is in full swing

        # The dashboard, in a real terminal.
        pane_env = " ".join(f"{k}={v}" for k, v in [("PMON_DATA_DIR", env["PMON_DATA_DIR"]), ("PMON_CONFIG", config),
                                                    ("PMON_DATABASE_URL", url)])
        subprocess.run(tmux + ["new-session", "-d", "-x", "160", "-y", "45", f"env {pane_env} {agent} query watch busy"],
                       check=True)
        pid = int(subprocess.run(tmux + ["display-message", "-p", "#{pane_pid}"], capture_output=True, text=True,
                                 check=True).stdout)
        time.sleep(2)
        before, start = cpu_seconds(pid), time.monotonic()
        time.sleep(args.seconds)
        watch_cpu, elapsed = cpu_seconds(pid) - before, time.monotonic() - start
        screen = subprocess.run(tmux + ["capture-pane", "-p"], capture_output=True, text=True).stdout
        if "train" not in screen or "┌ memory" not in screen:
            sys.exit("watch_bench: the dashboard did not show the run:\n" + screen)
        subprocess.run(tmux + ["send-keys", "q"])

        # The baseline: query status once a second, as `watch -n1` would.
        before, start = children_cpu(), time.monotonic()
        polls = 0
        while time.monotonic() - start < args.seconds:
            tick = time.monotonic()
            subprocess.run([agent, "query", "status", "busy"], env=env, capture_output=True, check=True)
            polls += 1
            time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
        status_cpu, status_elapsed = children_cpu() - before, time.monotonic() - start
        lines = server.one("postgres", "SELECT count(*) FROM pipeline_logs")
    finally:
        open(os.path.join(work, "go"), "w").close()
        if program is not None:
            program.wait(timeout=120)
        subprocess.run(tmux + ["kill-server"], capture_output=True)
        server.cleanup()
        shutil.rmtree(work, ignore_errors=True)

    watch_pct = watch_cpu / elapsed * 100
    status_pct = status_cpu / status_elapsed * 100
    print(f"a run writing ~5,000 lines/s into PostgreSQL ({lines} records by the end), {args.seconds:g} s each, {os.cpu_count()} cores\n")
    print("| what | CPU | % of a core | ratio |")
    print("|---|---|---|---|")
    print(f"| `query status` once a second ({polls} runs, **baseline**) | {status_cpu:.2f} s | {status_pct:.2f}% | 1.00× |")
    print(f"| `query watch` (redraw ~1/s) | {watch_cpu:.2f} s | {watch_pct:.2f}% | {watch_pct / max(status_pct, 1e-9):.2f}× |")


if __name__ == "__main__":
    main()
