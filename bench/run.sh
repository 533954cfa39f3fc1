#!/usr/bin/env bash
# pmon-agent benchmarks: the shared workload through `pmon-agent wrap --no-echo`
# into the embedded SQLite store against `sqlite3 .import` (default), into
# PostgreSQL against `psql \copy` (--postgres), or through `tail` (--tail), with
# correctness checks. See bench/README.md.
#
# Usage: bench/run.sh [-n LINES] [-r REPEAT] [--no-echo-run] [--no-extra-baselines] [--keep]
#        bench/run.sh --ratios [-n LINES]
#        bench/run.sh --postgres [-n LINES] [--no-extra-baselines] [--no-replay] [--keep]
#        bench/run.sh --memory [-n LINES] [--no-postgres] [--keep]
#        bench/run.sh --parsers [-n LINES] [-r REPEAT] [--keep]
#        bench/run.sh --schema [-n LINES] [-r REPEAT] [--keep]
#        bench/run.sh --queries [--records N] [-r REPEAT] [--no-postgres] [--no-prune] [--keep]
#        bench/run.sh --agents [-n LINES] [--keep]
#        bench/run.sh --tail [-n LINES] [--postgres] [--no-extra-baselines] [--no-latency|--latency-only]
#                    [--probes N] [--probe-interval MS] [--info-flush-interval DUR|none] [--new-files N] [--keep]
#   --ratios   the default-config ratios first: tail, wrap and spool replay into PostgreSQL against
#              `psql \copy` into a plain 13-column table, tail and wrap into SQLite against `sqlite3
#              .import` (runs --postgres and --tail --postgres --no-latency; ≈4 min), then their reports
#   --postgres ship into a private PostgreSQL server instead (pg_bench.py): `psql \copy` baseline,
#              wrap end to end, spool + `spool replay`; needs /usr/lib/postgresql/*/bin (or PG_BINDIR)
#   --no-replay          (--postgres) skip the spool/replay phase
#   --tail     `tail` instead (tail_bench.py): `tail --once` of the workload vs `cat` and `sqlite3 .import`
#              (with --postgres also into PostgreSQL vs `psql \copy`), then append-to-queryable latency
#              of a following `tail` (ERROR lines, INFO lines, INFO with a short flush_interval)
#   --memory   peak RSS (VmHWM) of each process (holder, shipper, the one process of tail/replay) on
#              every path, against the bounds holder ≤ 5 MiB, shipper ≤ 20 MiB (memory.py);
#              --no-postgres keeps to the embedded store
#   --parsers  what every shipped parsers/*.yml costs (parsers_bench.py): `parsers test --summary` and
#              `tail --once` with the whole chain against `--parser python-logging` alone (-r: best of, 3)
#   --schema   `psql \copy` of the workload's rows into schema variants of pipeline_logs (schema_bench.py):
#              plain, one index at a time, today's table, time-partitioned ones; no agent run
#   --queries  query commands' p50/p99 with N records (10,000,000) over 1,000 experiments in both stores
#              (query_bench.py), then `db prune --older-than 15d` on both, checked and with the space it
#              gave back (--no-prune skips it)
#              (query_bench.py; --records 100000 for the small figure)
#   --agents   1, 8 and 32 agents (tail --once of -n lines, default here 100000) into one PostgreSQL:
#              aggregate records/s vs one \copy, server CPU per 100k records, peak connections
#   --no-latency / --latency-only   (--tail) only the throughput / only the latency part
#   --probes N, --probe-interval MS (--tail) probe lines per latency run (400), between appends (50)
#   --info-flush-interval DUR       (--tail) flush_interval of the third latency run (100ms; none: skip it)
#   --new-files N                   (--tail) files created while following, per kind (short/long line) (5; 0 skips)
#   -n LINES   workload lines (default 1000000; -n 100000 for a quick run)
#   -r REPEAT  time the main baseline and the --no-echo agent run REPEAT times, report the best (default 1)
#   --no-echo-run        skip the extra agent run with echo to /dev/null
#   --no-extra-baselines skip the informational baselines (with indexes; 4 columns only)
#   --keep     keep the temp dir (workload, baseline db) for inspection
# Environment:
#   PMON_AGENT=PATH  binary to measure (default: <repo>/target/release/pmon-agent, built if missing)
#   BENCH_TMPDIR=DIR where the temp dir goes (default $TMPDIR or /tmp); needs ~1.5 GB per 1M lines
# Exit status: 0 all checks passed, 1 a correctness check failed, 2 usage/setup error.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
gen="$(dirname "$repo")/shared/bench/gen_workload.py"

