#!/usr/bin/env bash
# bench/run.sh --quick on the binaries CTest built: every program of the
# benchmark drains its queue, every run passes its own checks, and the
# summary has a positive rate for each program in each job, and an RSS
# figure in the oversized and idle sections. Fails when bench/ rots: a
# peer that moved, a result line that changed shape, a section that broke.
set -euo pipefail

# shellcheck source=tests/e2e/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

out=$WORK/bench
rc=0
"$REPO/bench/run.sh" --quick --no-install --moonrabbit "$MOONRABBIT" \
  --mrctl "$MRCTL" --out "$out" >"$WORK/run.log" 2>&1 || rc=$?
check "bench/run.sh --quick exits 0" 0 "$rc"
[ "$rc" = 0 ] || tail -n 40 "$WORK/run.log"


# field SECTION SIZE JOB PROGRAM COLUMN: one figure of summary.tsv.
field() {
  awk -F'\t' -v s="$1" -v z="$2" -v j="$3" -v p="$4" -v c="$5" '
    NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
    $col["section"] == s && $col["size"] == z && $col["job"] == j &&
    $col["program"] == p { print $col[c]; exit }
  ' "$out/summary.tsv" 2>/dev/null || true
}


positive() {
  awk -v v="$1" 'BEGIN { exit !(v + 0 > 0) }'
}


for job in noop pg; do
  for program in bare-multiple bare-single moonrabbit python; do
    rate=$(field matrix 1K "$job" "$program" msgs_per_s)
    check_true "matrix $job $program has a positive msg/s ($rate)" \
      positive "$rate"
  done
done

for program in moonrabbit bare-multiple python; do
  for kind in mix base; do
    rss=$(awk -F'\t' -v p="$program" -v k="$kind" \
      '$1 == "oversized" && $2 == k && $6 == p { print $16 }' \
      "$out/runs.tsv" 2>/dev/null | head -n 1)
    check_true "oversized $kind $program has a peak RSS ($rss KiB)" \
      positive "${rss:-0}"
  done
  rss=$(awk -F'\t' -v p="$program" '$1 == "idle" && $6 == p { print $16 }' \
    "$out/runs.tsv" 2>/dev/null | head -n 1)
  check_true "idle $program has an RSS ($rss KiB)" positive "${rss:-0}"
done

failed=$(awk -F'\t' 'NR > 1 && $18 != "ok"' "$out/runs.tsv" 2>/dev/null |
  wc -l)
check "runs that failed their checks" 0 "$failed"
check_true "the printed table has the matrix and targets" \
  grep -q '^## Targets' "$out/table.md"

finish
