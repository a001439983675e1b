#include "governor.h"

#include <errno.h>
#include <stdlib.h>

struct governor {
	struct mem_probe *probe;
	struct policy policy;
	struct mem_state state;
	uint64_t every_msgs;
	double every_s;
	double min_gap_s; /* between samples the message count asks for */
	double last_at;
	uint64_t since; /* messages settled since the last sample */
	double next_at; /* 0: the first sample is due at once */
};


int governor_open(const char *policy_dir, struct mem_probe *probe,
		  const struct limits *lim, int prefetch, struct governor **out,
		  char *err, size_t errlen)
{
	struct governor *g = calloc(1, sizeof *g);
	int rc;

	if (!g)
		return -ENOMEM;
	rc = policy_open(policy_dir, "memory.lua", &g->policy, err, errlen);
	if (rc < 0) {
		free(g);
		return rc;
	}
	g->probe = probe;
	g->every_msgs = lim->probe_every_messages;
	g->every_s = (double)lim->probe_every_seconds;
	g->min_gap_s = (double)lim->probe_min_interval_ms / 1000.0;
	g->state.level = MEM_LEVEL_OK;
	g->state.prefetch = prefetch;
	*out = g;
	return 0;
}


void governor_count(struct governor *g, uint64_t n)
{
	g->since += n;
}


int governor_due(const struct governor *g, double now)
{
	/* At thousands of messages a second a sample every 30 messages was
	 * hundreds of /proc reads and log lines a second. */
	return (g->since >= g->every_msgs &&
		now - g->last_at >= g->min_gap_s) ||
	       now >= g->next_at;
}


int governor_sample(struct governor *g, double now, struct mem_sample *s,
		    struct mem_decision *d, char *err, size_t errlen)
{
	int rc;

	g->since = 0;
	g->last_at = now;
	g->next_at = now + g->every_s;
	if (mem_probe_sample(g->probe, s) < 0)
		return -EIO;
	rc = mem_policy_decide(&g->policy, s, &g->state, d, err, errlen);
	if (rc < 0)
		return rc;
	g->state.level = d->level;
	g->state.paused = d->pause;
	g->state.has_oom = s->has_events;
	g->state.oom_kill_events = s->oom_kill_events;
	return 0;
}


int governor_prepare(struct governor *g, const char *policy_dir,
		     struct policy *fresh, char *err, size_t errlen)
{
	struct mem_decision d;
	struct mem_sample s;
	int rc = policy_open(policy_dir, "memory.lua", fresh, err, errlen);

	if (rc < 0)
		return rc;
	/* A dry run on a real sample: a policy that raises or answers
	 * nonsense is refused now, not at the next sample. */
	rc = mem_probe_sample(g->probe, &s);
	if (rc == 0)
		rc = mem_policy_decide(fresh, &s, &g->state, &d, err, errlen);
	if (rc < 0)
		policy_close(fresh);
	return rc;
}


void governor_commit(struct governor *g, struct policy *fresh,
		     const struct limits *lim)
{
	policy_close(&g->policy);
	g->policy = *fresh;
	g->every_msgs = lim->probe_every_messages;
	g->every_s = (double)lim->probe_every_seconds;
	g->min_gap_s = (double)lim->probe_min_interval_ms / 1000.0;
	g->next_at = 0;
}


void governor_close(struct governor *g)
{
	if (!g)
		return;
	policy_close(&g->policy);
	mem_probe_close(g->probe);
	free(g);
}
