#!/usr/bin/env bash
# Starts, stops and reports a private RabbitMQ and PostgreSQL 15 on
# loopback, for the tests and the demo. All state lives in one folder
# ($MOONRABBIT_VAR, default <repo>/var), so nothing touches a system broker,
# a system cluster or /etc, and removing that folder resets everything.
#
#   tools/services.sh start    start both (no-op for what already runs)
#   tools/services.sh stop     stop what this folder's pid files name
#   (start and stop take an optional rabbitmq or postgresql)
#   tools/services.sh status   one line per service; exit 3 if one is down
#   tools/services.sh env      export lines for AMQP_URL and DATABASE_URL
#   tools/services.sh ctl ...  rabbitmqctl against the private node
#
# AMQP_URL or DATABASE_URL already set to another server when `start` runs
# means "use that server": the matching private service is not started.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VAR=${MOONRABBIT_VAR:-$REPO/var}
START_TIMEOUT=${MOONRABBIT_START_TIMEOUT:-120}

# Ports sit far from the defaults (5672, 4369, 25672, 5432) so a system
# broker or cluster on the same machine never collides with these, and
# below Linux's ephemeral range (32768 and up): a port in that range can
# be held at any moment by some program's outgoing connection, and the
# server then fails to bind it. MOONRABBIT_PORT_OFFSET moves every port at
# once, so a test can run a second pair of services (which it may stop
# and start) beside the first.
OFFSET=${MOONRABBIT_PORT_OFFSET:-0}
AMQP_PORT=$((21720 + OFFSET))
DIST_PORT=$((21730 + OFFSET))
CTL_DIST_MIN=$((21731 + OFFSET))
CTL_DIST_MAX=$((21739 + OFFSET))
EPMD_PORT=$((21690 + OFFSET))
PG_PORT=$((21432 + OFFSET))
NODE=moonrabbit@localhost
[ "$OFFSET" = 0 ] || NODE=moonrabbit$OFFSET@localhost

OUR_AMQP_URL="amqp://guest:guest@127.0.0.1:$AMQP_PORT/%2f"
OUR_DATABASE_URL="postgresql://moonrabbit@127.0.0.1:$PG_PORT/moonrabbit"

RMQ_BIN=/usr/lib/rabbitmq/bin
PG_BIN=/usr/lib/postgresql/15/bin

say() { printf 'services: %s\n' "$*"; }
die() { printf 'services: error: %s\n' "$*" >&2; exit 1; }


# ---- paths ---------------------------------------------------------------

# Paths derive from VAR, which `start` makes absolute first: the broker and
# postgres run elsewhere and must not depend on our working directory.
set_paths() {
  RMQ_DIR=$VAR/rabbitmq
  RMQ_PID=$RMQ_DIR/rabbitmq.pid
  RMQ_LOG=$RMQ_DIR/log
  EPMD_PID=$RMQ_DIR/epmd.pid
  PG_DIR=$VAR/pg
  PG_DATA=$PG_DIR/data
  PG_SOCK=$PG_DIR/run
  PG_LOG=$PG_DIR/log/postgresql.log
}

make_var_absolute() {
  mkdir -p "$VAR"
  VAR=$(cd "$VAR" && pwd)
  set_paths
}


# ---- small helpers -------------------------------------------------------

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Prints the pid in file $1 if that process is alive and its command line
# contains $2, so a stale pid file reused by an unrelated process after a
# reboot is not mistaken for ours.
live_pid() {
  local pid
  [ -s "$1" ] || return 1
  pid=$(head -n1 "$1" | tr -dc '0-9')
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$2" || return 1
  echo "$pid"
}

# Waits up to $2 seconds for process $1 to exit.
wait_gone() {
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    kill -0 "$1" 2>/dev/null || return 0
    sleep 0.1
  done
  return 1
}

# PostgreSQL refuses to run as root, so root runs its tools as postgres;
# anyone else runs them as themselves.
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# True when the URL variable named $1 is set to a server other than ours.
external() {
  local val=${!1:-} ours
  [ "$1" = AMQP_URL ] && ours=$OUR_AMQP_URL || ours=$OUR_DATABASE_URL
  [ -n "$val" ] && [ "$val" != "$ours" ]
}


# ---- RabbitMQ ------------------------------------------------------------

