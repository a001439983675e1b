#include "ledger.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* A large body is known by its length and its first and last 4 KiB:
 * hashing a whole 1 MiB body per job cost more than the job. Two bodies
 * alike at both ends and in length share a key, which at worst makes one
 * the other's bystander. */
#define HASH_EDGE 4096

/* Messages with a crash count; only those in flight at a crash are here,
 * so the list stays short and a linear search is enough. */
#define CRASHED_MAX 1024

struct crashed {
	char key[LEDGER_KEY_MAX];
	int count;
};

struct ledger {
	/* One slot per worker thread in a shared file mapping: starting and
	 * finishing a job are stores to memory, not system calls, and a
	 * process crash leaves the stores in the page cache, which is all a
	 * process crash needs. */
	char *slots;
	int nslots;
	/* Guards counts; ncrashed is fixed after ledger_open(), so the usual
	 * case, no crash at all, never takes the lock. */
	pthread_mutex_t lock;
	char path[1024];    /* <queue>.ledger: carried crash counts */
	char in_path[1040]; /* <queue>.inflight: the slots */
	int ncrashed;
	struct crashed crashed[CRASHED_MAX];
};


/* Hashes eight bytes per step (a multiply and a rotate per word): the
 * key is computed for every job without a message id, on a worker. Not
 * for security, only to tell bodies apart. */
static uint64_t hash_body(const char *body, size_t len)
{
	uint64_t h = 0x9e3779b97f4a7c15ULL ^ len;
	size_t i = 0;

	for (; i + 8 <= len; i += 8) {
		uint64_t w;

		memcpy(&w, body + i, 8);
		h = (h ^ w) * 0xff51afd7ed558ccdULL;
		h = h << 31 | h >> 33;
	}
	for (; i < len; i++)
		h = (h ^ (unsigned char)body[i]) * 0x100000001b3ULL;
	return h ^ h >> 29;
}


void ledger_key(const char *message_id, const char *body, size_t len, char *key,
		size_t keylen)
{
	if (message_id && *message_id && strcmp(message_id, "-") != 0) {
		/* Every job with an id comes here; snprintf's format parsing
		 * was a visible share of a no-op job. */
		size_t n = strlen(message_id);

		if (keylen < 4)
			return;
		if (n > keylen - 4)
			n = keylen - 4;
		memcpy(key, "id:", 3);
		memcpy(key + 3, message_id, n);
		key[3 + n] = '\0';
		/* The carried counts are lines of text and the id is the
		 * publisher's: a newline in it would split the line, losing
		 * its own count and forging another message's. */
		for (char *p = key + 3; *p; p++)
			if ((unsigned char)*p < 0x20 || *p == 0x7f)
				*p = '?';
	} else if (len <= 2 * HASH_EDGE)
		snprintf(key, keylen, "body:%016llx:%zu",
			 (unsigned long long)hash_body(body, len), len);
	else
		snprintf(key, keylen, "body:%016llx%016llx:%zu",
			 (unsigned long long)hash_body(body, HASH_EDGE),
			 (unsigned long long)hash_body(body + len - HASH_EDGE,
						       HASH_EDGE),
			 len);
}


static struct crashed *find(const struct ledger *l, const char *key)
{
	for (int i = 0; i < l->ncrashed; i++)
		if (!strcmp(l->crashed[i].key, key))
			return (struct crashed *)&l->crashed[i];
	return NULL;
}


static void add_crash(struct ledger *l, const char *key, int n)
{
	struct crashed *c;

	/* Counts come from a file that may be damaged: a count that is not
	 * positive means nothing, and one near INT_MAX must not wrap to a
	 * negative one that never reaches the quarantine. */
	if (n <= 0)
		return;
	c = find(l, key);
	if (!c && l->ncrashed < CRASHED_MAX) {
		size_t len = strnlen(key, sizeof c->key - 1);

		c = &l->crashed[l->ncrashed++];
		/* A key longer than a slot's was cut when it was written. */
		memcpy(c->key, key, len);
		c->key[len] = '\0';
		c->count = 0;
	}
	if (c)
		c->count = c->count > INT_MAX - n ? INT_MAX : c->count + n;
}


/* Replays the previous log: "=count key" carries a count over, "+key"
 * and "-key" open and close a job. What is still open crashed. */
static int replay(struct ledger *l, FILE *f)
{
	char line[LEDGER_KEY_MAX + 16];
	struct ledger *open_set = calloc(1, sizeof *open_set);
	int counted = 0;

	if (!open_set)
		return 0;
	while (fgets(line, sizeof line, f)) {
		char *key = line + 1;
		int n = 0;

		line[strcspn(line, "\n")] = '\0';
		if (line[0] == '=' && sscanf(line, "=%d", &n) == 1 &&
		    (key = strchr(line, ' ')) != NULL)
			add_crash(l, key + 1, n);
		else if (line[0] == '+')
			add_crash(open_set, key, 1);
		else if (line[0] == '-' && find(open_set, key))
			find(open_set, key)->count = 0;
	}
	for (int i = 0; i < open_set->ncrashed; i++) {
		if (open_set->crashed[i].count > 0) {
			add_crash(l, open_set->crashed[i].key, 1);
			counted++;
		}
	}
	free(open_set);
	return counted;
}


