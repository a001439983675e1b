/*
 * The message path on a worker thread: the field gate reads the raw body,
 * lua-cjson decodes it inside the state (the C body is freed as soon as
 * Lua holds its copy, so a body exists twice only for that moment), and
 * handle(msg, host) runs under a traceback handler, an allocation ceiling
 * and a time budget kept by the watchdog (watchdog.h). A state
 * that ran out of memory is rebuilt before the next job, since a script
 * interrupted mid-update cannot be trusted.
 */
#include "job_state.h"

#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "alerts.h"
#include "body_buf.h"
#include "gate.h"
#include "log.h"
#include "watchdog.h"

#define LOG_FIELDS_MAX 16


/* Its address keys the raw body in msg: unreachable from a script. */
static const char raw_body_key;


static double monotonic_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}


/* The allocator refuses growth past the ceiling; Lua turns the refusal
 * into a memory error that unwinds the job, not the process. */
static void *capped_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
	struct job_state *js = ud;
	size_t old = ptr ? osize : 0;
	void *p;

	if (nsize == 0) {
		free(ptr);
		js->mem_used -= old;
		return NULL;
	}
	if (js->mem_cap && nsize > old &&
	    js->mem_used - old + nsize > js->mem_cap) {
		js->hit_cap = 1;
		return NULL;
	}
	p = realloc(ptr, nsize);
	if (p)
		js->mem_used = js->mem_used - old + nsize;
	return p;
}


static int traceback(lua_State *L)
{
	const char *msg = lua_tostring(L, 1);

	if (!msg)
		msg = luaL_typename(L, 1);
	luaL_traceback(L, L, msg, 1);
	return 1;
}


/* The state whose handle() this thread runs, for the signal handler. */
_Thread_local struct job_state *job_running;


/* Set only once the watchdog saw the job overrun. It stays set and
 * raises at every instruction, so a script that catches the error
 * cannot carry on. */
static void budget_hook(lua_State *L, lua_Debug *ar)
{
	struct job_state *js;
	long long d;

	(void)ar;
	lua_getallocf(L, (void **)&js);
	d = atomic_load_explicit(&js->watch.deadline_ms, memory_order_relaxed);
	if (d != 0 && watchdog_now_ms() > d)
		luaL_error(L, "job exceeded its time budget of %d ms",
			   (int)js->env.limits.job_timeout_ms);
	lua_sethook(L, NULL, 0, 0);
}


/* WATCHDOG_SIGNAL, on the overrunning worker's own thread. lua_sethook
 * is the one Lua call meant for a signal handler, and PQcancel is made to
 * be called from one: a statement still at the server is cancelled, so
 * a slow query cannot outlast the budget either. */
static void on_overrun(int sig)
{
	struct job_state *js = job_running;
	char why[128];

	(void)sig;
	if (js && js->in_sync) {
		/* After the jobs, at the batch's end: no Lua to stop, only
		 * the statements still running. */
		js->overran = 1;
		if (js->cancel)
			PQcancel(js->cancel, why, sizeof why);
		return;
	}
	if (!js || !js->in_call)
		return;
	js->overran = 1;
	lua_sethook(js->L, budget_hook, LUA_MASKCOUNT, 1);
	if (js->in_query && js->cancel)
		PQcancel(js->cancel, why, sizeof why);
}


/* Reached only if Lua raises outside every protected call, which the
 * host never does on purpose. The process cannot continue safely; exiting
 * hands the unacked deliveries back to the broker. */
static int panic(lua_State *L)
{
	const char *msg = lua_tostring(L, -1);

	LOG(LOG_ERROR, "lua_panic", LF_S("reason", msg ? msg : "?"));
	_exit(1);
}


/* host.db.query(sql, ...) -> rows, affected. Raises "SQLSTATE xxxxx: ..."
 * on a database error. The result sits in a box with a finalizer, so an
 * error while building the rows cannot leak it. */


