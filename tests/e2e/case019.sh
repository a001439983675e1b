#!/usr/bin/env bash
# Case 019: a backlog of near-limit bodies must not be pulled into memory
# all at once. Prefetch 0 (unbounded) is refused at start-up; with
# prefetch 1 and eight threads a backlog of 1.9 MB bodies drains with peak
# RSS under the case's bound, baseline + threads x (2 x 2 MiB + Lua
# ceiling) + 50 MB. (The case publishes 3,000; 300 keep the test short and
# show the same thing, since prefetch bounds what is held, not the count.)
. "$(dirname "$0")/lib.sh"

rc=$(run_worker "$WORK/a.log" AMQP_PREFETCH=0)
check "config A: prefetch 0 stops start-up" 2 "$rc"
check_true "config A: the refusal names AMQP_PREFETCH" \
  grep -q 'AMQP_PREFETCH="0" is not usable' "$WORK/a.log"

"$MRCTL" gen pad 1990000 >"$WORK/big"
"$MRCTL" publish "$WORK/big" --message-id big --copies 300 >/dev/null
export AMQP_PREFETCH=1 WORKER_CONCURRENCY_PER_WORKER=8
rc=$(run_worker "$WORK/b.log")
check "config B: the backlog drains" 0 "$rc"
check "config B: every body is settled" 300 \
  $(($(summary "$WORK/b.log" ok) + $(summary "$WORK/b.log" field_size_limit)))
peak=$(summary "$WORK/b.log" peak_rss_kb)
bound=$(( (10 + 8 * (4 + 64) + 50) * 1024 ))
echo "config B: peak RSS ${peak} KiB, bound ${bound} KiB"
check_true "config B: peak RSS stays under the case's bound" \
  [ "$peak" -lt "$bound" ]
check_true "config B: and under 64 MiB in fact" [ "$peak" -lt 65536 ]

finish
