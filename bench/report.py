#!/usr/bin/python3
"""Turns the raw runs of bench/run.sh into the tables it prints.

  report.py summary OUT_DIR     reads OUT_DIR/runs.tsv (and meta.txt),
                                writes summary.tsv and summary.json there,
                                prints the tables as Markdown
  report.py callgrind N FILE_N FILE_1 [TOP]
                                reads callgrind_annotate output (inclusive,
                                then self) of a run of N messages and of a
                                run of one, and prints the top functions by
                                their difference per extra message
  report.py strace N LABEL FILE_N FILE_1 [LABEL FILE_N FILE_1 ...]
                                system calls per extra message from
                                strace -c tables, one column per label

Only the standard library, so Debian's python3 runs it as is.
"""
import csv
import json
import os
import re
import statistics
import sys

PROGRAM_ORDER = ["bare-multiple", "bare-single", "moonrabbit", "python"]
SIZE_ORDER = ["1K", "64K", "1M", "corpus"]
BARE = "bare-multiple"
MIB = 1024.0


def read_runs(out):
    with open(os.path.join(out, "runs.tsv"), newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def num(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return 0.0


def spread(values):
    """(median, min, max) of values, or Nones when there are none."""
    if not values:
        return None, None, None
    return statistics.median(values), min(values), max(values)


def order_key(row):
    def index(items, value):
        return items.index(value) if value in items else len(items)

    conc = row["conc"]
    return (index(SIZE_ORDER, row["size"]), row["job"],
            int(row["prefetch"]) if row["prefetch"].isdigit() else 0,
            int(conc) if conc.isdigit() else 0,
            index(PROGRAM_ORDER, row["program"]))


# ---- aggregation ------------------------------------------------------------

def startup_key(row):
    """The bare consumer has no job or threads: one start-up figure serves
    every cell it runs in."""
    if row["program"].startswith("bare-"):
        return (row["program"], "-", "-")
    return (row["program"], row["job"], row["conc"])


def startup_cpu(runs):
    """Median CPU seconds of a one-message drain per (program, job, conc):
    the cost of starting and stopping, taken off each matrix run so the
    per-message figure is per message."""
    found = {}
    for r in runs:
        if r["section"] != "startup" or r["check"] != "ok":
            continue
        found.setdefault(startup_key(r), []).append(
            num(r["user_s"]) + num(r["sys_s"]))
    return {k: statistics.median(v) for k, v in found.items()}


def group_runs(runs, startup):
    groups = {}
    for r in runs:
        if r["section"] == "startup":
            continue
        key = tuple(r[k] for k in ("section", "size", "prefetch", "conc",
                                   "job", "program"))
        g = groups.setdefault(key, {
            "section": r["section"], "size": r["size"],
            "prefetch": r["prefetch"], "conc": r["conc"], "job": r["job"],
            "program": r["program"], "count": int(num(r["count"])),
            "rates": [], "cpu_us": [], "rss_kb": [], "secs": [],
            "failed": 0, "notes": []})
        if r["check"] != "ok":
            g["failed"] += 1
            g["notes"].append(r["note"])
            continue
        g["rss_kb"].append(num(r["peak_rss_kb"]))
        if r["section"] == "idle":
            continue
        cpu = num(r["user_s"]) + num(r["sys_s"])
        base = startup.get(startup_key(r), 0.0)
        count = max(1, int(num(r["count"])))
        g["rates"].append(num(r["msgs_per_s"]))
        g["cpu_us"].append(max(0.0, cpu - base) / count * 1e6)
        g["secs"].append(num(r["secs"]))
    for g in groups.values():
        g["rate"] = spread(g["rates"])
        g["cpu"] = spread(g["cpu_us"])
        g["rss"] = spread(g["rss_kb"])
        g["runs"] = len(g["rss_kb"])
        med, lo, hi = g["rate"]
        g["spread_pct"] = (hi - lo) / med * 100 if med else None
    return groups


def ratio(a, b):
    return a / b if a is not None and b else None


def add_ratios(groups):
    """Each matrix figure over the bare consumer's (acking in batches) in
    the same size, job count and prefetch, and over the Python worker's at
    the same prefetch and concurrency too."""
    for key, g in groups.items():
        if g["section"] != "matrix":
            continue
        section, size, prefetch, conc, job, _ = key
        bare = groups.get((section, size, prefetch, "-", job, BARE))
        py = groups.get((section, size, prefetch, conc, job, "python"))
        for name in ("rate", "cpu", "rss"):
            mine = g[name][0]
            g[name + "_x_bare"] = ratio(mine, bare[name][0]) if bare else None
            g[name + "_x_py"] = ratio(mine, py[name][0]) if py else None


# ---- formatting -------------------------------------------------------------

def fmt(value, digits=0):
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def fmt_range(triple, digits=0, scale=1.0):
    med, lo, hi = triple
    if med is None:
        return "–"
    return (f"{fmt(med / scale, digits)} "
            f"({fmt(lo / scale, digits)}–{fmt(hi / scale, digits)})")


def fmt_x(value):
    return "–" if value is None else f"{value:.2f}×"


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def matrix_table(groups):
    rows = []
    for g in sorted((g for g in groups.values()
                     if g["section"] == "matrix"), key=order_key):
        rows.append([
            g["size"], g["job"], g["prefetch"], g["conc"], g["program"],
            f"{g['count']:,}", f"{g['runs']}" + (f" ({g['failed']} failed)"
                                                 if g["failed"] else ""),
            fmt_range(g["rate"]), fmt(g["spread_pct"]) + " %",
            fmt_range(g["cpu"], 1), fmt_range(g["rss"], 1, MIB),
            fmt_x(g["rate_x_bare"]), fmt_x(g["rate_x_py"]),
            fmt_x(g["cpu_x_bare"]), fmt_x(g["cpu_x_py"]),
            fmt_x(g["rss_x_bare"]), fmt_x(g["rss_x_py"])])
    return table(["size", "job", "prefetch", "threads", "program", "msgs",
                  "runs", "msg/s median (min–max)", "spread",
                  "CPU µs/msg", "peak RSS MiB", "msg/s ×bare", "msg/s ×py",
                  "CPU ×bare", "CPU ×py", "RSS ×bare", "RSS ×py"], rows)


def oversized_deltas(groups):
    """Per program: (mix RSS triple, base RSS triple, delta of medians)."""
    out = {}
    for g in groups.values():
        if g["section"] == "oversized":
            out.setdefault(g["program"], {})[g["size"]] = g
    deltas = {}
    for program, kinds in out.items():
        mix, base = kinds.get("mix"), kinds.get("base")
        if not mix or not base or mix["rss"][0] is None \
                or base["rss"][0] is None:
            continue
        deltas[program] = (mix, base, mix["rss"][0] - base["rss"][0])
    return deltas


def oversized_table(groups):
    rows = []
    deltas = oversized_deltas(groups)
    for program in PROGRAM_ORDER:
        if program not in deltas:
            continue
        mix, base, delta = deltas[program]
        rows.append([program, mix["prefetch"], mix["conc"],
                     fmt_range(mix["rss"], 1, MIB),
                     fmt_range(base["rss"], 1, MIB),
                     fmt(delta / MIB, 1), fmt_range(mix["rate"])])
    return table(["program", "prefetch", "threads", "peak RSS mix MiB",
                  "peak RSS without oversized MiB", "delta MiB",
                  "mix msg/s"], rows)


def idle_table(groups):
    rows = []
    for g in sorted((g for g in groups.values() if g["section"] == "idle"),
                    key=order_key):
        rows.append([g["program"], g["prefetch"], g["conc"], g["job"],
                     f"{g['runs']}", fmt_range(g["rss"], 1, MIB)])
    return table(["program", "prefetch", "threads", "job", "runs",
                  "idle RSS MiB (min–max)"], rows)


def startup_table(runs, startup):
    rss = {}
    for r in runs:
        if r["section"] == "startup" and r["check"] == "ok":
            key = (r["program"], r["job"], r["conc"])
            rss.setdefault(key, []).append(num(r["peak_rss_kb"]))
    rows = [[p, j, c, fmt(cpu * 1000, 1),
             fmt(statistics.median(rss[(p, j, c)]) / MIB, 1)]
            for (p, j, c), cpu in sorted(startup.items())]
    return table(["program", "job", "threads", "CPU ms (start, 1 msg, stop)",
                  "peak RSS MiB"], rows)


# ---- targets ----------------------------------------------------------------

def read_targets(path):
    targets = {}
    if not os.path.exists(path):
        return targets
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                name, op, value = line.split()[:3]
                targets[name] = (op, float(value))
    return targets


def matrix_ratios(groups, size, job, against, prefetch=None):
    """[(prefetch, conc, ratio of msg/s, ratio of CPU)] of moonrabbit
    against a program in the matrix cells of size and job."""
    out = []
    for key, g in sorted(groups.items(), key=lambda kv: order_key(kv[1])):
        if g["section"] != "matrix" or g["program"] != "moonrabbit" \
                or g["size"] != size or g["job"] != job:
            continue
        if prefetch and g["prefetch"] != prefetch:
            continue
        suffix = "_x_bare" if against == BARE else "_x_py"
        if g["rate" + suffix] is not None:
            out.append((g["prefetch"], g["conc"], g["rate" + suffix],
                        g["cpu" + suffix]))
    return out


def verdict(value, rule):
    if value is None or rule is None:
        return "not measured" if value is None else "no threshold"
    op, limit = rule
    ok = value >= limit if op == ">=" else value <= limit
    return "**met**" if ok else "**not met**"


def describe(ratios):
    return "; ".join(f"p{p} c{c}: {r:.2f}× (CPU {fmt_x(cpu)})"
                     for p, c, r, cpu in ratios)


def evaluate_targets(groups, targets):
    results = []

    def add(name, what, value, detail):
        rule = targets.get(name)
        threshold = f"{rule[0]} {rule[1]:g}" if rule else "–"
        results.append({"target": name, "what": what, "value": value,
                        "threshold": threshold,
                        "verdict": verdict(value, rule), "detail": detail})

    r = matrix_ratios(groups, "1K", "noop", BARE, prefetch="1000")
    add("noop_1k_p1000_vs_bare",
        "no-op 1 KiB, prefetch 1000: msg/s ÷ bare (-a multiple), best threads",
        max((x[2] for x in r), default=None), describe(r))
    for size, name in (("1K", "pg_1k_vs_python"),
                       ("corpus", "pg_corpus_vs_python")):
        r = matrix_ratios(groups, size, "pg", "python")
        add(name, f"default job + PostgreSQL, {size}: msg/s ÷ Python, "
            "worst prefetch/threads", min((x[2] for x in r), default=None),
            describe(r))
    r = matrix_ratios(groups, "1M", "noop", BARE)
    best = {}
    for p, _, x, _ in r:
        best[p] = max(best.get(p, 0), x)
    add("noop_1m_vs_bare",
        "no-op 1 MiB: msg/s ÷ bare (-a multiple), best threads, worst prefetch",
        min(best.values(), default=None), describe(r))
    deltas = oversized_deltas(groups)
    mine = deltas.get("moonrabbit")
    add("oversized_rss_delta_mib",
        "oversized mix: peak RSS delta MiB (moonrabbit)",
        mine[2] / MIB if mine else None,
        "; ".join(f"{p}: {d / MIB:+.1f} MiB" for p, (_, _, d)
                  in sorted(deltas.items())))
    idle = {g["program"]: g["rss"][0] for g in groups.values()
            if g["section"] == "idle" and g["rss"][0] is not None}
    add("idle_rss_mib", "idle RSS MiB, 8 threads, default policies",
        idle["moonrabbit"] / MIB if "moonrabbit" in idle else None,
        "; ".join(f"{p}: {v / MIB:.1f} MiB" for p, v in sorted(idle.items())))
    return results


def targets_table(results):
    rows = [[t["target"], t["what"], fmt(t["value"], 2), t["threshold"],
             t["verdict"], t["detail"]] for t in results]
    return table(["target", "comparison", "figure", "threshold", "verdict",
                  "detail"], rows)


# ---- commands ---------------------------------------------------------------

def write_summary(out, groups, targets):
    fields = ["section", "size", "prefetch", "conc", "job", "program",
              "count", "runs", "failed"]
    with open(os.path.join(out, "summary.tsv"), "w") as f:
        f.write("\t".join(fields + [
            "msgs_per_s", "msgs_per_s_min", "msgs_per_s_max", "spread_pct",
            "cpu_us_per_msg", "cpu_us_min", "cpu_us_max", "peak_rss_kb",
            "peak_rss_kb_min", "peak_rss_kb_max", "rate_x_bare",
            "rate_x_py", "cpu_x_bare", "cpu_x_py", "rss_x_bare",
            "rss_x_py"]) + "\n")
        for g in sorted(groups.values(), key=order_key):
            cells = [str(g[k]) for k in fields]
            for name in ("rate", "cpu", "rss"):
                cells += ["" if v is None else f"{v:.6g}" for v in g[name]]
                if name == "rate":
                    cells.append("" if g["spread_pct"] is None
                                 else f"{g['spread_pct']:.1f}")
            for name in ("rate", "cpu", "rss"):
                for ref in ("_x_bare", "_x_py"):
                    v = g.get(name + ref)
                    cells.append("" if v is None else f"{v:.4g}")
            f.write("\t".join(cells) + "\n")
    slim = [{k: v for k, v in g.items() if k not in ("notes",)}
            for g in sorted(groups.values(), key=order_key)]
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump({"groups": slim, "targets": targets}, f, indent=1)


def cmd_summary(out):
    runs = read_runs(out)
    startup = startup_cpu(runs)
    groups = group_runs(runs, startup)
    add_ratios(groups)
    here = os.path.dirname(os.path.abspath(__file__))
    targets = evaluate_targets(groups,
                               read_targets(os.path.join(here, "targets.tsv")))
    write_summary(out, groups, targets)

    meta = os.path.join(out, "meta.txt")
    if os.path.exists(meta):
        print("```")
        print(open(meta).read().rstrip())
        print("```\n")
    sections = {r["section"] for r in runs}
    net = "net of start-up" if startup else "including start-up"
    if "matrix" in sections:
        print(f"## Matrix (median of runs; CPU µs/msg {net}; ratios are "
              "moonrabbit-or-peer ÷ reference)\n")
        print(matrix_table(groups) + "\n")
    if "oversized" in sections:
        print("## Oversized bodies: peak RSS\n")
        print(oversized_table(groups) + "\n")
    if "idle" in sections:
        print("## Idle RSS\n")
        print(idle_table(groups) + "\n")
    if startup:
        print("## Start-up (drain of one message)\n")
        print(startup_table(runs, startup) + "\n")
    print("## Targets\n")
    print(targets_table(targets) + "\n")
    failed = [r for r in runs if r["check"] != "ok"]
    for r in failed:
        print(f"FAILED: {r['section']} {r['size']} p{r['prefetch']} "
              f"c{r['conc']} {r['job']} {r['program']} rep {r['rep']}: "
              f"{r['note']}")


ANNOTATE_LINE = re.compile(r"^\s*([\d,]+)\s+\(\s*([\d.]+)%\)\s+(.+?)\s*$")


def short_name(raw):
    """'dir/core/pool.c:worker_main [obj]' -> 'pool.c:worker_main'; an
    unnamed function keeps its object's name, which says whose it is."""
    m = re.match(r"^(.*?)(?:\s+\[([^\]]*)\])?$", raw)
    where, obj = m.group(1), m.group(2)
    path, _, func = where.rpartition(":")
    if path == "???" and obj:
        return f"{os.path.basename(obj)}:{func}"
    return f"{os.path.basename(path)}:{func}" if path else where


def parse_annotate(text):
    """[(Ir, name)] in the order callgrind_annotate printed them. The same
    function can appear twice, under its absolute and its relative source
    path; the first is kept."""
    out, seen = [], set()
    for line in text.splitlines():
        m = ANNOTATE_LINE.match(line)
        if not m or "PROGRAM TOTALS" in m.group(3):
            continue
        name = short_name(m.group(3))
        if name not in seen:
            seen.add(name)
            out.append((int(m.group(1).replace(",", "")), name))
    return out


def annotate_costs(path):
    """({name: Ir} inclusive, {name: Ir} self, total Ir) from a file of
    callgrind_annotate output, inclusive listing first. Names with a
    recursion mark ('2) repeat a function's cost one level down and are
    left out."""
    text = open(path).read()
    inclusive_part, _, self_part = text.partition("==== SELF ====")
    total = re.search(r"([\d,]+)\s+\(100\.0%\)\s+PROGRAM TOTALS",
                      inclusive_part)
    costs = []
    for part in (inclusive_part, self_part):
        costs.append({name: ir for ir, name in parse_annotate(part)
                      if "'" not in name})
    return costs[0], costs[1], int(total.group(1).replace(",", ""))


def cmd_callgrind(messages, path_n, path_1, top=20):
    inc_n, self_n, total_n = annotate_costs(path_n)
    inc_1, self_1, total_1 = annotate_costs(path_1)
    extra = messages - 1
    per_msg = (total_n - total_1) / extra
    print(f"Instructions: {total_n:,} for {messages:,} messages, "
          f"{total_1:,} for one; {per_msg:,.0f} per message\n")
    for title, big, one in (("inclusive", inc_n, inc_1),
                            ("self", self_n, self_1)):
        diff = {name: (ir - one.get(name, 0)) / extra
                for name, ir in big.items()}
        ranked = sorted(diff.items(), key=lambda kv: -kv[1])[:top]
        rows = [[f"{ir:,.0f}", f"{ir / per_msg * 100:.1f} %", name]
                for name, ir in ranked]
        print(f"Top {top} by {title} cost per message\n")
        print(table([f"Ir/msg ({title})", "of all", "function"], rows)
              + "\n")


STRACE_LINE = re.compile(
    r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:(\d+)\s+)?(\w+)\s*$")


def strace_calls(path):
    """{syscall: calls} from the table strace -c writes."""
    calls = {}
    for line in open(path):
        m = STRACE_LINE.match(line)
        if m and m.group(3) != "total":
            calls[m.group(3)] = int(m.group(1))
    return calls


def cmd_strace(messages, triples, top=12):
    """triples: [label, file of N messages, file of one message] ... ;
    prints calls per extra message, one column per label."""
    labels, diffs = [], []
    for label, path_n, path_1 in triples:
        big, one = strace_calls(path_n), strace_calls(path_1)
        labels.append(label)
        diffs.append({k: (v - one.get(k, 0)) / (messages - 1)
                      for k, v in big.items()})
    names = sorted(set().union(*diffs), key=lambda k: -max(
        d.get(k, 0) for d in diffs))[:top]
    rows = [[name] + [f"{d.get(name, 0):.3f}" for d in diffs]
            for name in names]
    rows.append(["all"] + [f"{sum(d.values()):.2f}" for d in diffs])
    print(table(["syscall"] + [f"calls/msg, threads: {x}" for x in labels],
                rows) + "\n")


def main(argv):
    if len(argv) == 3 and argv[1] == "summary":
        cmd_summary(argv[2])
    elif len(argv) in (5, 6) and argv[1] == "callgrind":
        cmd_callgrind(int(argv[2]), argv[3], argv[4],
                      int(argv[5]) if len(argv) == 6 else 20)
    elif len(argv) >= 6 and argv[1] == "strace" and len(argv) % 3 == 0:
        rest = argv[3:]
        cmd_strace(int(argv[2]), [rest[i:i + 3]
                                  for i in range(0, len(rest), 3)])
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
