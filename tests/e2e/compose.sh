#!/usr/bin/env bash
# docker-compose.worker.yml and the Dockerfile, checked without a Docker
# engine: `docker-compose config` validates and normalizes the file, and
# the checks read that normalized output. The worker's limits,
# reservations, stop grace period, mounts and health check; every setting
# in core/config.c present with its default; and the moonrabbit binary
# itself accepting the worker's environment with --check-config under the
# compose memory limit. Needs no broker and no database.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
FILE=$REPO/docker-compose.worker.yml
WORK=$(mktemp -d /tmp/mr-compose-XXXXXX)
trap 'rm -rf "$WORK"' EXIT
TEST_NAME=compose
. "$REPO/tests/e2e/assert.sh"

if ! command -v docker-compose >/dev/null; then
  echo "FAIL docker-compose is not installed (tools/install-deps.sh)"
  echo "compose: 0 passed, 1 failed"
  exit 1
fi

# normalize OUT [VAR=value ...]: `docker-compose config` with only the
# given variables set, so the test's own AMQP_URL and friends, or a .env
# file, cannot leak into what is checked.
normalize() {
  local out=$1
  shift
  : >"$WORK/empty.env"
  env -i PATH="$PATH" HOME="$WORK" "$@" docker-compose \
    --env-file "$WORK/empty.env" -f "$FILE" config >"$out"
}

# Flattens docker-compose's block YAML into path=value lines, e.g.
# services.worker.deploy.resources.limits.memory=2G; list items get
# "[]" (services.worker.volumes[]=...). Quotes are dropped, and a long
# scalar that PyYAML wrapped at 80 columns is joined again.
flatten() {
  awk '
    function unq(v) {
      if (v ~ /^'\''.*'\''$/) v = substr(v, 2, length(v) - 2)
      return v
    }
    function emit() { if (have) print out; have = 0 }
    function path(depth,   p, i) {
      p = keys[0]
      for (i = 1; i <= depth; i++) p = p "." keys[i]
      return p
    }
    /^[[:space:]]*$/ { next }
    {
      match($0, /^ */); ind = RLENGTH; rest = substr($0, ind + 1)
      if (have && ind > last_ind && rest !~ /^- / && rest !~ /^[^ ]+:( |$)/) {
        out = out " " rest
        next
      }
      emit()
      if (rest ~ /^- /) {
        out = path(ind / 2) "[]=" unq(substr(rest, 3)); have = 1
        last_ind = ind
        next
      }
      k = rest; sub(/:.*/, "", k)
      v = substr(rest, length(k) + 2); sub(/^ /, "", v)
      keys[ind / 2] = k
      if (v != "") { out = path(ind / 2) "=" unq(v); have = 1; last_ind = ind }
    }
    END { emit() }
  ' "$1"
}

# get FLAT PATH: the value at PATH (first one for a list).
get() {
  awk -v p="$2=" 'index($0, p) == 1 { print substr($0, length(p) + 1); exit }' \
    "$1"
}

# has FLAT LINE: true when the flattened file holds that exact line.
has() {
  grep -qxF -- "$2" "$1"
}

# Seconds from a compose duration such as 45s, 1m30s or 2m.
seconds_of() {
  local d=$1 total=0 n unit
  while [[ $d =~ ^([0-9]+)([hms])(.*)$ ]]; do
    n=${BASH_REMATCH[1]} unit=${BASH_REMATCH[2]} d=${BASH_REMATCH[3]}
    case $unit in
      h) total=$((total + n * 3600)) ;;
      m) total=$((total + n * 60)) ;;
      s) total=$((total + n)) ;;
    esac
  done
  [ -z "$d" ] && echo "$total"
}

# ---- the file is valid ---------------------------------------------------

rc=0
normalize "$WORK/config.yml" 2>"$WORK/config.err" || rc=$?
check "docker-compose config accepts the file" 0 "$rc"
[ "$rc" -eq 0 ] || cat "$WORK/config.err"
flatten "$WORK/config.yml" >"$WORK/flat"
W=services.worker
for s in rabbitmq postgres worker; do
  check_true "service $s" grep -q "^services\.$s\." "$WORK/flat"
