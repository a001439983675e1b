/*
 * The probe does its searching once. mem_probe_open() reads
 * /proc/self/cgroup and /proc/self/mountinfo, picks the hierarchy that
 * carries the memory controller and stores every directory from the
 * process's cgroup up to that mount's root, each both as it is read (under
 * the fixture root in tests) and as the host names it (for logs). A sample
 * then walks those directories with open()/read() into stack buffers, so
 * the governor can call it under memory pressure without allocating.
 *
 * cgroup files are parsed strictly: a value is digits and a newline or
 * "max", nothing else. "12abc" is not 12 but "unknown", and an unknown
 * level is skipped like a missing one; guessing a limit from junk is how
 * thresholds end up firing at once.
 */
#include "mem_probe.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Files read on the sample path are small; memory.stat, the largest, is
 * about 3 KiB on current kernels. */
#define READ_MAX 8192

/* v1 reports "no limit" as LONG_MAX rounded down to the page size:
 * 0x7FFFFFFFFFFFF000 with 4 KiB pages, 0x7FFFFFFFFFFF0000 with 64 KiB
 * pages (arm64, ppc64le). Everything from the lower one up is unlimited. */
#define CG_UNLIMITED_MIN 0x7FFFFFFFFFFF0000ULL

/* Fraction digits beyond this would overflow the exact scaling below;
 * nobody writes a memory size that precisely. */
#define FRACTION_DIGITS_MAX 18

struct cg_names {
	const char *limit;
	const char *usage;
	const char *inactive; /* key in memory.stat */
};

/* v1's memory.stat has both inactive_file (this cgroup alone) and
 * total_inactive_file (with descendants); usage counts descendants, so
 * the total is the one to subtract. */
static const struct cg_names v1_names = { "memory.limit_in_bytes",
					  "memory.usage_in_bytes",
					  "total_inactive_file" };
static const struct cg_names v2_names = { "memory.max", "memory.current",
					  "inactive_file" };

struct cg_level {
	char *path; /* directory as read, under sys_root */
	char *host; /* the same directory as the host names it */
};

struct mem_probe {
	char *proc; /* stands for /proc */
	char *sys;  /* stands for /sys; "" for the real one */
	int version;
	struct cg_level *levels; /* leaf first, mount root last */
	size_t nlevels;
	int has_env;
	uint64_t env_limit;
	uint64_t page_size;
};

enum cg_value { CG_BAD = -1, CG_NO_LIMIT = 0, CG_NUMBER = 1 };


const char *mem_source_name(enum mem_source s)
{
	switch (s) {
	case MEM_SOURCE_ENV:
		return "env";
	case MEM_SOURCE_CGROUP_V2:
		return "cgroup_v2";
	case MEM_SOURCE_CGROUP_V1:
		return "cgroup_v1";
	case MEM_SOURCE_MEMINFO:
		return "meminfo";
	}
	return "unknown";
}


/* ---- small text helpers ---- */

static int is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' ||
	       c == '\f';
}


static int is_digit(char c)
{
	return c >= '0' && c <= '9';
}


static char lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}


/* True when [s, e) equals word, ignoring ASCII case. */
static int equals_nocase(const char *s, const char *e, const char *word)
{
	size_t n = strlen(word);

	if ((size_t)(e - s) != n)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (lower(s[i]) != word[i])
			return 0;
	return 1;
}


/* True when list, split at any of seps, holds word as a whole item. */
static int has_item(const char *list, const char *word, const char *seps)
{
	size_t n = strlen(word);

	for (const char *s = list; *s; s += strcspn(s, seps)) {
		s += strspn(s, seps);
		if (strncmp(s, word, n) == 0 && (!s[n] || strchr(seps, s[n])))
			return 1;
	}
	return 0;
}


/* Reads decimal digits at *s into *v, moving *s past them. Returns 0, or
 * -1 when there is no digit or the number does not fit. */
static int parse_u64(const char **s, uint64_t *v)
{
	const char *p = *s;
	uint64_t n = 0;

	if (!is_digit(*p))
		return -1;
	for (; is_digit(*p); p++) {
		unsigned d = (unsigned)(*p - '0');

		if (n > (UINT64_MAX - d) / 10)
			return -1;
		n = n * 10 + d;
	}
	*s = p;
	*v = n;
	return 0;
}


