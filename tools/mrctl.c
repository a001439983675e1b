/*
 * mrctl: a small AMQP tool for moonrabbit's tests and demo. It publishes
 * bodies the way a real producer would (persistent, JSON content type,
 * mandatory, with publisher confirms), generates bodies of an exact size,
 * and inspects, empties and drains queues. Publishing always declares the
 * work queue through broker_declare(), so the queue mrctl fills has the
 * same dead-letter arguments the worker expects.
 *
 * Exit status: 0 on success, 1 when the broker, a file or stdout fails,
 * 2 for a usage error.
 */
#include "broker.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MRCTL_DEFAULT_URL   "amqp://guest:guest@127.0.0.1:21720/%2f"
#define MRCTL_DEFAULT_QUEUE "jobs"
/* Matches max_message_size in the broker that tools/services.sh starts. */
#define MRCTL_BODY_MAX ((size_t)128 << 20)
/* gen has no broker limit; this only catches a mistyped size. */
#define MRCTL_GEN_MAX ((unsigned long long)1 << 30)
/* Unconfirmed publishes in flight; bounds the broker's buffering for us. */
#define MRCTL_WINDOW 256
/* A 128 MiB persistent body can take a while to reach the disk. */
#define MRCTL_CONFIRM_TIMEOUT_S 120
/* Declares, gets and closes answer at once from a healthy broker; without
 * a bound, one that stopped reading (e.g. blocked by an alarm) hangs us. */
#define MRCTL_RPC_TIMEOUT_S 30
/* AMQP short strings (message_id) hold at most 255 bytes. */
#define MRCTL_ID_MAX  255
#define MRCTL_ERR_MAX 512
/* --limit and --max when not given. */
#define MRCTL_UNLIMITED ((unsigned long)-1)
/* max_args of a command that takes any number of queues. */
#define MRCTL_ANY_ARGS 0x7fff
#define MRCTL_GEN_BUF  65536
/* Content bytes of each full turn that gen log writes. */
#define MRCTL_TURN_CONTENT 4000

enum {
	OPT_QUEUE = 1 << 0,
	OPT_LIMIT = 1 << 1,
	OPT_MESSAGE_ID = 1 << 2,
	OPT_COPIES = 1 << 3,
	OPT_ID = 1 << 4,
	OPT_MAX = 1 << 5,
};

struct opts {
	const char *url;
	const char *queue;
	const char *message_id;
	const char *id;
	unsigned long limit;
	unsigned long copies;
	unsigned long max;
	char **args;
	int nargs;
};

struct opt_spec {
	const char *name;
	unsigned bit;
	int is_count;
	size_t offset;
};

static const struct opt_spec opt_specs[] = {
	{ "--queue", OPT_QUEUE, 0, offsetof(struct opts, queue) },
	{ "--limit", OPT_LIMIT, 1, offsetof(struct opts, limit) },
	{ "--message-id", OPT_MESSAGE_ID, 0,
	  offsetof(struct opts, message_id) },
	{ "--copies", OPT_COPIES, 1, offsetof(struct opts, copies) },
	{ "--id", OPT_ID, 0, offsetof(struct opts, id) },
	{ "--max", OPT_MAX, 1, offsetof(struct opts, max) },
};

/* One connection; tags and the ack ring track publisher confirms. broken
 * means the socket can no longer be trusted to answer a close. */
struct session {
	amqp_connection_state_t conn;
	int broken;
	struct broker_names names;
	uint64_t next_tag;
	uint64_t base;
	unsigned char acked[MRCTL_WINDOW];
};


/* ---- small helpers ------------------------------------------------------ */

/* Parses a decimal count from text into *out; returns 0 or -EINVAL. */
static int parse_count(const char *text, unsigned long *out)
{
	char *end = NULL;
	unsigned long v;

	if (!text || *text < '0' || *text > '9')
		return -EINVAL;
	errno = 0;
	v = strtoul(text, &end, 10);
	if (errno || *end)
		return -EINVAL;
	*out = v;
	return 0;
}


/* Parses a size such as 4096, 64K, 64M or 1G (binary multiples) from text
 * into *out; returns 0, or -EINVAL for junk or a size over MRCTL_GEN_MAX. */
