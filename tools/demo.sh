#!/usr/bin/env bash
# The main job, end to end, from a fresh Debian 12 machine on: installs
# what is missing, builds, starts a private RabbitMQ and PostgreSQL on
# loopback (unless AMQP_URL / DATABASE_URL point at existing servers),
# publishes the corpus, lets moonrabbit drain the queue, and prints what
# was stored, what was dead-lettered and why, and how long it took.
#
# CORPUS=path overrides the input (one JSON message per line).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
CORPUS=${CORPUS:-$REPO/../shared/corpus/conversations.jsonl}
export AMQP_QUEUE=${AMQP_QUEUE:-conversations}
mrctl=build/tools/mrctl

[ -r "$CORPUS" ] || { echo "demo: cannot read $CORPUS (set CORPUS=)" >&2; exit 1; }

tools/install-deps.sh all
cmake -S . -B build >/dev/null
cmake --build build -j "$(nproc 2>/dev/null || echo 2)" >/dev/null
tools/services.sh start
eval "$(tools/services.sh env)"
export AMQP_URL DATABASE_URL

# A rerun starts from an empty dead-letter queue, so the counts below are
# this run's; the table keeps its rows (a rerun updates them).
"$mrctl" purge "$AMQP_QUEUE.dlq" >/dev/null 2>&1 || true
echo "publishing $(grep -c . "$CORPUS") messages from $CORPUS to $AMQP_QUEUE"
"$mrctl" publish-jsonl "$CORPUS"

var=${MOONRABBIT_VAR:-$REPO/var}
log=$var/demo.log
# The demo's ledger stays with its services, and it needs no metrics
# port (a worker already running here may hold 9464).
export STATE_DIR=${STATE_DIR:-$var/state} METRICS_ADDR=${METRICS_ADDR:-off}
echo "running moonrabbit --drain (log: $log)"
rc=0
build/moonrabbit --drain >"$log" || rc=$?
summary=$(grep '"event":"summary"' "$log" | tail -n 1)
field() { grep -o "\"$1\":[0-9.]*" <<<"$summary" | cut -d: -f2; }

echo
echo "moonrabbit exited with $rc"
printf 'delivered:      %s messages in %s s (%s msg/s), peak RSS %s KiB\n' \
  "$(field messages)" "$(field seconds)" "$(field msgs_per_s)" \
  "$(field peak_rss_kb)"
printf 'stored (ok):    %s; rows in conversation_stats (all runs): %s\n' \
  "$(field ok)" \
  "$(psql "$DATABASE_URL" -qAtc 'SELECT count(*) FROM conversation_stats')"
printf 'dead-lettered:  %s in %s\n' \
  "$("$mrctl" depth "$AMQP_QUEUE.dlq" | awk '{print $2}')" "$AMQP_QUEUE.dlq"
for reason in size_limit invalid_json field_size_limit invalid_message \
  job_error; do
  printf '  %-18s %s\n' "$reason" "$(field "$reason")"
done
echo
stop="tools/services.sh stop"
[ -z "${MOONRABBIT_PORT_OFFSET:-}" ] ||
  stop="MOONRABBIT_PORT_OFFSET=$MOONRABBIT_PORT_OFFSET $stop"
[ -z "${MOONRABBIT_VAR:-}" ] || stop="MOONRABBIT_VAR=$MOONRABBIT_VAR $stop"
echo "Services keep running: psql \"$DATABASE_URL\"; $stop"
exit "$rc"
