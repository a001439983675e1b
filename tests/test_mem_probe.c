#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "check.h"
#include "mem_probe.h"

/* The tests run from the repository root; the case trees sit beside it
 * in shared/, the extra layouts in tests/fixtures/cgroup. */
#define CASES "../shared/cases/data/"
#define FIX   "tests/fixtures/cgroup/"

#define GIB	 1073741824ULL
#define MEMTOTAL 16695226368ULL /* 16303932 kB, every tree's meminfo */
#define RSS	 104857600ULL	/* VmRSS 102400 kB, every tree's status */

#define SCOPE "/sys/fs/cgroup/system.slice/docker-3f9c2a7e1b.scope"


/* ---- case 010: DOCKER_MEMORY_LIMIT values ---- */

struct parse_row {
	const char *text;
	int rc;
	uint64_t bytes;	   /* when rc is 0 */
	const char *error; /* exact message when rc is -EINVAL */
};

static const struct parse_row case_010_rows[] = {
	{ "2147483648", 0, 2147483648ULL, NULL },
	{ "2g", 0, 2147483648ULL, NULL },
	{ "2G", 0, 2147483648ULL, NULL },
	{ "2GiB", 0, 2147483648ULL, NULL },
	{ "2048m", 0, 2147483648ULL, NULL },
	{ "2048M", 0, 2147483648ULL, NULL },
	/* Decided: 1024-based like Docker's own --memory parser. */
	{ "2GB", 0, 2147483648ULL, NULL },
	{ " 2147483648 ", 0, 2147483648ULL, NULL },
	{ "2147483648\n", 0, 2147483648ULL, NULL },
	{ "", -ENOENT, 0, NULL },
	{ "0", -ENOENT, 0, NULL },
	{ "-1", -ENOENT, 0, NULL },
	{ "max", -ENOENT, 0, NULL },
	{ "unlimited", -ENOENT, 0, NULL },
	{ "2.5g", 0, 2684354560ULL, NULL },
	{ "abc", -EINVAL, 0, "\"abc\" is not a memory size" },
	{ "2x", -EINVAL, 0,
	  "\"2x\" has an unknown unit (use b, k, m, g or t)" },
	{ "99999999999999999999", -EINVAL, 0,
	  "\"99999999999999999999\" is too large" },
	{ "1024", -EINVAL, 0,
	  "\"1024\" is 1024 bytes, under the 64 MiB floor" },
};

/* The rest of the grammar: every unit, case, blanks, the floor's edge,
 * exact fractions and the ways a value is refused. */
