/*
 * The consumer's AMQP side, on the loop thread: frames read through the
 * loop's own reader (inbound.h), deliveries read whole into bodies and
 * queued for the pool, the RPCs of the consuming channel and of the
 * retry channel, whose replies are read here too, so rabbitmq-c never
 * reads the socket once consuming has begun.
 */
#include "consumer_int.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "body_buf.h"
#include "gate.h"
#include "metrics.h"
#include "pool.h"

/* Header and body frames follow a delivery at once; waiting longer than
 * this for one means the connection is gone. */
#define FRAME_WAIT_S 30


static int on_method(struct consumer *c, const amqp_frame_t *f);


/* Waits up to timeout_s for the next frame. Returns 0, -EAGAIN on
 * timeout, or -EIO with the reason in c->err. */
static int wait_frame(struct consumer *c, amqp_frame_t *f, double timeout_s)
{
	int rc = inbound_frame(&c->in, f, timeout_s);

	if (rc == AMQP_STATUS_TIMEOUT)
		return -EAGAIN;
	if (rc != AMQP_STATUS_OK)
		return status_error(c, rc, "failed to read from the broker");
	c->last_activity = now_s();
	return 0;
}


static void copy_bytes(char *dst, size_t cap, amqp_bytes_t b)
{
	size_t n = b.len < cap - 1 ? b.len : cap - 1;

	memcpy(dst, b.bytes, n);
	dst[n] = '\0';
}


/* Reads a body of size bytes into dst, or past it when dst is NULL. */
static int read_body(struct consumer *c, uint64_t size, char *dst)
{
	int rc = inbound_body(&c->in, dst, size, FRAME_WAIT_S);

	if (rc == AMQP_STATUS_BAD_AMQP_DATA) {
		snprintf(c->err, c->errlen,
			 "failed to read a message body: a frame other than "
			 "its body came");
		return -EIO;
	}
	if (rc != AMQP_STATUS_OK)
		return status_error(c, rc, "failed to read a message body");
	c->last_activity = now_s();
	return 0;
}


/* Reads the content header that follows a delivery into job. */
static int read_header(struct consumer *c, struct job *job, uint64_t *size)
{
	amqp_basic_properties_t *p;
	amqp_frame_t f;
	int rc = wait_frame(c, &f, FRAME_WAIT_S);

	if (rc == -EAGAIN)
		return status_error(c, AMQP_STATUS_TIMEOUT,
				    "failed to read a content header");
	if (rc < 0)
		return rc;
	if (f.frame_type != AMQP_FRAME_HEADER) {
		snprintf(c->err, c->errlen,
			 "failed to read a content header: "
			 "unexpected frame type %u",
			 f.frame_type);
		return -EIO;
	}
	*size = f.payload.properties.body_size;
	p = f.payload.properties.decoded;
	job->attempts = broker_header_int(p, BROKER_ATTEMPTS_HEADER, 0);
	if (p->_flags & AMQP_BASIC_MESSAGE_ID_FLAG)
		copy_bytes(job->message_id, sizeof job->message_id,
			   p->message_id);
	else
		snprintf(job->message_id, sizeof job->message_id, "-");
	if (p->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG)
		copy_bytes(job->content_type, sizeof job->content_type,
			   p->content_type);
	return 0;
}


/* Settles a delivery the loop refuses itself (too large, or arriving
 * during shutdown) without a worker. */
static int refuse(struct consumer *c, struct job *job, enum outcome o,
		  uint64_t size)
{
	job->outcome = o;
	job->body_len = (size_t)size;
	if (o == OUTCOME_SIZE_LIMIT)
		snprintf(job->reason, sizeof job->reason,
			 "size_limit: body_size=%llu over max_message_bytes="
			 "%llu",
			 (unsigned long long)size,
			 (unsigned long long)c->o->limits->max_message_bytes);
	else
		snprintf(job->reason, sizeof job->reason, "worker stopping");
	return consumer_settle_list(c, job);
}


static int on_deliver(struct consumer *c, const amqp_basic_deliver_t *d)
{
	struct job *job = calloc(1, sizeof *job);
	uint64_t size = 0;
	int rc;

	if (!job)
		return -ENOMEM;
	job->delivery_tag = d->delivery_tag;
	job->generation = c->generation;
	job->redelivered = d->redelivered;
	if (ack_window_open(&c->acks, d->delivery_tag) < 0) {
		free(job);
		return -ENOMEM;
	}
	if (!c->first_delivery)
		c->first_delivery = now_s();
	rc = read_header(c, job, &size);
	if (rc < 0)
		goto fail;
	c->sum->bytes_in += size;
	metrics_add(c->o->metrics, MC_BYTES_IN, size);

	if (gate_body_size(size, c->o->limits) != OUTCOME_OK || c->stopping) {
		rc = read_body(c, size, NULL);
		if (rc < 0)
			goto fail;
		return refuse(c, job,
			      c->stopping ? OUTCOME_SHUTDOWN
					  : OUTCOME_SIZE_LIMIT,
			      size);
	}
	job->body = body_buf_get((size_t)size);
	if (!job->body) {
		rc = -ENOMEM;
		goto fail;
	}
	job->body_len = (size_t)size;
	rc = read_body(c, size, job->body);
	if (rc < 0)
		goto fail;
	amqp_maybe_release_buffers_on_channel(c->conn, BROKER_CHANNEL);
	job->next = NULL;
	if (c->pending_tail)
		c->pending_tail->next = job;
	else
		c->pending = job;
	c->pending_tail = job;
	c->npending++;
	c->pending_bytes += job->body_len;
	return 0;
fail:
	job_free(job);
	return rc;
}