# Runs "$@" with the environment that makes the rabbitmq scripts use our
# node, ports and folder. HOME holds the Erlang cookie, so rabbitmqctl
# must see the same HOME as the server. RABBITMQ_CONF_ENV_FILE and the
# advanced config point into VAR so /etc/rabbitmq is never read.
rmq_env() {
  local dist_if='-kernel inet_dist_use_interface {127,0,0,1}'

  (
    export HOME=$RMQ_DIR/home
    export ERL_EPMD_PORT=$EPMD_PORT ERL_EPMD_ADDRESS=127.0.0.1
    export RABBITMQ_NODENAME=$NODE
    export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    export RABBITMQ_NODE_PORT=$AMQP_PORT
    export RABBITMQ_DIST_PORT=$DIST_PORT
    export RABBITMQ_CTL_DIST_PORT_MIN=$CTL_DIST_MIN
    export RABBITMQ_CTL_DIST_PORT_MAX=$CTL_DIST_MAX
    export RABBITMQ_MNESIA_BASE=$RMQ_DIR/mnesia
    export RABBITMQ_LOG_BASE=$RMQ_LOG
    export RABBITMQ_PID_FILE=$RMQ_PID
    export RABBITMQ_CONFIG_FILE=$RMQ_DIR/rabbitmq.conf
    export RABBITMQ_CONFIG_FILES=$RMQ_DIR/conf.d
    export RABBITMQ_ADVANCED_CONFIG_FILE=$RMQ_DIR/advanced.config
    export RABBITMQ_CONF_ENV_FILE=$RMQ_DIR/rabbitmq-env.conf
    export RABBITMQ_ENABLED_PLUGINS_FILE=$RMQ_DIR/enabled_plugins
    export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=$dist_if
    export RABBITMQ_CTL_ERL_ARGS=$dist_if
    "$@"
  )
}

# Writes the broker's config on every start, so an edit here reaches an
# existing folder. The 128 MiB message cap lets tests publish a 64 MiB
# body; the low disk limit keeps a nearly full disk from blocking
# publishers.
rmq_write_config() {
  mkdir -p "$RMQ_DIR/home" "$RMQ_DIR/mnesia" "$RMQ_LOG" "$RMQ_DIR/conf.d"
  cat >"$RMQ_DIR/rabbitmq.conf" <<EOF
# Generated by tools/services.sh; edits are overwritten on start.
listeners.tcp.default = 127.0.0.1:$AMQP_PORT
max_message_size = 134217728
disk_free_limit.absolute = 50MB
EOF
  echo '[].' >"$RMQ_DIR/enabled_plugins"
  : >"$RMQ_DIR/rabbitmq-env.conf"
}

# Starts our own epmd on loopback, so the node registers with it rather
# than with a system epmd on 4369 (or one that listens on all addresses).
epmd_start() {
  if live_pid "$EPMD_PID" epmd >/dev/null; then
    return 0
  fi
  if port_open "$EPMD_PORT"; then
    die "port $EPMD_PORT is taken by a process this folder did not start"
  fi
  setsid epmd -port "$EPMD_PORT" -address 127.0.0.1 \
    </dev/null >>"$RMQ_LOG/epmd.log" 2>&1 &
  echo $! >"$EPMD_PID"
}

epmd_stop() {
  local pid

  pid=$(live_pid "$EPMD_PID" epmd) || { rm -f "$EPMD_PID"; return 0; }
  kill "$pid"
  wait_gone "$pid" 10 || die "epmd (pid $pid) did not exit"
  rm -f "$EPMD_PID"
  say "epmd: stopped"
}

# Shows the log tail and takes down what this start left half-running, so
# the next start begins clean instead of finding a broker that never
# became ready.
rmq_fail() {
  local pid

  echo "--- tail of $RMQ_LOG ---" >&2
  tail -n 30 "$RMQ_LOG/startup.log" "$RMQ_LOG/$NODE.log" 2>/dev/null >&2 ||
    true
  if pid=$(live_pid "$RMQ_PID" beam); then
    kill "$pid" 2>/dev/null || true
    wait_gone "$pid" 30 || say "rabbitmq: pid $pid still running"
  fi
  epmd_stop >/dev/null
  die "$1"
}

