# shellcheck shell=bash
# Helpers shared by bench/run.sh and bench/profile.sh: where things are,
# how a queue is filled, how each program drains it, and how one run is
# checked and recorded. Sourced, never run; the caller sets -euo pipefail.
#
# Every address used here is loopback: bench_check_urls refuses any other
# host before a single connection is made.

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH/.." && pwd)
PEERS=${BENCH_PEERS:-$REPO/../shared/bench}
CORPUS=${BENCH_CORPUS:-$REPO/../shared/corpus/conversations.jsonl}
# Debian's interpreter: another python3 earlier on the PATH may not see
# python3-pika and friends.
PY=/usr/bin/python3

# Set by the set-up functions below (MR and MRCTL also by the callers).
MR=""
MRCTL=""
LIMIT=""
SRC=$REPO
QUEUE=""
BENCH_DB=""
BENCH_DB_URL=""
ADMIN_DB_URL=""
AMQP_HOST=""
AMQP_PORT=""
AMQP_USER=""
AMQP_PASS=""
RUN_TIMEOUT=${RUN_TIMEOUT:-600}
BODIES=""
# A command moonrabbit runs under (the profiler), after env has set its
# variables, so the tool sees moonrabbit itself rather than env.
MR_WRAP=()
# Background programs this script started (idle section), so cleanup can
# end exactly those and nothing else.
BG_PIDS=()

bench_say() { printf 'bench: %s\n' "$*" >&2; }
bench_die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }


# ---- setup ------------------------------------------------------------------

