#ifndef CORE_CONFIG_CHECK_H
#define CORE_CONFIG_CHECK_H

#include <libpq-fe.h>
#include <stdint.h>
#include <stdio.h>

#include "config.h"
#include "msg_limits.h"
#include "policy.h"

/*
 * The bridge to policies/config.lua: the settings, the limits and the
 * memory limit go in as one table, and findings plus a memory budget come
 * out, checked field by field. A policy that answers nonsense is refused
 * with its file and field named, like limits.lua and memory.lua. Nothing
 * here logs except config_check_log(), which main calls at start-up.
 */

#define CONFIG_FINDINGS_MAX	32
#define CONFIG_CODE_MAX		64
#define CONFIG_MESSAGE_MAX	512
#define CONFIG_BUDGET_LINES_MAX 8
#define CONFIG_TERM_MAX		32
#define CONFIG_FORMULA_MAX	160

/* RabbitMQ's default consumer_timeout: a delivery unacked for 30 min makes
 * the broker close the channel. Not readable over AMQP, so assumed. */
#define CONFIG_CONSUMER_TIMEOUT_MS 1800000
enum config_severity { CONFIG_ERROR, CONFIG_WARNING, CONFIG_INFO };

struct config_finding {
	enum config_severity severity;
	char code[CONFIG_CODE_MAX];	  /* "cfg.concurrency_high" */
	char message[CONFIG_MESSAGE_MAX]; /* for the operator, no secrets */
};

/* One term of the memory budget: bytes and the arithmetic behind them. */
struct config_budget_line {
	char term[CONFIG_TERM_MAX];
	uint64_t bytes;
	char formula[CONFIG_FORMULA_MAX];
};

/* The checked answer of config.lua; plain data, nothing to free. */
struct config_report {
	char path[POLICY_PATH_MAX]; /* the policy file that answered */
	int nfindings;
	struct config_finding findings[CONFIG_FINDINGS_MAX];
	int errors; /* findings of severity error: start-up must stop */
	int nlines;
	struct config_budget_line lines[CONFIG_BUDGET_LINES_MAX];
	uint64_t total_bytes; /* the sum of the lines */
	uint64_t limit_bytes; /* 0: no limit known */
	double ratio;	      /* total / limit, 0 without a limit */
};

/* What the check is told. limits may be NULL (the policy then refuses it);
 * the strings are borrowed for the call. */
struct config_check_input {
	const struct config *cfg;
	const struct limits *limits;
	uint64_t memory_limit_bytes;	  /* 0: unknown */
	const char *memory_limit_source;  /* "cgroup_v2", ...; NULL: unknown */
	long long server_max_connections; /* <= 0: unknown */
};

/* ---- running the policy ------------------------------------------- */

/* Loads <policy_dir>/config.lua, calls check() with the table built from
 * in (STOP_GRACE_PERIOD_SECONDS is read from the environment here and
 * handed over as text when it is not a number, so the policy names it)
 * and validates the answer into *out, written only on success. Returns 0,
 * -ENOMEM, or -EINVAL with err naming the file and field. */
int config_check_run(const char *policy_dir,
		     const struct config_check_input *in,
		     struct config_report *out, char *err, size_t errlen);

/* Asks the server behind conn for max_connections. Returns 0 with *out
 * set, or -EIO with err saying why; *out is written only on success. */
int config_check_server_max(PGconn *conn, long long *out, char *err,
			    size_t errlen);

/* ---- reporting ---------------------------------------------------- */

/* "error", "warning" or "info". */
const char *config_severity_name(enum config_severity s);

/* Prints what `--check-config` shows to out: the settings (URLs with
 * their passwords masked), the findings, the budget as aligned lines with
 * their arithmetic, and a verdict line. */
void config_check_print(const struct config_report *r,
			const struct config_check_input *in, FILE *out);

/* Logs each finding of r as one config_finding line at its severity's
 * level, leaving out those already holds (same code and message; NULL for
 * none); with already NULL it also logs the budget as a memory_budget
 * line. */
void config_check_log(const struct config_report *r,
		      const struct config_report *already);

#endif