/* Starts a new log holding only the carried-over counts. */
static int rewrite(struct ledger *l)
{
	char tmp[1040];
	FILE *f;

	snprintf(tmp, sizeof tmp, "%s.tmp", l->path);
	f = fopen(tmp, "w");
	if (!f)
		return -errno;
	for (int i = 0; i < l->ncrashed; i++)
		if (l->crashed[i].count > 0)
			fprintf(f, "=%d %s\n", l->crashed[i].count,
				l->crashed[i].key);
	if (fclose(f) != 0 || rename(tmp, l->path) != 0)
		return -errno;
	return 0;
}


/* Counts the keys a crashed run left in its slots. A slot is in use
 * when its first byte is set and it holds a terminated key. */
static int replay_slots(struct ledger *l)
{
	char slot[LEDGER_KEY_MAX];
	int counted = 0;
	FILE *f = fopen(l->in_path, "r");

	if (!f)
		return 0;
	while (fread(slot, 1, sizeof slot, f) == sizeof slot) {
		if (slot[0] && memchr(slot, '\0', sizeof slot)) {
			add_crash(l, slot, 1);
			counted++;
		}
	}
	fclose(f);
	return counted;
}


/* A fresh, zeroed slot file mapped for the workers. */
static int map_slots(struct ledger *l, int nslots)
{
	size_t len = (size_t)nslots * LEDGER_KEY_MAX;
	int fd = open(l->in_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	int rc = 0;

	if (fd < 0)
		return -errno;
	if (ftruncate(fd, 0) < 0 || ftruncate(fd, (off_t)len) < 0) {
		rc = -errno;
	} else {
		l->slots = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED,
				fd, 0);
		if (l->slots == MAP_FAILED) {
			l->slots = NULL;
			rc = -errno;
		}
	}
	close(fd);
	if (rc == 0)
		l->nslots = nslots;
	return rc;
}


int ledger_open(const char *dir, const char *queue, int nslots,
		struct ledger **out, int *counted, char *err, size_t errlen)
{
	struct ledger *l = calloc(1, sizeof *l);
	FILE *f;
	int rc;

	if (!l)
		return -ENOMEM;
	pthread_mutex_init(&l->lock, NULL);
	mkdir(dir, 0700);
	snprintf(l->path, sizeof l->path, "%s/%s.ledger", dir, queue);
	/* A queue name may hold '/' (AMQP allows it): kept out of the path,
	 * so the files stay in STATE_DIR. */
	for (size_t i = strlen(dir) + 1; i < strlen(l->path); i++)
		if (l->path[i] == '/')
			l->path[i] = '_';
	snprintf(l->in_path, sizeof l->in_path, "%.*s.inflight",
		 (int)(strlen(l->path) - strlen(".ledger")), l->path);
	f = fopen(l->path, "r");
	/* A ledger from a version that appended +key/-key lines replays
	 * the same way. */
	*counted = f ? replay(l, f) : 0;
	if (f)
		fclose(f);
	*counted += replay_slots(l);
	/* The counts are on disk before the slots that gave them are
	 * cleared, so a crash in between loses nothing. */
	rc = rewrite(l);
	if (rc == 0)
		rc = map_slots(l, nslots > 0 ? nslots : 1);
	if (rc < 0) {
		snprintf(err, errlen,
			 "cannot write the crash ledger %s (%s): "
			 "set STATE_DIR to a writable folder",
			 l->path, strerror(-rc));
		pthread_mutex_destroy(&l->lock);
		free(l);
		return rc;
	}
	*out = l;
	return 0;
}


int ledger_crashes(struct ledger *l, const char *key)
{
	const struct crashed *c;
	int n = 0;

	if (!l || l->ncrashed == 0)
		return 0;
	pthread_mutex_lock(&l->lock);
	c = find(l, key);
	if (c)
		n = c->count;
	pthread_mutex_unlock(&l->lock);
	return n;
}


void ledger_start(struct ledger *l, int slot, const char *key)
{
	char *p;
	size_t n;

	if (!l || slot < 0 || slot >= l->nslots)
		return;
	p = l->slots + (size_t)slot * LEDGER_KEY_MAX;
	n = strnlen(key, LEDGER_KEY_MAX - 1);
	if (n == 0)
		return;
	/* The first byte marks the slot in use, so it is stored last: a
	 * crash half-way leaves a slot that still reads as free. */
	memcpy(p + 1, key + 1, n - 1);
	p[n] = '\0';
	atomic_signal_fence(memory_order_release);
	*(volatile char *)p = key[0];
}


void ledger_finish(struct ledger *l, int slot)
{
	if (l && slot >= 0 && slot < l->nslots)
		*(volatile char *)(l->slots + (size_t)slot * LEDGER_KEY_MAX) =
			'\0';
}


void ledger_forget(struct ledger *l, const char *key)
{
	struct crashed *c;

	if (!l || l->ncrashed == 0)
		return;
	pthread_mutex_lock(&l->lock);
	c = find(l, key);
	if (c)
		c->count = 0;
	pthread_mutex_unlock(&l->lock);
}


void ledger_close(struct ledger *l)
{
	if (!l)
		return;
	rewrite(l);
	munmap(l->slots, (size_t)l->nslots * LEDGER_KEY_MAX);
	unlink(l->in_path);
	pthread_mutex_destroy(&l->lock);
	free(l);
}
