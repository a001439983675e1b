#ifndef CORE_FAILURE_H
#define CORE_FAILURE_H

#include <stddef.h>
#include <stdint.h>

#include "policy.h"

/*
 * The bridge to policies/failure.lua, called on the loop thread for each
 * job_error: retry later (with a delay) or dead-letter now. The answer is
 * validated like every policy's; a refused answer dead-letters, which
 * loses nothing.
 */

struct failure_policy {
	struct policy policy;
	int quarantine_after; /* crashes before a message is quarantined */
};

struct failure_decision {
	int retry;
	uint64_t delay_ms;
	char why[128];
};

/* Loads <dir>/failure.lua and reads its settings. Returns 0 or -EINVAL
 * with err naming the file and field. */
int failure_open(const char *dir, struct failure_policy *f, char *err,
		 size_t errlen);

/* Asks decide{reason, attempts}. Returns 0 with *d filled, or -EINVAL
 * with err (then *d says dead-letter). */
int failure_decide(struct failure_policy *f, const char *reason, int attempts,
		   struct failure_decision *d, char *err, size_t errlen);

/* Loads failure.lua into *fresh and dry-runs it. Returns 0, or -EINVAL
 * with err (nothing left open). */
int failure_prepare(const char *dir, struct failure_policy *fresh, char *err,
		    size_t errlen);

void failure_close(struct failure_policy *f);

#endif
