/*
 * Values live in arrays of atomics indexed by the enums in metrics.h;
 * gauges keep a double's bit pattern in a uint64_t, so setting one is a
 * single relaxed store. The histogram keeps one plain count per bucket
 * and its sum in whole nanoseconds: both grow by one fetch-add, where a
 * double sum would need a compare-and-swap loop that workers could spin
 * on. Cumulative bucket counts, and _count with them, are summed at
 * scrape time from one read of each bucket, so they always agree.
 *
 * libmicrohttpd runs one polling thread, which serves requests one after
 * another; the scrape side therefore needs no lock either. We open the
 * listening socket ourselves and hand it over, because then a refused
 * bind reports its errno (address in use, not ours to take) instead of
 * a bare failure.
 */
#include "metrics.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* The whole scrape is about 5 KiB; six times the room absorbs new
 * metrics and labels long before anything is cut off. */
#define SCRAPE_MAX (32 * 1024)
/* A scraper, a health check and a curious operator at once, with room
 * to spare; more would only be somebody hammering the port. */
#define HTTP_CONNECTIONS_MAX 16
/* Seconds an idle or slow client may hold a connection. */
#define HTTP_TIMEOUT_S 10
#define LISTEN_BACKLOG 16

#define TEXT_FORMAT "text/plain; version=0.0.4; charset=utf-8"

/* Jobs here take milliseconds: on the corpus, the default job (one
 * upsert) took under 5 ms for nine in ten messages and never 50 ms, and
 * limits.lua stops a job at 30 s. The fine steps up to 0.1 s show a
 * database slowing down long before jobs fail; the coarse ones above show
 * how close slow jobs come to the time budget, the last one at it. */
static const double job_bounds[] = { 0.0005, 0.001, 0.0025, 0.005, 0.01,
				     0.025,  0.05,  0.1,    0.25,  0.5,
				     1,	     2.5,   5,	    10,	   30 };
#define NBOUNDS (sizeof job_bounds / sizeof job_bounds[0])

struct metric_desc {
	const char *name;
	const char *help;
};

static const struct metric_desc counter_desc[MC_COUNT] = {
	[MC_BYTES_IN] = { "moonrabbit_received_bytes_total",
			  "Message body bytes received, as the content "
			  "headers declared them; refused bodies included." },
	[MC_PAUSES] = { "moonrabbit_intake_pauses_total",
			"Times the memory policy paused intake." },
	[MC_ALERTS_SENT] = { "moonrabbit_alerts_sent_total",
			     "Alerts the webhook accepted." },
	[MC_ALERTS_DROPPED] = { "moonrabbit_alerts_dropped_total",
				"Alerts given up: the queue was full or the "
				"webhook kept failing." },
	[MC_RECONNECTS] = { "moonrabbit_broker_reconnects_total",
			    "Broker connections re-established after one "
			    "failed." },
};

static const struct metric_desc gauge_desc[MG_COUNT] = {
	[MG_IN_FLIGHT] = { "moonrabbit_deliveries_in_flight",
			   "Deliveries received and not yet acked or "
			   "rejected." },
	[MG_JOBS_QUEUED] = { "moonrabbit_jobs_queued",
			     "Jobs waiting for a worker thread." },
	[MG_JOBS_ACTIVE] = { "moonrabbit_jobs_active",
			     "Worker threads running a job." },
	[MG_POOL_THREADS] = { "moonrabbit_pool_threads",
			      "Worker threads, each with its own Lua state." },
	[MG_DB_OPEN] = { "moonrabbit_db_connections_open",
			 "Database connections the pool holds; below "
			 "DB_POOL_SIZE while the server is short of slots." },
	[MG_DB_IN_USE] = { "moonrabbit_db_connections_in_use",
			   "Database connections checked out of the pool." },
	[MG_DB_WAITING] = { "moonrabbit_db_connection_waiters",
			    "Jobs waiting for a database connection." },
	[MG_MEM_RSS] = { "moonrabbit_memory_rss_bytes",
			 "Resident set size at the last memory sample." },
	[MG_MEM_WORKING_SET] = { "moonrabbit_memory_working_set_bytes",
				 "Cgroup usage less inactive file pages at the "
				 "last memory sample." },
	[MG_MEM_USAGE] = { "moonrabbit_memory_usage_bytes",
			   "Cgroup memory usage at the last memory sample." },
	[MG_MEM_LIMIT] = { "moonrabbit_memory_limit_bytes",
			   "Memory limit in force: DOCKER_MEMORY_LIMIT, the "
			   "cgroup's, or the machine's." },
	[MG_MEM_LEVEL] = { "moonrabbit_memory_level",
			   "Memory level from memory.lua: 0 ok, 1 warning, "
			   "2 alert, 3 critical." },
	[MG_MEM_RATIO] = { "moonrabbit_memory_ratio",
			   "Memory use over the limit as memory.lua judged "
			   "it; 1 is at the limit." },
	[MG_PREFETCH] = { "moonrabbit_prefetch",
			  "Unacked deliveries the broker may send; memory.lua "
			  "lowers it as headroom shrinks." },
	[MG_PAUSED] = { "moonrabbit_intake_paused",
			"1 while memory.lua holds intake paused." },
	[MG_CONNECTED] = { "moonrabbit_broker_connected",
			   "1 while the broker connection is open." },
	[MG_CONSUMING] = { "moonrabbit_consuming",
			   "1 while a consumer is registered on the queue." },
};

