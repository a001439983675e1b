/*
 * The consumer loop, on the main thread: each turn settles the jobs the
 * pool finished (acks in batches, rejects, retries), reads what the
 * broker sent (channel.c), and runs the memory governor, the backlog
 * and database watches, drain mode's end test and reconnects with
 * backoff. The state both files share is in consumer_int.h.
 */
#include "consumer.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <malloc.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "ack_window.h"
#include "body_buf.h"
#include "broker.h"
#include "failure.h"
#include "gate.h"
#include "inbound.h"
#include "job.h"
#include "log.h"
#include "metrics.h"

#include "consumer_int.h"


static int send_status(struct consumer *c, int rc, const char *what)
{
	return rc == AMQP_STATUS_OK ? 0 : status_error(c, rc, what);
}


/* Notes a retry queue in use, so drain mode waits for it to empty too. */
static void remember_retry_queue(struct consumer *c, uint64_t delay_ms)
{
	for (int i = 0; i < c->nretry; i++)
		if (c->retry_delays[i] == delay_ms)
			return;
	if (c->nretry < RETRY_QUEUES_MAX)
		c->retry_delays[c->nretry++] = delay_ms;
}


/* Asks failure.lua about a failed job and, for a retry, publishes a copy
 * with its attempt count raised. Returns 1 when the copy is committed
 * (the original may then be acked), 0 to dead-letter, negative when the
 * connection failed. */
static int try_retry(struct consumer *c, struct job *job)
{
	struct failure_decision d;
	struct broker_retry r;
	char err[256];
	int rc;

	if (!c->o->failure || !job->body)
		return 0;
	if (failure_decide(c->o->failure, job->reason, job->attempts, &d, err,
			   sizeof err) < 0) {
		LOG(LOG_ERROR, "failure_policy_refused", LF_S("reason", err));
		return 0;
	}
	if (!d.retry)
		return 0;
	r = (struct broker_retry){ .message_id = job->message_id,
				   .content_type = job->content_type,
				   .body = job->body,
				   .body_len = job->body_len,
				   .attempts = job->attempts + 1,
				   .delay_ms = d.delay_ms };
	rc = channel_publish_retry(c, &r);
	if (rc == -EPROTO) {
		/* A refusal (a queue of that name declared with other
		 * arguments, say) would come back at every redelivery: the
		 * message is dead-lettered, not sent round a reconnect loop,
		 * and nothing was committed, so it is not retried twice. */
		LOG(LOG_ERROR, "retry_refused",
		    LF_S("message_id", job->message_id),
		    LF_U("delivery", job->delivery_tag),
		    LF_S("reason", c->err));
		return 0;
	}
	if (rc < 0)
		return rc;
	remember_retry_queue(c, d.delay_ms);
	LOG(LOG_WARN, "delivery_retry_scheduled",
	    LF_S("message_id", job->message_id),
	    LF_U("delivery", job->delivery_tag),
	    LF_I("attempt", job->attempts + 1), LF_U("delay_ms", d.delay_ms),
	    LF_S("reason", job->reason));
	return 1;
}


