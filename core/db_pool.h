#ifndef CORE_DB_POOL_H
#define CORE_DB_POOL_H

#include <libpq-fe.h>
#include <stddef.h>

/*
 * A fixed pool of libpq connections shared by the worker threads. A
 * connection comes back into the pool only clean: db_pool_release() rolls
 * back an open or failed transaction, cancels a running query, and resets
 * a broken connection, and reports what it had to do so the caller can
 * log it. db_pool_acquire() notices a backend that died while the
 * connection sat idle and reconnects before handing it out.
 */

struct db_pool;

/* What db_pool_release() found and did, as bit flags. */
enum db_release_flags {
	DB_RELEASE_ROLLBACK_INTRANS = 1 << 0, /* transaction left open */
	DB_RELEASE_ROLLBACK_INERROR = 1 << 1, /* failed transaction */
	DB_RELEASE_CANCELLED = 1 << 2,	      /* query still running */
	DB_RELEASE_RESET = 1 << 3,	      /* reconnected */
	DB_RELEASE_RESET_FAILED = 1 << 4,     /* still broken */
};

/* Opens size connections to url (a libpq URL or conninfo) now, so a bad
 * DATABASE_URL stops start-up. On success *out owns them all. */
int db_pool_open(const char *url, int size, struct db_pool **out, char *err,
		 size_t errlen);

/* Takes a connection, waiting up to timeout_ms for one to come back.
 * Returns 0, -ETIMEDOUT, or -EIO (with a reason in err) when the server
 * cannot be reached; the connection then stays in the pool. */
int db_pool_acquire(struct db_pool *pool, int timeout_ms, PGconn **out,
		    char *err, size_t errlen);

/* Cleans conn and returns it to the pool; returns db_release_flags. */
unsigned db_pool_release(struct db_pool *pool, PGconn *conn);

/* Connections checked out, and threads waiting for one; for metrics. */
void db_pool_load(struct db_pool *pool, int *in_use, int *waiting);

/* Connections checked out now; for metrics and tests. */
int db_pool_in_use(struct db_pool *pool);

/* Closes every connection; all must have been released. */
void db_pool_close(struct db_pool *pool);

#endif
