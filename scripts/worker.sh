#!/usr/bin/env bash
# Starts/stops one background `likeflow worker` for `make run`, by recorded PID.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN="$ROOT/.run"; PIDFILE="$RUN/worker.pid"; LOG="$RUN/worker.log"
PORT="${LIKEFLOW_WEB_PORT:-6066}"; HOST="${LIKEFLOW_WEB_HOST:-127.0.0.1}"
mkdir -p "$RUN"

alive() {
  [[ -f "$PIDFILE" ]] && [[ -r "/proc/$(cat "$PIDFILE")/cmdline" ]] \
    && tr '\0' ' ' <"/proc/$(cat "$PIDFILE")/cmdline" | grep -q "likeflow worker"
}

case "${1:-}" in
  start)
    if alive; then echo "[worker] already running (pid $(cat "$PIDFILE"))"; exit 0; fi
    echo "[worker] starting (log: ${LOG#$ROOT/})"
    cd "$ROOT"
    # Static group membership: restarted on this machine, the worker gets its partitions back
    # at once instead of after LIKEFLOW_SESSION_TIMEOUT_S.
    LIKEFLOW_INSTANCE_ID="${LIKEFLOW_INSTANCE_ID:-@hostname}" \
      setsid nohup "$ROOT/.venv/bin/likeflow" worker --quiet >"$LOG" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
    for _ in $(seq 1 120); do
      if curl -fsS "http://$HOST:$PORT/health" >/dev/null 2>&1 && grep -q "Worker ready" "$LOG"; then
        echo "[worker] ready (pid $(cat "$PIDFILE"))"; exit 0
      fi
      alive || { tail -30 "$LOG" >&2; echo "[worker] exited during start-up; see ${LOG#$ROOT/}" >&2; exit 1; }
      sleep 0.5
    done
    echo "[worker] not ready after 60 s; see ${LOG#$ROOT/}" >&2; exit 1 ;;
  stop)
    if ! alive; then rm -f "$PIDFILE"; echo "[worker] not running"; exit 0; fi
    pid="$(cat "$PIDFILE")"; echo "[worker] stopping (pid $pid)"
    kill -TERM "$pid"
    for _ in $(seq 1 60); do alive || { rm -f "$PIDFILE"; echo "[worker] stopped"; exit 0; }; sleep 0.5; done
    echo "[worker] still running after 30 s; sending SIGKILL"; kill -KILL "$pid"; rm -f "$PIDFILE" ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