lines=1000000
lines_given=
pass=()
postgres=
tail=
memory=
parsers=
schema=
queries=
agents=
ratios=
tailpass=()
while [ $# -gt 0 ]; do
    case "$1" in
        -n) [ $# -ge 2 ] || { echo "run.sh: -n needs a value" >&2; exit 2; }; lines=$2; lines_given=1; shift 2 ;;
        -n*) lines=${1#-n}; lines_given=1; shift ;;
        -r) [ $# -ge 2 ] || { echo "run.sh: -r needs a value" >&2; exit 2; }; pass+=(--repeat "$2"); shift 2 ;;
        --no-echo-run|--no-extra-baselines|--keep|--no-replay|--no-prune) pass+=("$1"); shift ;;
        --postgres) postgres=1; shift ;;
        --tail) tail=1; shift ;;
        --memory) memory=1; shift ;;
        --parsers) parsers=1; shift ;;
        --schema) schema=1; shift ;;
        --queries) queries=1; shift ;;
        --agents) agents=1; shift ;;
        --ratios) ratios=1; shift ;;
        --records)
            [ $# -ge 2 ] || { echo "run.sh: --records needs a value" >&2; exit 2; }
            pass+=(--records "$2"); shift 2 ;;
        --no-postgres) tailpass+=("$1"); shift ;;
        --no-latency|--latency-only) tailpass+=("$1"); shift ;;
        --probes|--probe-interval|--info-flush-interval|--new-files)
            [ $# -ge 2 ] || { echo "run.sh: $1 needs a value" >&2; exit 2; }
            case "$1" in --probe-interval) tailpass+=(--probe-interval-ms "$2") ;; *) tailpass+=("$1" "$2") ;; esac
            shift 2 ;;
        -h|--help) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
case "$lines" in ''|*[!0-9]*) echo "run.sh: -n wants a number of lines, got '$lines'" >&2; exit 2 ;; esac

if [ ! -f "$gen" ]; then
    echo "run.sh: the shared workload generator is missing: $gen" >&2
    echo "        (it lives in shared/bench/ beside the repository checkout: $(dirname "$repo")/shared/bench/)" >&2
    exit 2
fi
if [ -n "$agents" ]; then
    tools="python3"
    [ "$lines_given" ] || lines=100000
elif [ -n "$queries" ]; then
    tools="python3 sqlite3"
    pass+=(${tailpass[@]+"${tailpass[@]}"})
    tailpass=()
elif [ -n "$schema" ]; then
    [ -z "$postgres$tail$memory$parsers" ] || { echo "run.sh: --schema is a bench of its own" >&2; exit 2; }
    tools="python3"
elif [ -n "$parsers" ]; then
    [ -z "$postgres$tail$memory" ] || { echo "run.sh: --parsers is a bench of its own; drop --postgres/--tail/--memory" >&2; exit 2; }
    tools="python3 sqlite3"
elif [ -n "$memory" ]; then
    for o in ${pass[@]+"${pass[@]}"}; do
        case "$o" in --keep) ;; *) echo "run.sh: only -n, --no-postgres and --keep apply to --memory" >&2; exit 2 ;; esac
    done
    [ -z "$postgres$tail" ] || { echo "run.sh: --memory measures every path itself; drop --postgres/--tail" >&2; exit 2; }
    tools="python3 sqlite3"
