/*
 * The metrics server on a loopback port, scraped over a plain socket the
 * way Prometheus and a health check would: exact lines after known
 * updates, health and readiness, the refusals, and promtool's verdict on
 * the whole scrape.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "metrics.h"

#define BODY_MAX (64 * 1024)

struct response {
	int status;
	char head[2048];
	char body[BODY_MAX];
};


static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}


/* Asks the kernel for a port nobody uses on 127.0.0.1. Another process
 * could take it before the server binds; start_on_free_port() retries. */
static int free_port(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t len = sizeof sa;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	int port = 0;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
	    getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
		port = ntohs(sa.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}


static struct metrics *start_on_free_port(void)
{
	struct metrics *m = NULL;
	char addr[64];
	char err[256];

	for (int i = 0; i < 5; i++) {
		snprintf(addr, sizeof addr, "127.0.0.1:%d", free_port());
		if (metrics_start(addr, &m, err, sizeof err) == 0)
			return m;
	}
	fprintf(stderr, "metrics_start: %s\n", err);
	exit(1);
}


/* Sends one HTTP/1.0 request to 127.0.0.1:port and reads the reply until
 * the server closes. Returns 0, or -1 when the exchange failed. */
static int http(int port, const char *method, const char *path,
		struct response *r)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	struct timeval tv = { 5, 0 };
	static char raw[BODY_MAX + 2048];
	size_t got = 0;
	char *split;
	ssize_t n;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	memset(r, 0, sizeof *r);
	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
		goto fail;
	n = snprintf(raw, sizeof raw, "%s %s HTTP/1.0\r\nHost: x\r\n\r\n",
		     method, path);
	if (write(fd, raw, (size_t)n) != n)
		goto fail;
	while (got < sizeof raw - 1 &&
	       (n = read(fd, raw + got, sizeof raw - 1 - got)) > 0)
		got += (size_t)n;
	raw[got] = '\0';
	close(fd);
	split = strstr(raw, "\r\n\r\n");
	if (!split || sscanf(raw, "HTTP/1.%*d %d", &r->status) != 1)
		return -1;
	snprintf(r->head, sizeof r->head, "%.*s", (int)(split - raw), raw);
	snprintf(r->body, sizeof r->body, "%s", split + 4);
	return 0;
fail:
	close(fd);
	return -1;
}


/* True when text holds line as a whole line. */
static int has_line(const char *text, const char *line)
{
	size_t n = strlen(line);

	for (const char *p = strstr(text, line); p; p = strstr(p + 1, line))
		if ((p == text || p[-1] == '\n') && p[n] == '\n')
			return 1;
	return 0;
}


#define CHECK_LINE(line, text)                                                 \
	do {                                                                   \
		check_count++;                                                 \
		if (!has_line((text), (line))) {                               \
			check_failures++;                                      \
			fprintf(stderr, "%s:%d: no line \"%s\" in:\n%s\n",     \
				__FILE__, __LINE__, (line), (text));           \
		}                                                              \
	} while (0)


static int count_prefix(const char *text, const char *prefix)
{
	int n = 0;

	for (const char *p = text; p && *p; p = strchr(p, '\n'), p += !!p)
		n += !strncmp(p, prefix, strlen(prefix));
	return n;
}


