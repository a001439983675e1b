#ifndef CORE_METRICS_H
#define CORE_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "outcome.h"

/*
 * Counters and gauges in the Prometheus text format, and the health
 * endpoints, served on METRICS_ADDR by libmicrohttpd from a thread of its
 * own. Any thread updates a value with one relaxed atomic operation and
 * no lock, so the loop and the workers never wait for a scrape. Values
 * are read one by one at scrape time: a scrape is a consistent picture of
 * each value, not of all of them at one instant, which is what Prometheus
 * expects of a live process.
 *
 *   GET /metrics  every metric below, HELP and TYPE lines included
 *   GET /healthz  200 while the consume loop turns (metrics_tick), 503
 *                 once it has not turned for the stale limit
 *   GET /readyz   200 when healthy, connected, consuming and not paused;
 *                 503 with the reasons otherwise
 *   anything else 404; a method other than GET or HEAD 405
 *
 * Every function that takes a struct metrics accepts NULL and then does
 * nothing, so callers need no "metrics enabled?" branches.
 */

/* Loopback: a worker's numbers are nobody else's business unless the
 * operator opens them up (a container sets 0.0.0.0:9464). */
#define METRICS_DEFAULT_ADDR "127.0.0.1:9464"
/* Room for any numeric address metrics_parse_addr() accepts. */
#define METRICS_HOST_MAX 46
/* The loop wakes every 100 ms; its longest deliberate wait is 30 s for
 * the next frame of a delivery already begun. A loop silent for longer
 * than that is stuck, not busy. */
#define METRICS_STALE_S 30.0

enum metrics_counter {
	MC_BYTES_IN,	   /* body bytes as declared, refused ones too */
	MC_PAUSES,	   /* intake paused by memory.lua */
	MC_ALERTS_SENT,	   /* alerts the webhook accepted */
	MC_ALERTS_DROPPED, /* alerts not queued or not delivered */
	MC_RECONNECTS,	   /* broker connections re-established */
	MC_COUNT
};

enum metrics_gauge {
	MG_IN_FLIGHT,	    /* deliveries received, not yet settled */
	MG_JOBS_QUEUED,	    /* jobs waiting for a worker thread */
	MG_JOBS_ACTIVE,	    /* worker threads running a job */
	MG_POOL_THREADS,    /* worker threads */
	MG_DB_OPEN,	    /* database connections the pool holds */
	MG_DB_IN_USE,	    /* database connections checked out */
	MG_DB_WAITING,	    /* jobs waiting for a database connection */
	MG_MEM_RSS,	    /* bytes, from the last memory sample */
	MG_MEM_WORKING_SET, /* bytes */
	MG_MEM_USAGE,	    /* bytes */
	MG_MEM_LIMIT,	    /* bytes */
	MG_MEM_LEVEL,	    /* enum mem_level: 0 ok .. 3 critical */
	MG_MEM_RATIO,	    /* what memory.lua judged, 1.0 = at the limit */
	MG_PREFETCH,	    /* prefetch in force */
	MG_PAUSED,	    /* 1 while intake is paused */
	MG_CONNECTED,	    /* 1 while the broker connection is open */
	MG_CONSUMING,	    /* 1 while a consumer is registered */
	MG_COUNT
};

struct metrics;

/* ---- set-up -------------------------------------------------------- */

/* Splits text ("127.0.0.1:9464", "[::1]:9464", "localhost:9464") into a
 * numeric host (hostlen >= METRICS_HOST_MAX) and a port from 1 to 65535.
 * NULL, "" and "off" mean disabled: host "" and port 0. Returns 0, or
 * -EINVAL with a message naming METRICS_ADDR in err; host and port are
 * written only on success. Touches no network. */
int metrics_parse_addr(const char *text, char *host, size_t hostlen, int *port,
		       char *err, size_t errlen);

/* Listens on addr and serves from a thread of libmicrohttpd's. Returns 0
 * with *out the running server (NULL when addr disables metrics), -EINVAL
 * for an unusable addr, or a negative errno (-EADDRINUSE, ...) when it
 * cannot listen; err says which. The caller frees with metrics_stop(). */
int metrics_start(const char *addr, struct metrics **out, char *err,
		  size_t errlen);

/* The port the server listens on. */
int metrics_port(const struct metrics *m);

/* Changes the stale limit of /healthz from METRICS_STALE_S; for tests. */
void metrics_set_stale_after(struct metrics *m, double seconds);

/* Stops serving, closes the socket and frees m. */
void metrics_stop(struct metrics *m);

/* ---- updates, from any thread, never blocking ---------------------- */

/* Counts one settled delivery under its outcome. */
void metrics_outcome(struct metrics *m, enum outcome o);

/* Adds n to counter c. */
void metrics_add(struct metrics *m, enum metrics_counter c, uint64_t n);

/* Sets gauge g to v. */
void metrics_set(struct metrics *m, enum metrics_gauge g, double v);

/* Records one job's run time in the duration histogram. */
void metrics_job_seconds(struct metrics *m, double seconds);

/* Marks the consume loop alive; the loop calls it every turn. */
void metrics_tick(struct metrics *m);

#endif
