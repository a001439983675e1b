#ifndef CORE_POOL_H
#define CORE_POOL_H

#include "job.h"

/*
 * The worker thread pool. The loop thread submits jobs; each of nthreads
 * threads takes one, runs it with its own context (one Lua state each,
 * never shared), and puts it on the completion list, which wakes the loop
 * through an eventfd. Only the loop thread submits and collects.
 */

struct pool;

/* Runs n (1 .. batch_max) jobs on a worker thread with that thread's
 * ctx, filling each job's outcome. */
typedef void (*pool_run_fn)(void *ctx, struct job **jobs, int n);

/* Starts nthreads threads; thread i gets ctxs[i]. A thread takes up to
 * batch_max queued jobs at once, but no more than its share of the queue,
 * so one thread never starves the others. */
int pool_start(int nthreads, int batch_max, pool_run_fn run, void **ctxs,
	       struct pool **out);

/* Queues a list of n jobs linked by next, oldest first, for the workers,
 * waking no more threads than there are jobs; the pool owns them until
 * pool_collect(). */
void pool_submit(struct pool *pool, struct job *list, int n);

/* Takes every finished job as a list linked by next, oldest first, and
 * clears the eventfd. The caller owns the jobs. */
struct job *pool_collect(struct pool *pool);

/* Takes jobs no thread has started yet, oldest first, so a shutdown can
 * requeue them. */
struct job *pool_take_queued(struct pool *pool);

/* A descriptor that is readable while finished jobs wait. */
int pool_event_fd(const struct pool *pool);

/* Jobs submitted and not yet collected. */
int pool_in_flight(struct pool *pool);

/* Jobs waiting for a thread, and threads running a job. */
void pool_load(struct pool *pool, int *queued, int *active);

/* Lets running jobs finish, joins the threads and frees the pool. Jobs
 * still queued or finished and uncollected are freed. */
void pool_stop(struct pool *pool);

#endif
