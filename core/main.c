/*
 * Start-up order matters: everything that can be refused without touching
 * the network (settings, policies, the job script) is checked first and
 * exits with code 2, so a bad deploy fails fast and says which variable
 * or file to fix. Then the database pool, the worker threads and, last,
 * the broker: no delivery arrives before there is a thread to run it.
 */
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "alerts.h"
#include "config.h"
#include "config_check.h"
#include "consumer.h"
#include "db_pool.h"
#include "governor.h"
#include "job_batch.h"
#include "ledger.h"
#include "job_lua.h"
#include "log.h"
#include "mem_probe.h"
#include "metrics.h"
#include "policy.h"
#include "pool.h"

#define EXIT_CONFIG  2
#define EXIT_RECYCLE 3
/* A job waits this long for a database connection before failing. */
#define DB_WAIT_MS 30000
/* Start-up backoff while the server has no connection slot free. */
#define DB_RETRY_MIN_S 0.5
#define DB_RETRY_MAX_S 8.0

static volatile sig_atomic_t stop_requested;

struct app {
	struct config cfg;
	/* failure.lua's threshold, which a reload changes under the
	 * workers' feet. */
	atomic_int quarantine_after;
	struct limits limits;
	struct db_pool *db;
	struct mem_probe *probe; /* owned until the governor takes it */
	struct governor *governor;
	struct failure_policy failure;
	struct ledger *ledger;
	struct limits_shared shared; /* limits the workers follow */
	int failure_open;
	uint64_t memory_limit;
	const char *memory_source;   /* mem_source_name() of the limit */
	struct config_report report; /* config.lua's findings at start */
	struct job_state **states;
	int nstates;
	struct pool *pool;
	struct alerts *alerts;	 /* NULL until run() starts it */
	int curl_ready;		 /* libcurl initialised */
	struct metrics *metrics; /* NULL: METRICS_ADDR=off */
	int drain;
	int check_only;
	int abandoned; /* jobs still running when the grace ended */
};


static volatile sig_atomic_t reload_requested;


static void on_hangup(int sig)
{
	(void)sig;
	reload_requested = 1;
}


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


/* Opens the memory probe and takes one sample for the limit that
 * limits.lua sizes the Lua ceiling from. */
static int open_probe(struct app *app, char *err, size_t errlen)
{
	struct mem_sample s;
	char warn[256] = "";

	if (mem_probe_open(app->cfg.proc_root, app->cfg.sys_root,
			   getenv("DOCKER_MEMORY_LIMIT"), &app->probe, warn,
			   sizeof warn, err, errlen) < 0)
		return -EINVAL;
	if (warn[0])
		LOG(LOG_WARN, "memory_limit_override_ignored",
		    LF_S("reason", warn));
	if (mem_probe_sample(app->probe, &s) == 0) {
		app->memory_limit = s.limit_bytes;
		app->memory_source = mem_source_name(s.limit_source);
		LOG(LOG_INFO, "memory_limit", LF_U("limit", s.limit_bytes),
		    LF_S("source", mem_source_name(s.limit_source)),
		    LF_S("file", s.limit_file),
		    LF_I("cgroup_version", s.cgroup_version));
	}
	return 0;
}


/* glibc sizes its arena count from the host's cores (8 per core), not
 * the container's, and every arena keeps its own high-water mark. One
 * arena per worker thread plus the loop's avoids lock contention while
 * bounding that waste; an operator's MALLOC_ARENA_MAX wins. Must run
 * before any thread starts. */
static void cap_arenas(int concurrency)
{
	if (!getenv("MALLOC_ARENA_MAX"))
		mallopt(M_ARENA_MAX, concurrency + 1);
}


/* Loads the job script once in a state of its own, so a missing file or
 * a syntax error stops start-up before anything connects. */
static int check_job_script(struct app *app, char *err, size_t errlen)
{
	struct job_env env = {
		.script_path = app->cfg.job_script,
		.limits = app->limits,
	};
	struct job_state *js = NULL;
	char why[768];

	if (job_state_new(&env, &js, why, sizeof why) < 0) {
		snprintf(err, errlen, "JOB_SCRIPT=\"%s\" is not usable: %s",
			 app->cfg.job_script, why);
		return -EINVAL;
	}
	job_state_free(js);
	return 0;
}


