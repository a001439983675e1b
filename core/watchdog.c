#include "watchdog.h"

#include <errno.h>
#include <string.h>
#include <time.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static struct watch *watched;
static pthread_t thread;
static int running;
static int tick = 100;


long long watchdog_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


/* Called with lock held. */
static void look(void)
{
	long long now = watchdog_now_ms();

	for (struct watch *w = watched; w; w = w->next) {
		long long d;

		pthread_mutex_lock(&w->mu);
		d = atomic_load_explicit(&w->deadline_ms, memory_order_acquire);
		/* One signal per overrun: the hook it sets stays until the
		 * job ends, so a script that catches the error is stopped
		 * again at its next instruction. */
		if (d != 0 && now > d && w->fired_for != d) {
			w->fired_for = d;
			pthread_kill(w->thread, WATCHDOG_SIGNAL);
		}
		pthread_mutex_unlock(&w->mu);
	}
}


static void *watchdog_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&lock);
	while (running) {
		struct timespec until;

		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += (long)tick * 1000000L;
		until.tv_sec += until.tv_nsec / 1000000000L;
		until.tv_nsec %= 1000000000L;
		pthread_cond_timedwait(&changed, &lock, &until);
		if (running)
			look();
	}
	pthread_mutex_unlock(&lock);
	return NULL;
}


static int install(void (*handler)(int))
{
	struct sigaction sa;

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = handler;
	/* A worker waiting on libpq or a pipe carries on after the
	 * handler instead of seeing EINTR. */
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	return sigaction(WATCHDOG_SIGNAL, &sa, NULL) < 0 ? -errno : 0;
}


int watchdog_add(struct watch *w, void (*handler)(int), int tick_ms)
{
	int rc = 0;

	atomic_store(&w->deadline_ms, 0);
	w->fired_for = 0;
	pthread_mutex_init(&w->mu, NULL);
	pthread_mutex_lock(&lock);
	if (tick_ms > 0 && tick_ms < tick)
		tick = tick_ms;
	if (!running) {
		rc = install(handler);
		if (rc == 0) {
			running = 1;
			rc = -pthread_create(&thread, NULL, watchdog_main,
					     NULL);
			if (rc < 0)
				running = 0;
		}
	}
	if (rc == 0) {
		w->next = watched;
		watched = w;
	}
	pthread_mutex_unlock(&lock);
	if (rc < 0)
		pthread_mutex_destroy(&w->mu);
	return rc;
}


void watchdog_tighten(int tick_ms)
{
	pthread_mutex_lock(&lock);
	if (tick_ms > 0 && tick_ms < tick)
		tick = tick_ms;
	pthread_mutex_unlock(&lock);
}


void watchdog_remove(struct watch *w)
{
	int stop = 0;

	pthread_mutex_lock(&lock);
	for (struct watch **p = &watched; *p; p = &(*p)->next) {
		if (*p == w) {
			*p = w->next;
			break;
		}
	}
	if (!watched && running) {
		running = 0;
		stop = 1;
		pthread_cond_signal(&changed);
	}
	pthread_mutex_unlock(&lock);
	if (stop)
		pthread_join(thread, NULL);
	pthread_mutex_destroy(&w->mu);
}