struct metrics {
	struct MHD_Daemon *daemon;
	int port;
	_Atomic uint64_t outcomes[OUTCOME_COUNT];
	_Atomic uint64_t counters[MC_COUNT];
	_Atomic uint64_t gauges[MG_COUNT];     /* bit patterns of doubles */
	_Atomic uint64_t buckets[NBOUNDS + 1]; /* the last: above them all */
	_Atomic uint64_t job_ns;
	_Atomic uint64_t last_tick_ns;
	_Atomic uint64_t stale_ns;
};


static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}


/* ---- address ------------------------------------------------------- */

/* Splits text into host (brackets removed) and port text; returns a
 * reason for the operator, or NULL when the shape is right. */
static const char *split_addr(const char *text, char *host, size_t cap,
			      const char **port, int *v6)
{
	const char *start = text;
	const char *colon;
	size_t n;

	*v6 = text[0] == '[';
	if (*v6) {
		const char *close = strchr(text, ']');

		if (!close || close[1] != ':')
			return "an IPv6 address needs brackets and a port";
		start = text + 1;
		colon = close + 1;
		n = (size_t)(close - start);
	} else {
		colon = strrchr(text, ':');
		if (!colon)
			return "the port is missing";
		n = (size_t)(colon - text);
	}
	if (n == 0 || n >= cap)
		return "the address is missing or too long";
	memcpy(host, start, n);
	host[n] = '\0';
	*port = colon + 1;
	return NULL;
}


/* Returns a reason, or NULL with *out the port. */
static const char *parse_port(const char *s, int *out)
{
	char *end = NULL;
	long v;

	if (!isdigit((unsigned char)s[0]))
		return "the port must be a number from 1 to 65535";
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || v < 1 || v > 65535)
		return "the port must be a number from 1 to 65535";
	*out = (int)v;
	return NULL;
}


int metrics_parse_addr(const char *text, char *host, size_t hostlen, int *port,
		       char *err, size_t errlen)
{
	unsigned char probe[sizeof(struct in6_addr)];
	char h[METRICS_HOST_MAX];
	const char *port_text = NULL;
	const char *why;
	int v6 = 0;
	int p = 0;

	if (!text || !*text || !strcmp(text, "off")) {
		if (hostlen)
			host[0] = '\0';
		*port = 0;
		return 0;
	}
	why = split_addr(text, h, sizeof h, &port_text, &v6);
	if (!why && !v6 && !strcmp(h, "localhost"))
		snprintf(h, sizeof h, "127.0.0.1");
	if (!why && inet_pton(v6 ? AF_INET6 : AF_INET, h, probe) != 1)
		why = "the address must be numeric IPv4, [IPv6] or localhost";
	if (!why)
		why = parse_port(port_text, &p);
	if (!why && strlen(h) >= hostlen)
		why = "the address does not fit the caller's buffer";
	if (why) {
		snprintf(err, errlen,
			 "METRICS_ADDR=\"%s\" is not usable (%s): write it as "
			 "address:port, e.g. 127.0.0.1:9464, [::1]:9464, "
			 "0.0.0.0:9464 in a container, or off",
			 text, why);
		return -EINVAL;
	}
	memcpy(host, h, strlen(h) + 1);
	*port = p;
	return 0;
}


