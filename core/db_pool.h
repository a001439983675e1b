#ifndef CORE_DB_POOL_H
#define CORE_DB_POOL_H

#include <libpq-fe.h>
#include <stddef.h>

/*
 * A pool of up to DB_POOL_SIZE libpq connections shared by the worker
 * threads. A connection comes back into the pool only clean:
 * db_pool_release() rolls back an open or failed transaction, cancels a
 * running query, and resets a broken connection, and reports what it had
 * to do so the caller can log it. db_pool_acquire() notices a backend
 * that died while the connection sat idle and reconnects before handing
 * it out.
 *
 * A server out of connection slots (SQLSTATE 53300: max_connections, or
 * a role's or database's CONNECTION LIMIT) is not a fault. The pool works
 * with fewer connections than asked for, and a thread that finds none
 * free opens one more now and then, with backoff, never failing a job
 * for it.
 */

struct db_pool;

/* A snapshot for metrics and logs. */
struct db_pool_stats {
	int wanted;  /* the size asked for: DB_POOL_SIZE */
	int open;    /* connections made; below wanted while short */
	int in_use;  /* checked out */
	int waiting; /* threads blocked in db_pool_acquire() */
};

/* What db_pool_release() found and did, as bit flags. */
enum db_release_flags {
	DB_RELEASE_ROLLBACK_INTRANS = 1 << 0, /* transaction left open */
	DB_RELEASE_ROLLBACK_INERROR = 1 << 1, /* failed transaction */
	DB_RELEASE_CANCELLED = 1 << 2,	      /* query still running */
	DB_RELEASE_RESET = 1 << 3,	      /* reconnected */
	DB_RELEASE_RESET_FAILED = 1 << 4,     /* still broken */
};

/* Opens up to size connections to url (a libpq URL or conninfo) now, so
 * a bad DATABASE_URL stops start-up. Returns 0 with *out owning at least
 * one connection: when the server let in fewer than size (53300), err
 * holds its message and db_pool_stats() tells how many. Returns -EAGAIN
 * when the server let in none for want of slots, worth trying again
 * later, and -EIO or -ENOMEM for anything else; err says why. */
int db_pool_open(const char *url, int size, struct db_pool **out, char *err,
		 size_t errlen);

/* Takes a connection, waiting up to timeout_ms for one to come back.
 * Returns 0, -ETIMEDOUT, or -EIO (with a reason in err) when the server
 * cannot be reached; the connection then stays in the pool. */
int db_pool_acquire(struct db_pool *pool, int timeout_ms, PGconn **out,
		    char *err, size_t errlen);

/* Cleans conn and returns it to the pool; returns db_release_flags. */
unsigned db_pool_release(struct db_pool *pool, PGconn *conn);

/* Fills *out with the pool's figures now. */
void db_pool_stats(struct db_pool *pool, struct db_pool_stats *out);

/* Closes every connection; all must have been released. */
void db_pool_close(struct db_pool *pool);

#endif
