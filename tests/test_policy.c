#include <stdlib.h>
#include <unistd.h>

#include "check.h"
#include "policy.h"

static const struct limits_context ctx = { .concurrency = 8, .prefetch = 16 };
static char dir[] = "/tmp/mr-policy-XXXXXX";


/* Writes text as dir/limits.lua and loads it; err gets the refusal. */
static int load_text(const char *text, struct limits *lim, char *err,
		     size_t errlen)
{
	char path[64];
	FILE *f;

	snprintf(path, sizeof path, "%s/limits.lua", dir);
	f = fopen(path, "w");
	fputs(text, f);
	fclose(f);
	err[0] = '\0';
	return policy_load_limits(dir, &ctx, lim, err, errlen);
}


/* The shipped policy gives the numbers the issue and case 001 state. */
static void test_shipped_defaults(void)
{
	struct limits lim;
	char err[512] = "";

	CHECK_INT(0,
		  policy_load_limits("policies", &ctx, &lim, err, sizeof err));
	CHECK_STR("", err);
	CHECK_INT(2097152, lim.max_message_bytes);
	CHECK_INT(128, lim.max_json_depth);
	CHECK_INT(1, lim.nfields);
	CHECK_STR("conversation_log", lim.fields[0].name);
	CHECK_INT(512000, lim.fields[0].warn_bytes);
	CHECK_INT(1572864, lim.fields[0].max_bytes);
	CHECK_INT(30, lim.probe_every_messages);
	CHECK_INT(250, lim.probe_min_interval_ms);
	CHECK_INT(50, lim.backlog_alert);
}


#define GOOD_TAIL                                                              \
	"max_json_depth=10, lua_memory_bytes=16777216, job_timeout_ms=100,"    \
	"probe_every_messages=1, probe_every_seconds=1, backlog_alert=1,"      \
	"trim_after_bytes=0"

static void test_refusals(void)
{
	static const struct {
		const char *text;
		const char *message;
	} rows[] = {
		{ "return {for_context = function(", "limits.lua:1:" },
		{ "return 42", "the module must return a table, got number" },
		{ "return {}", "field 'for_context': expected a function" },
		{ "return {for_context = function() error('boom') end}",
		  "limits.lua:1: boom" },
		{ "return {for_context = function() return io.open('x') end}",
		  "global 'io'" },
		{ "return {for_context = function() return 1 end}",
		  "for_context must return a table, got number" },
		{ "return {for_context = function() return {max_message_bytes"
		  "='2MB', fields={}, " GOOD_TAIL "} end}",
		  "field 'max_message_bytes': expected a whole number from 1 "
		  "to 1073741824, got string 2MB" },
		{ "return {for_context = function() return {max_message_bytes"
		  "=100, fields={log={max_bytes=101}}, " GOOD_TAIL "} end}",
		  "field 'fields.log.max_bytes': expected a whole number from "
		  "1 to 100, got number 101" },
		{ "return {for_context = function() return {max_message_bytes"
		  "=100, fields={log={max_bytes=50, warn_bytes=60}}, " GOOD_TAIL
		  "} end}",
		  "field 'fields.log.warn_bytes': expected a whole number from "
		  "0 to 50" },
		{ "return {for_context = function() return {max_mesage_bytes"
		  "=100, fields={}, " GOOD_TAIL "} end}",
		  "field 'max_mesage_bytes' is not a known limit" },
		{ "return {for_context = function() return {max_message_bytes"
		  "=100, fields={log=5}, " GOOD_TAIL "} end}",
		  "field 'fields.log': expected a table" },
		{ "return {for_context = function() return {max_message_bytes"
		  "=100, fields={}, probe_min_interval_ms=60001, " GOOD_TAIL
		  "} end}",
		  "field 'probe_min_interval_ms': expected a whole number from "
		  "0 to 60000" },
	};
	struct limits lim;
	char err[512];

	for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		memset(&lim, 0x5a, sizeof lim);
		CHECK_INT(-22, load_text(rows[i].text, &lim, err, sizeof err));
		CHECK_CONTAINS(rows[i].message, err);
		CHECK_CONTAINS("limits.lua", err);
		/* a refusal writes nothing */
		CHECK_INT(0x5a5a5a5a5a5a5a5aULL & 0x7fffffffffffffffULL,
			  lim.max_message_bytes & 0x7fffffffffffffffULL);
	}
}


static void test_accepts_minimal(void)
{
	struct limits lim;
	char err[512];

	CHECK_INT(
		0,
		load_text(
			"return {for_context = function(c) return "
			"{max_message_bytes=100 * c.concurrency, "
			"fields={log={max_bytes=50, warn_bytes=10}}," GOOD_TAIL
			"} end}",
			&lim, err, sizeof err));
	CHECK_STR("", err);
	CHECK_INT(800, lim.max_message_bytes);
	CHECK_INT(50, lim.fields[0].max_bytes);
	CHECK_INT(10, lim.fields[0].warn_bytes);
	CHECK_INT(10, lim.max_json_depth);
	/* A policy written before probe_min_interval_ms existed. */
	CHECK_INT(250, lim.probe_min_interval_ms);
	CHECK_INT(0, load_text("return {for_context = function() return "
			       "{max_message_bytes=100, fields={}, "
			       "probe_min_interval_ms=0, " GOOD_TAIL "} end}",
			       &lim, err, sizeof err));
	CHECK_INT(0, lim.probe_min_interval_ms);
}


int main(void)
{
	char path[64];

	if (!mkdtemp(dir))
		return 2;
	test_shipped_defaults();
	test_refusals();
	test_accepts_minimal();
	snprintf(path, sizeof path, "%s/limits.lua", dir);
	unlink(path);
	rmdir(dir);
	return check_report("test_policy");
}
