#ifndef CORE_GOVERNOR_H
#define CORE_GOVERNOR_H

#include <stdint.h>

#include "mem_policy.h"
#include "mem_probe.h"
#include "msg_limits.h"

/*
 * The memory governor's clock and memory: it decides when a sample is
 * due (every N settled messages or T seconds, from limits.lua), takes it,
 * asks memory.lua what to do, and remembers the level and pause state the
 * next call needs. Acting on the decision (qos, cancel, consume, exit) is
 * the loop's job: only the loop thread touches the connection.
 */

struct governor;

/* Loads <policy_dir>/memory.lua and takes ownership of probe. prefetch
 * is the configured ceiling. Returns 0 or -EINVAL with err. */
int governor_open(const char *policy_dir, struct mem_probe *probe,
		  const struct limits *lim, int prefetch, struct governor **out,
		  char *err, size_t errlen);

/* Counts n settled messages toward the next sample. */
void governor_count(struct governor *g, uint64_t n);

/* True when a sample is due at monotonic time now (seconds). */
int governor_due(const struct governor *g, double now);

/* Samples and decides. Returns 0 with *s and *d filled and the state
 * advanced, -EIO when the probe failed, or -EINVAL when the policy's
 * answer was refused (err says why; the state is unchanged). Either way
 * the next sample is scheduled from now. */
int governor_sample(struct governor *g, double now, struct mem_sample *s,
		    struct mem_decision *d, char *err, size_t errlen);

/* Loads memory.lua afresh into *fresh and dry-runs it on a new sample.
 * Returns 0, or -EINVAL with err (nothing left open). Loop thread. */
int governor_prepare(struct governor *g, const char *policy_dir,
		     struct policy *fresh, char *err, size_t errlen);

/* Puts a prepared policy and lim's cadence in force; takes *fresh. */
void governor_commit(struct governor *g, struct policy *fresh,
		     const struct limits *lim);

void governor_close(struct governor *g);

#endif
