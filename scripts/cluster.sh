#!/usr/bin/env bash
# Cluster mode on one machine: PostgreSQL and Redis (Debian's packages) on 127.0.0.1, N model workers and
# M frontends, all sharing one config whose path is the last line `up` prints.
#
#   scripts/cluster.sh up [--workers N] [--frontends M] [--model ID_OR_DIR] [--with ADAPTERS.toml]
#   scripts/cluster.sh status
#   scripts/cluster.sh down
#
# Frontends are `shira run`; they need a chat platform, so --frontends needs --with, a TOML file of [discord]
# and/or [telegram] tables appended to the shared config. Everything lives in $SHIRA_CLUSTER_DIR (default
# .cluster in the repository): logs, pids, the config and the shared data directory of originals.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE=${SHIRA_CLUSTER_DIR:-$ROOT/.cluster}
SHIRA=${SHIRA:-$ROOT/.venv/bin/shira}
PG_BIN=${SHIRA_POSTGRES_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)}

die() { echo "cluster.sh: $*" >&2; exit 1; }

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

as_postgres() {  # initdb and postgres refuse to run as root
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local seconds=$1 what=$2
  shift 2
  for _ in $(seq $((seconds * 10))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  die "$what did not come up in ${seconds} s (logs in $STATE)"
}

start_redis() {
  command -v redis-server >/dev/null || die "redis-server is missing: apt-get install redis-server"
  local port
  port=$(free_port)
  redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no --daemonize yes \
    --dir "$STATE" --pidfile "$STATE/redis.pid" --logfile "$STATE/redis.log"
  wait_for 10 "Redis" redis-cli -p "$port" ping
  echo "redis://127.0.0.1:$port/0"
}

start_postgres() {
  [ -x "$PG_BIN/initdb" ] || die "PostgreSQL is missing: apt-get install postgresql"
  local port dir
  port=$(free_port)
  dir=$(mktemp -d /tmp/shira-cluster-pg.XXXXXX)  # outside the repository, so the postgres user can reach it
  echo "$dir" >"$STATE/pgdir"
  [ "$(id -u)" = 0 ] && chown postgres "$dir"
  as_postgres "$PG_BIN/initdb" -D "$dir/data" -U shira --auth=trust -E UTF8 >"$STATE/initdb.log" 2>&1 \
    || die "initdb failed: see $STATE/initdb.log"
  as_postgres "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
    -o "-h 127.0.0.1 -p $port -k $dir -c max_connections=200" start >/dev/null \
    || die "PostgreSQL would not start: see $dir/server.log"
  as_postgres "$PG_BIN/createdb" -h 127.0.0.1 -p "$port" -U shira shira
  echo "postgresql://shira@127.0.0.1:$port/shira"
}

spawn() {  # spawn NAME COMMAND...: run in the background, output to NAME.log, pid to NAME.pid
  local name=$1
  shift
  nohup "$@" >"$STATE/$name.log" 2>&1 </dev/null &
  echo $! >"$STATE/$name.pid"
}

up() {
  local workers=2 frontends=0 model="" with=""
  while [ $# -gt 0 ]; do
    case $1 in
      --workers) workers=$2; shift 2 ;;
      --frontends) frontends=$2; shift 2 ;;
      --model) model=$2; shift 2 ;;
      --with) with=$2; shift 2 ;;
      *) die "unknown option $1 (see the comment at the top of $0)" ;;
    esac
  done
  [ -x "$SHIRA" ] || die "$SHIRA is missing: run make install first"
  [ "$frontends" = 0 ] || [ -n "$with" ] || die "--frontends needs --with ADAPTERS.toml ([discord] or [telegram])"
  [ -z "$with" ] || [ -f "$with" ] || die "$with: no such file"
  [ ! -e "$STATE/config.toml" ] || die "a cluster is already up in $STATE: scripts/cluster.sh down first"
  mkdir -p "$STATE/data"
  local redis_url postgres_dsn config=$STATE/config.toml
  redis_url=$(start_redis)
  postgres_dsn=$(start_postgres)
  {
    echo "# Written by scripts/cluster.sh up: every shira command given --config $config uses this cluster."
    echo "data_dir = \"$STATE/data\""
    echo
    echo "[cluster]"
    echo "redis_url = \"$redis_url\""
    echo "postgres_dsn = \"$postgres_dsn\""
    if [ -n "$model" ]; then
      echo
      echo "[model]"
      echo "id = \"$model\""
    fi
    if [ -n "$with" ]; then
      echo
      cat "$with"
    fi
  } >"$config"
  "$SHIRA" --config "$config" stats >/dev/null  # creates the schema once, before the processes race to
  for i in $(seq "$workers"); do
    spawn "worker-$i" "$SHIRA" --config "$config" worker
  done
  for i in $(seq "$frontends"); do
    spawn "frontend-$i" "$SHIRA" --config "$config" run
  done
  echo "redis      $redis_url" >&2
  echo "postgres   $postgres_dsn" >&2
  echo "workers    $workers (logs: $STATE/worker-*.log)" >&2
  echo "frontends  $frontends" >&2
  echo "$config"
}

stop_pidfile() {  # SIGTERM, then SIGKILL after 30 s
  local file=$1 pid
  [ -f "$file" ] || return 0
  pid=$(cat "$file")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

down() {
  [ -d "$STATE" ] || { echo "no cluster in $STATE" >&2; return 0; }
  for file in "$STATE"/frontend-*.pid "$STATE"/worker-*.pid; do
    [ -e "$file" ] && stop_pidfile "$file"
  done
  stop_pidfile "$STATE/redis.pid"
  if [ -f "$STATE/pgdir" ]; then
    local dir
    dir=$(cat "$STATE/pgdir")
    [ -d "$dir/data" ] && as_postgres "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$dir" "$STATE/pgdir"
  fi
  rm -rf "$STATE"
  echo "cluster stopped; $STATE removed" >&2
}

status() {
  [ -f "$STATE/config.toml" ] || { echo "no cluster is up in $STATE" >&2; return 1; }
  for file in "$STATE"/*.pid; do
    [ -e "$file" ] || continue
    local name pid
    name=$(basename "$file" .pid)
    pid=$(cat "$file")
    if kill -0 "$pid" 2>/dev/null; then echo "$name running (pid $pid)"; else echo "$name NOT running"; fi
  done
  echo "$STATE/config.toml"
}

case ${1:-} in
  up) shift; up "$@" ;;
  down) down ;;
  status) status ;;
  *) die "usage: $0 up [--workers N] [--frontends M] [--model ID_OR_DIR] [--with ADAPTERS.toml] | status | down" ;;
esac
