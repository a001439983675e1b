#!/usr/bin/env bash
# Policy reload on SIGHUP: a good edit takes effect without losing a
# message; a broken one (syntax error, a raising function, a wrong type)
# is refused with the file and field named, and the limits in force stay.
. "$(dirname "$0")/lib.sh"

export POLICY_DIR=$WORK/policies
policy_copy "$POLICY_DIR"

events() { grep -c "\"event\":\"$1\"" "$WORK/run.log" || true; }
at_least() { [ "$(events "$1")" -ge "$2" ]; }

"$MOONRABBIT" >"$WORK/run.log" 2>&1 &
worker=$!
HELPER_PIDS+=("$worker") # ended by cleanup if a check aborts the test
publish_logs before 10
check_true "100 KB logs are stored under the shipped limits" wait_for 30 settled 10
check "none refused" 0 "$(depth "$AMQP_QUEUE.dlq")"

# A good edit: logs over 50 KiB are refused from now on.
sed -i 's/^local CONVERSATION_LOG_WARN_BYTES = .*/local CONVERSATION_LOG_WARN_BYTES = 20 * KIB/;
        s/^local CONVERSATION_LOG_MAX_BYTES = .*/local CONVERSATION_LOG_MAX_BYTES = 50 * KIB/' \
  "$POLICY_DIR/limits.lua"
kill -HUP "$worker"
check_true "the edit is reloaded" wait_for 10 at_least policies_reloaded 1
publish_logs after 5
check_true "messages after the reload are settled" wait_for 30 settled "$sent"
check "the new field limit refuses them" 5 "$(depth "$AMQP_QUEUE.dlq")"

# Three broken edits, one at a time; each is refused and the 50 KiB
# limit still holds afterwards.
cp "$POLICY_DIR/limits.lua" "$WORK/limits.good"
cp "$POLICY_DIR/memory.lua" "$WORK/memory.good"
refusals=0
refuse() {  # refuse NAME EXPECTED-TEXT
  kill -HUP "$worker"
  refusals=$((refusals + 1))
  check_true "$1 is refused" wait_for 10 at_least policy_reload_refused "$refusals"
  check_true "$1: the refusal names it" grep -q "$2" "$WORK/run.log"
  cp "$WORK/limits.good" "$POLICY_DIR/limits.lua"
  cp "$WORK/memory.good" "$POLICY_DIR/memory.lua"
  publish_logs "$1" 2
  check_true "$1: messages still settle" wait_for 30 settled "$sent"
}
echo 'local broken = ' >>"$POLICY_DIR/limits.lua"
refuse syntax "limits.lua:[0-9]*: <eof> expected near 'local'"
sed -i 's/^local function decide(sample, state)$/local function decide()\n  error("decide is broken on purpose")/' \
  "$POLICY_DIR/memory.lua"
refuse raise "memory.lua:[0-9]*: decide is broken on purpose"
sed -i 's/max_message_bytes = MAX_MESSAGE_BYTES,/max_message_bytes = "2MB",/' \
  "$POLICY_DIR/limits.lua"
refuse type "field 'max_message_bytes': expected a whole number"
check "the old limits held through every refusal" 11 \
  "$(depth "$AMQP_QUEUE.dlq")"
check_true "a refusal raises an alert" grep -q \
  '"event":"alert".*"kind":"policy_reload"' "$WORK/run.log"

kill -TERM "$worker"
wait "$worker" && rc=0 || rc=$?
check "the worker stops with 0" 0 "$rc"
check "no message was lost across the reloads" "$sent" \
  $(($(stored) + $(depth "$AMQP_QUEUE.dlq")))

finish
