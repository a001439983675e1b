/*
 * Configuration findings from policies/config.lua. The host builds one
 * table of every setting that shapes load and memory, the policy judges
 * it, and the answer is read back into fixed-size structs: a finding or
 * a budget line that does not fit its buffer is refused rather than cut,
 * so what the operator reads is what the policy meant.
 */
#include "config_check.h"

#include <errno.h>
#include <lauxlib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

/* A budget term above 1 EiB is nonsense, and the cap keeps the sum of
 * CONFIG_BUDGET_LINES_MAX terms from wrapping around. */
#define BUDGET_BYTES_MAX (1ULL << 60)

static const char *const severity_names[] = { "error", "warning", "info",
					      NULL };


const char *config_severity_name(enum config_severity s)
{
	return severity_names[s];
}


static void set_int(lua_State *L, const char *key, long long v)
{
	lua_pushinteger(L, (lua_Integer)v);
	lua_setfield(L, -2, key);
}


static void push_field_limits(lua_State *L, const struct limits *lim)
{
	lua_createtable(L, 0, lim->nfields);
	for (int i = 0; i < lim->nfields; i++) {
		const struct field_limit *f = &lim->fields[i];

		lua_createtable(L, 0, 2);
		set_int(L, "max_bytes", (long long)f->max_bytes);
		set_int(L, "warn_bytes", (long long)f->warn_bytes);
		lua_setfield(L, -2, f->name);
	}
	lua_setfield(L, -2, "fields");
}


static void push_limits(lua_State *L, const struct limits *lim)
{
	if (!lim)
		return;
	lua_createtable(L, 0, 5);
	set_int(L, "max_message_bytes", (long long)lim->max_message_bytes);
	set_int(L, "max_json_depth", lim->max_json_depth);
	set_int(L, "lua_memory_bytes", (long long)lim->lua_memory_bytes);
	set_int(L, "job_timeout_ms", (long long)lim->job_timeout_ms);
	push_field_limits(L, lim);
	lua_setfield(L, -2, "limits");
}


/* The stop grace period is the orchestrator's, not ours, so it comes from
 * an optional variable; unset, the rule that needs it is skipped rather
 * than guessed (the native set-up has no stop grace at all). Text that is
 * not a whole number goes to the policy as it is: the policy's refusal
 * then names the field and the value. */
static void push_stop_grace(lua_State *L)
{
	const char *raw = getenv("STOP_GRACE_PERIOD_SECONDS");
	char *end = NULL;
	long long v;

	if (!raw || !*raw)
		return;
	errno = 0;
	v = strtoll(raw, &end, 10);
	if (errno || end == raw || *end)
		lua_pushstring(L, raw);
	else
		lua_pushinteger(L, (lua_Integer)v);
	lua_setfield(L, -2, "stop_grace_period_seconds");
}


static void push_input(lua_State *L, const struct config_check_input *in)
{
	const struct config *cfg = in->cfg;

	lua_createtable(L, 0, 12);
	set_int(L, "concurrency", cfg->concurrency);
	set_int(L, "prefetch", cfg->prefetch);
	set_int(L, "db_pool_size", cfg->db_pool_size);
	set_int(L, "db_max_overflow", cfg->db_max_overflow);
	set_int(L, "replicas", cfg->replicas);
	set_int(L, "shutdown_grace_seconds", cfg->shutdown_grace_seconds);
	push_stop_grace(L);
	set_int(L, "consumer_timeout_ms", CONFIG_CONSUMER_TIMEOUT_MS);

	if (in->memory_limit_bytes)
		set_int(L, "memory_limit_bytes",
			(long long)in->memory_limit_bytes);
	if (in->memory_limit_source) {
		lua_pushstring(L, in->memory_limit_source);
		lua_setfield(L, -2, "memory_limit_source");
	}
	if (in->server_max_connections > 0)
		set_int(L, "server_max_connections",
			in->server_max_connections);
	push_limits(L, in->limits);
}


/* Reads table[key] (table on top) as a string of 1 to cap - 1 bytes into
 * buf; err names path, prefix..key and what was there. */