static int reserved_log_key(const char *key)
{
	static const char *const keys[] = { "time", "level", "event",
					    "message_id" };

	for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
		if (!strcmp(key, keys[i]))
			return 1;
	return 0;
}


static int l_log(lua_State *L)
{
	static const char *const levels[] = { "error", "warn", "info", "debug",
					      NULL };
	struct job_state *js = job_self(L);
	struct log_field f[LOG_FIELDS_MAX];
	int level = luaL_checkoption(L, 1, NULL, levels);
	const char *event = luaL_checkstring(L, 2);
	int n = 0;

	if (level > (int)log_threshold)
		return 0;
	if (js->job)
		f[n++] = LF_S("message_id", js->job->message_id);
	if (lua_istable(L, 3)) {
		lua_pushnil(L);
		while (n < LOG_FIELDS_MAX && lua_next(L, 3)) {
			if (lua_type(L, -2) == LUA_TSTRING) {
				f[n].key = lua_tostring(L, -2);
				/* The line's own keys stay the host's: a
				 * reader that keeps the last of two equal
				 * keys would otherwise read the job's. */
				if (reserved_log_key(f[n].key)) {
					f[n].key = lua_pushfstring(L, "job_%s",
								   f[n].key);
					lua_insert(L, 4);
				}
				f[n].type = LOG_T_STR;
				f[n].v.s = luaL_tolstring(L, -1, NULL);
				/* The copy stays on the stack until we
				 * return, which keeps f[n].v.s valid. */
				lua_insert(L, 4);
				n++;
			}
			lua_pop(L, 1);
		}
	}
	log_write((enum log_level)level, event, f, n);
	return 0;
}


static int l_now(lua_State *L)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	lua_pushnumber(L, (double)ts.tv_sec + (double)ts.tv_nsec / 1e9);
	return 1;
}


static int l_json_encode(lua_State *L)
{
	struct job_state *js = job_self(L);

	luaL_checkany(L, 1);
	lua_rawgeti(L, LUA_REGISTRYINDEX, js->ref_encode);
	lua_pushvalue(L, 1);
	lua_call(L, 1, 2);
	if (lua_isnil(L, -2))
		return luaL_error(L, "cannot encode as JSON: %s",
				  lua_tostring(L, -1));
	lua_pop(L, 1);
	return 1;
}


/* msg's __index: decodes the running job's body, stores the result as
 * msg.body and forgets the job. A body the decoder refuses fails the job
 * as invalid_json. */
static int l_msg_index(lua_State *L)
{
	struct job_state *js = job_self(L);
	const char *key = lua_tostring(L, 2);
	struct job *job;

	if (!key || strcmp(key, "body") != 0)
		return 0;
	lua_rawgetp(L, 1, &raw_body_key);
	job = lua_touserdata(L, -1);
	if (!job || !job->body)
		return 0; /* the job has ended: its body is gone */
	lua_rawgeti(L, LUA_REGISTRYINDEX, js->ref_decode);
	lua_pushlstring(L, job->body, job->body_len);
	lua_call(L, 1, 2);
	if (!lua_istable(L, -2)) {
		snprintf(js->decode_error, sizeof js->decode_error, "%s",
			 lua_isstring(L, -1) ? lua_tostring(L, -1) : "?");
		js->decode_failed = 1;
		return luaL_error(L, "invalid_json: %s", js->decode_error);
	}
	lua_pop(L, 1);
	lua_pushvalue(L, -1);
	lua_setfield(L, 1, "body");
	lua_pushnil(L);
	lua_rawsetp(L, 1, &raw_body_key);
	return 1;
}


static int make_host(lua_State *L, struct job_state *js)
{
	lua_createtable(L, 0, 1);
	job_set_fn(L, js, "__index", l_msg_index);
	js->ref_msg_mt = luaL_ref(L, LUA_REGISTRYINDEX);

	lua_createtable(L, 0, 4);
	job_db_install(L, js);
	lua_setfield(L, -2, "db");
	job_set_fn(L, js, "log", l_log);
	job_set_fn(L, js, "now", l_now);
	job_set_fn(L, js, "json_encode", l_json_encode);
	return luaL_ref(L, LUA_REGISTRYINDEX);
}


