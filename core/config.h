#ifndef CORE_CONFIG_H
#define CORE_CONFIG_H

#include <stddef.h>

/*
 * Settings read once from the environment at start-up. Names follow the
 * Python worker where it had them. A value that cannot be used stops
 * start-up: config_load() fills an error text naming the variable, what
 * it held and how to fix it, and main exits with code 2.
 */

struct config {
	const char *amqp_url;
	const char *amqp_queue;
	int prefetch;
	int heartbeat_seconds;
	const char *database_url;
	int concurrency;
	int db_pool_size;
	int db_connect_wait_seconds;
	int db_statement_cache;
	int db_max_overflow;
	int replicas;
	const char *policy_dir;
	const char *job_script;
	const char *metrics_addr;
	const char *alert_webhook_url;
	int shutdown_grace_seconds;
	const char *log_level;
	const char *state_dir; /* the crash ledger lives here */
	const char *proc_root; /* "" = /proc; tests point at fixtures */
	const char *sys_root;  /* "" = /sys */
};

/* Fills cfg from getenv(); strings point into the environment. Returns 0,
 * or -EINVAL with a message for the operator in err. */
int config_load(struct config *cfg, char *err, size_t errlen);

/* Copies url into out with any password replaced by "***", so a URL can be
 * logged. Always NUL-terminates; truncates to outlen. */
void config_mask_url(const char *url, char *out, size_t outlen);

#endif
