#!/usr/bin/env bash
# SIGHUP reloads alerts.lua with the other policies, all or nothing.
#
#   1. An edited format reaches the receiver from the next alert on, and
#      the de-duplication state outlives the swap: the resolve after it
#      still knows the warning it ends.
#   2. A broken alerts.lua (syntax error, a raising format(), a setting of
#      the wrong type) refuses the whole reload, a limits.lua edit made
#      with it included, naming the file. The refusal alert and the alerts
#      after it go out in the format in force; messages are still stored.
#   3. Once alerts.lua is fixed, the same reload is taken whole.
. "$(dirname "$0")/lib.sh"

# Everything here talks to 127.0.0.1.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy

export POLICY_DIR=$WORK/policies
policy_copy "$POLICY_DIR" \
  's/^local PROBE_EVERY_SECONDS = .*/local PROBE_EVERY_SECONDS = 1/'
alerts_lua=$POLICY_DIR/alerts.lua

# A cgroup v2 tree with a limit of 10^9 bytes; 72 % is a warning that
# leaves intake running.
root=$WORK/root
cgroup_fixture "$root" 1000000000
export MOONRABBIT_PROC_ROOT=$root/proc MOONRABBIT_SYS_ROOT=$root/sys
use_percent() {
  echo $((10000000 * $1)) >"$root/sys/fs/cgroup/memory.current.tmp"
  mv "$root/sys/fs/cgroup/memory.current.tmp" \
    "$root/sys/fs/cgroup/memory.current"
}
use_percent 10

log=$WORK/run.log
events() { grep -c "\"event\":\"$1\"" "$log" || true; }
at_least() { [ "$(events "$1")" -ge "$2" ]; }
received() { [ "$(q "$WORK/hook.jsonl" 'len(rs)')" -ge "$1" ]; }
sampled() {  # sampled LEVEL N: N samples at LEVEL so far
  [ "$(grep -c "\"event\":\"memory_sample\".*\"level\":\"$1\"" "$log" ||
    true)" -ge "$2" ]
}

# got N FIELD...: those fields of the receiver's Nth request (from 0),
# the summary up to its first comma.
got() {
  local n=$1
  shift
  q "$WORK/hook.jsonl" "' '.join(rs[$n]['b'][k].split(',')[0] for k in '$*'.split())"
}

start_receiver hook
ALERT_WEBHOOK_URL="http://127.0.0.1:$RPORT/hook" "$MOONRABBIT" >"$log" 2>&1 &
worker=$!
HELPER_PIDS+=("$worker") # ended by cleanup if a check aborts the test
trap 'kill "$worker" 2>/dev/null || true; cleanup' EXIT


echo "== 1. an edited format takes effect; de-duplication carries over"
await 10 sampled ok 1
publish_logs before 5
use_percent 72
await 10 received 1
check "the warning arrives in the shipped format" \
  "firing memory warning: working set at 72.0 % of limit" \
  "$(got 0 status summary)"

cp "$alerts_lua" "$WORK/alerts.shipped"
sed -i 's/^    summary = alert.summary,$/    summary = "[edited] " .. summary_of(alert),/;
        s/^local QUEUE_CAPACITY = .*/local QUEUE_CAPACITY = 16/' "$alerts_lua"
check "the edit changes the generic summary" 1 \
  "$(grep -c '"\[edited\] " .. summary_of(alert)' "$alerts_lua")"
kill -HUP "$worker"
await 10 at_least policies_reloaded 1
await 10 at_least alerts_reloaded 1
check "the reload is taken" 1 "$(events policies_reloaded)"
check "the alerts thread swaps in the new settings" "generic 16" \
  "$(logq "$log" '" ".join(str(ev("alerts_reloaded")[0][k]) for k in ("format", "queue_capacity"))')"

use_percent 10
await 10 received 2
check "the resolve arrives in the edited format" \
  "resolved [edited] memory ok (was warning): working set at 10.0 % of limit" \
  "$(got 1 status summary)"
check "it still knows the warning it ends, and since when" \
  "warning $(got 0 started_at)" "$(got 1 previous_severity started_at)"
check_true "messages before and across the reload are settled" \
  wait_for 30 settled "$sent"


