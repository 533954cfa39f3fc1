#!/usr/bin/env bash
# run_monitored.sh: run a pipeline under pmon-agent inside a tmux session laid
# out for watching it: 0 pipeline, 1 monitoring (progress, memory, errors),
# 2 logs (all logs, errors with tracebacks), 3 system (processes, disk),
# 4 control (the commands to pause, resume, stop and query this run).
#
# Usage: run_monitored.sh [--experiment-name X] [--daemon] [--resume]
#                         [--analysis-method M] [--session NAME] [--no-attach]
#                         [-- CMD...]
set -euo pipefail

prog=$(basename "$0")
here=$(cd "$(dirname "$0")" && pwd)

usage() {
  cat <<EOF
Usage: $prog [options] [-- CMD...]

Runs CMD (a pipeline, e.g. python3 train.py) under pmon-agent in a tmux session
with five windows: pipeline, monitoring, logs, system, control.

Options:
  --experiment-name X   the experiment's name [default: the pipeline script's stem]
  --daemon              run the pipeline as a pmon-agent daemon: it survives the
                        tmux session being killed
  --resume              continue the experiment's last run; also passed to CMD
  --analysis-method M   passed to CMD as --analysis-method M
  --session NAME        the tmux session's name [default: the experiment's name]
  --no-attach           create the session and leave it detached (scripts, CI)
  -h, --help            this help

Without CMD after --, runs pipeline.command from config.yml (pmon-agent config
get pipeline.command). The project's Python environment is used when one is
active or found: \$VIRTUAL_ENV, \$CONDA_PREFIX, ./.venv, ./venv.

Example:
  $prog --experiment-name my_experiment -- python3 train.py --epochs 10
EOF
}

fail() {
  printf '%s: %s\n' "$prog" "$*" >&2
  exit 1
}

experiment=
daemon=
resume=
analysis_method=
session=
attach=1
command=()
while [ $# -gt 0 ]; do
  case "$1" in
    --experiment-name) [ $# -ge 2 ] || fail "--experiment-name needs a name"; experiment=$2; shift 2 ;;
    --experiment-name=*) experiment=${1#*=}; shift ;;
    --daemon) daemon=1; shift ;;
    --resume) resume=1; shift ;;
    --analysis-method) [ $# -ge 2 ] || fail "--analysis-method needs a method"; analysis_method=$2; shift 2 ;;
    --analysis-method=*) analysis_method=${1#*=}; shift ;;
    --session) [ $# -ge 2 ] || fail "--session needs a name"; session=$2; shift 2 ;;
    --session=*) session=${1#*=}; shift ;;
    --no-attach) attach=; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; command=("$@"); break ;;
    *) fail "unknown option '$1' (see $prog --help); the pipeline command goes after --" ;;
  esac
done

# --- what is needed ----------------------------------------------------------
command -v tmux >/dev/null 2>&1 \
  || fail "tmux is not installed; install it (apt-get install tmux, brew install tmux) and run again"

agent=$(command -v pmon-agent 2>/dev/null || true)
if [ -z "$agent" ]; then
  for candidate in "./target/release/pmon-agent" "$here/target/release/pmon-agent"; do
    if [ -x "$candidate" ]; then
      agent=$(cd "$(dirname "$candidate")" && pwd)/pmon-agent
      break
    fi
  done
fi
[ -n "$agent" ] \
  || fail "pmon-agent is not on PATH nor in ./target/release; build it with cargo build --release, or put it on PATH"

