/*
 * Start-up order matters: everything that can be refused without touching
 * the network (settings, policies, the job script) is checked first and
 * exits with code 2, so a bad deploy fails fast and says which variable
 * or file to fix. Then the database pool, the worker threads and, last,
 * the broker: no delivery arrives before there is a thread to run it.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "consumer.h"
#include "db_pool.h"
#include "job_lua.h"
#include "log.h"
#include "policy.h"
#include "pool.h"

#define EXIT_CONFIG 2
/* A job waits this long for a database connection before failing. */
#define DB_WAIT_MS 30000

static volatile sig_atomic_t stop_requested;

struct app {
	struct config cfg;
	struct limits limits;
	struct db_pool *db;
	struct job_state **states;
	int nstates;
	struct pool *pool;
	int drain;
	int check_only;
};


static void on_signal(int sig)
{
	(void)sig;
	/* A second signal ends at once; the broker requeues what is
	 * unacked. */
	if (stop_requested)
		_exit(1);
	stop_requested = 1;
}


static void usage(FILE *out)
{
	fprintf(out,
		"usage: moonrabbit [--drain] [--check-config]\n"
		"  --drain         exit 0 once the queue is empty and every\n"
		"                  delivery is settled, with a summary line\n"
		"  --check-config  validate settings and policies, then exit\n"
		"Settings come from the environment; see README.md.\n");
}


static int parse_args(struct app *app, int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--drain")) {
			app->drain = 1;
		} else if (!strcmp(argv[i], "--check-config")) {
			app->check_only = 1;
		} else if (!strcmp(argv[i], "--help")) {
			usage(stdout);
			exit(0);
		} else {
			fprintf(stderr, "moonrabbit: unknown argument %s\n",
				argv[i]);
			usage(stderr);
			return -EINVAL;
		}
	}
	return 0;
}


static int load_settings(struct app *app)
{
	struct limits_context ctx = { 0 };
	char err[1024];

	if (config_load(&app->cfg, err, sizeof err) < 0 ||
	    log_parse_level(app->cfg.log_level, &log_threshold) < 0) {
		if (!err[0] || app->cfg.log_level)
			snprintf(err, sizeof err,
				 "LOG_LEVEL=\"%s\" is not "
				 "usable: use error, warn, info or debug",
				 app->cfg.log_level);
		goto fail;
	}
	ctx.concurrency = app->cfg.concurrency;
	ctx.prefetch = app->cfg.prefetch;
	if (policy_load_limits(app->cfg.policy_dir, &ctx, &app->limits, err,
			       sizeof err) < 0)
		goto fail;
	return 0;
fail:
	LOG(LOG_ERROR, "config_error", LF_S("reason", err));
	fprintf(stderr, "moonrabbit: configuration error: %s\n", err);
	return -EINVAL;
}


static int start_workers(struct app *app)
{
	struct job_env env = {
		.script_path = app->cfg.job_script,
		.limits = app->limits,
		.db = app->db,
		.db_wait_ms = DB_WAIT_MS,
	};
	char err[1024];
	int rc;

	app->states = calloc((size_t)app->cfg.concurrency, sizeof *app->states);
	if (!app->states)
		return -ENOMEM;
	for (int i = 0; i < app->cfg.concurrency; i++) {
		env.index = i;
		rc = job_state_new(&env, &app->states[i], err, sizeof err);
		if (rc < 0)
			goto fail;
		app->nstates++;
	}
	rc = job_state_init(app->states[0], err, sizeof err);
	if (rc < 0)
		goto fail;
	return pool_start(app->nstates, job_state_run_fn, (void **)app->states,
			  &app->pool);
fail:
	LOG(LOG_ERROR, "job_script_error", LF_S("reason", err));
	fprintf(stderr, "moonrabbit: %s\n", err);
	return rc;
}


static void install_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
}


static void log_summary(const struct consumer_summary *s)
{
	uint64_t total = 0;

	for (int i = 0; i < OUTCOME_COUNT; i++)
		total += s->counts[i];
	LOG(LOG_INFO, "summary", LF_U("messages", total),
	    LF_U("ok", s->counts[OUTCOME_OK]),
	    LF_U("size_limit", s->counts[OUTCOME_SIZE_LIMIT]),
	    LF_U("invalid_json", s->counts[OUTCOME_INVALID_JSON]),
	    LF_U("field_size_limit", s->counts[OUTCOME_FIELD_SIZE_LIMIT]),
	    LF_U("invalid_message", s->counts[OUTCOME_INVALID_MESSAGE]),
	    LF_U("job_error", s->counts[OUTCOME_JOB_ERROR]),
	    LF_U("shutdown", s->counts[OUTCOME_SHUTDOWN]),
	    LF_U("bytes_in", s->bytes_in), LF_D("seconds", s->seconds),
	    LF_D("msgs_per_s",
		 s->seconds > 0 ? (double)total / s->seconds : 0.0),
	    LF_I("peak_rss_kb", s->peak_rss_kb));
}


static void teardown(struct app *app)
{
	pool_stop(app->pool);
	for (int i = 0; i < app->nstates; i++)
		job_state_free(app->states[i]);
	free(app->states);
	db_pool_close(app->db);
}


static int run(struct app *app)
{
	struct consumer_opts opts = {
		.cfg = &app->cfg,
		.limits = &app->limits,
		.drain = app->drain,
		.stop = &stop_requested,
	};
	struct consumer_summary sum;
	char err[1024];
	char masked[512];
	int rc;

	config_mask_url(app->cfg.database_url, masked, sizeof masked);
	if (db_pool_open(app->cfg.database_url, app->cfg.db_pool_size, &app->db,
			 err, sizeof err) < 0) {
		LOG(LOG_ERROR, "db_connect_failed", LF_S("database", masked),
		    LF_S("reason", err));
		return 1;
	}
	if (start_workers(app) < 0)
		return 1;
	install_signals();
	opts.pool = app->pool;
	rc = consumer_run(&opts, &sum, err, sizeof err);
	log_summary(&sum);
	if (rc < 0) {
		LOG(LOG_ERROR, "consumer_failed", LF_S("reason", err));
		return 1;
	}
	return 0;
}


int main(int argc, char **argv)
{
	struct app app;
	int rc;

	memset(&app, 0, sizeof app);
	if (parse_args(&app, argc, argv) < 0)
		return EXIT_CONFIG;
	if (load_settings(&app) < 0)
		return EXIT_CONFIG;
	if (app.check_only) {
		printf("configuration ok: max_message_bytes=%llu "
		       "concurrency=%d prefetch=%d\n",
		       (unsigned long long)app.limits.max_message_bytes,
		       app.cfg.concurrency, app.cfg.prefetch);
		return 0;
	}
	rc = run(&app);
	teardown(&app);
	return rc;
}
