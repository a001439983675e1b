#include "failure.h"

#include <errno.h>
#include <lauxlib.h>
#include <stdio.h>
#include <string.h>

/* A day: a longer delay is a typo, and the retry queue would hold the
 * message past any deadline that matters. */
#define DELAY_MAX_MS (24ULL * 3600 * 1000)


int failure_open(const char *dir, struct failure_policy *f, char *err,
		 size_t errlen)
{
	unsigned long long k = 0;
	int rc;

	memset(f, 0, sizeof *f);
	rc = policy_open(dir, "failure.lua", &f->policy, err, errlen);
	if (rc < 0)
		return rc;
	rc = policy_call(&f->policy, "settings", 0, err, errlen);
	if (rc == 0 && !lua_istable(f->policy.L, -1)) {
		snprintf(err, errlen, "%s: settings must return a table",
			 f->policy.path);
		rc = -EINVAL;
	}
	if (rc == 0)
		rc = policy_read_u64(f->policy.L, f->policy.path, "",
				     "quarantine_after_crashes", 1, 1000, &k,
				     err, errlen);
	lua_settop(f->policy.L, 1);
	if (rc < 0) {
		policy_close(&f->policy);
		return rc;
	}
	f->quarantine_after = (int)k;
	return 0;
}


static int read_decision(lua_State *L, const char *path,
			 struct failure_decision *d, char *err, size_t errlen)
{
	const char *action;
	unsigned long long delay = 0;

	if (!lua_istable(L, -1)) {
		snprintf(err, errlen, "%s: decide must return a table, got %s",
			 path, luaL_typename(L, -1));
		return -EINVAL;
	}
	lua_getfield(L, -1, "action");
	action = lua_tostring(L, -1);
	d->retry = action && !strcmp(action, "retry");
	if (!action || (!d->retry && strcmp(action, "dead_letter"))) {
		snprintf(err, errlen,
			 "%s: field 'action': expected \"retry\" "
			 "or \"dead_letter\", got %s",
			 path, action ? action : luaL_typename(L, -1));
		lua_pop(L, 1);
		return -EINVAL;
	}
	lua_pop(L, 1);
	lua_getfield(L, -1, "why");
	snprintf(d->why, sizeof d->why, "%s",
		 lua_isstring(L, -1) ? lua_tostring(L, -1) : "");
	lua_pop(L, 1);
	if (d->retry && policy_read_u64(L, path, "", "delay_ms", 0,
					DELAY_MAX_MS, &delay, err, errlen) < 0)
		return -EINVAL;
	d->delay_ms = delay;
	return 0;
}


int failure_decide(struct failure_policy *f, const char *reason, int attempts,
		   struct failure_decision *d, char *err, size_t errlen)
{
	lua_State *L = f->policy.L;
	int rc;

	memset(d, 0, sizeof *d);
	lua_createtable(L, 0, 2);
	lua_pushstring(L, reason);
	lua_setfield(L, -2, "reason");
	lua_pushinteger(L, attempts);
	lua_setfield(L, -2, "attempts");
	rc = policy_call(&f->policy, "decide", 1, err, errlen);
	if (rc == 0)
		rc = read_decision(L, f->policy.path, d, err, errlen);
	lua_settop(L, 1);
	if (rc < 0)
		memset(d, 0, sizeof *d);
	return rc;
}


int failure_prepare(const char *dir, struct failure_policy *fresh, char *err,
		    size_t errlen)
{
	struct failure_decision d;
	int rc = failure_open(dir, fresh, err, errlen);

	/* A dry run on a typical failure catches a decide() that raises. */
	if (rc == 0)
		rc = failure_decide(fresh, "SQLSTATE 08006: connection failure",
				    0, &d, err, errlen);
	if (rc < 0 && fresh->policy.L)
		failure_close(fresh);
	return rc;
}


void failure_close(struct failure_policy *f)
{
	policy_close(&f->policy);
}