static void test_parse_addr(void)
{
	static const struct {
		const char *text;
		const char *host; /* NULL: refused */
		int port;
		const char *why;
	} rows[] = {
		{ "127.0.0.1:9464", "127.0.0.1", 9464, NULL },
		{ "0.0.0.0:9464", "0.0.0.0", 9464, NULL },
		{ "[::1]:9000", "::1", 9000, NULL },
		{ "[::]:1", "::", 1, NULL },
		{ "localhost:65535", "127.0.0.1", 65535, NULL },
		{ "off", "", 0, NULL },
		{ "", "", 0, NULL },
		{ "9464", NULL, 0, "the port is missing" },
		{ "127.0.0.1:", NULL, 0, "from 1 to 65535" },
		{ "127.0.0.1:0", NULL, 0, "from 1 to 65535" },
		{ "127.0.0.1:65536", NULL, 0, "from 1 to 65535" },
		{ "127.0.0.1:94x", NULL, 0, "from 1 to 65535" },
		{ "127.0.0.1:-5", NULL, 0, "from 1 to 65535" },
		{ "127.0.0.1: 80", NULL, 0, "from 1 to 65535" },
		{ ":9464", NULL, 0, "the address is missing" },
		{ "example.com:9464", NULL, 0, "must be numeric" },
		{ "::1:9464", NULL, 0, "must be numeric" },
		{ "[::1]9464", NULL, 0, "needs brackets and a port" },
		{ "[127.0.0.1]:80", NULL, 0, "must be numeric" },
		{ "OFF", NULL, 0, "the port is missing" },
	};
	char host[METRICS_HOST_MAX];
	char err[512];
	char want[128];
	int port;

	for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		int rc;

		snprintf(host, sizeof host, "untouched");
		port = -1;
		err[0] = '\0';
		rc = metrics_parse_addr(rows[i].text, host, sizeof host, &port,
					err, sizeof err);
		if (rows[i].host) {
			CHECK_INT(0, rc);
			CHECK_STR(rows[i].host, host);
			CHECK_INT(rows[i].port, port);
			continue;
		}
		CHECK_INT(-EINVAL, rc);
		CHECK_STR("untouched", host);
		CHECK_INT(-1, port);
		snprintf(want, sizeof want, "METRICS_ADDR=\"%s\" is not usable",
			 rows[i].text);
		CHECK_CONTAINS(want, err);
		CHECK_CONTAINS(rows[i].why, err);
		CHECK_CONTAINS("127.0.0.1:9464", err);
	}
	CHECK_INT(0, metrics_parse_addr(NULL, host, sizeof host, &port, err,
					sizeof err));
	CHECK_INT(0, port);
	/* A buffer too small for the address is refused, not overrun. */
	CHECK_INT(-EINVAL, metrics_parse_addr("127.0.0.1:1", host, 5, &port,
					      err, sizeof err));
}


/* "off" gives no server, and every call takes the NULL it hands out. */
static void test_disabled(void)
{
	struct metrics *m = (struct metrics *)&m;
	char err[256];

	CHECK_INT(0, metrics_start("off", &m, err, sizeof err));
	CHECK_INT(1, m == NULL);
	metrics_outcome(NULL, OUTCOME_OK);
	metrics_add(NULL, MC_PAUSES, 1);
	metrics_set(NULL, MG_PAUSED, 1);
	metrics_job_seconds(NULL, 1);
	metrics_tick(NULL);
	metrics_set_stale_after(NULL, 1);
	CHECK_INT(0, metrics_port(NULL));
	metrics_stop(NULL);
}


static int open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	while (d && readdir(d))
		n++;
	if (d)
		closedir(d);
	return n;
}


/* A refused address and a taken port are reported with METRICS_ADDR;
 * stopping gives the port and every descriptor back. */
static void test_start_errors(void)
{
	struct metrics *m = start_on_free_port();
	struct metrics *other = NULL;
	char addr[64];
	char err[256];
	int fds;

	snprintf(addr, sizeof addr, "127.0.0.1:%d", metrics_port(m));
	CHECK_INT(-EADDRINUSE, metrics_start(addr, &other, err, sizeof err));
	CHECK_CONTAINS("failed to listen: Address already in use", err);
	CHECK_CONTAINS(addr, err);
	CHECK_INT(-EINVAL, metrics_start("nowhere", &other, err, sizeof err));
	CHECK_CONTAINS("METRICS_ADDR=\"nowhere\" is not usable", err);
	CHECK_INT(1, other == NULL);
	metrics_stop(m);

	fds = open_fds();
	CHECK_INT(0, metrics_start(addr, &m, err, sizeof err));
	metrics_stop(m);
	CHECK_INT(fds, open_fds());
}


/* IPv6 loopback where the machine has it; containers often do not. */
static void test_ipv6(void)
{
	struct sockaddr_in6 sa = { .sin6_family = AF_INET6 };
	socklen_t len = sizeof sa;
	struct metrics *m = NULL;
	int fd = socket(AF_INET6, SOCK_STREAM, 0);
	char addr[64];
	char err[256];

	sa.sin6_addr = in6addr_loopback;
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
		printf("SKIP ipv6: no [::1] here\n");
		if (fd >= 0)
			close(fd);
		return;
	}
	close(fd);
	snprintf(addr, sizeof addr, "[::1]:%d", ntohs(sa.sin6_port));
	CHECK_INT(0, metrics_start(addr, &m, err, sizeof err));
	CHECK_INT(ntohs(sa.sin6_port), metrics_port(m));
	metrics_stop(m);
}