/* Loads cjson.safe with this state's depth limits and keeps references
 * to its decode and encode functions. */
static int load_cjson(struct job_state *js, char *err, size_t errlen)
{
	lua_State *L = js->L;
	int depth = js->env.limits.max_json_depth;

	lua_getglobal(L, "require");
	lua_pushliteral(L, "cjson.safe");
	if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
		snprintf(err, errlen, "failed to load lua-cjson: %s",
			 lua_tostring(L, -1));
		return -EINVAL;
	}
	lua_getfield(L, -1, "decode_max_depth");
	lua_pushinteger(L, depth);
	lua_call(L, 1, 0);
	lua_getfield(L, -1, "encode_max_depth");
	lua_pushinteger(L, depth);
	lua_call(L, 1, 0);
	lua_getfield(L, -1, "decode");
	js->ref_decode = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_getfield(L, -1, "encode");
	js->ref_encode = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_pop(L, 1);
	return 0;
}


static int load_script(struct job_state *js, char *err, size_t errlen)
{
	lua_State *L = js->L;
	const char *path = js->env.script_path;

	lua_pushcfunction(L, traceback);
	if (luaL_loadfilex(L, path, "t") != LUA_OK ||
	    lua_pcall(L, 0, 1, -2) != LUA_OK) {
		snprintf(err, errlen, "failed to load JOB_SCRIPT: %s",
			 lua_tostring(L, -1));
		return -EINVAL;
	}
	if (!lua_istable(L, -1)) {
		snprintf(err, errlen,
			 "JOB_SCRIPT %s must return a table with "
			 "handle(msg, host), got %s",
			 path, luaL_typename(L, -1));
		return -EINVAL;
	}
	lua_getfield(L, -1, "handle");
	if (!lua_isfunction(L, -1)) {
		snprintf(err, errlen,
			 "JOB_SCRIPT %s: field 'handle' must be "
			 "a function, got %s",
			 path, luaL_typename(L, -1));
		return -EINVAL;
	}
	js->ref_handle = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_getfield(L, -1, "init");
	js->ref_init = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_getfield(L, -1, "batchable");
	js->batchable = lua_toboolean(L, -1);
	lua_pop(L, 3);
	return 0;
}


/* (Re)builds js->L. The ceiling is off while the libraries and script
 * load, so a low ceiling fails the first job with a clear error rather
 * than start-up with a confusing one. */
static int build(struct job_state *js, char *err, size_t errlen)
{
	js->mem_used = 0;
	js->mem_cap = 0;
	js->L = lua_newstate(capped_alloc, js);
	if (!js->L) {
		snprintf(err, errlen, "failed to create a Lua state");
		return -ENOMEM;
	}
	lua_atpanic(js->L, panic);
	luaL_openlibs(js->L);
	if (load_cjson(js, err, errlen) < 0 || load_script(js, err, errlen) < 0)
		return -EINVAL;
	js->ref_host = make_host(js->L, js);
	lua_settop(js->L, 0);
	js->mem_cap = js->env.limits.lua_memory_bytes;
	js->broken = 0;
	return 0;
}


/* A tick a twentieth of the budget, within 10..100 ms: the overshoot
 * stays small beside the budget, and an idle worker wakes at most ten
 * times a second. */
static int watch_tick_ms(unsigned long long budget_ms)
{
	unsigned long long t = budget_ms / 20;

	return t < 10 ? 10 : t > 100 ? 100 : (int)t;
}


