#!/usr/bin/env bash
# Body buffers kept for a stream of large messages are given back once
# the worker is idle: after 30 x 1 MiB bodies a long-running worker logs
# their release at its next memory sample and its RSS falls back near
# where it started, instead of keeping up to 4 MiB for good.
. "$(dirname "$0")/lib.sh"

export JOB_SCRIPT=$REPO/scripts/noop.lua
export POLICY_DIR=$WORK/policies
policy_copy "$POLICY_DIR" \
  's/^local PROBE_EVERY_SECONDS = .*/local PROBE_EVERY_SECONDS = 1/'

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
events() { grep -c "\"event\":\"$1\"" "$WORK/run.log" || true; }
at_least() { [ "$(events "$1")" -ge "$2" ]; }

"$MOONRABBIT" >"$WORK/run.log" 2>&1 &
worker=$!
HELPER_PIDS+=("$worker") # ended by cleanup if a check aborts the test
check_true "the worker starts" wait_for 20 at_least consuming 1
start_kib=$(rss_kib "$worker")

"$MRCTL" gen log 1M >"$WORK/body"
"$MRCTL" publish "$WORK/body" --copies 30 >/dev/null
check_true "the 30 bodies are consumed" wait_for 30 \
  [ "$(depth "$AMQP_QUEUE")" = 0 ]
check_true "the kept buffers are released when idle" wait_for 10 \
  at_least idle_buffers_released 1
released=$(grep '"event":"idle_buffers_released"' "$WORK/run.log" | head -n 1 |
  grep -o '"bytes":[0-9]*' | grep -o '[0-9]*$' || true)
end_kib=$(rss_kib "$worker")
echo "RSS at start ${start_kib} KiB, after the release ${end_kib} KiB;" \
  "released ${released} bytes"
check_true "at least one 1 MiB buffer was kept and released" \
  [ "${released:-0}" -ge 1048576 ]
check_true "RSS is back within 2.5 MiB of the start" \
  [ "$end_kib" -le $((start_kib + 2560)) ]

kill -TERM "$worker"
wait "$worker" && rc=0 || rc=$?
check "the worker stops with 0" 0 "$rc"
check "no message went to the dead-letter queue" 0 "$(depth "$AMQP_QUEUE.dlq")"

finish