/* Acks or rejects a finished job, counts and logs its outcome. */
static int settle(struct consumer *c, struct job *job)
{
	enum outcome o = job->outcome;
	int rc = AMQP_STATUS_OK;

	/* A tag from a connection that died means nothing on this one; the
	 * broker has already handed that delivery back, and will deliver it
	 * again (redelivered), so it is neither settled nor counted here. */
	if (job->generation != c->generation || !c->conn) {
		LOG(LOG_INFO, "stale_delivery_dropped",
		    LF_S("message_id", job->message_id),
		    LF_S("outcome", outcome_name(o)));
		return 0;
	}
	if (job->run_ms > 0)
		metrics_job_seconds(c->o->metrics, job->run_ms / 1000.0);
	if (o == OUTCOME_JOB_ERROR) {
		int retried = try_retry(c, job);

		if (retried < 0)
			return retried;
		if (retried) {
			c->sum->counts[o]++;
			metrics_outcome(c->o->metrics, o);
			c->sum->retries++;
			ack_window_settle(&c->acks, job->delivery_tag, 1);
			return 0;
		}
	}
	/* Acks wait for flush_acks(), which sends one multiple ack for the
	 * settled prefix; a reject goes out at once. */
	ack_window_settle(&c->acks, job->delivery_tag, o == OUTCOME_OK);
	if (o != OUTCOME_OK)
		rc = amqp_basic_reject(c->conn, BROKER_CHANNEL,
				       job->delivery_tag,
				       o == OUTCOME_SHUTDOWN);
	c->sum->counts[o]++;
	metrics_outcome(c->o->metrics, o);
	if (c->o->governor)
		governor_count(c->o->governor, 1);
	c->last_settle = c->last_activity = now_s();
	if (o == OUTCOME_OK)
		LOG(LOG_DEBUG, "delivery_acked",
		    LF_S("message_id", job->message_id),
		    LF_U("delivery", job->delivery_tag),
		    LF_D("ms", job->run_ms));
	else
		LOG(o == OUTCOME_SHUTDOWN ? LOG_INFO : LOG_WARN,
		    o == OUTCOME_SHUTDOWN ? "delivery_requeued"
					  : "delivery_rejected",
		    LF_S("queue", c->names.queue),
		    LF_S("message_id", job->message_id),
		    LF_U("delivery", job->delivery_tag),
		    LF_S("outcome", outcome_name(o)),
		    LF_S("reason", job->reason), LF_U("bytes", job->body_len));
	return send_status(c, rc, "failed to settle a delivery");
}


/* Sends the acks the window allows: one multiple ack for the settled
 * prefix and single acks beyond a job still running. */
static int flush_acks(struct consumer *c)
{
	uint64_t singles[64];
	uint64_t upto;
	size_t n;
	int rc = AMQP_STATUS_OK;

	if (!c->conn)
		return 0;
	do {
		n = ack_window_flush(&c->acks, &upto, singles, 64);
		if (upto)
			rc = amqp_basic_ack(c->conn, BROKER_CHANNEL, upto, 1);
		for (size_t i = 0; i < n && rc == AMQP_STATUS_OK; i++)
			rc = amqp_basic_ack(c->conn, BROKER_CHANNEL, singles[i],
					    0);
	} while (n == 64 && rc == AMQP_STATUS_OK);
	return send_status(c, rc, "failed to ack deliveries");
}


/* Acks go out for a quarter of the prefetch window at a time, when
 * nothing is left in flight, or ACK_EVERY_S after the last ones: the
 * broker retires acked messages in the batches it is given, and on 1 MiB
 * persistent bodies an ack per message or two cost it (and so the drain)
 * more than a few milliseconds of delay on the ack. */
static int maybe_flush_acks(struct consumer *c)
{
	double now = now_s();

	if (!c->unacked)
		return 0;
	if (c->unacked < (c->prefetch > 4 ? c->prefetch / 4 : 1) &&
	    now < c->acked_at + ACK_EVERY_S && pool_in_flight(c->o->pool))
		return 0;
	c->unacked = 0;
	c->acked_at = now;
	return flush_acks(c);
}


int consumer_settle_list(struct consumer *c, struct job *list)
{
	int rc = 0;

	while (list) {
		struct job *next = list->next;

		if (rc == 0)
			rc = settle(c, list);
		c->unacked++;
		job_free(list);
		list = next;
	}
	return rc < 0 ? rc : maybe_flush_acks(c);
}


static int setup(struct consumer *c)
{
	const struct config *cfg = c->o->cfg;
	int rc;

	broker_names_for(cfg->amqp_queue, &c->names);
	rc = broker_connect(cfg->amqp_url, cfg->heartbeat_seconds, &c->conn,
			    c->err, c->errlen);
	if (rc < 0)
		return rc;
	if (inbound_open(&c->in, c->conn) != AMQP_STATUS_OK) {
		snprintf(c->err, c->errlen, "out of memory");
		return -ENOMEM;
	}
	rc = broker_declare(c->conn, &c->names, c->err, c->errlen);
	if (rc < 0)
		return rc;
	return channel_set_prefetch(c,
				    c->prefetch ? c->prefetch : cfg->prefetch);
}


/* Stops deliveries, hands back what no thread has started, and gives
 * running jobs the grace period. */