done
for s in rabbitmq postgres; do
  check "the worker waits for a healthy $s" service_healthy \
    "$(get "$WORK/flat" "$W.depends_on.$s.condition")"
  check_true "$s has a health check" grep -q "^services\.$s\.healthcheck\.test" \
    "$WORK/flat"
done

# ---- resources -----------------------------------------------------------

check "memory limit" 2G "$(get "$WORK/flat" "$W.deploy.resources.limits.memory")"
check "cpu limit" 2.0 "$(get "$WORK/flat" "$W.deploy.resources.limits.cpus")"
check "memory reservation" 512M \
  "$(get "$WORK/flat" "$W.deploy.resources.reservations.memory")"
check "cpu reservation" 0.5 \
  "$(get "$WORK/flat" "$W.deploy.resources.reservations.cpus")"

# ---- stopping ------------------------------------------------------------

grace=$(get "$WORK/flat" "$W.environment.SHUTDOWN_GRACE_SECONDS")
stop=$(seconds_of "$(get "$WORK/flat" "$W.stop_grace_period")")
check "the stop signal is SIGTERM" SIGTERM "$(get "$WORK/flat" "$W.stop_signal")"
check_true "stop_grace_period ${stop}s > SHUTDOWN_GRACE_SECONDS=$grace" \
  test "${stop:-0}" -gt "$grace"
check "the worker is told the stop grace period" "$stop" \
  "$(get "$WORK/flat" "$W.environment.STOP_GRACE_PERIOD_SECONDS")"
# One variable sets both, so raising one cannot leave the other behind.
normalize "$WORK/longer.yml" SHUTDOWN_GRACE_SECONDS=120 \
  STOP_GRACE_PERIOD_SECONDS=130
flatten "$WORK/longer.yml" >"$WORK/longer"
check "an override reaches the stop grace period" 130 \
  "$(seconds_of "$(get "$WORK/longer" "$W.stop_grace_period")")"
check "and the worker's environment" 130 \
  "$(get "$WORK/longer" "$W.environment.STOP_GRACE_PERIOD_SECONDS")"
check "the replica count follows WORKER_REPLICAS" 3 \
  "$(normalize "$WORK/three.yml" WORKER_REPLICAS=3 &&
     flatten "$WORK/three.yml" | awk -F= '$1 == "services.worker.deploy.replicas" { print $2 }')"

# ---- mounts and health ---------------------------------------------------

for d in policies scripts; do
  check_true "$d mounted read-only, no rebuild for an edit" \
    has "$WORK/flat" "$W.volumes[]=$REPO/$d:/app/$d:ro"
done
check_true "the image works in /app, where the mounts land" \
  grep -qx 'WORKDIR /app' "$REPO/Dockerfile"
metrics_addr=$(get "$WORK/flat" "$W.environment.METRICS_ADDR")
check "metrics listen on every container address" 0.0.0.0:9464 "$metrics_addr"
check "the health check runs in a shell" CMD-SHELL \
  "$(get "$WORK/flat" "$W.healthcheck.test[]")"
health=$(grep "^$W\.healthcheck\.test\[\]=" "$WORK/flat" | sed -n 2p)
check_true "it asks the worker's own /healthz" \
  grep -qF 'http://127.0.0.1:$${METRICS_ADDR##*:}/healthz' <<<"$health"
# The port the check derives must be the one METRICS_ADDR names.
check "the derived port" 9464 "${metrics_addr##*:}"
for k in interval timeout retries start_period; do
  check_true "health check $k set" test -n \
    "$(get "$WORK/flat" "$W.healthcheck.$k")"
done
runtime=$(awk '/^runtime_pkgs="/,/"$/' "$REPO/tools/install-deps.sh")
check_true "the runtime image has curl for the check" \
  grep -qw curl <<<"$runtime"