/* ---- updates ------------------------------------------------------- */

void metrics_outcome(struct metrics *m, enum outcome o)
{
	if (m && (unsigned)o < OUTCOME_COUNT)
		atomic_fetch_add_explicit(&m->outcomes[o], 1,
					  memory_order_relaxed);
}


void metrics_add(struct metrics *m, enum metrics_counter c, uint64_t n)
{
	if (m && (unsigned)c < MC_COUNT)
		atomic_fetch_add_explicit(&m->counters[c], n,
					  memory_order_relaxed);
}


void metrics_set(struct metrics *m, enum metrics_gauge g, double v)
{
	uint64_t bits;

	if (!m || (unsigned)g >= MG_COUNT)
		return;
	memcpy(&bits, &v, sizeof bits);
	atomic_store_explicit(&m->gauges[g], bits, memory_order_relaxed);
}


void metrics_job_seconds(struct metrics *m, double seconds)
{
	size_t i = 0;

	if (!m || !(seconds >= 0))
		return;
	/* Past about 584 years the nanosecond sum would wrap; a clock
	 * jump is the only way there, so cap one observation at a day. */
	if (seconds > 86400)
		seconds = 86400;
	while (i < NBOUNDS && seconds > job_bounds[i])
		i++;
	atomic_fetch_add_explicit(&m->buckets[i], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&m->job_ns, (uint64_t)llround(seconds * 1e9),
				  memory_order_relaxed);
}


void metrics_tick(struct metrics *m)
{
	if (m)
		atomic_store_explicit(&m->last_tick_ns, now_ns(),
				      memory_order_relaxed);
}


/* ---- reading -------------------------------------------------------- */

static uint64_t get(_Atomic uint64_t *v)
{
	return atomic_load_explicit(v, memory_order_relaxed);
}


static double gauge(struct metrics *m, enum metrics_gauge g)
{
	uint64_t bits = get(&m->gauges[g]);
	double v;

	memcpy(&v, &bits, sizeof v);
	return v;
}


static double tick_age_s(struct metrics *m)
{
	uint64_t last = get(&m->last_tick_ns);
	uint64_t now = now_ns();

	return now > last ? (double)(now - last) / 1e9 : 0.0;
}


static int healthy(struct metrics *m)
{
	return tick_age_s(m) * 1e9 <= (double)get(&m->stale_ns);
}


/* ---- the text format ------------------------------------------------ */

struct text {
	char *buf;
	size_t len;
	size_t cap;
	int full; /* something did not fit: the scrape is refused */
};


static void put(struct text *t, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));


/* Appends to t; once something does not fit, nothing more is added. */
static void put(struct text *t, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (t->full)
		return;
	va_start(ap, fmt);
	n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= t->cap - t->len)
		t->full = 1;
	else
		t->len += (size_t)n;
}


/* Writes v the way Prometheus reads it back exactly: the shortest of 15
 * or 17 significant digits that round-trips, and NaN, +Inf, -Inf. */
static void fmt_value(char *out, size_t cap, double v)
{
	if (isnan(v))
		snprintf(out, cap, "NaN");
	else if (isinf(v))
		snprintf(out, cap, v > 0 ? "+Inf" : "-Inf");
	else if (snprintf(out, cap, "%.15g", v) > 0 && strtod(out, NULL) != v)
		snprintf(out, cap, "%.17g", v);
}


