/*
 * The message path on a worker thread: the field gate reads the raw body,
 * lua-cjson decodes it inside the state (the C body is freed as soon as
 * Lua holds its copy, so a body exists twice only for that moment), and
 * handle(msg, host) runs under a traceback handler, an allocation ceiling
 * and a time budget kept by the watchdog (watchdog.h). A state
 * that ran out of memory is rebuilt before the next job, since a script
 * interrupted mid-update cannot be trusted.
 */
#include "job_lua.h"

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
#include "db_pipe.h"
#include "db_stmt.h"
#include "gate.h"
#include "log.h"
#include "watchdog.h"

#define QUERY_PARAMS_MAX 64
#define LOG_FIELDS_MAX	 16

struct job_state {
	lua_State *L;
	struct job_env env;
	size_t mem_used;
	size_t mem_cap; /* 0 while the state is being built */
	int ref_handle;
	int ref_init;
	int ref_decode;
	int ref_encode;
	int ref_host;
	int ref_msg_mt;
	int batchable;		 /* the script lets the host own transactions */
	int keep_body;		 /* a batch may need to run the job again */
	unsigned limits_version; /* of env.shared last copied */
	int decode_failed;	 /* msg.body could not be decoded */
	char decode_error[128];
	PGconn *conn; /* checked out for the running job */
	/* Commands a batch wants run before the job's next statement; they
	 * go out with it in one round trip (libpq's pipeline mode). */
	const char *deferred[JOB_DEFERRED_MAX];
	int ndeferred;
	struct db_pipe pipe; /* statements sent ahead of their results */
	int async_ok;	     /* in a batch: host.db.exec may not wait */
	/* For the watchdog's handler to cancel a statement that outlives the
	 * job's budget; made for conn when a job first runs one. */
	PGcancel *cancel;
	volatile sig_atomic_t in_query; /* a statement is at the server */
	volatile sig_atomic_t overran;	/* the budget ran out in handle() */
	struct job *job;		/* the running job, for logs */
	struct watch watch;		/* the time budget */
	int watched;			/* watch is registered */
	volatile sig_atomic_t in_call;	/* handle() is running */
	volatile sig_atomic_t in_sync;	/* a batch reads what exec sent */
	int broken;			/* rebuild before the next job */
	int hit_cap; /* the allocator refused during this job */
};

/* Its address keys the raw body in msg: unreachable from a script. */
static const char raw_body_key;

struct pgres_box {
	PGresult *r;
};


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
static _Thread_local struct job_state *running_state;


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
	struct job_state *js = running_state;
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


static struct job_state *self(lua_State *L)
{
	return lua_touserdata(L, lua_upvalueindex(1));
}


static int pgres_gc(lua_State *L)
{
	struct pgres_box *box = lua_touserdata(L, 1);

	PQclear(box->r);
	box->r = NULL;
	return 0;
}


/* The cancel handle names the connection's server process, which a reset
 * in the pool changes; it is made again after the next checkout. */
static void forget_cancel(struct job_state *js)
{
	PQfreeCancel(js->cancel);
	js->cancel = NULL;
}


/* Checks a connection out for the running job on first use. */
static PGconn *job_conn(lua_State *L, struct job_state *js)
{
	char err[256];

	if (js->conn)
		return js->conn;
	if (!js->env.db)
		luaL_error(L, "no database configured");
	if (db_pool_acquire(js->env.db, js->env.db_wait_ms, &js->conn, err,
			    sizeof err) < 0) {
		js->conn = NULL;
		luaL_error(L, "database unavailable: %s", err);
	}
	return js->conn;
}


/* Turns the query arguments at 2.. into libpq text parameters; numbers
 * are converted on the stack so their strings live until the call. */
static int query_params(lua_State *L, const char **values)
{
	int n = lua_gettop(L) - 1;

	if (n > QUERY_PARAMS_MAX)
		luaL_error(L, "at most %d query parameters", QUERY_PARAMS_MAX);
	for (int i = 0; i < n; i++) {
		int idx = i + 2;

		switch (lua_type(L, idx)) {
		case LUA_TNIL:
			values[i] = NULL;
			break;
		case LUA_TBOOLEAN:
			values[i] = lua_toboolean(L, idx) ? "true" : "false";
			break;
		case LUA_TNUMBER:
		case LUA_TSTRING:
			values[i] = luaL_tolstring(L, idx, NULL);
			lua_replace(L, idx);
			values[i] = lua_tostring(L, idx);
			break;
		default:
			luaL_error(L,
				   "query parameter $%d: cannot send a %s; "
				   "encode it as a string",
				   i + 1, luaL_typename(L, idx));
		}
	}
	return n;
}