static int read_text(lua_State *L, const char *path, const char *prefix,
		     const char *key, char *buf, size_t cap, char *err,
		     size_t errlen)
{
	size_t n = 0;
	const char *s = NULL;

	lua_getfield(L, -1, key);
	if (lua_type(L, -1) == LUA_TSTRING)
		s = lua_tolstring(L, -1, &n);
	if (!s || n == 0 || n >= cap) {
		snprintf(err, errlen,
			 "%s: field '%s%s': expected a string of 1 to %zu "
			 "bytes, got %s of %zu bytes",
			 path, prefix, key, cap - 1, luaL_typename(L, -1), n);
		lua_pop(L, 1);
		return -EINVAL;
	}
	memcpy(buf, s, n + 1);
	lua_pop(L, 1);
	return 0;
}


static int read_severity(lua_State *L, const char *path, const char *prefix,
			 enum config_severity *out, char *err, size_t errlen)
{
	const char *v;

	lua_getfield(L, -1, "severity");
	v = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
	for (int i = 0; v && severity_names[i]; i++) {
		if (!strcmp(v, severity_names[i])) {
			*out = (enum config_severity)i;
			lua_pop(L, 1);
			return 0;
		}
	}
	snprintf(err, errlen,
		 "%s: field '%sseverity': expected error, warning or info, "
		 "got %s",
		 path, prefix, v ? v : luaL_typename(L, -1));
	lua_pop(L, 1);
	return -EINVAL;
}


/* Codes are identifiers alerts and tests match on: "cfg." and then
 * lowercase letters, digits and underscores. */
static int valid_code(const char *code)
{
	if (strncmp(code, "cfg.", 4) != 0 || !code[4])
		return 0;
	return code[4 + strspn(code + 4, "abcdefghijklmnopqrstuvwxyz"
					 "0123456789_")] == '\0';
}


/* Reads the finding on top (findings[i]) into f. */
static int read_finding(lua_State *L, const char *path, int i,
			struct config_finding *f, char *err, size_t errlen)
{
	char prefix[32];

	snprintf(prefix, sizeof prefix, "findings[%d].", i);
	if (!lua_istable(L, -1)) {
		snprintf(err, errlen,
			 "%s: field 'findings[%d]': expected a table "
			 "{severity=, code=, message=}, got %s",
			 path, i, luaL_typename(L, -1));
		return -EINVAL;
	}
	if (read_severity(L, path, prefix, &f->severity, err, errlen) < 0 ||
	    read_text(L, path, prefix, "code", f->code, sizeof f->code, err,
		      errlen) < 0 ||
	    read_text(L, path, prefix, "message", f->message, sizeof f->message,
		      err, errlen) < 0)
		return -EINVAL;
	if (!valid_code(f->code)) {
		snprintf(err, errlen,
			 "%s: field '%scode': expected cfg. and then a-z, 0-9 "
			 "or _, got %s",
			 path, prefix, f->code);
		return -EINVAL;
	}
	return 0;
}


/* Pushes table[key] (table on top) and checks it is a table; on failure
 * pops it again and fills err, naming the field prefix..key. */
static int push_table(lua_State *L, const char *path, const char *prefix,
		      const char *key, const char *what, char *err,
		      size_t errlen)
{
	lua_getfield(L, -1, key);
	if (lua_istable(L, -1))
		return 0;
	snprintf(err, errlen, "%s: field '%s%s': expected %s, got %s", path,
		 prefix, key, what, luaL_typename(L, -1));
	lua_pop(L, 1);
	return -EINVAL;
}


/* Calls read_one for each element of the sequence on top (left there),
 * up to max of them; stops at the first nil. Returns the count or
 * -EINVAL. */
static int read_sequence(lua_State *L, const char *path, const char *name,
			 int max,
			 int (*read_one)(lua_State *, const char *, int, void *,
					 char *, size_t),
			 void *items, char *err, size_t errlen)
{
	for (int n = 0;; n++) {
		int rc = 0;

		lua_rawgeti(L, -1, n + 1);
		if (lua_isnil(L, -1)) {
			lua_pop(L, 1);
			return n;
		}
		if (n == max) {
			snprintf(err, errlen,
				 "%s: field '%s': at most %d entries", path,
				 name, max);
			rc = -EINVAL;
		} else {
			rc = read_one(L, path, n + 1, items, err, errlen);
		}
		lua_pop(L, 1);
		if (rc < 0)
			return rc;
	}
}


