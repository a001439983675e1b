/*
 * The pool opens what the server lets it have. A server, role or
 * database out of connection slots (SQLSTATE 53300) is a shortfall, not a
 * fault: the pool starts with the connections it got, and a job that
 * finds none free may make one more, at most one thread at a time and no
 * more often than a capped, jittered backoff allows, so a full server is
 * asked now and then rather than by every waiting job.
 */
#include "db_pool.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Backoff between attempts to grow a short pool. */
#define GROW_MIN_MS 1000
#define GROW_MAX_MS 30000
/* libpq's own default is to wait forever; a job should not. */
#define CONNECT_TIMEOUT_S "10"

struct db_pool {
	pthread_mutex_t lock;
	pthread_cond_t returned;
	char *url; /* credentials inside: never logged */
	int want;  /* DB_POOL_SIZE */
	int size;  /* connections open, all[0..size) */
	int nfree;
	int waiting;	/* threads blocked in db_pool_acquire() */
	int growing;	/* a thread is connecting, outside the lock */
	int grow_ms;	/* the next backoff */
	double grow_at; /* CLOCK_MONOTONIC seconds; no attempt before */
	unsigned seed;
	PGconn **free; /* stack of idle connections */
	PGconn **all;
};


static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}


/* Server notices ("relation already exists, skipping") would reach
 * stderr as plain text and break the one-JSON-object-per-line log. */
static void drop_notice(void *arg, const char *message)
{
	(void)arg;
	(void)message;
}


/* The connect_timeout in force for c in milliseconds, -1 for none, read
 * back because a URL may set its own. Under 2 s counts as 2 s, as in
 * libpq. */
static int connect_timeout_ms(PGconn *c)
{
	PQconninfoOption *opts = PQconninfo(c);
	int s = 0;

	for (PQconninfoOption *o = opts; o && o->keyword; o++)
		if (!strcmp(o->keyword, "connect_timeout") && o->val)
			s = atoi(o->val);
	PQconninfoFree(opts);
	if (s <= 0)
		return -1;
	return (s < 2 ? 2 : s) * 1000;
}


/* Drives a started connection to its end. The clock restarts when libpq
 * moves on to the next host of a multi-host URL, as its own loop does;
 * but a host that accepts and then hangs ends the attempt, since libpq
 * offers no call to skip it. Returns 0 when libpq has finished
 * (connected or failed), or -ETIMEDOUT. */
static int finish_connect(PGconn *c)
{
	PostgresPollingStatusType st = PGRES_POLLING_WRITING;
	int limit = connect_timeout_ms(c);
	const char *host = NULL;
	double until = 0;

	if (PQstatus(c) == CONNECTION_BAD)
		return 0;
	while (st == PGRES_POLLING_READING || st == PGRES_POLLING_WRITING) {
		struct pollfd pfd = { .fd = PQsocket(c) };
		int left = -1;

		pfd.events = st == PGRES_POLLING_READING ? POLLIN : POLLOUT;
		if (PQhost(c) != host) {
			host = PQhost(c);
			until = now_s() + limit / 1000.0;
		}
		if (limit >= 0)
			left = (int)((until - now_s()) * 1000);
		if (limit >= 0 && left <= 0)
			return -ETIMEDOUT;
		/* 0 is only ever a timeout; EINTR just polls again. */
		if (poll(&pfd, 1, left) == 0)
			return -ETIMEDOUT;
		st = PQconnectPoll(c);
	}
	return 0;
}


/* 53300: the server, the role or the database has no connection slot
 * left. A failed connection has no PGresult to ask for its SQLSTATE, but
 * verbose messages carry it ("FATAL:  53300: ..."), in any server
 * language. The English texts cover a proxy that sends no code. */
static int out_of_slots(const char *msg)
{
	static const char *const marks[] = {
		":  53300: ",
		"too many clients already",
		"too many connections for role",
		"too many connections for database",
		"remaining connection slots are reserved",
	};

	for (size_t i = 0; i < sizeof marks / sizeof marks[0]; i++)
		if (strstr(msg, marks[i]))
			return 1;
	return 0;
}


/* Copies the first line of libpq's message after what: the rest is a
 * newline, or the LOCATION line of a verbose message. */
static void conn_error(PGconn *c, const char *what, char *err, size_t errlen)
{
	const char *msg = c ? PQerrorMessage(c) : "out of memory";

	snprintf(err, errlen, "%s: %.*s", what, (int)strcspn(msg, "\n"), msg);
}


/* Opens one connection to url into *out. Returns 0, -EAGAIN when the
 * server has no slot for it (53300), or another negative code; err says
 * why. The caller owns *out. */
