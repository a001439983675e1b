#include "ledger.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
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
	int fd; /* the append-only log */
	/* Guards counts; ncrashed is fixed after ledger_open(), so the usual
	 * case, no crash at all, never takes the lock. */
	pthread_mutex_t lock;
	char path[1024];
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
	if (message_id && *message_id && strcmp(message_id, "-") != 0)
		snprintf(key, keylen, "id:%s", message_id);
	else if (len <= 2 * HASH_EDGE)
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
	struct crashed *c = find(l, key);

	if (!c && l->ncrashed < CRASHED_MAX) {
		c = &l->crashed[l->ncrashed++];
		snprintf(c->key, sizeof c->key, "%s", key);
		c->count = 0;
	}
	if (c)
		c->count += n;
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


int ledger_open(const char *dir, const char *queue, struct ledger **out,
		int *counted, char *err, size_t errlen)
{
	struct ledger *l = calloc(1, sizeof *l);
	FILE *f;
	int rc;

	if (!l)
		return -ENOMEM;
	pthread_mutex_init(&l->lock, NULL);
	mkdir(dir, 0700);
	snprintf(l->path, sizeof l->path, "%s/%s.ledger", dir, queue);
	f = fopen(l->path, "r");
	*counted = f ? replay(l, f) : 0;
	if (f)
		fclose(f);
	rc = rewrite(l);
	if (rc == 0) {
		l->fd = open(l->path, O_WRONLY | O_APPEND | O_CLOEXEC);
		rc = l->fd < 0 ? -errno : 0;
	}
	if (rc < 0) {
		snprintf(err, errlen,
			 "cannot write the crash ledger %s (%s): "
			 "set STATE_DIR to a writable folder",
			 l->path, strerror(-rc));
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


static void append(struct ledger *l, char mark, const char *key)
{
	char line[LEDGER_KEY_MAX + 4];
	int n = snprintf(line, sizeof line, "%c%s\n", mark, key);

	/* A lost record only weakens the quarantine; it never stops work. */
	if (write(l->fd, line, (size_t)n) < 0)
		return;
}


void ledger_start(struct ledger *l, const char *key)
{
	if (l)
		append(l, '+', key);
}


void ledger_finish(struct ledger *l, const char *key)
{
	if (l)
		append(l, '-', key);
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
	close(l->fd);
	rewrite(l);
	pthread_mutex_destroy(&l->lock);
	free(l);
}
