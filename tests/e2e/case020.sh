#!/usr/bin/env bash
# Case 020 live: a server without a connection slot for every pooled
# connection (SQLSTATE 53300) is a shortfall to live with, not a reason to
# stop or to fail jobs. The shared server's max_connections is not ours to
# lower and its role is a superuser, so a role of our own with a CONNECTION
# LIMIT stands in for it: the server refuses the same way ("too many
# connections for role", 53300, where a full server says "too many clients
# already").
. "$(dirname "$0")/lib.sh"

ROLE=${TEST_DB}_r
PW=pw$$
rest=${DATABASE_URL#*://}
ROLE_URL="${DATABASE_URL%%://*}://$ROLE:$PW@${rest#*@}"
export WORKER_CONCURRENCY_PER_WORKER=12 DB_POOL_SIZE=12

admin() {
  psql "$DATABASE_URL_ADMIN" -qAtX -v ON_ERROR_STOP=1 -c "$1"
}

case_cleanup() {
  [ -z "${worker:-}" ] || kill "$worker" 2>/dev/null || true
  admin "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
    WHERE usename = '$ROLE'" >/dev/null 2>&1 || true
  cleanup
  admin "DROP ROLE IF EXISTS $ROLE" >/dev/null 2>&1 || true
}
trap case_cleanup EXIT

admin "CREATE ROLE $ROLE LOGIN PASSWORD '$PW'"
admin "ALTER DATABASE $TEST_DB OWNER TO $ROLE"
limit() { admin "ALTER ROLE $ROLE CONNECTION LIMIT $1"; }
# A run starts once the backends of the last are gone: one still exiting
# holds a slot.
idle() {
  [ "$(admin "SELECT count(*) FROM pg_stat_activity
    WHERE usename = '$ROLE'")" = 0 ]
}
settle() { wait_for 30 idle || echo "note: the role still has sessions"; }
stored() { sql "SELECT count(*) FROM conversation_stats"; }
# lines LOG EVENT TEXT: lines of EVENT in LOG that also hold TEXT.
lines() { grep "\"event\":\"$2\"" "$1" | grep -cF -- "$3" || true; }
head -n 200 "$CORPUS" >"$WORK/msgs.jsonl"


# A: the case. Room for 5 of 12 connections, 12 threads, 200 messages.
limit 5
"$MRCTL" publish-jsonl "$WORK/msgs.jsonl" >/dev/null
rc=$(run_worker "$WORK/a.log" DATABASE_URL="$ROLE_URL")
log=$WORK/a.log
check "A: the worker drains and exits 0" 0 "$rc"
check "A: all 200 are stored" 200 "$(stored)"
check "A: all 200 are ok" 200 "$(summary "$log" ok)"
check "A: no job failed" 0 "$(summary "$log" job_error)"
check "A: the dead-letter queue is empty" 0 "$(depth "$AMQP_QUEUE.dlq")"
check "A: the shortfall is logged once" 1 \
  "$(count_events "$log" db_pool_shortfall)"
check "A: with wanted 12, open 5 and the server's 53300" 1 \
  "$(grep '"event":"db_pool_shortfall"' "$log" |
     grep '"wanted":12,"open":5,' | grep -c '53300: too many connections')"
check "A: 53300 appears on no other line" 1 "$(grep -c 53300 "$log")"
check "A: the password is not logged" 0 "$(grep -c "$PW" "$log" || true)"


# B: room made while it runs. A short pool grows once jobs wait for a
# connection, and /metrics shows how many it holds.

open_now() {
  curl -sf --max-time 5 "http://127.0.0.1:$port/metrics" |
    awk '$1 == "moonrabbit_db_connections_open" { print $2 }'
}
# A condition for wait_for, which runs it anew on every try.
open_is() { [ "$(open_now)" = "$1" ]; }

settle
limit 3
# Another test may still bind the port first; then try another.
for _ in 1 2 3; do
  port=$(free_port)
  DATABASE_URL=$ROLE_URL METRICS_ADDR=127.0.0.1:$port "$MOONRABBIT" \
    >"$WORK/b.log" 2>&1 &
  worker=$!
  wait_for 30 grep -q '"event":"consuming"\|"event":"metrics_failed"' \
    "$WORK/b.log" || true
  grep -q '"event":"metrics_failed"' "$WORK/b.log" || break
  wait "$worker" || true