static int begin_stop(struct consumer *c)
{
	struct job *queued;
	int rc;

	c->stopping = 1;
	c->stop_deadline = now_s() + c->o->cfg->shutdown_grace_seconds;
	LOG(LOG_INFO, "stopping", LF_S("queue", c->names.queue),
	    LF_I("in_flight", pool_in_flight(c->o->pool)),
	    LF_B("recycle", c->sum->recycled));
	rc = channel_cancel(c);
	if (rc < 0)
		return rc;
	queued = pool_take_queued(c->o->pool);
	for (struct job *j = queued; j; j = j->next) {
		j->outcome = OUTCOME_SHUTDOWN;
		snprintf(j->reason, sizeof j->reason, "worker stopping");
	}
	return consumer_settle_list(c, queued);
}


/* Jobs waiting for a thread past limits.lua's threshold mean the pool is
 * far behind the broker: raised once when crossed, resolved once when
 * back under. */
static void watch_backlog(struct consumer *c, int queued)
{
	uint64_t limit = c->o->limits->backlog_alert;
	int over = (uint64_t)queued > limit;
	char summary[160];
	struct alert a;

	if (over == c->backlog_over)
		return;
	c->backlog_over = over;
	snprintf(
		summary, sizeof summary,
		"%d jobs wait for a worker thread (threshold %llu, %d threads)",
		queued, (unsigned long long)limit, c->o->cfg->concurrency);
	alert_init(&a, "backlog", over ? "warning" : "resolved", "backlog",
		   summary);
	alerts_raise(c->o->alerts, &a);
}


static void log_sample(struct consumer *c, const struct mem_sample *s,
		       const struct mem_decision *d)
{
	int queued, active;

	pool_load(c->o->pool, &queued, &active);
	metrics_set(c->o->metrics, MG_MEM_RSS, (double)s->rss_bytes);
	metrics_set(c->o->metrics, MG_MEM_WORKING_SET,
		    (double)s->working_set_bytes);
	metrics_set(c->o->metrics, MG_MEM_USAGE, (double)s->usage_bytes);
	metrics_set(c->o->metrics, MG_MEM_LIMIT, (double)s->limit_bytes);
	metrics_set(c->o->metrics, MG_MEM_LEVEL, d->level);
	metrics_set(c->o->metrics, MG_MEM_RATIO, d->ratio);
	LOG(LOG_INFO, "memory_sample", LF_U("rss", s->rss_bytes),
	    LF_U("working_set", s->working_set_bytes),
	    LF_U("usage", s->usage_bytes), LF_U("limit", s->limit_bytes),
	    LF_S("source", mem_source_name(s->limit_source)),
	    LF_S("limit_file", s->limit_file),
	    LF_S("level", mem_level_name(d->level)), LF_D("ratio", d->ratio),
	    LF_I("prefetch", d->prefetch), LF_B("paused", d->pause),
	    LF_I("jobs_queued", queued), LF_I("jobs_active", active),
	    LF_I("in_flight", pool_in_flight(c->o->pool)));
	if (d->alert.raised) {
		struct alert a;

		alert_init(&a, "memory", d->alert.severity, d->alert.key,
			   d->alert.summary);
		a.facts = d->alert.facts;
		alerts_raise(c->o->alerts, &a);
	}
	watch_backlog(c, queued);
}


/* Applies a prefetch change; the running consumer keeps the prefetch it
 * was created with, so it is re-created (nothing unacked is lost). */
static int apply_prefetch(struct consumer *c, int prefetch)
{
	int rc;

	if (prefetch == c->prefetch)
		return 0;
	LOG(LOG_INFO, "prefetch_changed", LF_I("from", c->prefetch),
	    LF_I("to", prefetch));
	rc = channel_set_prefetch(c, prefetch);
	if (rc == 0 && c->consumer_tag.bytes && !c->paused) {
		rc = channel_cancel(c);
		if (rc == 0)
			rc = channel_consume(c);
	}
	return rc;
}


static int apply_pause(struct consumer *c, int pause)
{
	if (pause == c->paused || c->stopping)
		return 0;
	c->paused = pause;
	metrics_set(c->o->metrics, MG_PAUSED, pause);
	if (!c->conn)
		return 0; /* the next connection starts paused or not */
	if (pause) {
		c->sum->pauses++;
		metrics_add(c->o->metrics, MC_PAUSES, 1);
		LOG(LOG_WARN, "intake_paused", LF_S("queue", c->names.queue),
		    LF_I("in_flight", pool_in_flight(c->o->pool)));
		/* Freed bodies and Lua garbage go back to the kernel now,
		 * while nothing new arrives to reuse them. */
		body_buf_flush();
		malloc_trim(0);
		return channel_cancel(c);
	}
	LOG(LOG_INFO, "intake_resumed", LF_S("queue", c->names.queue));
	return channel_consume(c);
}