/* ---- DOCKER_MEMORY_LIMIT ---- */

struct unit {
	const char *name;
	unsigned shift;
};

/* All 1024-based, as Docker's --memory parser (go-units RAMInBytes)
 * reads them: "2GB" is 2147483648, not 2000000000. */
static const struct unit units[] = {
	{ "", 0 },     { "b", 0 },    { "k", 10 },   { "kb", 10 },
	{ "kib", 10 }, { "m", 20 },   { "mb", 20 },  { "mib", 20 },
	{ "g", 30 },   { "gb", 30 },  { "gib", 30 }, { "t", 40 },
	{ "tb", 40 },  { "tib", 40 },
};

struct number {
	uint64_t whole;
	uint64_t frac;	   /* digits after the point, as an integer */
	uint64_t frac_den; /* 10^(number of those digits) */
	int zero;	   /* every digit is 0 */
};


/* Copies [s, e) into buf for an error message: at most 40 bytes, control
 * and non-ASCII bytes shown as '?', so a stray byte cannot break the log
 * line that carries it. */
static void show_value(const char *s, const char *e, char *buf, size_t size)
{
	size_t n = 0;

	for (; s < e && n + 4 < size && n < 40; s++)
		buf[n++] = (*s < 0x20 || *s > 0x7e) ? '?' : *s;
	if (s < e && n + 4 <= size) {
		memcpy(buf + n, "...", 3);
		n += 3;
	}
	buf[n] = '\0';
}


static int means_no_override(const char *s, const char *e)
{
	static const char *const words[] = { "", "0", "-1", "max",
					     "unlimited" };

	for (size_t i = 0; i < sizeof words / sizeof *words; i++)
		if (equals_nocase(s, e, words[i]))
			return 1;
	return 0;
}


/* Reads "digits[.digits]" at *s. Returns 0; -EINVAL without a number;
 * -ERANGE when the whole part overflows; -E2BIG when the fraction has
 * more than FRACTION_DIGITS_MAX digits. */
static int parse_number(const char **s, struct number *n)
{
	const char *p = *s;
	int digits = 0;

	n->frac = 0;
	n->frac_den = 1;
	if (parse_u64(&p, &n->whole) < 0)
		return is_digit(*p) ? -ERANGE : -EINVAL;
	n->zero = n->whole == 0;
	if (*p == '.' && is_digit(p[1])) {
		for (p++; is_digit(*p); p++) {
			if (++digits > FRACTION_DIGITS_MAX)
				return -E2BIG;
			n->frac = n->frac * 10 + (uint64_t)(*p - '0');
			n->frac_den *= 10;
		}
		n->zero = n->zero && n->frac == 0;
	}
	*s = p;
	return 0;
}


/* Computes floor((whole + frac / frac_den) * 2^shift) exactly: the
 * fraction is doubled shift times, each carry becoming one more bit, so no
 * intermediate exceeds 2 * 10^18. Returns 0 or -ERANGE on overflow. */
static int scale(const struct number *n, unsigned shift, uint64_t *out)
{
	uint64_t frac_bytes = 0, r = n->frac;

	if (n->whole > UINT64_MAX >> shift)
		return -ERANGE;
	for (unsigned i = 0; i < shift; i++) {
		r *= 2;
		frac_bytes = frac_bytes << 1 | (r >= n->frac_den);
		if (r >= n->frac_den)
			r -= n->frac_den;
	}
	if ((n->whole << shift) > UINT64_MAX - frac_bytes)
		return -ERANGE;
	*out = (n->whole << shift) + frac_bytes;
	return 0;
}


static const struct unit *find_unit(const char *s, const char *e)
{
	for (size_t i = 0; i < sizeof units / sizeof *units; i++)
		if (equals_nocase(s, e, units[i].name))
			return &units[i];
	return NULL;
}


static int refuse(char *err, size_t errlen, const char *shown, const char *why)
{
	snprintf(err, errlen, "\"%s\" %s", shown, why);
	return -EINVAL;
}


/* Parses [s, e), already trimmed and not a "no override" word, into
 * *out. shown is the value as error messages print it. */