done
log=$WORK/b.log
check_true "B: the worker starts short" wait_for 30 \
  grep -q '"event":"db_pool_shortfall".*"open":3,' "$log"
check_true "B: /metrics shows 3 connections open" wait_for 30 open_is 3
limit 12
# Bursts keep jobs waiting for a connection, which is when the pool grows.
# Each burst has ids of its own: upserts of one row from two batches could
# deadlock, and this part is about the pool.
burst=0
grown() {
  burst=$((burst + 1))
  sed "s/\"conversation_id\": \"/&b$burst-/" "$WORK/msgs.jsonl" \
    >"$WORK/burst.jsonl"
  "$MRCTL" publish-jsonl "$WORK/burst.jsonl" >/dev/null
  open_is 12
}
check_true "B: the pool grows to 12 once the server has room" \
  wait_for 90 grown
check_true "B: the growth is logged" \
  grep -q '"event":"db_pool_grew","wanted":12,"open":12' "$log"
kill -TERM "$worker"
rc=0
wait "$worker" || rc=$?
worker=
check "B: the worker stops with 0" 0 "$rc"
check "B: no job failed" 0 "$(summary "$log" job_error)"
check "B: the shortfall is logged once" 1 \
  "$(count_events "$log" db_pool_shortfall)"
check "B: the dead-letter queue is empty" 0 "$(depth "$AMQP_QUEUE.dlq")"


# C: no room at all. Start-up waits DB_CONNECT_WAIT_SECONDS, saying so
# once, then stops and names the settings to change.
settle
limit 0
started=$SECONDS
rc=$(run_worker "$WORK/c.log" DATABASE_URL="$ROLE_URL" \
  DB_CONNECT_WAIT_SECONDS=3)
took=$((SECONDS - started))
log=$WORK/c.log
check "C: start-up fails with 1" 1 "$rc"
check "C: the wait is logged once" 1 "$(count_events "$log" db_pool_waiting)"
check "C: the refusal names the fix" 1 \
  "$(lines "$log" db_connect_failed \
     'lower DB_POOL_SIZE (12) or WORKER_REPLICAS (1), or raise the server')"
check "C: and the server's message" 1 \
  "$(lines "$log" db_connect_failed '53300: too many connections for role')"
echo "C: gave up after ${took} s"
check_true "C: after about 3 s" test "$took" -ge 3 -a "$took" -le 8


# D: no room at first, room for 5 two seconds later: start-up waits and
# then runs short.
settle
limit 0
(sleep 2 && limit 5) &
rc=$(run_worker "$WORK/d.log" DATABASE_URL="$ROLE_URL" \
  DB_CONNECT_WAIT_SECONDS=30)
wait
log=$WORK/d.log
check "D: the worker starts once there is room and exits 0" 0 "$rc"
check "D: the wait is logged once" 1 "$(count_events "$log" db_pool_waiting)"
check "D: then the shortfall once" 1 \
  "$(lines "$log" db_pool_shortfall '"wanted":12,"open":5,')"


# E: a database that does not exist is no shortfall: start-up stops at
# once and names DATABASE_URL.
started=$SECONDS
rc=$(run_worker "$WORK/e.log" DATABASE_URL="${ROLE_URL%/*}/${TEST_DB}_none")
took=$((SECONDS - started))
log=$WORK/e.log
check "E: start-up fails with 1" 1 "$rc"
check "E: the refusal names DATABASE_URL and the cause" 1 \
  "$(lines "$log" db_connect_failed \
     "failed to connect to DATABASE_URL: connection to server")"
check "E: which is the missing database" 1 \
  "$(lines "$log" db_connect_failed "database \\\"${TEST_DB}_none\\\" does not exist")"
check "E: no wait" 0 "$(count_events "$log" db_pool_waiting)"
check_true "E: at once" [ "$took" -le 2 ]

finish
