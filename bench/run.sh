#!/usr/bin/env bash
# Comparative benchmark: fills a queue with the same messages for every
# program, drains it with moonrabbit and with each reference peer in turn
# (interleaved, ABCABC...), and prints one table of msg/s, CPU per message
# and peak RSS, each as a ratio to the bare consumer and to the Python
# worker. See bench/README.md for what each section measures.
#
#   bench/run.sh [--quick] [--runs N] [options]     (--help lists them)
#
# Results go to bench/out/<stamp>/ (runs.tsv raw, summary.tsv and
# summary.json aggregated, table.md as printed). Exit status 0 when every
# run drained what it should have, 1 otherwise.
set -euo pipefail

# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Counts per body size: large enough that the slowest program in a cell
# runs for seconds, small enough that 1 MiB bodies stay in the broker's
# RAM and the whole matrix fits well under an hour on two cores.
NOOP_COUNTS="1K=20000,64K=4000,1M=2000,corpus=20000"
PG_COUNTS="1K=3000,64K=1000,1M=100,corpus=3000"
SIZES="1K 64K 1M corpus"
PREFETCHES="100 1000"
CONCS="1 2 8"
JOBS="noop pg"
RUNS=3
SECTIONS="startup matrix oversized idle"
OVERSIZED="100x64K+20x64M"
# The oversized and idle sections use the settings a deployment would.
OVERSIZED_PREFETCH=100
IDLE_PREFETCH=16
IDLE_CONC=8
IDLE_SECONDS=3
REV=""
INSTALL=1
DRY_RUN=0
OUT=""


usage() {
  cat <<EOF
usage: bench/run.sh [options]
  --quick              tiny matrix for the smoke test (seconds)
  --runs N             repetitions per cell (default $RUNS)
  --sizes "..."        body sizes (default "$SIZES")
  --prefetch "..."     prefetch values (default "$PREFETCHES")
  --concurrency "..."  worker threads (default "$CONCS")
  --jobs "..."         noop and/or pg (default "$JOBS")
  --counts LIST        messages per size, no-op job ($NOOP_COUNTS)
  --pg-counts LIST     messages per size, PostgreSQL job ($PG_COUNTS)
  --sections "..."     any of: $SECTIONS
  --oversized SPEC     oversized mix (default $OVERSIZED)
  --idle-seconds N     how long the idle programs sit (default $IDLE_SECONDS)
  --rev REV            measure a git revision instead of the working tree
  --moonrabbit PATH    use this binary (with --mrctl), do not build
  --mrctl PATH         the mrctl that goes with it
  --no-install         do not run tools/install-deps.sh
  --timeout S          time limit per drain (default $RUN_TIMEOUT)
  --out DIR            result folder (default bench/out/<stamp>)
  --dry-run            print the plan and exit
EOF
}


parse_args() {
  while [ $# -gt 0 ]; do
    case "$1" in
    --quick) quick_defaults ;;
    --runs) RUNS=$2; shift ;;
    --sizes) SIZES=$2; shift ;;
    --prefetch) PREFETCHES=$2; shift ;;
    --concurrency) CONCS=$2; shift ;;
    --jobs) JOBS=$2; shift ;;
    --counts) NOOP_COUNTS=$2; shift ;;
    --pg-counts) PG_COUNTS=$2; shift ;;
    --sections) SECTIONS=$2; shift ;;
    --oversized) OVERSIZED=$2; shift ;;
    --idle-seconds) IDLE_SECONDS=$2; shift ;;
    --rev) REV=$2; shift ;;
    --moonrabbit) MR=$2; shift ;;
    --mrctl) MRCTL=$2; shift ;;
    --no-install) INSTALL=0 ;;
    --timeout) RUN_TIMEOUT=$2; shift ;;
    --out) OUT=$2; shift ;;
    --dry-run) DRY_RUN=1 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
    shift
  done
  [[ $RUNS =~ ^[1-9][0-9]*$ ]] || bench_die "--runs needs a positive count"
  if [ -n "$MR$MRCTL" ] && { [ -z "$MR" ] || [ -z "$MRCTL" ]; }; then
    bench_die "--moonrabbit and --mrctl go together"
  fi
}


