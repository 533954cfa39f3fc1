//! The examples every command's `--help` ends with: real invocations, two or
//! three each, the first the one most people want.

pub const ROOT: &str = "Examples:
  pmon-agent wrap -- python3 train.py           # run and record a pipeline
  pmon-agent query errors train --traceback     # why did it fail?
  pmon-agent daemon start --name etl --restart on-failure -- python3 etl.py";

pub const WRAP: &str = "Examples:
  pmon-agent wrap -- python3 train.py --epochs 10
  pmon-agent wrap -e nightly --new-run --tag lr=0.1 -- python3 train.py
  pmon-agent wrap --notify https://hooks.slack.com/services/T0/B0/XXX -- ./etl.sh";

pub const TAIL: &str = "Examples:
  pmon-agent tail -e web /var/log/myapp/
  pmon-agent tail --glob '*.log' --from-end /var/log/myapp/
  pmon-agent tail --once -e import old-run.log";

pub const INGEST: &str = "Examples:
  python3 train.py 2>&1 | pmon-agent ingest -e train
  kubectl logs -f pod/trainer | pmon-agent ingest -e trainer";

pub const QUERY: &str = "Examples:
  pmon-agent query list
  pmon-agent query status train
  pmon-agent query errors train --traceback";

pub const QUERY_LIST: &str = "Examples:
  pmon-agent query list
  pmon-agent query list --format json | jq -r 'select(.state == \"failed\") | .experiment_id'";

pub const QUERY_STATUS: &str = "Examples:
  pmon-agent query status train
  pmon-agent query status train --run 3
  pmon-agent query status train --format json | jq .state";

pub const QUERY_LOGS: &str = "Examples:
  pmon-agent query logs train -f
  pmon-agent query logs train --level warning --since 1h --traceback
  pmon-agent query logs train --run all --search 'CUDA out of memory'";

pub const QUERY_ERRORS: &str = "Examples:
  pmon-agent query errors train --traceback --limit 1
  pmon-agent query errors train --group            # each distinct bug once
  pmon-agent query errors --group --new            # what the latest runs brought";

pub const QUERY_METRICS: &str = "Examples:
  pmon-agent query metrics train
  pmon-agent query metrics train --type memory --since 30m
  pmon-agent query metrics train --type cpu --format json";

pub const QUERY_WATCH: &str = "Examples:
  pmon-agent query watch train
  pmon-agent query watch train --panel memory";

pub const DAEMON: &str = "Examples:
  pmon-agent daemon start --name etl --restart on-failure -- python3 etl.py
  pmon-agent daemon status
  pmon-agent daemon logs etl -f";

pub const DAEMON_START: &str = "Examples:
  pmon-agent daemon start --name etl -- python3 etl.py
  pmon-agent daemon start --name web --restart always -e web -- gunicorn app:app
  pmon-agent daemon start --name etl --notify ./page-me.sh --notify-on crashed,oom -- python3 etl.py";

pub const DAEMON_STATUS: &str = "Examples:
  pmon-agent daemon status etl
  pmon-agent daemon status --format json";

pub const DAEMON_LIST: &str = "Examples:
  pmon-agent daemon list
  pmon-agent daemon list --format json | jq -r .name";

pub const DAEMON_LOGS: &str = "Examples:
  pmon-agent daemon logs etl
  pmon-agent daemon logs etl -f --level warning";

pub const DAEMON_PAUSE: &str = "Examples:
  pmon-agent daemon pause etl
  pmon-agent daemon resume etl";

pub const DAEMON_RESUME: &str = "Examples:
  pmon-agent daemon resume etl
  pmon-agent daemon status etl";

pub const DAEMON_STOP: &str = "Examples:
  pmon-agent daemon stop etl
  pmon-agent daemon stop etl --timeout 60s";

pub const DAEMON_RESTART: &str = "Examples:
  pmon-agent daemon restart etl
  pmon-agent daemon restart etl --timeout 30s";

pub const SPOOL: &str = "Examples:
  pmon-agent spool status
  pmon-agent spool replay";

pub const SPOOL_STATUS: &str = "Examples:
  pmon-agent spool status
  pmon-agent spool status --format json | jq .pending";

pub const SPOOL_REPLAY: &str = "Examples:
  pmon-agent spool replay
  PMON_DATABASE_URL=postgres://pmon@db:5432/pmon pmon-agent spool replay";

pub const DB: &str = "Examples:
  pmon-agent db check
  pmon-agent db migrate
  pmon-agent db prune --older-than 30d --dry-run";

pub const DB_MIGRATE: &str = "Examples:
  PMON_DATABASE_URL=postgres://pmon@db:5432/pmon pmon-agent db migrate
  pmon-agent --database-url postgres://pmon@db:5432/pmon db migrate";

pub const DB_PRUNE: &str = "Examples:
  pmon-agent db prune --older-than 30d --dry-run
  pmon-agent db prune --older-than 90d --format json";

pub const DB_CHECK: &str = "Examples:
  pmon-agent db check
  pmon-agent --database-url postgres://pmon@db/pmon db check
  pmon-agent db check --format json | jq .would_land";

pub const DB_DISTRIBUTE: &str = "Examples:
  pmon-agent --database-url postgres://pmon@coordinator/pmon db distribute
  pmon-agent db distribute --format json";

pub const PARSERS: &str = "Examples:
  pmon-agent parsers list
  pmon-agent parsers test train.log --summary
  pmon-agent parsers check parsers/";

pub const PARSERS_LIST: &str = "Examples:
  pmon-agent parsers list
  pmon-agent parsers list --format json";

pub const PARSERS_TEST: &str = "Examples:
  pmon-agent parsers test train.log
  pmon-agent parsers test train.log --parser python-logging --summary";

pub const PARSERS_CHECK: &str = "Examples:
  pmon-agent parsers check
  pmon-agent parsers check my-parsers/";

pub const CONFIG: &str = "Examples:
  pmon-agent config default > config.yml
  pmon-agent config show
  pmon-agent config get logging.database.url";

pub const CONFIG_DEFAULT: &str = "Examples:
  pmon-agent config default > config.yml
  pmon-agent config default | grep -A3 '^notify:'";

pub const CONFIG_SHOW: &str = "Examples:
  pmon-agent config show
  pmon-agent --config /etc/pmon/config.yml config show";

pub const CONFIG_GET: &str = "Examples:
  pmon-agent config get pipeline.command
  pmon-agent config get notify.webhook";

pub const COMPLETIONS: &str = "Examples:
  pmon-agent completions bash > ~/.local/share/bash-completion/completions/pmon-agent
  pmon-agent completions zsh > ~/.zfunc/_pmon-agent
  pmon-agent completions fish > ~/.config/fish/completions/pmon-agent.fish";

pub const MAN: &str = "Examples:
  pmon-agent man ~/.local/share/man/man1 && man pmon-agent-query-errors
  pmon-agent man /tmp/man && man -l /tmp/man/pmon-agent-wrap.1";

pub const STACK: &str = "Examples:
  pmon-agent stack train
  pmon-agent stack --daemon etl
  pmon-agent stack train --format json | jq -r '.frames[0].function'";
