#ifndef CORE_INBOUND_H
#define CORE_INBOUND_H

#include <amqp.h>
#include <stddef.h>
#include <stdint.h>

/*
 * The loop's reading side of a broker connection. rabbitmq-c copies
 * every frame out of its socket buffer into a frame of its own, and the
 * loop copied the body frames once more into the message body: on 1 MiB
 * bodies those two copies and the page faults of rabbitmq-c's 128 KiB
 * frame blocks were about half of the loop thread's profile samples.
 * Here the loop reads the socket into a buffer of its own, hands method
 * and header frames to rabbitmq-c's decoder (amqp_handle_input), and
 * reads body frames itself, straight into the body where they are not
 * yet received. The kernel's copy into the body then costs more than
 * its copy into a small buffer did (the body is cold), so the CPU per
 * 1 MiB body fell by about a sixth, not by half.
 *
 * The consumer reads the replies of its own RPCs through here too, on
 * the consuming channel and on the retry channel alike. rabbitmq-c reads
 * the socket itself only while the connection is set up (before the
 * first delivery can come) and after inbound_settle(), to close it;
 * frames it holds then are read through it first.
 *
 * rabbitmq-c's heartbeat clocks only move when it reads, so they are
 * reset here (amqp_tune_connection, between frames) after bytes came,
 * and heartbeats are sent from here too.
 */

struct inbound {
	amqp_connection_state_t conn;
	int fd;
	int heartbeat; /* seconds; 0: off */
	char *buf;
	size_t cap, off, lim;
	int mid;     /* rabbitmq-c holds the start of a frame it was fed */
	int lending; /* rabbitmq-c reads the socket: inbound_settle() ran */
	int fresh;   /* bytes came since rabbitmq-c's clocks were reset */
	double recv_at;
	double told_at;
	double beat_at;
};

/* Returns 0 or AMQP_STATUS_NO_MEMORY. */
int inbound_open(struct inbound *in, amqp_connection_state_t conn);

void inbound_close(struct inbound *in);

/* Before closing: gives rabbitmq-c the bytes still buffered here, their
 * frames unread, so the closing handshake reads from a frame's start. */
void inbound_settle(struct inbound *in);

/* The next frame, waiting up to timeout_s (0: only what has come).
 * Returns AMQP_STATUS_OK, AMQP_STATUS_TIMEOUT or another status. The
 * frame's memory is rabbitmq-c's, as from amqp_simple_wait_frame(). */
int inbound_frame(struct inbound *in, amqp_frame_t *f, double timeout_s);

/* Reads the body frames of a content of size bytes into dst, or past
 * them when dst is NULL, waiting up to timeout_s for each read. Returns
 * as inbound_frame; AMQP_STATUS_BAD_AMQP_DATA when another frame comes. */
int inbound_body(struct inbound *in, char *dst, uint64_t size,
		 double timeout_s);

/* True while a frame may be complete without reading the socket. */
int inbound_buffered(const struct inbound *in);

/* Heartbeats while the loop owns the socket: sends one when half the
 * interval has passed and reports a broker silent for two. Returns
 * AMQP_STATUS_OK, AMQP_STATUS_HEARTBEAT_TIMEOUT or a send status. */
int inbound_tick(struct inbound *in);

#endif