static int parse_size(const char *s, const char *e, const char *shown,
		      uint64_t *out, char *err, size_t errlen)
{
	const struct unit *u;
	struct number n;
	int rc = parse_number(&s, &n);

	if (rc == -EINVAL)
		return refuse(err, errlen, shown, "is not a memory size");
	if (rc == -ERANGE)
		return refuse(err, errlen, shown, "is too large");
	if (rc == -E2BIG)
		return refuse(err, errlen, shown,
			      "has too many digits after the point");

	u = find_unit(s, e);
	if (!u)
		return refuse(err, errlen, shown,
			      "has an unknown unit (use b, k, m, g or t)");
	if (n.zero)
		return -ENOENT;
	if (scale(&n, u->shift, out) < 0)
		return refuse(err, errlen, shown, "is too large");
	return 0;
}


int mem_parse_limit(const char *text, uint64_t *out, char *err, size_t errlen)
{
	const char *s = text, *e = text + strlen(text);
	char shown[48];
	uint64_t v;
	int rc;

	while (s < e && is_space(*s))
		s++;
	while (e > s && is_space(e[-1]))
		e--;
	if (means_no_override(s, e))
		return -ENOENT;

	show_value(s, e, shown, sizeof shown);
	rc = parse_size(s, e, shown, &v, err, errlen);
	if (rc < 0)
		return rc;
	if (v < MEM_LIMIT_FLOOR) {
		snprintf(err, errlen,
			 "\"%s\" is %llu bytes, under the 64 MiB floor", shown,
			 (unsigned long long)v);
		return -EINVAL;
	}
	*out = v;
	return 0;
}


/* ---- reading files on the sample path ---- */

/* Reads the file dir/name (name may be NULL) into buf as a string. A
 * file larger than buf is cut after its last complete line, so no number
 * is read half. Returns the length or a negative errno. */