static void put_head(struct text *t, const char *name, const char *type,
		     const char *help)
{
	put(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}


static void put_counters(struct text *t, struct metrics *m)
{
	put_head(t, "moonrabbit_messages_total", "counter",
		 "Deliveries settled, by outcome; each gets exactly one.");
	for (int o = 0; o < OUTCOME_COUNT; o++)
		put(t,
		    "moonrabbit_messages_total{outcome=\"%s\"} %" PRIu64 "\n",
		    outcome_name((enum outcome)o), get(&m->outcomes[o]));
	for (int c = 0; c < MC_COUNT; c++) {
		put_head(t, counter_desc[c].name, "counter",
			 counter_desc[c].help);
		put(t, "%s %" PRIu64 "\n", counter_desc[c].name,
		    get(&m->counters[c]));
	}
}


static void put_gauge(struct text *t, const char *name, const char *help,
		      double v)
{
	char num[32];

	fmt_value(num, sizeof num, v);
	put_head(t, name, "gauge", help);
	put(t, "%s %s\n", name, num);
}


static void put_gauges(struct text *t, struct metrics *m)
{
	for (int g = 0; g < MG_COUNT; g++)
		put_gauge(t, gauge_desc[g].name, gauge_desc[g].help,
			  gauge(m, (enum metrics_gauge)g));
	put_gauge(t, "moonrabbit_loop_tick_age_seconds",
		  "Seconds since the consume loop last turned; /healthz fails "
		  "past the stale limit.",
		  tick_age_s(m));
}


static void put_histogram(struct text *t, struct metrics *m)
{
	static const char name[] = "moonrabbit_job_duration_seconds";
	uint64_t total = 0;
	char num[32];

	put_head(t, name, "histogram",
		 "Time a worker spent on one job: decoding, the job script "
		 "and its database work.");
	for (size_t i = 0; i < NBOUNDS; i++) {
		total += get(&m->buckets[i]);
		fmt_value(num, sizeof num, job_bounds[i]);
		put(t, "%s_bucket{le=\"%s\"} %" PRIu64 "\n", name, num, total);
	}
	total += get(&m->buckets[NBOUNDS]);
	put(t, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", name, total);
	fmt_value(num, sizeof num, (double)get(&m->job_ns) / 1e9);
	put(t, "%s_sum %s\n%s_count %" PRIu64 "\n", name, num, name, total);
}


/* ---- HTTP ----------------------------------------------------------- */

/* Queues body (len bytes) with status; mode says who owns body. */
static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status,
			     const char *type, void *body, size_t len,
			     enum MHD_ResponseMemoryMode mode)
{
	struct MHD_Response *r;
	enum MHD_Result rc;

	r = MHD_create_response_from_buffer(len, body, mode);
	if (!r) {
		if (mode == MHD_RESPMEM_MUST_FREE)
			free(body);
		return MHD_NO;
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
		MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
	rc = MHD_queue_response(conn, status, r);
	MHD_destroy_response(r);
	return rc;
}


static enum MHD_Result reply_text(struct MHD_Connection *conn, unsigned status,
				  const char *text)
{
	return reply(conn, status, "text/plain; charset=utf-8", (void *)text,
		     strlen(text), MHD_RESPMEM_MUST_COPY);
}


static enum MHD_Result serve_metrics(struct MHD_Connection *conn,
				     struct metrics *m)
{
	struct text t = { .cap = SCRAPE_MAX };

	t.buf = malloc(t.cap);
	if (!t.buf)
		return reply_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR,
				  "out of memory\n");
	put_counters(&t, m);
	put_gauges(&t, m);
	put_histogram(&t, m);
	if (t.full) {
		free(t.buf);
		return reply_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR,
				  "scrape larger than SCRAPE_MAX\n");
	}
	return reply(conn, MHD_HTTP_OK, TEXT_FORMAT, t.buf, t.len,
		     MHD_RESPMEM_MUST_FREE);
}


static enum MHD_Result serve_healthz(struct MHD_Connection *conn,
				     struct metrics *m)
{
	char body[128];

	if (healthy(m))
		return reply_text(conn, MHD_HTTP_OK, "ok\n");
	snprintf(body, sizeof body,
		 "stale: the consume loop last turned %.1f s ago\n",
		 tick_age_s(m));
	return reply_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, body);
}


/* Ready means a load balancer or orchestrator may count on this worker
 * taking messages now; the body lists every reason it is not. */
static enum MHD_Result serve_readyz(struct MHD_Connection *conn,
				    struct metrics *m)
{
	struct text t = { .cap = 128 };
	char body[128];

	t.buf = body;
	put(&t, "not ready:");
	if (!healthy(m))
		put(&t, " loop stale,");
	if (gauge(m, MG_CONNECTED) == 0)
		put(&t, " not connected,");
	if (gauge(m, MG_CONSUMING) == 0)
		put(&t, " not consuming,");
	if (gauge(m, MG_PAUSED) != 0)
		put(&t, " paused,");
	if (t.len == strlen("not ready:"))
		return reply_text(conn, MHD_HTTP_OK, "ready\n");
	body[t.len - 1] = '\n';
	return reply_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, body);
}


