#!/usr/bin/env bash
# Local Kafka (KRaft, broker+controller) and Redis on loopback, no Docker needed.
#   scripts/stack.sh up       fetch/install what is missing, start both, wait until they answer
#   scripts/stack.sh down     stop exactly the processes this script started (by recorded PID)
#   scripts/stack.sh clean    down, then wipe their data (fresh cluster next time)
#   scripts/stack.sh status   show what is running
#   scripts/stack.sh tools    install what the tests need besides the stack (prometheus)
# Addresses follow LIKEFLOW_KAFKA_BOOTSTRAP (default 127.0.0.1:9092) and LIKEFLOW_REDIS_URL
# (default redis://127.0.0.1:6379/0). All commands are idempotent.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STACK="${LIKEFLOW_STACK_DIR:-$ROOT/.stack}"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$ROOT/deploy/kafka/pom.xml")"
LIBS="$ROOT/.cache/kafka-$KAFKA_VERSION/libs"
KAFKA_HEAP="${LIKEFLOW_KAFKA_HEAP:--Xms256m -Xmx768m}"

bootstrap="${LIKEFLOW_KAFKA_BOOTSTRAP:-127.0.0.1:9092}"
KAFKA_HOST="${bootstrap%%,*}"; KAFKA_PORT="${KAFKA_HOST##*:}"; KAFKA_HOST="${KAFKA_HOST%:*}"
CONTROLLER_PORT=$((KAFKA_PORT + 1))
redis_url="${LIKEFLOW_REDIS_URL:-redis://127.0.0.1:6379/0}"
redis_hostport="${redis_url#redis://}"; redis_hostport="${redis_hostport%%/*}"; redis_hostport="${redis_hostport##*@}"
REDIS_HOST="${redis_hostport%:*}"; REDIS_PORT="${redis_hostport##*:}"
# redis-server rewrites its process title to "redis-server HOST:PORT" once started.
REDIS_MARKER="redis-server.*(:$REDIS_PORT|--port $REDIS_PORT)"

