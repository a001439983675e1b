#!/usr/bin/env bash
# Cases 019 and 020 through the real binary: `moonrabbit --check-config`
# runs policies/config.lua without connecting anywhere, prints each
# finding with its code and the memory budget line by line, and exits 2
# on an error and 0 on warnings. A normal start with an error finding
# stops with code 2 before it connects; warnings are logged once, and the
# server's max_connections is weighed once the pool is open.
. "$(dirname "$0")/lib.sh"

# A cgroup v2 tree with a 2 GiB limit, so the budget is compared with the
# same limit on every machine.
root=$WORK/root
cgroup_fixture "$root" 2147483648
echo 104857600 >"$root/sys/fs/cgroup/memory.current"
export MOONRABBIT_PROC_ROOT=$root/proc MOONRABBIT_SYS_ROOT=$root/sys
export STOP_GRACE_PERIOD_SECONDS=40

# check_config LOG [VAR=value ...]: runs --check-config, output to LOG;
# prints the exit code.
check_config() {
  local log=$1
  shift
  local rc=0
  env "$@" timeout 60 "$MOONRABBIT" --check-config >"$log" 2>&1 || rc=$?
  echo "$rc"
}

# has LOG TEXT: LOG holds TEXT as a fixed string.
has() { grep -qF -- "$2" "$1"; }
lacks() { ! grep -qF -- "$2" "$1"; }
# finding_count LOG CODE: how many findings of CODE the output lists.
finding_count() { grep -cE "^  (error|warning|info) +$2\$" "$1" || true; }


# Defaults: nothing to report, and the budget term by term.
rc=$(check_config "$WORK/defaults.log")
log=$WORK/defaults.log
check "the defaults exit 0" 0 "$rc"
check_true "the defaults have no finding" has "$log" "findings: none"
check_true "the verdict counts nothing" has "$log" \
  "configuration ok: 0 errors, 0 warnings, 0 info"
check_true "the lua term shows its arithmetic" grep -qE \
  '^  lua +536870912 bytes +512\.0 MiB  8 threads × 64 MiB Lua ceiling$' "$log"
check_true "the prefetch term shows its arithmetic" grep -qE \
  '^  prefetch +134217728 bytes +128\.0 MiB  16 deliveries × 2 MiB max message × 4 decode factor$' \
  "$log"
check_true "the db term shows its arithmetic" grep -qE \
  '^  db +17301504 bytes +16\.5 MiB  8 connections × \(64 KiB \+ 2 MiB largest message\)$' \
  "$log"
check_true "the baseline term is printed" grep -qE \
  '^  baseline +14680064 bytes +14\.0 MiB  idle RSS measured' "$log"
check_true "the total is weighed against the cgroup limit" grep -qE \
  '^  total +703070208 bytes +670\.5 MiB  32\.7 % of the 2\.00 GiB memory limit$' \
  "$log"

# Each seed rule of the Python worker, alone; a warning exits 0.
rc=$(check_config "$WORK/threads.log" WORKER_CONCURRENCY_PER_WORKER=21 \
  AMQP_PREFETCH=21 DB_POOL_SIZE=21)
check "21 threads exit 0" 0 "$rc"
check "21 threads: cfg.concurrency_high" 1 \
  "$(finding_count "$WORK/threads.log" cfg.concurrency_high)"
check_true "21 threads: the message names the variable" \
  has "$WORK/threads.log" "WORKER_CONCURRENCY_PER_WORKER=21 is above 20"

rc=$(check_config "$WORK/total.log" WORKER_REPLICAS=26)
check "208 connections exit 0" 0 "$rc"
check "208 connections: cfg.db_total_high" 1 \
  "$(finding_count "$WORK/total.log" cfg.db_total_high)"
check_true "208 connections: the message shows the product" \
  has "$WORK/total.log" \
  "WORKER_REPLICAS=26 × (DB_POOL_SIZE=8 + DB_MAX_OVERFLOW=0) = 208 database connections, above 200"