# The server script runs as root directly: only the Debian wrapper in
# /usr/sbin switches to the rabbitmq user, and that user could not write
# to a folder owned by whoever runs this script.
rmq_start() {
  local pid i

  if pid=$(live_pid "$RMQ_PID" beam); then
    say "rabbitmq: already running (pid $pid, port $AMQP_PORT)"
    return 0
  fi
  port_open "$AMQP_PORT" &&
    die "port $AMQP_PORT is taken by a broker this folder did not start"
  rmq_write_config
  epmd_start
  say "rabbitmq: starting $NODE on 127.0.0.1:$AMQP_PORT"
  rmq_env "$RMQ_BIN/rabbitmq-server" -detached \
    </dev/null >>"$RMQ_LOG/startup.log" 2>&1 ||
    rmq_fail "rabbitmq-server failed to launch"

  # The AMQP listener opens only after every boot step has run, so an
  # open port means the broker takes connections.
  for ((i = 0; i < START_TIMEOUT * 5; i++)); do
    port_open "$AMQP_PORT" && break
    if ((i > 50)) && ! live_pid "$RMQ_PID" beam >/dev/null; then
      rmq_fail "rabbitmq exited during start-up"
    fi
    sleep 0.2
  done
  port_open "$AMQP_PORT" ||
    rmq_fail "rabbitmq did not open port $AMQP_PORT in ${START_TIMEOUT}s"
  say "rabbitmq: ready (pid $(live_pid "$RMQ_PID" beam))"
}

rmq_stop() {
  local pid

  if ! pid=$(live_pid "$RMQ_PID" beam); then
    say "rabbitmq: not running"
    epmd_stop
    return 0
  fi
  say "rabbitmq: stopping (pid $pid)"
  if ! rmq_env "$RMQ_BIN/rabbitmqctl" -n "$NODE" -q stop "$RMQ_PID" \
    >/dev/null 2>&1; then
    # SIGTERM also shuts the node down cleanly; rabbitmqctl fails when the
    # cookie in HOME was lost, and the node must still go.
    say "rabbitmq: rabbitmqctl stop failed, sending SIGTERM"
    kill "$pid" 2>/dev/null || true
  fi
  wait_gone "$pid" 60 || die "rabbitmq (pid $pid) did not exit within 60s"
  rm -f "$RMQ_PID"
  say "rabbitmq: stopped"
  epmd_stop
}


# ---- PostgreSQL ----------------------------------------------------------

# Root runs postgres as the postgres user, which must be able to reach the
# data folder through every parent directory.
pg_check_access() {
  [ "$(id -u)" -eq 0 ] || return 0
  runuser -u postgres -- test -x "$VAR" && return 0
  die "user postgres cannot traverse $VAR (a parent directory is not" \
    "searchable); set MOONRABBIT_VAR to a folder postgres can reach," \
    "e.g. MOONRABBIT_VAR=/tmp/moonrabbit-var"
}

pg_initdb() {
  [ -s "$PG_DATA/PG_VERSION" ] && return 0
  say "postgresql: creating cluster in $PG_DATA"
  mkdir -p "$PG_DIR"
  [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$PG_DIR"
  as_pg mkdir -p "$PG_DATA" "$PG_SOCK" "$(dirname "$PG_LOG")"
  as_pg chmod 700 "$PG_DATA"
  as_pg "$PG_BIN/initdb" -D "$PG_DATA" -A trust -U postgres -E UTF8 \
    --locale=C >"$PG_DIR/initdb.log" 2>&1 ||
    { tail -n 20 "$PG_DIR/initdb.log" >&2; die "initdb failed"; }
  echo "include_if_exists = 'moonrabbit.conf'" |
    as_pg tee -a "$PG_DATA/postgresql.conf" >/dev/null
}

# Rewritten on every start, so the socket folder follows VAR if the
# repository moves.
pg_write_config() {
  as_pg tee "$PG_DATA/moonrabbit.conf" >/dev/null <<EOF
# Generated by tools/services.sh; edits are overwritten on start.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_SOCK'
max_connections = 100
EOF
}

pg_running() {
  as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1
}

pg_pid() {
  head -n1 "$PG_DATA/postmaster.pid" 2>/dev/null || echo '?'
}

# Creates the role and database the tests use, once; \gexec runs the
# CREATE only when the SELECT finds it missing.
pg_create_db() {
  as_pg "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" \
    -U postgres -d postgres >/dev/null <<'EOF'
SELECT 'CREATE ROLE moonrabbit LOGIN SUPERUSER'
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'moonrabbit')\gexec
SELECT 'CREATE DATABASE moonrabbit OWNER moonrabbit'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'moonrabbit')\gexec
EOF
}

