# Assertions for the shell tests: each prints one line per check and
# finish prints the closing "N passed, N failed" line. Sourced by lib.sh
# and by tests that need no services.

passed=0
failed=0


# check NAME EXPECTED ACTUAL
check() {
  if [ "$2" = "$3" ]; then
    passed=$((passed + 1))
    echo "ok   $1"
  else
    failed=$((failed + 1))
    echo "FAIL $1: expected [$2], got [$3]"
  fi
}


# check_true NAME COMMAND...: passes when the command succeeds.
check_true() {
  local name=$1
  shift
  if "$@"; then
    passed=$((passed + 1))
    echo "ok   $name"
  else
    failed=$((failed + 1))
    echo "FAIL $name: [$*] is false"
  fi
}


# wait_for SECONDS COMMAND...: retries the command until it succeeds or
# the time is up.
wait_for() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    [ "$SECONDS" -ge "$deadline" ] && return 1
    sleep 0.2
  done
}


finish() {
  echo "${TEST_NAME:-test}: $passed passed, $failed failed"
  [ "$failed" -eq 0 ]
}