static void test_initial_scrape(struct metrics *m)
{
	struct response r;

	CHECK_INT(0, http(metrics_port(m), "GET", "/metrics", &r));
	CHECK_INT(200, r.status);
	CHECK_CONTAINS("Content-Type: text/plain; version=0.0.4", r.head);
	for (int o = 0; o < OUTCOME_COUNT; o++) {
		char line[128];

		snprintf(line, sizeof line,
			 "moonrabbit_messages_total{outcome=\"%s\"} 0",
			 outcome_name((enum outcome)o));
		CHECK_LINE(line, r.body);
	}
	CHECK_LINE("# TYPE moonrabbit_messages_total counter", r.body);
	CHECK_LINE("# TYPE moonrabbit_job_duration_seconds histogram", r.body);
	CHECK_LINE("moonrabbit_job_duration_seconds_count 0", r.body);
	CHECK_LINE("moonrabbit_intake_paused 0", r.body);
	/* One HELP and one TYPE per family: the outcomes, each counter and
	 * gauge, the tick age and the histogram. */
	CHECK_INT(MC_COUNT + MG_COUNT + 3, count_prefix(r.body, "# TYPE "));
	CHECK_INT(MC_COUNT + MG_COUNT + 3, count_prefix(r.body, "# HELP "));
}


static void test_exact_lines(struct metrics *m)
{
	static const double jobs[] = { 0.0003, 0.003, 0.003, 0.2, 45 };
	static const char *const want[] = {
		"moonrabbit_messages_total{outcome=\"ok\"} 3",
		"moonrabbit_messages_total{outcome=\"job_error\"} 1",
		"moonrabbit_messages_total{outcome=\"shutdown\"} 0",
		"moonrabbit_received_bytes_total 5000000000",
		"moonrabbit_intake_pauses_total 2",
		"moonrabbit_broker_reconnects_total 0",
		"moonrabbit_memory_limit_bytes 2147483648",
		"moonrabbit_memory_ratio 0.1",
		"moonrabbit_memory_level 2",
		"moonrabbit_pool_threads 8",
		"moonrabbit_db_connection_waiters 0",
		"moonrabbit_job_duration_seconds_bucket{le=\"0.0005\"} 1",
		"moonrabbit_job_duration_seconds_bucket{le=\"0.0025\"} 1",
		"moonrabbit_job_duration_seconds_bucket{le=\"0.005\"} 3",
		"moonrabbit_job_duration_seconds_bucket{le=\"0.25\"} 4",
		"moonrabbit_job_duration_seconds_bucket{le=\"30\"} 4",
		"moonrabbit_job_duration_seconds_bucket{le=\"+Inf\"} 5",
		"moonrabbit_job_duration_seconds_sum 45.2063",
		"moonrabbit_job_duration_seconds_count 5",
	};
	struct response r;

	for (int i = 0; i < 3; i++)
		metrics_outcome(m, OUTCOME_OK);
	metrics_outcome(m, OUTCOME_JOB_ERROR);
	metrics_add(m, MC_BYTES_IN, 3000000000u);
	metrics_add(m, MC_BYTES_IN, 2000000000u);
	metrics_add(m, MC_PAUSES, 2);
	metrics_set(m, MG_MEM_LIMIT, 2147483648.0);
	metrics_set(m, MG_MEM_RATIO, 0.1);
	metrics_set(m, MG_MEM_LEVEL, 2);
	metrics_set(m, MG_POOL_THREADS, 8);
	for (size_t i = 0; i < sizeof jobs / sizeof jobs[0]; i++)
		metrics_job_seconds(m, jobs[i]);
	metrics_job_seconds(m, -1); /* a clock step back: not a job */

	CHECK_INT(0, http(metrics_port(m), "GET", "/metrics", &r));
	for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
		CHECK_LINE(want[i], r.body);
}


static void test_healthz(struct metrics *m)
{
	struct response r;
	int port = metrics_port(m);

	CHECK_INT(0, http(port, "GET", "/healthz", &r));
	CHECK_INT(200, r.status);
	CHECK_STR("ok\n", r.body);

	metrics_set_stale_after(m, 0.05);
	sleep_ms(120);
	CHECK_INT(0, http(port, "GET", "/healthz", &r));
	CHECK_INT(503, r.status);
	CHECK_CONTAINS("stale: the consume loop last turned", r.body);

	metrics_set_stale_after(m, 60);
	metrics_tick(m);
	CHECK_INT(0, http(port, "GET", "/healthz", &r));
	CHECK_INT(200, r.status);
	CHECK_INT(0, http(port, "HEAD", "/healthz", &r));
	CHECK_INT(200, r.status);
	CHECK_STR("", r.body);
}