int job_state_new(const struct job_env *env, struct job_state **out, char *err,
		  size_t errlen)
{
	struct job_state *js = calloc(1, sizeof *js);

	if (!js)
		return -ENOMEM;
	js->env = *env;
	if (build(js, err, errlen) < 0) {
		job_state_free(js);
		return -EINVAL;
	}
	if (watchdog_add(&js->watch, on_overrun,
			 watch_tick_ms(env->limits.job_timeout_ms)) < 0) {
		snprintf(err, errlen, "cannot start the job watchdog");
		job_state_free(js);
		return -ENOMEM;
	}
	js->watched = 1;
	*out = js;
	return 0;
}


void job_state_free(struct job_state *js)
{
	if (!js)
		return;
	if (js->watched)
		watchdog_remove(&js->watch);
	job_db_forget_cancel(js);
	if (js->L)
		lua_close(js->L);
	free(js);
}


static void set_reason(struct job *job, enum outcome o, const char *msg)
{
	job->outcome = o;
	snprintf(job->reason, sizeof job->reason, "%.*s",
		 msg ? (int)strcspn(msg, "\n") : 0, msg ? msg : "");
}


/* Pushes msg = {properties = {...}} whose body is decoded on first use:
 * a job that never reads msg.body pays neither for the decode nor for a
 * Lua copy of the body (the gate has already validated the JSON). msg
 * holds the job under a key no script can name. Returns 0. */
static int push_msg(struct job_state *js, struct job *job)
{
	lua_State *L = js->L;

	lua_createtable(L, 0, 2);
	lua_pushlightuserdata(L, job);
	lua_rawsetp(L, -2, &raw_body_key);
	lua_rawgeti(L, LUA_REGISTRYINDEX, js->ref_msg_mt);
	lua_setmetatable(L, -2);

	lua_createtable(L, 0, 4);
	lua_pushstring(L, job->message_id);
	lua_setfield(L, -2, "message_id");
	lua_pushstring(L, job->content_type);
	lua_setfield(L, -2, "content_type");
	lua_pushboolean(L, job->redelivered);
	lua_setfield(L, -2, "redelivered");
	lua_pushinteger(L, (lua_Integer)job->delivery_tag);
	lua_setfield(L, -2, "delivery_tag");
	lua_setfield(L, -2, "properties");
	return 0;
}


/* Reads handle()'s two results: true, or false and a reason. */
static void read_result(lua_State *L, struct job *job)
{
	if (lua_isboolean(L, -2) && lua_toboolean(L, -2)) {
		job->outcome = OUTCOME_OK;
	} else if (lua_isboolean(L, -2)) {
		set_reason(job, OUTCOME_INVALID_MESSAGE,
			   lua_isstring(L, -1) ? lua_tostring(L, -1)
					       : "refused by the job script");
	} else {
		job->outcome = OUTCOME_JOB_ERROR;
		snprintf(job->reason, sizeof job->reason,
			 "handle() returned %s; return true, or false and a "
			 "reason",
			 luaL_typename(L, -2));
	}
}


/* Runs handle(msg, host) with the msg on top of the stack. */
static void call_handle(struct job_state *js, struct job *job)
{
	lua_State *L = js->L;
	int rc;

	lua_pushcfunction(L, traceback);
	lua_rawgeti(L, LUA_REGISTRYINDEX, js->ref_handle);
	lua_pushvalue(L, -3);
	lua_rawgeti(L, LUA_REGISTRYINDEX, js->ref_host);
	js->in_call = 1;
	job_budget_start(js);
	rc = lua_pcall(L, 2, 2, -4);
	watchdog_disarm(&js->watch);
	js->in_call = 0;
	if (lua_gethook(L))
		lua_sethook(L, NULL, 0, 0);
	if (js->decode_failed) {
		js->decode_failed = 0;
		set_reason(job, OUTCOME_INVALID_JSON, js->decode_error);
		return;
	}
	if (rc == LUA_OK) {
		read_result(L, job);
		return;
	}
	if (rc == LUA_ERRMEM) {
		js->broken = 1;
		snprintf(job->reason, sizeof job->reason,
			 "job reached the Lua memory ceiling of %llu bytes",
			 (unsigned long long)js->env.limits.lua_memory_bytes);
		job->outcome = OUTCOME_JOB_ERROR;
		return;
	}
	set_reason(job, OUTCOME_JOB_ERROR, lua_tostring(L, -1));
	LOG(LOG_DEBUG, "job_traceback", LF_S("message_id", job->message_id),
	    LF_S("trace", lua_tostring(L, -1)));
}


