#include <arpa/inet.h>
#include <errno.h>
#include <lauxlib.h>
#include <lualib.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "alerts.h"
#include "check.h"
#include "log.h"

/*
 * The alerts module against a receiver in this process: a thread on
 * 127.0.0.1 that answers with scripted statuses and records what it got,
 * or, silent, accepts connections and never answers (case 017's
 * blackhole). Policies are written to a temporary directory with short
 * timeouts so each test takes well under a few seconds.
 */

#define MAX_REQUESTS 16
#define BODY_MAX     4096

struct receiver {
	int fd;
	int port;
	int silent;
	int statuses[4];
	int nstatuses;
	int retry_after;
	pthread_t thread;
	atomic_int stop;
	pthread_mutex_t mu;
	int nrequests;
	long long at_ms[MAX_REQUESTS];
	char bodies[MAX_REQUESTS][BODY_MAX];
};

static char dir[] = "/tmp/mr-alerts-XXXXXX";


static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


/* Reads one request from fd; returns its body (NUL-terminated in buf). */
static const char *read_request(int fd, char *buf, size_t cap)
{
	size_t len = 0;
	long want = -1;
	char *end = NULL;

	while (len + 1 < cap) {
		ssize_t n = read(fd, buf + len, cap - 1 - len);

		if (n <= 0)
			break;
		len += (size_t)n;
		buf[len] = '\0';
		end = strstr(buf, "\r\n\r\n");
		if (end && want < 0) {
			const char *cl = strcasestr(buf, "Content-Length:");

			want = cl ? atol(cl + 15) : 0;
		}
		if (end && (long)(len - (size_t)(end + 4 - buf)) >= want)
			break;
	}
	return end ? end + 4 : "";
}


static void answer(struct receiver *r, int fd)
{
	char buf[BODY_MAX * 2], reply[256], retry[32] = "";
	const char *body = read_request(fd, buf, sizeof buf);
	int status, i;

	pthread_mutex_lock(&r->mu);
	i = r->nrequests < MAX_REQUESTS ? r->nrequests : MAX_REQUESTS - 1;
	status = r->statuses[i < r->nstatuses ? i : r->nstatuses - 1];
	r->at_ms[i] = now_ms();
	snprintf(r->bodies[i], BODY_MAX, "%s", body);
	r->nrequests++;
	pthread_mutex_unlock(&r->mu);
	if (r->retry_after)
		snprintf(retry, sizeof retry, "Retry-After: %d\r\n",
			 r->retry_after);
	snprintf(reply, sizeof reply,
		 "HTTP/1.1 %d X\r\nContent-Length: 0\r\nConnection: close\r\n"
		 "%s\r\n",
		 status, retry);
	if (write(fd, reply, strlen(reply)) < 0)
		perror("write");
}


static void *receiver_main(void *arg)
{
	struct receiver *r = arg;

	while (!atomic_load(&r->stop)) {
		struct pollfd p = { .fd = r->fd, .events = POLLIN };
		int fd;

		if (r->silent || poll(&p, 1, 50) <= 0) {
			usleep(50000);
			continue;
		}
		fd = accept(r->fd, NULL, NULL);
		if (fd < 0)
			continue;
		answer(r, fd);
		close(fd);
	}
	return NULL;
}


static void receiver_start(struct receiver *r)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t alen = sizeof a;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	r->fd = socket(AF_INET, SOCK_STREAM, 0);
	if (r->fd < 0 || bind(r->fd, (struct sockaddr *)&a, sizeof a) < 0 ||
	    listen(r->fd, 64) < 0 ||
	    getsockname(r->fd, (struct sockaddr *)&a, &alen) < 0) {
		perror("receiver");
		exit(1);
	}
	r->port = ntohs(a.sin_port);
	pthread_mutex_init(&r->mu, NULL);
	atomic_init(&r->stop, 0);
	pthread_create(&r->thread, NULL, receiver_main, r);
}


