#include "ack_window.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum { OPEN = 0, ACK_PENDING = 1, DONE = 2 };

#define INITIAL_CAP 64


void ack_window_init(struct ack_window *w)
{
	memset(w, 0, sizeof *w);
	w->base = w->next = 1;
}


void ack_window_reset(struct ack_window *w)
{
	w->base = w->next = 1;
	w->start = 0;
	w->pending = 0;
}


static unsigned char *slot(struct ack_window *w, uint64_t tag)
{
	return &w->state[(w->start + (size_t)(tag - w->base)) % w->cap];
}


/* Doubles the ring, laying the entries out from index 0 again. */
static int grow(struct ack_window *w)
{
	size_t cap = w->cap ? w->cap * 2 : INITIAL_CAP;
	unsigned char *s = calloc(cap, 1);
	size_t used = (size_t)(w->next - w->base);

	if (!s)
		return -ENOMEM;
	for (size_t i = 0; i < used; i++)
		s[i] = w->state[(w->start + i) % w->cap];
	free(w->state);
	w->state = s;
	w->cap = cap;
	w->start = 0;
	return 0;
}


int ack_window_open(struct ack_window *w, uint64_t tag)
{
	while (w->next <= tag) {
		if ((size_t)(w->next - w->base) >= w->cap && grow(w) < 0)
			return -ENOMEM;
		*slot(w, w->next) = w->next == tag ? OPEN : DONE;
		w->next++;
	}
	return 0;
}


void ack_window_settle(struct ack_window *w, uint64_t tag, int ok)
{
	if (tag < w->base || tag >= w->next || *slot(w, tag) != OPEN)
		return;
	*slot(w, tag) = ok ? ACK_PENDING : DONE;
	w->pending += ok != 0;
}


/* Drops settled entries from the front; returns the last tag dropped
 * that needs an ack, or 0. */
static uint64_t advance(struct ack_window *w)
{
	uint64_t upto = 0;

	while (w->base < w->next && *slot(w, w->base) != OPEN) {
		if (*slot(w, w->base) == ACK_PENDING) {
			upto = w->base;
			w->pending--;
		}
		w->base++;
		w->start = (w->start + 1) % w->cap;
	}
	return upto;
}


size_t ack_window_flush(struct ack_window *w, uint64_t *upto, uint64_t *singles,
			size_t max_singles)
{
	size_t n = 0;

	*upto = w->cap ? advance(w) : 0;
	/* The scan past a running job is skipped when nothing waits there,
	 * which is the common case: it would cost a pass over the window. */
	for (uint64_t t = w->base; w->pending && t < w->next && n < max_singles;
	     t++) {
		if (*slot(w, t) == ACK_PENDING) {
			*slot(w, t) = DONE;
			singles[n++] = t;
			w->pending--;
		}
	}
	return n;
}


void ack_window_free(struct ack_window *w)
{
	free(w->state);
	memset(w, 0, sizeof *w);
}