# Options given after --quick still win, since parsing is left to right.
quick_defaults() {
  SIZES="1K"
  PREFETCHES="100"
  CONCS="2"
  JOBS="noop pg"
  NOOP_COUNTS="1K=300"
  PG_COUNTS="1K=100"
  RUNS=1
  SECTIONS="matrix oversized idle"
  OVERSIZED="10x64K+2x4M"
  IDLE_SECONDS=1
  RUN_TIMEOUT=120
}


# Prints the count for SIZE from the LIST "1K=20000,64K=4000,...".
count_for() {
  local list=$1 size=$2 item

  for item in ${list//,/ }; do
    if [ "${item%%=*}" = "$size" ]; then
      echo "${item#*=}"
      return 0
    fi
  done
  bench_die "no count for size $size in \"$list\""
}


# ---- the plan ---------------------------------------------------------------

# Each plan line is one run: section size prefetch conc job program rep count.
# Programs without threads or a job get "-" there. Within a cell the
# programs alternate run by run, so drift in the broker or a neighbour's
# load lands on all of them rather than on whichever ran last.
plan_startup() {
  local rep job conc program

  for ((rep = 1; rep <= RUNS; rep++)); do
    echo "startup 1K 100 - - bare-multiple $rep 1"
    echo "startup 1K 100 - - bare-single $rep 1"
    for job in $JOBS; do
      for conc in $CONCS; do
        for program in moonrabbit python; do
          echo "startup 1K 100 $conc $job $program $rep 1"
        done
      done
    done
  done
}


plan_matrix() {
  local size job prefetch count rep conc program

  for size in $SIZES; do
    for job in $JOBS; do
      if [ "$job" = noop ]; then
        count=$(count_for "$NOOP_COUNTS" "$size")
      else
        count=$(count_for "$PG_COUNTS" "$size")
      fi
      for prefetch in $PREFETCHES; do
        for ((rep = 1; rep <= RUNS; rep++)); do
          echo "matrix $size $prefetch - $job bare-multiple $rep $count"
          echo "matrix $size $prefetch - $job bare-single $rep $count"
          for conc in $CONCS; do
            for program in moonrabbit python; do
              echo "matrix $size $prefetch $conc $job $program $rep $count"
            done
          done
        done
      done
    done
  done
}


# The mix and the same run without its oversized bodies, for moonrabbit
# (default job, PostgreSQL), the bare consumer and the Python worker.
plan_oversized() {
  local rep program kind count settings

  for ((rep = 1; rep <= RUNS; rep++)); do
    for program in moonrabbit bare-multiple python; do
      settings="$OVERSIZED_PREFETCH $IDLE_CONC pg"
      [ "$program" != bare-multiple ] || settings="$OVERSIZED_PREFETCH - -"
      for kind in mix base; do
        count=$(oversized_small_count)
        [ "$kind" = base ] || count=$(oversized_total)
        echo "oversized $kind $settings $program $rep $count"
      done
    done
  done
}


plan_idle() {
  local rep program

  for ((rep = 1; rep <= RUNS; rep++)); do
    for program in moonrabbit python bare-multiple; do
      if [ "$program" = bare-multiple ]; then
        echo "idle - $IDLE_PREFETCH - - $program $rep 0"
      else
        echo "idle - $IDLE_PREFETCH $IDLE_CONC pg $program $rep 0"
      fi
    done
  done
}


make_plan() {
  local section

  for section in $SECTIONS; do
    case "$section" in
    startup | matrix | oversized | idle) "plan_$section" ;;
    *) bench_die "unknown section $section" ;;
    esac
  done
}