static void receiver_stop(struct receiver *r)
{
	atomic_store(&r->stop, 1);
	pthread_join(r->thread, NULL);
	close(r->fd);
	pthread_mutex_destroy(&r->mu);
}


static int requests(struct receiver *r)
{
	int n;

	pthread_mutex_lock(&r->mu);
	n = r->nrequests;
	pthread_mutex_unlock(&r->mu);
	return n;
}


static void url_of(const struct receiver *r, char *out, size_t outlen)
{
	snprintf(out, outlen, "http://127.0.0.1:%d/hook", r->port);
}


/* Writes an alerts.lua whose settings are the shipped ones but for the
 * numbers given, and whose format() is format_fn (Lua source). */
static void write_policy(int total_ms, int attempts, int base_ms, int capacity,
			 const char *format_fn)
{
	char path[64];
	FILE *f;

	snprintf(path, sizeof path, "%s/alerts.lua", dir);
	f = fopen(path, "w");
	fprintf(f,
		"return {\n"
		"  settings = function() return { format = 'test',\n"
		"    connect_timeout_ms = 200, total_timeout_ms = %d,\n"
		"    max_attempts = %d, backoff_base_ms = %d,\n"
		"    backoff_max_ms = 5000, queue_capacity = %d } end,\n"
		"  route = function(a) return { key = a.kind .. ':' ..\n"
		"    (a.key or ''), repeat_seconds = 60, send = true } end,\n"
		"  format = %s,\n"
		"}\n",
		total_ms, attempts, base_ms, capacity, format_fn);
	fclose(f);
}


#define SUMMARY_BODY                                                           \
	"function(a) return { content_type = 'application/json',"              \
	" body = a.severity .. ' ' .. a.summary } end"


/* Waits up to ms for counter *c to reach want. */
static void wait_counter(struct alerts *al, size_t offset, uint64_t want,
			 int ms)
{
	long long end = now_ms() + ms;
	struct alerts_counters n;

	do {
		alerts_counters(al, &n);
		if (*(uint64_t *)((char *)&n + offset) >= want)
			return;
		usleep(10000);
	} while (now_ms() < end);
}


static void raise_one(struct alerts *al, const char *severity, const char *key,
		      const char *summary)
{
	struct alert a;

	alert_init(&a, "k", severity, key, summary);
	alerts_raise(al, &a);
}


/* The shipped policy loads, and without a URL alerts are only logged. */
static void test_shipped_without_url(void)
{
	struct alerts_counters n;
	struct alerts *al = NULL;
	char err[512] = "";

	CHECK_INT(0, alerts_start("policies", "", &al, err, sizeof err));
	CHECK_STR("", err);
	raise_one(al, "warning", "a", "only logged");
	alerts_counters(al, &n);
	CHECK_INT(0, n.queued);
	CHECK_INT(0, alerts_stop(al));
}


static void test_refusals(void)
{
	static const struct {
		int total_ms, capacity;
		const char *format_fn;
		const char *urls;
		const char *message;
	} rows[] = {
		{ 100, 4, SUMMARY_BODY, "",
		  "connect_timeout_ms (200) must not exceed total_timeout_ms "
		  "(100)" },
		{ 500, 0, SUMMARY_BODY, "",
		  "field 'settings.queue_capacity': expected a whole number "
		  "from 1 to 4096, got number 0" },
		{ 500, 4, "function() return { body = 5 } end", "",
		  "format field 'content_type': expected a string, got nil" },
		{ 500, 4,
		  "function() return { content_type = 'a/b', body = 5 } end",
		  "", "format field 'body': expected a string of 1 to 65536" },
		{ 500, 4,
		  "function() return { content_type = 'a/b', body = 'x',"
		  " headers = { ['X-A'] = 'a\\r\\nB: c' } } end",
		  "", "format field 'headers.X-A'" },
		{ 500, 4, "function() error('no format') end", "",
		  "alerts.lua:8: no format" },
		{ 500, 4, SUMMARY_BODY, "ftp://127.0.0.1/x",
		  "\"ftp://127.0.0.1/x\" is not usable: each URL must start "
		  "with http:// or https://" },
		{ 500, 4, SUMMARY_BODY,
		  "http://a,http://b http://c http://d "
		  "http://e http://f http://g http://h http://i",
		  "give at most 8 URLs" },
	};

	for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		struct alerts *al = NULL;
		char err[512] = "";

		write_policy(rows[i].total_ms, 2, 10, rows[i].capacity,
			     rows[i].format_fn);
		CHECK_INT(-EINVAL, alerts_start(dir, rows[i].urls, &al, err,
						sizeof err));
		CHECK_CONTAINS(rows[i].message, err);
		CHECK_INT(1, al == NULL);
	}
}


