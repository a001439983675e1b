# Shared by the end-to-end tests: each test sources this, gets its own
# queue and its own database, runs the real moonrabbit binary against the
# real broker and server, and asserts on what landed where.
#
# Needs: MOONRABBIT and MRCTL (paths to the binaries, set by CTest),
# AMQP_URL and DATABASE_URL (set by tools/test.sh).
set -euo pipefail

: "${MOONRABBIT:?path to the moonrabbit binary}"
: "${MRCTL:?path to the mrctl binary}"
: "${AMQP_URL:?broker URL, see tools/services.sh}"
: "${DATABASE_URL:?database URL, see tools/services.sh}"

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$REPO/tests/e2e/assert.sh"
CORPUS=${MOONRABBIT_CORPUS:-$REPO/../shared/corpus/conversations.jsonl}
TEST_NAME=$(basename "$0" .sh)
WORK=$(mktemp -d "/tmp/mr-$TEST_NAME-XXXXXX")
export AMQP_QUEUE="e2e.$TEST_NAME.$$"
export POLICY_DIR=$REPO/policies
export JOB_SCRIPT=$REPO/scripts/analyze_conversation.lua
# Tests may run side by side; a test that wants metrics picks a port.
export METRICS_ADDR=${METRICS_ADDR:-off}
# The crash ledger of each test stays in its own folder, not in the
# shared /var/tmp/moonrabbit.
export STATE_DIR=${STATE_DIR:-$WORK/state}
TEST_DB="mr_${TEST_NAME//-/_}_$$"
export DATABASE_URL_ADMIN=$DATABASE_URL
export DATABASE_URL="${DATABASE_URL%/*}/$TEST_DB"


# Helper processes a test starts (receivers, fake servers); cleanup ends
# them.
HELPER_PIDS=()


