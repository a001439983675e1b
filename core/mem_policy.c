#include "mem_policy.h"

#include <errno.h>
#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

static const char *const level_names[] = { "ok", "warning", "alert", "critical",
					   NULL };
static const char *const severities[] = { "warning", "critical", "resolved",
					  NULL };


const char *mem_level_name(enum mem_level level)
{
	return level_names[level];
}


static void set_int(lua_State *L, const char *key, uint64_t v)
{
	lua_pushinteger(L, (lua_Integer)v);
	lua_setfield(L, -2, key);
}


static void push_sample(lua_State *L, const struct mem_sample *s)
{
	lua_createtable(L, 0, 10);
	set_int(L, "rss_bytes", s->rss_bytes);
	set_int(L, "limit_bytes", s->limit_bytes);
	lua_pushstring(L, mem_source_name(s->limit_source));
	lua_setfield(L, -2, "limit_source");
	set_int(L, "usage_bytes", s->usage_bytes);
	set_int(L, "working_set_bytes", s->working_set_bytes);
	set_int(L, "cgroup_version", (uint64_t)s->cgroup_version);
	if (s->has_events)
		set_int(L, "oom_kill_events", s->oom_kill_events);
	if (s->has_psi) {
		lua_pushnumber(L, s->psi_some_avg10);
		lua_setfield(L, -2, "psi_some_avg10");
		lua_pushnumber(L, s->psi_full_avg10);
		lua_setfield(L, -2, "psi_full_avg10");
	}
}


static void push_state(lua_State *L, const struct mem_state *st)
{
	lua_createtable(L, 0, 4);
	lua_pushstring(L, level_names[st->level]);
	lua_setfield(L, -2, "level");
	lua_pushboolean(L, st->paused);
	lua_setfield(L, -2, "paused");
	set_int(L, "prefetch", (uint64_t)st->prefetch);
	if (st->has_oom)
		set_int(L, "oom_kill_events", st->oom_kill_events);
}


/* Reads table[key] (table on top) as one of names; *out is its index. */
static int read_choice(lua_State *L, const char *path, const char *key,
		       const char *const *names, int *out, char *err,
		       size_t errlen)
{
	const char *v;

	lua_getfield(L, -1, key);
	v = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
	for (int i = 0; v && names[i]; i++) {
		if (!strcmp(v, names[i])) {
			*out = i;
			lua_pop(L, 1);
			return 0;
		}
	}
	snprintf(err, errlen,
		 "%s: field '%s': expected one of %s, %s, ..., "
		 "got %s",
		 path, key, names[0], names[1], v ? v : luaL_typename(L, -1));
	lua_pop(L, 1);
	return -EINVAL;
}


static int read_bool(lua_State *L, const char *path, const char *key, int *out,
		     char *err, size_t errlen)
{
	lua_getfield(L, -1, key);
	if (!lua_isboolean(L, -1)) {
		snprintf(err, errlen,
			 "%s: field '%s': expected a boolean, "
			 "got %s",
			 path, key, luaL_typename(L, -1));
		lua_pop(L, 1);
		return -EINVAL;
	}
	*out = lua_toboolean(L, -1);
	lua_pop(L, 1);
	return 0;
}


static int read_text(lua_State *L, const char *path, const char *key, char *buf,
		     size_t cap, char *err, size_t errlen)
{
	lua_getfield(L, -1, key);
	if (lua_type(L, -1) != LUA_TSTRING) {
		snprintf(err, errlen,
			 "%s: field 'alert.%s': expected a "
			 "string, got %s",
			 path, key, luaL_typename(L, -1));
		lua_pop(L, 1);
		return -EINVAL;
	}
	snprintf(buf, cap, "%s", lua_tostring(L, -1));
	lua_pop(L, 1);
	return 0;
}


