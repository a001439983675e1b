#ifndef CORE_POLICY_H
#define CORE_POLICY_H

#include <lua.h>
#include <stddef.h>

#include "msg_limits.h"

/*
 * Policy files are Lua modules run in a sandbox: a fresh state whose
 * environment holds only the pure parts of the standard library, so a
 * policy cannot read files, open sockets or keep globals between loads.
 * Everything a policy returns is checked here, and a refusal names the
 * file and the field.
 */

#define POLICY_PATH_MAX 1024

/* A policy module loaded in its own sandboxed state; the table the file
 * returned stays at stack index 1. Used by one thread at a time. */
struct policy {
	lua_State *L;
	char path[POLICY_PATH_MAX];
};

/* ---- loading and calling ------------------------------------------ */

/* Loads <dir>/<file> into a fresh sandbox. On success p owns a state to
 * release with policy_close(). Returns 0 or -EINVAL with err naming the
 * file (and line, for a syntax error or a raise). */
int policy_open(const char *dir, const char *file, struct policy *p, char *err,
		size_t errlen);

/* Calls module.fn with the nargs values on top of the stack under a
 * traceback handler; leaves its one result on top. Returns 0 or -EINVAL
 * (nothing left on the stack) with err naming the file. */
int policy_call(struct policy *p, const char *fn, int nargs, char *err,
		size_t errlen);

void policy_close(struct policy *p);

/* Reads table[key] (table on top) as a whole number in [min, max]; err
 * names path, prefix..key, the range and what was there. */
int policy_read_u64(lua_State *L, const char *path, const char *prefix,
		    const char *key, unsigned long long min,
		    unsigned long long max, unsigned long long *out, char *err,
		    size_t errlen);

/* Refuses a key of the table on top that known() does not accept, so a
 * misspelt field is an error rather than a silent default; err reads
 * "<path>: field '<prefix><key>' is not a known <noun>: ...". */
int policy_unknown_key(lua_State *L, int (*known)(const char *),
		       const char *prefix, const char *noun, const char *path,
		       char *err, size_t errlen);

/* ---- limits.lua ---------------------------------------------------- */

/* Loads <dir>/limits.lua, calls for_context(ctx) and validates the
 * result into *out (written only on success). Returns 0, or -EINVAL with
 * the file and field named in err. */
int policy_load_limits(const char *dir, const struct limits_context *ctx,
		       struct limits *out, char *err, size_t errlen);

#endif