static void push_rows(lua_State *L, PGresult *r)
{
	int rows = PQntuples(r), cols = PQnfields(r);

	lua_createtable(L, rows, 0);
	for (int i = 0; i < rows; i++) {
		lua_createtable(L, 0, cols);
		for (int c = 0; c < cols; c++) {
			if (PQgetisnull(r, i, c))
				continue;
			lua_pushlstring(L, PQgetvalue(r, i, c),
					(size_t)PQgetlength(r, i, c));
			lua_setfield(L, -2, PQfname(r, c));
		}
		lua_rawseti(L, -2, i + 1);
	}
}


/* host.db.query(sql, ...) -> rows, affected. Raises "SQLSTATE xxxxx: ..."
 * on a database error. The result sits in a box with a finalizer, so an
 * error while building the rows cannot leak it. */
static int l_db_query(lua_State *L);


/* Runs the job's statement and returns its result (NULL when the
 * connection failed, as PQexecParams). A statement the connection has
 * prepared runs by name; one it has room for is prepared on the way, and
 * deferred commands and statements already queued by host.db.exec go
 * first: all in one round trip. With statements queued before it, the
 * first failure among them is what comes back. */
static PGresult *run_statement(struct job_state *js, PGconn *conn,
			       const char *sql, int n,
			       const char *const *values)
{
	if (!js->ndeferred && !js->pipe.queued) {
		char name[DB_STMT_NAME_MAX];
		uint64_t key = db_stmt_key(sql, name);
		struct db_stmts *stmts = db_stmts_of(conn);

		if (db_stmts_has(stmts, key))
			return PQexecPrepared(conn, name, n, values, NULL, NULL,
					      0);
		if (!db_stmts_room(stmts, js->env.stmt_cache))
			return PQexecParams(conn, sql, n, NULL, values, NULL,
					    NULL, 0);
	}
	db_pipe_queue(&js->pipe, conn, js->env.stmt_cache, js->deferred,
		      js->ndeferred, sql, n, values);
	js->ndeferred = 0;
	return db_pipe_sync(&js->pipe, conn);
}


/* host.db.exec(sql, ...): a statement whose rows the job does not read.
 * Inside a batch it is queued and the job goes on at once; its result is
 * read at the batch's COMMIT, and a failure makes the batch run again job
 * by job, where it is the job's own. Elsewhere it runs as query() does
 * and returns the row count. */
static int l_db_exec(lua_State *L)
{
	struct job_state *js = self(L);
	const char *values[QUERY_PARAMS_MAX];
	const char *sql;
	PGconn *conn;
	int n;

	if (!js->async_ok) {
		int got = l_db_query(L);

		lua_remove(L, -got);
		return got - 1;
	}
	sql = luaL_checkstring(L, 1);
	n = query_params(L, values);
	conn = job_conn(L, js);
	if (js->pipe.failed)
		return luaL_error(L,
				  "an earlier statement of this batch "
				  "failed: %s",
				  js->pipe.error);
	if (db_pipe_queue(&js->pipe, conn, js->env.stmt_cache, js->deferred,
			  js->ndeferred, sql, n, values) < 0) {
		js->ndeferred = 0;
		return luaL_error(L, "database connection lost: %s",
				  PQerrorMessage(conn));
	}
	js->ndeferred = 0;
	return 0;
}


static int l_db_query(lua_State *L)
{
	struct job_state *js = self(L);
	const char *values[QUERY_PARAMS_MAX];
	const char *sql = luaL_checkstring(L, 1);
	int n = query_params(L, values);
	PGconn *conn = job_conn(L, js);
	struct pgres_box *box;
	ExecStatusType st;

	box = lua_newuserdatauv(L, sizeof *box, 0);
	box->r = NULL;
	luaL_setmetatable(L, "moonrabbit.pgresult");
	if (!js->cancel)
		js->cancel = PQgetCancel(conn);
	js->in_query = 1;
	box->r = run_statement(js, conn, sql, n, values);
	js->in_query = 0;
	st = PQresultStatus(box->r);
	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
		const char *state =
			PQresultErrorField(box->r, PG_DIAG_SQLSTATE);
		const char *msg = box->r ? PQresultErrorMessage(box->r)
					 : PQerrorMessage(conn);

		if (js->overran) {
			PQclear(box->r);
			box->r = NULL;
			return luaL_error(L,
					  "job exceeded its time budget of %d "
					  "ms in a statement",
					  (int)js->env.limits.job_timeout_ms);
		}
		/* A script ran DEALLOCATE or DISCARD: the names are gone,
		 * and this job fails, but the next is prepared afresh. */
		db_stmts_note(db_stmts_of(conn), box->r);

		lua_pushfstring(L, "SQLSTATE %s: %s", state ? state : "?????",
				msg);
		PQclear(box->r);
		box->r = NULL;
		return lua_error(L);
	}
	/* The script dropped the prepared statements itself. */
	db_stmts_note(db_stmts_of(conn), box->r);
	push_rows(L, box->r);
	lua_pushinteger(L, strtoll(PQcmdTuples(box->r), NULL, 10));
	return 2;
}