/* A 503 with Retry-After: 1 is retried after a second, not after the
 * 10 ms backoff; the 200 that follows ends it. */
static void test_retry_after(void)
{
	struct receiver r = { .statuses = { 503, 200 },
			      .nstatuses = 2,
			      .retry_after = 1 };
	struct alerts_counters n;
	struct alerts *al = NULL;
	char url[64], err[512] = "";

	receiver_start(&r);
	url_of(&r, url, sizeof url);
	write_policy(1000, 3, 10, 4, SUMMARY_BODY);
	CHECK_INT(0, alerts_start(dir, url, &al, err, sizeof err));
	raise_one(al, "critical", "a", "disk full");
	wait_counter(al, offsetof(struct alerts_counters, sent), 1, 5000);
	alerts_counters(al, &n);
	CHECK_INT(1, n.sent);
	CHECK_INT(0, n.failed);
	CHECK_INT(2, requests(&r));
	CHECK_INT(1, r.at_ms[1] - r.at_ms[0] >= 1000);
	CHECK_STR("critical disk full", r.bodies[1]);
	CHECK_INT(0, alerts_stop(al));
	receiver_stop(&r);
}


/* 429 without Retry-After and 5xx are retried with backoff until the
 * attempts are used up; other 4xx are not retried at all. */
static void test_retry_rules(void)
{
	static const struct {
		int statuses[2];
		int nstatuses, requests, sent, failed;
	} rows[] = {
		{ { 429, 200 }, 2, 2, 1, 0 },
		{ { 500 }, 1, 3, 0, 1 },
		{ { 400 }, 1, 1, 0, 1 },
		{ { 404 }, 1, 1, 0, 1 },
	};

	for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		struct receiver r = { .nstatuses = rows[i].nstatuses };
		struct alerts_counters n;
		struct alerts *al = NULL;
		char url[64], err[512] = "";

		memcpy(r.statuses, rows[i].statuses, sizeof r.statuses);
		receiver_start(&r);
		url_of(&r, url, sizeof url);
		write_policy(1000, 3, 20, 4, SUMMARY_BODY);
		CHECK_INT(0, alerts_start(dir, url, &al, err, sizeof err));
		raise_one(al, "warning", "b", "x");
		wait_counter(al,
			     rows[i].sent
				     ? offsetof(struct alerts_counters, sent)
				     : offsetof(struct alerts_counters, failed),
			     1, 3000);
		usleep(300000); /* time for a retry that must not come */
		alerts_counters(al, &n);
		CHECK_INT(rows[i].requests, requests(&r));
		CHECK_INT(rows[i].sent, n.sent);
		CHECK_INT(rows[i].failed, n.failed);
		CHECK_INT(0, alerts_stop(al));
		receiver_stop(&r);
	}
}


/* With the shipped policy: a repeat within the interval and a resolve
 * with nothing to resolve are suppressed; the first resolve is sent. */