/* Decodes and handles the job inside a protected call, so a memory error
 * while building msg is caught like one inside the script. */
static int run_protected(lua_State *L)
{
	struct job_state *js = lua_touserdata(L, 1);
	struct job *job = lua_touserdata(L, 2);

	lua_settop(L, 0);
	if (push_msg(js, job) == 0)
		call_handle(js, job);
	/* msg points at the job's C body, which is freed after this job; a
	 * script that kept msg must find nothing there, not freed memory. */
	lua_pushnil(L);
	lua_rawsetp(L, 1, &raw_body_key);
	return 0;
}


static void log_field_warning(const struct job_state *js, const struct job *job,
			      const struct gate_report *rep)
{
	const struct field_limit *fl = &js->env.limits.fields[rep->warn_field];

	LOG(LOG_WARN, "field_size_warning", LF_S("message_id", job->message_id),
	    LF_U("delivery", job->delivery_tag), LF_S("field", fl->name),
	    LF_U("bytes", rep->warn_bytes), LF_U("warn_bytes", fl->warn_bytes));
}


/* After a large body the state's garbage and glibc's freed chunks are
 * both sizeable; collecting and trimming now returns them to the kernel
 * instead of leaving the peak as the new floor. */
static void trim_after_large(struct job_state *js, size_t body_len)
{
	uint64_t threshold = js->env.limits.trim_after_bytes;

	if (!threshold || body_len <= threshold)
		return;
	lua_gc(js->L, LUA_GCCOLLECT, 0);
	body_buf_flush();
	malloc_trim(0);
}


static void rebuild_if_broken(struct job_state *js)
{
	char err[512];

	if (!js->broken)
		return;
	lua_close(js->L);
	js->L = NULL;
	if (build(js, err, sizeof err) < 0) {
		/* The script loaded at start-up; failing now means the
		 * machine is out of memory. Nothing safe remains. */
		LOG(LOG_ERROR, "lua_state_rebuild_failed", LF_S("reason", err));
		abort();
	}
	LOG(LOG_INFO, "lua_state_rebuilt", LF_I("worker", js->env.index));
}


/* A message that was in flight at too many crashes is failed without
 * running: it is the likeliest cause. Returns 1 when job was refused. */
static int quarantined(struct job_state *js, struct job *job)
{
	struct alert a;
	int crashes, after;

	if (!js->env.ledger)
		return 0;
	ledger_key(job->message_id, job->body, job->body_len, job->ledger_key,
		   sizeof job->ledger_key);
	crashes = ledger_crashes(js->env.ledger, job->ledger_key);
	after = js->env.quarantine_after ? atomic_load(js->env.quarantine_after)
					 : 0;
	if (!after || crashes < after)
		return 0;
	job->outcome = OUTCOME_JOB_ERROR;
	snprintf(job->reason, sizeof job->reason,
		 "quarantined: in flight at %d crashes of the worker", crashes);
	/* alerts_raise() logs the alert line too, and never waits for the
	 * network, so a worker thread may call it. */
	alert_init(&a, "quarantine", "critical", job->ledger_key, job->reason);
	alert_fact_str(&a, "message_id", job->message_id);
	alert_fact_int(&a, "crashes", crashes);
	alert_fact_int(&a, "quarantine_after", after);
	alerts_raise(js->env.alerts, &a);
	return 1;
}