static void check_input(const struct app *app, struct config_check_input *in)
{
	memset(in, 0, sizeof *in);
	in->cfg = &app->cfg;
	in->limits = &app->limits;
	in->memory_limit_bytes = app->memory_limit;
	in->memory_limit_source = app->memory_source;
}


/* Runs policies/config.lua. --check-config only prints what it found; a
 * normal start logs every finding once and stops at the first error,
 * before anything connects. */
static int check_config(struct app *app, char *err, size_t errlen)
{
	struct config_check_input in;

	check_input(app, &in);
	if (config_check_run(app->cfg.policy_dir, &in, &app->report, err,
			     errlen) < 0)
		return -EINVAL;
	if (app->check_only)
		return 0;
	config_check_log(&app->report, NULL);
	for (int i = 0; i < app->report.nfindings; i++) {
		const struct config_finding *f = &app->report.findings[i];

		if (f->severity == CONFIG_ERROR) {
			snprintf(err, errlen, "%s: %s", f->code, f->message);
			return -EINVAL;
		}
	}
	return 0;
}


/* Loads memory.lua (the governor takes the probe) and failure.lua, so
 * a broken policy stops start-up before anything connects. */
static int open_policies(struct app *app, char *err, size_t errlen)
{
	int rc = governor_open(app->cfg.policy_dir, app->probe, &app->limits,
			       app->cfg.prefetch, &app->governor, err, errlen);

	if (rc < 0)
		return rc;
	app->probe = NULL;
	rc = failure_open(app->cfg.policy_dir, &app->failure, err, errlen);
	atomic_store(&app->quarantine_after, app->failure.quarantine_after);
	if (rc == 0)
		app->failure_open = 1;
	return rc;
}


static int load_settings(struct app *app)
{
	struct limits_context ctx = { 0 };
	char err[1024];

	if (config_load(&app->cfg, err, sizeof err) < 0)
		goto fail;
	log_parse_level(app->cfg.log_level, &log_threshold);
	if (open_probe(app, err, sizeof err) < 0)
		goto fail;
	ctx.memory_limit_bytes = app->memory_limit;
	ctx.concurrency = app->cfg.concurrency;
	ctx.prefetch = app->cfg.prefetch;
	if (policy_load_limits(app->cfg.policy_dir, &ctx, &app->limits, err,
			       sizeof err) < 0 ||
	    check_job_script(app, err, sizeof err) < 0 ||
	    check_config(app, err, sizeof err) < 0 ||
	    open_policies(app, err, sizeof err) < 0)
		goto fail;
	return 0;
fail:
	LOG(LOG_ERROR, "config_error", LF_S("reason", err));
	fprintf(stderr, "moonrabbit: configuration error: %s\n", err);
	return -EINVAL;
}


/* Opens the crash ledger, counting what the previous process left in
 * flight, before any job can start. */
static int open_ledger(struct app *app)
{
	char err[1024];
	int counted = 0;

	if (!strcmp(app->cfg.state_dir, "off")) {
		LOG(LOG_WARN, "ledger_off",
		    LF_S("reason", "STATE_DIR=off: no crash quarantine"));
		return 0;
	}
	if (ledger_open(app->cfg.state_dir, app->cfg.amqp_queue,
			app->cfg.concurrency, &app->ledger, &counted, err,
			sizeof err) < 0) {
		LOG(LOG_ERROR, "ledger_failed", LF_S("reason", err));
		return -EIO;
	}
	if (counted)
		LOG(LOG_WARN, "crash_detected",
		    LF_I("in_flight_at_crash", counted),
		    LF_S("ledger", app->cfg.state_dir));
	return 0;
}


static int start_workers(struct app *app)
{
	struct job_env env = {
		.script_path = app->cfg.job_script,
		.limits = app->limits,
		.db = app->db,
		.ledger = app->ledger,
		.shared = &app->shared,
		.quarantine_after = &app->quarantine_after,
		.alerts = app->alerts,
		.db_wait_ms = DB_WAIT_MS,
		.stmt_cache = app->cfg.db_statement_cache,
	};
	char err[1024];
	int rc;

	limits_shared_init(&app->shared, &app->limits);
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
	return pool_start(app->nstates,
			  job_batch_size(app->states[0], app->cfg.prefetch),
			  job_batch_run_fn, (void **)app->states, &app->pool);
fail:
	LOG(LOG_ERROR, "job_script_error", LF_S("reason", err));
	fprintf(stderr, "moonrabbit: %s\n", err);
	return rc;
}


