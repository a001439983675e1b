#!/usr/bin/env bash
# Case 006: JSON nested far deeper than any real message is refused as
# invalid_json with its depth named, without a crash, and the same single
# worker thread handles the next message.
. "$(dirname "$0")/lib.sh"

export WORKER_CONCURRENCY_PER_WORKER=1

repeat() { printf "%${2}s" "" | sed "s/ /$1/g"; }

publish_body() {
  "$MRCTL" publish "$WORK/$1" --message-id "$1" >/dev/null
}

{ repeat '[' 100000; repeat ']' 100000; } >"$WORK/deep-arrays"
{ repeat '{"a":' 50000; printf 1; repeat '}' 50000; } >"$WORK/deep-objects"
{ printf '{"conversation_log":'; repeat '[' 5000; repeat ']' 5000
  printf '}'; } >"$WORK/deep-in-field"
# D: depth 64 in all, the outer object included; the case's bare array is
# wrapped so the body is an object, which every message here must be.
{ printf '{"conversation_id":"deep-ok","conversation_log":[],"x":'
  repeat '[' 62; repeat ']' 62; printf '}'; } >"$WORK/deep-ok"
echo '{"conversation_id":"after","conversation_log":[{"role":"user","content":"hi"}]}' \
  >"$WORK/after"
for b in deep-arrays deep-objects deep-in-field deep-ok after; do
  publish_body "$b"
done

rc=$(run_worker "$WORK/run.log")
log=$WORK/run.log
check "worker exits 0" 0 "$rc"
check "three too-deep bodies are invalid_json" 3 \
  "$(summary "$log" invalid_json)"
check "each names json_too_deep" 3 \
  "$(grep -c '"outcome":"invalid_json","reason":"json_too_deep: nesting over 128' "$log")"
check "depth 64 and the next message are stored" "after deep-ok" \
  "$(sql "SELECT string_agg(conversation_id, ' ' ORDER BY conversation_id)
          FROM conversation_stats")"
check "dead-lettered: the three deep bodies" \
  "deep-arrays deep-in-field deep-objects" "$(dlq_ids | xargs)"

# Encoding a 2000-deep table fails as a value the job can catch.
export JOB_SCRIPT=$REPO/tests/e2e/jobs/encode_deep.lua
publish_body after
rc=$(run_worker "$WORK/encode.log")
check "encode run exits 0" 0 "$rc"
# Fields inside a line follow a Lua table walk, so each is matched alone.
check "the deep encode is a caught error" 1 \
  "$(grep '"event":"encode_deep"' "$WORK/encode.log" | grep '"ok":"false"' |
     grep -c 'excessive nesting')"
check "the job still succeeds" 1 "$(summary "$WORK/encode.log" ok)"

# A script that keeps msg past its job finds no body there afterwards
# (the ASan run of this test would catch a read of freed memory).
export JOB_SCRIPT=$REPO/tests/e2e/jobs/keep.lua
publish_body after
publish_body deep-ok
rc=$(run_worker "$WORK/keep.log")
check "keep run exits 0" 0 "$rc"
check "the kept msg has no body" 1 \
  "$(grep -c '"event":"kept_body".*"seen":"nil"' "$WORK/keep.log")"

finish