static void test_dedup(void)
{
	struct receiver r = { .statuses = { 200 }, .nstatuses = 1 };
	struct alerts_counters n;
	struct alerts *al = NULL;
	char url[64], err[512] = "";

	receiver_start(&r);
	url_of(&r, url, sizeof url);
	CHECK_INT(0, alerts_start("policies", url, &al, err, sizeof err));
	raise_one(al, "warning", "d", "first");
	raise_one(al, "warning", "d", "repeat");
	raise_one(al, "critical", "d", "escalated");
	raise_one(al, "resolved", "d", "over");
	raise_one(al, "resolved", "d", "over again");
	wait_counter(al, offsetof(struct alerts_counters, sent), 3, 3000);
	usleep(200000);
	alerts_counters(al, &n);
	CHECK_INT(5, n.queued);
	CHECK_INT(3, n.sent);
	CHECK_INT(2, n.suppressed);
	CHECK_INT(3, requests(&r));
	CHECK_CONTAINS("\"summary\":\"first\"", r.bodies[0]);
	CHECK_CONTAINS("\"summary\":\"escalated\"", r.bodies[1]);
	CHECK_CONTAINS("\"previous_severity\":\"critical\"", r.bodies[2]);
	CHECK_CONTAINS("\"status\":\"resolved\"", r.bodies[2]);
	CHECK_INT(0, alerts_stop(al));
	receiver_stop(&r);
}


/* format() raising gives the fixed fallback body, escaped (case 009). */
static void test_fallback(void)
{
	struct receiver r = { .statuses = { 200 }, .nstatuses = 1 };
	struct alerts *al = NULL;
	char url[64], err[512] = "", host[256] = "", want[1024];

	receiver_start(&r);
	url_of(&r, url, sizeof url);
	write_policy(1000, 1, 10, 4,
		     "function(a) if a.kind ~= 'trial' then error('boom') end"
		     " return { content_type = 'a/b', body = 'x' } end");
	CHECK_INT(0, alerts_start(dir, url, &al, err, sizeof err));
	raise_one(al, "critical", "q", "say \"hi\"\n\xff");
	wait_counter(al, offsetof(struct alerts_counters, sent), 1, 3000);
	gethostname(host, sizeof host);
	snprintf(want, sizeof want,
		 "{\"text\":\"[critical] k: say \\\"hi\\\"\\u000a\\ufffd\","
		 "\"kind\":\"k\",\"severity\":\"critical\","
		 "\"summary\":\"say \\\"hi\\\"\\u000a\\ufffd\",\"key\":\"k:q\","
		 "\"host\":\"%s\",\"fallback\":true,"
		 "\"notes\":[\"alert_encode_failed\"]}",
		 host);
	CHECK_INT(1, requests(&r));
	CHECK_STR(want, r.bodies[0]);
	CHECK_INT(0, alerts_stop(al));
	receiver_stop(&r);
}


struct raiser {
	struct alerts *al;
	long long worst_ms;
};


static void *raise_many(void *arg)
{
	struct raiser *w = arg;

	for (int i = 0; i < 20; i++) {
		long long start = now_ms();
		char key[16];

		snprintf(key, sizeof key, "w%d", i);
		raise_one(w->al, "critical", key, "fault");
		if (now_ms() - start > w->worst_ms)
			w->worst_ms = now_ms() - start;
	}
	return NULL;
}


/* Case 017: a receiver that accepts and never answers, 20 alerts from
 * each of 8 threads. Raising never waits on the network, the queue
 * drops the oldest instead of growing, and the stop comes in time even
 * with a send hanging. */