echo "== 2. a broken alerts.lua refuses the whole reload"
cp "$alerts_lua" "$WORK/alerts.good"
# Refused along with the broken alerts.lua, this must not take effect:
# logs over 50 KiB would be dead-lettered.
sed -i 's/^local CONVERSATION_LOG_WARN_BYTES = .*/local CONVERSATION_LOG_WARN_BYTES = 20 * KIB/;
        s/^local CONVERSATION_LOG_MAX_BYTES = .*/local CONVERSATION_LOG_MAX_BYTES = 50 * KIB/' \
  "$POLICY_DIR/limits.lua"
refusals=0
last_refusal() { grep '"event":"policy_reload_refused"' "$log" | tail -n 1; }
refuse() {  # refuse NAME REGEX: SIGHUP; refused, the reason matching
  kill -HUP "$worker"
  refusals=$((refusals + 1))
  check_true "$1 is refused" wait_for 10 at_least policy_reload_refused "$refusals"
  check_true "$1: the refusal names the file and the fault" \
    grep -qE "$2" <(last_refusal)
  publish_logs "$1" 2
}

cp "$WORK/alerts.good" "$alerts_lua"
sed -i 's/"\[edited\] "/"[broken] "/' "$alerts_lua"
echo 'local broken =' >>"$alerts_lua"
refuse syntax "\"reason\":\"$alerts_lua:[0-9]+: <eof> expected near 'local'"
await 10 received 3
check "the refusal alert goes out in the format in force" \
  "policy_reload [edited] $(logq "$log" 'ev("policy_reload_refused")[0]["reason"]')" \
  "$(got 2 kind summary)"

cp "$WORK/alerts.good" "$alerts_lua"
sed -i 's/^  check_alert(alert, "format")$/  error("format is broken on purpose")/' \
  "$alerts_lua"
refuse raise "alerts\.lua:[0-9]+: format is broken on purpose"

# This fault stays in the file while the checks below run.
cp "$WORK/alerts.good" "$alerts_lua"
sed -i 's/^local MAX_ATTEMPTS = .*/local MAX_ATTEMPTS = "4"/' "$alerts_lua"
refuse type "alerts\.lua: field 'settings\.max_attempts': expected a whole number"
await 10 at_least alert_suppressed 2
check "later refusals of the same condition are de-duplicated" \
  "repeat repeat" \
  "$(logq "$log" '" ".join(l["reason"] for l in ev("alert_suppressed") if l["kind"] == "policy_reload")')"
check "the alerts thread kept its policy through every refusal" 1 \
  "$(events alerts_reloaded)"

use_percent 72
await 10 received 4
check "a later alert still goes out in the format in force" \
  "memory [edited] memory warning: working set at 72.0 % of limit" \
  "$(got 3 kind summary)"
check_true "messages published across the refusals are settled" \
  wait_for 30 settled "$sent"
check "the limits edit refused with them did not take effect" 0 \
  "$(depth "$AMQP_QUEUE.dlq")"


echo "== 3. fixed, the same reload is taken whole"
use_percent 10
await 10 received 5
cp "$WORK/alerts.shipped" "$alerts_lua"
kill -HUP "$worker"
await 10 at_least policies_reloaded 2
await 10 at_least alerts_reloaded 2
check "the fixed reload is taken" 2 "$(events policies_reloaded)"
publish_logs after 2
check_true "messages after it are settled" wait_for 30 settled "$sent"
check "the limits edit is in force now" 2 "$(depth "$AMQP_QUEUE.dlq")"
use_percent 72
await 10 received 6
check "alerts go out in the shipped format again" \
  "memory warning: working set at 72.0 % of limit" "$(got 5 summary)"

kill -TERM "$worker"
wait "$worker" && rc=0 || rc=$?
trap cleanup EXIT
check "the worker stops with 0" 0 "$rc"
check "no message was lost" "$sent" \
  $(($(stored) + $(depth "$AMQP_QUEUE.dlq")))
check "every alert was sent, none failed or dropped" "6 0 0" \
  "$(logq "$log" '" ".join(str(ev("alerts_stopped")[0][k]) for k in ("sent", "failed", "dropped"))')"
check "the receiver got nothing else" 6 "$(q "$WORK/hook.jsonl" 'len(rs)')"

finish