rc=$(check_config "$WORK/pool.log" DB_POOL_SIZE=4)
check "a pool of 4 for 8 threads exits 0" 0 "$rc"
check "a pool of 4: cfg.pool_lt_concurrency" 1 \
  "$(finding_count "$WORK/pool.log" cfg.pool_lt_concurrency)"
check "a pool of 4: one warning in all" 1 \
  "$(grep -c '^  warning ' "$WORK/pool.log")"

# Case 019: prefetch 1 idles threads; prefetch 200 with 20 threads does
# not fit in 2 GiB, and the budget says which term to shrink.
rc=$(check_config "$WORK/b.log" AMQP_PREFETCH=1)
check "case 019 B exits 0" 0 "$rc"
check "case 019 B: cfg.prefetch_lt_concurrency" 1 \
  "$(finding_count "$WORK/b.log" cfg.prefetch_lt_concurrency)"
rc=$(check_config "$WORK/c.log" AMQP_PREFETCH=200 \
  WORKER_CONCURRENCY_PER_WORKER=20 DB_POOL_SIZE=20)
check "case 019 C exits 0" 0 "$rc"
check "case 019 C: cfg.prefetch_memory_high" 1 \
  "$(finding_count "$WORK/c.log" cfg.prefetch_memory_high)"
check "case 019 C: cfg.memory_budget_exceeded" 1 \
  "$(finding_count "$WORK/c.log" cfg.memory_budget_exceeded)"
check_true "case 019 C: the prefetch term is 1600 MiB" grep -qE \
  '^  prefetch +1677721600 bytes +1600\.0 MiB  200 deliveries' "$WORK/c.log"
check_true "case 019 C: the largest term is named" has "$WORK/c.log" \
  "shrink the largest term, prefetch (1.56 GiB)"

# Issue 6: the drain against the stop grace period (checked only when
# STOP_GRACE_PERIOD_SECONDS says what it is) and a job budget against the
# broker's consumer timeout.
rc=$(check_config "$WORK/grace.log" STOP_GRACE_PERIOD_SECONDS=10)
check "a 10 s stop grace exits 0" 0 "$rc"
check "a 10 s stop grace: cfg.grace_exceeds_stop_grace" 1 \
  "$(finding_count "$WORK/grace.log" cfg.grace_exceeds_stop_grace)"
rc=$(check_config "$WORK/nograce.log" STOP_GRACE_PERIOD_SECONDS=)
check "an unknown stop grace is not judged" 0 \
  "$(finding_count "$WORK/nograce.log" cfg.grace_exceeds_stop_grace)"
policy_copy "$WORK/long" 's/^local JOB_TIMEOUT_MS = .*/local JOB_TIMEOUT_MS = 3600000/'
rc=$(check_config "$WORK/long.log" POLICY_DIR="$WORK/long" \
  SHUTDOWN_GRACE_SECONDS=3600 STOP_GRACE_PERIOD_SECONDS=3602)
check "an hour-long job budget exits 0" 0 "$rc"
check "an hour-long job: cfg.job_timeout_exceeds_consumer_timeout" 1 \
  "$(finding_count "$WORK/long.log" cfg.job_timeout_exceeds_consumer_timeout)"

# Errors exit 2 with their message.
rc=$(check_config "$WORK/bad.log" STOP_GRACE_PERIOD_SECONDS=abc)
check "a stop grace period of abc exits 2" 2 "$rc"
check "abc: cfg.invalid_value" 1 \
  "$(finding_count "$WORK/bad.log" cfg.invalid_value)"
check_true "abc: the message names the variable and the value" \
  has "$WORK/bad.log" \
  'stop_grace_period_seconds (STOP_GRACE_PERIOD_SECONDS) must be a whole number from 0 to 604800, got "abc"'
check_true "abc: the verdict says refused" has "$WORK/bad.log" \
  "configuration refused: 1 error, 0 warnings, 0 info"
policy_copy "$WORK/huge" 's/^local MAX_MESSAGE_BYTES = .*/local MAX_MESSAGE_BYTES = 512 * MIB/'
rc=$(check_config "$WORK/huge.log" POLICY_DIR="$WORK/huge" AMQP_PREFETCH=8)
check "a 512 MiB message limit in 2 GiB exits 2" 2 "$rc"
check "512 MiB: cfg.message_exceeds_memory" 1 \
  "$(finding_count "$WORK/huge.log" cfg.message_exceeds_memory)"