static void test_blackhole_many_threads(void)
{
	struct receiver r = { .silent = 1 };
	struct raiser w[8];
	pthread_t t[8];
	struct alerts_counters n;
	struct alerts *al = NULL;
	char url[64], err[512] = "";
	long long worst = 0, start;

	receiver_start(&r);
	url_of(&r, url, sizeof url);
	write_policy(3000, 2, 10, 8, SUMMARY_BODY);
	CHECK_INT(0, alerts_start(dir, url, &al, err, sizeof err));
	for (int i = 0; i < 8; i++) {
		w[i] = (struct raiser){ .al = al };
		pthread_create(&t[i], NULL, raise_many, &w[i]);
	}
	for (int i = 0; i < 8; i++) {
		pthread_join(t[i], NULL);
		worst = w[i].worst_ms > worst ? w[i].worst_ms : worst;
	}
	usleep(200000);
	alerts_counters(al, &n);
	CHECK_INT(1, worst < 50);
	CHECK_INT(160, n.queued);
	CHECK_INT(1, n.dropped >= 160 - 8 - 8);
	CHECK_INT(0, n.sent);
	start = now_ms();
	CHECK_INT(0, alerts_stop(al));
	CHECK_INT(1, now_ms() - start <= ALERTS_STOP_MS);
	receiver_stop(&r);
}


#define V2_BODY                                                                \
	"function(a) return { content_type = 'application/json',"              \
	" body = 'v2 ' .. a.severity .. ' ' .. a.summary } end"


/* Overwrites alerts.lua with text, as an operator's broken edit. */
static void write_raw(const char *text)
{
	char path[64];
	FILE *f;

	snprintf(path, sizeof path, "%s/alerts.lua", dir);
	f = fopen(path, "w");
	fputs(text, f);
	fclose(f);
}


/* A reload swaps the format in for the next alert; a refused one leaves
 * the old format in force. The de-duplication state outlives both: a
 * repeat after the swap is still a repeat, and the resolve still finds
 * the condition it ends. */
static void test_reload(void)
{
	static const struct {
		const char *lua;
		const char *message;
	} broken[] = {
		{ "return {\n  settings = function() return {} end,\n",
		  "alerts.lua:3: unexpected symbol near <eof>" },
		{ "return { settings = function() error('no') end }",
		  "alerts.lua:1: no" },
	};
	struct receiver r = { .statuses = { 200 }, .nstatuses = 1 };
	struct alerts_policy *fresh = NULL;
	struct alerts_counters n;
	struct alerts *al = NULL;
	char url[64], err[512] = "";

	receiver_start(&r);
	url_of(&r, url, sizeof url);
	write_policy(1000, 1, 10, 4, SUMMARY_BODY);
	CHECK_INT(0, alerts_start(dir, url, &al, err, sizeof err));
	raise_one(al, "warning", "a", "one");
	wait_counter(al, offsetof(struct alerts_counters, sent), 1, 3000);

	for (size_t i = 0; i < sizeof broken / sizeof broken[0]; i++) {
		write_raw(broken[i].lua);
		CHECK_INT(-EINVAL,
			  alerts_prepare(dir, &fresh, err, sizeof err));
		CHECK_CONTAINS(broken[i].message, err);
	}
	raise_one(al, "critical", "a", "two");
	wait_counter(al, offsetof(struct alerts_counters, sent), 2, 3000);

	write_policy(1000, 1, 10, 16, V2_BODY);
	CHECK_INT(0, alerts_prepare(dir, &fresh, err, sizeof err));
	alerts_commit(al, fresh);
	raise_one(al, "critical", "a", "three");
	raise_one(al, "resolved", "a", "four");
	wait_counter(al, offsetof(struct alerts_counters, sent), 3, 3000);
	usleep(200000);
	alerts_counters(al, &n);
	CHECK_INT(3, requests(&r));
	CHECK_INT(1, n.suppressed);
	CHECK_STR("warning one", r.bodies[0]);
	CHECK_STR("critical two", r.bodies[1]);
	CHECK_STR("v2 resolved four", r.bodies[2]);
	CHECK_INT(0, alerts_stop(al));
	receiver_stop(&r);
}


/* Two commits in a row: the later one is in force and the earlier one is
 * freed whether or not the thread saw it. Without a URL (no thread) the
 * swap is immediate. */