# ---- every setting, with its default -------------------------------------

# The defaults come from core/config.c's tables, so a setting added there
# fails this test until the compose file has it too.
grep -oE '\{ *"[A-Z_]+", *("[^"]*"|-?[0-9]+)' "$REPO/core/config.c" |
  sed -E 's/^\{ *"([A-Z_]+)", *"?([^"]*)"?$/\1=\2/' >"$WORK/defaults"
check_true "core/config.c's settings were found" \
  test "$(wc -l <"$WORK/defaults")" -ge 16
# Where the services are other containers, a default cannot hold.
declare -A differ=(
  [AMQP_URL]='amqp://moonrabbit:moonrabbit@rabbitmq:5672/%2f'
  [DATABASE_URL]='postgresql://moonrabbit:moonrabbit@postgres:5432/moonrabbit'
  [METRICS_ADDR]='0.0.0.0:9464'
)
# Read outside config.c: main.c and config_check.c.
printf '%s\n' DOCKER_MEMORY_LIMIT= "STOP_GRACE_PERIOD_SECONDS=$stop" \
  >>"$WORK/defaults"
while IFS='=' read -r name def; do
  want=${differ[$name]-$def}
  check "$name=$want" "$want" \
    "$(get "$WORK/flat" "$W.environment.$name")"
  check_true "$name is in the file" grep -q "^$W\.environment\.$name=" \
    "$WORK/flat"
done <"$WORK/defaults"
# And nothing else: a misspelt name would be silently ignored.
grep "^$W\.environment\." "$WORK/flat" | sed -E 's/^[^=]*\.([A-Z_]+)=.*/\1/' |
  sort >"$WORK/present"
cut -d= -f1 "$WORK/defaults" | sort >"$WORK/known"
check "no unknown variable" "" "$(comm -23 "$WORK/present" "$WORK/known" | xargs)"

# ---- the worker accepts that environment --------------------------------

if [ -n "${MOONRABBIT:-}" ]; then
  envs=()
  while IFS= read -r line; do
    envs+=("${line#"$W.environment."}")
  done < <(grep "^$W\.environment\." "$WORK/flat")
  # The cgroup gives the container the compose limit; here the override
  # stands in for it.
  limit=$(get "$WORK/flat" "$W.deploy.resources.limits.memory")
  rc=0
  (cd "$REPO" && env -i PATH="$PATH" "${envs[@]}" DOCKER_MEMORY_LIMIT="$limit" \
    "$MOONRABBIT" --check-config) >"$WORK/check.out" 2>&1 || rc=$?
  check "moonrabbit --check-config accepts the worker's environment" 0 "$rc"
  check_true "with no findings at 2G" grep -q 'findings: none' "$WORK/check.out"
  [ "$rc" -eq 0 ] || cat "$WORK/check.out"
else
  echo "SKIP --check-config on the compose environment: MOONRABBIT unset"
fi

# ---- the Dockerfile ------------------------------------------------------

df=$REPO/Dockerfile
check "two stages on Debian 12" 2 "$(grep -c '^FROM debian:12' "$df")"
check_true "the build stage installs with tools/install-deps.sh build" \
  grep -qE '^RUN tools/install-deps.sh build' "$df"
check_true "the runtime stage installs with install-deps.sh runtime" \
  grep -qE '^RUN /tmp/install-deps.sh runtime' "$df"
check_true "it builds with cmake as the README does" \
  grep -qE 'cmake -S \. -B build' "$df"
check_true "install-deps.sh knows the runtime group" \
  grep -q '^  runtime)' "$REPO/tools/install-deps.sh"
# Every COPY from the context must survive .dockerignore's allow list.
while read -r src; do
  check_true "$src is in the build context" \
    grep -qxE "!${src%/}/?" "$REPO/.dockerignore"
done < <(awk '$1 == "COPY" && $2 !~ /^--from/ { print $2 }' "$df" |
         sed 's|^tools/install-deps.sh$|tools|' | sort -u)

finish
