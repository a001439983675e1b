/*
 * Two singly linked FIFO lists under one mutex: jobs waiting for a thread
 * and jobs done. Worker threads sleep on a condition variable; the loop
 * thread sleeps in poll() on the eventfd, which a worker bumps after
 * putting a job on the done list. One lock is enough: a job passes it
 * twice, and the body is never copied.
 */
#include "pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "body_buf.h"

/* The most jobs one thread takes at once. */
#define POOL_BATCH_MAX 128

struct fifo {
	struct job *head;
	struct job *tail;
};

struct worker {
	struct pool *pool;
	void *ctx;
	pthread_t thread;
};

struct pool {
	pthread_mutex_t lock;
	pthread_cond_t work;
	struct fifo queued;
	struct fifo done;
	int nqueued;
	int active;
	int idle; /* threads waiting for work */
	int in_flight;
	int stopping;
	atomic_int signaled; /* the eventfd holds an unread wake-up */
	int efd;
	pool_run_fn run;
	int batch_max;
	int nthreads;
	struct worker *workers;
};


void job_free(struct job *job)
{
	if (!job)
		return;
	body_buf_put(job->body);
	free(job);
}


static void fifo_push(struct fifo *f, struct job *job)
{
	job->next = NULL;
	if (f->tail)
		f->tail->next = job;
	else
		f->head = job;
	f->tail = job;
}


static struct job *fifo_pop(struct fifo *f)
{
	struct job *job = f->head;

	if (job) {
		f->head = job->next;
		if (!f->head)
			f->tail = NULL;
		job->next = NULL;
	}
	return job;
}


static struct job *fifo_take_all(struct fifo *f)
{
	struct job *list = f->head;

	f->head = f->tail = NULL;
	return list;
}


/* Takes this thread's share of the queue into jobs; returns how many. */
static int take_share(struct pool *p, struct job **jobs)
{
	int share = (p->nqueued + p->nthreads - 1) / p->nthreads;
	int n = 0;

	if (share > p->batch_max)
		share = p->batch_max;
	while (n < share && p->queued.head) {
		jobs[n++] = fifo_pop(&p->queued);
		p->nqueued--;
	}
	return n;
}


static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct pool *p = w->pool;
	struct job *jobs[POOL_BATCH_MAX];
	uint64_t one = 1;

	pthread_mutex_lock(&p->lock);
	for (;;) {
		int n;

		while (!p->queued.head && !p->stopping) {
			p->idle++;
			pthread_cond_wait(&p->work, &p->lock);
			p->idle--;
		}
		if (p->stopping)
			break;
		n = take_share(p, jobs);
		p->active += n;
		pthread_mutex_unlock(&p->lock);

		p->run(w->ctx, jobs, n);

		pthread_mutex_lock(&p->lock);
		p->active -= n;
		for (int i = 0; i < n; i++)
			fifo_push(&p->done, jobs[i]);
		/* One wake-up per batch: while the loop has not collected,
		 * further jobs join the list without another syscall. */
		if (!atomic_load(&p->signaled)) {
			atomic_store(&p->signaled, 1);
			if (write(p->efd, &one, sizeof one) < 0)
				abort();
		}
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}


int pool_start(int nthreads, int batch_max, pool_run_fn run, void **ctxs,
	       struct pool **out)
{
	struct pool *p = calloc(1, sizeof *p);
	int rc = -ENOMEM;

	if (!p)
		return -ENOMEM;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->work, NULL);
	p->run = run;
	p->batch_max = batch_max;
	if (p->batch_max < 1 || p->batch_max > POOL_BATCH_MAX)
		p->batch_max = POOL_BATCH_MAX;
	p->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	p->workers = calloc((size_t)nthreads, sizeof *p->workers);
	if (p->efd < 0 || !p->workers)
		goto out;
	for (int i = 0; i < nthreads; i++) {
		struct worker *w = &p->workers[i];

		w->pool = p;
		w->ctx = ctxs[i];
		rc = -pthread_create(&w->thread, NULL, worker_main, w);
		if (rc < 0)
			goto out;
		p->nthreads++;
	}
	*out = p;
	p = NULL;
	rc = 0;
out:
	if (p)
		pool_stop(p);
	return rc;
}


void pool_submit(struct pool *pool, struct job *list, int n)
{
	int wake;

	pthread_mutex_lock(&pool->lock);
	while (list) {
		struct job *next = list->next;

		fifo_push(&pool->queued, list);
		list = next;
	}
	pool->nqueued += n;
	pool->in_flight += n;
	/* A woken thread takes its share of the queue, so a batch wakes
	 * one thread per job at most and never one that is busy anyway. */
	wake = n < pool->idle ? n : pool->idle;
	while (wake-- > 0)
		pthread_cond_signal(&pool->work);
	pthread_mutex_unlock(&pool->lock);
}


static struct job *count_out(struct pool *pool, struct job *list)
{
	for (struct job *j = list; j; j = j->next)
		pool->in_flight--;
	return list;
}


struct job *pool_collect(struct pool *pool)
{
	int was = atomic_load(&pool->signaled);
	struct job *list;
	uint64_t n;

	/* A worker that puts a job on the done list sets the flag under the
	 * lock if it is clear, so a clear flag means an empty list: the loop
	 * need not take the lock on every turn to find that out. */
	if (!was)
		return NULL;
	/* The eventfd is read before the list is taken and the flag cleared
	 * only when it was read: a job pushed in between is either in this
	 * list or leaves the flag and the eventfd set for the next poll.
	 * Never a set eventfd with a clear flag, which would spin poll(). */
	if (read(pool->efd, &n, sizeof n) < 0 && errno != EAGAIN)
		abort();
	pthread_mutex_lock(&pool->lock);
	list = count_out(pool, fifo_take_all(&pool->done));
	atomic_store(&pool->signaled, 0);
	pthread_mutex_unlock(&pool->lock);
	return list;
}


struct job *pool_take_queued(struct pool *pool)
{
	struct job *list;

	pthread_mutex_lock(&pool->lock);
	list = count_out(pool, fifo_take_all(&pool->queued));
	pool->nqueued = 0;
	pthread_mutex_unlock(&pool->lock);
	return list;
}


int pool_event_fd(const struct pool *pool)
{
	return pool->efd;
}


int pool_in_flight(struct pool *pool)
{
	int n;

	pthread_mutex_lock(&pool->lock);
	n = pool->in_flight;
	pthread_mutex_unlock(&pool->lock);
	return n;
}


void pool_load(struct pool *pool, int *queued, int *active)
{
	pthread_mutex_lock(&pool->lock);
	*queued = pool->nqueued;
	*active = pool->active;
	pthread_mutex_unlock(&pool->lock);
}


static void free_list(struct job *list)
{
	while (list) {
		struct job *next = list->next;

		job_free(list);
		list = next;
	}
}


void pool_stop(struct pool *pool)
{
	if (!pool)
		return;
	pthread_mutex_lock(&pool->lock);
	pool->stopping = 1;
	pthread_cond_broadcast(&pool->work);
	pthread_mutex_unlock(&pool->lock);
	for (int i = 0; i < pool->nthreads; i++)
		pthread_join(pool->workers[i].thread, NULL);
	free_list(fifo_take_all(&pool->queued));
	free_list(fifo_take_all(&pool->done));
	if (pool->efd >= 0)
		close(pool->efd);
	pthread_mutex_destroy(&pool->lock);
	pthread_cond_destroy(&pool->work);
	free(pool->workers);
	free(pool);
}