# ---- the oversized mix ------------------------------------------------------

# OVERSIZED is "<n>x<size>+<m>x<size>": n ordinary bodies and m oversized.
oversized_small_count() { local s=${OVERSIZED%%+*}; echo "${s%%x*}"; }
oversized_small_size() { local s=${OVERSIZED%%+*}; echo "${s#*x}"; }
oversized_big_count() { local s=${OVERSIZED#*+}; echo "${s%%x*}"; }
oversized_big_size() { local s=${OVERSIZED#*+}; echo "${s#*x}"; }
oversized_total() {
  echo $(($(oversized_small_count) + $(oversized_big_count)))
}


# Publishes the mix with the oversized bodies spread evenly among the
# ordinary ones, as publish.py --spec does, so each program meets them
# while it already holds a full prefetch of ordinary work.
fill_mix() {
  local small big per first=1 i depth
  local nsmall nbig

  nsmall=$(oversized_small_count)
  nbig=$(oversized_big_count)
  small=$(oversized_small_size)
  big=$(bench_template "$(oversized_big_size)")
  per=$((nsmall / nbig))
  for ((i = 0; i < nbig; i++)); do
    bench_bodies "$small" "$per" "$first" |
      "$MRCTL" publish-jsonl - --queue "$QUEUE" >/dev/null
    "$MRCTL" publish "$big" --queue "$QUEUE" >/dev/null
    first=$((first + per))
  done
  if ((first <= nsmall)); then
    bench_bodies "$small" $((nsmall - first + 1)) "$first" |
      "$MRCTL" publish-jsonl - --queue "$QUEUE" >/dev/null
  fi
  depth=$(bench_depth "$QUEUE")
  [ "$depth" = $((nsmall + nbig)) ] && return 0
  bench_say "queue holds $depth messages after publishing the mix"
  return 1
}


# Fills the queue for a run of SECTION with SIZE ("mix" and "base" are the
# oversized section's two queues).
fill_for() {
  local section=$1 size=$2 count=$3

  case "$section:$size" in
  oversized:mix) fill_mix ;;
  oversized:base) bench_fill "$(oversized_small_size)" "$count" ;;
  *) bench_fill "$size" "$count" ;;
  esac
}


# ---- one run ----------------------------------------------------------------

RUNS_TSV=""
RUN_INDEX=0
RUN_TOTAL=0
FAILED=0

tsv_header() {
  printf '%s\t' section size prefetch conc job program rep count msgs \
    ok secs msgs_per_s wall_s user_s sys_s peak_rss_kb rc check \
    load1
  printf 'note\n'
}


# Prints what went wrong with a finished drain, or nothing when all is
# well: the exit status, the count the program reports, what moonrabbit
# says it stored, what is left in the queue, and the rows in PostgreSQL.
check_run() {
  local section=$1 size=$2 job=$3 program=$4 count=$5 rc=$6 msgs=$7
  local ok=$8 want_ok=$count want_rows depth rows

  if [ "$section:$size" = oversized:mix ]; then
    want_ok=$(oversized_small_count)
    size=$(oversized_small_size)
  fi
  [ "$rc" = 0 ] || { echo "exit status $rc"; return; }
  [ "${msgs%.*}" = "$count" ] || { echo "drained $msgs of $count"; return; }
  if [ "$program" = moonrabbit ] && [ "$ok" != "$want_ok" ]; then
    echo "ok $ok, expected $want_ok"
    return
  fi
  depth=$(bench_depth "$QUEUE")
  [ "$depth" = 0 ] || { echo "$depth left in the queue"; return; }
  [ "$job" = pg ] || return 0
  case "$program" in
  moonrabbit) want_rows=$(bench_distinct_ids "$size" "$want_ok") ;;
  python) want_rows=$want_ok ;;
  *) return 0 ;;
  esac
  rows=$(bench_rows "$program")
  [ "$rows" = "$want_rows" ] || echo "$rows rows, expected $want_rows"
}