/* Reads the optional facts table of the alert on top. */
static int read_facts(lua_State *L, const char *path, struct alert_facts *f,
		      char *err, size_t errlen)
{
	int rc = 0;

	lua_getfield(L, -1, "facts");
	if (!lua_isnil(L, -1))
		rc = alert_facts_read(L, path, "alert.facts", f, err, errlen);
	lua_pop(L, 1);
	return rc;
}


/* Reads the optional alert table of the decision on top. */
static int read_alert(lua_State *L, const char *path, struct mem_alert *a,
		      char *err, size_t errlen)
{
	int sev = 0;
	int rc;

	memset(a, 0, sizeof *a);
	lua_getfield(L, -1, "alert");
	if (lua_isnil(L, -1)) {
		lua_pop(L, 1);
		return 0;
	}
	if (!lua_istable(L, -1)) {
		snprintf(err, errlen,
			 "%s: field 'alert': expected a table or "
			 "nil, got %s",
			 path, luaL_typename(L, -1));
		lua_pop(L, 1);
		return -EINVAL;
	}
	rc = read_choice(L, path, "severity", severities, &sev, err, errlen);
	if (rc == 0)
		rc = read_text(L, path, "key", a->key, sizeof a->key, err,
			       errlen);
	if (rc == 0)
		rc = read_text(L, path, "summary", a->summary,
			       sizeof a->summary, err, errlen);
	if (rc == 0)
		rc = read_facts(L, path, &a->facts, err, errlen);
	lua_pop(L, 1);
	if (rc < 0)
		return rc;
	snprintf(a->severity, sizeof a->severity, "%s", severities[sev]);
	a->raised = 1;
	return 0;
}


static int read_ratio(lua_State *L, const char *path, double *out, char *err,
		      size_t errlen)
{
	double v;

	lua_getfield(L, -1, "ratio");
	v = lua_tonumber(L, -1);
	if (!lua_isnumber(L, -1) || !isfinite(v) || v < 0) {
		snprintf(err, errlen,
			 "%s: field 'ratio': expected a finite "
			 "number >= 0, got %s",
			 path, luaL_typename(L, -1));
		lua_pop(L, 1);
		return -EINVAL;
	}
	lua_pop(L, 1);
	*out = v;
	return 0;
}


static int read_decision(lua_State *L, const char *path,
			 const struct mem_state *st, struct mem_decision *d,
			 char *err, size_t errlen)
{
	unsigned long long prefetch = 0;
	int level = 0;

	if (!lua_istable(L, -1)) {
		snprintf(err, errlen, "%s: decide must return a table, got %s",
			 path, luaL_typename(L, -1));
		return -EINVAL;
	}
	if (read_choice(L, path, "level", level_names, &level, err, errlen) <
		    0 ||
	    read_bool(L, path, "pause", &d->pause, err, errlen) < 0 ||
	    read_bool(L, path, "recycle", &d->recycle, err, errlen) < 0 ||
	    policy_read_u64(L, path, "", "prefetch", 1,
			    (unsigned long long)st->prefetch, &prefetch, err,
			    errlen) < 0 ||
	    read_ratio(L, path, &d->ratio, err, errlen) < 0 ||
	    read_alert(L, path, &d->alert, err, errlen) < 0)
		return -EINVAL;
	d->level = (enum mem_level)level;
	d->prefetch = (int)prefetch;
	return 0;
}


int mem_policy_decide(struct policy *p, const struct mem_sample *s,
		      const struct mem_state *st, struct mem_decision *d,
		      char *err, size_t errlen)
{
	struct mem_decision out;
	int rc;

	memset(&out, 0, sizeof out);
	push_sample(p->L, s);
	push_state(p->L, st);
	rc = policy_call(p, "decide", 2, err, errlen);
	if (rc < 0)
		return rc;
	rc = read_decision(p->L, p->path, st, &out, err, errlen);
	lua_settop(p->L, 1);
	if (rc == 0)
		*d = out;
	return rc;
}