static const struct parse_row grammar_rows[] = {
	{ "67108864b", 0, 67108864ULL, NULL },
	{ "65536k", 0, 67108864ULL, NULL },
	{ "65536KB", 0, 67108864ULL, NULL },
	{ "65536kib", 0, 67108864ULL, NULL },
	{ "64mb", 0, 67108864ULL, NULL },
	{ "64MiB", 0, 67108864ULL, NULL },
	{ "1gb", 0, GIB, NULL },
	{ "1t", 0, 1099511627776ULL, NULL },
	{ "1TB", 0, 1099511627776ULL, NULL },
	{ "1tib", 0, 1099511627776ULL, NULL },
	{ "0.5g", 0, 536870912ULL, NULL },
	{ "\t2g\r\n", 0, 2147483648ULL, NULL },
	/* 65536 KiB plus 1/1024 KiB: one byte over the floor, exactly. */
	{ "65536.0009765625k", 0, 67108865ULL, NULL },
	/* Truncated, not rounded: 0.1 MiB is 104857.6 bytes. */
	{ "640.1m", 0, 671193497ULL, NULL },
	{ "18446744073709551615", 0, UINT64_MAX, NULL },
	{ "  ", -ENOENT, 0, NULL },
	{ "\n", -ENOENT, 0, NULL },
	{ "MAX", -ENOENT, 0, NULL },
	{ " Unlimited\n", -ENOENT, 0, NULL },
	{ "0g", -ENOENT, 0, NULL },
	{ "0.0m", -ENOENT, 0, NULL },
	{ "67108863", -EINVAL, 0,
	  "\"67108863\" is 67108863 bytes, under the 64 MiB floor" },
	{ "2.5", -EINVAL, 0, "\"2.5\" is 2 bytes, under the 64 MiB floor" },
	{ "16777216t", -EINVAL, 0, "\"16777216t\" is too large" },
	{ "1.0000000000000000001g", -EINVAL, 0,
	  "\"1.0000000000000000001g\" has too many digits after the point" },
	{ "2 g", -EINVAL, 0,
	  "\"2 g\" has an unknown unit (use b, k, m, g or t)" },
	{ "2gibb", -EINVAL, 0,
	  "\"2gibb\" has an unknown unit (use b, k, m, g or t)" },
	{ "1e9", -EINVAL, 0,
	  "\"1e9\" has an unknown unit (use b, k, m, g or t)" },
	{ "2.g", -EINVAL, 0,
	  "\"2.g\" has an unknown unit (use b, k, m, g or t)" },
	{ ".5g", -EINVAL, 0, "\".5g\" is not a memory size" },
	{ "-2g", -EINVAL, 0, "\"-2g\" is not a memory size" },
	{ "+2g", -EINVAL, 0, "\"+2g\" is not a memory size" },
	{ "2\x01g", -EINVAL, 0,
	  "\"2?g\" has an unknown unit (use b, k, m, g or t)" },
	{ "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", -EINVAL, 0,
	  "\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...\" is not a memory "
	  "size" },
};


/* Checks one row; on a mismatch names the row's text. */
static void check_parse(const struct parse_row *r)
{
	uint64_t v = 12345;
	char err[160] = "";
	int before = check_failures;
	int rc = mem_parse_limit(r->text, &v, err, sizeof err);

	CHECK_INT(r->rc, rc);
	CHECK_INT(r->rc == 0 ? r->bytes : 12345, v);
	if (r->error)
		CHECK_STR(r->error, err);
	if (check_failures != before)
		fprintf(stderr, "  in mem_parse_limit(\"%s\")\n", r->text);
}


static void test_parse_limit(void)
{
	for (size_t i = 0; i < sizeof case_010_rows / sizeof *case_010_rows;
	     i++)
		check_parse(&case_010_rows[i]);
	for (size_t i = 0; i < sizeof grammar_rows / sizeof *grammar_rows; i++)
		check_parse(&grammar_rows[i]);
}


static void test_source_names(void)
{
	CHECK_STR("env", mem_source_name(MEM_SOURCE_ENV));
	CHECK_STR("cgroup_v2", mem_source_name(MEM_SOURCE_CGROUP_V2));
	CHECK_STR("cgroup_v1", mem_source_name(MEM_SOURCE_CGROUP_V1));
	CHECK_STR("meminfo", mem_source_name(MEM_SOURCE_MEMINFO));
}


/* ---- the probe against file trees ---- */

struct tree_row {
	const char *name;
	const char *proc;
	const char *sys;
	const char *env;
	int version;
	uint64_t cgroup_limit;
	uint64_t limit;
	enum mem_source source;
	const char *limit_file;
	uint64_t usage;
	uint64_t inactive;
	uint64_t working_set;
};

