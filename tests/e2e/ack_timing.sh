#!/usr/bin/env bash
# Acks are sent in batches, but never held for long: while one job runs
# for seconds, the quick jobs beside it are acked within a fraction of a
# second. Killing the worker then hands back only the slow message.
. "$(dirname "$0")/lib.sh"

export JOB_SCRIPT=$REPO/tests/e2e/jobs/ack_timing.lua
export WORKER_CONCURRENCY_PER_WORKER=2 AMQP_PREFETCH=40

done_count() { grep -c '"event":"job_done"' "$WORK/run.log" || true; }

"$MOONRABBIT" >"$WORK/run.log" 2>&1 &
worker=$!
HELPER_PIDS+=("$worker") # ended by cleanup if a check aborts the test
publish_op slow slow
# The quick ones come once the slow one holds its thread, so they are
# not taken in the same share of the queue behind it.
check_true "the slow job starts" wait_for 10 \
  grep -q '"event":"slow_started"' "$WORK/run.log"
for i in 1 2 3 4 5 6; do publish_op quick "q$i"; done
check_true "the six quick jobs run beside the slow one" wait_for 4 \
  [ "$(done_count)" -ge 6 ]
sleep 0.5
check "the slow job is still running" 6 "$(done_count)"
check "a job's field named level is renamed, the line's level kept" 6 \
  "$(grep '"event":"job_done"' "$WORK/run.log" |
     grep '^{"time":"[^"]*","level":"info"' | grep -c '"job_level":"mine"')"
sleep 0.2
kill -KILL "$worker"
wait "$worker" 2>/dev/null || true
check_true "the broker takes back the unacked message" wait_for 10 \
  [ "$(depth "$AMQP_QUEUE")" -ge 1 ]
sleep 0.5
check "only the slow message comes back: the quick ones were acked" 1 \
  "$(depth "$AMQP_QUEUE")"

finish
