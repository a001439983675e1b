#!/usr/bin/python3
"""Runs one program and reports what it cost, like GNU time but finer.

  meter.py OUTFILE TIMEOUT_S COMMAND [ARGS...]

Writes "wall_s user_s sys_s maxrss_kb" to OUTFILE and exits with the
program's status (124 when it ran past TIMEOUT_S, 128 + n when signal n
ended it).

CPU comes from wait4(): the kernel's user + sys total there is exact, while
GNU time prints each to 10 ms, a large part of a short run of a fast
consumer. Peak RSS comes from GNU time, which this script runs the program
under: a process forked from Python carries Python's resident set into its
high-water mark across exec, while one forked from the small GNU time
starts near zero. GNU time's own CPU is a millisecond or so.

The time limit ends only the program this script started, by its pid
(GNU time would die of SIGTERM and leave it running): SIGTERM first,
SIGKILL 10 s later.
"""
import os
import signal
import subprocess
import sys
import time

POLL_S = 0.02
KILL_AFTER_S = 10.0
GNU_TIME = "/usr/bin/time"


def wait_until(pid, deadline):
    """wait4(pid) until it exits or the deadline passes; None on timeout."""
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return status, usage
        if time.monotonic() >= deadline:
            return None
        time.sleep(POLL_S)


def children(pid):
    """Pids of the direct children of pid (here: the program GNU time ran)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def signal_program(timer_pid, sig):
    for pid in children(timer_pid):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def peak_rss_kb(path):
    """The last line of GNU time's output file: the line before it, if
    any, says the program failed, which the exit status already tells."""
    try:
        with open(path) as f:
            lines = f.read().split()
        return int(lines[-1])
    except (OSError, ValueError, IndexError):
        return 0


def main(argv):
    if len(argv) < 4:
        sys.stderr.write(__doc__)
        return 2
    out, limit, command = argv[1], float(argv[2]), argv[3:]
    rss_file = out + ".rss"

    start = time.monotonic()
    timer = subprocess.Popen([GNU_TIME, "-f", "%M", "-o", rss_file] + command)
    result = wait_until(timer.pid, start + limit)
    timed_out = result is None
    if timed_out:
        signal_program(timer.pid, signal.SIGTERM)
        result = wait_until(timer.pid, time.monotonic() + KILL_AFTER_S)
        if result is None:
            signal_program(timer.pid, signal.SIGKILL)
            result = wait_until(timer.pid, float("inf"))
    # Popen must not reap the pid again: wait4 already did.
    timer.returncode = 0
    wall = time.monotonic() - start
    status, usage = result

    with open(out, "w") as f:
        f.write(f"{wall:.3f} {usage.ru_utime:.6f} {usage.ru_stime:.6f} "
                f"{peak_rss_kb(rss_file)}\n")
    os.unlink(rss_file)
    if timed_out:
        return 124
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