/* Takes a sample when one is due and acts on memory.lua's decision. A
 * refused decision is logged and the previous one stays in force. */
/* Kept body buffers are for a stream of large messages; once nothing is
 * in flight at a sample they go back, with glibc's free memory, so a
 * worker that saw a burst does not sit on it while idle. */
static void release_idle(struct consumer *c)
{
	size_t kept = body_buf_kept();

	if (!kept || pool_in_flight(c->o->pool))
		return;
	body_buf_flush();
	malloc_trim(0);
	LOG(LOG_INFO, "idle_buffers_released", LF_U("bytes", kept));
}


static int govern(struct consumer *c, int force)
{
	struct governor *g = c->o->governor;
	struct mem_decision d;
	struct mem_sample s;
	char err[512];
	int rc;

	if (!g || (!force && !governor_due(g, now_s())))
		return 0;
	release_idle(c);
	rc = governor_sample(g, now_s(), &s, &d, err, sizeof err);
	if (rc == -EIO) {
		LOG(LOG_WARN, "memory_probe_failed",
		    LF_S("reason", "unreadable"));
		return 0;
	}
	if (rc < 0) {
		LOG(LOG_ERROR, "memory_policy_refused", LF_S("reason", err));
		return 0;
	}
	log_sample(c, &s, &d);
	rc = apply_prefetch(c, d.prefetch);
	if (rc == 0)
		rc = apply_pause(c, d.pause);
	if (rc == 0 && d.recycle && !c->stopping) {
		c->sum->recycled = 1;
		rc = begin_stop(c);
	}
	return rc;
}


/* Messages ready in queue, by a passive declare; -1 if unknown. */
static long ready_in(struct consumer *c, const char *queue)
{
	amqp_queue_declare_t req = { .queue = amqp_cstring_bytes(queue),
				     .passive = 1,
				     .arguments = amqp_empty_table };
	amqp_queue_declare_ok_t *ok;
	amqp_method_t reply;

	if (channel_rpc(c, BROKER_CHANNEL, AMQP_QUEUE_DECLARE_METHOD, &req,
			AMQP_QUEUE_DECLARE_OK_METHOD, &reply,
			"failed to ask for the queue's depth") < 0)
		return -1;
	ok = reply.decoded;
	return (long)ok->message_count;
}


/* In drain mode: true once nothing is in flight, nothing arrived for a
 * moment, and the broker says no message is ready, in the work queue or
 * in a retry queue this run used. */
static int drained(struct consumer *c)
{
	char name[BROKER_NAME_MAX + 32];

	if (!c->conn || now_s() - c->last_activity < DRAIN_QUIET_S ||
	    pool_in_flight(c->o->pool))
		return 0;
	c->last_activity = now_s();
	if (ready_in(c, c->names.queue) != 0)
		return 0;
	/* A message waiting out its retry delay is not done with. */
	for (int i = 0; i < c->nretry; i++) {
		broker_retry_queue(&c->names, c->retry_delays[i], name,
				   sizeof name);
		if (ready_in(c, name) != 0)
			return 0;
	}
	return !amqp_frames_enqueued(c->conn);
}


/* Exports the pool's figures, and logs each connection that a pool which
 * started short gains later. */
static void watch_db(struct consumer *c)
{
	struct db_pool_stats st;

	if (!c->o->db)
		return;
	db_pool_stats(c->o->db, &st);
	metrics_set(c->o->metrics, MG_DB_OPEN, st.open);
	metrics_set(c->o->metrics, MG_DB_IN_USE, st.in_use);
	metrics_set(c->o->metrics, MG_DB_WAITING, st.waiting);
	if (c->db_open && st.open > c->db_open)
		LOG(LOG_INFO, "db_pool_grew", LF_I("wanted", st.wanted),
		    LF_I("open", st.open));
	c->db_open = st.open;
}