int job_state_gate(struct job_state *js, struct job *job)
{
	struct gate_report rep;

	/* After a policy reload the state is rebuilt, so lua-cjson's depth
	 * and the allocator's ceiling follow the new limits too. */
	if (js->env.shared &&
	    limits_shared_refresh(js->env.shared, &js->limits_version,
				  &js->env.limits)) {
		js->broken = js->limits_version > 1;
		rebuild_if_broken(js);
		watchdog_tighten(watch_tick_ms(js->env.limits.job_timeout_ms));
	}
	job->outcome =
		gate_fields(job->body, job->body_len, &js->env.limits, &rep);
	if (job->outcome != OUTCOME_OK) {
		set_reason(job, job->outcome, rep.reason);
		body_buf_put(job->body);
		job->body = NULL;
		return -EINVAL;
	}
	if (rep.warn_field >= 0)
		log_field_warning(js, job, &rep);
	return 0;
}


void job_state_call(struct job_state *js, struct job *job)
{
	double start = monotonic_now();
	int rc;

	if (quarantined(js, job))
		goto out;
	js->job = job;
	ledger_start(js->env.ledger, js->env.index, job->ledger_key);
	lua_pushcfunction(js->L, run_protected);
	lua_pushlightuserdata(js->L, js);
	lua_pushlightuserdata(js->L, job);
	rc = lua_pcall(js->L, 2, 0, 0);
	/* It returned, so it did not kill the process. */
	ledger_finish(js->env.ledger, js->env.index);
	if (rc == LUA_ERRMEM) {
		js->broken = 1;
		set_reason(job, OUTCOME_JOB_ERROR,
			   "message does not fit the Lua memory ceiling");
	} else if (rc != LUA_OK) {
		set_reason(job, OUTCOME_JOB_ERROR, lua_tostring(js->L, -1));
	}
	lua_settop(js->L, 0);
	js->job = NULL;
	ledger_forget(js->env.ledger, job->ledger_key);
out:
	/* A failed job keeps its body until the loop has asked failure.lua
	 * whether to publish a retry; the others are done with it. */
	if (!js->keep_body && job->outcome != OUTCOME_JOB_ERROR) {
		body_buf_put(job->body);
		job->body = NULL;
	}
	job->run_ms += (monotonic_now() - start) * 1000.0;
}


void job_state_keep_bodies(struct job_state *js, int keep)
{
	js->keep_body = keep;
}


void job_state_recover(struct job_state *js)
{
	/* A script that caught its out-of-memory error still holds what it
	 * grew; only a fresh state lets the next job start clean. */
	if (js->hit_cap)
		js->broken = 1;
	js->hit_cap = 0;
	rebuild_if_broken(js);
}


void job_state_after(struct job_state *js, struct job *job)
{
	job_db_release(js, job);
	job_state_recover(js);
	trim_after_large(js, job->body_len);
}


void job_state_run(struct job_state *js, struct job *job)
{
	if (job_state_gate(js, job) < 0)
		return;
	job_state_call(js, job);
	job_state_after(js, job);
}


int job_state_batchable(const struct job_state *js)
{
	return js->batchable && js->env.db;
}


int job_state_init(struct job_state *js, char *err, size_t errlen)
{
	lua_State *L = js->L;
	int rc = 0;

	lua_rawgeti(L, LUA_REGISTRYINDEX, js->ref_init);
	if (lua_isnil(L, -1)) {
		lua_pop(L, 1);
		return 0;
	}
	lua_pushcfunction(L, traceback);
	lua_insert(L, -2);
	lua_rawgeti(L, LUA_REGISTRYINDEX, js->ref_host);
	if (lua_pcall(L, 1, 0, -3) != LUA_OK) {
		snprintf(err, errlen, "JOB_SCRIPT init() failed: %s",
			 lua_tostring(L, -1));
		rc = -EINVAL;
	}
	lua_settop(L, 0);
	if (js->conn) {
		struct job none = { .message_id = "init" };

		job_db_release(js, &none);
	}
	return rc;
}
