#include "body_buf.h"

#include <pthread.h>
#include <stdalign.h>
#include <stdlib.h>

/* Bodies below this come from malloc's bins without page faults. */
#define LARGE (128u << 10)
/* Sizes round up to this, so bodies of similar length share buffers. */
#define GRAIN	 (64u << 10)
#define KEPT_MAX 8

/* Sits before the bytes handed out; the size keeps the bytes aligned. */
struct head {
	alignas(16) size_t cap; /* usable bytes after the head; 0: small */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct head *kept[KEPT_MAX];
static int nkept;
static size_t kept_bytes;


static char *bytes_of(struct head *h)
{
	return (char *)(h + 1);
}


static struct head *head_of(char *body)
{
	return (struct head *)body - 1;
}


/* The smallest kept buffer that fits, taken out of the list. */
static struct head *take(size_t need)
{
	struct head *best = NULL;
	int at = -1;

	pthread_mutex_lock(&lock);
	for (int i = 0; i < nkept; i++) {
		if (kept[i]->cap >= need &&
		    (!best || kept[i]->cap < best->cap)) {
			best = kept[i];
			at = i;
		}
	}
	if (best) {
		kept[at] = kept[--nkept];
		kept_bytes -= best->cap;
	}
	pthread_mutex_unlock(&lock);
	return best;
}


char *body_buf_get(size_t len)
{
	size_t need = len + 1;
	struct head *h;

	if (need < len)
		return NULL;
	if (need < LARGE) {
		h = malloc(sizeof *h + need);
		if (!h)
			return NULL;
		h->cap = 0;
		return bytes_of(h);
	}
	h = take(need);
	if (!h) {
		size_t cap = (need + GRAIN - 1) / GRAIN * GRAIN;

		h = malloc(sizeof *h + cap);
		if (!h)
			return NULL;
		h->cap = cap;
	}
	return bytes_of(h);
}


void body_buf_put(char *body)
{
	struct head *h;

	if (!body)
		return;
	h = head_of(body);
	if (h->cap) {
		pthread_mutex_lock(&lock);
		if (nkept < KEPT_MAX &&
		    kept_bytes + h->cap <= BODY_BUF_KEEP_BYTES) {
			kept[nkept++] = h;
			kept_bytes += h->cap;
			h = NULL;
		}
		pthread_mutex_unlock(&lock);
	}
	free(h);
}


size_t body_buf_kept(void)
{
	size_t n;

	pthread_mutex_lock(&lock);
	n = kept_bytes;
	pthread_mutex_unlock(&lock);
	return n;
}


void body_buf_flush(void)
{
	struct head *out[KEPT_MAX];
	int n;

	pthread_mutex_lock(&lock);
	n = nkept;
	for (int i = 0; i < n; i++)
		out[i] = kept[i];
	nkept = 0;
	kept_bytes = 0;
	pthread_mutex_unlock(&lock);
	for (int i = 0; i < n; i++)
		free(out[i]);
}
