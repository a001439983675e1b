#ifndef CORE_JOB_BATCH_H
#define CORE_JOB_BATCH_H

#include "job.h"

/*
 * Runs the jobs a worker took together. When the job script is batchable,
 * their database work shares one transaction: each job runs inside a
 * savepoint, so a failing job is rolled back alone, and one COMMIT makes
 * the rest durable before any of them is acked. If the transaction
 * itself fails, every job in it runs again on its own, so at-least-once
 * holds and no job is blamed for another's failure.
 */

/* Largest number of jobs in one transaction. */
#define JOB_BATCH_MAX 32
/* Bodies above this run on their own: a batch keeps its bodies until the
 * commit, and large ones would multiply the peak. */
#define JOB_BATCH_BODY_MAX (64 * 1024)

/* A pool_run_fn: ctx is the worker's struct job_state. */
void job_batch_run_fn(void *ctx, struct job **jobs, int n);

#endif
