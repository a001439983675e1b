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
# that swallows a failed statement and claims success leaves the
# transaction failed: its batch runs again job by job, each in a
# transaction of its own, where that job fails alone and leaves nothing,
# and no batch-mate is lost.
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
check "stored: all but the skips and the swallows" 48 \
  "$(sql "SELECT count(*) FROM b")"
check "ok: all but the swallows" 57 "$(summary "$WORK/run1b.log" ok)"
check "the swallows are dead-lettered, named as such" \
  "line-11 line-31 line-51 3" \
  "$(dlq_ids | xargs) $(grep -c '"outcome":"job_error".*left the batch' "$WORK/run1b.log")"

# host.db.exec: statements sent ahead of their results. Two duplicates
# fail only when the batch reads its results; the batch then runs job by
# job, each in a transaction of its own, so each duplicate fails alone
# and leaves nothing, and every other message is stored. A job that
# raises after its exec is rolled back to its savepoint.
sql "TRUNCATE b"
for i in $(seq 1 80); do
  case $i in
    23 | 61) fail=dup ;;
    40) fail=raise ;;
    *) fail=none ;;
  esac
  echo "{\"id\":\"e$i\",\"via\":\"exec\",\"fail\":\"$fail\"}"
done >"$WORK/msgs.jsonl"
"$MRCTL" publish-jsonl "$WORK/msgs.jsonl" >/dev/null
rc=$(run_worker "$WORK/run1c.log")
check "exec run exits 0" 0 "$rc"
check "ok: all but the duplicates and the raise" 77 "$(summary "$WORK/run1c.log" ok)"
check "stored: all the ok ones" 77 "$(sql "SELECT count(*) FROM b")"
check "the failed ones left nothing" 0 \
  "$(sql "SELECT count(*) FROM b WHERE id IN ('e23', 'e40', 'e61')")"
check_true "a batch found the duplicate at its end" \
  grep -q '"event":"batch_failed".*duplicate key' "$WORK/run1c.log"
check "the duplicates and the raise are dead-lettered" \
  "line-23 line-40 line-61" "$(dlq_ids | xargs)"

# Numbers from JSON: whole ones go to a bigint column as integers (lua-cjson
# makes every number a float), fractions keep all their digits.
cat >"$WORK/msgs.jsonl" <<'JSON'
{"id":"n1","via":"nums","n":3,"x":2.5}
{"id":"n2","via":"nums","n":-9007199254740991,"x":0.1}
{"id":"n3","via":"nums","n":1e3,"x":1e-300}
JSON
"$MRCTL" publish-jsonl "$WORK/msgs.jsonl" >/dev/null
rc=$(run_worker "$WORK/run-nums.log")
check "numbers run exits 0 with all stored" "0 3" \
  "$rc $(summary "$WORK/run-nums.log" ok)"
check "whole numbers arrive as integers" "3 -9007199254740991 1000" \
  "$(sql "SELECT string_agg(n::text, ' ' ORDER BY id) FROM nums")"
check "fractions arrive exactly" "t" \
  "$(sql "SELECT bool_and(x IN (2.5, 0.1, 1e-300)) FROM nums")"

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

# A lone worker with a deep window takes an eighth of it per transaction
# (at most 128): 1,000 messages at prefetch 1000 need fewer commits than
# batches of 32 ever could (32).
sql "TRUNCATE b"
for i in $(seq 1 1000); do
  echo "{\"id\":\"w$i\",\"fail\":\"none\"}"
done >"$WORK/msgs.jsonl"
"$MRCTL" publish-jsonl "$WORK/msgs.jsonl" >/dev/null
before=$(commits)
rc=$(run_worker "$WORK/run3.log" AMQP_PREFETCH=1000)
sleep 1
after=$(commits)
check "wide run exits 0 with all stored" "0 1000" \
  "$rc $(sql "SELECT count(*) FROM b")"
echo "commits for 1000 messages at prefetch 1000: $((after - before))"
check_true "a deep window makes batches larger than 32" \
  [ $((after - before)) -lt 28 ]

finish
