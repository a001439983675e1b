#ifndef CORE_CONSUMER_INT_H
#define CORE_CONSUMER_INT_H

/*
 * The inside of the consumer, shared by its two files and by nothing
 * else: consumer.c runs the loop (settling, acks, the governor, drain
 * mode, reconnects) and channel.c does the AMQP side of it (frames,
 * deliveries, RPCs, retries, consuming). Everything here is internal
 * to those two.
 */

#include <amqp.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "ack_window.h"
#include "broker.h"
#include "consumer.h"
#include "inbound.h"
#include "job.h"

/* The loop wakes at least this often to send heartbeats and to check for
 * a stop or an empty queue. */
#define TICK_MS 100
/* Reconnect backoff: from half a second, doubling, to half a minute. */
#define RECONNECT_MIN_S 0.5
#define RECONNECT_MAX_S 30.0
/* A drain run (batch, cron) gives up on a broker gone this long. */
#define RECONNECT_GIVE_UP_S 60.0
/* Distinct retry delays tracked for drain mode; failure.lua's backoff
 * uses five. */
#define RETRY_QUEUES_MAX 16
/* In drain mode, quiet this long with nothing in flight before asking the
 * broker whether the queue is empty. */
#define DRAIN_QUIET_S 0.3
#define GAUGE_EVERY_S 0.05
#define ACK_EVERY_S   0.01
/* Deliveries read before the pool gets them, when more are buffered, and
 * their bytes: large bodies gain nothing from waiting for company, and
 * must not pile up in the loop's hands. */
#define SUBMIT_MAX	 64
#define SUBMIT_MAX_BYTES (256u << 10)

struct consumer {
	const struct consumer_opts *o;
	amqp_connection_state_t conn;
	struct inbound in; /* the socket's reading side while conn is open */
	struct broker_names names;
	amqp_bytes_t consumer_tag;
	struct consumer_summary *sum;
	struct ack_window acks;
	unsigned generation; /* bumped at each new connection */
	int retry_ready;     /* the retry channel is open on conn */
	int backlog_over;    /* the backlog alert is raised */
	uint64_t retry_delays[RETRY_QUEUES_MAX]; /* retry queues used */
	int nretry;
	double first_delivery;
	double gauges_at; /* last copy of the pool gauges to metrics */
	/* Deliveries read in this turn, handed to the pool together. */
	struct job *pending;
	struct job *pending_tail;
	int npending;
	size_t pending_bytes;
	double last_settle;
	double last_activity;
	double stop_deadline;
	int stopping;
	int paused;
	int prefetch;
	int unacked;	 /* settled since the last flush of acks */
	double acked_at; /* when acks last went out */
	int db_open;	 /* pool connections at the last turn */
	char *err;
	size_t errlen;
};


static inline double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}


/* Puts what failed and rabbitmq-c's words for status in c->err. Returns
 * -EIO. */
static inline int status_error(struct consumer *c, int status, const char *what)
{
	snprintf(c->err, c->errlen, "%s: %s", what, amqp_error_string2(status));
	return -EIO;
}


/* consumer.c: acks or rejects each job of list (finished, or refused by
 * the channel unread), counts and logs its outcome, and frees it.
 * Returns 0 or negative when the connection failed. */
int consumer_settle_list(struct consumer *c, struct job *list);

/* channel.c. Each returns 0, or negative with the reason in c->err. */

/* Waits up to a tick for the socket (or the pool's eventfd), then reads
 * one frame and acts on it: a delivery is read whole and queued in
 * c->pending. */
int channel_read_one(struct consumer *c);

/* Hands the deliveries read this turn to the pool together. */
void channel_submit(struct consumer *c);

/* True while a frame may be complete without reading the socket. */
int channel_buffered(struct consumer *c);

/* Sends method id with req on channel ch and reads the reply want into
 * *reply, handling deliveries that come first. what names the request in
 * errors. -EPROTO when the broker closed ch (not the consuming channel)
 * instead; the connection lives on. */
int channel_rpc(struct consumer *c, amqp_channel_t ch, amqp_method_number_t id,
		void *req, amqp_method_number_t want, amqp_method_t *reply,
		const char *what);

/* Publishes a copy of a failed message to the retry queue for its delay
 * and commits it. -EPROTO when the broker refused it. */
int channel_publish_retry(struct consumer *c, const struct broker_retry *r);

/* Sets the prefetch (qos) now, or for the next connection. */
int channel_set_prefetch(struct consumer *c, int prefetch);

/* Starts consuming (basic.consume) and keeps the consumer tag. */
int channel_consume(struct consumer *c);

/* Cancels the consumer; deliveries already sent still arrive. */
int channel_cancel(struct consumer *c);

#endif