if [ ${#command[@]} -eq 0 ]; then
  mapfile -t command < <("$agent" config get pipeline.command) \
    || fail "could not read pipeline.command from the configuration (pmon-agent config get pipeline.command)"
fi
[ ${#command[@]} -gt 0 ] \
  || fail "no pipeline command: put it after -- ($prog --experiment-name x -- python3 train.py) or set pipeline.command in config.yml"
[ -z "$analysis_method" ] || command+=(--analysis-method "$analysis_method")
[ -z "$resume" ] || command+=(--resume)

# The experiment: the pipeline script's stem (python3 train.py -> train).
stem_of() {
  local word base
  for word in "$@"; do
    case "$word" in
      *.py|*.sh|*.R|*.jl) base=$(basename "$word"); printf '%s' "${base%.*}"; return ;;
    esac
  done
  base=$(basename "$1")
  printf '%s' "${base%.*}"
}
[ -n "$experiment" ] || experiment=$(stem_of "${command[@]}")
[ -n "$session" ] || session=$experiment
# tmux reads '.' and ':' in a target as window and pane separators.
session=${session//[.:]/_}

if tmux has-session -t "=$session" 2>/dev/null; then
  fail "a tmux session named '$session' already exists; attach to it with tmux attach -t '$session', end it with tmux kill-session -t '$session', or pass --session NAME"
fi

# --- the environment every pane gets -----------------------------------------
venv=
if [ -n "${VIRTUAL_ENV:-}" ]; then venv=$VIRTUAL_ENV
elif [ -n "${CONDA_PREFIX:-}" ]; then venv=$CONDA_PREFIX
elif [ -x ./.venv/bin/python ]; then venv=$(pwd)/.venv
elif [ -x ./venv/bin/python ]; then venv=$(pwd)/venv
fi
path=$PATH
if [ -n "$venv" ]; then
  path="$venv/bin:$PATH"
  echo "$prog: using the Python environment at $venv"
else
  echo "$prog: no Python environment found (\$VIRTUAL_ENV, \$CONDA_PREFIX, ./.venv, ./venv); using $(command -v python3 || echo 'python3 from PATH')"
fi
data_dir=${PMON_DATA_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/pmon}

# Each pane runs a small bash script of its own (in the data dir), so no
# command line has to survive tmux's default shell and a second round of
# quoting. A pane whose command ends shows how it ended and keeps a shell.
panes_dir="$data_dir/run_monitored/$session"
mkdir -p "$panes_dir"
pane_env=("PATH=$path")
for var in PMON_DATA_DIR PMON_CONFIG PMON_DATABASE_URL PMON_LOG_LEVEL VIRTUAL_ENV CONDA_PREFIX NO_COLOR; do
  if [ -n "${!var:-}" ]; then pane_env+=("$var=${!var}"); fi
done
# pane_script NAME [--when-started] CMD...: writes the script, prints how to run it.
pane_script() {
  local name=$1 file wait=
  shift
  if [ "$1" = --when-started ]; then
    # query logs -f needs the experiment to exist; the dashboard panels wait by themselves.
    printf -v wait 'until %q query status %q >/dev/null 2>&1; do sleep 1; done\n' "$agent" "$experiment"
    shift
  fi
  file="$panes_dir/$name.sh"
  {
    echo '#!/usr/bin/env bash'
    printf 'export'; printf ' %q' "${pane_env[@]}"; echo
    printf 'cd %q\n' "$workdir"
    printf '%s' "$wait"
    printf '%q ' "$@"; echo
    cat <<'TAIL'
code=$?
printf '\n[%s ended with exit code %s]\n' "$(basename "$0" .sh)" "$code"
exec "${SHELL:-bash}"
TAIL
  } >"$file"
  printf 'bash %q' "$file"
}

workdir=$(pwd)
shown=pmon-agent
command -v pmon-agent >/dev/null 2>&1 || shown=$agent
if [ -n "$daemon" ]; then
  env "${pane_env[@]}" "$agent" daemon start --name "$session" -e "$experiment" -- "${command[@]}" \
    || fail "pmon-agent daemon start failed (see above)"
  pipeline=$(pane_script pipeline --when-started "$agent" daemon logs "$session" -f)
  control=(
    "daemon status:  $shown daemon status $session"
    "pause:          $shown daemon pause $session"
    "resume:         $shown daemon resume $session"
    "stop:           $shown daemon stop $session"
  )
else
  wrap=("$agent" wrap -e "$experiment")
  [ -z "$resume" ] || wrap+=(--resume)
  pipeline=$(pane_script pipeline "${wrap[@]}" -- "${command[@]}")
  pid="\$($shown query status $experiment --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"pid\"])')"
  control=(
    "pause:          kill -STOP -- -$pid"
    "resume:         kill -CONT -- -$pid"
    "stop:           tmux send-keys -t '$session:pipeline' C-c   (SIGINT, forwarded to the program)"
  )
fi
control=(
  "experiment $experiment, tmux session $session"
  ""
  "status:         $shown query status $experiment"
  "errors:         $shown query errors $experiment --traceback"
  "logs:           $shown query logs $experiment --level WARNING"
  "metrics:        $shown query metrics $experiment --type memory"
  "dashboard:      $shown query watch $experiment"
  "${control[@]}"
)
if command -v htop >/dev/null 2>&1; then processes=htop; else processes=top; fi
disk=$(printf 'while true; do clear; date; echo; df -h %q %q; echo; du -sh %q 2>/dev/null; sleep 10; done' "$data_dir" "$workdir" "$data_dir")

# --- the session ---------------------------------------------------------------
tmux new-session -d -s "$session" -n pipeline -c "$workdir" -x 200 -y 50 "$pipeline"
tmux set-option -t "$session" pane-border-status top >/dev/null

tmux new-window -d -t "$session:1" -n monitoring -c "$workdir" "$(pane_script progress "$agent" query watch "$experiment" --panel progress)"
tmux split-window -d -t "$session:monitoring.0" -h -c "$workdir" "$(pane_script memory "$agent" query watch "$experiment" --panel memory)"
tmux split-window -d -t "$session:monitoring.1" -v -c "$workdir" "$(pane_script errors "$agent" query watch "$experiment" --panel errors)"
tmux select-pane -t "$session:monitoring.0" -T progress
tmux select-pane -t "$session:monitoring.1" -T memory
tmux select-pane -t "$session:monitoring.2" -T errors

tmux new-window -d -t "$session:2" -n logs -c "$workdir" "$(pane_script all-logs --when-started "$agent" query logs "$experiment" -f)"
tmux split-window -d -t "$session:logs.0" -v -c "$workdir" "$(pane_script errors-with-tracebacks --when-started "$agent" query logs "$experiment" -f --level ERROR --traceback)"
tmux select-pane -t "$session:logs.0" -T "all logs"
tmux select-pane -t "$session:logs.1" -T "errors with tracebacks"

tmux new-window -d -t "$session:3" -n system -c "$workdir" "$(pane_script processes "$processes")"
tmux split-window -d -t "$session:system.0" -v -c "$workdir" "$(pane_script disk bash -c "$disk")"
tmux select-pane -t "$session:system.0" -T processes
tmux select-pane -t "$session:system.1" -T disk

tmux new-window -d -t "$session:4" -n control -c "$workdir" "$(pane_script control printf '%s\n' "${control[@]}")"

echo "$prog: tmux session '$session' is ready: windows pipeline, monitoring, logs, system, control"
if [ -n "$attach" ]; then
  if [ -n "${TMUX:-}" ]; then
    exec tmux switch-client -t "$session"
  fi
  exec tmux attach -t "$session"
fi
echo "$prog: attach with tmux attach -t '$session'"