pg_start() {
  local sock="$PG_SOCK/.s.PGSQL.$PG_PORT"

  pg_check_access
  ((${#sock} < 108)) ||
    die "socket path $sock is too long; set MOONRABBIT_VAR to a shorter path"
  pg_initdb
  if pg_running; then
    say "postgresql: already running (pid $(pg_pid), port $PG_PORT)"
    return 0
  fi
  port_open "$PG_PORT" &&
    die "port $PG_PORT is taken by a server this folder did not start"
  pg_write_config
  say "postgresql: starting on 127.0.0.1:$PG_PORT"
  as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t "$START_TIMEOUT" \
    start >/dev/null ||
    { tail -n 30 "$PG_LOG" >&2; die "postgresql failed to start"; }
  pg_create_db || die "failed to create role and database moonrabbit"
  say "postgresql: ready (pid $(pg_pid))"
}

pg_stop() {
  if [ ! -s "$PG_DATA/PG_VERSION" ] || ! pg_running; then
    say "postgresql: not running"
    return 0
  fi
  say "postgresql: stopping (pid $(pg_pid))"
  as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null ||
    die "pg_ctl stop failed; see $PG_LOG"
  say "postgresql: stopped"
}


# ---- commands ------------------------------------------------------------

# An optional service name (rabbitmq or postgresql) limits start and stop
# to that one, for the fault tests that take one service away.
want() { [ -z "${ONLY:-}" ] || [ "$ONLY" = "$1" ]; }

cmd_start() {
  local t0=$SECONDS

  make_var_absolute
  # Checked first, so a folder postgres cannot enter fails before a broker
  # is left running on ports the next attempt would need.
  external DATABASE_URL || pg_check_access
  if external AMQP_URL; then
    say "rabbitmq: AMQP_URL is set, using that server; not starting one"
  elif want rabbitmq; then
    rmq_start
  fi
  if external DATABASE_URL; then
    say "postgresql: DATABASE_URL is set, using that server; not starting one"
  elif want postgresql; then
    pg_start
  fi
  say "started in $((SECONDS - t0))s; eval \"\$($0 env)\" to use them"
}

cmd_stop() {
  [ -d "$VAR" ] || { say "nothing to stop: $VAR does not exist"; return 0; }
  VAR=$(cd "$VAR" && pwd)
  set_paths
  if want rabbitmq; then rmq_stop; fi
  if want postgresql; then pg_stop; fi
}

cmd_status() {
  local pid rc=0

  if [ -d "$VAR" ]; then
    VAR=$(cd "$VAR" && pwd)
  fi
  set_paths
  if pid=$(live_pid "$RMQ_PID" beam); then
    say "rabbitmq: running (pid $pid, amqp 127.0.0.1:$AMQP_PORT, node $NODE)"
  else
    say "rabbitmq: stopped"
    rc=3
  fi
  if [ -s "$PG_DATA/PG_VERSION" ] && pg_running; then
    say "postgresql: running (pid $(pg_pid), 127.0.0.1:$PG_PORT)"
  else
    say "postgresql: stopped"
    rc=3
  fi
  return $rc
}

# Prints the URLs in force: a server the user pointed at wins over ours.
# HOME is not exported: rabbitmqctl needs the cookie in our HOME, so it
# runs through `ctl` instead of changing the caller's shell.
cmd_env() {
  printf "export AMQP_URL='%s'\n" "${AMQP_URL:-$OUR_AMQP_URL}"
  printf "export DATABASE_URL='%s'\n" "${DATABASE_URL:-$OUR_DATABASE_URL}"
  printf "# rabbitmqctl: %s ctl <command>\n" "$0"
}

cmd_ctl() {
  VAR=$(cd "$VAR" 2>/dev/null && pwd) || die "$VAR does not exist"
  set_paths
  rmq_env "$RMQ_BIN/rabbitmqctl" -n "$NODE" "$@"
}

usage() {
  echo "usage: $0 start|stop [rabbitmq|postgresql] | status | env |" \
    "ctl RABBITMQCTL-ARGS..." >&2
  exit 2
}

[ $# -ge 1 ] || usage
cmd=$1
shift
case "$cmd" in
  start) ONLY=${1:-}; cmd_start ;;
  stop) ONLY=${1:-}; cmd_stop ;;
  status) cmd_status ;;
  env) cmd_env ;;
  ctl) cmd_ctl "$@" ;;
  *) usage ;;
esac