static int read_finding_at(lua_State *L, const char *path, int i, void *items,
			   char *err, size_t errlen)
{
	struct config_finding *f = (struct config_finding *)items + (i - 1);

	return read_finding(L, path, i, f, err, errlen);
}


static int read_line_at(lua_State *L, const char *path, int i, void *items,
			char *err, size_t errlen)
{
	struct config_budget_line *line =
		(struct config_budget_line *)items + (i - 1);
	unsigned long long bytes = 0;
	char prefix[40];

	snprintf(prefix, sizeof prefix, "budget.lines[%d].", i);
	if (!lua_istable(L, -1)) {
		snprintf(err, errlen,
			 "%s: field 'budget.lines[%d]': expected a table "
			 "{term=, bytes=, formula=}, got %s",
			 path, i, luaL_typename(L, -1));
		return -EINVAL;
	}
	if (read_text(L, path, prefix, "term", line->term, sizeof line->term,
		      err, errlen) < 0 ||
	    policy_read_u64(L, path, prefix, "bytes", 0, BUDGET_BYTES_MAX,
			    &bytes, err, errlen) < 0 ||
	    read_text(L, path, prefix, "formula", line->formula,
		      sizeof line->formula, err, errlen) < 0)
		return -EINVAL;
	line->bytes = bytes;
	return 0;
}


static int read_findings(lua_State *L, const char *path,
			 struct config_report *r, char *err, size_t errlen)
{
	int n;

	if (push_table(L, path, "", "findings", "a list of findings", err,
		       errlen) < 0)
		return -EINVAL;
	n = read_sequence(L, path, "findings", CONFIG_FINDINGS_MAX,
			  read_finding_at, r->findings, err, errlen);
	lua_pop(L, 1);
	if (n < 0)
		return -EINVAL;
	r->nfindings = n;
	for (int i = 0; i < n; i++)
		r->errors += r->findings[i].severity == CONFIG_ERROR;
	return 0;
}


/* Reads budget.ratio (budget on top): a finite number >= 0 that agrees
 * with total / limit, so the printed percentage matches the printed sum. */
static int read_ratio(lua_State *L, const char *path, struct config_report *r,
		      char *err, size_t errlen)
{
	double want = r->limit_bytes
			      ? (double)r->total_bytes / (double)r->limit_bytes
			      : 0.0;
	double v;
	int ok;

	lua_getfield(L, -1, "ratio");
	v = lua_tonumber(L, -1);
	ok = lua_type(L, -1) == LUA_TNUMBER && isfinite(v) && v >= 0 &&
	     fabs(v - want) <= 1e-9 * (want > 1 ? want : 1);
	if (!ok) {
		snprintf(err, errlen,
			 "%s: field 'budget.ratio': expected total_bytes / "
			 "limit_bytes = %.6f, got %s %s",
			 path, want, luaL_typename(L, -1),
			 lua_type(L, -1) == LUA_TNUMBER ? lua_tostring(L, -1)
							: "");
		lua_pop(L, 1);
		return -EINVAL;
	}
	lua_pop(L, 1);
	r->ratio = v;
	return 0;
}


/* Reads the budget table of the answer on top into r; the total must be
 * the sum of the lines the operator will read. */