/* Policies a reload has loaded and tried, not yet in force. */
struct fresh_policies {
	struct limits limits;
	struct policy memory;
	struct failure_policy failure;
	struct alerts_policy *alerts;
};


/* Loads and tries every policy into *f. Returns 0, or -EINVAL with the
 * file and the line or field in err, nothing left open. */
static int prepare_policies(struct app *app, struct fresh_policies *f,
			    char *err, size_t errlen)
{
	struct limits_context lctx = {
		.memory_limit_bytes = app->memory_limit,
		.concurrency = app->cfg.concurrency,
		.prefetch = app->cfg.prefetch,
	};
	const char *dir = app->cfg.policy_dir;

	if (policy_load_limits(dir, &lctx, &f->limits, err, errlen) < 0 ||
	    governor_prepare(app->governor, dir, &f->memory, err, errlen) < 0)
		return -EINVAL;
	if (failure_prepare(dir, &f->failure, err, errlen) < 0) {
		policy_close(&f->memory);
		return -EINVAL;
	}
	if (alerts_prepare(dir, &f->alerts, err, errlen) < 0) {
		policy_close(&f->memory);
		failure_close(&f->failure);
		return -EINVAL;
	}
	return 0;
}


/* SIGHUP: every policy is loaded into a fresh state and tried; only
 * when all pass do they replace the ones in force, at once, and the
 * limits cached in C change with them. A refusal leaves everything as it
 * was and raises an alert saying why, formatted by the alerts.lua still
 * in force. Runs on the loop thread. */
static void reload_policies(void *ctx)
{
	struct app *app = ctx;
	struct fresh_policies f = { .alerts = NULL };
	struct alert a;
	char err[1024];

	if (prepare_policies(app, &f, err, sizeof err) < 0) {
		LOG(LOG_ERROR, "policy_reload_refused", LF_S("reason", err));
		alert_init(&a, "policy_reload", "warning", "policy_reload",
			   err);
		alerts_raise(app->alerts, &a);
		return;
	}
	governor_commit(app->governor, &f.memory, &f.limits);
	failure_close(&app->failure);
	app->failure = f.failure;
	atomic_store(&app->quarantine_after, app->failure.quarantine_after);
	app->limits = f.limits;
	limits_shared_set(&app->shared, &f.limits);
	alerts_commit(app->alerts, f.alerts);
	LOG(LOG_INFO, "policies_reloaded",
	    LF_U("max_message_bytes", f.limits.max_message_bytes),
	    LF_S("policy_dir", app->cfg.policy_dir));
}


static void install_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sa.sa_handler = on_hangup;
	sigaction(SIGHUP, &sa, NULL);
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
	    LF_U("bytes_in", s->bytes_in), LF_U("pauses", s->pauses),
	    LF_U("reconnects", s->reconnects), LF_U("retries", s->retries),
	    LF_B("recycled", s->recycled), LF_D("seconds", s->seconds),
	    LF_D("msgs_per_s",
		 s->seconds > 0 ? (double)total / s->seconds : 0.0),
	    LF_I("peak_rss_kb", s->peak_rss_kb));
}


static void teardown(struct app *app)
{
	metrics_stop(app->metrics);
	pool_stop(app->pool);
	/* After the workers, which may raise alerts until they stop. */
	if (alerts_stop(app->alerts) == 0 && app->curl_ready)
		alerts_global_cleanup();
	governor_close(app->governor);
	mem_probe_close(app->probe);
	if (app->failure_open)
		failure_close(&app->failure);
	ledger_close(app->ledger);
	for (int i = 0; i < app->nstates; i++)
		job_state_free(app->states[i]);
	free(app->states);
	db_pool_close(app->db);
}


static double mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}


static void sleep_s(double s)
{
	struct timespec ts = { (time_t)s, (long)((s - (time_t)s) * 1e9) };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}


