#!/usr/bin/env bash
# Case 001: a body over 2 MiB is refused from its content header, before
# it is buffered. Eight 100 MiB bodies at concurrency 8 must raise the
# worker's peak RSS by less than 5 MiB over the same run without them.
. "$(dirname "$0")/lib.sh"

export JOB_SCRIPT=$REPO/tests/e2e/jobs/noop.lua
export WORKER_CONCURRENCY_PER_WORKER=8

publish_small() {
  # Same length, another key: A tests the body gate, not the field gate.
  "$MRCTL" gen pad 2097152 | sed 's/conversation_log/conversation_pad/' \
    >"$WORK/a"
  "$MRCTL" publish "$WORK/a" --message-id "$1-a" >/dev/null
  "$MRCTL" gen pad 1000 >"$WORK/n"
  "$MRCTL" publish "$WORK/n" --message-id "$1-normal" --copies 20 \
    >/dev/null
}

# Baseline: only what is accepted.
publish_small base
rc=$(run_worker "$WORK/base.log")
check "baseline run exits 0" 0 "$rc"
check "baseline: all 21 ok" 21 "$(summary "$WORK/base.log" ok)"

# The same plus B (one byte over) and eight copies of C (100 MiB).
publish_small big
"$MRCTL" gen pad 2097153 >"$WORK/b"
"$MRCTL" publish "$WORK/b" --message-id big-b >/dev/null
"$MRCTL" gen pad 104857600 >"$WORK/c"
"$MRCTL" publish "$WORK/c" --message-id big-c --copies 8 >/dev/null
rm -f "$WORK/c"
"$MRCTL" publish "$WORK/n" --message-id after >/dev/null
rc=$(run_worker "$WORK/big.log")
log=$WORK/big.log
check "run with oversized bodies exits 0" 0 "$rc"
check "exactly 2 MiB is accepted" 1 \
  "$(grep -c '"event":"job_ran".*"id":"big-a"' "$log")"
check "B and the eight C are refused as size_limit" 9 \
  "$(summary "$log" size_limit)"
check "the job never ran for B or C" 0 \
  "$(grep -c '"event":"job_ran".*"id":"big-[bc]' "$log" || true)"
check "the reason names the declared size" 8 \
  "$(grep -c '"message_id":"big-c.*body_size=104857600' "$log")"
check "the message after them is processed" 1 \
  "$(grep -c '"event":"job_ran".*"id":"after"' "$log")"
check "B and C are in the dead-letter queue" 9 "$(dlq_ids | wc -l)"

base=$(summary "$WORK/base.log" peak_rss_kb)
big=$(summary "$log" peak_rss_kb)
echo "peak RSS: baseline ${base} KiB, with 8 x 100 MiB ${big} KiB"
check_true "oversized bodies add under 5 MiB of peak RSS" \
  [ $((big - base)) -lt 5120 ]

finish
