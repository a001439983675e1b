#!/usr/bin/env bash
# Case 015: a connection goes back to the pool only clean. Pool size 1 and
# one thread force every job onto the same connection.
. "$(dirname "$0")/lib.sh"

export JOB_SCRIPT=$REPO/tests/e2e/jobs/case015.lua
export DB_POOL_SIZE=1 WORKER_CONCURRENCY_PER_WORKER=1
# The killed backend is a transient failure that failure.lua would retry
# for minutes; this case is about the pool, so one attempt is enough.
export POLICY_DIR=$WORK/policies
policy_copy "$POLICY_DIR" 's/^local MAX_ATTEMPTS = .*/local MAX_ATTEMPTS = 1/'


publish_op dup m1-dup
publish_op open m2-open
publish_op read m3-read
publish_op kill m4-kill
publish_op read m5-read
rc=$(run_worker "$WORK/run.log")
log=$WORK/run.log
check "worker exits 0" 0 "$rc"
check "the unique violation is logged with its SQLSTATE" 1 \
  "$(grep -c '"message_id":"m1-dup".*SQLSTATE 23505' "$log")"
check "the failed transaction is rolled back on release" 1 \
  "$(grep '"event":"db_rollback_on_release"' "$log" |
     grep -c '"message_id":"m1-dup".*"failed":true')"
check "the open transaction is rolled back and logged" 1 \
  "$(grep '"event":"db_rollback_on_release"' "$log" |
     grep -c '"message_id":"m2-open".*"left_open":true')"
check "the uncommitted update did not survive" x "$(sql "SELECT v FROM t")"
# Field order inside a line follows a Lua table walk, so each is matched
# on its own.
check "the next jobs read x and see no stuck session" 2 \
  "$(grep '"event":"read_value"' "$log" | grep '"v":"x"' |
     grep -c '"stuck":"0"')"
check "no job saw an aborted transaction" 0 "$(grep -c 25P02 "$log" || true)"
check "the killed connection is reset" 1 \
  "$(grep -c '"event":"db_connection_reset".*"ok":true' "$log")"
check "dead-lettered: dup, open and kill" "m1-dup m2-open m4-kill" \
  "$(dlq_ids | xargs)"

# A backend killed while the connection sits idle in the pool: the next
# job gets a fresh connection, and 100 more jobs leak no descriptor.
"$MOONRABBIT" >"$WORK/bg.log" 2>&1 &
worker=$!
HELPER_PIDS+=("$worker") # ended by cleanup if a check aborts the test
wait_reads() {
  for _ in $(seq 1 300); do
    [ "$(count_events "$WORK/bg.log" read_value)" -ge "$1" ] && return 0
    sleep 0.1
  done
  return 1
}
publish_op read b1
check_true "first idle-phase read done" wait_reads 1
TEST_DB_NAME=${DATABASE_URL##*/}
psql "$DATABASE_URL_ADMIN" -qAtc "SELECT pg_terminate_backend(pid)
  FROM pg_stat_activity WHERE application_name = 'moonrabbit'
  AND datname = '$TEST_DB_NAME'" >/dev/null
sleep 0.5
publish_op read b2
check_true "read after an idle kill succeeds" wait_reads 2
fds_before=$(ls "/proc/$worker/fd" | wc -l)
for i in $(seq 1 100); do publish_op read "c$i"; done
check_true "100 more reads done" wait_reads 102
fds_after=$(ls "/proc/$worker/fd" | wc -l)
check "descriptors stable over 100 jobs" "$fds_before" "$fds_after"
check "no job failed in the idle phase" 0 \
  "$(grep -c '"event":"delivery_rejected"' "$WORK/bg.log" || true)"
kill -TERM "$worker"
wait "$worker" && rc=0 || rc=$?
check "worker stops with 0 on SIGTERM" 0 "$rc"

finish
