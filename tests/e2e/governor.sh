#!/usr/bin/env bash
# The memory governor, driven through a cgroup fixture whose usage this
# test rewrites while the worker runs: pressure pauses intake (the queue
# depth holds), relief resumes it and the queue drains; a critical level
# recycles the worker with exit code 3 and loses nothing.
. "$(dirname "$0")/lib.sh"

export POLICY_DIR=$WORK/policies
policy_copy "$POLICY_DIR" \
  's/^local PROBE_EVERY_SECONDS = .*/local PROBE_EVERY_SECONDS = 1/'

# A cgroup v2 tree with a 1 GiB limit; memory.current is the dial.
root=$WORK/root
cgroup_fixture "$root" 1073741824
export MOONRABBIT_PROC_ROOT=$root/proc MOONRABBIT_SYS_ROOT=$root/sys
LIMIT=1073741824
use_percent() {
  echo $((LIMIT * $1 / 100)) >"$root/sys/fs/cgroup/memory.current.tmp"
  mv "$root/sys/fs/cgroup/memory.current.tmp" \
    "$root/sys/fs/cgroup/memory.current"
}

logged() { grep -q "\"event\":\"$1\"" "$2"; }

# Pause and resume.
for i in $(seq 1 200); do
  echo "{\"conversation_id\":\"g$i\",\"conversation_log\":[{\"role\":\"user\",\"content\":\"hello $i\"}]}"
done >"$WORK/msgs.jsonl"
"$MRCTL" publish-jsonl "$WORK/msgs.jsonl" >/dev/null
use_percent 85
"$MOONRABBIT" --drain >"$WORK/pause.log" 2>&1 &
worker=$!
HELPER_PIDS+=("$worker") # ended by cleanup if a check aborts the test
check_true "pressure pauses intake" wait_for 20 logged intake_paused "$WORK/pause.log"
sleep 3
check "the queue depth holds while paused" 200 "$(depth "$AMQP_QUEUE")"
check "nothing was stored while paused" 0 \
  "$(sql "SELECT count(*) FROM conversation_stats")"
use_percent 40
check_true "relief resumes intake" wait_for 20 logged intake_resumed "$WORK/pause.log"
wait "$worker" && rc=0 || rc=$?
check "the drained worker exits 0" 0 "$rc"
check "every message is stored after resuming" 200 \
  "$(sql "SELECT count(*) FROM conversation_stats")"
check "one pause counted" 1 "$(summary "$WORK/pause.log" pauses)"
check_true "each sample logs RSS, working set, limit, source and level" \
  grep -q '"event":"memory_sample","rss":10485760,"working_set":912680550,"usage":912680550,"limit":1073741824,"source":"cgroup_v2"' \
  "$WORK/pause.log"

# Recycle: critical pressure in the middle of a run. In-flight work is
# finished or handed back, the worker exits 3, and every message is either
# stored or still in the queue.
sql "TRUNCATE conversation_stats"
for i in $(seq 1 20000); do
  echo "{\"conversation_id\":\"r$i\",\"conversation_log\":[{\"role\":\"user\",\"content\":\"hello $i\"}]}"
done >"$WORK/msgs.jsonl"
"$MRCTL" publish-jsonl "$WORK/msgs.jsonl" >/dev/null
use_percent 10
WORKER_CONCURRENCY_PER_WORKER=1 "$MOONRABBIT" >"$WORK/recycle.log" 2>&1 &
worker=$!
HELPER_PIDS+=("$worker") # ended by cleanup if a check aborts the test
some_stored() { [ "$(sql "SELECT count(*) FROM conversation_stats")" -gt 0 ]; }
wait_for 20 some_stored || true
use_percent 99
wait "$worker" && rc=0 || rc=$?
check "critical pressure recycles with exit code 3" 3 "$rc"
stored=$(sql "SELECT count(*) FROM conversation_stats")
sleep 1
left=$(depth "$AMQP_QUEUE")
echo "stored before the recycle: $stored, left in the queue: $left"
check_true "the recycle came in the middle of the run" \
  [ "$stored" -gt 0 -a "$left" -gt 0 ]
check "stored plus queued is every message" 20000 $((stored + left))
check "nothing was dead-lettered" 0 "$(depth "$AMQP_QUEUE.dlq")"

finish
