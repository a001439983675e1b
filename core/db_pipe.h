#ifndef CORE_DB_PIPE_H
#define CORE_DB_PIPE_H

#include <libpq-fe.h>

/*
 * Statements sent ahead of their results, in libpq's pipeline mode. A
 * batch's BEGIN and savepoints ride with a job's statement, and a job's
 * host.db.exec() need not wait at all: its statement runs at the server
 * while the next job runs its Lua, and the batch reads every result at
 * its COMMIT. A failure anywhere makes the server skip the rest up to
 * the sync; the pipe remembers it, and the batch is then run again job
 * by job, so a failure is never pinned on the wrong job.
 */

#define DB_PIPE_PREPARES_MAX 8

struct db_pipe {
	int queued; /* commands sent since the last sync; 0: not in a pipe */
	int failed; /* a result since the last reset was an error */
	char error[256];
	int nprep; /* prepares in flight, kept once they succeed */
	int prep_at[DB_PIPE_PREPARES_MAX];
	unsigned long long prep_key[DB_PIPE_PREPARES_MAX];
};

void db_pipe_reset(struct db_pipe *p);

/* Queues pre[0..npre) and then sql with its n text values, as a named
 * prepared statement when the connection has it or has room for it under
 * stmt_limit (-1: never, for transaction control). Returns 0, or -EIO
 * when libpq cannot queue (the connection is gone). */
int db_pipe_queue(struct db_pipe *p, PGconn *conn, int stmt_limit,
		  const char *const *pre, int npre, const char *sql, int n,
		  const char *const *values);

/* Sends a sync, reads every result queued and leaves pipeline mode.
 * Returns the last command's result, or the first failure since the
 * last sync, for the caller to clear; NULL when the connection broke.
 * The failure of any command but the last is kept in p->failed. */
PGresult *db_pipe_sync(struct db_pipe *p, PGconn *conn);

#endif