/* Copies the pool gauges for /metrics. Reading them takes the pool's
 * and the database pool's locks, which every worker also takes, so it
 * happens twenty times a second at most rather than once per frame. */
static void publish_gauges(struct consumer *c)
{
	struct metrics *m = c->o->metrics;
	double now = now_s();
	int queued, active;

	if (now < c->gauges_at + GAUGE_EVERY_S)
		return;
	c->gauges_at = now;
	watch_db(c);
	if (!m)
		return;
	pool_load(c->o->pool, &queued, &active);
	metrics_set(m, MG_JOBS_QUEUED, queued);
	metrics_set(m, MG_JOBS_ACTIVE, active);
	metrics_set(m, MG_IN_FLIGHT, pool_in_flight(c->o->pool));
}


/* One turn of the loop: settle what finished, then read frames. While
 * deliveries are already in rabbitmq-c's buffer they are read on and
 * handed to the pool together: waking a worker per message cost more
 * system time than the rest of a no-op job. */
static int turn(struct consumer *c)
{
	int rc = consumer_settle_list(c, pool_collect(c->o->pool));

	if (rc < 0)
		return rc;
	rc = inbound_tick(&c->in);
	if (rc != AMQP_STATUS_OK)
		return status_error(c, rc, "lost the broker");
	publish_gauges(c);
	do {
		rc = channel_read_one(c);
	} while (rc == 0 && c->npending && c->npending < SUBMIT_MAX &&
		 c->pending_bytes < SUBMIT_MAX_BYTES && channel_buffered(c));
	channel_submit(c);
	return rc;
}


static int should_end_now(struct consumer *c)
{
	int rc = govern(c, 0);

	if (rc < 0)
		return rc;
	if (c->o->reload && *c->o->reload && c->o->on_reload) {
		*c->o->reload = 0;
		c->o->on_reload(c->o->reload_ctx);
	}
	if (*c->o->stop && !c->stopping) {
		rc = begin_stop(c);
		if (rc < 0)
			return rc;
	}
	if (c->stopping) {
		if (!pool_in_flight(c->o->pool))
			return 1;
		if (now_s() > c->stop_deadline) {
			LOG(LOG_WARN, "stop_grace_expired",
			    LF_I("in_flight", pool_in_flight(c->o->pool)));
			c->sum->abandoned = pool_in_flight(c->o->pool);
			return 1;
		}
		return 0;
	}
	return c->o->drain && drained(c);
}


/* Returns 1 when the loop should end, 0 to go on, or a negative code.
 * Acks held back for a batch go out before the loop ends. */
static int should_end(struct consumer *c)
{
	int rc = should_end_now(c);

	if (rc == 1 && c->unacked) {
		c->unacked = 0;
		return flush_acks(c) < 0 ? -EIO : 1;
	}
	return rc;
}


static void summarize(struct consumer *c)
{
	struct rusage ru;

	c->sum->seconds = c->first_delivery && c->last_settle
				  ? c->last_settle - c->first_delivery
				  : 0;
	if (getrusage(RUSAGE_SELF, &ru) == 0)
		c->sum->peak_rss_kb = ru.ru_maxrss;
}


/* Forgets a connection that failed, without the closing handshake: a
 * dead peer would only make it wait for the RPC timeout. Unacked
 * deliveries go back to the broker, which redelivers them. */
static void session_drop(struct consumer *c)
{
	if (c->conn)
		amqp_destroy_connection(c->conn);
	c->conn = NULL;
	inbound_close(&c->in);
	metrics_set(c->o->metrics, MG_CONNECTED, 0);
	metrics_set(c->o->metrics, MG_CONSUMING, 0);
	c->retry_ready = 0;
	amqp_bytes_free(c->consumer_tag);
	c->consumer_tag = amqp_empty_bytes;
}


/* Opens a connection, declares, sets prefetch and consumes unless paused
 * or stopping. On failure the half-built connection is destroyed. */