say() { printf '[stack] %s\n' "$*"; }
die() { printf '[stack] error: %s\n' "$*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# Services run in their own session (setsid), so a Ctrl-C meant for `make run` does not reach
# them; they stop only through `down`, by PID.
# A recorded PID is ours only if it is alive and its command line still matches our marker
# (PIDs are reused; we never signal a process we did not start).
pid_alive() {
  local pidfile="$1" marker="$2" pid
  [[ -f "$pidfile" ]] || return 1
  pid="$(cat "$pidfile")"
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qE -- "$marker"
}

# Liveness while waiting for a service we just started: the process exists. (Not pid_alive's
# command-line check: redis rewrites its process title at startup, so for an instant its
# /proc/PID/cmdline matches neither form and a healthy redis looked dead.)
pid_running() {
  [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

stop_pid() {
  local name="$1" pidfile="$2" marker="$3" pid
  if ! pid_alive "$pidfile" "$marker"; then
    rm -f "$pidfile"; say "$name is not running"; return 0
  fi
  pid="$(cat "$pidfile")"
  say "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do
    pid_alive "$pidfile" "$marker" || { rm -f "$pidfile"; say "$name stopped"; return 0; }
    sleep 0.5
  done
  say "$name did not stop within 30 s; sending SIGKILL to pid $pid"
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

fetch_kafka() {
  [[ -f "$LIBS/.complete" ]] && return 0
  command -v mvn >/dev/null || die "mvn not found: install Maven (apt-get install -y maven) and retry"
  command -v java >/dev/null || die "java not found: install a JDK 17 (apt-get install -y openjdk-17-jre-headless)"
  say "fetching Apache Kafka $KAFKA_VERSION broker jars from Maven Central into ${LIBS#$ROOT/} (~50 MB, once)"
  rm -rf "$LIBS"; mkdir -p "$LIBS"
  mvn -B -q -f "$ROOT/deploy/kafka/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$LIBS" -DincludeScope=runtime \
    || die "mvn could not fetch the Kafka jars (is Maven Central reachable?)"
  touch "$LIBS/.complete"
  say "fetched $(ls "$LIBS" | wc -l) jars"
}

kafka_up() {
  local dir="$STACK/kafka" props="$STACK/kafka/server.properties"
  if pid_alive "$STACK/kafka.pid" "$props"; then say "kafka already running (pid $(cat "$STACK/kafka.pid")) on $KAFKA_HOST:$KAFKA_PORT"; return 0; fi
  port_open "$KAFKA_HOST" "$KAFKA_PORT" && die "port $KAFKA_PORT is already in use by a process this script did not start; stop it or set LIKEFLOW_KAFKA_BOOTSTRAP to a free port"
  fetch_kafka
  mkdir -p "$dir/data"
  sed -e "s:@PORT@:$KAFKA_PORT:g" -e "s:@CONTROLLER_PORT@:$CONTROLLER_PORT:g" -e "s:@DATA_DIR@:$dir/data:g" \
    "$ROOT/deploy/kafka/server.properties.in" >"$props"
  local cp="$LIBS/*" log4j="-Dlog4j.configuration=file:$ROOT/deploy/kafka/log4j.properties"
  if [[ ! -f "$dir/data/meta.properties" ]]; then
    local cluster_id
    cluster_id="$(java "$log4j" -cp "$cp" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)"
    say "formatting KRaft storage (cluster $cluster_id)"
    java "$log4j" -cp "$cp" kafka.tools.StorageTool format -t "$cluster_id" -c "$props" >"$dir/format.log" 2>&1 \
      || { cat "$dir/format.log" >&2; die "formatting KRaft storage failed"; }
  fi
  say "starting kafka $KAFKA_VERSION on $KAFKA_HOST:$KAFKA_PORT (heap: $KAFKA_HEAP; log: ${STACK#$ROOT/}/kafka.log)"
  # shellcheck disable=SC2086
  setsid nohup java $KAFKA_HEAP -XX:+UseG1GC -Djava.awt.headless=true "$log4j" -cp "$cp" kafka.Kafka "$props" \
    >"$STACK/kafka.log" 2>&1 </dev/null &
  echo $! >"$STACK/kafka.pid"
}

redis_up() {
  if pid_alive "$STACK/redis.pid" "$REDIS_MARKER"; then say "redis already running (pid $(cat "$STACK/redis.pid")) on $REDIS_HOST:$REDIS_PORT"; return 0; fi
  port_open "$REDIS_HOST" "$REDIS_PORT" && die "port $REDIS_PORT is already in use by a process this script did not start; stop it or set LIKEFLOW_REDIS_URL to a free port"
  if ! command -v redis-server >/dev/null; then
    [[ "$(id -u)" == 0 ]] || die "redis-server is missing: run 'sudo apt-get install -y redis-server' and retry"
    say "installing redis-server from Debian packages"
    (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server) >"$STACK/apt.log" 2>&1 \
      || { tail -20 "$STACK/apt.log" >&2; die "apt-get could not install redis-server"; }
  fi
  mkdir -p "$STACK/redis"
  say "starting redis on $REDIS_HOST:$REDIS_PORT (log: ${STACK#$ROOT/}/redis.log)"
  # Serving state is rebuilt from Kafka, so no RDB/AOF persistence is needed here.
  setsid nohup redis-server --bind "$REDIS_HOST" --port "$REDIS_PORT" --dir "$STACK/redis" \
    --save "" --appendonly no --protected-mode yes --daemonize no \
    >"$STACK/redis.log" 2>&1 </dev/null &
  echo $! >"$STACK/redis.pid"
}

# Tools the observability tests use: Debian's prometheus package (prometheus, promtool).
tools() {
  if command -v prometheus >/dev/null && command -v promtool >/dev/null; then return 0; fi
  [[ "$(id -u)" == 0 ]] || die "prometheus is missing: run 'sudo apt-get install -y prometheus' and retry"
  say "installing prometheus from Debian packages (for the observability tests)"
  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus) \
    >"$STACK/apt-prometheus.log" 2>&1 || { tail -20 "$STACK/apt-prometheus.log" >&2; die "apt-get could not install prometheus"; }
}

wait_ready() {
  local deadline=$((SECONDS + ${LIKEFLOW_STACK_WAIT_S:-120}))
  until port_open "$REDIS_HOST" "$REDIS_PORT"; do
    pid_running "$STACK/redis.pid" || { tail -20 "$STACK/redis.log" >&2; die "redis exited; see ${STACK#$ROOT/}/redis.log"; }
    (( SECONDS < deadline )) || die "redis did not answer within the wait"
    sleep 0.2
  done
  say "redis is ready"
  # A broker holding many partition logs (old test topics, or an unclean stop) loads them one by
  # one before it listens; while that count keeps moving we show it and keep waiting.
  local loaded last_loaded="" last_said=0
  until port_open "$KAFKA_HOST" "$KAFKA_PORT" && grep -q "Kafka Server started" "$STACK/kafka.log"; do
    pid_running "$STACK/kafka.pid" || { tail -30 "$STACK/kafka.log" >&2; die "kafka exited; see ${STACK#$ROOT/}/kafka.log"; }
    loaded="$(grep -o '([0-9]*/[0-9]* completed in' "$STACK/kafka.log" | tail -1 | tr -d "(" | cut -d" " -f1 || true)"
    if [[ -n "$loaded" && "$loaded" != "$last_loaded" ]]; then
      last_loaded="$loaded"
      deadline=$((SECONDS + ${LIKEFLOW_STACK_WAIT_S:-120}))
      (( SECONDS - last_said < 5 )) || { say "kafka is loading its partition logs: $loaded"; last_said=$SECONDS; }
    fi
    (( SECONDS < deadline )) || die "kafka did not answer within the wait; see ${STACK#$ROOT/}/kafka.log \
(if it is still loading thousands of old test topics, \`make stack-clean\` wipes the local data)"
    sleep 0.5
  done
  say "kafka is ready"
}

cmd="${1:-}"
mkdir -p "$STACK"
case "$cmd" in
  up) kafka_up; redis_up; wait_ready ;;
  tools) tools ;;
  down)
    stop_pid kafka "$STACK/kafka.pid" "$STACK/kafka/server.properties"
    stop_pid redis "$STACK/redis.pid" "$REDIS_MARKER" ;;
  clean)
    "$0" down
    say "wiping ${STACK#$ROOT/}/kafka and ${STACK#$ROOT/}/redis"
    rm -rf "$STACK/kafka" "$STACK/redis" "$STACK"/*.log ;;
  status)
    pid_alive "$STACK/kafka.pid" "$STACK/kafka/server.properties" && say "kafka: running (pid $(cat "$STACK/kafka.pid")) on $KAFKA_HOST:$KAFKA_PORT" || say "kafka: stopped"
    pid_alive "$STACK/redis.pid" "$REDIS_MARKER" && say "redis: running (pid $(cat "$STACK/redis.pid")) on $REDIS_HOST:$REDIS_PORT" || say "redis: stopped" ;;
  *) echo "usage: $0 up|down|clean|status|tools" >&2; exit 2 ;;
esac
