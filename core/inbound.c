#include "inbound.h"

#include <amqp_framing.h>
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

/* rabbitmq-c reads 128 KiB at a time too; a body frame's payload past
 * what is buffered goes straight into the body whatever this is. */
#define INBOUND_CAP (128u << 10)
#define FRAME_HEAD  7
/* rabbitmq-c's heartbeat clocks are reset at most this often. */
#define TELL_EVERY_S 1.0


static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}


int inbound_open(struct inbound *in, amqp_connection_state_t conn)
{
	double now = now_s();

	memset(in, 0, sizeof *in);
	in->buf = malloc(INBOUND_CAP);
	if (!in->buf)
		return AMQP_STATUS_NO_MEMORY;
	in->cap = INBOUND_CAP;
	in->conn = conn;
	in->fd = amqp_get_sockfd(conn);
	in->heartbeat = amqp_get_heartbeat(conn);
	in->recv_at = in->told_at = in->beat_at = now;
	return AMQP_STATUS_OK;
}


void inbound_close(struct inbound *in)
{
	free(in->buf);
	memset(in, 0, sizeof *in);
	in->fd = -1;
}


static int library_has(const struct inbound *in)
{
	return amqp_frames_enqueued(in->conn) || amqp_data_in_buffer(in->conn);
}


/* True while frames read from the socket wait in this buffer. */
static int inbound_holding(const struct inbound *in)
{
	return in->off < in->lim;
}


int inbound_buffered(const struct inbound *in)
{
	return inbound_holding(in) || library_has(in);
}


/* Resets rabbitmq-c's heartbeat clocks after bytes came, between frames
 * only: amqp_tune_connection() aborts the process in the middle of one.
 * Without it, rabbitmq-c would take the broker for silent since the
 * last time it read the socket itself, and fail its next RPC. */
static int tell_library(struct inbound *in)
{
	double now;

	if (!in->fresh || in->mid || in->lending || library_has(in))
		return AMQP_STATUS_OK;
	now = now_s();
	if (now - in->told_at < TELL_EVERY_S)
		return AMQP_STATUS_OK;
	in->told_at = now;
	in->fresh = 0;
	return amqp_tune_connection(in->conn, amqp_get_channel_max(in->conn),
				    amqp_get_frame_max(in->conn),
				    amqp_get_heartbeat(in->conn));
}


static void got_bytes(struct inbound *in)
{
	in->recv_at = now_s();
	in->fresh = 1;
}


/* Waits until the socket is readable or timeout_s has passed. A broker
 * silent for two heartbeat intervals ends the wait sooner: a connection
 * whose far end froze mid-frame must not hold the loop for timeout_s. */
static int readable(struct inbound *in, double timeout_s)
{
	struct pollfd p = { .fd = in->fd, .events = POLLIN };
	double silent = in->heartbeat > 0
				? in->recv_at + 2.0 * in->heartbeat - now_s()
				: timeout_s;
	double wait = silent < timeout_s ? silent : timeout_s;
	int ms = wait > 0 ? (int)(wait * 1000.0) + 1 : 0;
	int rc;

	do
		rc = poll(&p, 1, ms);
	while (rc < 0 && errno == EINTR);
	if (rc < 0)
		return AMQP_STATUS_SOCKET_ERROR;
	if (rc)
		return AMQP_STATUS_OK;
	return silent < timeout_s ? AMQP_STATUS_HEARTBEAT_TIMEOUT
				  : AMQP_STATUS_TIMEOUT;
}


/* One read into iov, waiting up to timeout_s for bytes. */
static int read_some(struct inbound *in, struct iovec *iov, int niov,
		     double timeout_s, size_t *n)
{
	struct msghdr m = { .msg_iov = iov, .msg_iovlen = (size_t)niov };

	for (;;) {
		ssize_t r = recvmsg(in->fd, &m, MSG_DONTWAIT);
		int rc;

		if (r > 0) {
			*n = (size_t)r;
			got_bytes(in);
			return AMQP_STATUS_OK;
		}
		if (r == 0)
			return AMQP_STATUS_CONNECTION_CLOSED;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return AMQP_STATUS_SOCKET_ERROR;
		rc = readable(in, timeout_s);
		if (rc != AMQP_STATUS_OK)
			return rc;
	}
}