# Splits AMQP_URL into the parts the peers take as flags, and refuses any
# broker or database that is not on this machine's loopback.
bench_check_urls() {
  local rest hostport dbhost

  rest=${AMQP_URL#amqp://}
  [ "$rest" != "$AMQP_URL" ] || bench_die "AMQP_URL must start with amqp://"
  AMQP_USER=${rest%%:*}
  rest=${rest#*:}
  AMQP_PASS=${rest%%@*}
  hostport=${rest#*@}
  hostport=${hostport%%/*}
  AMQP_HOST=${hostport%%:*}
  AMQP_PORT=${hostport##*:}
  [ "$AMQP_HOST" = 127.0.0.1 ] ||
    bench_die "AMQP_URL host is $AMQP_HOST; the bench only talks to 127.0.0.1"
  # limit_consumer.c logs in as guest/guest and cannot be told otherwise.
  [ "$AMQP_USER:$AMQP_PASS" = guest:guest ] ||
    bench_die "the bare consumer needs the broker's guest/guest login"

  dbhost=${DATABASE_URL#*@}
  dbhost=${dbhost%%[:/]*}
  [ "$dbhost" = 127.0.0.1 ] ||
    bench_die "DATABASE_URL host is $dbhost; the bench only talks to 127.0.0.1"
}


# Makes a database of our own beside the one in DATABASE_URL, so the rows
# we write and truncate never meet another test's. The Python peer's table
# comes from the peers' schema.sql; moonrabbit's default job creates its
# own table at start-up.
bench_db_create() {
  ADMIN_DB_URL=$DATABASE_URL
  BENCH_DB="bench_$$"
  BENCH_DB_URL="${DATABASE_URL%/*}/$BENCH_DB"
  psql "$ADMIN_DB_URL" -qAtX -v ON_ERROR_STOP=1 \
    -c "CREATE DATABASE $BENCH_DB" >/dev/null
  psql "$BENCH_DB_URL" -qAtX -v ON_ERROR_STOP=1 \
    -f "$PEERS/schema.sql" >/dev/null
}


bench_db_drop() {
  [ -n "$BENCH_DB" ] || return 0
  psql "$ADMIN_DB_URL" -qAtX -c "DROP DATABASE IF EXISTS $BENCH_DB" \
    >/dev/null 2>&1 || true
}


# Builds moonrabbit and mrctl (Release, with symbols for the profiler) from
# the working tree, or from git revision REV exported into bench/out, and
# sets MR, MRCTL and SRC (where the policies and the default job come from).
bench_build() {
  local rev=$1 dir=$BENCH/out/build sha

  if [ -n "$rev" ]; then
    sha=$(git -C "$REPO" rev-parse --short=12 "$rev^{commit}")
    SRC=$BENCH/out/src-$sha
    dir=$BENCH/out/build-$sha
    if [ ! -d "$SRC" ]; then
      mkdir -p "$SRC"
      git -C "$REPO" archive "$sha" | tar -x -C "$SRC"
    fi
  fi
  bench_say "building $SRC (Release) into $dir"
  cmake -S "$SRC" -B "$dir" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_C_FLAGS=-g -DBUILD_TESTING=OFF >/dev/null
  cmake --build "$dir" -j "$(nproc)" >/dev/null
  MR=$dir/moonrabbit
  MRCTL=$dir/tools/mrctl
}


# Starts the project's private services unless they run already (or the
# URLs point elsewhere); they are left running either way.
bench_services() {
  "$REPO/tools/services.sh" start >/dev/null
  eval "$("$REPO/tools/services.sh" env)"
  export AMQP_URL DATABASE_URL
}


# Builds the bare consumer from the peers' folder into bench/out, once per
# change of its source; it is never copied into the project.
bench_build_limit() {
  LIMIT=$BENCH/out/bin/limit_consumer
  mkdir -p "$BENCH/out/bin"
  if [ ! -x "$LIMIT" ] || [ "$PEERS/limit_consumer.c" -nt "$LIMIT" ]; then
    gcc -O2 -o "$LIMIT" "$PEERS/limit_consumer.c" -lrabbitmq
  fi
}


# Ends the background programs we started, by pid, then removes our queue,
# database and generated bodies. Safe to call twice.
bench_cleanup() {
  local pid

  for pid in "${BG_PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  BG_PIDS=()
  if [ -n "$QUEUE" ] && [ -n "$MRCTL" ]; then
    "$MRCTL" delete "$QUEUE" "$QUEUE.dlq" >/dev/null 2>&1 || true
  fi
  bench_db_drop
  [ -z "$BODIES" ] || rm -rf "$BODIES"
}


# ---- bodies -----------------------------------------------------------------

# Prints the path of a body template of exactly SIZE bytes (1K, 64K, 1M,
# 64M), made once by mrctl gen. Its conversation id is a fixed-width
# placeholder, so a per-message id can replace it without changing the size.
bench_template() {
  local file="$BODIES/$1.json"

  [ -s "$file" ] || "$MRCTL" gen log "$1" --id c0000000000 >"$file"
  echo "$file"
}


# Prints COUNT JSON lines for SIZE on stdout, starting the ids at FIRST
# (default 1). Each gen body gets its own conversation id, because the
# default job upserts one row per id and a shared id would turn the run
# into a test of one row lock. "corpus" cycles through the corpus file.
bench_bodies() {
  local size=$1 count=$2 first=${3:-1}

  if [ "$size" = corpus ]; then
    awk -v n="$count" -v f="$CORPUS" 'BEGIN {
      while (c < n) {
        got = 0
        while (c < n && (getline line < f) > 0)
          if (line != "") { print line; c++; got++ }
        close(f)
        if (!got) exit 1
      }
    }'
    return
  fi
  awk -v n="$count" -v first="$first" '{
    for (i = first; i < first + n; i++) {
      s = $0
      sub(/c0000000000/, sprintf("c%010d", i), s)
      print s
    }
  }' "$(bench_template "$size")"
}


# How many distinct conversation ids COUNT messages of SIZE carry, which is
# how many rows the default job leaves behind.
bench_distinct_ids() {
  local lines

  if [ "$1" = corpus ]; then
    lines=$(grep -c . "$CORPUS")
    echo $(($2 < lines ? $2 : lines))
  else
    echo "$2"
  fi
}


# ---- queue and database state ----------------------------------------------

bench_depth() {
  "$MRCTL" depth "$1" | awk '{print $2}'
}


# Publishes COUNT bodies of SIZE (with confirms, so they are in the queue
# when mrctl returns) and checks the depth. Returns 1 on a short queue.
bench_fill() {
  local size=$1 count=$2 depth

  bench_bodies "$size" "$count" |
    "$MRCTL" publish-jsonl - --queue "$QUEUE" >/dev/null
  depth=$(bench_depth "$QUEUE")
  [ "$depth" = "$count" ] && return 0
  bench_say "queue holds $depth messages after publishing $count"
  return 1
}


# mrctl declares the queues (with moonrabbit's dead-letter arguments) only
# when it publishes, so one throwaway message creates them; the purge that
# starts every run removes it.
bench_declare() {
  echo '{}' | "$MRCTL" publish - --queue "$QUEUE" >/dev/null
}


# Empties the work and dead-letter queues, so a failed run leaves nothing
# for the next one to drain.
bench_purge() {
  "$MRCTL" purge "$QUEUE" "$QUEUE.dlq" >/dev/null
}


# Both result tables start empty each run, so every run does the same
# inserts rather than some of them updating rows of the previous one.
bench_reset_db() {
  psql "$BENCH_DB_URL" -qAtX -v ON_ERROR_STOP=1 >/dev/null <<'EOF'
TRUNCATE analysis_results;
DO $$ BEGIN
  IF to_regclass('conversation_stats') IS NOT NULL THEN
    TRUNCATE conversation_stats;
  END IF;
END $$;
EOF
}


# Rows the job of PROGRAM left: the default job's table for moonrabbit,
# the peers' table for the Python worker.
bench_rows() {
  local table=analysis_results

  [ "$1" = moonrabbit ] && table=conversation_stats
  psql "$BENCH_DB_URL" -qAtX -c "SELECT count(*) FROM $table"
}


# ---- programs ---------------------------------------------------------------

bench_job_script() {
  if [ "$1" = noop ]; then
    echo "$REPO/scripts/noop.lua"
  else
    echo "$SRC/scripts/analyze_conversation.lua"
  fi
}


# Sets CMD to the command line that drains COUNT messages with PROGRAM
# (moonrabbit, bare-multiple, bare-single, python) running JOB (noop or
# pg) at PREFETCH and CONC threads. Only moonrabbit and the Python worker
# have threads or a job; the bare consumer only acks. moonrabbit's metrics
# listener is off: its fixed default port may belong to another worker on
# this machine, and an idle listener costs nothing the bench measures. Its
# state (the ledger of running jobs) goes beside the generated bodies, so
# it is removed with them rather than left in /var/tmp.
bench_command() {
  local program=$1 job=$2 prefetch=$3 conc=$4 count=$5

  case "$program" in
  moonrabbit)
    CMD=(env AMQP_URL="$AMQP_URL" AMQP_QUEUE="$QUEUE"
      AMQP_PREFETCH="$prefetch"
      WORKER_CONCURRENCY_PER_WORKER="$conc"
      JOB_SCRIPT="$(bench_job_script "$job")"
      POLICY_DIR="$SRC/policies" DATABASE_URL="$BENCH_DB_URL"
      METRICS_ADDR=off STATE_DIR="$BODIES/state"
      "${MR_WRAP[@]}" "$MR" --drain) ;;
  bare-multiple | bare-single)
    CMD=("$LIMIT" -q "$QUEUE" -n "$count" -P "$prefetch"
      -a "${program#bare-}" -H "$AMQP_HOST" -p "$AMQP_PORT") ;;
  python)
    CMD=("$PY" "$PEERS/seed_worker.py" --queue "$QUEUE"
      --host "$AMQP_HOST" --port "$AMQP_PORT"
      --user "$AMQP_USER" --password "$AMQP_PASS"
      --prefetch "$prefetch" --concurrency "$conc"
      --dsn "$BENCH_DB_URL" --exit-after "$count")
    [ "$job" = pg ] || CMD+=(--no-db) ;;
  *) bench_die "unknown program $program" ;;
  esac
}


# A numeric field of the program's own result line in LOG: moonrabbit's
# "summary" event or the peers' RESULT line. Prints nothing when absent.
bench_field() {
  local log=$1 field=$2

  grep -E '"event":"summary"|^RESULT ' "$log" | tail -n 1 |
    grep -oE "\"$field\": ?[0-9.]+" | grep -oE '[0-9.]+$' || true
}


# Runs CMD under bench/meter.py with a time limit; LOG gets its output,
# TFILE "wall user sys maxrss_kb". Returns the program's exit status.
bench_timed() {
  local log=$1 tfile=$2 rc=0

  "$PY" "$BENCH/meter.py" "$tfile" "$RUN_TIMEOUT" "${CMD[@]}" \
    >"$log" 2>&1 || rc=$?
  [ -s "$tfile" ] || echo "0 0 0 0" >"$tfile"
  return "$rc"
}