static int parse_size(const char *text, unsigned long long *out)
{
	unsigned long long v;
	char *end = NULL;
	int shift = 0;

	if (*text < '0' || *text > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(text, &end, 10);
	if (errno)
		return -EINVAL;
	if (*end == 'k' || *end == 'K')
		shift = 10;
	else if (*end == 'm' || *end == 'M')
		shift = 20;
	else if (*end == 'g' || *end == 'G')
		shift = 30;
	if ((shift && *++end) || (!shift && *end))
		return -EINVAL;
	if (v > MRCTL_GEN_MAX >> shift)
		return -EINVAL;
	*out = v << shift;
	return 0;
}


/* True when id can sit inside a JSON string without escaping. */
static int id_is_plain(const char *id)
{
	for (; *id; id++)
		if (*id < 0x20 || *id > 0x7e || *id == '"' || *id == '\\')
			return 0;
	return 1;
}


/* Grows *buf (capacity *cap) towards MRCTL_BODY_MAX + 1 bytes, the extra
 * byte being how an oversized input shows itself. Returns 0, -EFBIG when
 * the buffer is already at that cap, or -ENOMEM. */
static int grow_body(char **buf, size_t *cap)
{
	size_t want = *cap ? *cap * 2 : 65536;
	char *grown;

	if (*cap > MRCTL_BODY_MAX)
		return -EFBIG;
	if (want > MRCTL_BODY_MAX + 1)
		want = MRCTL_BODY_MAX + 1;
	grown = realloc(*buf, want);
	if (!grown)
		return -ENOMEM;
	*buf = grown;
	*cap = want;
	return 0;
}


/* Reads all of f into *out (caller frees) and its length into *len.
 * Returns 0, -EFBIG past MRCTL_BODY_MAX, -ENOMEM or -EIO. */
static int read_all(FILE *f, char **out, size_t *len)
{
	size_t cap = 0, n = 0, got;
	char *buf = NULL;
	int rc = 0;

	do {
		if (n == cap)
			rc = grow_body(&buf, &cap);
		got = rc == 0 ? fread(buf + n, 1, cap - n, f) : 0;
		n += got;
	} while (got > 0);
	if (rc == 0 && ferror(f))
		rc = -EIO;
	if (rc == 0) {
		*out = buf;
		*len = n;
		buf = NULL;
	}
	free(buf);
	return rc;
}


/* Reads the file at path ("-" for stdin) into *out (caller frees) and its
 * length into *len. Returns 0 or a negative errno, described in err. */
static int read_body(const char *path, char **out, size_t *len, char *err,
		     size_t errlen)
{
	FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
	int rc;

	if (!f) {
		rc = -errno;
		snprintf(err, errlen, "failed to open %s: %s", path,
			 strerror(-rc));
		return rc;
	}
	rc = read_all(f, out, len);
	if (rc == -EFBIG)
		snprintf(err, errlen,
			 "failed to read %s: larger than %zu "
			 "bytes",
			 path, MRCTL_BODY_MAX);
	else if (rc < 0)
		snprintf(err, errlen, "failed to read %s: %s", path,
			 strerror(rc == -EIO ? errno : -rc));
	if (f != stdin)
		fclose(f);
	return rc;
}


/* Finds the string value of the first "conversation_id" key in line, with
 * no JSON parse: a match inside another string cannot occur, because its
 * quotes would be escaped there. Copies it into id (idlen bytes) and
 * returns 0, or -ENOENT when absent, escaped or too long for a message id. */
static int scan_conversation_id(const char *line, size_t len, char *id,
				size_t idlen)
{
	static const char key[] = "\"conversation_id\"";
	const char *p = memmem(line, len, key, sizeof key - 1);
	const char *end = line + len, *close;

	if (!p)
		return -ENOENT;
	p += sizeof key - 1;
	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	if (p == end || *p++ != ':')
		return -ENOENT;
	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	if (p == end || *p++ != '"')
		return -ENOENT;
	close = memchr(p, '"', (size_t)(end - p));
	if (!close || memchr(p, '\\', (size_t)(close - p)) ||
	    (size_t)(close - p) >= idlen)
		return -ENOENT;
	memcpy(id, p, (size_t)(close - p));
	id[close - p] = '\0';
	return 0;
}


/* ---- connection --------------------------------------------------------- */

static int session_open(struct session *s, const struct opts *o, char *err,
			size_t errlen)
{
	struct timeval tv = { MRCTL_RPC_TIMEOUT_S, 0 };
	int rc;

	memset(s, 0, sizeof *s);
	s->next_tag = 1;
	s->base = 1;
	broker_names_for(o->queue, &s->names);
	rc = broker_connect(o->url, 0, &s->conn, err, errlen);
	if (rc < 0)
		return rc;
	if (amqp_set_rpc_timeout(s->conn, &tv) != AMQP_STATUS_OK) {
		snprintf(err, errlen, "failed to set the RPC timeout");
		return -EIO;
	}
	return 0;
}


/* Closes the session; safe when it never opened. RabbitMQ answers the
 * channel.close even after it closed the channel itself, so most failed
 * sessions close politely; a broken one just drops the socket, because
 * the broker may not be reading it. */
static void session_close(struct session *s)
{
	if (s->broken && s->conn)
		amqp_destroy_connection(s->conn);
	else
		broker_close(s->conn);
	s->conn = NULL;
}


/* Turns the reply of the last synchronous call into 0 or a described
 * error naming what. */
static int check_rpc(struct session *s, const char *what, char *err,
		     size_t errlen)
{
	amqp_rpc_reply_t r = amqp_get_rpc_reply(s->conn);

	if (r.reply_type == AMQP_RESPONSE_NORMAL)
		return 0;
	return broker_reply_error(r, what, err, errlen);
}


/* Declares the topology and turns on publisher confirms. */
static int publisher_open(struct session *s, const struct opts *o, char *err,
			  size_t errlen)
{
	int rc = session_open(s, o, err, errlen);

	if (rc < 0)
		return rc;
	rc = broker_declare(s->conn, &s->names, err, errlen);
	if (rc < 0)
		return rc;
	amqp_confirm_select(s->conn, BROKER_CHANNEL);
	return check_rpc(s, "failed to enable publisher confirms", err, errlen);
}


/* ---- publisher confirms ------------------------------------------------- */

/* Marks tag (and, with multiple, every earlier tag) confirmed, then moves
 * base past the confirmed prefix. Tags outside the window are ignored:
 * the broker never confirms what was not published. */
static void confirm_tags(struct session *s, uint64_t tag, int multiple)
{
	uint64_t t = multiple ? s->base : tag;

	if (tag < s->base || tag >= s->next_tag)
		return;
	for (; t <= tag; t++)
		s->acked[t % MRCTL_WINDOW] = 1;
	while (s->base < s->next_tag && s->acked[s->base % MRCTL_WINDOW]) {
		s->acked[s->base % MRCTL_WINDOW] = 0;
		s->base++;
	}
}


/* Describes a method frame that ends the publish: a nack, a return or a
 * close. Returns -EIO with the text in err. */
static int confirm_failure(amqp_method_t *m, char *err, size_t errlen)
{
	amqp_rpc_reply_t r = { .reply_type = AMQP_RESPONSE_SERVER_EXCEPTION,
			       .reply = *m };
	amqp_basic_return_t *ret = m->decoded;

	if (m->id == AMQP_BASIC_NACK_METHOD) {
		snprintf(err, errlen,
			 "failed to publish: broker refused "
			 "message %llu (basic.nack)",
			 (unsigned long long)((amqp_basic_nack_t *)m->decoded)
				 ->delivery_tag);
		return -EIO;
	}
	if (m->id == AMQP_BASIC_RETURN_METHOD) {
		snprintf(err, errlen,
			 "failed to publish: message returned "
			 "(%u): %.*s",
			 ret->reply_code, (int)ret->reply_text.len,
			 (char *)ret->reply_text.bytes);
		return -EIO;
	}
	return broker_reply_error(r, "failed to publish", err, errlen);
}


/* Reads one frame and applies it to the confirm window. Returns 0, or
 * -EIO for a nack, return, close or socket error, -ETIMEDOUT. */
static int read_confirm(struct session *s, char *err, size_t errlen)
{
	struct timeval tv = { MRCTL_CONFIRM_TIMEOUT_S, 0 };
	amqp_frame_t f;
	amqp_basic_ack_t *ack;
	int st = amqp_simple_wait_frame_noblock(s->conn, &f, &tv);

	s->broken = st != AMQP_STATUS_OK;
	/* rabbitmq-c does not ask for connection.blocked, so a broker that
	 * blocks publishers on a memory or disk alarm shows up as silence. */
	if (st == AMQP_STATUS_TIMEOUT) {
		snprintf(err, errlen,
			 "failed to wait for publisher confirms: "
			 "none in %ds (a broker resource alarm may be blocking "
			 "publishers; see its log)",
			 MRCTL_CONFIRM_TIMEOUT_S);
		return -ETIMEDOUT;
	}
	if (st != AMQP_STATUS_OK) {
		snprintf(err, errlen,
			 "failed to wait for publisher confirms: "
			 "%s",
			 amqp_error_string2(st));
		return -EIO;
	}
	if (f.frame_type != AMQP_FRAME_METHOD)
		return 0;
	if (f.payload.method.id != AMQP_BASIC_ACK_METHOD)
		return confirm_failure(&f.payload.method, err, errlen);
	ack = f.payload.method.decoded;
	confirm_tags(s, ack->delivery_tag, ack->multiple);
	amqp_maybe_release_buffers(s->conn);
	return 0;
}


/* Waits until at most inflight publishes are unconfirmed. */
static int wait_confirms(struct session *s, uint64_t inflight, char *err,
			 size_t errlen)
{
	int rc = 0;

	while (rc == 0 && s->next_tag - s->base > inflight)
		rc = read_confirm(s, err, errlen);
	return rc;
}


/* Publishes body (len bytes) to the work queue with message id id (NULL
 * for none). The confirm arrives later; wait_confirms() collects it. */
static int publish_one(struct session *s, const void *body, size_t len,
		       const char *id, char *err, size_t errlen)
{
	amqp_basic_properties_t props = {
		._flags = AMQP_BASIC_CONTENT_TYPE_FLAG |
			  AMQP_BASIC_DELIVERY_MODE_FLAG,
		.content_type = amqp_cstring_bytes("application/json"),
		.delivery_mode = AMQP_DELIVERY_PERSISTENT,
	};
	amqp_bytes_t bytes = { .len = len, .bytes = (void *)body };
	int rc = wait_confirms(s, MRCTL_WINDOW - 1, err, errlen);

	if (rc < 0)
		return rc;
	if (id) {
		props._flags |= AMQP_BASIC_MESSAGE_ID_FLAG;
		props.message_id = amqp_cstring_bytes(id);
	}
	rc = amqp_basic_publish(s->conn, BROKER_CHANNEL, amqp_empty_bytes,
				amqp_cstring_bytes(s->names.queue), 1, 0,
				&props, bytes);
	if (rc != AMQP_STATUS_OK) {
		s->broken = 1;
		snprintf(err, errlen, "failed to publish: %s",
			 amqp_error_string2(rc));
		return -EIO;
	}
	s->next_tag++;
	return 0;
}


/* ---- publish commands --------------------------------------------------- */

/* Strips the line end and publishes one non-empty line; *count grows by
 * the messages sent. lineno names the line when it has no id. */
static int publish_line(struct session *s, char *line, size_t len,
			unsigned long lineno, unsigned long *count, char *err,
			size_t errlen)
{
	char id[MRCTL_ID_MAX + 1];

	while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
		len--;
	if (len == 0)
		return 0;
	if (len > MRCTL_BODY_MAX) {
		snprintf(err, errlen,
			 "failed to publish line %lu: larger "
			 "than %zu bytes",
			 lineno, MRCTL_BODY_MAX);
		return -EFBIG;
	}
	if (scan_conversation_id(line, len, id, sizeof id) < 0)
		snprintf(id, sizeof id, "line-%lu", lineno);
	(*count)++;
	return publish_one(s, line, len, id, err, errlen);
}


static int cmd_publish_jsonl(const struct opts *o, char *err, size_t errlen)
{
	const char *path = o->args[0];
	FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
	unsigned long lineno = 0, count = 0;
	struct session s = { 0 };
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	int rc;

	if (!f) {
		rc = -errno;
		snprintf(err, errlen, "failed to open %s: %s", path,
			 strerror(-rc));
		return rc;
	}
	rc = publisher_open(&s, o, err, errlen);
	while (rc == 0 && count < o->limit &&
	       (n = getline(&line, &cap, f)) >= 0)
		rc = publish_line(&s, line, (size_t)n, ++lineno, &count, err,
				  errlen);
	if (rc == 0 && ferror(f)) {
		snprintf(err, errlen, "failed to read %s: %s", path,
			 strerror(errno));
		rc = -EIO;
	}
	if (rc == 0)
		rc = wait_confirms(&s, 0, err, errlen);
	if (rc == 0)
		printf("published %lu\n", count);
	session_close(&s);
	free(line);
	if (f != stdin)
		fclose(f);
	return rc;
}


static int cmd_publish(const struct opts *o, char *err, size_t errlen)
{
	char id[MRCTL_ID_MAX + 1];
	struct session s = { 0 };
	char *body = NULL;
	size_t len = 0;
	unsigned long i;
	int rc;

	rc = read_body(o->args[0], &body, &len, err, errlen);
	if (rc == 0)
		rc = publisher_open(&s, o, err, errlen);
	for (i = 1; rc == 0 && i <= o->copies; i++) {
		if (o->message_id && i > 1)
			snprintf(id, sizeof id, "%s-%lu", o->message_id, i);
		else if (o->message_id)
			snprintf(id, sizeof id, "%s", o->message_id);
		rc = publish_one(&s, body, len, o->message_id ? id : NULL, err,
				 errlen);
	}
	if (rc == 0)
		rc = wait_confirms(&s, 0, err, errlen);
	if (rc == 0)
		printf("published %lu\n", o->copies);
	session_close(&s);
	free(body);
	return rc;
}


/* ---- queue commands ----------------------------------------------------- */

/* Passive declare: fails with 404 when the queue is missing. */
static int queue_depth(struct session *s, const char *queue, char *err,
		       size_t errlen)
{
	amqp_queue_declare_ok_t *ok;
	char what[BROKER_NAME_MAX + 32];

	ok = amqp_queue_declare(s->conn, BROKER_CHANNEL,
				amqp_cstring_bytes(queue), 1, 0, 0, 0,
				amqp_empty_table);
	snprintf(what, sizeof what, "failed to inspect queue %s", queue);
	if (!ok)
		return check_rpc(s, what, err, errlen);
	printf("%s %u\n", queue, ok->message_count);
	return 0;
}


static int queue_purge(struct session *s, const char *queue, char *err,
		       size_t errlen)
{
	amqp_queue_purge_ok_t *ok;
	char what[BROKER_NAME_MAX + 32];

	ok = amqp_queue_purge(s->conn, BROKER_CHANNEL,
			      amqp_cstring_bytes(queue));
	snprintf(what, sizeof what, "failed to purge queue %s", queue);
	if (!ok)
		return check_rpc(s, what, err, errlen);
	printf("%s %u\n", queue, ok->message_count);
	return 0;
}


static int queue_delete(struct session *s, const char *queue, char *err,
			size_t errlen)
{
	amqp_queue_delete_ok_t *ok;
	char what[BROKER_NAME_MAX + 32];

	ok = amqp_queue_delete(s->conn, BROKER_CHANNEL,
			       amqp_cstring_bytes(queue), 0, 0);
	snprintf(what, sizeof what, "failed to delete queue %s", queue);
	if (!ok)
		return check_rpc(s, what, err, errlen);
	printf("%s %u\n", queue, ok->message_count);
	return 0;
}


typedef int (*queue_fn)(struct session *s, const char *queue, char *err,
			size_t errlen);

/* Runs fn on every queue named in o->args, stopping at the first error:
 * the server closes the channel on a failed queue method. */
static int for_each_queue(const struct opts *o, queue_fn fn, char *err,
			  size_t errlen)
{
	struct session s;
	int i, rc;

	rc = session_open(&s, o, err, errlen);
	for (i = 0; rc == 0 && i < o->nargs; i++)
		rc = fn(&s, o->args[i], err, errlen);
	session_close(&s);
	return rc;
}


static int cmd_depth(const struct opts *o, char *err, size_t errlen)
{
	return for_each_queue(o, queue_depth, err, errlen);
}


static int cmd_purge(const struct opts *o, char *err, size_t errlen)
{
	return for_each_queue(o, queue_purge, err, errlen);
}


static int cmd_delete(const struct opts *o, char *err, size_t errlen)
{
	return for_each_queue(o, queue_delete, err, errlen);
}


/* Gets one message from queue, prints "<message_id or -> <bytes>" and
 * acks it. Sets *empty when the queue had nothing. */
static int take_one(struct session *s, const char *queue, int *empty, char *err,
		    size_t errlen)
{
	amqp_rpc_reply_t r;
	amqp_message_t msg;
	amqp_bytes_t *id = &msg.properties.message_id;
	uint64_t tag;

	r = amqp_basic_get(s->conn, BROKER_CHANNEL, amqp_cstring_bytes(queue),
			   0);
	if (r.reply_type != AMQP_RESPONSE_NORMAL)
		return broker_reply_error(r, "failed to get message", err,
					  errlen);
	*empty = r.reply.id == AMQP_BASIC_GET_EMPTY_METHOD;
	if (*empty)
		return 0;
	tag = ((amqp_basic_get_ok_t *)r.reply.decoded)->delivery_tag;

	r = amqp_read_message(s->conn, BROKER_CHANNEL, &msg, 0);
	if (r.reply_type != AMQP_RESPONSE_NORMAL)
		return broker_reply_error(r, "failed to read message", err,
					  errlen);
	if (msg.properties._flags & AMQP_BASIC_MESSAGE_ID_FLAG)
		printf("%.*s %zu\n", (int)id->len, (char *)id->bytes,
		       msg.body.len);
	else
		printf("- %zu\n", msg.body.len);
	amqp_destroy_message(&msg);
	amqp_maybe_release_buffers(s->conn);

	if (amqp_basic_ack(s->conn, BROKER_CHANNEL, tag, 0) != AMQP_STATUS_OK) {
		snprintf(err, errlen, "failed to ack message: socket error");
		return -EIO;
	}
	return 0;
}


static int cmd_take(const struct opts *o, char *err, size_t errlen)
{
	struct session s;
	unsigned long taken = 0;
	int empty = 0, rc;

	rc = session_open(&s, o, err, errlen);
	while (rc == 0 && !empty && taken < o->max) {
		rc = take_one(&s, o->args[0], &empty, err, errlen);
		taken++;
	}
	session_close(&s);
	return rc;
}


/* ---- gen ---------------------------------------------------------------- */

/* One block of text, repeated as often as a body needs; its length is a
 * whole number of pattern repeats (or ends on a space), so the seam where
 * it wraps is invisible. */
struct gen_text {
	char buf[MRCTL_GEN_BUF];
	size_t len;
	size_t off;
};

static void text_fill_pattern(struct gen_text *t, const char *pattern)
{
	size_t plen = strlen(pattern);

	for (t->len = 0; t->len + plen <= sizeof t->buf; t->len += plen)
		memcpy(t->buf + t->len, pattern, plen);
	t->off = 0;
}


/* Fills t with words chosen by a fixed pseudo-random sequence, so every
 * run writes the same text. */
static void text_fill_words(struct gen_text *t)
{
	static const char *const words[] = {
		"moon",		"rabbit", "queue",  "worker", "message",
		"turn",		"log",	  "memory", "limit",  "broker",
		"the",		"a",	  "of",	    "and",    "to",
		"conversation", "policy", "thread", "pool",   "size",
	};
	const size_t nwords = sizeof words / sizeof words[0];
	uint32_t seed = 12345;
	size_t wlen;

	for (t->len = 0;; t->len += wlen + 1) {
		seed = seed * 1103515245u + 12345u;
		wlen = strlen(words[(seed >> 16) % nwords]);
		if (t->len + wlen + 1 > sizeof t->buf)
			break;
		memcpy(t->buf + t->len, words[(seed >> 16) % nwords], wlen);
		t->buf[t->len + wlen] = ' ';
	}
	t->off = 0;
}


/* Writes the next n bytes of t's endless repetition to stdout. */
static void text_write(struct gen_text *t, size_t n)
{
	size_t k;

	while (n > 0) {
		k = t->len - t->off < n ? t->len - t->off : n;
		fwrite(t->buf + t->off, 1, k, stdout);
		t->off = (t->off + k) % t->len;
		n -= k;
	}
}


static const char pad_head[] = "{\"conversation_log\":\"";
static const char pad_tail[] = "\"}";
static const char turn_head[] = "{\"role\":\"\",\"content\":\"";
static const char turn_tail[] = "\"}";
static const char *const roles[] = { "user", "assistant" };

static size_t turn_overhead(unsigned long i)
{
	return sizeof turn_head - 1 + strlen(roles[i % 2]) + sizeof turn_tail -
	       1;
}


static size_t log_head_len(const char *id)
{
	return strlen("{\"conversation_id\":\"\",\"conversation_log\":[") +
	       strlen(id) + strlen("]}");
}


static size_t gen_min(const char *kind, const char *id)
{
	if (!strcmp(kind, "pad"))
		return sizeof pad_head - 1 + sizeof pad_tail - 1;
	if (!strcmp(kind, "log"))
		return log_head_len(id) + turn_overhead(0);
	return 0;
}


static void gen_pad(struct gen_text *t, size_t bytes, const char *id)
{
	(void)id;
	text_fill_pattern(t, "a");
	fputs(pad_head, stdout);
	text_write(t, bytes - gen_min("pad", NULL));
	fputs(pad_tail, stdout);
}


static void gen_junk(struct gen_text *t, size_t bytes, const char *id)
{
	(void)id;
	text_fill_pattern(t, "not json ");
	text_write(t, bytes);
}


/* Writes turns until rest bytes are used: full turns while another turn
 * still fits after one, then a last turn padded to the exact size. */
static void gen_log(struct gen_text *t, size_t bytes, const char *id)
{
	size_t rest = bytes - log_head_len(id), used, content;
	unsigned long i;

	text_fill_words(t);
	printf("{\"conversation_id\":\"%s\",\"conversation_log\":[", id);
	for (i = 0;; i++) {
		used = (i > 0) + turn_overhead(i);
		content = rest - used;
		if (content >= MRCTL_TURN_CONTENT + 1 + turn_overhead(i + 1))
			content = MRCTL_TURN_CONTENT;
		printf("%s{\"role\":\"%s\",\"content\":\"", i > 0 ? "," : "",
		       roles[i % 2]);
		text_write(t, content);
		fputs(turn_tail, stdout);
		rest -= used + content;
		if (rest == 0)
			break;
	}
	fputs("]}", stdout);
}


struct gen_kind {
	const char *name;
	void (*write)(struct gen_text *t, size_t bytes, const char *id);
};

static const struct gen_kind gen_kinds[] = {
	{ "pad", gen_pad },
	{ "log", gen_log },
	{ "junk", gen_junk },
};


static const struct gen_kind *gen_find(const char *name)
{
	size_t i;

	for (i = 0; i < sizeof gen_kinds / sizeof gen_kinds[0]; i++)
		if (!strcmp(gen_kinds[i].name, name))
			return &gen_kinds[i];
	return NULL;
}


/* Checks KIND, BYTES and --id before anything is written. */
static int check_gen(const struct opts *o, char *err, size_t errlen)
{
	const char *id = o->id ? o->id : "gen";
	unsigned long long bytes;

	if (!gen_find(o->args[0])) {
		snprintf(err, errlen, "unknown KIND %s", o->args[0]);
		return -EINVAL;
	}
	if (parse_size(o->args[1], &bytes) < 0) {
		snprintf(err, errlen,
			 "BYTES must be a size up to 1G, like "
			 "4096, 64K or 64M: %s",
			 o->args[1]);
		return -EINVAL;
	}
	if (!id_is_plain(id) || strlen(id) > MRCTL_ID_MAX) {
		snprintf(err, errlen,
			 "--id must be printable ASCII without "
			 "quotes or backslashes, at most 255 bytes");
		return -EINVAL;
	}
	if (bytes < gen_min(o->args[0], id)) {
		snprintf(err, errlen, "a %s body needs at least %zu bytes",
			 o->args[0], gen_min(o->args[0], id));
		return -EINVAL;
	}
	return 0;
}


static int cmd_gen(const struct opts *o, char *err, size_t errlen)
{
	static struct gen_text text;
	unsigned long long bytes;

	parse_size(o->args[1], &bytes);
	gen_find(o->args[0])
		->write(&text, (size_t)bytes, o->id ? o->id : "gen");
	if (fflush(stdout) != 0 || ferror(stdout)) {
		snprintf(err, errlen, "failed to write stdout: %s",
			 strerror(errno));
		return -EIO;
	}
	return 0;
}


static int check_publish(const struct opts *o, char *err, size_t errlen)
{
	/* Room for the "-<copy>" suffix keeps every id a valid shortstr. */
	if (o->message_id && strlen(o->message_id) > MRCTL_ID_MAX - 21) {
		snprintf(err, errlen, "--message-id is longer than %d bytes",
			 MRCTL_ID_MAX - 21);
		return -EINVAL;
	}
	if (o->copies < 1) {
		snprintf(err, errlen, "--copies must be at least 1");
		return -EINVAL;
	}
	return 0;
}


/* ---- dispatch ----------------------------------------------------------- */

struct command {
	const char *name;
	int (*run)(const struct opts *o, char *err, size_t errlen);
	int (*check)(const struct opts *o, char *err, size_t errlen);
	int min_args;
	int max_args;
	unsigned opts;
	const char *usage;
};

static const struct command commands[] = {
	{ "publish-jsonl", cmd_publish_jsonl, NULL, 1, 1, OPT_QUEUE | OPT_LIMIT,
	  "publish-jsonl FILE [--limit N] [--queue Q]" },
	{ "publish", cmd_publish, check_publish, 1, 1,
	  OPT_QUEUE | OPT_MESSAGE_ID | OPT_COPIES,
	  "publish FILE|- [--message-id ID] [--copies N] [--queue Q]" },
	{ "gen", cmd_gen, check_gen, 2, 2, OPT_ID,
	  "gen pad|log|junk BYTES [--id ID]   (BYTES: 4096, 64K, 64M, 1G)" },
	{ "depth", cmd_depth, NULL, 1, MRCTL_ANY_ARGS, 0,
	  "depth Q...            prints <queue> <ready messages>" },
	{ "purge", cmd_purge, NULL, 1, MRCTL_ANY_ARGS, 0,
	  "purge Q...            prints <queue> <messages purged>" },
	{ "delete", cmd_delete, NULL, 1, MRCTL_ANY_ARGS, 0,
	  "delete Q...           prints <queue> <messages it held>" },
	{ "take", cmd_take, NULL, 1, 1, OPT_MAX,
	  "take Q [--max N]      prints <message_id or -> <body bytes>, acks" },
};

#define N_COMMANDS (sizeof commands / sizeof commands[0])


static void usage(void)
{
	size_t i;

	fputs("usage: mrctl COMMAND ARGS...\n", stderr);
	for (i = 0; i < N_COMMANDS; i++)
		fprintf(stderr, "  mrctl %s\n", commands[i].usage);
	fputs("env: AMQP_URL (default " MRCTL_DEFAULT_URL
	      ", port moved by MOONRABBIT_PORT_OFFSET),\n"
	      "     AMQP_QUEUE (default " MRCTL_DEFAULT_QUEUE ")\n",
	      stderr);
}


static const struct opt_spec *opt_find(const char *name)
{
	size_t i;

	for (i = 0; i < sizeof opt_specs / sizeof opt_specs[0]; i++)
		if (!strcmp(opt_specs[i].name, name))
			return &opt_specs[i];
	return NULL;
}


/* Stores value for option spec in o. */
static int opt_set(struct opts *o, const struct opt_spec *spec,
		   const char *value, char *err, size_t errlen)
{
	char *field = (char *)o + spec->offset;

	if (!spec->is_count) {
		*(const char **)field = value;
		return 0;
	}
	if (parse_count(value, (unsigned long *)field) == 0)
		return 0;
	snprintf(err, errlen, "%s needs a count, not %s", spec->name, value);
	return -EINVAL;
}


/* Splits argv (after the command name) into options and positional
 * arguments; positionals are packed to the front of argv in place. */
static int parse_args(const struct command *c, int argc, char **argv,
		      struct opts *o, char *err, size_t errlen)
{
	const struct opt_spec *spec;
	int i;

	o->args = argv;
	for (i = 0; i < argc; i++) {
		if (strncmp(argv[i], "--", 2) != 0) {
			argv[o->nargs++] = argv[i];
			continue;
		}
		spec = opt_find(argv[i]);
		if (!spec || !(c->opts & spec->bit) || i + 1 == argc) {
			snprintf(err, errlen, "%s: bad option %s", c->name,
				 argv[i]);
			return -EINVAL;
		}
		if (opt_set(o, spec, argv[++i], err, errlen) < 0)
			return -EINVAL;
	}
	if (o->nargs < c->min_args || o->nargs > c->max_args) {
		snprintf(err, errlen, "%s: wrong number of arguments", c->name);
		return -EINVAL;
	}
	return c->check ? c->check(o, err, errlen) : 0;
}


static const char *env_or(const char *name, const char *def)
{
	const char *v = getenv(name);

	return v && *v ? v : def;
}


/* The private broker of tools/services.sh, moved by the same
 * MOONRABBIT_PORT_OFFSET, so mrctl beside a second pair of services
 * talks to that pair and not to the first. */
static const char *default_url(void)
{
	static char url[96];
	const char *off = getenv("MOONRABBIT_PORT_OFFSET");
	long n = off && *off ? strtol(off, NULL, 10) : 0;

	if (n <= 0 || n > 8000)
		return MRCTL_DEFAULT_URL;
	snprintf(url, sizeof url, "amqp://guest:guest@127.0.0.1:%ld/%%2f",
		 21720 + n);
	return url;
}


int main(int argc, char **argv)
{
	struct opts o = {
		.url = env_or("AMQP_URL", default_url()),
		.queue = env_or("AMQP_QUEUE", MRCTL_DEFAULT_QUEUE),
		.limit = MRCTL_UNLIMITED,
		.copies = 1,
		.max = MRCTL_UNLIMITED,
	};
	char err[MRCTL_ERR_MAX] = "";
	const struct command *c = NULL;
	size_t i;

	for (i = 0; argc > 1 && i < N_COMMANDS; i++)
		if (!strcmp(commands[i].name, argv[1]))
			c = &commands[i];
	if (!c) {
		usage();
		return 2;
	}
	if (parse_args(c, argc - 2, argv + 2, &o, err, sizeof err) < 0) {
		fprintf(stderr, "mrctl: %s\n", err);
		usage();
		return 2;
	}
	if (c->run(&o, err, sizeof err) < 0) {
		fprintf(stderr, "mrctl: %s\n", err);
		return 1;
	}
	return 0;
}