# Passwords stay out of the output.
rc=$(check_config "$WORK/secret.log" \
  AMQP_URL="amqp://worker:amqp-s3cret@127.0.0.1:5672/%2f" \
  DATABASE_URL="postgresql://worker:pg-s3cret@127.0.0.1:5432/x")
check "URLs with passwords exit 0" 0 "$rc"
check_true "the broker URL is printed masked" has "$WORK/secret.log" \
  "amqp://worker:***@127.0.0.1:5672/%2f"
check_true "no password is printed" lacks "$WORK/secret.log" "s3cret"

# An answer the host cannot use is refused, naming the file and field.
policy_copy "$WORK/broken" \
  's/return { findings = findings, budget = budget }/return { findings = { { severity = "fatal", code = "cfg.x", message = "m" } }, budget = budget }/'
rc=$(check_config "$WORK/broken.log" POLICY_DIR="$WORK/broken")
check "a nonsense answer exits 2" 2 "$rc"
check_true "the refusal names the file and the field" has "$WORK/broken.log" \
  "config.lua: field 'findings[1].severity': expected error, warning or info, got fatal"

# A normal start with an error stops before connecting: both URLs point
# at a closed loopback port, and no connect error may appear. The same
# start without the error shows what trying to connect would have logged.
port=39999
while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
  port=$((port - 1))
done
closed=(AMQP_URL="amqp://guest:guest@127.0.0.1:$port/%2f"
  DATABASE_URL="postgresql://postgres@127.0.0.1:$port/none")
rc=0
env "${closed[@]}" STOP_GRACE_PERIOD_SECONDS=abc timeout 60 "$MOONRABBIT" \
  >"$WORK/start-bad.log" 2>&1 || rc=$?
check "a start with an error exits 2" 2 "$rc"
check_true "the error is logged as a config_finding" has "$WORK/start-bad.log" \
  '"event":"config_finding","severity":"error","code":"cfg.invalid_value"'
check_true "stderr says why" has "$WORK/start-bad.log" \
  'moonrabbit: configuration error: cfg.invalid_value: stop_grace_period_seconds'
check_true "nothing tried to connect" lacks "$WORK/start-bad.log" "connect"
check_true "no thread or pool was started" lacks "$WORK/start-bad.log" \
  '"event":"consuming"'
rc=0
env "${closed[@]}" timeout 60 "$MOONRABBIT" >"$WORK/start-closed.log" 2>&1 ||
  rc=$?
check "the same start without the error fails to connect" 1 "$rc"
check_true "and says so" has "$WORK/start-closed.log" '"event":"db_connect_failed"'

# A normal start logs each warning once, and weighs the pools against the
# server's max_connections once the pool is open (never with
# --check-config, which connects nowhere).
server=$(sql "SHOW max_connections")
replicas=$((server / 4 + 1))
rc=$(run_worker "$WORK/run.log" DB_POOL_SIZE=4 WORKER_CONCURRENCY_PER_WORKER=8 \
  WORKER_REPLICAS=$replicas)
check "a start with warnings drains and exits 0" 0 "$rc"
check "the pool warning is logged once" 1 "$(grep -c \
  '"event":"config_finding","severity":"warning","code":"cfg.pool_lt_concurrency"' \
  "$WORK/run.log")"
check "the budget is logged once" 1 "$(count_events "$WORK/run.log" memory_budget)"
check "the server's max_connections is weighed once" 1 "$(grep -c \
  "\"code\":\"cfg.db_exceeds_server\",\"message\":\"WORKER_REPLICAS=$replicas × (DB_POOL_SIZE=4 + DB_MAX_OVERFLOW=0) = $((replicas * 4))" \
  "$WORK/run.log")"
rc=$(check_config "$WORK/noserver.log" DB_POOL_SIZE=4 \
  WORKER_REPLICAS=$replicas)
check "--check-config knows no server limit" 0 \
  "$(finding_count "$WORK/noserver.log" cfg.db_exceeds_server)"

finish