/* Logs, once, a pool that opened with fewer connections than asked for;
 * reason is the server's refusal. */
static void log_shortfall(struct app *app, const char *database,
			  const char *reason)
{
	struct db_pool_stats st;

	db_pool_stats(app->db, &st);
	if (st.open == st.wanted)
		return;
	LOG(LOG_WARN, "db_pool_shortfall", LF_S("database", database),
	    LF_I("wanted", st.wanted), LF_I("open", st.open),
	    LF_I("concurrency", app->cfg.concurrency), LF_S("reason", reason),
	    LF_S("fix", "jobs share the connections open and the pool asks "
			"for more with backoff; lower DB_POOL_SIZE or raise "
			"the server's max_connections or the role's "
			"CONNECTION LIMIT"));
}


/* Opens the database pool. A server out of connection slots (SQLSTATE
 * 53300) is no reason to stop: a pool that got some connections starts
 * short, and one that got none tries again with capped, jittered
 * backoff for DB_CONNECT_WAIT_SECONDS. Anything else stops start-up.
 * Returns 0 with app->db set, or -EIO; both logged. */
static int open_db(struct app *app)
{
	const struct config *cfg = &app->cfg;
	double delay = DB_RETRY_MIN_S;
	double until = mono_s() + cfg->db_connect_wait_seconds;
	char err[1024], masked[512];
	int rc, tries = 0;

	config_mask_url(cfg->database_url, masked, sizeof masked);
	srand48((long)time(NULL) ^ (long)getpid());
	for (;;) {
		double left, nap;

		rc = db_pool_open(cfg->database_url, cfg->db_pool_size,
				  &app->db, err, sizeof err);
		left = until - mono_s();
		if (rc != -EAGAIN || left <= 0)
			break;
		if (tries++ == 0)
			LOG(LOG_WARN, "db_pool_waiting",
			    LF_S("database", masked), LF_S("reason", err),
			    LF_I("wait_s", cfg->db_connect_wait_seconds));
		/* The last try falls on the end of the wait. */
		nap = delay * (0.8 + 0.4 * drand48());
		sleep_s(nap < left ? nap : left);
		delay = delay * 2 > DB_RETRY_MAX_S ? DB_RETRY_MAX_S : delay * 2;
	}
	if (rc == 0) {
		log_shortfall(app, masked, err);
		return 0;
	}
	if (rc == -EAGAIN) {
		char fix[256];

		snprintf(fix, sizeof fix,
			 "no connection slot came free within "
			 "DB_CONNECT_WAIT_SECONDS (%d): lower DB_POOL_SIZE "
			 "(%d) or WORKER_REPLICAS (%d), or raise the server's "
			 "max_connections or the role's CONNECTION LIMIT",
			 cfg->db_connect_wait_seconds, cfg->db_pool_size,
			 cfg->replicas);
		LOG(LOG_ERROR, "db_connect_failed", LF_S("database", masked),
		    LF_S("reason", err), LF_I("attempts", tries + 1),
		    LF_S("fix", fix));
		return -EIO;
	}
	LOG(LOG_ERROR, "db_connect_failed", LF_S("database", masked),
	    LF_S("reason", err),
	    LF_S("fix", "check DATABASE_URL (host, port, database, user and "
			"password) and that the server is running"));
	fprintf(stderr,
		"moonrabbit: cannot connect to DATABASE_URL (%s): %s; check "
		"its host, port, database, user and password and that the "
		"server is running\n",
		masked, err);
	return -EIO;
}


/* Asks the server for max_connections once and logs what config.lua
 * finds with it that it did not find before (case 020). Never fatal: the
 * pool is open by now, and a server short of connections is the pool's
 * to live with. */
static void check_server(struct app *app)
{
	struct config_report *again = malloc(sizeof *again);
	struct config_check_input in;
	char err[1024] = "no database connection came free";
	PGconn *conn = NULL;
	int rc = -ENOMEM;

	check_input(app, &in);
	if (again)
		rc = db_pool_acquire(app->db, DB_WAIT_MS, &conn, err,
				     sizeof err);
	if (rc == 0) {
		rc = config_check_server_max(conn, &in.server_max_connections,
					     err, sizeof err);
		db_pool_release(app->db, conn);
	}
	if (rc == 0)
		rc = config_check_run(app->cfg.policy_dir, &in, again, err,
				      sizeof err);
	if (rc == 0)
		config_check_log(again, &app->report);
	else
		LOG(LOG_WARN, "server_check_failed", LF_S("reason", err));
	free(again);
}


