#ifndef CORE_LIMITS_SHARED_H
#define CORE_LIMITS_SHARED_H

#include <pthread.h>
#include <stdatomic.h>

#include "msg_limits.h"

/*
 * The limits in force, shared by the loop (which swaps them at a policy
 * reload) and the worker threads (which copy them when the version they
 * hold is old). A worker looks at one atomic per job; the lock is taken
 * only for the copy after a reload.
 */

struct limits_shared {
	pthread_mutex_t lock;
	atomic_uint version;
	struct limits current;
};

void limits_shared_init(struct limits_shared *s, const struct limits *lim);

/* Publishes lim as the limits in force and bumps the version. */
void limits_shared_set(struct limits_shared *s, const struct limits *lim);

/* Copies the limits in force into *out when their version differs from
 * *version; returns 1 when it copied. */
int limits_shared_refresh(struct limits_shared *s, unsigned *version,
			  struct limits *out);

void limits_shared_destroy(struct limits_shared *s);

#endif
