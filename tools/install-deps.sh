#!/usr/bin/env bash
# Installs what moonrabbit needs to build, test and run, from Debian 12
# packages only. Idempotent: a package already present is not fetched again,
# and apt is not touched at all when nothing is missing. The Dockerfile runs
# this same script, so the image and the native set-up cannot drift.
set -euo pipefail

# Build and runtime libraries.
build_pkgs="build-essential cmake pkg-config liblua5.4-dev lua5.4
librabbitmq-dev libpq-dev libcurl4-openssl-dev libmicrohttpd-dev lua-cjson"
# What the built binary loads, and curl for the container's health check;
# the image's final stage installs only these.
runtime_pkgs="liblua5.4-0 librabbitmq4 libpq5 libcurl4 libmicrohttpd12
lua-cjson ca-certificates curl"
# Services the tests and the demo start on loopback.
service_pkgs="rabbitmq-server postgresql-15 postgresql-client-15"
# Checkers the test command runs.
check_pkgs="lua-busted lua-check valgrind clang-format curl prometheus
docker-compose socat"
# The benchmark's Python peer and GNU time for peak RSS (bench/run.sh).
bench_pkgs="python3 python3-pika python3-psycopg2 python3-psutil time"

want="$build_pkgs"
case "${1:-all}" in
  build) ;;
  runtime) want="$runtime_pkgs" ;;
  all) want="$want $service_pkgs $check_pkgs $bench_pkgs" ;;
  bench) want="$want $service_pkgs $bench_pkgs valgrind strace" ;;
  *) echo "usage: $0 [all|build|runtime|bench]" >&2; exit 2 ;;
esac

missing=()
for p in $want; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed'
  then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing: ${missing[*]}"
sudo_cmd=""
[ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
export DEBIAN_FRONTEND=noninteractive
# RabbitMQ's package starts the system service on install; the project runs
# its own broker on other ports, so keep Debian from starting one.
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo_cmd tee "$policy" >/dev/null
  $sudo_cmd chmod +x "$policy"
  made_policy=1
fi
trap '[ $made_policy -eq 1 ] && $sudo_cmd rm -f "$policy"' EXIT
$sudo_cmd apt-get update -qq
$sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