static int read_small(const char *dir, const char *name, char *buf, size_t size)
{
	char path[PATH_MAX];
	size_t len = 0;
	ssize_t n = 0;
	int fd, rc;

	rc = snprintf(path, sizeof path, "%s%s%s", dir, name ? "/" : "",
		      name ? name : "");
	if (rc < 0 || (size_t)rc >= sizeof path)
		return -ENAMETOOLONG;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;

	while (len < size - 1) {
		n = read(fd, buf + len, size - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	rc = n < 0 ? -errno : 0;
	close(fd);
	if (rc < 0)
		return rc;

	buf[len] = '\0';
	if (len == size - 1 && strrchr(buf, '\n'))
		*(strrchr(buf, '\n') + 1) = '\0';
	return (int)strlen(buf);
}


/* Finds the line of buf that starts with key followed by ':', ' ' or a
 * tab, and returns what follows the key, or NULL. */
static const char *find_key(const char *buf, const char *key)
{
	size_t n = strlen(key);

	for (const char *s = buf; *s; s += strcspn(s, "\n"), s += !!*s)
		if (strncmp(s, key, n) == 0 && s[n] && strchr(": \t", s[n]))
			return s + n;
	return NULL;
}


/* Reads the number after a key: separators, digits, optionally " kB"
 * (scaled to bytes), then the end of the line. Returns 0 or -1. */
static int key_value(const char *s, uint64_t *v)
{
	uint64_t n;
	int kb = 0;

	s += strspn(s, ": \t");
	if (parse_u64(&s, &n) < 0)
		return -1;
	s += strspn(s, " \t");
	if (strncmp(s, "kB", 2) == 0) {
		kb = 1;
		s += 2;
	}
	if (*s && *s != '\n')
		return -1;
	if (kb && n > UINT64_MAX / 1024)
		return -1;
	*v = kb ? n * 1024 : n;
	return 0;
}


/* Reads "key value" from the file dir/name into *v. Returns 0 or -1. */
static int read_key(const char *dir, const char *name, const char *key,
		    uint64_t *v)
{
	char buf[READ_MAX];
	const char *s;

	if (read_small(dir, name, buf, sizeof buf) < 0)
		return -1;
	s = find_key(buf, key);
	return s ? key_value(s, v) : -1;
}


/* Classifies a cgroup value file's text: digits or "max", then at most a
 * newline. Values from CG_UNLIMITED_MIN up are unlimited as well. */
static enum cg_value cg_parse(const char *s, uint64_t *v)
{
	if (strcmp(s, "max") == 0 || strcmp(s, "max\n") == 0)
		return CG_NO_LIMIT;
	if (parse_u64(&s, v) < 0 || (*s && strcmp(s, "\n") != 0))
		return CG_BAD;
	return *v >= CG_UNLIMITED_MIN ? CG_NO_LIMIT : CG_NUMBER;
}


static enum cg_value read_cg_value(const char *dir, const char *name,
				   uint64_t *v)
{
	char buf[64];

	if (read_small(dir, name, buf, sizeof buf) < 0)
		return CG_BAD;
	return cg_parse(buf, v);
}


/* Reads "avg10=<decimal>" from the PSI line that starts with kind.
 * Parsed by hand because strtod() follows the locale's decimal point.
 * Returns 0 or -1. */
static int psi_avg10(const char *buf, const char *kind, double *out)
{
	const char *s = find_key(buf, kind);
	uint64_t whole, frac = 0;
	double den = 1;

	if (!s || strncmp(s, " avg10=", 7) != 0)
		return -1;
	s += 7;
	if (parse_u64(&s, &whole) < 0)
		return -1;
	if (*s == '.')
		for (s++; is_digit(*s) && den < 1e15; s++) {
			frac = frac * 10 + (uint64_t)(*s - '0');
			den *= 10;
		}
	*out = (double)whole + (double)frac / den;
	return 0;
}


/* ---- one sample ---- */

static int read_rss(const struct mem_probe *p, uint64_t *rss)
{
	char buf[READ_MAX];
	const char *s;
	uint64_t size, pages;

	if (read_key(p->proc, "self/status", "VmRSS", rss) == 0)
		return 0;

	/* statm gives the same figure in pages: "size resident ...". */
	if (read_small(p->proc, "self/statm", buf, sizeof buf) < 0)
		return -EIO;
	s = buf;
	if (parse_u64(&s, &size) < 0 || *s++ != ' ' ||
	    parse_u64(&s, &pages) < 0 || pages > UINT64_MAX / p->page_size)
		return -EIO;
	*rss = pages * p->page_size;
	return 0;
}


/* The v2 extras of the chosen cgroup dir: OOM events and pressure. */
static void read_v2_extras(const char *dir, struct mem_sample *s)
{
	char buf[READ_MAX];

	if (read_small(dir, "memory.events", buf, sizeof buf) >= 0) {
		const char *v = find_key(buf, "oom_kill");

		s->has_events = 1;
		if (!v || key_value(v, &s->oom_kill_events) < 0)
			s->oom_kill_events = 0;
		v = find_key(buf, "max");
		if (!v || key_value(v, &s->max_events) < 0)
			s->max_events = 0;
	}
	if (read_small(dir, "memory.pressure", buf, sizeof buf) >= 0 &&
	    psi_avg10(buf, "some", &s->psi_some_avg10) == 0) {
		s->has_psi = 1;
		if (psi_avg10(buf, "full", &s->psi_full_avg10) < 0)
			s->psi_full_avg10 = 0;
	}
}


/* Walks the levels from the leaf up, keeping the smallest limit (the
 * lowest level on a tie), then reads usage and the rest from the level
 * that supplied it, or from the leaf. */
static void read_cgroup(const struct mem_probe *p, struct mem_sample *s)
{
	const struct cg_names *nm = p->version == 1 ? &v1_names : &v2_names;
	const struct cg_level *lv;
	size_t pick = 0;
	uint64_t v;

	for (size_t i = 0; i < p->nlevels; i++) {
		enum cg_value kind =
			read_cg_value(p->levels[i].path, nm->limit, &v);

		/* A zero limit could not hold the running process: junk. */
		if (kind != CG_NUMBER || !v)
			continue;
		if (!s->cgroup_limit_bytes || v < s->cgroup_limit_bytes) {
			s->cgroup_limit_bytes = v;
			pick = i;
		}
	}

	lv = &p->levels[pick];
	if (s->cgroup_limit_bytes)
		snprintf(s->limit_file, sizeof s->limit_file, "%s/%s", lv->host,
			 nm->limit);
	if (read_cg_value(lv->path, nm->usage, &v) == CG_NUMBER)
		s->usage_bytes = v;
	if (read_key(lv->path, "memory.stat", nm->inactive, &v) == 0)
		s->inactive_file_bytes = v;
	if (p->version == 2)
		read_v2_extras(lv->path, s);
}


/* Settles limit_bytes, limit_source and limit_file once the cgroup has
 * been read. Returns 0 or -EIO when there is no limit at all. */
static int choose_limit(const struct mem_probe *p, struct mem_sample *s)
{
	uint64_t v;

	if (s->cgroup_limit_bytes) {
		s->limit_bytes = s->cgroup_limit_bytes;
		s->limit_source = p->version == 1 ? MEM_SOURCE_CGROUP_V1
						  : MEM_SOURCE_CGROUP_V2;
	} else if (!p->has_env) {
		if (read_key(p->proc, "meminfo", "MemTotal", &v) < 0 || !v)
			return -EIO;
		s->limit_bytes = v;
		s->limit_source = MEM_SOURCE_MEMINFO;
		snprintf(s->limit_file, sizeof s->limit_file, "/proc/meminfo");
	}

	/* The kernel enforces its own limit whatever the environment says,
	 * so the override may only lower it. */
	if (p->has_env &&
	    (!s->cgroup_limit_bytes || p->env_limit < s->cgroup_limit_bytes)) {
		s->limit_bytes = p->env_limit;
		s->limit_source = MEM_SOURCE_ENV;
		s->limit_file[0] = '\0';
	}
	return 0;
}


int mem_probe_sample(const struct mem_probe *p, struct mem_sample *out)
{
	struct mem_sample s;

	memset(&s, 0, sizeof s);
	if (read_rss(p, &s.rss_bytes) < 0)
		return -EIO;
	s.cgroup_version = p->version;
	if (p->version)
		read_cgroup(p, &s);
	if (choose_limit(p, &s) < 0)
		return -EIO;

	if (!s.usage_bytes)
		s.working_set_bytes = s.rss_bytes;
	else if (s.usage_bytes > s.inactive_file_bytes)
		s.working_set_bytes = s.usage_bytes - s.inactive_file_bytes;
	*out = s;
	return 0;
}


/* ---- finding the memory cgroup, once ---- */

/* One line of mountinfo, split in place: the fields the probe needs. */
struct mount_line {
	char *root;  /* field 4: the mount's root within its hierarchy */
	char *point; /* field 5: where it is mounted */
	char *fstype;
	char *options; /* super options, after the fstype and source */
};


/* Undoes mountinfo's octal escapes (\040 for a space) in place. */
static void unescape(char *s)
{
	char *d = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' &&
		    s[2] <= '7' && s[3] >= '0' && s[3] <= '7') {
			*d++ = (char)((s[1] - '0') << 6 | (s[2] - '0') << 3 |
				      (s[3] - '0'));
			s += 3;
		} else {
			*d++ = *s;
		}
	}
	*d = '\0';
}