static int connect_one(const char *url, PGconn **out, char *err, size_t errlen)
{
	/* Listed before dbname so that a URL naming its own values wins:
	 * libpq keeps the last value it processes. */
	static const char *const keys[] = { "application_name",
					    "connect_timeout", "dbname", NULL };
	const char *values[] = { "moonrabbit", CONNECT_TIMEOUT_S, url, NULL };
	PGconn *c = PQconnectStartParams(keys, values, 1);
	int rc;

	if (!c) {
		conn_error(NULL, "failed to connect to DATABASE_URL", err,
			   errlen);
		return -ENOMEM;
	}
	PQsetNoticeProcessor(c, drop_notice, NULL);
	PQsetErrorVerbosity(c, PQERRORS_VERBOSE);
	rc = finish_connect(c);
	if (rc == 0 && PQstatus(c) == CONNECTION_OK) {
		/* Jobs read query errors in the usual form. */
		PQsetErrorVerbosity(c, PQERRORS_DEFAULT);
		*out = c;
		return 0;
	}
	if (rc == 0) {
		conn_error(c, "failed to connect to DATABASE_URL", err, errlen);
		rc = out_of_slots(PQerrorMessage(c)) ? -EAGAIN : -EIO;
	} else {
		snprintf(err, errlen,
			 "failed to connect to DATABASE_URL: timeout expired");
	}
	PQfinish(c);
	return rc;
}


/* Puts the next attempt to grow p off by the backoff, then doubles it
 * up to GROW_MAX_MS; the caller holds p->lock. */
static void grow_failed(struct db_pool *p)
{
	int ms = p->grow_ms;

	/* Jitter of +-20 %, so replicas short together retry apart. */
	ms += (int)(rand_r(&p->seed) % (unsigned)(ms * 2 / 5 + 1)) - ms / 5;
	p->grow_at = now_s() + ms / 1000.0;
	p->grow_ms =
		p->grow_ms * 2 > GROW_MAX_MS ? GROW_MAX_MS : p->grow_ms * 2;
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
	p->want = size;
	p->grow_ms = GROW_MIN_MS;
	p->seed = (unsigned)time(NULL) ^ (unsigned)(uintptr_t)p;
	p->url = strdup(url);
	p->free = calloc((size_t)size, sizeof *p->free);
	p->all = calloc((size_t)size, sizeof *p->all);
	if (!p->url || !p->free || !p->all)
		goto out;
	while (p->size < size) {
		rc = connect_one(url, &p->all[p->size], err, errlen);
		if (rc < 0)
			break;
		p->free[p->nfree++] = p->all[p->size++];
	}
	/* Short of slots, the pool lives with what it got. */
	if (rc == -EAGAIN && p->size > 0) {
		grow_failed(p);
		rc = 0;
	}
	if (rc < 0)
		goto out;
	*out = p;
	p = NULL;
out:
	db_pool_close(p);
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


/* For a thread holding pool->lock that found nothing free: whether it
 * may try to open one more connection now. */
static int may_grow(const struct db_pool *p)
{
	return p->size < p->want && !p->growing && now_s() >= p->grow_at;
}


/* Opens one more connection for a caller holding p->lock, dropping the
 * lock meanwhile: a connect can take seconds. Returns it checked out to
 * the caller, or NULL. A failure, 53300 or other, only puts the next
 * attempt off; it is never the job's error. */
static PGconn *grow(struct db_pool *p)
{
	char err[256];
	PGconn *c = NULL;
	int rc;

	p->growing = 1;
	pthread_mutex_unlock(&p->lock);
	rc = connect_one(p->url, &c, err, sizeof err);
	pthread_mutex_lock(&p->lock);
	p->growing = 0;
	if (rc < 0) {
		grow_failed(p);
		return NULL;
	}
	p->all[p->size++] = c;
	p->grow_ms = GROW_MIN_MS;
	return c;
}


int db_pool_acquire(struct db_pool *pool, int timeout_ms, PGconn **out,
		    char *err, size_t errlen)
{
	struct timespec deadline;
	PGconn *c = NULL;

	deadline_after(&deadline, timeout_ms);
	pthread_mutex_lock(&pool->lock);
	pool->waiting++;
	while (!c && pool->nfree == 0) {
		if (may_grow(pool)) {
			c = grow(pool);
			continue;
		}
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
	if (!c)
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


void db_pool_stats(struct db_pool *pool, struct db_pool_stats *out)
{
	pthread_mutex_lock(&pool->lock);
	out->wanted = pool->want;
	out->open = pool->size;
	out->in_use = pool->size - pool->nfree;
	out->waiting = pool->waiting;
	pthread_mutex_unlock(&pool->lock);
}


void db_pool_close(struct db_pool *pool)
{
	if (!pool)
		return;
	for (int i = 0; i < pool->size; i++)
		PQfinish(pool->all[i]);
	pthread_mutex_destroy(&pool->lock);
	pthread_cond_destroy(&pool->returned);
	free(pool->url);
	free(pool->free);
	free(pool->all);
	free(pool);
}
