#ifndef CORE_JOB_LUA_H
#define CORE_JOB_LUA_H

#include <stddef.h>

#include "db_pool.h"
#include "job.h"
#include "msg_limits.h"

/*
 * One worker thread's Lua side: a lua_State with lua-cjson and the job
 * script loaded once, a byte ceiling enforced by its allocator, and the
 * `host` table the script calls (database, log, JSON, clock). A state is
 * used by one thread only. job_state_run() takes a job through the field
 * gate, the decoder and the script's handle(), fills its outcome and
 * gives the database connection back clean.
 */

struct job_state;

struct job_env {
	const char *script_path;
	struct limits limits;
	struct db_pool *db; /* may be NULL: host.db then raises */
	int db_wait_ms;	    /* how long a job waits for a connection */
	int index;	    /* worker number, for logs */
};

/* Builds a state for env and loads the script. On success *out owns it;
 * free with job_state_free(). Returns 0 or -EINVAL with a reason. */
int job_state_new(const struct job_env *env, struct job_state **out, char *err,
		  size_t errlen);

/* Calls the script's init(host), if it has one. Returns 0 or -EINVAL. */
int job_state_init(struct job_state *js, char *err, size_t errlen);

/* Runs job and fills job->outcome, job->reason and job->run_ms. */
void job_state_run(struct job_state *js, struct job *job);

/* A pool_run_fn over job_state_run(). */
void job_state_run_fn(void *ctx, struct job *job);

void job_state_free(struct job_state *js);

#endif
