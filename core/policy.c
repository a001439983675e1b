#include "policy.h"

#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>


/* The standard library a pure function may use. Absent on purpose: io,
 * os, package, require, load, loadfile, dofile, print, collectgarbage,
 * debug. */
static const char *const sandbox_globals[] = {
	"assert", "error",    "getmetatable", "ipairs",	  "next",
	"pairs",  "pcall",    "rawequal",     "rawget",	  "rawlen",
	"rawset", "select",   "setmetatable", "tonumber", "tostring",
	"type",	  "xpcall",   "string",	      "table",	  "math",
	"utf8",	  "_VERSION",
};

struct u64_field {
	const char *name;
	size_t offset;
	unsigned long long min;
	unsigned long long max;
	/* Fields added after the first release have a value when a policy
	 * an operator edited before then leaves them out. */
	int optional;
	unsigned long long fallback;
};

#define LIM_OFF(f) offsetof(struct limits, f)

/* A limit every policy must give, and one it may leave out. */
/* clang-format off */
#define REQUIRED(f, lo, hi)       { #f, LIM_OFF(f), lo, hi, 0, 0 }
#define OPTIONAL(f, lo, hi, dflt) { #f, LIM_OFF(f), lo, hi, 1, dflt }
/* clang-format on */

static const struct u64_field limit_fields[] = {
	REQUIRED(max_message_bytes, 1, LIMITS_MESSAGE_BYTES_MAX),
	REQUIRED(lua_memory_bytes, LIMITS_LUA_MEMORY_MIN,
		 LIMITS_LUA_MEMORY_MAX),
	REQUIRED(job_timeout_ms, 1, 24ULL * 3600 * 1000),
	REQUIRED(probe_every_messages, 1, 1000000),
	REQUIRED(probe_every_seconds, 1, 86400),
	OPTIONAL(probe_min_interval_ms, 0, 60000, 250),
	REQUIRED(backlog_alert, 1, 1000000),
	REQUIRED(trim_after_bytes, 0, LIMITS_MESSAGE_BYTES_MAX),
};


static int traceback(lua_State *L)
{
	const char *msg = lua_tostring(L, 1);

	luaL_traceback(L, L, msg ? msg : "(error object is not a string)", 1);
	return 1;
}


/* Runs the function below nargs arguments under a traceback handler;
 * on failure copies the first line of the message into err. */
static int protected_call(lua_State *L, int nargs, const char *path, char *err,
			  size_t errlen)
{
	int base = lua_gettop(L) - nargs;
	const char *msg;
	int rc;

	lua_pushcfunction(L, traceback);
	lua_insert(L, base);
	rc = lua_pcall(L, nargs, 1, base);
	lua_remove(L, base);
	if (rc == LUA_OK)
		return 0;
	msg = lua_tostring(L, -1);
	snprintf(err, errlen, "%s: %.*s", path,
		 msg ? (int)strcspn(msg, "\n") : 0, msg ? msg : "");
	lua_pop(L, 1);
	return -EINVAL;
}


int policy_open(const char *dir, const char *file, struct policy *p, char *err,
		size_t errlen)
{
	lua_State *L = luaL_newstate();
	int rc = -ENOMEM;

	p->L = NULL;
	snprintf(p->path, sizeof p->path, "%s/%s", dir, file);
	if (!L)
		goto out;
	luaL_openlibs(L);
	lua_newtable(L);
	for (size_t i = 0; i < sizeof sandbox_globals / sizeof *sandbox_globals;
	     i++) {
		lua_getglobal(L, sandbox_globals[i]);
		lua_setfield(L, -2, sandbox_globals[i]);
	}
	rc = -EINVAL;
	if (access(p->path, R_OK) < 0) {
		snprintf(err, errlen, "cannot read %s (%s): check POLICY_DIR",
			 p->path, strerror(errno));
		goto out;
	}
	if (luaL_loadfilex(L, p->path, "t") != LUA_OK) {
		snprintf(err, errlen, "%s", lua_tostring(L, -1));
		goto out;
	}
	lua_insert(L, -2);
	lua_setupvalue(L, -2, 1);
	if (protected_call(L, 0, p->path, err, errlen) < 0)
		goto out;
	if (!lua_istable(L, -1)) {
		snprintf(err, errlen,
			 "%s: the module must return a table, got %s", p->path,
			 luaL_typename(L, -1));
		goto out;
	}
	p->L = L;
	L = NULL;
	rc = 0;
out:
	if (L)
		lua_close(L);
	return rc;
}


