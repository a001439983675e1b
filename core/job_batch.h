#ifndef CORE_JOB_BATCH_H
#define CORE_JOB_BATCH_H

#include "job.h"

struct job_state;

/*
 * Runs the jobs a worker took together. When the job script is batchable,
 * their database work shares one transaction: each job runs inside a
 * savepoint, so a failing job is rolled back alone, and one COMMIT makes
 * the rest durable before any of them is acked. If the transaction
 * itself fails, every job in it runs again on its own, so at-least-once
 * holds and no job is blamed for another's failure.
 */

/* Most jobs in one transaction. Each COMMIT costs a WAL flush, and the
 * worker waits for the server to finish the statements sent ahead, so
 * fewer and larger batches keep a lone worker busier: 128 drained 1 KiB
 * bodies about 14 % faster than 32 at prefetch 1000. */
#define JOB_BATCH_MAX 128
/* Fewest: what a small prefetch window still gets. */
#define JOB_BATCH_MIN 32
/* Bodies above this run on their own: a batch keeps its bodies until the
 * commit, and large ones would multiply the peak. */
#define JOB_BATCH_BODY_MAX (64 * 1024)

/* How many jobs a worker of js takes at once for a prefetch window: an
 * eighth of it, between JOB_BATCH_MIN and JOB_BATCH_MAX, when they share
 * a transaction. A batch is acked only after its COMMIT, so one that took
 * the whole window would leave the broker nothing to send while it runs.
 * Jobs that do not share one gain nothing from a longer run and would
 * only hold their acks longer: they stay at JOB_BATCH_MIN. */
int job_batch_size(const struct job_state *js, int prefetch);

/* A pool_run_fn: ctx is the worker's struct job_state. */
void job_batch_run_fn(void *ctx, struct job **jobs, int n);

#endif
