#!/usr/bin/env bash
# Where moonrabbit's instructions go, per message: drains N messages under
# callgrind for each profile and prints the top functions by inclusive and
# by self cost, per message.
#
#   bench/profile.sh [--messages N] [--rev REV] [--moonrabbit P --mrctl P]
#
# Profiles: no-op job on 2,000 1 KiB bodies and on 200 1 MiB bodies, the
# default job on 2,000 corpus conversations.
#
# Each profile runs twice, with N messages and with one, and the figures
# are the difference divided by N - 1, so start-up (Lua states, policies,
# database connections) and teardown stay out of the per-message cost.
# Callgrind runs every thread on one core and counts instructions, not
# time: the database's commit wait, which bounds the default job's rate,
# does not show here, nor does the kernel. So a last part counts the
# system calls of the no-op path per message with strace -f -c, at one
# thread and at eight. Output: bench/out/profile-*/.
set -euo pipefail

# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MESSAGES=""
REV=""
INSTALL=1
PREFETCH=100
CONC=2
TOP=20
STRACE_MESSAGES=5000
STRACE_PREFETCH=1000
# name, body size, job, messages (--messages overrides); 1 MiB bodies are
# fewer because callgrind scans each one at about a fiftieth of full speed.
PROFILES=("noop-1K 1K noop 2000" "pg-corpus corpus pg 2000"
  "noop-1M 1M noop 200")


parse_args() {
  while [ $# -gt 0 ]; do
    case "$1" in
    --messages) MESSAGES=$2; shift ;;
    --rev) REV=$2; shift ;;
    --moonrabbit) MR=$2; shift ;;
    --mrctl) MRCTL=$2; shift ;;
    --no-install) INSTALL=0 ;;
    --top) TOP=$2; shift ;;
    *) echo "usage: bench/profile.sh [--messages N] [--rev REV]" \
      "[--moonrabbit PATH --mrctl PATH] [--no-install] [--top N]" >&2
      exit 2 ;;
    esac
    shift
  done
}


# Drains COUNT messages of SIZE with JOB under callgrind and writes
# callgrind_annotate's full listing, inclusive then self, to OUT/TAG.txt.
callgrind_run() {
  local tag=$1 size=$2 job=$3 count=$4 rc=0

  bench_purge
  bench_reset_db
  bench_fill "$size" "$count"
  MR_WRAP=(valgrind --tool=callgrind --callgrind-out-file="$OUT/$tag.out")
  bench_command moonrabbit "$job" "$PREFETCH" "$CONC" "$count"
  "${CMD[@]}" >"$OUT/$tag.log" 2>"$OUT/$tag.valgrind.log" || rc=$?
  [ "$rc" = 0 ] ||
    bench_die "moonrabbit under valgrind exited $rc (see $OUT/$tag.valgrind.log)"
  [ "$(bench_field "$OUT/$tag.log" ok)" = "$count" ] ||
    bench_die "$tag: moonrabbit did not store all $count messages"
  {
    callgrind_annotate --inclusive=yes --threshold=100 --auto=no \
      "$OUT/$tag.out"
    echo "==== SELF ===="
    callgrind_annotate --threshold=100 --auto=no "$OUT/$tag.out"
  } >"$OUT/$tag.txt"
}


# Profiles NAME twice, with COUNT messages and with one; the difference is
# what the extra messages cost, without start-up and teardown.
profile_one() {
  local name=$1 size=$2 job=$3 count=${MESSAGES:-$4}

  bench_say "profiling $name: $count messages, then 1, under callgrind"
  callgrind_run "$name.n" "$size" "$job" "$count"
  callgrind_run "$name.1" "$size" "$job" 1
  {
    echo "## $name: $size bodies, job $job, prefetch $PREFETCH," \
      "$CONC threads"
    echo
    "$PY" "$BENCH/report.py" callgrind "$count" "$OUT/$name.n.txt" \
      "$OUT/$name.1.txt" "$TOP"
  } >"$OUT/$name.md"
  cat "$OUT/$name.md"
}


# Drains COUNT 1 KiB messages with the no-op job at CONC threads under
# strace -f -c, which counts every thread's system calls, into OUT/TAG.
strace_run() {
  local tag=$1 conc=$2 count=$3 rc=0

  bench_purge
  bench_fill 1K "$count"
  MR_WRAP=(strace -f -c -o "$OUT/$tag")
  bench_command moonrabbit noop "$STRACE_PREFETCH" "$conc" "$count"
  "${CMD[@]}" >"$OUT/$tag.log" 2>&1 || rc=$?
  [ "$rc" = 0 ] || bench_die "moonrabbit under strace exited $rc"
}


# System calls per message of the no-op path, at one thread and at eight:
# where its sys time goes, which callgrind cannot see. The difference of a
# run of STRACE_MESSAGES and a run of one, as for callgrind.
profile_syscalls() {
  local conc files=()

  bench_say "counting system calls: $STRACE_MESSAGES messages, then 1"
  for conc in 1 8; do
    strace_run "strace.c$conc.n" "$conc" "$STRACE_MESSAGES"
    strace_run "strace.c$conc.1" "$conc" 1
    files+=("$conc" "$OUT/strace.c$conc.n" "$OUT/strace.c$conc.1")
  done
  {
    echo "## System calls per message: no-op job, 1 KiB bodies," \
      "prefetch $STRACE_PREFETCH"
    echo
    "$PY" "$BENCH/report.py" strace "$STRACE_MESSAGES" "${files[@]}"
  } >"$OUT/syscalls.md"
  cat "$OUT/syscalls.md"
}


# Relinks moonrabbit against Lua's static archive, exporting its symbols
# for lua-cjson, because Debian's liblua5.4.so is stripped: callgrind
# would name the interpreter's internals by address only. The link line is
# CMake's own, with the archive in place of the shared library, so the
# objects and the other libraries are exactly those of the build. When
# that fails the profile runs on the build's binary, Lua unnamed.
link_named_lua() {
  local dir link cmd
  dir=$(dirname "$MR")
  link=$dir/CMakeFiles/moonrabbit.dir/link.txt

  if [ ! -f "$link" ] || ! grep -q 'liblua5\.4\.so' "$link"; then
    bench_say "no link line for moonrabbit; Lua internals stay unnamed"
    return 0
  fi
  cmd=$(sed -e 's#liblua5\.4\.so#liblua5.4.a#' \
    -e 's#-o moonrabbit #-o moonrabbit-lua-static #' "$link")
  if (cd "$dir" && sh -c "$cmd -ldl -Wl,-E"); then
    MR=$dir/moonrabbit-lua-static
  else
    bench_say "relinking with liblua5.4.a failed; Lua internals stay unnamed"
  fi
}


main() {
  local p

  parse_args "$@"
  [ "$INSTALL" = 0 ] || "$REPO/tools/install-deps.sh" bench
  if [ -z "$MR" ]; then
    bench_build "$REV"
    link_named_lua
  fi
  bench_services
  bench_check_urls
  export AMQP_QUEUE="bench.profile.$$"
  QUEUE=$AMQP_QUEUE
  OUT=$BENCH/out/profile-$(date -u +%Y%m%dT%H%M%SZ)-$$
  BODIES=$OUT/bodies
  mkdir -p "$BODIES"
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
  bench_db_create
  bench_declare

  for p in "${PROFILES[@]}"; do
    # shellcheck disable=SC2086 # each entry is an argument list
    profile_one $p
  done
  profile_syscalls
  bench_say "callgrind files and annotations in $OUT"
}


main "$@"
