#!/usr/bin/env bash
# The fault suite. Each case takes something away in the middle of a run
# on a private broker and database of its own (ports moved by 100, so the
# shared services keep running), then checks the same accounting: every
# published conversation is stored once or in the dead-letter queue, none
# is missing, and rows delivered more than once are reported.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
SVC=$(mktemp -d /tmp/mr-faults-svc-XXXXXX)
chmod 755 "$SVC"   # postgres must reach its data folder inside
export MOONRABBIT_VAR=$SVC MOONRABBIT_PORT_OFFSET=100
svc() { env -u AMQP_URL -u DATABASE_URL "$REPO/tools/services.sh" "$@"; }
stop_svc() { svc stop >/dev/null 2>&1 || true; rm -rf "$SVC"; }
trap stop_svc EXIT
svc start >/dev/null
eval "$(svc env | grep '^export')"
. "$HERE/lib.sh"
trap 'cleanup; stop_svc' EXIT

export WORKER_CONCURRENCY_PER_WORKER=2 AMQP_PREFETCH=16
export STATE_DIR=$WORK/state
grep -o '"conversation_id": "[^"]*"' "$CORPUS" | cut -d'"' -f4 | sort \
  >"$WORK/expected"
total=$(wc -l <"$WORK/expected")

stored_some() { [ "$(sql "SELECT count(*) FROM conversation_stats" 2>/dev/null || echo 0)" -gt "$1" ]; }

fresh() {
  "$MRCTL" purge "$AMQP_QUEUE" "$AMQP_QUEUE.dlq" >/dev/null 2>&1 || true
  sql "DROP TABLE IF EXISTS conversation_stats" >/dev/null
  "$MRCTL" publish-jsonl "$CORPUS" >/dev/null
}

# account NAME: the accounting every case ends with.
account() {
  sql "SELECT conversation_id FROM conversation_stats" | sort >"$WORK/stored"
  dlq_ids >"$WORK/dead"
  sort -u "$WORK/stored" "$WORK/dead" >"$WORK/seen"
  check "$1: nothing is missing" 0 \
    "$(comm -23 "$WORK/expected" "$WORK/seen" | wc -l)"
  check "$1: nothing is both stored and dead-lettered" 0 \
    "$(comm -12 "$WORK/stored" "$WORK/dead" | wc -l)"
  # The worker's lines about such a message say why it was dead-lettered.
  comm -12 "$WORK/stored" "$WORK/dead" | head -n 3 | while read -r id; do
    grep -h "\"$id\"" "$WORK"/*.log | cut -c1-600 || true
  done
  check "$1: stored plus dead-lettered is every message" "$total" \
    $(($(wc -l <"$WORK/stored") + $(wc -l <"$WORK/dead")))
  echo "$1: $(wc -l <"$WORK/dead") dead-lettered," \
    "$(sql "SELECT count(*) FROM conversation_stats WHERE deliveries > 1")" \
    "rows delivered more than once (redeliveries after the fault)"
}

start_worker() {  # start_worker LOG [ARGS]
  local log=$1
  shift
  "$MOONRABBIT" "$@" >"$log" 2>&1 &
  worker=$!
}

# RabbitMQ goes away and comes back while the worker drains.
fresh
start_worker "$WORK/rmq.log" --drain
wait_for 60 stored_some 500
svc stop rabbitmq >/dev/null
sleep 2
svc start rabbitmq >/dev/null
wait "$worker" && rc=0 || rc=$?
check "broker restart: the worker exits 0" 0 "$rc"
check_true "broker restart: the loss is logged" \
  grep -q '"event":"broker_connection_lost"' "$WORK/rmq.log"
check "broker restart: one reconnect" 1 "$(summary "$WORK/rmq.log" reconnects)"
account "broker restart"

# PostgreSQL stops for a few seconds: jobs fail, are retried, and land.
fresh
start_worker "$WORK/pg.log" --drain
wait_for 60 stored_some 500
svc stop postgresql >/dev/null
sleep 3
svc start postgresql >/dev/null
wait "$worker" && rc=0 || rc=$?
check "database stop: the worker exits 0" 0 "$rc"
check_true "database stop: failed jobs were retried" \
  grep -q '"event":"delivery_retry_scheduled"' "$WORK/pg.log"
account "database stop"

# SIGTERM in the middle of a run, then a new worker drains the rest.
fresh
start_worker "$WORK/term.log"
wait_for 60 stored_some 500
kill -TERM "$worker"
wait "$worker" && rc=0 || rc=$?
check "SIGTERM: the worker exits 0" 0 "$rc"
rc=$(run_worker "$WORK/term2.log")
check "SIGTERM: the next worker drains and exits 0" 0 "$rc"
account "SIGTERM"

# SIGKILL in the middle of a run, then a new worker drains the rest.
fresh
start_worker "$WORK/kill.log"
wait_for 60 stored_some 500
kill -KILL "$worker"
wait "$worker" || true
rc=$(run_worker "$WORK/kill2.log")
check "SIGKILL: the next worker drains and exits 0" 0 "$rc"
account "SIGKILL"

# Case 004: the path to the broker dies without closing the socket. A
# loopback relay is frozen with SIGSTOP: the connection stays open and
# silent. Heartbeats (5 s) must notice within 2 x 5 s + 5 s.
fresh
relay_port=$((21720 + 100 + 50))
socat "TCP-LISTEN:$relay_port,bind=127.0.0.1,reuseaddr,fork" \
  "TCP:127.0.0.1:$((21720 + 100))" &
relay=$!
sleep 0.5
AMQP_URL="amqp://guest:guest@127.0.0.1:$relay_port/%2f" \
  AMQP_HEARTBEAT_SECONDS=5 start_worker "$WORK/half.log" --drain
wait_for 60 stored_some 500
child=$(pgrep -P "$relay" | head -n 1)
frozen_at=$SECONDS
kill -STOP "$child"
check_true "half-open: the dead connection is noticed" \
  wait_for 30 grep -q '"event":"broker_connection_lost"' "$WORK/half.log"
noticed=$((SECONDS - frozen_at))
echo "half-open: noticed after ${noticed} s"
check_true "half-open: within 2 x heartbeat + 5 s" [ "$noticed" -le 15 ]
wait "$worker" && rc=0 || rc=$?
kill -KILL "$child" 2>/dev/null || true
kill "$relay" 2>/dev/null || true
check "half-open: the worker reconnects and drains, exit 0" 0 "$rc"
# The broker hands back what the frozen connection held only when its own
# heartbeat check closes that connection; a second drain takes them.
sleep 12
rc=$(run_worker "$WORK/half2.log")
check "half-open: the deliveries the dead connection held come back" 0 "$rc"
grep -o '"event":"broker_connection_lost","reason":"[^"]*"' "$WORK/half.log" |
  head -n 1
account "half-open"

finish
