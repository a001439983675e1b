#include "config.h"

#include <amqp.h>
#include <errno.h>
#include <libpq-fe.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db_stmt.h"
#include "log.h"

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
	/* Zero would turn heartbeats off, and a half-open connection would
	 * then look like an idle queue forever (case 004). */
	{ "AMQP_HEARTBEAT_SECONDS", 30, 5, 600,
	  offsetof(struct config, heartbeat_seconds) },
	{ "WORKER_CONCURRENCY_PER_WORKER", 8, 1, 256,
	  offsetof(struct config, concurrency) },
	{ "DB_POOL_SIZE", 8, 1, 1000, offsetof(struct config, db_pool_size) },
	/* How long start-up waits for a server with no connection slot
	 * free (SQLSTATE 53300) to let one connection in. */
	{ "DB_CONNECT_WAIT_SECONDS", 60, 0, 3600,
	  offsetof(struct config, db_connect_wait_seconds) },
	/* Statements each connection keeps prepared; 0 for a pooler in
	 * transaction mode, which moves sessions between statements. */
	{ "DB_STATEMENT_CACHE", 64, 0, DB_STMT_MAX,
	  offsetof(struct config, db_statement_cache) },
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
	{ "STATE_DIR", "/var/tmp/moonrabbit",
	  offsetof(struct config, state_dir) },
	{ "MOONRABBIT_PROC_ROOT", "", offsetof(struct config, proc_root) },
	{ "MOONRABBIT_SYS_ROOT", "", offsetof(struct config, sys_root) },
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


/* Checks the URLs parse, so a typo stops start-up before anything
 * connects. The messages show URLs masked: they may carry a password. */
static int check_urls(const struct config *cfg, char *err, size_t errlen)
{
	struct amqp_connection_info info;
	char masked[512];
	char *copy = strdup(cfg->amqp_url);
	char *pq_err = NULL;
	PQconninfoOption *opts;
	int ok;

	if (!copy)
		return -ENOMEM;
	ok = amqp_parse_url(copy, &info) == AMQP_STATUS_OK;
	free(copy);
	if (!ok) {
		config_mask_url(cfg->amqp_url, masked, sizeof masked);
		snprintf(err, errlen,
			 "AMQP_URL=\"%s\" is not usable: write it as "
			 "amqp://user:password@host:port/vhost",
			 masked);
		return -EINVAL;
	}
	opts = PQconninfoParse(cfg->database_url, &pq_err);
	PQconninfoFree(opts);
	if (!opts) {
		config_mask_url(cfg->database_url, masked, sizeof masked);
		snprintf(err, errlen,
			 "DATABASE_URL=\"%s\" is not usable (%.*s): write it "
			 "as postgresql://user:password@host:port/database",
			 masked, pq_err ? (int)strcspn(pq_err, "\n") : 0,
			 pq_err ? pq_err : "");
		PQfreemem(pq_err);
		return -EINVAL;
	}
	return 0;
}


int config_load(struct config *cfg, char *err, size_t errlen)
{
	enum log_level level;
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
	if (log_parse_level(cfg->log_level, &level) < 0) {
		snprintf(err, errlen,
			 "LOG_LEVEL=\"%s\" is not usable: use error, warn, "
			 "info or debug",
			 cfg->log_level);
		return -EINVAL;
	}
	return check_urls(cfg, err, errlen);
}


/* Replaces the value of every password= parameter in s (conninfo
 * "password=x" or "password='x y'", URL "?password=x") with ***. */
static void mask_password_params(char *s, size_t cap)
{
	static const char key[] = "password=";
	char *p = s;

	while ((p = strstr(p, key)) != NULL) {
		char *v = p + sizeof key - 1;
		char *end = v;

		if (*v == '\'') {
			end = strchr(v + 1, '\'');
			end = end ? end + 1 : v + strlen(v);
		} else {
			end = v + strcspn(v, " &");
		}
		if (strlen(s) - (size_t)(end - v) + 3 >= cap)
			return;
		memmove(v + 3, end, strlen(end) + 1);
		memcpy(v, "***", 3);
		p = v + 3;
	}
}


void config_mask_url(const char *url, char *out, size_t outlen)
{
	const char *scheme = strstr(url, "://");
	const char *start = scheme ? scheme + 3 : url;
	const char *at = strchr(start, '@');
	const char *colon = NULL;

	if (scheme && at)
		colon = memchr(start, ':', (size_t)(at - start));
	if (colon)
		snprintf(out, outlen, "%.*s:***%s", (int)(colon - url), url,
			 at);
	else
		snprintf(out, outlen, "%s", url);
	mask_password_params(out, outlen);
}