static int run(struct app *app)
{
	struct consumer_opts opts = {
		.cfg = &app->cfg,
		.limits = &app->limits,
		.drain = app->drain,
		.stop = &stop_requested,
		.reload = &reload_requested,
		.on_reload = reload_policies,
		.reload_ctx = app,
	};
	struct consumer_summary sum;
	char err[1024];
	int rc;

	/* First, so /healthz answers while the database and broker are
	 * still being reached; a bad METRICS_ADDR is a configuration
	 * error, a port someone else holds is not. */
	rc = metrics_start(app->cfg.metrics_addr, &app->metrics, err,
			   sizeof err);
	if (rc < 0) {
		LOG(LOG_ERROR, "metrics_failed", LF_S("reason", err));
		fprintf(stderr, "moonrabbit: %s\n", err);
		return rc == -EINVAL ? EXIT_CONFIG : 1;
	}
	if (app->metrics)
		LOG(LOG_INFO, "metrics_listening",
		    LF_S("addr", app->cfg.metrics_addr));
	if (open_db(app) < 0)
		return 1;
	check_server(app);
	if (alerts_start(app->cfg.policy_dir, app->cfg.alert_webhook_url,
			 &app->alerts, err, sizeof err) < 0) {
		LOG(LOG_ERROR, "config_error", LF_S("reason", err));
		fprintf(stderr, "moonrabbit: configuration error: %s\n", err);
		return EXIT_CONFIG;
	}
	if (open_ledger(app) < 0)
		return 1;
	if (start_workers(app) < 0)
		return 1;
	metrics_set(app->metrics, MG_POOL_THREADS, app->nstates);
	metrics_set(app->metrics, MG_MEM_LIMIT, (double)app->memory_limit);
	install_signals();
	opts.pool = app->pool;
	opts.db = app->db;
	opts.governor = app->governor;
	opts.failure = &app->failure;
	opts.alerts = app->alerts;
	opts.metrics = app->metrics;
	rc = consumer_run(&opts, &sum, err, sizeof err);
	log_summary(&sum);
	app->abandoned = sum.abandoned;
	if (rc < 0) {
		LOG(LOG_ERROR, "consumer_failed", LF_S("reason", err));
		return 1;
	}
	return sum.recycled ? EXIT_RECYCLE : 0;
}


int main(int argc, char **argv)
{
	struct app app;
	int rc;

	memset(&app, 0, sizeof app);
	if (parse_args(&app, argc, argv) < 0)
		return EXIT_CONFIG;
	if (load_settings(&app) < 0) {
		teardown(&app);
		return EXIT_CONFIG;
	}
	/* libcurl's global set-up is not thread-safe, so it runs before any
	 * thread exists; and only with a webhook to send to, since it loads
	 * the TLS library (about 3 MiB of RSS) whether used or not. */
	if (app.cfg.alert_webhook_url[0]) {
		if (alerts_global_init() < 0) {
			fprintf(stderr, "moonrabbit: cannot initialise "
					"libcurl\n");
			return 1;
		}
		app.curl_ready = 1;
	}
	cap_arenas(app.cfg.concurrency);
	if (app.check_only) {
		struct config_check_input in;

		check_input(&app, &in);
		config_check_print(&app.report, &in, stdout);
		teardown(&app);
		return app.report.errors ? EXIT_CONFIG : 0;
	}
	rc = run(&app);
	/* Jobs past the grace period are not waited for: their deliveries
	 * went back to the broker when the connection closed, and a worker
	 * that outstays its grace is killed by the orchestrator anyway. */
	if (app.abandoned) {
		LOG(LOG_WARN, "exit_with_jobs_running",
		    LF_I("jobs", app.abandoned));
		fflush(stdout);
		_exit(rc);
	}
	teardown(&app);
	return rc;
}