static int on_method(struct consumer *c, const amqp_frame_t *f)
{
	switch (f->payload.method.id) {
	case AMQP_BASIC_DELIVER_METHOD:
		return on_deliver(c, f->payload.method.decoded);
	case AMQP_BASIC_CANCEL_METHOD:
		snprintf(c->err, c->errlen,
			 "the broker cancelled the consumer "
			 "(queue %s deleted?)",
			 c->names.queue);
		return -EIO;
	case AMQP_CHANNEL_CLOSE_METHOD:
	case AMQP_CONNECTION_CLOSE_METHOD: {
		amqp_rpc_reply_t r = { .reply_type =
					       AMQP_RESPONSE_SERVER_EXCEPTION,
				       .reply = f->payload.method };

		snprintf(c->err, c->errlen, "broker closed the connection");
		return broker_reply_error(r, "consuming", c->err, c->errlen);
	}
	default:
		return 0;
	}
}


/* Sleeps until the socket or the pool's eventfd is readable, or a tick
 * passes, then reads a frame if one is complete. Returns as wait_frame. */
static int next_frame(struct consumer *c, amqp_frame_t *f)
{
	struct pollfd pfd[2] = {
		{ .fd = amqp_get_sockfd(c->conn), .events = POLLIN },
		{ .fd = pool_event_fd(c->o->pool), .events = POLLIN },
	};

	if (!inbound_buffered(&c->in)) {
		if (poll(pfd, 2, TICK_MS) < 0 && errno != EINTR) {
			snprintf(c->err, c->errlen, "failed to poll: %s",
				 strerror(errno));
			return -EIO;
		}
	}
	return wait_frame(c, f, 0);
}


/* The broker closed channel ch (not the consuming one) over what the
 * last request asked: the reason goes to c->err, the close is confirmed
 * so the connection lives on. Returns -EPROTO, or -EIO when the
 * confirmation could not be sent. */
