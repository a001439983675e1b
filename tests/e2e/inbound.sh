#!/usr/bin/env bash
# The loop reads the broker's socket itself (core/inbound.c), replies to
# its RPCs included. This drives it while deliveries stream: a queue
# filled before the worker starts (so deliveries follow the consume RPC
# at once) with 1 KiB, 1 MiB, oversized and failing messages interleaved;
# each failure's retry is published and committed mid-stream, on a
# channel of its own; drain mode's depth RPCs run at the end. Then a
# worker left idle past two heartbeat intervals must still be connected.
. "$(dirname "$0")/lib.sh"

export JOB_SCRIPT=$REPO/tests/e2e/jobs/inbound.lua
export POLICY_DIR=$WORK/policies
export AMQP_HEARTBEAT_SECONDS=5
policy_copy "$POLICY_DIR" \
  's/^local MAX_ATTEMPTS = 6$/local MAX_ATTEMPTS = 2/' \
  's/^local FIRST_DELAY_MS = 1000$/local FIRST_DELAY_MS = 200/'

"$MRCTL" gen log 1K --id small >"$WORK/small"
"$MRCTL" gen log 1M --id big >"$WORK/big"
"$MRCTL" gen log 3M --id huge >"$WORK/huge"
for i in $(seq 1 10); do
  "$MRCTL" publish "$WORK/small" --message-id "small-$i" --copies 20 >/dev/null
  "$MRCTL" publish "$WORK/big" --message-id "big-$i" --copies 2 >/dev/null
  "$MRCTL" publish "$WORK/small" --message-id "fail-$i" >/dev/null
  if [ $((i % 2)) = 0 ]; then
    "$MRCTL" publish "$WORK/huge" --message-id "huge-$i" >/dev/null
  fi
done

rc=$(run_worker "$WORK/drain.log")
check "drain: exits 0" 0 "$rc"
check "drain: every small and large body ran" 220 \
  "$(summary "$WORK/drain.log" ok)"
check "drain: the oversized bodies were refused unread" 5 \
  "$(summary "$WORK/drain.log" size_limit)"
check "drain: each failure was retried once" 10 \
  "$(summary "$WORK/drain.log" retries)"
check "drain: both attempts of each counted as failed" 20 \
  "$(summary "$WORK/drain.log" job_error)"
check "drain: the connection was never lost" 0 \
  "$(summary "$WORK/drain.log" reconnects)"
check "drain: the queue is empty" 0 "$(depth "$AMQP_QUEUE")"
check "drain: 15 dead letters" 15 "$(depth "$AMQP_QUEUE.dlq")"

"$MOONRABBIT" >"$WORK/idle.log" 2>&1 &
worker=$!
HELPER_PIDS+=("$worker") # ended by cleanup if a check aborts the test
check_true "idle: the worker starts" \
  wait_for 20 grep -q '"event":"consuming"' "$WORK/idle.log"
sleep 12 # past 2 x AMQP_HEARTBEAT_SECONDS with nothing to read
"$MRCTL" publish "$WORK/small" --message-id "late" --copies 30 >/dev/null
check_true "idle: the late messages are consumed" wait_for 20 \
  [ "$(depth "$AMQP_QUEUE")" = 0 ]
kill -TERM "$worker"
wait "$worker" && rc=0 || rc=$?
check "idle: the worker stops with 0" 0 "$rc"
check "idle: the connection was never lost" 0 \
  "$(count_events "$WORK/idle.log" broker_connection_lost)"
check "idle: all 30 were acked" 30 "$(summary "$WORK/idle.log" ok)"

finish