static const struct tree_row tree_rows[] = {
	/* Case 011: "max" is unlimited, so MemTotal is the limit. */
	{ "011", FIX "case-011/proc", CASES "011/sys", NULL, 2, 0, MEMTOTAL,
	  MEM_SOURCE_MEMINFO, "/proc/meminfo", 157286400, 41943040, 115343360 },
	{ "011 env", FIX "case-011/proc", CASES "011/sys", "2147483648", 2, 0,
	  2147483648ULL, MEM_SOURCE_ENV, "", 157286400, 41943040, 115343360 },
	/* With no cgroup limit the override wins even above MemTotal. */
	{ "011 env 32g", FIX "case-011/proc", CASES "011/sys", "32g", 2, 0,
	  34359738368ULL, MEM_SOURCE_ENV, "", 157286400, 41943040, 115343360 },
	{ "011 max without newline", FIX "v2-max-no-newline/proc",
	  FIX "v2-max-no-newline/sys", NULL, 2, 0, MEMTOTAL, MEM_SOURCE_MEMINFO,
	  "/proc/meminfo", 157286400, 41943040, 115343360 },
	{ "011 control", FIX "v2-limit-control/proc",
	  FIX "v2-limit-control/sys", NULL, 2, 2147483648ULL, 2147483648ULL,
	  MEM_SOURCE_CGROUP_V2, "/sys/fs/cgroup/memory.max", 157286400,
	  41943040, 115343360 },
	/* Case 013: the scope's limit and the scope's usage, not the
	 * leaf's 734003200 or system.slice's 3221225472. */
	{ "013", FIX "case-013/proc", CASES "013/sys", NULL, 2, 2147483648ULL,
	  2147483648ULL, MEM_SOURCE_CGROUP_V2, SCOPE "/memory.max", 805306368,
	  0, 805306368 },
	/* Case 010 against a cgroup: the smaller wins... */
	{ "013 env 1g", FIX "case-013/proc", CASES "013/sys", "1g", 2,
	  2147483648ULL, GIB, MEM_SOURCE_ENV, "", 805306368, 0, 805306368 },
	/* ...and a larger override cannot lift the kernel's limit. */
	{ "013 env 4g", FIX "case-013/proc", CASES "013/sys", "4g", 2,
	  2147483648ULL, 2147483648ULL, MEM_SOURCE_CGROUP_V2,
	  SCOPE "/memory.max", 805306368, 0, 805306368 },
	{ "013 leaf limit", FIX "v2-leaf-limit/proc", FIX "v2-leaf-limit/sys",
	  NULL, 2, GIB, GIB, MEM_SOURCE_CGROUP_V2, SCOPE "/worker/memory.max",
	  734003200, 0, 734003200 },
	{ "013 private namespace", FIX "v2-private-ns/proc",
	  FIX "v2-private-ns/sys", NULL, 2, 2147483648ULL, 2147483648ULL,
	  MEM_SOURCE_CGROUP_V2, "/sys/fs/cgroup/memory.max", 805306368,
	  104857600, 700448768 },
	{ "namespace rooted at the scope", FIX "v2-ns-subtree/proc",
	  FIX "v2-ns-subtree/sys", NULL, 2, 2147483648ULL, 2147483648ULL,
	  MEM_SOURCE_CGROUP_V2, "/run/cg root/memory.max", 805306368, 0,
	  805306368 },
	{ "equal limits", FIX "v2-tie/proc", FIX "v2-tie/sys", NULL, 2, GIB,
	  GIB, MEM_SOURCE_CGROUP_V2, "/sys/fs/cgroup/a/b/memory.max", 600000000,
	  0, 600000000 },
	/* Usage and stat unreadable where the limit is: 0, and the working
	 * set falls back to RSS; the leaf's usage is not borrowed. */
	{ "missing files", FIX "v2-missing/proc", FIX "v2-missing/sys", NULL, 2,
	  GIB, GIB, MEM_SOURCE_CGROUP_V2, "/sys/fs/cgroup/app/memory.max", 0, 0,
	  RSS },
	/* "12abc", "", " 123", "-1", "0x10", "123\n\n", 2^64 and "0"
	 * below the real limit: none is read as a number. */
	{ "malformed levels", FIX "v2-malformed/proc", FIX "v2-malformed/sys",
	  NULL, 2, 4294967296ULL, 4294967296ULL, MEM_SOURCE_CGROUP_V2,
	  "/sys/fs/cgroup/svc/memory.max", GIB, 268435456, 805306368 },
	{ "malformed only", FIX "v2-malformed-only/proc",
	  FIX "v2-malformed-only/sys", NULL, 2, 0, MEMTOTAL, MEM_SOURCE_MEMINFO,
	  "/proc/meminfo", 157286400, 0, 157286400 },
	/* Case 014: v1 memory although cgroup2 is mounted first; the
	 * root's 9663676416 is never the usage. */
	{ "014", FIX "case-014/proc", CASES "014/sys", NULL, 1, 2147483648ULL,
	  2147483648ULL, MEM_SOURCE_CGROUP_V1,
	  "/sys/fs/cgroup/memory/system.slice/worker.service/"
	  "memory.limit_in_bytes",
	  314572800, 31457280, 283115520 },
	{ "v1 limit", FIX "v1-limit/proc", FIX "v1-limit/sys", NULL, 1,
	  536870912, 536870912, MEM_SOURCE_CGROUP_V1,
	  "/sys/fs/cgroup/memory/memory.limit_in_bytes", 209715200, 52428800,
	  157286400 },
	{ "v1 unlimited", FIX "v1-unlimited/proc", FIX "v1-unlimited/sys", NULL,
	  1, 0, MEMTOTAL, MEM_SOURCE_MEMINFO, "/proc/meminfo", 314572800,
	  31457280, 283115520 },
	{ "hybrid without v1 memory", FIX "hybrid-no-memory/proc",
	  FIX "hybrid-no-memory/sys", NULL, 0, 0, MEMTOTAL, MEM_SOURCE_MEMINFO,
	  "/proc/meminfo", 0, 0, RSS },
	{ "no cgroup", FIX "none/proc", FIX "none/sys", NULL, 0, 0, MEMTOTAL,
	  MEM_SOURCE_MEMINFO, "/proc/meminfo", 0, 0, RSS },
	{ "no cgroup, env", FIX "none/proc", FIX "none/sys", "512m", 0, 0,
	  536870912, MEM_SOURCE_ENV, "", 0, 0, RSS },
};