# Appends one line to runs.tsv and one progress line to the terminal.
record() {
  local fields=$1 msgs=$2 ok=$3 secs=$4 rate=$5 times=$6 rc=$7
  local problem=$8 note=$9 check=ok load

  [ -z "$problem" ] || { check=FAIL; FAILED=$((FAILED + 1)); }
  load=$(cut -d' ' -f1 /proc/loadavg)
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
    "${fields// /$'\t'}" "${msgs:-0}" "${ok:-0}" "${secs:-0}" \
    "${rate:-0}" "${times// /$'\t'}" "$rc" "$check" "$load" \
    "${problem:-$note}" >>"$RUNS_TSV"
  printf '[%d/%d] %-38s %9s msg/s  cpu %s+%s s  rss %s KiB  %s %s\n' \
    "$RUN_INDEX" "$RUN_TOTAL" "$fields" "${rate:-0}" \
    "$(cut -d' ' -f2 <<<"$times")" "$(cut -d' ' -f3 <<<"$times")" \
    "$(cut -d' ' -f4 <<<"$times")" "$check" "$problem" >&2
}


# Fills, drains with one program under bench/meter.py, checks, records.
run_drain() {
  local section=$1 size=$2 prefetch=$3 conc=$4 job=$5 program=$6 rep=$7
  local count=$8 log tfile rc=0 problem="" msgs ok secs rate

  log="$OUT/logs/$section-$size-p$prefetch-c$conc-$job-$program-$rep.log"
  tfile="$log.time"
  bench_purge
  bench_reset_db
  if ! fill_for "$section" "$size" "$count"; then
    record "$*" 0 0 0 0 "0 0 0 0" 1 "fill failed" ""
    bench_purge
    return
  fi
  bench_command "$program" "$job" "$prefetch" "${conc/-/1}" "$count"
  bench_timed "$log" "$tfile" || rc=$?

  msgs=$(bench_field "$log" msgs)
  [ "$program" != moonrabbit ] || msgs=$(bench_field "$log" messages)
  ok=$(bench_field "$log" ok)
  secs=$(bench_field "$log" secs)
  [ "$program" != moonrabbit ] || secs=$(bench_field "$log" seconds)
  rate=$(bench_field "$log" msgs_per_s)
  problem=$(check_run "$section" "$size" "$job" "$program" "$count" \
    "$rc" "${msgs:-0}" "${ok:-0}")
  record "$*" "$msgs" "${ok:-$msgs}" "$secs" "$rate" "$(cat "$tfile")" \
    "$rc" "$problem" ""
  # A moonrabbit mix run leaves the oversized bodies in the dead-letter
  # queue; gigabytes there would slow every later run.
  bench_purge
}


# Starts one program on an empty queue, lets it sit, and records its
# resident set (VmRSS) and high-water mark (VmHWM) from /proc.
run_idle() {
  local prefetch=$3 conc=$4 job=$5 program=$6 pid rss hwm
  local log="$OUT/logs/idle-$program-$7.log"

  bench_purge
  bench_command "$program" "${job/-/pg}" "$prefetch" "${conc/-/1}" 1000000
  # Without --drain moonrabbit waits for work instead of leaving.
  [ "$program" != moonrabbit ] || unset 'CMD[${#CMD[@]}-1]'
  "${CMD[@]}" >"$log" 2>&1 &
  pid=$!
  BG_PIDS=("$pid")
  sleep "$IDLE_SECONDS"
  rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
  hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  BG_PIDS=()
  if [ -z "$rss" ]; then
    record "$*" 0 0 0 0 "0 0 0 0" 1 "exited before the sample" ""
    return
  fi
  record "$*" 0 0 0 0 "$IDLE_SECONDS 0 0 $rss" 0 "" "VmHWM=$hwm"
}