static int session_open(struct consumer *c)
{
	char masked[512];
	int rc = setup(c);

	if (rc == 0) {
		ack_window_reset(&c->acks);
		c->generation++;
		if (c->generation == 1)
			rc = govern(c, 1); /* before the first delivery */
	}
	if (rc == 0 && !c->paused && !c->stopping)
		rc = channel_consume(c);
	if (rc < 0) {
		session_drop(c);
		return rc;
	}
	metrics_set(c->o->metrics, MG_CONNECTED, 1);
	config_mask_url(c->o->cfg->amqp_url, masked, sizeof masked);
	LOG(LOG_INFO, "consuming", LF_S("queue", c->names.queue),
	    LF_S("amqp", masked), LF_I("prefetch", c->prefetch),
	    LF_I("concurrency", c->o->cfg->concurrency),
	    LF_B("paused", c->paused), LF_B("drain", c->o->drain));
	return 0;
}


/* Sleeps up to seconds, settling (dropping) jobs that finish meanwhile;
 * returns early when a stop is asked for. */
static void backoff_sleep(struct consumer *c, double seconds)
{
	double until = now_s() + seconds;
	struct pollfd pfd = { .fd = pool_event_fd(c->o->pool),
			      .events = POLLIN };

	while (!*c->o->stop && now_s() < until) {
		metrics_tick(c->o->metrics);
		poll(&pfd, 1, TICK_MS);
		consumer_settle_list(c, pool_collect(c->o->pool));
	}
}


/* Connects until it works: capped exponential backoff with jitter, so a
 * fleet of workers does not reconnect in lockstep after a broker
 * restart. Returns 0, 1 when a stop was asked for, or -EIO when drain mode
 * has waited RECONNECT_GIVE_UP_S. */
static int reconnect(struct consumer *c)
{
	double delay = RECONNECT_MIN_S, started = now_s();
	int attempt = 0;

	for (;;) {
		int rc;

		if (*c->o->stop)
			return 1;
		rc = session_open(c);
		attempt++;
		if (rc == 0) {
			if (c->generation > 1) {
				c->sum->reconnects++;
				metrics_add(c->o->metrics, MC_RECONNECTS, 1);
				LOG(LOG_INFO, "broker_reconnected",
				    LF_I("attempts", attempt));
			}
			return 0;
		}
		LOG(LOG_WARN, "broker_connect_failed", LF_S("reason", c->err),
		    LF_I("attempt", attempt), LF_D("retry_in_s", delay),
		    LF_S("fix", "check AMQP_URL and that the broker is "
				"running"));
		if (c->o->drain && now_s() - started > RECONNECT_GIVE_UP_S)
			return -EIO;
		backoff_sleep(c, delay * (0.8 + 0.4 * drand48()));
		delay = delay * 2 > RECONNECT_MAX_S ? RECONNECT_MAX_S
						    : delay * 2;
	}
}


/* Runs the loop on the current connection until it ends (1), or the
 * connection fails (negative). */
static int run_session(struct consumer *c)
{
	int rc = 0;

	while (rc == 0) {
		metrics_tick(c->o->metrics);
		rc = should_end(c);
		if (rc == 0)
			rc = turn(c);
	}
	return rc;
}


int consumer_run(const struct consumer_opts *opts, struct consumer_summary *sum,
		 char *err, size_t errlen)
{
	struct consumer c = {
		.o = opts, .sum = sum, .err = err, .errlen = errlen
	};
	int rc;

	memset(sum, 0, sizeof *sum);
	ack_window_init(&c.acks);
	c.last_activity = now_s();
	srand48((long)now_s() ^ (long)getpid());
	for (;;) {
		rc = c.conn ? 0 : reconnect(&c);
		if (rc != 0)
			break;
		rc = run_session(&c);
		if (rc > 0 || c.stopping)
			break;
		LOG(LOG_WARN, "broker_connection_lost", LF_S("reason", err),
		    LF_I("in_flight", pool_in_flight(opts->pool)));
		session_drop(&c);
	}
	if (rc > 0)
		rc = 0;
	if (rc == 0)
		rc = consumer_settle_list(&c, pool_collect(opts->pool));
	summarize(&c);
	/* Closing the connection hands every unacked delivery back to the
	 * broker, which is what a job still running after the grace period
	 * needs. */
	if (c.conn)
		inbound_settle(&c.in);
	broker_close(c.conn);
	inbound_close(&c.in);
	metrics_set(opts->metrics, MG_CONNECTED, 0);
	metrics_set(opts->metrics, MG_CONSUMING, 0);
	amqp_bytes_free(c.consumer_tag);
	ack_window_free(&c.acks);
	return rc;
}
