#ifndef CORE_JOB_STATE_H
#define CORE_JOB_STATE_H

#include <lauxlib.h>
#include <libpq-fe.h>
#include <lua.h>
#include <signal.h>

#include "db_pipe.h"
#include "job_lua.h"
#include "watchdog.h"

/*
 * Inside a worker's state, shared by its two halves: job_lua.c (the Lua
 * state, the message, the run of handle() and its limits) and job_db.c
 * (the database as the script sees it: host.db, batches, the pipe).
 * Nothing outside those two files includes this.
 */

#define QUERY_PARAMS_MAX 64

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

struct pgres_box {
	PGresult *r;
};

/* The state whose handle() (or batch read) this thread runs, for the
 * watchdog's signal handler. */
extern _Thread_local struct job_state *job_running;

/* Host functions carry their state as their one upvalue. */
static inline struct job_state *job_self(lua_State *L)
{
	return lua_touserdata(L, lua_upvalueindex(1));
}

static inline void job_set_fn(lua_State *L, struct job_state *js,
			      const char *name, lua_CFunction fn)
{
	lua_pushlightuserdata(L, js);
	lua_pushcclosure(L, fn, 1);
	lua_setfield(L, -2, name);
}

/* Starts the job's time budget on this thread: the watchdog signals
 * this thread once it runs out, and the handler finds js here. */
static inline void job_budget_start(struct job_state *js)
{
	job_running = js;
	js->overran = 0;
	watchdog_arm(&js->watch,
		     watchdog_now_ms() +
			     (long long)js->env.limits.job_timeout_ms);
}

/* Pushes the host.db table (query, exec) for js. */
void job_db_install(lua_State *L, struct job_state *js);

/* Gives the job's connection back clean; a job that claimed success
 * but left its transaction open or failed becomes a job_error. */
void job_db_release(struct job_state *js, struct job *job);

/* Drops the cancel handle of the connection being given back. */
void job_db_forget_cancel(struct job_state *js);

#endif
