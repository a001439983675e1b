#!/usr/bin/env bash
# Transaction batching: a worker's jobs share one transaction, each in a
# savepoint. A failing job is rolled back alone, its batch-mates commit,
# and the whole run needs far fewer commits than messages.
. "$(dirname "$0")/lib.sh"

export JOB_SCRIPT=$REPO/tests/e2e/jobs/batch.lua
export WORKER_CONCURRENCY_PER_WORKER=1 AMQP_PREFETCH=100

for i in $(seq 1 500); do
  case $((i % 50)) in
    7) fail=raise ;;
    17) fail=refuse ;;
    27) fail=dup ;;
    *) fail=none ;;
  esac
  echo "{\"id\":\"m$i\",\"fail\":\"$fail\"}"
done >"$WORK/msgs.jsonl"
"$MRCTL" publish-jsonl "$WORK/msgs.jsonl" >/dev/null

commits() {
  sql "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
}
before=$(commits)
rc=$(run_worker "$WORK/run.log")
sleep 1 # the statistics collector reports with a short delay
after=$(commits)
log=$WORK/run.log
check "worker exits 0" 0 "$rc"
check "every message without a failure is stored" 470 \
  "$(sql "SELECT count(*) FROM b")"
check "no failed message left its insert behind" 0 \
  "$(sql "SELECT count(*) FROM b WHERE id IN ('m7','m17','m27','m57')")"
check "the failures are counted" "20 10" \
  "$(summary "$log" job_error) $(summary "$log" invalid_message)"
check "the failures are dead-lettered" 30 "$(dlq_ids | wc -l)"
echo "commits for 500 messages: $((after - before))"
check_true "batches share commits" [ $((after - before)) -lt 250 ]

# Jobs that run no statement share batches with jobs that do. A job
# that swallows a failed statement and claims success leaves the batch's
# transaction failed: the batch runs again job by job, where that job's
# insert commits on its own as it would unbatched, and no batch-mate is
# lost to the failed transaction.
sql "TRUNCATE b"
for i in $(seq 1 60); do
  case $((i % 20)) in
    3 | 4 | 5) fail=skip ;;
    11) fail=swallow ;;
    15) fail=deallocate ;;
    *) fail=none ;;
  esac
  echo "{\"id\":\"s$i\",\"fail\":\"$fail\"}"
done >"$WORK/msgs.jsonl"
"$MRCTL" publish-jsonl "$WORK/msgs.jsonl" >/dev/null
rc=$(run_worker "$WORK/run1b.log")
check "skip/swallow run exits 0" 0 "$rc"
check "every message but the skips is stored" 51 "$(sql "SELECT count(*) FROM b")"
check "all 60 are ok" 60 "$(summary "$WORK/run1b.log" ok)"
check_true "the failed transaction is caught" \
  grep -q '"event":"batch_failed".*left the batch' "$WORK/run1b.log"

# A transaction that cannot commit: y5 and y6 share a k that is checked
# only at COMMIT, so their batch fails there; every job of it then runs
# on its own, and only y6, the second of the pair, fails.
sql "TRUNCATE b"
for i in $(seq 1 40); do
  k=k$i
  [ "$i" = 6 ] && k=k5
  echo "{\"id\":\"y$i\",\"k\":\"$k\",\"fail\":\"none\"}"
done >"$WORK/msgs.jsonl"
"$MRCTL" publish-jsonl "$WORK/msgs.jsonl" >/dev/null
# With no statement prepared, as behind a pooler in transaction mode.
rc=$(run_worker "$WORK/run2.log" DB_STATEMENT_CACHE=0)
check "second run exits 0" 0 "$rc"
check_true "the failed commit is logged" grep -q '"event":"batch_failed"' \
  "$WORK/run2.log"
check "all but the duplicate stored" 39 "$(sql "SELECT count(*) FROM b")"
# publish-jsonl names a message without conversation_id by its line.
check "only the duplicate is dead-lettered" line-6 "$(dlq_ids | xargs)"

finish
