#!/usr/bin/env bash
# Sets up and runs every test, from a fresh Debian 12 machine on:
# installs the packages, builds with warnings as errors, runs the unit
# tests under AddressSanitizer + UndefinedBehaviorSanitizer and valgrind,
# starts a private RabbitMQ and PostgreSQL on loopback (unless AMQP_URL /
# DATABASE_URL point at existing ones), then runs luacheck, busted, the
# unit tests and the end-to-end tests through CTest.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
jobs=$(nproc 2>/dev/null || echo 2)

tools/install-deps.sh all

echo "== build (warnings are errors)"
cmake -S . -B build -DMOONRABBIT_WERROR=ON >/dev/null
cmake --build build -j "$jobs"
cmake -S . -B build-asan -DMOONRABBIT_WERROR=ON -DMOONRABBIT_SANITIZE=ON \
  -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-asan -j "$jobs"

echo "== format"
clang-format --dry-run --Werror core/*.c core/*.h tests/*.c tests/*.h \
  tools/*.c

# Services are stopped on exit only if this run started them.
started=0
if ! tools/services.sh status >/dev/null 2>&1; then
  started=1
fi
stop_services() {
  if [ "$started" = 1 ]; then
    "$REPO"/tools/services.sh stop || true
  fi
}
trap stop_services EXIT
tools/services.sh start
eval "$(tools/services.sh env)"
export AMQP_URL DATABASE_URL

echo "== sanitizers: unit tests and the e2e cases that check no RSS figure"
(cd build-asan && ctest --output-on-failure -R 'unit_|e2e_(case006|case015|case020|bounded_jobs|governor|reload|backlog|quarantine|check_config|metrics|batch)')

echo "== everything else"
cd build
ctest --output-on-failure
