#!/usr/bin/env bash
# Metrics and health on the real binary, run as in production (no --drain,
# stopped with SIGTERM): while it consumes a queue, /metrics passes
# promtool and its outcome counters match what was processed, /healthz
# and /readyz answer 200, other paths 404; a taken port and a bad
# METRICS_ADDR stop start-up; after the stop the port is closed.
. "$(dirname "$0")/lib.sh"

N=1000
CONCURRENCY=4
export WORKER_CONCURRENCY_PER_WORKER=$CONCURRENCY


# status PATH: the HTTP status of GET PATH (000 when nothing answers); the
# body lands in $WORK/body.
status() {
  curl -s -o "$WORK/body" -w '%{http_code}' --max-time 5 "$BASE$1" || true
}

scrape() {  # scrape FILE
  curl -sf --max-time 5 "$BASE/metrics" >"$1"
}

# metric FILE NAME: the value of the sample named exactly NAME.
metric() {
  awk -v m="$2" '$1 == m { print $2 }' "$1"
}

outcome() {  # outcome FILE OUTCOME
  metric "$1" "moonrabbit_messages_total{outcome=\"$2\"}"
}

stored() {
  sql "SELECT count(*) FROM conversation_stats" 2>/dev/null || echo 0
}

# Conditions for wait_for, which re-evaluates them on every try.
answers() { [ "$(status /healthz)" != 000 ]; }
draining() { [ "$(stored)" -gt 0 ]; }
all_stored() { [ "$(stored)" = "$N" ]; }
dead_lettered() { [ "$(depth "$AMQP_QUEUE.dlq")" = 2 ]; }
settled() {
  scrape "$WORK/after" && [ "$(outcome "$WORK/after" ok)" = "$N" ] &&
    [ "$(outcome "$WORK/after" invalid_json)" = 2 ]
}

head -n "$N" "$CORPUS" >"$WORK/msgs.jsonl"
"$MRCTL" publish-jsonl "$WORK/msgs.jsonl" >/dev/null
echo 'not json' >"$WORK/bad"
"$MRCTL" publish "$WORK/bad" --message-id bad-1 >/dev/null
"$MRCTL" publish "$WORK/bad" --message-id bad-2 >/dev/null

port=$(free_port)
export METRICS_ADDR=127.0.0.1:$port
BASE=http://127.0.0.1:$port

"$MOONRABBIT" >"$WORK/run.log" 2>&1 &
worker=$!
HELPER_PIDS+=("$worker") # ended by cleanup if a check aborts the test
trap 'kill "$worker" 2>/dev/null || true; cleanup' EXIT

check_true "the endpoint answers" wait_for 30 answers
check_true "the drain begins" wait_for 60 draining

# While the worker runs.
scrape "$WORK/during"
check_true "promtool accepts the scrape" promtool check metrics \
  <"$WORK/during"
check "pool threads" "$CONCURRENCY" \
  "$(metric "$WORK/during" moonrabbit_pool_threads)"
check_true "the memory limit is known" \
  test "$(metric "$WORK/during" moonrabbit_memory_limit_bytes)" != 0
check "healthz while consuming" 200 "$(status /healthz)"
check "healthz body" "ok" "$(cat "$WORK/body")"
check "readyz while consuming" 200 "$(status /readyz)"
check "readyz body" "ready" "$(cat "$WORK/body")"
check "other paths" 404 "$(status /nope)"

# A second worker cannot take the port, and says so.
rc=0
timeout 60 "$MOONRABBIT" >"$WORK/second.log" 2>&1 || rc=$?
check "a taken port stops start-up" 1 "$rc"
check_true "the reason names METRICS_ADDR" grep -qF \
  "METRICS_ADDR=\"$METRICS_ADDR\": failed to listen: Address already in use" \
  "$WORK/second.log"
rc=0
METRICS_ADDR=nowhere timeout 60 "$MOONRABBIT" >"$WORK/bad.log" 2>&1 || rc=$?
check "a bad METRICS_ADDR is a configuration error" 2 "$rc"
check_true "the message names METRICS_ADDR" \
  grep -q 'METRICS_ADDR="nowhere" is not usable' "$WORK/bad.log"

# Once everything is settled, the counters match what was processed.
check_true "every message is stored" wait_for 120 all_stored
check_true "both bad bodies are dead-lettered" wait_for 30 dead_lettered
wait_for 10 settled || true
check_true "promtool accepts the final scrape" promtool check metrics \
  <"$WORK/after"
check "ok counter" "$N" "$(outcome "$WORK/after" ok)"
check "invalid_json counter" 2 "$(outcome "$WORK/after" invalid_json)"
for o in size_limit field_size_limit invalid_message job_error shutdown; do
  check "$o counter" 0 "$(outcome "$WORK/after" "$o")"
done

kill -TERM "$worker"
rc=0
wait "$worker" || rc=$?
check "SIGTERM stops the worker cleanly" 0 "$rc"
check "the summary agrees on ok" "$N" "$(summary "$WORK/run.log" ok)"
check "the summary agrees on bytes in" \
  "$(summary "$WORK/run.log" bytes_in)" \
  "$(metric "$WORK/after" moonrabbit_received_bytes_total)"
check "the port is closed after the stop" 000 "$(status /healthz)"

finish