# The plan comes in on descriptor 3, so no program of a run can read
# (and swallow) the rest of it from its standard input.
run_plan() {
  local line

  while read -r line <&3; do
    RUN_INDEX=$((RUN_INDEX + 1))
    # shellcheck disable=SC2086 # the plan line is the argument list
    case "$line" in
    idle\ *) run_idle $line ;;
    *) run_drain $line ;;
    esac
  done 3<"$OUT/plan.txt"
}


# ---- set-up -----------------------------------------------------------------

# Names the source measured: a revision, or the working tree's commit and
# whether core/ differs from it.
describe_source() {
  if [ -n "$REV" ]; then
    echo "revision $REV ($(git -C "$REPO" rev-parse --short "$REV"))"
  elif git -C "$REPO" status --porcelain -- core | grep -q .; then
    echo "working tree at $(git -C "$REPO" rev-parse --short HEAD)," \
      "with uncommitted changes in core/"
  else
    echo "working tree at $(git -C "$REPO" rev-parse --short HEAD)"
  fi
}


cpu_model() {
  grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'
}


memory_total() {
  awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo
}


# What was measured and where, for RESULTS.md.
write_meta() {
  local rabbit

  rabbit=$("$REPO/tools/services.sh" ctl version 2>/dev/null || echo '?')
  {
    echo "date_utc: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "source: $(describe_source)"
    echo "nproc: $(nproc)"
    echo "cpu: $(cpu_model)"
    echo "kernel: $(uname -r)"
    echo "memory: $(memory_total)"
    echo "os: Debian $(cat /etc/debian_version 2>/dev/null || echo '?')"
    echo "postgresql: $(psql "$BENCH_DB_URL" -qAtX -c 'SHOW server_version')"
    echo "rabbitmq: $rabbit"
    echo "runs: $RUNS; sizes: $SIZES; prefetch: $PREFETCHES;" \
      "concurrency: $CONCS; jobs: $JOBS"
    echo "counts: noop $NOOP_COUNTS; pg $PG_COUNTS; oversized $OVERSIZED"
  } >"$OUT/meta.txt"
}


main() {
  local t0=$SECONDS

  parse_args "$@"
  OUT=${OUT:-$BENCH/out/$(date -u +%Y%m%dT%H%M%SZ)-$$}
  mkdir -p "$OUT/logs"
  make_plan >"$OUT/plan.txt"
  RUN_TOTAL=$(wc -l <"$OUT/plan.txt")
  if [ "$DRY_RUN" = 1 ]; then
    cat "$OUT/plan.txt"
    bench_say "$RUN_TOTAL runs planned"
    rm -rf "$OUT"
    return 0
  fi

  [ "$INSTALL" = 0 ] || "$REPO/tools/install-deps.sh" bench
  [ -n "$MR" ] || bench_build "$REV"
  bench_build_limit
  bench_services
  bench_check_urls
  # Exported as well as passed: mrctl falls back to AMQP_QUEUE, and its
  # own default is a queue other people use.
  export AMQP_QUEUE="bench.$$"
  QUEUE=$AMQP_QUEUE
  BODIES=$BENCH/out/tmp-$$
  mkdir -p "$BODIES"
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
  bench_db_create
  bench_declare
  write_meta

  RUNS_TSV=$OUT/runs.tsv
  tsv_header >"$RUNS_TSV"
  bench_say "$RUN_TOTAL runs, results in $OUT"
  run_plan
  if [ "$(dirname "$OUT")" = "$BENCH/out" ]; then
    ln -sfn "$(basename "$OUT")" "$BENCH/out/latest"
  fi

  "$PY" "$BENCH/report.py" summary "$OUT" | tee "$OUT/table.md"
  bench_say "wall time $((SECONDS - t0)) s; $FAILED failed runs"
  [ "$FAILED" = 0 ]
}


main "$@"