/* Splits a mountinfo line: "id parent maj:min root point opts [tags] -
 * fstype source superopts". Returns 0 or -1 for a line without them. */
static int split_mount(char *line, struct mount_line *m)
{
	char *save = NULL, *f;
	int i = 0, sep = 0;

	memset(m, 0, sizeof *m);
	for (f = strtok_r(line, " \n", &save); f;
	     f = strtok_r(NULL, " \n", &save), i++) {
		if (i == 3)
			m->root = f;
		else if (i == 4)
			m->point = f;
		else if (i >= 6 && !sep && strcmp(f, "-") == 0)
			sep = i;
		else if (sep && i == sep + 1)
			m->fstype = f;
		else if (sep && i == sep + 3)
			m->options = f;
	}
	if (!m->options)
		return -1;
	unescape(m->root);
	unescape(m->point);
	return 0;
}


/* Returns the part of path below root ("" for root itself), or NULL when
 * path is outside root or climbs out of it with "..", as a process moved
 * out of its cgroup namespace shows. */
static const char *below_root(const char *root, const char *path)
{
	size_t n = strcmp(root, "/") == 0 ? 0 : strlen(root);
	const char *rel = path + n;

	if (strncmp(path, root, n) != 0 || (*rel && *rel != '/'))
		return NULL;
	if (strstr(rel, "/../") ||
	    (strlen(rel) >= 3 && strcmp(rel + strlen(rel) - 3, "/..") == 0))
		return NULL;
	return rel;
}