static int read_budget(lua_State *L, const char *path, struct config_report *r,
		       char *err, size_t errlen)
{
	unsigned long long total = 0, limit = 0, sum = 0;
	int n, rc = -EINVAL;

	if (push_table(L, path, "", "budget",
		       "a table {lines=, total_bytes=, ...}", err, errlen) < 0)
		return -EINVAL;
	if (push_table(L, path, "budget.", "lines", "a list of budget lines",
		       err, errlen) < 0)
		goto out;
	n = read_sequence(L, path, "budget.lines", CONFIG_BUDGET_LINES_MAX,
			  read_line_at, r->lines, err, errlen);
	lua_pop(L, 1);
	if (n < 0)
		goto out;
	r->nlines = n;
	for (int i = 0; i < n; i++)
		sum += r->lines[i].bytes;
	if (policy_read_u64(L, path, "budget.", "total_bytes", sum, sum, &total,
			    err, errlen) < 0 ||
	    policy_read_u64(L, path, "budget.", "limit_bytes", 0,
			    UINT64_MAX >> 1, &limit, err, errlen) < 0)
		goto out;
	r->total_bytes = total;
	r->limit_bytes = limit;
	rc = read_ratio(L, path, r, err, errlen);
out:
	lua_pop(L, 1);
	return rc;
}


int config_check_run(const char *policy_dir,
		     const struct config_check_input *in,
		     struct config_report *out, char *err, size_t errlen)
{
	struct config_report *r = calloc(1, sizeof *r);
	struct policy p = { 0 };
	int rc = -ENOMEM;

	if (!r)
		goto out;
	rc = policy_open(policy_dir, "config.lua", &p, err, errlen);
	if (rc < 0)
		goto out;
	snprintf(r->path, sizeof r->path, "%s", p.path);
	push_input(p.L, in);
	rc = policy_call(&p, "check", 1, err, errlen);
	if (rc < 0)
		goto out;
	rc = -EINVAL;
	if (!lua_istable(p.L, -1))
		snprintf(err, errlen, "%s: check must return a table, got %s",
			 p.path, luaL_typename(p.L, -1));
	else if (read_findings(p.L, p.path, r, err, errlen) == 0 &&
		 read_budget(p.L, p.path, r, err, errlen) == 0)
		rc = 0;
	if (rc == 0)
		*out = *r;
out:
	policy_close(&p);
	free(r);
	return rc;
}


int config_check_server_max(PGconn *conn, long long *out, char *err,
			    size_t errlen)
{
	PGresult *res = PQexec(conn, "SHOW max_connections");
	const char *text = NULL;
	char *end = NULL;
	long long v = 0;
	int rc = -EIO;

	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 ||
	    PQnfields(res) != 1) {
		const char *msg = PQerrorMessage(conn);

		snprintf(err, errlen, "failed to read max_connections: %.*s",
			 (int)strcspn(msg, "\n"), msg);
		goto out;
	}
	text = PQgetvalue(res, 0, 0);
	errno = 0;
	v = strtoll(text, &end, 10);
	if (errno || end == text || *end || v <= 0) {
		snprintf(err, errlen,
			 "failed to read max_connections: not a positive "
			 "number: %s",
			 text);
		goto out;
	}
	*out = v;
	rc = 0;
out:
	PQclear(res);
	return rc;
}


static const char *plural(int n)
{
	return n == 1 ? "" : "s";
}


static double gib(uint64_t bytes)
{
	return (double)bytes / (1024.0 * 1024.0 * 1024.0);
}


static void print_settings(const struct config_check_input *in, FILE *out)
{
	const struct config *cfg = in->cfg;
	const char *stop = getenv("STOP_GRACE_PERIOD_SECONDS");
	char masked[512];

	config_mask_url(cfg->amqp_url, masked, sizeof masked);
	fprintf(out, "  broker     %s, queue %s\n", masked, cfg->amqp_queue);
	config_mask_url(cfg->database_url, masked, sizeof masked);
	fprintf(out, "  database   %s\n", masked);
	fprintf(out,
		"  settings   threads %d, prefetch %d, pool %d + overflow %d, "
		"replicas %d\n",
		cfg->concurrency, cfg->prefetch, cfg->db_pool_size,
		cfg->db_max_overflow, cfg->replicas);
	if (stop && *stop)
		fprintf(out,
			"  shutdown   drain %d s, stop grace period %s s\n",
			cfg->shutdown_grace_seconds, stop);
	else
		fprintf(out,
			"  shutdown   drain %d s, stop grace period unknown "
			"(set STOP_GRACE_PERIOD_SECONDS to check the drain "
			"against it)\n",
			cfg->shutdown_grace_seconds);
	if (in->memory_limit_bytes)
		fprintf(out,
			"  memory     limit %llu bytes (%.2f GiB) from %s\n",
			(unsigned long long)in->memory_limit_bytes,
			gib(in->memory_limit_bytes),
			in->memory_limit_source ? in->memory_limit_source
						: "an unknown source");
}