/* Opens a probe on proc and sys with env, takes one sample into *s and
 * closes the probe. Returns the sample's status. */
static int sample_tree(const char *proc, const char *sys, const char *env,
		       struct mem_sample *s)
{
	struct mem_probe *p = NULL;
	char warn[128], err[256];
	int rc = mem_probe_open(proc, sys, env, &p, warn, sizeof warn, err,
				sizeof err);

	CHECK_INT(0, rc);
	if (rc < 0) {
		fprintf(stderr, "  mem_probe_open: %s\n", err);
		return rc;
	}
	rc = mem_probe_sample(p, s);
	mem_probe_close(p);
	return rc;
}


static void check_tree(const struct tree_row *r)
{
	struct mem_sample s;
	int before = check_failures;

	memset(&s, 0xAA, sizeof s);
	CHECK_INT(0, sample_tree(r->proc, r->sys, r->env, &s));
	CHECK_INT(RSS, s.rss_bytes);
	CHECK_INT(r->version, s.cgroup_version);
	CHECK_INT(r->cgroup_limit, s.cgroup_limit_bytes);
	CHECK_INT(r->limit, s.limit_bytes);
	CHECK_STR(mem_source_name(r->source), mem_source_name(s.limit_source));
	CHECK_STR(r->limit_file, s.limit_file);
	CHECK_INT(r->usage, s.usage_bytes);
	CHECK_INT(r->inactive, s.inactive_file_bytes);
	CHECK_INT(r->working_set, s.working_set_bytes);
	if (check_failures != before)
		fprintf(stderr, "  in tree \"%s\"\n", r->name);
}


static void test_trees(void)
{
	for (size_t i = 0; i < sizeof tree_rows / sizeof *tree_rows; i++)
		check_tree(&tree_rows[i]);
}


/* The copied proc files must stay what the cases say; only status is
 * added. */
