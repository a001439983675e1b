#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct int_setting {
	const char *name;
	int def;
	int min;
	int max;
	size_t offset;
};

/* Upper bounds are sanity limits, not tuning advice: past them a value is
 * far more likely a typo than a plan. config.lua judges the sane ones. */
static const struct int_setting int_settings[] = {
	{ "AMQP_PREFETCH", 16, 1, 65535, offsetof(struct config, prefetch) },
	{ "WORKER_CONCURRENCY_PER_WORKER", 8, 1, 256,
	  offsetof(struct config, concurrency) },
	{ "DB_POOL_SIZE", 8, 1, 1000, offsetof(struct config, db_pool_size) },
	{ "DB_MAX_OVERFLOW", 0, 0, 1000,
	  offsetof(struct config, db_max_overflow) },
	{ "WORKER_REPLICAS", 1, 1, 1000, offsetof(struct config, replicas) },
	{ "SHUTDOWN_GRACE_SECONDS", 30, 0, 3600,
	  offsetof(struct config, shutdown_grace_seconds) },
};

struct str_setting {
	const char *name;
	const char *def;
	size_t offset;
};

static const struct str_setting str_settings[] = {
	{ "AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f",
	  offsetof(struct config, amqp_url) },
	{ "AMQP_QUEUE", "jobs", offsetof(struct config, amqp_queue) },
	{ "DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres",
	  offsetof(struct config, database_url) },
	{ "POLICY_DIR", "policies", offsetof(struct config, policy_dir) },
	{ "JOB_SCRIPT", "scripts/analyze_conversation.lua",
	  offsetof(struct config, job_script) },
	{ "METRICS_ADDR", "127.0.0.1:9464",
	  offsetof(struct config, metrics_addr) },
	{ "ALERT_WEBHOOK_URL", "", offsetof(struct config, alert_webhook_url) },
	{ "LOG_LEVEL", "info", offsetof(struct config, log_level) },
};


static int parse_int(const struct int_setting *s, int *out, char *err,
		     size_t errlen)
{
	const char *raw = getenv(s->name);
	char *end = NULL;
	long v;

	if (!raw || !*raw) {
		*out = s->def;
		return 0;
	}
	errno = 0;
	v = strtol(raw, &end, 10);
	if (errno || end == raw || *end || v < s->min || v > s->max) {
		snprintf(err, errlen,
			 "%s=\"%s\" is not usable: set it to a whole number "
			 "from %d to %d, or unset it for the default %d",
			 s->name, raw, s->min, s->max, s->def);
		return -EINVAL;
	}
	*out = (int)v;
	return 0;
}


int config_load(struct config *cfg, char *err, size_t errlen)
{
	size_t i;

	memset(cfg, 0, sizeof *cfg);
	for (i = 0; i < sizeof int_settings / sizeof int_settings[0]; i++) {
		const struct int_setting *s = &int_settings[i];

		if (parse_int(s, (int *)((char *)cfg + s->offset), err,
			      errlen) < 0)
			return -EINVAL;
	}
	for (i = 0; i < sizeof str_settings / sizeof str_settings[0]; i++) {
		const struct str_setting *s = &str_settings[i];
		const char *raw = getenv(s->name);

		*(const char **)((char *)cfg + s->offset) =
			raw && *raw ? raw : s->def;
	}
	if (strchr(cfg->amqp_queue, ' ') || strlen(cfg->amqp_queue) > 200) {
		snprintf(err, errlen,
			 "AMQP_QUEUE=\"%s\" is not usable: use a queue name "
			 "without spaces, at most 200 bytes",
			 cfg->amqp_queue);
		return -EINVAL;
	}
	return 0;
}


void config_mask_url(const char *url, char *out, size_t outlen)
{
	const char *scheme = strstr(url, "://");
	const char *start = scheme ? scheme + 3 : url;
	const char *at = strchr(start, '@');
	const char *colon = NULL;

	if (at)
		colon = memchr(start, ':', (size_t)(at - start));
	if (!colon) {
		snprintf(out, outlen, "%s", url);
		return;
	}
	snprintf(out, outlen, "%.*s:***%s", (int)(colon - url), url, at);
}