/* Reads until at least want bytes are buffered, moving what is left to
 * the front first when it would not fit. */
static int need(struct inbound *in, size_t want, double timeout_s)
{
	while (in->lim - in->off < want) {
		struct iovec iov;
		size_t n;
		int rc;

		if (in->off == in->lim) {
			in->off = in->lim = 0;
		} else if (in->cap - in->lim < want - (in->lim - in->off)) {
			memmove(in->buf, in->buf + in->off, in->lim - in->off);
			in->lim -= in->off;
			in->off = 0;
		}
		iov = (struct iovec){ in->buf + in->lim, in->cap - in->lim };
		rc = read_some(in, &iov, 1, timeout_s, &n);
		if (rc != AMQP_STATUS_OK)
			return rc;
		in->lim += n;
	}
	return AMQP_STATUS_OK;
}


/* Hands rabbitmq-c's decoder the buffered bytes, up to one frame. */
static int feed(struct inbound *in, amqp_frame_t *f)
{
	amqp_bytes_t b = { in->lim - in->off, in->buf + in->off };
	int n;

	f->frame_type = 0;
	n = amqp_handle_input(in->conn, b, f);
	if (n < 0)
		return n;
	in->off += (size_t)n;
	if (in->off == in->lim)
		in->off = in->lim = 0;
	in->mid = f->frame_type == 0;
	return AMQP_STATUS_OK;
}


void inbound_settle(struct inbound *in)
{
	amqp_frame_t f;

	while (inbound_holding(in))
		if (feed(in, &f) != AMQP_STATUS_OK)
			break;
	in->lending = 1;
}


/* A frame read by rabbitmq-c itself, which keeps its own clocks. */
static int from_library(struct inbound *in, amqp_frame_t *f, double timeout_s)
{
	/* A caller's deadline may have just passed; rabbitmq-c refuses a
	 * negative wait as an invalid parameter, not as a timeout. */
	double t = timeout_s > 0 ? timeout_s : 0;
	struct timeval tv = { (time_t)t, (suseconds_t)((t - (time_t)t) * 1e6) };
	int rc = amqp_simple_wait_frame_noblock(in->conn, f, &tv);

	if (rc != AMQP_STATUS_OK) {
		/* It may have read part of a frame before the wait ran
		 * out; the next complete frame settles it. */
		in->mid = 1;
		return rc;
	}
	in->mid = 0;
	in->fresh = 0;
	in->recv_at = in->told_at = now_s();
	return AMQP_STATUS_OK;
}


int inbound_frame(struct inbound *in, amqp_frame_t *f, double timeout_s)
{
	for (;;) {
		int rc;

		if (!library_has(in) && !inbound_holding(in) && !in->lending) {
			rc = need(in, 1, timeout_s);
			if (rc != AMQP_STATUS_OK)
				return rc;
			continue;
		}
		if (inbound_holding(in) && !library_has(in))
			rc = feed(in, f);
		else
			rc = from_library(in, f, timeout_s);
		if (rc != AMQP_STATUS_OK)
			return rc;
		if (f->frame_type == 0 || f->frame_type == AMQP_FRAME_HEARTBEAT)
			continue;
		return tell_library(in);
	}
}


/* One body frame through rabbitmq-c, for when it holds part of it. */
static int body_frame_via_library(struct inbound *in, char *dst, uint64_t size,
				  uint64_t *got, double timeout_s)
{
	amqp_frame_t f;
	int rc = inbound_frame(in, &f, timeout_s);

	if (rc != AMQP_STATUS_OK)
		return rc;
	if (f.frame_type != AMQP_FRAME_BODY ||
	    f.payload.body_fragment.len > size - *got)
		return AMQP_STATUS_BAD_AMQP_DATA;
	if (dst)
		memcpy(dst + *got, f.payload.body_fragment.bytes,
		       f.payload.body_fragment.len);
	*got += f.payload.body_fragment.len;
	if (!amqp_frames_enqueued(in->conn))
		amqp_maybe_release_buffers_on_channel(in->conn, f.channel);
	return AMQP_STATUS_OK;
}


