#ifndef CORE_MEM_PROBE_H
#define CORE_MEM_PROBE_H

#include <stddef.h>
#include <stdint.h>

/*
 * The memory probe: what the process uses and what it may use, read from
 * /proc and the cgroup filesystem. mem_probe_open() finds, once, the
 * hierarchy that carries the memory controller (cgroup v1 "memory", else
 * the v2 unified hierarchy, so a hybrid host with an empty cgroup2 mount
 * still finds its v1 limit) and the directories from the process's cgroup
 * up to that mount's root. mem_probe_sample() then reads a few small files
 * without allocating.
 *
 * Which limit counts:
 * - The kernel enforces the tightest limit on the path, so the probe takes
 *   the smallest memory.max (v2) or memory.limit_in_bytes (v1) from the
 *   process's cgroup up to and including the mount root. "max" and v1's
 *   page-aligned LONG_MAX mean unlimited; missing or malformed files at a
 *   level are skipped.
 * - With no cgroup limit the limit is MemTotal from /proc/meminfo.
 * - DOCKER_MEMORY_LIMIT wins only when it is below the cgroup limit or
 *   there is none: an environment variable cannot lift the kernel's limit.
 *
 * Usage, memory.stat, memory.events and memory.pressure are read from the
 * cgroup that supplied the limit (the leaf when none did), so usage and
 * limit describe the same group of processes. Thresholds should use the
 * working set (usage minus inactive file pages, as the kubelet counts
 * it): page cache the kernel can drop is not pressure.
 */

/* A DOCKER_MEMORY_LIMIT under this is a typo (bytes meant as MiB), not a
 * limit anyone can run a worker in. */
#define MEM_LIMIT_FLOOR (64ULL * 1024 * 1024)

enum mem_source {
	MEM_SOURCE_ENV,
	MEM_SOURCE_CGROUP_V2,
	MEM_SOURCE_CGROUP_V1,
	MEM_SOURCE_MEMINFO,
};

struct mem_sample {
	uint64_t rss_bytes;   /* VmRSS of <proc>/self/status, or statm */
	uint64_t limit_bytes; /* effective limit: never 0 */
	enum mem_source limit_source;
	/* File the limit came from as the host names it (not under the
	 * test roots), e.g. "/sys/fs/cgroup/system.slice/memory.max" or
	 * "/proc/meminfo"; "" for env. Cut at 255 bytes. */
	char limit_file[256];
	int cgroup_version;	     /* 0 none found, 1 or 2: carries memory */
	uint64_t cgroup_limit_bytes; /* 0 = unlimited or none */
	/* Usage of the cgroup that supplied the limit (the leaf if none
	 * did); 0 if no cgroup or its usage file is unreadable. */
	uint64_t usage_bytes;
	/* From that cgroup's memory.stat: v2 inactive_file, v1
	 * total_inactive_file. */
	uint64_t inactive_file_bytes;
	/* usage - inactive_file (floored at 0); rss when usage is 0. */
	uint64_t working_set_bytes;
	int has_events; /* v2 memory.events of that cgroup was read */
	uint64_t oom_kill_events;
	uint64_t max_events;
	int has_psi; /* v2 memory.pressure of that cgroup was read */
	double psi_some_avg10;
	double psi_full_avg10;
};

/* Roots, memory cgroup directories and the env override, resolved once. */
struct mem_probe;

/* ---- names and parsing ---- */

/* "env", "cgroup_v2", "cgroup_v1" or "meminfo". */
const char *mem_source_name(enum mem_source s);

/* Parses a DOCKER_MEMORY_LIMIT value in text: optional surrounding
 * whitespace, a decimal number (a fraction is allowed: "2.5g"), an
 * optional unit b, k, kb, kib, m, mb, mib, g, gb, gib, t, tb, tib in any
 * case. Every unit is 1024-based, as Docker's --memory parser treats
 * them, so "2GB" is 2147483648. Fractions are truncated to whole bytes.
 * Returns 0 with *out set; -ENOENT for values that mean "no override"
 * (blank, "-1", "max", "unlimited" in any case, and any spelling of zero
 * such as "0" or "0g"); -EINVAL with a message naming the value in err
 * for junk, overflow or a value under MEM_LIMIT_FLOOR. *out is written
 * only on success. */
int mem_parse_limit(const char *text, uint64_t *out, char *err, size_t errlen);

/* ---- the probe ---- */

/* Resolves the probe. proc_root stands for /proc and sys_root for /sys,
 * so tests point both into a fixture tree; NULL or "" mean the real ones,
 * and then every mount point is read where mountinfo says. Under a
 * fixture sys_root, a cgroup mount point P is read at
 * <sys_root><P without "/sys"> when P is under /sys, else at
 * <sys_root>P. env_limit is the DOCKER_MEMORY_LIMIT text or NULL.
 * Missing /proc or cgroup files are not errors: the probe falls back to
 * meminfo.
 * Returns 0 with *out set (free it with mem_probe_close()) and warn
 * holding a text to log once, or "" (e.g. "DOCKER_MEMORY_LIMIT empty,
 * ignored"); -EINVAL when env_limit is junk, with err naming the
 * variable, the value and the fix (a configuration error); or -ENOMEM. */
int mem_probe_open(const char *proc_root, const char *sys_root,
		   const char *env_limit, struct mem_probe **out, char *warn,
		   size_t warnlen, char *err, size_t errlen);

/* Takes one sample into *out. Allocates nothing and never changes p, so
 * threads may sample one probe at once, each into its own *out. Returns
 * 0, or -EIO when RSS cannot be read (<proc>/self/status, then statm) or
 * no limit can be found at all (no override, no cgroup limit and
 * meminfo unreadable); *out is written only on success. */
int mem_probe_sample(const struct mem_probe *p, struct mem_sample *out);

/* Frees p; NULL is allowed. */
void mem_probe_close(struct mem_probe *p);

#endif