static void check_same_file(const char *a, const char *b)
{
	char ba[4096], bb[4096];
	FILE *fa = fopen(a, "r"), *fb = fopen(b, "r");
	size_t na = fa ? fread(ba, 1, sizeof ba, fa) : 0;
	size_t nb = fb ? fread(bb, 1, sizeof bb, fb) : 0;

	check_count++;
	if (!fa || !fb || na != nb || memcmp(ba, bb, na) != 0) {
		check_failures++;
		fprintf(stderr, "%s:%d: expected %s to equal %s\n", __FILE__,
			__LINE__, b, a);
	}
	if (fa)
		fclose(fa);
	if (fb)
		fclose(fb);
}


static void test_case_copies(void)
{
	static const char *const cases[] = { "011", "013", "014" };
	static const char *const files[] = { "self/cgroup", "self/mountinfo",
					     "meminfo" };
	char a[256], b[256];

	for (size_t i = 0; i < 3; i++)
		for (size_t j = 0; j < 3; j++) {
			snprintf(a, sizeof a, CASES "%s/proc/%s", cases[i],
				 files[j]);
			snprintf(b, sizeof b, FIX "case-%s/proc/%s", cases[i],
				 files[j]);
			check_same_file(a, b);
		}
}


/* memory.events and memory.pressure come from the cgroup that supplied
 * the limit; v1 and trees without them report has_* = 0. */
static void test_events_and_pressure(void)
{
	struct mem_sample s;

	CHECK_INT(0, sample_tree(FIX "v2-private-ns/proc",
				 FIX "v2-private-ns/sys", NULL, &s));
	CHECK_INT(1, s.has_events);
	CHECK_INT(2, s.oom_kill_events);
	CHECK_INT(7, s.max_events);
	CHECK_INT(1, s.has_psi);
	CHECK_INT(125, (long long)(s.psi_some_avg10 * 100 + 0.5));
	CHECK_INT(50, (long long)(s.psi_full_avg10 * 100 + 0.5));

	CHECK_INT(0,
		  sample_tree(FIX "case-013/proc", CASES "013/sys", NULL, &s));
	CHECK_INT(0, s.has_events);
	CHECK_INT(0, s.oom_kill_events);
	CHECK_INT(0, s.has_psi);

	CHECK_INT(0,
		  sample_tree(FIX "case-014/proc", CASES "014/sys", NULL, &s));
	CHECK_INT(0, s.has_events);
	CHECK_INT(0, s.has_psi);
}


/* Without VmRSS in status, RSS is statm's resident pages. */
static void test_statm(void)
{
	struct mem_sample s;
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);

	CHECK_INT(0, sample_tree(FIX "v2-unmounted/proc",
				 FIX "v2-unmounted/sys", NULL, &s));
	CHECK_INT(12800 * page, s.rss_bytes);
	CHECK_INT(12800 * page, s.working_set_bytes);
	CHECK_INT(0, s.cgroup_version);
	CHECK_INT(MEMTOTAL, s.limit_bytes);
	CHECK_STR("meminfo", mem_source_name(s.limit_source));
}


/* Case 010's log column: values that mean "no override" are a warning,
 * junk is a start-up error naming the variable, the value and the fix. */