static int closed_by_broker(struct consumer *c, amqp_channel_t ch,
			    amqp_method_t *close, const char *what)
{
	amqp_rpc_reply_t r = { .reply_type = AMQP_RESPONSE_SERVER_EXCEPTION,
			       .reply = *close };
	amqp_channel_close_ok_t ok = { 0 };
	int rc;

	broker_reply_error(r, what, c->err, c->errlen);
	rc = amqp_send_method(c->conn, ch, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
	return rc == AMQP_STATUS_OK ? -EPROTO : -EIO;
}


/* An RPC on channel ch whose reply the loop reads itself: had
 * rabbitmq-c read it, deliveries streaming behind the reply would stay in
 * rabbitmq-c's buffer, and its copies, for as long as they kept coming.
 * Deliveries that arrive first are handled as usual. The reply lives in
 * rabbitmq-c's channel pool until the next frame is read. */
int channel_rpc(struct consumer *c, amqp_channel_t ch, amqp_method_number_t id,
		void *req, amqp_method_number_t want, amqp_method_t *reply,
		const char *what)
{
	double deadline = now_s() + BROKER_RPC_TIMEOUT_S;
	int rc = amqp_send_method(c->conn, ch, id, req);

	if (rc != AMQP_STATUS_OK)
		return status_error(c, rc, what);
	for (;;) {
		amqp_frame_t f;

		rc = wait_frame(c, &f, deadline - now_s());
		if (rc == -EAGAIN || (rc == 0 && now_s() > deadline))
			return status_error(c, AMQP_STATUS_TIMEOUT, what);
		if (rc < 0)
			return rc;
		if (f.frame_type != AMQP_FRAME_METHOD) {
			snprintf(c->err, c->errlen,
				 "%s: unexpected frame type %u", what,
				 f.frame_type);
			return -EIO;
		}
		if (f.channel == ch && f.payload.method.id == want) {
			*reply = f.payload.method;
			channel_submit(c);
			return 0;
		}
		if (f.channel == ch && ch != BROKER_CHANNEL &&
		    f.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD)
			return closed_by_broker(c, ch, &f.payload.method, what);
		rc = on_method(c, &f);
		if (rc < 0)
			return rc;
	}
}


/* Opens the retry channel in transaction mode, once per connection. */
static int retry_channel(struct consumer *c)
{
	amqp_channel_open_t open = { 0 };
	amqp_tx_select_t select = { 0 };
	amqp_method_t reply;
	int rc;

	if (c->retry_ready)
		return 0;
	rc = channel_rpc(c, BROKER_RETRY_CHANNEL, AMQP_CHANNEL_OPEN_METHOD,
			 &open, AMQP_CHANNEL_OPEN_OK_METHOD, &reply,
			 "failed to open the retry channel");
	if (rc == 0)
		rc = channel_rpc(c, BROKER_RETRY_CHANNEL, AMQP_TX_SELECT_METHOD,
				 &select, AMQP_TX_SELECT_OK_METHOD, &reply,
				 "failed to select transactions");
	c->retry_ready = rc == 0;
	return rc;
}


/* Publishes a copy of a failed message to the retry queue for its delay
 * and commits it, all through the loop's reader. Returns 0, -EPROTO when
 * the broker refused it and closed the retry channel, or -EIO. */
int channel_publish_retry(struct consumer *c, const struct broker_retry *r)
{
	struct broker_retry_queue q;
	amqp_tx_commit_t commit = { 0 };
	amqp_method_t reply;
	int rc = retry_channel(c);

	broker_retry_declaration(&c->names, r->delay_ms, &q);
	if (rc == 0)
		rc = channel_rpc(c, BROKER_RETRY_CHANNEL,
				 AMQP_QUEUE_DECLARE_METHOD, &q.declare,
				 AMQP_QUEUE_DECLARE_OK_METHOD, &reply,
				 "failed to declare a retry queue");
	if (rc == 0)
		rc = broker_send_retry(c->conn, &q, r, c->err, c->errlen);
	if (rc == 0)
		rc = channel_rpc(c, BROKER_RETRY_CHANNEL, AMQP_TX_COMMIT_METHOD,
				 &commit, AMQP_TX_COMMIT_OK_METHOD, &reply,
				 "failed to commit a retry");
	if (rc == -EPROTO)
		c->retry_ready = 0; /* the broker closed it */
	return rc;
}


int channel_set_prefetch(struct consumer *c, int prefetch)
{
	amqp_basic_qos_t req = { .prefetch_count = (uint16_t)prefetch };
	amqp_method_t reply;
	int rc;

	if (!c->conn) {
		c->prefetch = prefetch; /* applied at the next connection */
		return 0;
	}
	rc = channel_rpc(c, BROKER_CHANNEL, AMQP_BASIC_QOS_METHOD, &req,
			 AMQP_BASIC_QOS_OK_METHOD, &reply,
			 "failed to set prefetch");
	if (rc < 0)
		return rc;
	c->prefetch = prefetch;
	metrics_set(c->o->metrics, MG_PREFETCH, prefetch);
	return 0;
}


int channel_consume(struct consumer *c)
{
	amqp_basic_consume_t req = {
		.queue = amqp_cstring_bytes(c->names.queue),
		.arguments = amqp_empty_table,
	};
	amqp_basic_consume_ok_t *ok;
	amqp_method_t reply;
	int rc;

	if (!c->conn)
		return 0;
	rc = channel_rpc(c, BROKER_CHANNEL, AMQP_BASIC_CONSUME_METHOD, &req,
			 AMQP_BASIC_CONSUME_OK_METHOD, &reply,
			 "failed to start consuming");
	if (rc < 0)
		return rc;
	ok = reply.decoded;
	c->consumer_tag = amqp_bytes_malloc_dup(ok->consumer_tag);
	metrics_set(c->o->metrics, MG_CONSUMING, 1);
	return 0;
}


/* Cancels the consumer; deliveries already sent still arrive and stay
 * ours until settled. Heartbeats go on: the connection stays open. */
int channel_cancel(struct consumer *c)
{
	amqp_basic_cancel_t req = { 0 };
	amqp_method_t reply;
	int rc;

	if (!c->consumer_tag.bytes)
		return 0;
	metrics_set(c->o->metrics, MG_CONSUMING, 0);
	if (!c->conn) {
		amqp_bytes_free(c->consumer_tag);
		c->consumer_tag = amqp_empty_bytes;
		return 0;
	}
	req.consumer_tag = c->consumer_tag;
	rc = channel_rpc(c, BROKER_CHANNEL, AMQP_BASIC_CANCEL_METHOD, &req,
			 AMQP_BASIC_CANCEL_OK_METHOD, &reply,
			 "failed to cancel the consumer");
	amqp_bytes_free(c->consumer_tag);
	c->consumer_tag = amqp_empty_bytes;
	if (rc < 0)
		return rc;
	return 0;
}


int channel_buffered(struct consumer *c)
{
	return inbound_buffered(&c->in);
}


/* Reads one frame and acts on it. Returns 0, or as wait_frame. */
int channel_read_one(struct consumer *c)
{
	amqp_frame_t f;
	int rc = next_frame(c, &f);

	if (rc == -EAGAIN)
		return 0;
	if (rc < 0)
		return rc;
	if (f.frame_type == AMQP_FRAME_METHOD)
		rc = on_method(c, &f);
	if (!amqp_frames_enqueued(c->conn))
		amqp_maybe_release_buffers(c->conn);
	return rc;
}


void channel_submit(struct consumer *c)
{
	if (!c->npending)
		return;
	pool_submit(c->o->pool, c->pending, c->npending);
	c->pending = c->pending_tail = NULL;
	c->npending = 0;
	c->pending_bytes = 0;
}
