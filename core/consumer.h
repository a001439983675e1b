#ifndef CORE_CONSUMER_H
#define CORE_CONSUMER_H

#include <signal.h>
#include <stdint.h>

#include "alerts.h"
#include "config.h"
#include "db_pool.h"
#include "failure.h"
#include "governor.h"
#include "msg_limits.h"
#include "outcome.h"
#include "pool.h"

/*
 * The loop thread: it owns the AMQP connection and is the only thread
 * that touches it. It reads frames itself, so a body's size is known from
 * the content header before any body byte is kept; an oversized body is
 * read frame by frame into nothing and rejected. Accepted deliveries go
 * to the pool; finished jobs come back through the pool's eventfd and
 * are acked or rejected here.
 */

struct consumer_opts {
	const struct config *cfg;
	const struct limits *limits;
	struct pool *pool;
	struct db_pool *db;		/* may be NULL; for metrics, logs */
	int drain;			/* exit once the queue is empty */
	struct governor *governor;	/* NULL: no memory governor */
	struct failure_policy *failure; /* NULL: job_errors dead-letter */
	struct alerts *alerts;		/* NULL: alerts are only logged */
	struct metrics *metrics;	/* NULL: nothing is counted */
	volatile sig_atomic_t *stop;	/* set by a signal handler */
	volatile sig_atomic_t *reload;	/* set by SIGHUP; may be NULL */
	/* Reloads the policies on the loop thread; its result is logged by
	 * it. May be NULL. */
	void (*on_reload)(void *ctx);
	void *reload_ctx;
};

struct consumer_summary {
	uint64_t counts[OUTCOME_COUNT];
	uint64_t bytes_in;
	double seconds; /* first delivery to last settle */
	long peak_rss_kb;
	uint64_t pauses;
	int recycled; /* stopped because memory.lua said so */
	uint64_t reconnects;
	uint64_t retries; /* job_errors sent to a retry queue */
	int abandoned;	  /* jobs still running at the end */
};

/* Consumes until the queue is drained (drain mode), a stop is asked for,
 * the memory policy asks for a recycle, or the connection fails. Fills
 * *sum in every case. Returns 0, or -EIO
 * with a reason in err. */
int consumer_run(const struct consumer_opts *opts, struct consumer_summary *sum,
		 char *err, size_t errlen);

#endif
