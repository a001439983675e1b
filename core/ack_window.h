#ifndef CORE_ACK_WINDOW_H
#define CORE_ACK_WINDOW_H

#include <stddef.h>
#include <stdint.h>

/*
 * Which finished deliveries can be acked with one `multiple` ack. The
 * broker numbers a channel's deliveries 1, 2, 3, ...; jobs finish out of
 * order. The window keeps one byte per tag from the oldest unsettled one
 * up, so a flush can ack the whole settled prefix in one frame and only
 * the deliveries beyond a still-running job one by one. Used by the loop
 * thread only.
 */

struct ack_window {
	uint64_t base;	      /* oldest tag still tracked */
	uint64_t next;	      /* tag expected next */
	size_t pending;	      /* tags waiting for an ack */
	unsigned char *state; /* ring of cap entries, base at start */
	size_t cap;
	size_t start;
};

/* An empty window expecting tag 1. */
void ack_window_init(struct ack_window *w);

/* Forgets everything and expects tag 1, as after a new channel. */
void ack_window_reset(struct ack_window *w);

/* Records delivery tag as unsettled. Tags must come in order; a tag that
 * skips ahead marks the skipped ones settled. Returns 0 or -ENOMEM. */
int ack_window_open(struct ack_window *w, uint64_t tag);

/* Records that tag was acked-to-be (ok != 0) or already rejected. */
void ack_window_settle(struct ack_window *w, uint64_t tag, int ok);

/* Computes the acks to send now: *upto is the tag to ack with multiple
 * (0: none), singles[0..n) the tags to ack one by one (beyond a running
 * job); returns n. At most max_singles are taken; the rest wait for the
 * next flush. Everything returned counts as sent. */
size_t ack_window_flush(struct ack_window *w, uint64_t *upto, uint64_t *singles,
			size_t max_singles);

void ack_window_free(struct ack_window *w);

#endif