static void test_commit_twice(void)
{
	struct receiver r = { .statuses = { 200 }, .nstatuses = 1 };
	struct alerts_policy *a = NULL, *b = NULL;
	struct alerts *al = NULL;
	char url[64], err[512] = "";

	receiver_start(&r);
	url_of(&r, url, sizeof url);
	write_policy(1000, 1, 10, 4, SUMMARY_BODY);
	CHECK_INT(0, alerts_start(dir, url, &al, err, sizeof err));
	CHECK_INT(0, alerts_prepare(dir, &a, err, sizeof err));
	write_policy(1000, 1, 10, 4, V2_BODY);
	CHECK_INT(0, alerts_prepare(dir, &b, err, sizeof err));
	alerts_commit(al, a);
	alerts_commit(al, b);
	raise_one(al, "info", "x", "last");
	wait_counter(al, offsetof(struct alerts_counters, sent), 1, 3000);
	CHECK_STR("v2 info last", r.bodies[0]);
	CHECK_INT(0, alerts_stop(al));
	receiver_stop(&r);

	CHECK_INT(0, alerts_start(dir, "", &al, err, sizeof err));
	CHECK_INT(0, alerts_prepare(dir, &a, err, sizeof err));
	alerts_commit(al, a);
	CHECK_INT(0, alerts_stop(al));
	CHECK_INT(0, alerts_prepare(dir, &a, err, sizeof err));
	alerts_commit(NULL, a);
	alerts_policy_free(NULL);
}


/* Returns 1 once a connection waits on the silent receiver r, 0 when
 * none came within ms. */
static int connection_waits(struct receiver *r, int ms)
{
	struct pollfd p = { .fd = r->fd, .events = POLLIN };

	return poll(&p, 1, ms) == 1;
}


/* A smaller queue_capacity takes effect at the commit: while a send
 * hangs, the oldest queued alerts that no longer fit are dropped and
 * counted, and the queue then holds the new number. */
static void test_resize_queue(void)
{
	struct receiver r = { .silent = 1 };
	struct alerts_policy *fresh = NULL;
	struct alerts_counters n;
	struct alerts *al = NULL;
	char url[64], err[512] = "";

	receiver_start(&r);
	url_of(&r, url, sizeof url);
	write_policy(3000, 1, 10, 8, SUMMARY_BODY);
	CHECK_INT(0, alerts_start(dir, url, &al, err, sizeof err));
	for (int i = 0; i < 6; i++) {
		char key[8];

		snprintf(key, sizeof key, "q%d", i);
		raise_one(al, "warning", key, "queued");
	}
	/* The thread took the first alert and hangs sending it; five stay
	 * queued. */
	CHECK_INT(1, connection_waits(&r, 3000));
	alerts_counters(al, &n);
	CHECK_INT(0, n.dropped);
	write_policy(3000, 1, 10, 2, SUMMARY_BODY);
	CHECK_INT(0, alerts_prepare(dir, &fresh, err, sizeof err));
	alerts_commit(al, fresh);
	alerts_counters(al, &n);
	CHECK_INT(3, n.dropped);
	raise_one(al, "warning", "q6", "one more");
	alerts_counters(al, &n);
	CHECK_INT(4, n.dropped);
	CHECK_INT(0, alerts_stop(al));
	receiver_stop(&r);
}


/* Keys that fit are kept; longer ones keep their head and end in a
 * hash, so two that differ only at the end stay two conditions. */
