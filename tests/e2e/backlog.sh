#!/usr/bin/env bash
# Thread-pool watch: with one thread behind a prefetch of 200, the jobs
# waiting for a thread pass limits.lua's backlog threshold (50), which
# raises one alert; when the queue drains below it, one resolve follows.
# Each memory sample line carries the pool's queued and active counts.
. "$(dirname "$0")/lib.sh"

export JOB_SCRIPT=$REPO/tests/e2e/jobs/slow.lua
export WORKER_CONCURRENCY_PER_WORKER=1 AMQP_PREFETCH=200
export POLICY_DIR=$WORK/policies
policy_copy "$POLICY_DIR" \
  's/^local PROBE_EVERY_MESSAGES = .*/local PROBE_EVERY_MESSAGES = 10/' \
  's/^local PROBE_MIN_INTERVAL_MS = .*/local PROBE_MIN_INTERVAL_MS = 0/'

echo '{"op":"slow"}' >"$WORK/body"
"$MRCTL" publish "$WORK/body" --copies 150 >/dev/null
rc=$(run_worker "$WORK/run.log")
log=$WORK/run.log
check "worker exits 0" 0 "$rc"
check "all 150 done" 150 "$(summary "$log" ok)"
check "the backlog alert is raised once" 1 \
  "$(grep '"event":"alert"' "$log" | grep '"kind":"backlog"' |
     grep -c '"severity":"warning"')"
check "and resolved once" 1 \
  "$(grep '"event":"alert"' "$log" | grep '"kind":"backlog"' |
     grep -c '"severity":"resolved"')"
check_true "samples log the pool's queue" \
  grep -q '"event":"memory_sample".*"jobs_queued":[1-9][0-9]' "$log"

finish
