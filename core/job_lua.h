#ifndef CORE_JOB_LUA_H
#define CORE_JOB_LUA_H

#include <stdatomic.h>
#include <stddef.h>

#include "db_pool.h"
#include "job.h"
#include "limits_shared.h"
#include "msg_limits.h"

/*
 * One worker thread's Lua side: a lua_State with lua-cjson and the job
 * script loaded once, a byte ceiling enforced by its allocator, and the
 * `host` table the script calls (database, log, JSON, clock). A state is
 * used by one thread only. job_state_run() takes a job through the field
 * gate, the decoder and the script's handle(), fills its outcome and
 * gives the database connection back clean.
 */

struct alerts;
struct job_state;

struct job_env {
	const char *script_path;
	struct limits limits;
	struct db_pool *db;
	struct ledger *ledger;
	struct limits_shared *shared; /* NULL: limits never change */
	/* crashes before a job is refused, from failure.lua */
	const atomic_int *quarantine_after;
	struct alerts *alerts;		   /* NULL: alerts are only logged */
	/* may be NULL: no crash ledger */ /* may be NULL: host.db then
					      raises */
	int db_wait_ms; /* how long a job waits for a connection */
	int stmt_cache; /* statements prepared per connection */
	int index;	/* worker number, for logs */
};

/* Builds a state for env and loads the script. On success *out owns it;
 * free with job_state_free(). Returns 0 or -EINVAL with a reason. */
int job_state_new(const struct job_env *env, struct job_state **out, char *err,
		  size_t errlen);

/* Calls the script's init(host), if it has one. Returns 0 or -EINVAL. */
int job_state_init(struct job_state *js, char *err, size_t errlen);

/* Runs job and fills job->outcome, job->reason and job->run_ms: the
 * gate, the script, then giving the connection back clean. */
void job_state_run(struct job_state *js, struct job *job);

/* ---- the steps of a run, for job_batch.c ---------------------------- */

/* The field gate. Returns 0 when job may run, else -EINVAL with the
 * outcome set and the body freed. */
int job_state_gate(struct job_state *js, struct job *job);

/* Runs the script on a gated job. A connection it takes stays checked
 * out; the body is freed unless job_state_keep_bodies() said keep or the
 * job failed (a retry is published from it). */
void job_state_call(struct job_state *js, struct job *job);

/* Keeps bodies after job_state_call() while keep is set, so a batch
 * whose commit fails can run its jobs again; the caller frees them. */
void job_state_keep_bodies(struct job_state *js, int keep);

/* Rebuilds the Lua state if the last job broke it or hit its ceiling. */
void job_state_recover(struct job_state *js);

/* After job_state_call(): gives the connection back clean (failing a job
 * that left its transaction open), recovers, trims after a large body. */
void job_state_after(struct job_state *js, struct job *job);

/* True when the script set batchable = true and a database exists: the
 * host may then run several of its jobs in one transaction. */
int job_state_batchable(const struct job_state *js);

/* Holds sql (a string that outlives the job) to be sent just before
 * the next statement a job runs, in the same round trip. At most
 * JOB_DEFERRED_MAX wait; the failure of one is the statement's failure. */
#define JOB_DEFERRED_MAX 2
void job_state_defer(struct job_state *js, const char *sql);

/* How many deferred commands have not gone out yet. */
int job_state_deferred(const struct job_state *js);

/* Takes back the command deferred last, unsent. */
void job_state_undefer(struct job_state *js);

/* Runs one command on the state's connection, checking one out first if
 * needed. Returns 0, or -EIO with the reason in err. */
int job_state_exec(struct job_state *js, const char *sql, char *err,
		   size_t errlen);

/* 1 when the state's connection is inside a sound transaction, 0 when
 * it is not in one, -1 when the transaction failed or the link is down. */
int job_state_in_transaction(const struct job_state *js);

/* COMMITs on the state's connection, after reading whatever
 * host.db.exec queued, and checks that the server did commit (a failed
 * transaction answers COMMIT with ROLLBACK). */
int job_state_commit(struct job_state *js, char *err, size_t errlen);

/* Lets host.db.exec queue its statements (on) or makes it wait (off),
 * and forgets any earlier failure: a batch begins. */
void job_state_pipe(struct job_state *js, int on);

/* 1, with the server's message in err, when a statement sent ahead
 * failed since job_state_pipe(). */
int job_state_pipe_failed(const struct job_state *js, char *err, size_t errlen);

/* Statements sent ahead whose results are not read yet. */
int job_state_pipe_pending(const struct job_state *js);

/* Runs sql (a ROLLBACK TO SAVEPOINT) behind what is queued, or at once
 * when nothing is. Returns 0 or -EIO with the reason in err. */
int job_state_rollback_job(struct job_state *js, const char *sql, char *err,
			   size_t errlen);

/* Returns the state's connection to the pool (cleaned) without judging
 * any job. */
void job_state_release(struct job_state *js);

void job_state_free(struct job_state *js);

#endif