static void test_init_key(void)
{
	char a_id[128], b_id[128];
	struct alert a, b;

	alert_init(&a, "quarantine", "critical", "id:short", "s");
	CHECK_STR("id:short", a.key);
	memset(a_id, 'x', sizeof a_id - 1);
	a_id[sizeof a_id - 1] = '\0';
	memcpy(b_id, a_id, sizeof b_id);
	b_id[120] = 'y';
	alert_init(&a, "quarantine", "critical", a_id, "s");
	alert_init(&b, "quarantine", "critical", b_id, "s");
	CHECK_INT(ALERT_KEY_MAX - 1, strlen(a.key));
	CHECK_INT(0, strncmp(a.key, a_id, ALERT_KEY_MAX - 18));
	CHECK_INT('~', a.key[ALERT_KEY_MAX - 18]);
	CHECK_INT(1, strcmp(a.key, b.key) != 0);
	alert_init(&b, "quarantine", "critical", a_id, "s");
	CHECK_STR(a.key, b.key);
	alert_init(&a, "k", "info", NULL, NULL);
	CHECK_STR("", a.key);
}


/* Facts are appended in order until the table is full. */
static void test_fact_helpers(void)
{
	struct alert a;

	alert_init(&a, "quarantine", "critical", "k", "s");
	CHECK_INT(0, alert_fact_str(&a, "message_id", "m-1"));
	CHECK_INT(0, alert_fact_int(&a, "crashes", 3));
	CHECK_INT(2, a.facts.n);
	CHECK_STR("message_id", a.facts.v[0].name);
	CHECK_INT(ALERT_FACT_STR, a.facts.v[0].type);
	CHECK_STR("m-1", a.facts.v[0].s);
	CHECK_STR("crashes", a.facts.v[1].name);
	CHECK_INT(ALERT_FACT_INT, a.facts.v[1].type);
	CHECK_INT(3, a.facts.v[1].i);
	while (a.facts.n < ALERT_FACTS_MAX)
		alert_fact_int(&a, "n", a.facts.n);
	CHECK_INT(-ENOSPC, alert_fact_int(&a, "one_too_many", 1));
	CHECK_INT(-ENOSPC, alert_fact_str(&a, "one_too_many", "x"));
	CHECK_INT(ALERT_FACTS_MAX, a.facts.n);
}


static void test_facts_read(void)
{
	static const struct {
		const char *lua;
		int rc;
		const char *message;
	} rows[] = {
		{ "return { a = 'x', b = 2, c = 0.5, d = 0/0 }", 0, "" },
		{ "return { failed = { [17] = 'oom' } }", -EINVAL,
		  "f.lua: field 'alert.facts.failed': expected a string or a "
		  "number, got table" },
		{ "return { [1] = 'x' }", -EINVAL,
		  "field 'alert.facts': names must be strings" },
		{ "local t = {} for i = 1, 25 do t['f' .. i] = i end return t",
		  -EINVAL, "field 'alert.facts': at most 24 facts" },
		{ "return 7", -EINVAL,
		  "expected a table of facts, got number" },
	};

	for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		lua_State *L = luaL_newstate();
		struct alert_facts f;
		char err[256] = "";

		CHECK_INT(0, luaL_dostring(L, rows[i].lua));
		CHECK_INT(rows[i].rc,
			  alert_facts_read(L, "f.lua", "alert.facts", &f, err,
					   sizeof err));
		CHECK_CONTAINS(rows[i].message, err);
		CHECK_INT(1, lua_gettop(L));
		if (rows[i].rc == 0)
			CHECK_INT(4, f.n);
		lua_close(L);
	}
}


int main(void)
{
	if (!mkdtemp(dir) || alerts_global_init() < 0)
		return 1;
	log_threshold = LOG_ERROR;
	test_facts_read();
	test_init_key();
	test_fact_helpers();
	test_shipped_without_url();
	test_refusals();
	test_retry_after();
	test_retry_rules();
	test_dedup();
	test_fallback();
	test_blackhole_many_threads();
	test_reload();
	test_commit_twice();
	test_resize_queue();
	alerts_global_cleanup();
	{
		char path[64];

		snprintf(path, sizeof path, "%s/alerts.lua", dir);
		unlink(path);
		rmdir(dir);
	}
	return check_report("test_alerts");
}
