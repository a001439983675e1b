#!/usr/bin/env bash
# A retry the broker refuses: its queue name is taken by a queue declared
# with other arguments, so the broker closes the retry channel. The
# message goes to the dead-letter queue with the broker's reason logged;
# the connection and the consuming channel live on, and a later failure
# gets its retry on a channel opened anew.
. "$(dirname "$0")/lib.sh"

export JOB_SCRIPT=$REPO/tests/e2e/jobs/inbound.lua
export POLICY_DIR=$WORK/policies
policy_copy "$POLICY_DIR" \
  's/^local MAX_ATTEMPTS = 6$/local MAX_ATTEMPTS = 2/' \
  's/^local FIRST_DELAY_MS = 1000$/local FIRST_DELAY_MS = 200/'

# mrctl declares a queue with a dead-letter exchange and no TTL: not
# what moonrabbit declares for the first retry delay (200 ms).
taken="$AMQP_QUEUE.retry.200"
echo '{}' | "$MRCTL" publish - --queue "$taken" >/dev/null
"$MRCTL" purge "$taken" >/dev/null

"$MRCTL" gen log 1K --id small >"$WORK/small"
"$MRCTL" publish "$WORK/small" --message-id "ok-1" --copies 5 >/dev/null
"$MRCTL" publish "$WORK/small" --message-id "fail-1" >/dev/null
"$MRCTL" publish "$WORK/small" --message-id "ok-2" --copies 5 >/dev/null
rc=$(run_worker "$WORK/run.log")
log=$WORK/run.log
check "worker exits 0" 0 "$rc"
check "the others ran" 10 "$(summary "$log" ok)"
check "the refused retry is not counted as one" 0 "$(summary "$log" retries)"
check "the connection was never lost" 0 "$(summary "$log" reconnects)"
check_true "the broker's reason is logged" \
  grep -q '"event":"retry_refused".*"message_id":"fail-1".*PRECONDITION_FAILED' "$log"
check "the message is dead-lettered" fail-1 "$(dlq_ids | xargs)"

# With the queue out of the way the retry channel opens again.
"$MRCTL" delete "$taken" "$taken.dlq" >/dev/null
"$MRCTL" publish "$WORK/small" --message-id "fail-2" >/dev/null
rc=$(run_worker "$WORK/run2.log")
check "second run exits 0" 0 "$rc"
check "the failure is retried once" 1 "$(summary "$WORK/run2.log" retries)"
check "and dead-lettered after its second attempt" fail-2 "$(dlq_ids | xargs)"
"$MRCTL" delete "$taken" "$taken.dlq" >/dev/null 2>&1 || true

finish