cleanup() {
  local pid running
  # Only what is still a running job of this shell: an id that has
  # exited may by now name somebody else's process.
  running=" $(jobs -pr | xargs) "
  for pid in "${HELPER_PIDS[@]}"; do
    [[ "$running" == *" $pid "* ]] && kill "$pid" 2>/dev/null || true
  done
  "$MRCTL" delete "$AMQP_QUEUE" "$AMQP_QUEUE.dlq" >/dev/null 2>&1 || true
  psql "$DATABASE_URL_ADMIN" -qAtc "DROP DATABASE IF EXISTS $TEST_DB" \
    >/dev/null 2>&1 || true
  # MR_KEEP_WORK=1 keeps logs and bodies for a look after a failure.
  [ -n "${MR_KEEP_WORK:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

psql "$DATABASE_URL_ADMIN" -qAtc "CREATE DATABASE $TEST_DB" >/dev/null


sql() {
  psql "$DATABASE_URL" -qAtX -v ON_ERROR_STOP=1 -c "$1"
}


# run_worker LOG [VAR=value ...]: drains the queue with moonrabbit,
# writing its log to LOG; prints the exit code.
run_worker() {
  local log=$1
  shift
  local rc=0
  env "$@" timeout 600 "$MOONRABBIT" --drain >"$log" 2>&1 || rc=$?
  echo "$rc"
}


# summary LOG FIELD: a numeric field of the worker's summary line.
summary() {
  grep '"event":"summary"' "$1" | tail -n 1 |
    grep -o "\"$2\":[0-9.]*" | cut -d: -f2
}


# count_events LOG EVENT: how many lines of that event the log holds.
count_events() {
  grep -c "\"event\":\"$2\"" "$1" || true
}


# dlq_ids: the message ids in the dead-letter queue, sorted, consumed.
dlq_ids() {
  "$MRCTL" take "$AMQP_QUEUE.dlq" | awk '{print $1}' | sort
}


depth() {
  "$MRCTL" depth "$1" | awk '{print $2}'
}


# For tests that run a long-lived worker on the default job: rows it
# stored, and whether N messages are settled (stored or dead-lettered).
stored() { sql "SELECT count(*) FROM conversation_stats" 2>/dev/null || echo 0; }
settled() { [ $(($(stored) + $(depth "$AMQP_QUEUE.dlq"))) -ge "$1" ]; }

# publish_logs TAG COUNT: conversations with a 100 KB log each; $sent
# counts what was published.
sent=0
publish_logs() {
  for i in $(seq 1 "$2"); do
    "$MRCTL" gen log 100000 --id "$1-$i" >"$WORK/body"
    "$MRCTL" publish "$WORK/body" --message-id "$1-$i" >/dev/null
  done
  sent=$((sent + $2))
}


# A port nothing listens on, below the ephemeral range (32768 and up on
# Linux) so that no outgoing connection of a test running beside this one
# holds it either, and above the services' ports (tools/services.sh).
free_port() {
  local p
  for _ in $(seq 1 50); do
    p=$((23000 + RANDOM % 9000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  return 1
}


# policy_copy DIR 'sed expression' ...: a copy of policies/ with edits, the
# way an operator changes a limit.
policy_copy() {
  local dir=$1
  shift
  mkdir -p "$dir"
  cp "$REPO"/policies/*.lua "$dir"/
  local expr
  for expr in "$@"; do
    sed -i "$expr" "$dir"/*.lua
  done
}


# publish_op OP ID: a {"op": OP} message with that id.
publish_op() {
  echo "{\"op\":\"$1\"}" >"$WORK/op-body"
  "$MRCTL" publish "$WORK/op-body" --message-id "$2" >/dev/null
}


# cgroup_fixture ROOT LIMIT: a cgroup v2 tree under ROOT (proc/ and sys/)
# with memory.max LIMIT, an RSS of 10 MiB and no page cache; the test
# writes memory.current. Point MOONRABBIT_PROC_ROOT and _SYS_ROOT at it.
cgroup_fixture() {
  local root=$1
  mkdir -p "$root/proc/self" "$root/sys/fs/cgroup"
  echo "0::/" >"$root/proc/self/cgroup"
  echo "30 24 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw" \
    >"$root/proc/self/mountinfo"
  echo "MemTotal: 16303932 kB" >"$root/proc/meminfo"
  printf 'Name:\tmoonrabbit\nVmRSS:\t10240 kB\n' >"$root/proc/self/status"
  echo "$2" >"$root/sys/fs/cgroup/memory.max"
  printf 'anon 0\nfile 0\ninactive_file 0\n' >"$root/sys/fs/cgroup/memory.stat"
}


# await SECONDS COMMAND...: wait_for that says so when it times out and
# lets the script go on, so the checks that follow fail with a reason
# instead of set -e ending the run without a count.
await() {
  wait_for "$@" || echo "note: gave up after $1 s waiting for: ${*:2}"
}

# start_receiver NAME ARGS...: receiver.py on 127.0.0.1 recording into
# $WORK/NAME.jsonl; sets RPORT and RPID.
start_receiver() {
  local name=$1
  shift
  : >"$WORK/$name.jsonl"
  python3 "$REPO/tests/e2e/receiver.py" --port-file "$WORK/$name.port" \
    --log "$WORK/$name.jsonl" "$@" &
  RPID=$!
  HELPER_PIDS+=("$RPID")
  wait_for 10 test -s "$WORK/$name.port"
  RPORT=$(cat "$WORK/$name.port")
}

# q FILE EXPR: EXPR in Python over rs, the receiver's records, each with
# its body decoded as r["b"] (None when it is not strict JSON).
q() {
  python3 - "$1" "$2" <<'EOF'
import json, sys
rs = [json.loads(line) for line in open(sys.argv[1])]
for r in rs:
    r["b"] = json.loads(r["body"]) if r["strict_json"] else None
print(eval(sys.argv[2], {"rs": rs}))
EOF
}

# logq LOG EXPR: EXPR in Python over ls, the worker's log lines decoded.
logq() {
  python3 - "$1" "$2" <<'EOF'
import json, sys
ls = []
for line in open(sys.argv[1]):
    try:
        ls.append(json.loads(line))
    except ValueError:
        pass
def ev(name):
    return [l for l in ls if l.get("event") == name]
print(eval(sys.argv[2], {"ls": ls, "ev": ev}))
EOF
}
