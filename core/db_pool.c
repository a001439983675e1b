#include "db_pool.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct db_pool {
	pthread_mutex_t lock;
	pthread_cond_t returned;
	int size;
	int nfree;
	int waiting;   /* threads blocked in db_pool_acquire() */
	PGconn **free; /* stack of idle connections */
	PGconn **all;
};


/* Server notices ("relation already exists, skipping") would reach
 * stderr as plain text and break the one-JSON-object-per-line log. */
static void drop_notice(void *arg, const char *message)
{
	(void)arg;
	(void)message;
}


static PGconn *connect_one(const char *url)
{
	/* Listed before dbname so that a URL naming its own values wins:
	 * libpq keeps the last value it processes. */
	static const char *const keys[] = { "application_name",
					    "connect_timeout", "dbname", NULL };
	const char *values[] = { "moonrabbit", "10", url, NULL };
	PGconn *c = PQconnectdbParams(keys, values, 1);

	if (c)
		PQsetNoticeProcessor(c, drop_notice, NULL);
	return c;
}


/* Copies libpq's message without its trailing newline. */
static void conn_error(PGconn *c, const char *what, char *err, size_t errlen)
{
	const char *msg = c ? PQerrorMessage(c) : "out of memory";

	snprintf(err, errlen, "%s: %.*s", what, (int)strcspn(msg, "\n"), msg);
}


int db_pool_open(const char *url, int size, struct db_pool **out, char *err,
		 size_t errlen)
{
	struct db_pool *p = calloc(1, sizeof *p);
	int rc = -ENOMEM;

	if (!p)
		return -ENOMEM;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->returned, NULL);
	p->free = calloc((size_t)size, sizeof *p->free);
	p->all = calloc((size_t)size, sizeof *p->all);
	if (!p->free || !p->all)
		goto out;
	for (int i = 0; i < size; i++) {
		PGconn *c = connect_one(url);

		p->all[p->size++] = c;
		if (!c || PQstatus(c) != CONNECTION_OK) {
			conn_error(c, "failed to connect to DATABASE_URL", err,
				   errlen);
			rc = -EIO;
			goto out;
		}
		p->free[p->nfree++] = c;
	}
	*out = p;
	p = NULL;
	rc = 0;
out:
	if (p) {
		p->nfree = p->size;
		db_pool_close(p);
	}
	return rc;
}


/* An idle connection has nothing to say; if its socket is readable the
 * server sent a termination notice or closed it. The notice and the end
 * of the stream arrive as two reads, and only the second turns the status
 * to CONNECTION_BAD, which a reset then repairs. */
static int ensure_alive(PGconn *c, char *err, size_t errlen)
{
	struct pollfd pfd = { .fd = PQsocket(c), .events = POLLIN };

	for (int i = 0; i < 4 && PQstatus(c) == CONNECTION_OK; i++) {
		pfd.fd = PQsocket(c);
		if (pfd.fd < 0 || poll(&pfd, 1, 0) <= 0)
			break;
		PQconsumeInput(c);
	}
	if (PQstatus(c) == CONNECTION_OK)
		return 0;
	PQreset(c);
	if (PQstatus(c) == CONNECTION_OK)
		return 0;
	conn_error(c, "failed to reconnect to the database", err, errlen);
	return -EIO;
}


static void deadline_after(struct timespec *ts, int ms)
{
	clock_gettime(CLOCK_REALTIME, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}


static void put_back(struct db_pool *pool, PGconn *c)
{
	pthread_mutex_lock(&pool->lock);
	pool->free[pool->nfree++] = c;
	pthread_cond_signal(&pool->returned);
	pthread_mutex_unlock(&pool->lock);
}


int db_pool_acquire(struct db_pool *pool, int timeout_ms, PGconn **out,
		    char *err, size_t errlen)
{
	struct timespec deadline;
	PGconn *c;

	deadline_after(&deadline, timeout_ms);
	pthread_mutex_lock(&pool->lock);
	pool->waiting++;
	while (pool->nfree == 0) {
		if (pthread_cond_timedwait(&pool->returned, &pool->lock,
					   &deadline) == ETIMEDOUT &&
		    pool->nfree == 0) {
			pool->waiting--;
			pthread_mutex_unlock(&pool->lock);
			snprintf(err, errlen,
				 "no database connection free "
				 "within %d ms",
				 timeout_ms);
			return -ETIMEDOUT;
		}
	}
	pool->waiting--;
	c = pool->free[--pool->nfree];
	pthread_mutex_unlock(&pool->lock);

	/* The reconnect runs outside the lock: it can take seconds. */
	if (ensure_alive(c, err, errlen) < 0) {
		put_back(pool, c);
		return -EIO;
	}
	*out = c;
	return 0;
}


/* Sends ROLLBACK; a connection that cannot take it is reset. */
static unsigned rollback(PGconn *c)
{
	PGresult *r = PQexec(c, "ROLLBACK");
	int ok = PQresultStatus(r) == PGRES_COMMAND_OK;

	PQclear(r);
	return ok ? 0 : DB_RELEASE_RESET;
}


static unsigned clean(PGconn *c)
{
	unsigned flags = 0;

	switch (PQtransactionStatus(c)) {
	case PQTRANS_IDLE:
		break;
	case PQTRANS_INTRANS:
		flags = DB_RELEASE_ROLLBACK_INTRANS | rollback(c);
		break;
	case PQTRANS_INERROR:
		flags = DB_RELEASE_ROLLBACK_INERROR | rollback(c);
		break;
	case PQTRANS_ACTIVE: {
		/* Only an async caller can leave a query running; the
		 * connection is reset rather than trusted afterwards. */
		PGcancel *cancel = PQgetCancel(c);
		char buf[256];

		if (cancel) {
			PQcancel(cancel, buf, sizeof buf);
			PQfreeCancel(cancel);
		}
		flags = DB_RELEASE_CANCELLED | DB_RELEASE_RESET;
		break;
	}
	case PQTRANS_UNKNOWN:
	default:
		flags = DB_RELEASE_RESET;
		break;
	}
	if (PQstatus(c) != CONNECTION_OK)
		flags |= DB_RELEASE_RESET;
	if (flags & DB_RELEASE_RESET) {
		PQreset(c);
		if (PQstatus(c) != CONNECTION_OK)
			flags |= DB_RELEASE_RESET_FAILED;
	}
	return flags;
}


unsigned db_pool_release(struct db_pool *pool, PGconn *conn)
{
	unsigned flags = clean(conn);

	put_back(pool, conn);
	return flags;
}


void db_pool_load(struct db_pool *pool, int *in_use, int *waiting)
{
	pthread_mutex_lock(&pool->lock);
	*in_use = pool->size - pool->nfree;
	*waiting = pool->waiting;
	pthread_mutex_unlock(&pool->lock);
}


int db_pool_in_use(struct db_pool *pool)
{
	int n;

	pthread_mutex_lock(&pool->lock);
	n = pool->size - pool->nfree;
	pthread_mutex_unlock(&pool->lock);
	return n;
}


void db_pool_close(struct db_pool *pool)
{
	if (!pool)
		return;
	for (int i = 0; i < pool->size; i++)
		PQfinish(pool->all[i]);
	pthread_mutex_destroy(&pool->lock);
	pthread_cond_destroy(&pool->returned);
	free(pool->free);
	free(pool->all);
	free(pool);
}
