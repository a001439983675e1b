#!/usr/bin/env bash
# Case 018 and the time budget: a job that grows without bound is stopped
# by its state's memory ceiling, one that loops forever by its time
# budget, and the other messages of the same run are all handled. Both
# limits come from limits.lua, edited here the way an operator would.
. "$(dirname "$0")/lib.sh"

export JOB_SCRIPT=$REPO/tests/e2e/jobs/case018.lua
export CASE_DATA=$REPO/../shared/cases/data/018
export POLICY_DIR=$WORK/policies
# Two seconds: long enough that the hog, sharing two cores with the loop,
# reaches its memory ceiling before its time budget.
policy_copy "$POLICY_DIR" 's/^local JOB_TIMEOUT_MS = .*/local JOB_TIMEOUT_MS = 2000/'

export WORKER_CONCURRENCY_PER_WORKER=4
publish_op hog hog
publish_op loop loop
publish_op loop_catch loop_catch
publish_op sleep_sql sleep_sql
publish_op gc_bomb gc_bomb
for i in $(seq 1 10); do publish_op normal "n$i"; done
rc=$(run_worker "$WORK/run.log")
log=$WORK/run.log
check "worker exits 0" 0 "$rc"
check "the hog hits the memory ceiling" 1 \
  "$(grep '"message_id":"hog"' "$log" | grep -c 'Lua memory ceiling of 67108864')"
# gc_bomb's finalizer reaches the ceiling too if a collection runs it
# before the run ends, which depends on which thread takes what.
rebuilt=$(count_events "$log" lua_state_rebuilt)
check_true "the hog's state is rebuilt (rebuilt: $rebuilt)" \
  [ "$rebuilt" -ge 1 -a "$rebuilt" -le 2 ]
for id in loop loop_catch sleep_sql; do
  check "$id is stopped by the time budget" 1 \
    "$(grep "\"message_id\":\"$id\"" "$log" | grep -c 'time budget of 2000 ms')"
done
check "sleep_sql's statement is cancelled, not waited out" 1 \
  "$(grep '"message_id":"sleep_sql"' "$log" | grep -c 'ms in a statement')"
check "the ten normal messages and gc_bomb succeed" 11 "$(summary "$log" ok)"
check "hog and the three loops are job_error" 4 "$(summary "$log" job_error)"
check "dead-lettered: hog and the loops" "hog loop loop_catch sleep_sql" \
  "$(dlq_ids | sort | xargs)"

# A caught out-of-memory error still leaves a fresh state for the next job.
export WORKER_CONCURRENCY_PER_WORKER=1
publish_op count before
publish_op catch catch
publish_op count after
rc=$(run_worker "$WORK/catch.log")
check "catch run exits 0" 0 "$rc"
before=$(grep '"event":"state_kib"' "$WORK/catch.log" | head -n 1 |
  grep -o '"kib":"[0-9]*' | grep -o '[0-9]*$')
after=$(grep '"event":"state_kib"' "$WORK/catch.log" | tail -n 1 |
  grep -o '"kib":"[0-9]*' | grep -o '[0-9]*$')
echo "state before: ${before} KiB, after the caught hog: ${after} KiB"
check_true "the next job starts within 1 MiB of a fresh state" \
  [ $((after - before)) -lt 1024 ]

# A ceiling too small to run anything is refused at start-up, naming the
# file and field, with exit code 2.
policy_copy "$WORK/tiny" 's/^local LUA_MEMORY_BYTES = .*/local LUA_MEMORY_BYTES = 16 * KIB/' \
  's/^local MIN_LUA_MEMORY_BYTES = .*/local MIN_LUA_MEMORY_BYTES = 16 * KIB/'
rc=$(run_worker "$WORK/tiny.log" POLICY_DIR="$WORK/tiny")
check "a 16 KiB ceiling stops start-up with code 2" 2 "$rc"
check_true "the refusal names the file and field" grep -q \
  "limits.lua: field 'lua_memory_bytes': expected a whole number from 1048576" \
  "$WORK/tiny.log"

finish