int policy_call(struct policy *p, const char *fn, int nargs, char *err,
		size_t errlen)
{
	lua_State *L = p->L;

	lua_getfield(L, 1, fn);
	if (!lua_isfunction(L, -1)) {
		snprintf(err, errlen,
			 "%s: field '%s': expected a function, got %s", p->path,
			 fn, luaL_typename(L, -1));
		lua_pop(L, 1 + nargs);
		return -EINVAL;
	}
	lua_insert(L, -1 - nargs);
	return protected_call(L, nargs, p->path, err, errlen);
}


void policy_close(struct policy *p)
{
	if (p->L)
		lua_close(p->L);
	p->L = NULL;
}


int policy_read_u64(lua_State *L, const char *path, const char *prefix,
		    const char *key, unsigned long long min,
		    unsigned long long max, unsigned long long *out, char *err,
		    size_t errlen)
{
	lua_Integer v = 0;
	int ok = 0;

	lua_getfield(L, -1, key);
	if (lua_isinteger(L, -1)) {
		v = lua_tointeger(L, -1);
		ok = v >= 0 && (unsigned long long)v >= min &&
		     (unsigned long long)v <= max;
	}
	if (!ok) {
		const char *type = luaL_typename(L, -1);
		int is_nil = lua_isnil(L, -1);

		snprintf(err, errlen,
			 "%s: field '%s%s': expected a whole "
			 "number from %llu to %llu, got %s %s",
			 path, prefix, key, min, max, type,
			 is_nil ? "" : luaL_tolstring(L, -1, NULL));
		lua_pop(L, is_nil ? 1 : 2);
		return -EINVAL;
	}
	lua_pop(L, 1);
	*out = (unsigned long long)v;
	return 0;
}


static int is_limit_key(const char *key)
{
	int known = !strcmp(key, "fields") || !strcmp(key, "max_json_depth");

	for (size_t i = 0; i < sizeof limit_fields / sizeof *limit_fields; i++)
		known |= !strcmp(key, limit_fields[i].name);
	return known;
}


static int is_field_limit_key(const char *key)
{
	return !strcmp(key, "max_bytes") || !strcmp(key, "warn_bytes");
}


int policy_unknown_key(lua_State *L, int (*known)(const char *),
		       const char *prefix, const char *noun, const char *path,
		       char *err, size_t errlen)
{
	lua_pushnil(L);
	while (lua_next(L, -2)) {
		const char *key = lua_type(L, -2) == LUA_TSTRING
					  ? lua_tostring(L, -2)
					  : "";

		lua_pop(L, 1);
		if (!known(key)) {
			snprintf(err, errlen,
				 "%s: field '%s%s' is not a known %s: "
				 "check its spelling",
				 path, prefix, key, noun);
			lua_pop(L, 1);
			return -EINVAL;
		}
	}
	return 0;
}


static int read_field_limit(lua_State *L, const char *path,
			    const struct limits *lim, struct field_limit *fl,
			    char *err, size_t errlen)
{
	char prefix[LIMITS_FIELD_NAME_MAX + 16];
	unsigned long long max = 0, warn = 0;

	snprintf(prefix, sizeof prefix, "fields.%s.", fl->name);
	if (lua_istable(L, -1) &&
	    policy_unknown_key(L, is_field_limit_key, prefix, "limit", path,
			       err, errlen) < 0)
		return -EINVAL;
	if (!lua_istable(L, -1)) {
		snprintf(err, errlen,
			 "%s: field 'fields.%s': expected a table "
			 "{warn_bytes=, max_bytes=}, got %s",
			 path, fl->name, luaL_typename(L, -1));
		return -EINVAL;
	}
	if (policy_read_u64(L, path, prefix, "max_bytes", 1,
			    lim->max_message_bytes, &max, err, errlen) < 0)
		return -EINVAL;
	lua_getfield(L, -1, "warn_bytes");
	if (!lua_isnil(L, -1)) {
		lua_pop(L, 1);
		if (policy_read_u64(L, path, prefix, "warn_bytes", 0, max,
				    &warn, err, errlen) < 0)
			return -EINVAL;
	} else {
		lua_pop(L, 1);
	}
	fl->max_bytes = max;
	fl->warn_bytes = warn;
	return 0;
}