static void test_open_env(void)
{
	static const struct {
		const char *env;
		const char *warn;
	} quiet[] = {
		{ NULL, "" },
		{ "2g", "" },
		{ "", "DOCKER_MEMORY_LIMIT empty, ignored" },
		{ " \n", "DOCKER_MEMORY_LIMIT empty, ignored" },
		{ "0", "DOCKER_MEMORY_LIMIT=\"0\" sets no limit, ignored" },
		{ "-1", "DOCKER_MEMORY_LIMIT=\"-1\" sets no limit, ignored" },
		{ "max\n",
		  "DOCKER_MEMORY_LIMIT=\"max\" sets no limit, ignored" },
		{ "Unlimited",
		  "DOCKER_MEMORY_LIMIT=\"Unlimited\" sets no limit, "
		  "ignored" },
	};
	struct mem_probe *p;
	char warn[128], err[256];

	for (size_t i = 0; i < sizeof quiet / sizeof *quiet; i++) {
		p = NULL;
		strcpy(warn, "stale");
		CHECK_INT(0, mem_probe_open(FIX "none/proc", NULL, quiet[i].env,
					    &p, warn, sizeof warn, err,
					    sizeof err));
		CHECK_STR(quiet[i].warn, warn);
		CHECK_INT(1, p != NULL);
		mem_probe_close(p);
	}

	p = NULL;
	CHECK_INT(-EINVAL, mem_probe_open(FIX "none/proc", NULL, "2x", &p, warn,
					  sizeof warn, err, sizeof err));
	CHECK_STR("invalid DOCKER_MEMORY_LIMIT: \"2x\" has an unknown unit "
		  "(use b, k, m, g or t); set bytes or a size such as 2g "
		  "(1024-based), or unset it",
		  err);
	CHECK_INT(1, p == NULL);
	CHECK_INT(-EINVAL, mem_probe_open(FIX "none/proc", NULL, "1024", &p,
					  warn, sizeof warn, err, sizeof err));
	CHECK_CONTAINS("\"1024\" is 1024 bytes, under the 64 MiB floor", err);
	CHECK_INT(-EINVAL,
		  mem_probe_open(FIX "none/proc", NULL, "99999999999999999999",
				 &p, warn, sizeof warn, err, sizeof err));
	CHECK_CONTAINS("\"99999999999999999999\" is too large", err);
	CHECK_INT(1, p == NULL);
}


/* No status, statm or meminfo: the sample fails and leaves *out alone,
 * with or without an override. */
static void test_unreadable(void)
{
	struct mem_sample s;

	memset(&s, 0x5A, sizeof s);
	CHECK_INT(-EIO,
		  sample_tree(FIX "absent/proc", FIX "absent/sys", NULL, &s));
	CHECK_INT(0x5A5A5A5A5A5A5A5AULL, s.limit_bytes);
	CHECK_INT(-EIO,
		  sample_tree(FIX "absent/proc", FIX "absent/sys", "2g", &s));
	CHECK_INT(0x5A5A5A5A5A5A5A5AULL, s.rss_bytes);
	/* The case trees have no status file: RSS is required. */
	CHECK_INT(-EIO,
		  sample_tree(CASES "011/proc", CASES "011/sys", NULL, &s));
}


/* One probe, many samples: nothing is consumed between them. */
static void test_resample(void)
{
	struct mem_probe *p = NULL;
	struct mem_sample a, b;
	char warn[64], err[64];

	CHECK_INT(0, mem_probe_open(FIX "case-013/proc", CASES "013/sys", NULL,
				    &p, warn, sizeof warn, err, sizeof err));
	if (!p)
		return;
	CHECK_INT(0, mem_probe_sample(p, &a));
	CHECK_INT(0, mem_probe_sample(p, &b));
	CHECK_INT(a.limit_bytes, b.limit_bytes);
	CHECK_INT(a.usage_bytes, b.usage_bytes);
	CHECK_STR(a.limit_file, b.limit_file);
	mem_probe_close(p);
	mem_probe_close(NULL);
}


/* The real /proc and /sys: whatever the host is, a sample has an RSS
 * and a limit. */
static void test_real_host(void)
{
	struct mem_sample s;

	CHECK_INT(0, sample_tree(NULL, NULL, NULL, &s));
	CHECK_INT(1, s.rss_bytes > 0);
	CHECK_INT(1, s.limit_bytes > 0);
	CHECK_INT(1, s.working_set_bytes > 0);
}


int main(void)
{
	test_parse_limit();
	test_source_names();
	test_case_copies();
	test_trees();
	test_events_and_pressure();
	test_statm();
	test_open_env();
	test_unreadable();
	test_resample();
	test_real_host();
	return check_report("test_mem_probe");
}
