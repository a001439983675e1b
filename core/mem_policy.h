#ifndef CORE_MEM_POLICY_H
#define CORE_MEM_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include "alerts.h"
#include "mem_probe.h"
#include "policy.h"

/*
 * The bridge to policies/memory.lua: a sample and the previous state go
 * in, a checked decision comes out. Every field the policy returns is
 * validated; a policy that returns nonsense is refused with its file and
 * field named, and the caller keeps its previous decision.
 */

enum mem_level {
	MEM_LEVEL_OK,
	MEM_LEVEL_WARNING,
	MEM_LEVEL_ALERT,
	MEM_LEVEL_CRITICAL,
	MEM_LEVEL_COUNT
};

struct mem_state {
	enum mem_level level;
	int paused;
	int prefetch; /* the configured ceiling */
	int has_oom;
	uint64_t oom_kill_events;
};

struct mem_alert {
	int raised;
	char severity[16]; /* warning, critical or resolved */
	char key[64];
	char summary[256];
	struct alert_facts facts; /* what alerts.lua may show */
};

struct mem_decision {
	enum mem_level level;
	int pause;
	int recycle;
	int prefetch; /* 1 .. state->prefetch */
	double ratio;
	struct mem_alert alert;
};

const char *mem_level_name(enum mem_level level);

/* Calls memory.decide(sample, state) in p. Returns 0 with *d filled, or
 * -EINVAL with err naming the file and field; *d is then untouched. */
int mem_policy_decide(struct policy *p, const struct mem_sample *s,
		      const struct mem_state *st, struct mem_decision *d,
		      char *err, size_t errlen);

#endif