/* Reads the fields table of the result on top into lim->fields. */
static int read_fields(lua_State *L, const char *path, struct limits *lim,
		       char *err, size_t errlen)
{
	lua_getfield(L, -1, "fields");
	if (!lua_istable(L, -1)) {
		snprintf(err, errlen,
			 "%s: field 'fields': expected a table of "
			 "field name to {warn_bytes=, max_bytes=}, got %s",
			 path, luaL_typename(L, -1));
		goto fail;
	}
	lua_pushnil(L);
	while (lua_next(L, -2)) {
		struct field_limit *fl = &lim->fields[lim->nfields];
		size_t n = 0;
		const char *name;

		if (lua_type(L, -2) != LUA_TSTRING ||
		    (name = lua_tolstring(L, -2, &n), n == 0) ||
		    n >= LIMITS_FIELD_NAME_MAX) {
			snprintf(err, errlen,
				 "%s: field 'fields': keys must "
				 "be field names of 1 to %d bytes",
				 path, LIMITS_FIELD_NAME_MAX - 1);
			goto fail_iter;
		}
		if (lim->nfields == LIMITS_FIELDS_MAX) {
			snprintf(err, errlen,
				 "%s: field 'fields': at most %d "
				 "limited fields",
				 path, LIMITS_FIELDS_MAX);
			goto fail_iter;
		}
		memcpy(fl->name, name, n + 1);
		fl->name_len = n;
		if (read_field_limit(L, path, lim, fl, err, errlen) < 0)
			goto fail_iter;
		lim->nfields++;
		lua_pop(L, 1);
	}
	lua_pop(L, 1);
	return 0;
fail_iter:
	lua_pop(L, 2);
fail:
	lua_pop(L, 1);
	return -EINVAL;
}


static int read_limits(lua_State *L, const char *path, struct limits *lim,
		       char *err, size_t errlen)
{
	unsigned long long depth = 0;

	if (!lua_istable(L, -1)) {
		snprintf(err, errlen,
			 "%s: for_context must return a table, "
			 "got %s",
			 path, luaL_typename(L, -1));
		return -EINVAL;
	}
	if (policy_unknown_key(L, is_limit_key, "", "limit", path, err,
			       errlen) < 0)
		return -EINVAL;
	for (size_t i = 0; i < sizeof limit_fields / sizeof *limit_fields;
	     i++) {
		const struct u64_field *f = &limit_fields[i];
		unsigned long long *to =
			(unsigned long long *)((char *)lim + f->offset);

		if (f->optional) {
			int absent = lua_getfield(L, -1, f->name) == LUA_TNIL;

			lua_pop(L, 1);
			if (absent) {
				*to = f->fallback;
				continue;
			}
		}
		if (policy_read_u64(L, path, "", f->name, f->min, f->max, to,
				    err, errlen) < 0)
			return -EINVAL;
	}
	if (policy_read_u64(L, path, "", "max_json_depth", 1, 1000, &depth, err,
			    errlen) < 0)
		return -EINVAL;
	lim->max_json_depth = (int)depth;
	return read_fields(L, path, lim, err, errlen);
}


static void push_context(lua_State *L, const struct limits_context *ctx)
{
	lua_createtable(L, 0, 3);
	if (ctx->memory_limit_bytes) {
		lua_pushinteger(L, (lua_Integer)ctx->memory_limit_bytes);
		lua_setfield(L, -2, "memory_limit_bytes");
	}
	lua_pushinteger(L, ctx->concurrency);
	lua_setfield(L, -2, "concurrency");
	lua_pushinteger(L, ctx->prefetch);
	lua_setfield(L, -2, "prefetch");
}


int policy_load_limits(const char *dir, const struct limits_context *ctx,
		       struct limits *out, char *err, size_t errlen)
{
	struct policy p;
	struct limits lim;
	int rc;

	memset(&lim, 0, sizeof lim);
	rc = policy_open(dir, "limits.lua", &p, err, errlen);
	if (rc < 0)
		return rc;
	push_context(p.L, ctx);
	rc = policy_call(&p, "for_context", 1, err, errlen);
	if (rc == 0)
		rc = read_limits(p.L, p.path, &lim, err, errlen);
	if (rc == 0)
		*out = lim;
	policy_close(&p);
	return rc;
}