static void print_findings(const struct config_report *r, FILE *out)
{
	if (r->nfindings == 0) {
		fprintf(out, "\nfindings: none\n");
		return;
	}
	fprintf(out, "\nfindings:\n");
	for (int i = 0; i < r->nfindings; i++) {
		const struct config_finding *f = &r->findings[i];

		fprintf(out, "  %-7s  %s\n           %s\n",
			config_severity_name(f->severity), f->code, f->message);
	}
}


/* One aligned line per term, bytes and MiB side by side, then the sum
 * against the limit, so the largest term stands out. */
static void print_budget(const struct config_report *r, FILE *out)
{
	const double mib = 1024.0 * 1024.0;

	fprintf(out, "\nmemory budget (worst case):\n");
	for (int i = 0; i < r->nlines; i++) {
		const struct config_budget_line *l = &r->lines[i];

		fprintf(out, "  %-10s %14llu bytes %10.1f MiB  %s\n", l->term,
			(unsigned long long)l->bytes, (double)l->bytes / mib,
			l->formula);
	}
	fprintf(out, "  %-10s %14llu bytes %10.1f MiB", "total",
		(unsigned long long)r->total_bytes,
		(double)r->total_bytes / mib);
	if (r->limit_bytes)
		fprintf(out, "  %.1f %% of the %.2f GiB memory limit\n",
			100.0 * r->ratio, gib(r->limit_bytes));
	else
		fprintf(out, "  no memory limit to compare with\n");
}


void config_check_print(const struct config_report *r,
			const struct config_check_input *in, FILE *out)
{
	int count[3] = { 0, 0, 0 };

	for (int i = 0; i < r->nfindings; i++)
		count[r->findings[i].severity]++;
	fprintf(out, "moonrabbit --check-config (%s)\n", r->path);
	print_settings(in, out);
	print_findings(r, out);
	print_budget(r, out);
	fprintf(out, "\nconfiguration %s: %d error%s, %d warning%s, %d info\n",
		r->errors ? "refused" : "ok", count[CONFIG_ERROR],
		plural(count[CONFIG_ERROR]), count[CONFIG_WARNING],
		plural(count[CONFIG_WARNING]), count[CONFIG_INFO]);
}


static int holds(const struct config_report *r, const struct config_finding *f)
{
	for (int i = 0; r && i < r->nfindings; i++)
		if (!strcmp(r->findings[i].code, f->code) &&
		    !strcmp(r->findings[i].message, f->message))
			return 1;
	return 0;
}


/* Logs the budget's sum and each term under its own name. */
static void log_budget(const struct config_report *r)
{
	struct log_field fields[3 + CONFIG_BUDGET_LINES_MAX];
	int n = 0;

	if (LOG_INFO > log_threshold)
		return;
	fields[n++] = LF_U("bytes", r->total_bytes);
	fields[n++] = LF_U("limit", r->limit_bytes);
	fields[n++] = LF_D("ratio", r->ratio);
	for (int i = 0; i < r->nlines; i++)
		fields[n++] = LF_U(r->lines[i].term, r->lines[i].bytes);
	log_write(LOG_INFO, "memory_budget", fields, n);
}


void config_check_log(const struct config_report *r,
		      const struct config_report *already)
{
	static const enum log_level levels[] = { LOG_ERROR, LOG_WARN,
						 LOG_INFO };

	for (int i = 0; i < r->nfindings; i++) {
		const struct config_finding *f = &r->findings[i];

		if (holds(already, f))
			continue;
		LOG(levels[f->severity], "config_finding",
		    LF_S("severity", config_severity_name(f->severity)),
		    LF_S("code", f->code), LF_S("message", f->message));
	}
	if (!already)
		log_budget(r);
}