static int mount_carries(const struct mount_line *m, int version)
{
	if (version == 2)
		return strcmp(m->fstype, "cgroup2") == 0;
	return strcmp(m->fstype, "cgroup") == 0 &&
	       has_item(m->options, "memory", ",");
}


/* Finds in <proc>/self/mountinfo the first mount of the wanted version
 * whose root holds cg_path. Sets *point (malloc'd, the caller frees) and
 * *rel (inside cg_path). Returns 1 when found, 0 when not, or -ENOMEM. */
static int find_mount(const struct mem_probe *p, int version,
		      const char *cg_path, char **point, const char **rel)
{
	char path[PATH_MAX];
	char *line = NULL;
	size_t cap = 0;
	struct mount_line m;
	FILE *f;
	int rc = 0;

	snprintf(path, sizeof path, "%s/self/mountinfo", p->proc);
	f = fopen(path, "re");
	if (!f)
		return 0;
	while (rc == 0 && getline(&line, &cap, f) >= 0) {
		if (split_mount(line, &m) < 0 || !mount_carries(&m, version))
			continue;
		*rel = below_root(m.root, cg_path);
		if (!*rel)
			continue;
		*point = strdup(m.point);
		rc = *point ? 1 : -ENOMEM;
	}
	free(line);
	fclose(f);
	return rc;
}


/* Reads <proc>/self/cgroup: *v1 gets the path of the line whose v1
 * controllers include memory, *v2 the path of the "0::" line; each is
 * malloc'd or NULL. Returns 0 or -ENOMEM. */
static int read_cgroup_paths(const struct mem_probe *p, char **v1, char **v2)
{
	char path[PATH_MAX];
	char *line = NULL, *ctl, *cg;
	size_t cap = 0;
	FILE *f;
	int rc = 0;

	snprintf(path, sizeof path, "%s/self/cgroup", p->proc);
	f = fopen(path, "re");
	if (!f)
		return 0;
	while (rc == 0 && getline(&line, &cap, f) >= 0) {
		line[strcspn(line, "\n")] = '\0';
		ctl = strchr(line, ':');
		cg = ctl ? strchr(ctl + 1, ':') : NULL;
		if (!cg)
			continue;
		*ctl++ = '\0';
		*cg++ = '\0';
		if (!*v2 && strcmp(line, "0") == 0 && !*ctl)
			rc = (*v2 = strdup(cg)) ? 0 : -ENOMEM;
		else if (!*v1 && has_item(ctl, "memory", ","))
			rc = (*v1 = strdup(cg)) ? 0 : -ENOMEM;
	}
	free(line);
	fclose(f);
	return rc;
}


/* Returns a malloc'd a + the first blen bytes of b, or NULL. */
static char *join(const char *a, const char *b, size_t blen)
{
	size_t alen = strlen(a);
	char *s = malloc(alen + blen + 1);

	if (s) {
		memcpy(s, a, alen);
		memcpy(s + alen, b, blen);
		s[alen + blen] = '\0';
	}
	return s;
}


/* Where the mount point is read: under a fixture sys_root, /sys/... maps
 * to <sys>/... and anything else to <sys><point>. Returns malloc'd. */
static char *read_point(const struct mem_probe *p, const char *point)
{
	if (!p->sys[0])
		return strdup(point);
	if (strncmp(point, "/sys", 4) == 0 && (!point[4] || point[4] == '/'))
		point += 4;
	return join(p->sys, point, strlen(point));
}


/* Fills p->levels with point + rel and each parent of it up to point.
 * Returns 0 or -ENOMEM. */
static int build_levels(struct mem_probe *p, const char *point, const char *rel)
{
	char *base = read_point(p, point);
	size_t len = strlen(rel), n = 1;
	int rc = -ENOMEM;

	while (len && rel[len - 1] == '/')
		len--;
	for (size_t i = 0; i < len; i++)
		n += rel[i] == '/';
	p->levels = calloc(n, sizeof *p->levels);
	if (!base || !p->levels)
		goto out;

	while (p->nlevels < n) {
		struct cg_level *lv = &p->levels[p->nlevels++];

		lv->path = join(base, rel, len);
		lv->host = join(point, rel, len);
		if (!lv->path || !lv->host)
			goto out;
		while (len && rel[len - 1] != '/')
			len--;
		if (len)
			len--;
	}
	rc = 0;
out:
	free(base);
	return rc;
}