static void test_readyz(struct metrics *m)
{
	struct response r;
	int port = metrics_port(m);

	CHECK_INT(0, http(port, "GET", "/readyz", &r));
	CHECK_INT(503, r.status);
	CHECK_STR("not ready: not connected, not consuming\n", r.body);

	metrics_set(m, MG_CONNECTED, 1);
	metrics_set(m, MG_CONSUMING, 1);
	CHECK_INT(0, http(port, "GET", "/readyz", &r));
	CHECK_INT(200, r.status);
	CHECK_STR("ready\n", r.body);

	metrics_set(m, MG_PAUSED, 1);
	metrics_set(m, MG_CONSUMING, 0);
	CHECK_INT(0, http(port, "GET", "/readyz", &r));
	CHECK_INT(503, r.status);
	CHECK_STR("not ready: not consuming, paused\n", r.body);

	metrics_set(m, MG_PAUSED, 0);
	metrics_set(m, MG_CONSUMING, 1);
	metrics_set_stale_after(m, 0);
	sleep_ms(5);
	CHECK_INT(0, http(port, "GET", "/readyz", &r));
	CHECK_INT(503, r.status);
	CHECK_STR("not ready: loop stale\n", r.body);
	metrics_set_stale_after(m, 60);
}


static void test_refusals(struct metrics *m)
{
	static const char *const paths[] = { "/", "/nope", "/metrics/",
					     "/healthz/x", "/METRICS" };
	struct response r;
	int port = metrics_port(m);

	for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
		CHECK_INT(0, http(port, "GET", paths[i], &r));
		CHECK_INT(404, r.status);
	}
	CHECK_INT(0, http(port, "POST", "/metrics", &r));
	CHECK_INT(405, r.status);
	CHECK_CONTAINS("Allow: GET, HEAD", r.head);
	/* A query string is not part of the path. */
	CHECK_INT(0, http(port, "GET", "/healthz?verbose=1", &r));
	CHECK_INT(200, r.status);
}


/* promtool parses the scrape and lints names, types and help texts. */
static void test_promtool(struct metrics *m)
{
	char path[] = "/tmp/mr-metrics-XXXXXX";
	char cmd[256];
	struct response r;
	FILE *f;
	int fd, rc;

	if (system("command -v promtool >/dev/null 2>&1") != 0) {
		printf("SKIP promtool check: promtool not installed "
		       "(Debian package prometheus, tools/install-deps.sh)\n");
		return;
	}
	CHECK_INT(0, http(metrics_port(m), "GET", "/metrics", &r));
	fd = mkstemp(path);
	f = fd >= 0 ? fdopen(fd, "w") : NULL;
	if (!f) {
		check_failures++;
		fprintf(stderr, "failed to create %s\n", path);
		return;
	}
	fputs(r.body, f);
	fclose(f);
	snprintf(cmd, sizeof cmd, "promtool check metrics < %s", path);
	rc = system(cmd);
	CHECK_INT(0, rc);
	unlink(path);
}


#define HAMMER_ROUNDS 20000

static void *hammer(void *arg)
{
	struct metrics *m = arg;

	for (int i = 0; i < HAMMER_ROUNDS; i++) {
		metrics_outcome(m, OUTCOME_INVALID_JSON);
		metrics_add(m, MC_ALERTS_DROPPED, 3);
		metrics_job_seconds(m, 0.001);
		metrics_set(m, MG_IN_FLIGHT, i);
		metrics_tick(m);
	}
	return NULL;
}


/* Four threads update while the test scrapes; nothing is lost. */
static void test_threads(struct metrics *m)
{
	pthread_t t[4];
	struct response r;
	char line[128];

	for (int i = 0; i < 4; i++)
		pthread_create(&t[i], NULL, hammer, m);
	for (int i = 0; i < 5; i++)
		CHECK_INT(0, http(metrics_port(m), "GET", "/metrics", &r));
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);

	CHECK_INT(0, http(metrics_port(m), "GET", "/metrics", &r));
	snprintf(line, sizeof line,
		 "moonrabbit_messages_total{outcome=\"invalid_json\"} %d",
		 4 * HAMMER_ROUNDS);
	CHECK_LINE(line, r.body);
	snprintf(line, sizeof line, "moonrabbit_alerts_dropped_total %d",
		 12 * HAMMER_ROUNDS);
	CHECK_LINE(line, r.body);
	CHECK_LINE("moonrabbit_deliveries_in_flight 19999", r.body);
}


int main(void)
{
	struct metrics *m;

	test_parse_addr();
	test_disabled();
	test_start_errors();
	test_ipv6();

	m = start_on_free_port();
	test_initial_scrape(m);
	test_exact_lines(m);
	test_healthz(m);
	test_readyz(m);
	test_refusals(m);
	test_promtool(m);
	test_threads(m);
	test_promtool(m);
	metrics_stop(m);
	return check_report("test_metrics");
}
