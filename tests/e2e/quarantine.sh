#!/usr/bin/env bash
# Crash-loop quarantine: a message that kills the worker every time is
# dead-lettered unrun on the delivery after its third crash (failure.lua's
# quarantine_after_crashes), with an alert naming it, and every other
# message is stored.
. "$(dirname "$0")/lib.sh"

export JOB_SCRIPT=$REPO/tests/e2e/jobs/crash.lua
export STATE_DIR=$WORK/state WORKER_CONCURRENCY_PER_WORKER=1

for i in $(seq 1 30); do
  if [ "$i" = 10 ]; then
    echo "{\"conversation_id\":\"poison\",\"id\":\"p\",\"poison\":true}"
  else
    echo "{\"conversation_id\":\"m$i\",\"id\":\"m$i\"}"
  fi
done >"$WORK/msgs.jsonl"
"$MRCTL" publish-jsonl "$WORK/msgs.jsonl" >/dev/null

crashes=0
rc=1
for run in 1 2 3 4 5 6; do
  rc=$(run_worker "$WORK/run$run.log")
  [ "$rc" = 0 ] && break
  crashes=$((crashes + 1))
done
log=$WORK/run$run.log
check "the worker was killed three times" 3 "$crashes"
check "the run after that drains and exits 0" 0 "$rc"
check "the restart counts the crash" 1 \
  "$(grep -c '"event":"crash_detected","in_flight_at_crash":1' "$log")"
check "the poison is dead-lettered" poison "$(dlq_ids | xargs)"
check_true "an alert names it" grep -q \
  '"event":"alert","kind":"quarantine","severity":"critical","key":"id:poison"' \
  "$log"
check "every other message is stored" 29 "$(sql "SELECT count(*) FROM c")"

finish
