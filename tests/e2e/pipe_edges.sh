#!/usr/bin/env bash
# Statements sent ahead by host.db.exec inside a batch, at two edges: a
# job that drops the connection's prepared statements, and a statement
# still running at the server when its job's time budget runs out.
. "$(dirname "$0")/lib.sh"

export JOB_SCRIPT=$REPO/tests/e2e/jobs/pipe_edges.lua
export WORKER_CONCURRENCY_PER_WORKER=1 DB_POOL_SIZE=1 AMQP_PREFETCH=100

# DEALLOCATE ALL through exec: the host must forget the names it
# prepared, or every later job on the connection runs a statement the
# server no longer has (SQLSTATE 26000), in the batch and again alone.
# DEALLOCATE of one name the script prepared itself must not make it
# forget the others, or it prepares them again and the server refuses
# the names it already has (SQLSTATE 42P05), job after job.
for i in $(seq 1 40); do
  op=none
  [ "$i" = 5 ] && op=deallocate
  [ "$i" = 20 ] && op=own_prepare
  echo "{\"id\":\"d$i\",\"op\":\"$op\"}"
done >"$WORK/msgs.jsonl"
"$MRCTL" publish-jsonl "$WORK/msgs.jsonl" >/dev/null
rc=$(run_worker "$WORK/dealloc.log")
check "deallocate run exits 0" 0 "$rc"
check "every message is ok" 40 "$(summary "$WORK/dealloc.log" ok)"
check "every message is stored" 40 "$(sql "SELECT count(*) FROM p")"
check "nothing is dead-lettered" "" "$(dlq_ids | xargs)"

# A connection lost in the middle of a batch, with statements sent ahead
# and not yet read: nothing the server lost may be acked. The batch runs
# again job by job on a fresh connection, and every message is stored.
sql "TRUNCATE p"
for i in $(seq 1 30); do
  op=none
  [ "$i" = 12 ] && op=kill
  echo "{\"id\":\"k$i\",\"op\":\"$op\"}"
done >"$WORK/msgs.jsonl"
"$MRCTL" publish-jsonl "$WORK/msgs.jsonl" >/dev/null
rc=$(run_worker "$WORK/kill.log")
check "kill run exits 0" 0 "$rc"
check_true "the connection was lost" grep -q '"event":"batch_failed"' \
  "$WORK/kill.log"
check "every message is ok" 30 "$(summary "$WORK/kill.log" ok)"
check "every message is stored" 30 "$(sql "SELECT count(*) FROM p")"
check "nothing is dead-lettered" "" "$(dlq_ids | xargs)"

# Whole numbers go as integers, however Lua holds them (an integer column
# refuses "3.0"); other floats with all their digits.
sql "TRUNCATE p"
echo '{"id":"n1","op":"numbers"}' | "$MRCTL" publish - >/dev/null
rc=$(run_worker "$WORK/numbers.log")
check "numbers run exits 0" 0 "$rc"
check "numbers reach the server as written" \
  "0,-7,-9223372036854775808,9223372036854775807,3,-2,2.5,0.10000000000000001,9007199254740992" \
  "$(sql "SELECT id FROM p")"

# Ten messages of OP, the fourth SLOW_OP with id SLOW_ID, drained into
# $WORK/TAG.log: the run must not wait out the 30 s the slow one asks
# for, and only the slow one is dead-lettered.
one_slow_of_ten() {
  local tag=$1 op=$2 slow_op=$3 slow_id=$4 i id o rc start took

  sql "TRUNCATE p"
  for i in $(seq 1 10); do
    id=$tag$i o=$op
    [ "$i" = 4 ] && id=$slow_id o=$slow_op
    echo "{\"id\":\"$id\",\"op\":\"$o\"}"
  done >"$WORK/msgs.jsonl"
  "$MRCTL" publish-jsonl "$WORK/msgs.jsonl" >/dev/null
  start=$(date +%s)
  rc=$(run_worker "$WORK/$tag.log")
  took=$(($(date +%s) - start))
  check "$tag: run exits 0" 0 "$rc"
  check_true "$tag: the run is not held for 30 s (took ${took} s)" \
    [ "$took" -lt 20 ]
  check "$tag: all but the slow one are stored" 9 \
    "$(sql "SELECT count(*) FROM p")"
  check "$tag: the slow one is dead-lettered" line-4 "$(dlq_ids | xargs)"
}

export POLICY_DIR=$WORK/policies
policy_copy "$POLICY_DIR" 's/^local JOB_TIMEOUT_MS = .*/local JOB_TIMEOUT_MS = 1000/'

# A statement sent ahead is still a statement of its job: its time budget
# cancels it, rather than the batch's COMMIT waiting it out.
one_slow_of_ten sleep none sleep sleep4

# A COMMIT is held to the time budget too: a deferred trigger of one job
# sleeps 30 s there. The batch is cancelled, and runs again job by job,
# where only the slow one's own COMMIT is cancelled.
one_slow_of_ten commit query query slow4
check_true "the cancelled COMMIT is named" \
  grep -q '"reason":"COMMIT: the COMMIT (deferred triggers' "$WORK/commit.log"

# A COMMIT that fails with a passing error (40001, from a deferred
# trigger) fails a job that had returned true: failure.lua retries it,
# from the body kept until the COMMIT answered, first after its batch
# fails and then alone. Two attempts here, then the dead-letter queue.
policy_copy "$POLICY_DIR" 's/^local MAX_ATTEMPTS = 6$/local MAX_ATTEMPTS = 2/' \
  's/^local FIRST_DELAY_MS = 1000$/local FIRST_DELAY_MS = 200/'
sql "TRUNCATE p"
for i in $(seq 1 10); do
  id=k$i
  [ "$i" = 4 ] && id=conflict4
  echo "{\"id\":\"$id\",\"op\":\"query\"}"
done >"$WORK/msgs.jsonl"
"$MRCTL" publish-jsonl "$WORK/msgs.jsonl" >/dev/null
rc=$(run_worker "$WORK/conflict.log")
check "conflict run exits 0" 0 "$rc"
check "all but the conflicting one are stored" 9 \
  "$(sql "SELECT count(*) FROM p")"
check "the failed COMMIT is retried once" 1 \
  "$(summary "$WORK/conflict.log" retries)"
check "then dead-lettered" line-4 "$(dlq_ids | xargs)"

finish