/* A cgroup2 mount whose root lists controllers but not memory carries no
 * memory limit: the empty "unified" hierarchy of a hybrid host. An
 * unreadable list says nothing, so it does not disqualify the mount. */
static int v2_has_memory(const struct mem_probe *p, const char *point)
{
	char buf[512];
	char *dir = read_point(p, point);
	int rc;

	if (!dir)
		return -ENOMEM;
	rc = read_small(dir, "cgroup.controllers", buf, sizeof buf) < 0 ||
	     has_item(buf, "memory", " \n");
	free(dir);
	return rc;
}


/* Picks the hierarchy that carries memory and fills p->levels; leaves
 * p->version 0 when there is none. Returns 0 or -ENOMEM. */
static int find_cgroup(struct mem_probe *p)
{
	char *v1 = NULL, *v2 = NULL, *point = NULL;
	const char *rel = NULL;
	int rc, version = 1;

	rc = read_cgroup_paths(p, &v1, &v2);
	if (rc == 0 && v1)
		rc = find_mount(p, 1, v1, &point, &rel);
	if (rc == 0 && v2) {
		version = 2;
		rc = find_mount(p, 2, v2, &point, &rel);
		if (rc == 1)
			rc = v2_has_memory(p, point);
	}
	if (rc < 0)
		goto out;

	if (rc == 1) {
		rc = build_levels(p, point, rel);
		p->version = rc == 0 ? version : 0;
	}
out:
	free(point);
	free(v1);
	free(v2);
	return rc;
}


/* Told to the operator with every refused DOCKER_MEMORY_LIMIT. */
#define ENV_FIX "set bytes or a size such as 2g (1024-based), or unset it"


/* Applies env_limit. Returns 0 (with warn set for a value that means no
 * override) or -EINVAL with err naming the variable, value and fix. */
static int set_env(struct mem_probe *p, const char *env_limit, char *warn,
		   size_t warnlen, char *err, size_t errlen)
{
	const char *s = env_limit;
	char why[128], shown[48];
	int rc;

	if (!env_limit)
		return 0;
	rc = mem_parse_limit(env_limit, &p->env_limit, why, sizeof why);
	p->has_env = rc == 0;
	if (rc == -EINVAL) {
		snprintf(err, errlen, "invalid DOCKER_MEMORY_LIMIT: %s; %s",
			 why, ENV_FIX);
		return rc;
	}
	if (rc == 0)
		return 0;

	s += strspn(s, " \t\n\r\v\f");
	show_value(s, s + strcspn(s, " \t\n\r\v\f"), shown, sizeof shown);
	if (!*s)
		snprintf(warn, warnlen, "DOCKER_MEMORY_LIMIT empty, ignored");
	else
		snprintf(warn, warnlen,
			 "DOCKER_MEMORY_LIMIT=\"%s\" sets no limit, ignored",
			 shown);
	return 0;
}


int mem_probe_open(const char *proc_root, const char *sys_root,
		   const char *env_limit, struct mem_probe **out, char *warn,
		   size_t warnlen, char *err, size_t errlen)
{
	struct mem_probe *p = calloc(1, sizeof *p);
	long page = sysconf(_SC_PAGESIZE);
	int rc = -ENOMEM;

	if (warnlen)
		warn[0] = '\0';
	if (!p)
		goto out;
	p->page_size = page > 0 ? (uint64_t)page : 4096;
	p->proc = strdup(proc_root && *proc_root ? proc_root : "/proc");
	p->sys = strdup(sys_root ? sys_root : "");
	if (!p->proc || !p->sys)
		goto out;

	rc = set_env(p, env_limit, warn, warnlen, err, errlen);
	if (rc == 0)
		rc = find_cgroup(p);
	if (rc < 0)
		goto out;
	*out = p;
	p = NULL;
out:
	mem_probe_close(p);
	return rc;
}


void mem_probe_close(struct mem_probe *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->nlevels; i++) {
		free(p->levels[i].path);
		free(p->levels[i].host);
	}
	free(p->levels);
	free(p->proc);
	free(p->sys);
	free(p);
}