static int l_log(lua_State *L)
{
	static const char *const levels[] = { "error", "warn", "info", "debug",
					      NULL };
	struct job_state *js = self(L);
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
	struct job_state *js = self(L);

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
	struct job_state *js = self(L);
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


static void set_fn(lua_State *L, struct job_state *js, const char *name,
		   lua_CFunction fn)
{
	lua_pushlightuserdata(L, js);
	lua_pushcclosure(L, fn, 1);
	lua_setfield(L, -2, name);
}


static int make_host(lua_State *L, struct job_state *js)
{
	luaL_newmetatable(L, "moonrabbit.pgresult");
	lua_pushcfunction(L, pgres_gc);
	lua_setfield(L, -2, "__gc");
	lua_pop(L, 1);

	lua_createtable(L, 0, 1);
	set_fn(L, js, "__index", l_msg_index);
	js->ref_msg_mt = luaL_ref(L, LUA_REGISTRYINDEX);

	lua_createtable(L, 0, 4);
	lua_createtable(L, 0, 1);
	set_fn(L, js, "query", l_db_query);
	set_fn(L, js, "exec", l_db_exec);
	lua_setfield(L, -2, "db");
	set_fn(L, js, "log", l_log);
	set_fn(L, js, "now", l_now);
	set_fn(L, js, "json_encode", l_json_encode);
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
	forget_cancel(js);
	if (js->L)
		lua_close(js->L);
	free(js);
}


/* Gives the job's connection back and says what cleaning it took. A
 * transaction the job left open or failed means its work was never
 * committed, so a job that claimed success fails instead: acking it
 * would lose it. */
static void release_conn(struct job_state *js, struct job *job)
{
	unsigned flags;

	if (!js->conn)
		return;
	forget_cancel(js);
	flags = db_pool_release(js->env.db, js->conn);
	js->conn = NULL;
	if (flags & (DB_RELEASE_ROLLBACK_INTRANS | DB_RELEASE_ROLLBACK_INERROR))
		LOG(LOG_WARN, "db_rollback_on_release",
		    LF_S("message_id", job->message_id),
		    LF_B("left_open", flags & DB_RELEASE_ROLLBACK_INTRANS),
		    LF_B("failed", flags & DB_RELEASE_ROLLBACK_INERROR));
	if (flags & DB_RELEASE_RESET)
		LOG(LOG_WARN, "db_connection_reset",
		    LF_S("message_id", job->message_id),
		    LF_B("cancelled", flags & DB_RELEASE_CANCELLED),
		    LF_B("ok", !(flags & DB_RELEASE_RESET_FAILED)));
	if ((flags &
	     (DB_RELEASE_ROLLBACK_INTRANS | DB_RELEASE_ROLLBACK_INERROR)) &&
	    job->outcome == OUTCOME_OK) {
		job->outcome = OUTCOME_JOB_ERROR;
		snprintf(job->reason, sizeof job->reason,
			 "job returned with its transaction %s; rolled back",
			 flags & DB_RELEASE_ROLLBACK_INTRANS ? "open"
							     : "failed");
	}
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
	running_state = js;
	js->overran = 0;
	js->in_call = 1;
	watchdog_arm(&js->watch,
		     watchdog_now_ms() +
			     (long long)js->env.limits.job_timeout_ms);
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
	release_conn(js, job);
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


void job_state_defer(struct job_state *js, const char *sql)
{
	if (js->ndeferred < JOB_DEFERRED_MAX)
		js->deferred[js->ndeferred++] = sql;
}


int job_state_deferred(const struct job_state *js)
{
	return js->ndeferred;
}


void job_state_undefer(struct job_state *js)
{
	if (js->ndeferred > 0)
		js->ndeferred--;
}


int job_state_exec(struct job_state *js, const char *sql, char *err,
		   size_t errlen)
{
	PGresult *r;
	int ok;

	if (!js->conn && db_pool_acquire(js->env.db, js->env.db_wait_ms,
					 &js->conn, err, errlen) < 0) {
		js->conn = NULL;
		return -EIO;
	}
	r = PQexec(js->conn, sql);
	ok = PQresultStatus(r) == PGRES_COMMAND_OK;
	if (!ok)
		snprintf(err, errlen, "%s: %.*s", sql,
			 (int)strcspn(PQerrorMessage(js->conn), "\n"),
			 PQerrorMessage(js->conn));
	PQclear(r);
	return ok ? 0 : -EIO;
}


int job_state_in_transaction(const struct job_state *js)
{
	PGTransactionStatusType t =
		js->conn ? PQtransactionStatus(js->conn) : PQTRANS_IDLE;

	if (t == PQTRANS_INTRANS)
		return 1;
	return t == PQTRANS_IDLE ? 0 : -1;
}


void job_state_pipe(struct job_state *js, int on)
{
	db_pipe_reset(&js->pipe);
	js->async_ok = on;
}


int job_state_pipe_failed(const struct job_state *js, char *err, size_t errlen)
{
	if (js->pipe.failed)
		snprintf(err, errlen, "%s", js->pipe.error);
	return js->pipe.failed;
}


int job_state_pipe_pending(const struct job_state *js)
{
	return js->pipe.queued;
}


/* Reads the results of the statements host.db.exec sent ahead, which may
 * still be running at the server after their jobs returned: they get a
 * time budget of their own, or a pg_sleep() sent ahead would hold the
 * worker for as long as it likes. A cancelled statement fails the
 * transaction, so the batch runs again job by job, where each has the
 * budget to itself. */
static PGresult *sync_in_budget(struct job_state *js)
{
	PGresult *r;

	if (!js->cancel)
		js->cancel = PQgetCancel(js->conn);
	running_state = js;
	js->overran = 0;
	js->in_sync = 1;
	watchdog_arm(&js->watch,
		     watchdog_now_ms() +
			     (long long)js->env.limits.job_timeout_ms);
	r = db_pipe_sync(&js->pipe, js->conn);
	watchdog_disarm(&js->watch);
	js->in_sync = 0;
	return r;
}


/* Queues sql behind what is in the pipe, or runs it when nothing is. */
static int control(struct job_state *js, const char *sql, PGresult **r)
{
	*r = NULL;
	if (!js->pipe.queued)
		return 0;
	if (db_pipe_queue(&js->pipe, js->conn, -1, NULL, 0, sql, 0, NULL) < 0)
		return -EIO;
	return 1;
}


int job_state_rollback_job(struct job_state *js, const char *sql, char *err,
			   size_t errlen)
{
	PGresult *r;
	int queued = control(js, sql, &r);

	if (queued < 0) {
		snprintf(err, errlen, "%s: connection lost", sql);
		return -EIO;
	}
	return queued ? 0 : job_state_exec(js, sql, err, errlen);
}


int job_state_commit(struct job_state *js, char *err, size_t errlen)
{
	PGresult *r = NULL;
	int ok;

	if (!js->conn) {
		snprintf(err, errlen, "COMMIT: no connection");
		return -EIO;
	}
	if (js->pipe.queued) {
		if (control(js, "COMMIT", &r) > 0)
			r = sync_in_budget(js);
	} else {
		r = PQexec(js->conn, "COMMIT");
	}
	ok = PQresultStatus(r) == PGRES_COMMAND_OK && !js->pipe.failed &&
	     !strcmp(PQcmdStatus(r), "COMMIT");
	if (!ok) {
		const char *why = js->pipe.failed ? js->pipe.error
						  : PQerrorMessage(js->conn);

		if (!*why)
			why = "the server rolled the transaction back";
		if (js->overran)
			why = "statements sent ahead outlived the time budget";
		snprintf(err, errlen, "COMMIT: %.*s", (int)strcspn(why, "\n"),
			 why);
	}
	PQclear(r);
	return ok ? 0 : -EIO;
}


void job_state_release(struct job_state *js)
{
	PGresult *r;

	/* Whatever is still queued is read and dropped; the pool then rolls
	 * back the transaction it belonged to. */
	if (js->conn && js->pipe.queued) {
		r = sync_in_budget(js);
		PQclear(r);
	}
	js->async_ok = 0;
	forget_cancel(js);
	if (js->conn)
		db_pool_release(js->env.db, js->conn);
	js->conn = NULL;
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

		release_conn(js, &none);
	}
	return rc;
}