elif [ -z "$tail" ] && [ ${#tailpass[@]} -gt 0 ]; then
    echo "run.sh: ${tailpass[0]} only applies to --tail" >&2; exit 2
fi
if [ -n "$tail" ]; then
    for o in ${pass[@]+"${pass[@]}"}; do
        case "$o" in --repeat|--no-echo-run|--no-replay) echo "run.sh: -r, --no-echo-run and --no-replay are not supported with --tail" >&2; exit 2 ;; esac
    done
    tools="python3 sqlite3"
    [ -z "$postgres" ] || tailpass+=(--postgres)
elif [ -n "$postgres" ]; then
    for o in ${pass[@]+"${pass[@]}"}; do
        case "$o" in --repeat|--no-echo-run) echo "run.sh: -r and --no-echo-run are not supported with --postgres" >&2; exit 2 ;; esac
    done
    tools="python3"
else
    for o in ${pass[@]+"${pass[@]}"}; do
        case "$o" in --no-replay) echo "run.sh: --no-replay only applies to --postgres" >&2; exit 2 ;; esac
    done
    tools="python3 sqlite3"
fi
for tool in $tools; do
    command -v "$tool" >/dev/null 2>&1 || { echo "run.sh: '$tool' is required but not on PATH" >&2; exit 2; }
done
if [ ! -x /usr/bin/time ]; then
    echo "run.sh: note: /usr/bin/time missing (apt-get install time); peak RSS comes from wait4() instead" >&2
fi

agent=${PMON_AGENT:-"$repo/target/release/pmon-agent"}
if [ ! -x "$agent" ]; then
    if [ -n "${PMON_AGENT:-}" ]; then
        echo "run.sh: PMON_AGENT=$agent is not an executable" >&2; exit 2
    fi
    echo "run.sh: $agent missing; running cargo build --release" >&2
    (cd "$repo" && cargo build --release) || { echo "run.sh: cargo build --release failed" >&2; exit 2; }
fi

if [ -n "$ratios" ]; then
    # Each bench against its own baselines, in its own invocation; the
    # summary of both first, then their whole reports.
    out=$(mktemp -d)
    trap 'rm -rf "$out"' EXIT
    status=0
    python3 "$here/pg_bench.py" --gen "$gen" --agent "$agent" --repo "$repo" -n "$lines" >"$out/pg.txt" 2>"$out/pg.err" || status=1
    python3 "$here/tail_bench.py" --gen "$gen" --agent "$agent" --repo "$repo" -n "$lines" --postgres --no-latency \
        >"$out/tail.txt" 2>"$out/tail.err" || status=1
    echo "### Default configuration: ratios against the baselines ($lines lines)"
    echo
    echo "| path | ratio | goal | peak RSS |"
    echo "| --- | --- | --- | --- |"
    grep -h '^RATIO|' "$out/tail.txt" "$out/pg.txt" | while IFS='|' read -r _ what ratio goal rss; do
        met=$(python3 -c "print('met' if $ratio >= $goal else 'NOT met')")
        echo "| $what | ${ratio}× | ≥ ${goal}× ($met) | $rss |"
    done
    echo
    echo "Baselines: \`psql \\copy\` of the same rows into a plain 13-column table (PostgreSQL), \`sqlite3 .import\` into a plain table (SQLite)."
    echo
    cat "$out/pg.txt" "$out/tail.txt"
    [ $status -eq 0 ] || { echo "run.sh: a bench failed; its stderr:" >&2; cat "$out/pg.err" "$out/tail.err" >&2; }
    exit $status
fi

script=bench.py
[ -z "$postgres" ] || script=pg_bench.py
if [ -n "$agents" ]; then
    script=agents_bench.py
elif [ -n "$queries" ]; then
    script=query_bench.py
    pass+=(${tailpass[@]+"${tailpass[@]}"})
elif [ -n "$schema" ]; then
    script=schema_bench.py
elif [ -n "$parsers" ]; then
    script=parsers_bench.py
elif [ -n "$memory" ]; then
    script=memory.py
    pass+=(${tailpass[@]+"${tailpass[@]}"})
elif [ -n "$tail" ]; then
    script=tail_bench.py
    pass+=(${tailpass[@]+"${tailpass[@]}"})
fi
exec python3 "$here/$script" --gen "$gen" --agent "$agent" --repo "$repo" -n "$lines" ${pass[@]+"${pass[@]}"}
