#!/usr/bin/env bash
# Crash-loop quarantine: a message that kills the worker every time is
# dead-lettered unrun on the delivery after its third crash (failure.lua's
# quarantine_after_crashes), with an alert naming it that reaches a local
# webhook receiver once, and every other message is stored.
. "$(dirname "$0")/lib.sh"

# The receiver is on 127.0.0.1.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy

export JOB_SCRIPT=$REPO/tests/e2e/jobs/crash.lua
export STATE_DIR=$WORK/state WORKER_CONCURRENCY_PER_WORKER=1
start_receiver hook
export ALERT_WEBHOOK_URL="http://127.0.0.1:$RPORT/hook"

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
# received EXPR: EXPR in Python over qs, the quarantine alerts received.
received() {
  q "$WORK/hook.jsonl" "(lambda qs: $1)([r['b'] for r in rs
    if r['b']['kind'] == 'quarantine'])"
}
check "the receiver gets the quarantine alert once" 1 "$(received 'len(qs)')"
check "it is critical, keyed by the message, with the crash count" \
  "critical id:poison poison 3 3" \
  "$(received '" ".join(str(x) for x in (qs[0]["severity"], qs[0]["key"],
    *(qs[0]["facts"][k] for k in ("message_id", "crashes",
      "quarantine_after"))))')"
check "its summary is the reason the job failed" \
  "quarantined: in flight at 3 crashes of the worker" \
  "$(received 'qs[0]["summary"]')"
check "the alerts thread sent it and gave nothing up" "1 0" \
  "$(logq "$log" '" ".join(str(ev("alerts_stopped")[0][k]) for k in ("sent", "failed"))')"

# A reload of failure.lua moves the threshold for the threads already
# running: started at 5 (the poison, at 3 crashes, would run and kill the
# worker), lowered to 3 by SIGHUP before the poison comes back.
export POLICY_DIR=$WORK/policies
policy_copy "$POLICY_DIR" \
  's/^local QUARANTINE_AFTER_CRASHES = .*/local QUARANTINE_AFTER_CRASHES = 5/'
"$MOONRABBIT" >"$WORK/live.log" 2>&1 &
worker=$!
HELPER_PIDS+=("$worker") # ended by cleanup if a check aborts the test
check_true "the live worker starts" wait_for 20 grep -q '"event":"consuming"' \
  "$WORK/live.log"
sed -i 's/^local QUARANTINE_AFTER_CRASHES = .*/local QUARANTINE_AFTER_CRASHES = 3/' \
  "$POLICY_DIR/failure.lua"
kill -HUP "$worker"
check_true "the edit is reloaded" wait_for 10 grep -q '"event":"policies_reloaded"' \
  "$WORK/live.log"
echo '{"conversation_id":"poison","id":"p","poison":true}' >"$WORK/poison.jsonl"
"$MRCTL" publish-jsonl "$WORK/poison.jsonl" >/dev/null
check_true "the poison is dead-lettered again" wait_for 20 \
  [ "$(depth "$AMQP_QUEUE.dlq")" = 1 ]
check_true "the worker is still running" kill -0 "$worker"
kill -TERM "$worker"
wait "$worker" && rc=0 || rc=$?
check "and stops with 0" 0 "$rc"

finish