/* Reads left payload bytes of the current frame, into dst (or nowhere)
 * and what follows them into the buffer, which is empty here: only the
 * frame's end and the next frame's head while more of the body follows,
 * so that the next payload too lands in dst without a copy. */
static int payload_rest(struct inbound *in, char *dst, uint64_t left, int more,
			double timeout_s)
{
	while (left) {
		struct iovec iov[2];
		int niov = 0;
		size_t n, used;
		int rc;

		in->off = in->lim = 0;
		if (dst)
			iov[niov++] = (struct iovec){ dst, (size_t)left };
		iov[niov++] =
			(struct iovec){ in->buf, dst && more ? 1 + FRAME_HEAD
							     : in->cap };
		rc = read_some(in, iov, niov, timeout_s, &n);
		if (rc != AMQP_STATUS_OK)
			return rc;
		used = n < left ? n : (size_t)left;
		left -= used;
		if (dst) {
			dst += used;
			in->lim = n - used;
		} else {
			in->off = used;
			in->lim = n;
		}
	}
	return AMQP_STATUS_OK;
}


static uint32_t be32(const char *p)
{
	const unsigned char *u = (const unsigned char *)p;

	return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 |
	       (uint32_t)u[2] << 8 | (uint32_t)u[3];
}


int inbound_body(struct inbound *in, char *dst, uint64_t size, double timeout_s)
{
	uint64_t got = 0;

	while (got < size) {
		uint64_t len, take;
		int rc;

		if (library_has(in) || in->mid || in->lending) {
			rc = body_frame_via_library(in, dst, size, &got,
						    timeout_s);
			if (rc != AMQP_STATUS_OK)
				return rc;
			continue;
		}
		rc = need(in, FRAME_HEAD, timeout_s);
		if (rc != AMQP_STATUS_OK)
			return rc;
		if ((unsigned char)in->buf[in->off] != AMQP_FRAME_BODY) {
			/* A heartbeat, or a frame that ends the read. */
			rc = body_frame_via_library(in, dst, size, &got,
						    timeout_s);
			if (rc != AMQP_STATUS_OK)
				return rc;
			continue;
		}
		len = be32(in->buf + in->off + 3);
		if (len > size - got)
			return AMQP_STATUS_BAD_AMQP_DATA;
		in->off += FRAME_HEAD;
		take = in->lim - in->off < len ? in->lim - in->off : len;
		if (dst)
			memcpy(dst + got, in->buf + in->off, (size_t)take);
		in->off += (size_t)take;
		rc = payload_rest(in, dst ? dst + got + take : NULL, len - take,
				  got + len < size, timeout_s);
		if (rc != AMQP_STATUS_OK)
			return rc;
		got += len;
		rc = need(in, 1, timeout_s);
		if (rc != AMQP_STATUS_OK)
			return rc;
		if ((unsigned char)in->buf[in->off] != AMQP_FRAME_END)
			return AMQP_STATUS_BAD_AMQP_DATA;
		in->off++;
		if (in->off == in->lim)
			in->off = in->lim = 0;
		rc = tell_library(in);
		if (rc != AMQP_STATUS_OK)
			return rc;
	}
	return AMQP_STATUS_OK;
}


int inbound_tick(struct inbound *in)
{
	amqp_frame_t beat = { .frame_type = AMQP_FRAME_HEARTBEAT };
	double now;
	int rc;

	if (in->heartbeat <= 0)
		return AMQP_STATUS_OK;
	now = now_s();
	if (!in->lending && now - in->recv_at > 2.0 * in->heartbeat)
		return AMQP_STATUS_HEARTBEAT_TIMEOUT;
	if (now - in->beat_at < in->heartbeat / 2.0)
		return AMQP_STATUS_OK;
	in->beat_at = now;
	rc = amqp_send_frame(in->conn, &beat);
	if (rc != AMQP_STATUS_OK)
		return rc;
	return tell_library(in);
}