static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn,
				  const char *url, const char *method,
				  const char *version, const char *upload,
				  size_t *upload_size, void **req_cls)
{
	struct metrics *m = cls;

	(void)version;
	(void)upload;
	(void)upload_size;
	(void)req_cls;
	if (strcmp(method, MHD_HTTP_METHOD_GET) &&
	    strcmp(method, MHD_HTTP_METHOD_HEAD))
		return reply_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED,
				  "use GET\n");
	if (!strcmp(url, "/metrics"))
		return serve_metrics(conn, m);
	if (!strcmp(url, "/healthz"))
		return serve_healthz(conn, m);
	if (!strcmp(url, "/readyz"))
		return serve_readyz(conn, m);
	return reply_text(conn, MHD_HTTP_NOT_FOUND,
			  "not found: try /metrics, /healthz or /readyz\n");
}


/* ---- start and stop ------------------------------------------------- */

/* Fills ss with the numeric host and port; returns its length. */
static socklen_t make_sockaddr(const char *host, int port,
			       struct sockaddr_storage *ss)
{
	struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof *ss);
	if (strchr(host, ':')) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)port);
		inet_pton(AF_INET6, host, &in6->sin6_addr);
		return sizeof *in6;
	}
	in4->sin_family = AF_INET;
	in4->sin_port = htons((uint16_t)port);
	inet_pton(AF_INET, host, &in4->sin_addr);
	return sizeof *in4;
}


/* Binds and listens on host:port. Returns the socket, or a negative
 * errno with err naming METRICS_ADDR. */
static int open_listener(const char *addr, const char *host, int port,
			 char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t len = make_sockaddr(host, port, &ss);
	int one = 1;
	int fd, rc;

	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK,
		    0);
	if (fd < 0)
		goto fail;
	/* A restarted worker must not wait out TIME_WAIT of the last
	 * scrape; an address someone listens on still refuses the bind. */
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
	if (bind(fd, (struct sockaddr *)&ss, len) < 0 ||
	    listen(fd, LISTEN_BACKLOG) < 0)
		goto fail;
	return fd;
fail:
	rc = -errno;
	snprintf(err, errlen, "METRICS_ADDR=\"%s\": failed to listen: %s", addr,
		 strerror(-rc));
	if (fd >= 0)
		close(fd);
	return rc;
}


static int bound_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof ss;

	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
		return 0;
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}


int metrics_start(const char *addr, struct metrics **out, char *err,
		  size_t errlen)
{
	char host[METRICS_HOST_MAX];
	struct metrics *m = NULL;
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO;
	struct MHD_OptionItem opts[] = {
		{ MHD_OPTION_LISTEN_SOCKET, -1, NULL },
		{ MHD_OPTION_CONNECTION_LIMIT, HTTP_CONNECTIONS_MAX, NULL },
		{ MHD_OPTION_CONNECTION_TIMEOUT, HTTP_TIMEOUT_S, NULL },
		{ MHD_OPTION_END, 0, NULL },
	};
	int port, fd, rc;

	rc = metrics_parse_addr(addr, host, sizeof host, &port, err, errlen);
	if (rc < 0)
		return rc;
	if (port == 0) {
		*out = NULL;
		return 0;
	}
	m = calloc(1, sizeof *m);
	if (!m)
		return -ENOMEM;
	fd = open_listener(addr, host, port, err, errlen);
	if (fd < 0) {
		free(m);
		return fd;
	}
	opts[0].value = fd;
	m->port = bound_port(fd);
	atomic_store(&m->last_tick_ns, now_ns());
	atomic_store(&m->stale_ns, (uint64_t)(METRICS_STALE_S * 1e9));
	if (strchr(host, ':'))
		flags |= MHD_USE_IPv6;
	/* From here on the daemon owns fd and closes it when stopped. */
	m->daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_request, m,
				     MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
	if (!m->daemon) {
		snprintf(err, errlen,
			 "METRICS_ADDR=\"%s\": failed to start the HTTP server",
			 addr);
		close(fd);
		free(m);
		return -EIO;
	}
	*out = m;
	return 0;
}


int metrics_port(const struct metrics *m)
{
	return m ? m->port : 0;
}


void metrics_set_stale_after(struct metrics *m, double seconds)
{
	if (m && seconds >= 0)
		atomic_store(&m->stale_ns, (uint64_t)(seconds * 1e9));
}


void metrics_stop(struct metrics *m)
{
	if (!m)
		return;
	MHD_stop_daemon(m->daemon);
	free(m);
}
