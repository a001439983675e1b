#ifndef CORE_WATCHDOG_H
#define CORE_WATCHDOG_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>

/*
 * Time budgets without a per-instruction cost. Lua 5.4 traces every
 * instruction while any count hook is set, which was a quarter of the
 * default job's work, so a job runs with no hook at all. One thread
 * looks at the running jobs' deadlines a few times a second and sends
 * WATCHDOG_SIGNAL to a worker whose job is overdue; that worker's own
 * handler then sets the hook, on its own thread, as lua.c does for
 * Ctrl-C. A job overshoots its budget by at most one tick.
 */

#define WATCHDOG_SIGNAL SIGURG

struct watch {
	/* CLOCK_MONOTONIC ms; 0 while nothing runs. Written by the owner,
	 * read by the watchdog. */
	_Atomic long long deadline_ms;
	pthread_t thread; /* the owner; valid while deadline_ms is set */
	/* Held by the watchdog from reading the deadline to signalling, and
	 * by the owner to disarm: once disarmed, the owner may exit and be
	 * joined without a signal on its way to a thread that is gone. */
	pthread_mutex_t mu;
	long long fired_for; /* watchdog only: deadline already signalled */
	struct watch *next;
};

long long watchdog_now_ms(void);

/* Adds w to the watched set and starts the watchdog thread with the
 * first one. handler runs on the owner's thread when its deadline has
 * passed. tick_ms bounds the overshoot. Returns 0 or -errno. */
int watchdog_add(struct watch *w, void (*handler)(int), int tick_ms);

/* Looks at least every tick_ms from now on: a reload lowered a budget. */
void watchdog_tighten(int tick_ms);

/* Removes w; the thread stops with the last one. */
void watchdog_remove(struct watch *w);

/* The calling thread starts work that must end by deadline_ms. */
static inline void watchdog_arm(struct watch *w, long long deadline_ms)
{
	w->thread = pthread_self();
	atomic_store_explicit(&w->deadline_ms, deadline_ms,
			      memory_order_release);
}

static inline void watchdog_disarm(struct watch *w)
{
	pthread_mutex_lock(&w->mu);
	atomic_store_explicit(&w->deadline_ms, 0, memory_order_relaxed);
	pthread_mutex_unlock(&w->mu);
}

#endif
