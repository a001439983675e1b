/*
 * The alerts thread. Callers copy alerts into a ring under a mutex and
 * signal; the thread takes them one at a time, asks alerts.lua for the
 * de-duplication key (route) and the request (format), and turns each
 * alert that is news into one delivery per URL in an outbox. Each turn
 * of the loop sends the delivery that has been due longest; a failed one
 * that may be retried gets a new due time, so a receiver asking for a
 * minute's pause (Retry-After) holds up neither the other URLs nor the
 * alerts behind it. Only the thread touches the Lua state, the outbox and
 * the de-duplication table; the mutex guards the ring, the counters and
 * the pending policy. A reload leaves a checked policy pending and the
 * thread swaps it in between two alerts, so the state a route() or
 * format() runs in is never closed under it, and the de-duplication
 * table, being the thread's and not the policy's, outlives the swap.
 *
 * Transfers run on a multi handle the thread owns, one easy handle per
 * send, so alerts_stop() can wake a transfer that hangs and end it at the
 * stop deadline instead of waiting out its timeout.
 */
#include "alerts.h"

#include <curl/curl.h>
#include <errno.h>
#include <lauxlib.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "alert_payload.h"
#include "config.h"
#include "log.h"
#include "policy.h"

/* After a stop is asked for, queued alerts get this long to go out; the
 * rest of ALERTS_STOP_MS is margin for ending the thread. */
#define FLUSH_MS 1000
/* A transfer checks for a stop at least this often. */
#define POLL_MS 1000
/* Conditions remembered for de-duplication. Past this the least recently
 * used inactive one is forgotten (failing that, an active one). */
#define DEDUP_MAX     64
#define SHOWN_URL_MAX 256
#define USER_AGENT    "moonrabbit-alerts"

struct settings {
	char format[32];
	unsigned long long connect_ms;
	unsigned long long total_ms;
	unsigned long long attempts;
	unsigned long long base_ms;
	unsigned long long max_ms;
	unsigned long long capacity;
};

struct queued {
	struct alert a;
	long long raised_at; /* unix seconds */
};

struct route {
	char key[ALERT_KEY_MAX];
	unsigned long long repeat_s;
	int send;
};

/* What route() said was sent last for a key. */
struct seen {
	char key[ALERT_KEY_MAX];
	char severity[ALERT_SEVERITY_MAX];
	int active;
	long long since;   /* unix seconds the condition started */
	long long sent_ms; /* monotonic */
	long long used_ms; /* monotonic, for eviction */
};

struct delivery {
	struct alert_payload *p;
	int url;
	int attempts;
	long long due_ms;
};

/* What one transfer came to. */
struct attempt {
	CURLcode rc;
	long status;
	long long retry_after_s;
	long long ms;
	char detail[CURL_ERROR_SIZE];
};

/* alerts.lua loaded and checked: the state and what settings() said. */
struct alerts_policy {
	struct policy policy;
	struct settings set;
};

struct alerts {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct queued *ring;
	int cap, head, count;
	struct alerts_counters n;
	struct alerts_policy *pending; /* committed, not yet swapped in */
	atomic_llong stop_at_ms;       /* 0 until a stop is asked for */
	pthread_t thread;
	int running;
	CURLM *multi;
	/* The thread's alone once it runs. */
	struct alerts_policy pol;
	char *urls[ALERTS_URLS_MAX];
	char shown[ALERTS_URLS_MAX][SHOWN_URL_MAX];
	int nurls;
	struct delivery *out;
	int nout, outcap;
	struct seen seen[DEDUP_MAX];
	int nseen;
	char host[256];
	unsigned int seed;
};

struct setting_field {
	const char *name;
	size_t offset;
	unsigned long long min;
	unsigned long long max;
};

#define SET_OFF(f) offsetof(struct settings, f)

static const struct setting_field setting_fields[] = {
	{ "connect_timeout_ms", SET_OFF(connect_ms), 10, 60000 },
	{ "total_timeout_ms", SET_OFF(total_ms), 10, 300000 },
	{ "max_attempts", SET_OFF(attempts), 1, 20 },
	{ "backoff_base_ms", SET_OFF(base_ms), 1, 3600000 },
	{ "backoff_max_ms", SET_OFF(max_ms), 1, 3600000 },
	{ "queue_capacity", SET_OFF(capacity), 1, 4096 },
};

#define NSETTINGS (sizeof setting_fields / sizeof setting_fields[0])


static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


static void copy_text(char *dst, size_t cap, const char *src)
{
	snprintf(dst, cap, "%s", src ? src : "");
}


static void bump(struct alerts *al, uint64_t *counter, uint64_t by)
{
	pthread_mutex_lock(&al->mu);
	*counter += by;
	pthread_mutex_unlock(&al->mu);
}


/* ---- URLs ----------------------------------------------------------- */

/* Writes url for logs: any password masked, and the path cut after its
 * first segment and the query dropped, because webhook services (Slack
 * among them) put the secret in the path. */
static void show_url(const char *url, char *out, size_t outlen)
{
	char *start, *slash, *cut;

	config_mask_url(url, out, outlen);
	start = strstr(out, "://");
	start = start ? start + 3 : out;
	slash = strchr(start, '/');
	cut = slash ? strpbrk(slash + 1, "/?#") : strpbrk(start, "?#");
	if (cut && (size_t)(cut - out) + 5 <= outlen)
		memcpy(cut, "/***", 5);
}


static int add_url(struct alerts *al, const char *p, size_t n, char *err,
		   size_t errlen)
{
	char *url = strndup(p, n);
	char shown[SHOWN_URL_MAX];

	if (!url)
		return -ENOMEM;
	show_url(url, shown, sizeof shown);
	if (strncmp(url, "http://", 7) && strncmp(url, "https://", 8)) {
		snprintf(err, errlen,
			 "ALERT_WEBHOOK_URL: \"%s\" is not usable: each URL "
			 "must start with http:// or https://",
			 shown);
		free(url);
		return -EINVAL;
	}
	al->urls[al->nurls] = url;
	memcpy(al->shown[al->nurls], shown, sizeof shown);
	al->nurls++;
	return 0;
}


/* Splits list on commas and white space into al->urls. */
static int parse_urls(struct alerts *al, const char *list, char *err,
		      size_t errlen)
{
	static const char sep[] = ", \t\r\n";
	const char *p = list ? list : "";
	int rc;

	for (p += strspn(p, sep); *p; p += strspn(p, sep)) {
		size_t n = strcspn(p, sep);

		if (al->nurls == ALERTS_URLS_MAX || n >= ALERTS_URL_MAX) {
			snprintf(err, errlen,
				 "ALERT_WEBHOOK_URL is not usable: give at "
				 "most %d URLs of under %d bytes each",
				 ALERTS_URLS_MAX, ALERTS_URL_MAX);
			return -EINVAL;
		}
		rc = add_url(al, p, n, err, errlen);
		if (rc < 0)
			return rc;
		p += n;
	}
	return 0;
}


/* ---- facts and the alert table ------------------------------------- */

/* Copies key into out (ALERT_KEY_MAX bytes). A longer key keeps its head
 * and ends in "~" and a 64-bit FNV-1a hash of the whole, since a plain
 * cut would make keys that differ only at the end (message ids) one
 * condition to de-duplication. */
static void copy_key(char *out, const char *key)
{
	enum { HASH_TEXT = 17 }; /* "~" and 16 hex digits */
	uint64_t h = 0xcbf29ce484222325ULL;
	size_t n = key ? strlen(key) : 0;

	if (n < ALERT_KEY_MAX) {
		copy_text(out, ALERT_KEY_MAX, key);
		return;
	}
	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)key[i]) * 0x100000001b3ULL;
	snprintf(out, ALERT_KEY_MAX, "%.*s~%016llx",
		 ALERT_KEY_MAX - 1 - HASH_TEXT, key, (unsigned long long)h);
}


void alert_init(struct alert *a, const char *kind, const char *severity,
		const char *key, const char *summary)
{
	memset(a, 0, sizeof *a);
	copy_text(a->kind, sizeof a->kind, kind);
	copy_text(a->severity, sizeof a->severity, severity);
	copy_key(a->key, key);
	copy_text(a->summary, sizeof a->summary, summary);
}


/* Returns a's next fact, named name and of type type, or NULL when a
 * is full. */
static struct alert_fact *new_fact(struct alert *a, const char *name,
				   enum alert_fact_type type)
{
	struct alert_fact *v;

	if (a->facts.n == ALERT_FACTS_MAX)
		return NULL;
	v = &a->facts.v[a->facts.n++];
	copy_text(v->name, sizeof v->name, name);
	v->type = type;
	return v;
}


int alert_fact_int(struct alert *a, const char *name, long long value)
{
	struct alert_fact *v = new_fact(a, name, ALERT_FACT_INT);

	if (!v)
		return -ENOSPC;
	v->i = value;
	return 0;
}


int alert_fact_str(struct alert *a, const char *name, const char *value)
{
	struct alert_fact *v = new_fact(a, name, ALERT_FACT_STR);

	if (!v)
		return -ENOSPC;
	copy_text(v->s, sizeof v->s, value);
	return 0;
}


/* Reads the pair on top (name at -2, value at -1) into the next fact. */
static int read_fact(lua_State *L, const char *path, const char *prefix,
		     struct alert_facts *f, char *err, size_t errlen)
{
	struct alert_fact *v = &f->v[f->n];
	const char *name = NULL;
	size_t n = 0;

	if (lua_type(L, -2) == LUA_TSTRING)
		name = lua_tolstring(L, -2, &n);
	if (!name || n == 0 || n >= ALERT_FACT_NAME_MAX) {
		snprintf(err, errlen,
			 "%s: field '%s': names must be strings of 1 to %d "
			 "bytes",
			 path, prefix, ALERT_FACT_NAME_MAX - 1);
		return -EINVAL;
	}
	if (f->n == ALERT_FACTS_MAX) {
		snprintf(err, errlen, "%s: field '%s': at most %d facts", path,
			 prefix, ALERT_FACTS_MAX);
		return -EINVAL;
	}
	memcpy(v->name, name, n + 1);
	if (lua_isinteger(L, -1)) {
		v->type = ALERT_FACT_INT;
		v->i = lua_tointeger(L, -1);
	} else if (lua_type(L, -1) == LUA_TNUMBER) {
		v->type = ALERT_FACT_NUM;
		v->d = lua_tonumber(L, -1);
	} else if (lua_type(L, -1) == LUA_TSTRING) {
		v->type = ALERT_FACT_STR;
		copy_text(v->s, sizeof v->s, lua_tostring(L, -1));
	} else {
		snprintf(err, errlen,
			 "%s: field '%s.%s': expected a string or a number, "
			 "got %s",
			 path, prefix, name, luaL_typename(L, -1));
		return -EINVAL;
	}
	f->n++;
	return 0;
}


int alert_facts_read(lua_State *L, const char *path, const char *prefix,
		     struct alert_facts *out, char *err, size_t errlen)
{
	struct alert_facts f;
	int top = lua_gettop(L);

	memset(&f, 0, sizeof f);
	if (!lua_istable(L, -1)) {
		snprintf(err, errlen,
			 "%s: field '%s': expected a table of facts, got %s",
			 path, prefix, luaL_typename(L, -1));
		return -EINVAL;
	}
	lua_pushnil(L);
	while (lua_next(L, -2)) {
		if (read_fact(L, path, prefix, &f, err, errlen) < 0) {
			lua_settop(L, top);
			return -EINVAL;
		}
		lua_pop(L, 1);
	}
	*out = f;
	return 0;
}


static void set_str(lua_State *L, const char *key, const char *v)
{
	lua_pushstring(L, v);
	lua_setfield(L, -2, key);
}


static void set_int(lua_State *L, const char *key, long long v)
{
	lua_pushinteger(L, (lua_Integer)v);
	lua_setfield(L, -2, key);
}


static void push_facts(lua_State *L, const struct alert_facts *f)
{
	lua_createtable(L, 0, f->n);
	for (int i = 0; i < f->n; i++) {
		const struct alert_fact *v = &f->v[i];

		if (v->type == ALERT_FACT_INT)
			lua_pushinteger(L, (lua_Integer)v->i);
		else if (v->type == ALERT_FACT_NUM)
			lua_pushnumber(L, v->d);
		else
			lua_pushstring(L, v->s);
		lua_setfield(L, -2, v->name);
	}
}


/* Pushes the table route() and format() take; started_at is the raise
 * time until de-duplication knows when the condition began. */
static void push_alert(lua_State *L, const struct queued *q, const char *host)
{
	lua_createtable(L, 0, 10);
	set_str(L, "kind", q->a.kind);
	set_str(L, "severity", q->a.severity);
	set_str(L, "summary", q->a.summary);
	if (q->a.key[0])
		set_str(L, "key", q->a.key);
	set_str(L, "host", host);
	set_int(L, "raised_at", q->raised_at);
	set_int(L, "started_at", q->raised_at);
	push_facts(L, &q->a.facts);
	lua_setfield(L, -2, "facts");
}


/* ---- settings() ----------------------------------------------------- */

static int is_setting(const char *key)
{
	int known = !strcmp(key, "format");

	for (size_t i = 0; i < NSETTINGS; i++)
		known |= !strcmp(key, setting_fields[i].name);
	return known;
}


static int read_format_name(lua_State *L, const char *path, struct settings *s,
			    char *err, size_t errlen)
{
	size_t n = 0;
	const char *v = NULL;

	lua_getfield(L, -1, "format");
	if (lua_type(L, -1) == LUA_TSTRING)
		v = lua_tolstring(L, -1, &n);
	if (!v || n == 0 || n >= sizeof s->format) {
		snprintf(err, errlen,
			 "%s: settings field 'format': expected a name of 1 "
			 "to %zu bytes, got %s",
			 path, sizeof s->format - 1, luaL_typename(L, -1));
		lua_pop(L, 1);
		return -EINVAL;
	}
	memcpy(s->format, v, n + 1);
	lua_pop(L, 1);
	return 0;
}


/* Checks the settings table on top into *s. */
static int check_settings(lua_State *L, const char *path, struct settings *s,
			  char *err, size_t errlen)
{
	if (!lua_istable(L, -1)) {
		snprintf(err, errlen,
			 "%s: settings must return a table, got %s", path,
			 luaL_typename(L, -1));
		return -EINVAL;
	}
	if (policy_unknown_key(L, is_setting, "settings.", "setting", path, err,
			       errlen) < 0 ||
	    read_format_name(L, path, s, err, errlen) < 0)
		return -EINVAL;
	for (size_t i = 0; i < NSETTINGS; i++) {
		const struct setting_field *f = &setting_fields[i];

		if (policy_read_u64(
			    L, path, "settings.", f->name, f->min, f->max,
			    (unsigned long long *)((char *)s + f->offset), err,
			    errlen) < 0)
			return -EINVAL;
	}
	if (s->connect_ms > s->total_ms || s->base_ms > s->max_ms) {
		snprintf(err, errlen,
			 "%s: settings: connect_timeout_ms (%llu) must not "
			 "exceed total_timeout_ms (%llu), nor backoff_base_ms "
			 "(%llu) backoff_max_ms (%llu)",
			 path, s->connect_ms, s->total_ms, s->base_ms,
			 s->max_ms);
		return -EINVAL;
	}
	return 0;
}


static int read_settings(struct alerts_policy *ap, char *err, size_t errlen)
{
	int rc = policy_call(&ap->policy, "settings", 0, err, errlen);

	if (rc == 0)
		rc = check_settings(ap->policy.L, ap->policy.path, &ap->set,
				    err, errlen);
	lua_settop(ap->policy.L, 1);
	return rc;
}


/* ---- route() -------------------------------------------------------- */

/* Checks the answer on top into *r. */
static int check_route(lua_State *L, const char *path, struct route *r,
		       char *err, size_t errlen)
{
	const char *key = NULL;
	size_t n = 0;

	if (!lua_istable(L, -1)) {
		snprintf(err, errlen, "%s: route must return a table, got %s",
			 path, luaL_typename(L, -1));
		return -EINVAL;
	}
	lua_getfield(L, -1, "key");
	if (lua_type(L, -1) == LUA_TSTRING)
		key = lua_tolstring(L, -1, &n);
	if (!key || n == 0 || n >= ALERT_KEY_MAX || strlen(key) != n) {
		snprintf(err, errlen,
			 "%s: route field 'key': expected a string of 1 to "
			 "%d bytes, got %s",
			 path, ALERT_KEY_MAX - 1, luaL_typename(L, -1));
		lua_pop(L, 1);
		return -EINVAL;
	}
	memcpy(r->key, key, n + 1);
	lua_pop(L, 1);
	if (policy_read_u64(L, path, "route.", "repeat_seconds", 0, 30 * 86400,
			    &r->repeat_s, err, errlen) < 0)
		return -EINVAL;
	lua_getfield(L, -1, "send");
	r->send = lua_toboolean(L, -1);
	if (!lua_isboolean(L, -1)) {
		snprintf(err, errlen,
			 "%s: route field 'send': expected a boolean, got %s",
			 path, luaL_typename(L, -1));
		lua_pop(L, 1);
		return -EINVAL;
	}
	lua_pop(L, 1);
	return 0;
}


/* Calls route() on the alert table at index 2. A refused answer is
 * logged and replaced by the alert's own key (or kind) with no repeat
 * interval, so the alert still goes out. */
static void route_alert(struct alerts *al, const struct queued *q,
			struct route *r)
{
	lua_State *L = al->pol.policy.L;
	char err[512];
	int rc;

	lua_pushvalue(L, 2);
	rc = policy_call(&al->pol.policy, "route", 1, err, sizeof err);
	if (rc == 0)
		rc = check_route(L, al->pol.policy.path, r, err, sizeof err);
	lua_settop(L, 2);
	if (rc == 0)
		return;
	LOG(LOG_ERROR, "alert_route_failed", LF_S("kind", q->a.kind),
	    LF_S("key", q->a.key), LF_S("reason", err));
	copy_text(r->key, sizeof r->key, q->a.key[0] ? q->a.key : q->a.kind);
	r->repeat_s = 0;
	r->send = 1;
}


/* ---- format() ------------------------------------------------------- */

/* Calls pol's format() on the alert table at index 2. Returns a new
 * payload or NULL with err. */
static struct alert_payload *format_alert(struct policy *pol, char *err,
					  size_t errlen)
{
	lua_State *L = pol->L;
	struct alert_payload *p = NULL;

	lua_pushvalue(L, 2);
	if (policy_call(pol, "format", 1, err, errlen) == 0)
		p = alert_payload_check(L, pol->path, err, errlen);
	lua_settop(L, 2);
	return p;
}


/* ---- de-duplication -------------------------------------------------- */

static struct seen *seen_find(struct alerts *al, const char *key)
{
	for (int i = 0; i < al->nseen; i++)
		if (!strcmp(al->seen[i].key, key))
			return &al->seen[i];
	return NULL;
}


/* Returns a cleared entry for key: a free slot, else the least recently
 * used inactive entry, else the least recently used one. */
static struct seen *seen_add(struct alerts *al, const char *key)
{
	struct seen *s = al->nseen < DEDUP_MAX ? &al->seen[al->nseen++] : NULL;

	for (int i = 0; !s && i < 2; i++)
		for (int j = 0; j < DEDUP_MAX; j++)
			if ((i == 1 || !al->seen[j].active) &&
			    (!s || al->seen[j].used_ms < s->used_ms))
				s = &al->seen[j];
	memset(s, 0, sizeof *s);
	copy_text(s->key, sizeof s->key, key);
	return s;
}


/* Decides whether an alert with route r goes out. Returns NULL when it
 * does, having recorded it, with *since set to when its condition began
 * and prev to the severity a resolve ends; otherwise the reason it is
 * suppressed. */
static const char *dedup(struct alerts *al, const struct queued *q,
			 const struct route *r, long long *since, char *prev)
{
	struct seen *s = seen_find(al, r->key);
	long long now = now_ms();

	if (!strcmp(q->a.severity, "resolved")) {
		if (!s || !s->active)
			return "nothing_to_resolve";
		s->active = 0;
		s->used_ms = now;
		*since = s->since;
		memcpy(prev, s->severity, sizeof s->severity);
		return NULL;
	}
	if (s && s->active && !strcmp(s->severity, q->a.severity) &&
	    now - s->sent_ms < (long long)r->repeat_s * 1000)
		return "repeat";
	if (!s)
		s = seen_add(al, r->key);
	if (!s->active)
		s->since = q->raised_at;
	s->active = 1;
	copy_text(s->severity, sizeof s->severity, q->a.severity);
	s->sent_ms = now;
	s->used_ms = now;
	*since = s->since;
	return NULL;
}


/* ---- the outbox ----------------------------------------------------- */

static void outbox_remove(struct alerts *al, int i)
{
	alert_payload_put(al->out[i].p);
	memmove(&al->out[i], &al->out[i + 1],
		(size_t)(al->nout - i - 1) * sizeof *al->out);
	al->nout--;
}


static void log_failed(const struct alerts *al, const struct delivery *d,
		       const char *reason, const char *detail)
{
	LOG(LOG_WARN, "alert_send_failed", LF_S("kind", d->p->kind),
	    LF_S("severity", d->p->severity), LF_S("key", d->p->key),
	    LF_S("url", al->shown[d->url]), LF_I("attempt", d->attempts),
	    LF_S("reason", reason), LF_S("detail", detail), LF_B("retry", 0));
}


/* Queues a delivery of p to URL u, due now. The outbox is sized for a
 * full queue to every URL; should retries still fill it, the delivery
 * that has waited longest (the first: deliveries are appended) is given
 * up. */
static void outbox_add(struct alerts *al, struct alert_payload *p, int u)
{
	if (al->nout == al->outcap) {
		log_failed(al, &al->out[0], "outbox_full",
			   "too many deliveries waiting for a retry");
		bump(al, &al->n.failed, 1);
		outbox_remove(al, 0);
	}
	p->refs++;
	al->out[al->nout++] =
		(struct delivery){ .p = p, .url = u, .due_ms = now_ms() };
}


/* Returns the index of the delivery due earliest, or -1. */
static int outbox_first(const struct alerts *al)
{
	int first = -1;

	for (int i = 0; i < al->nout; i++)
		if (first < 0 || al->out[i].due_ms < al->out[first].due_ms)
			first = i;
	return first;
}


/* ---- one alert ------------------------------------------------------ */

static void suppress(struct alerts *al, const struct queued *q, const char *key,
		     const char *why)
{
	bump(al, &al->n.suppressed, 1);
	LOG(LOG_INFO, "alert_suppressed", LF_S("kind", q->a.kind),
	    LF_S("severity", q->a.severity), LF_S("key", key),
	    LF_S("reason", why));
}


/* Formats the alert table at index 2 (the fallback body if format()
 * fails) and queues it to every URL. */
static void enqueue_request(struct alerts *al, const struct queued *q,
			    const char *key)
{
	struct alert_payload *p;
	char err[512];

	p = format_alert(&al->pol.policy, err, sizeof err);
	if (!p) {
		LOG(LOG_ERROR, "alert_encode_failed", LF_S("kind", q->a.kind),
		    LF_S("key", key), LF_S("reason", err));
		p = alert_payload_fallback(&q->a, key, al->host);
	}
	if (!p) {
		LOG(LOG_ERROR, "alert_send_failed", LF_S("kind", q->a.kind),
		    LF_S("key", key), LF_S("reason", "out of memory"));
		bump(al, &al->n.failed, (uint64_t)al->nurls);
		return;
	}
	copy_text(p->kind, sizeof p->kind, q->a.kind);
	copy_text(p->severity, sizeof p->severity, q->a.severity);
	copy_text(p->key, sizeof p->key, key);
	for (int u = 0; u < al->nurls; u++)
		outbox_add(al, p, u);
	alert_payload_put(p);
}


/* Routes, de-duplicates and formats one alert from the queue. */
static void handle(struct alerts *al, const struct queued *q)
{
	lua_State *L = al->pol.policy.L;
	char prev[ALERT_SEVERITY_MAX] = "";
	long long since = q->raised_at;
	const char *why;
	struct route r;

	lua_settop(L, 1);
	push_alert(L, q, al->host);
	route_alert(al, q, &r);
	why = r.send ? dedup(al, q, &r, &since, prev) : "muted";
	if (why) {
		suppress(al, q, r.key, why);
	} else {
		set_str(L, "key", r.key);
		set_int(L, "started_at", since);
		if (prev[0])
			set_str(L, "previous_severity", prev);
		enqueue_request(al, q, r.key);
	}
	lua_settop(L, 1);
}


/* ---- sending -------------------------------------------------------- */

static size_t discard(char *data, size_t size, size_t n, void *user)
{
	(void)data;
	(void)user;
	return size * n;
}


/* Returns an easy handle set up to post d, or NULL. NOSIGNAL keeps
 * libcurl from timing out a lookup with SIGALRM and longjmp, which is
 * unsafe with threads (case 017); QUICK_EXIT keeps it from waiting for a
 * lookup thread that hangs when the transfer ends. */
static CURL *easy_for(const struct alerts *al, const struct delivery *d,
		      long timeout_ms, char *errbuf)
{
	CURL *h = curl_easy_init();

	if (h && (curl_easy_setopt(h, CURLOPT_URL, al->urls[d->url]) ||
		  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L) ||
#if CURL_AT_LEAST_VERSION(7, 87, 0)
		  curl_easy_setopt(h, CURLOPT_QUICK_EXIT, 1L) ||
#endif
		  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https") ||
		  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
				   (long)al->pol.set.connect_ms) ||
		  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms) ||
		  curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE,
				   (curl_off_t)d->p->len) ||
		  curl_easy_setopt(h, CURLOPT_POSTFIELDS, d->p->body) ||
		  curl_easy_setopt(h, CURLOPT_HTTPHEADER, d->p->headers) ||
		  curl_easy_setopt(h, CURLOPT_USERAGENT, USER_AGENT) ||
		  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard) ||
		  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf))) {
		curl_easy_cleanup(h);
		h = NULL;
	}
	return h;
}


static CURLcode done_code(CURLM *m)
{
	CURLcode rc = CURLE_RECV_ERROR;
	CURLMsg *msg;
	int left;

	while ((msg = curl_multi_info_read(m, &left)) != NULL)
		if (msg->msg == CURLMSG_DONE)
			rc = msg->data.result;
	return rc;
}


/* Runs the transfer h to its end, or until the stop deadline passes
 * (then CURLE_ABORTED_BY_CALLBACK). alerts_stop() wakes the poll. */
static CURLcode perform(struct alerts *al, CURL *h)
{
	CURLMcode mc = curl_multi_add_handle(al->multi, h);
	CURLcode rc = CURLE_ABORTED_BY_CALLBACK;
	int running = 1;

	if (mc != CURLM_OK)
		return CURLE_OUT_OF_MEMORY;
	for (;;) {
		long long stop = atomic_load(&al->stop_at_ms);
		long long now = now_ms();
		long long wait =
			stop && stop - now < POLL_MS ? stop - now : POLL_MS;

		mc = curl_multi_perform(al->multi, &running);
		if (mc != CURLM_OK || !running)
			break;
		if (wait <= 0)
			goto out;
		mc = curl_multi_poll(al->multi, NULL, 0, (int)wait, NULL);
		if (mc != CURLM_OK)
			break;
	}
	rc = mc == CURLM_OK ? done_code(al->multi) : CURLE_OUT_OF_MEMORY;
out:
	curl_multi_remove_handle(al->multi, h);
	return rc;
}


/* Sends delivery d once, limited to timeout_ms; fills *t. */
static void attempt_once(struct alerts *al, const struct delivery *d,
			 long timeout_ms, struct attempt *t)
{
	long long start = now_ms();
	curl_off_t retry_after = 0;
	CURL *h;

	memset(t, 0, sizeof *t);
	h = easy_for(al, d, timeout_ms, t->detail);
	if (!h) {
		t->rc = CURLE_OUT_OF_MEMORY;
		return;
	}
	t->rc = perform(al, h);
	if (curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &t->status) !=
	    CURLE_OK)
		t->status = 0;
	if (curl_easy_getinfo(h, CURLINFO_RETRY_AFTER, &retry_after) ==
	    CURLE_OK)
		t->retry_after_s = (long long)retry_after;
	curl_easy_cleanup(h);
	t->ms = now_ms() - start;
	if (!t->detail[0])
		copy_text(t->detail, sizeof t->detail,
			  t->rc == CURLE_OK ? "" : curl_easy_strerror(t->rc));
	if (t->rc == CURLE_OK)
		snprintf(t->detail, sizeof t->detail, "HTTP %ld", t->status);
}


static const char *reason_of(const struct attempt *t)
{
	switch (t->rc) {
	case CURLE_OK:
		return "status";
	case CURLE_OPERATION_TIMEDOUT:
		return "timeout";
	case CURLE_COULDNT_RESOLVE_HOST:
		return "resolve";
	case CURLE_COULDNT_CONNECT:
		return "connect";
	case CURLE_ABORTED_BY_CALLBACK:
		return "shutdown";
	default:
		return "transfer";
	}
}


/* True for answers a later attempt may change: 429, 5xx and failures
 * of the network. A malformed URL, a stop, or any other status will be
 * the same next time. */
static int may_retry(const struct attempt *t)
{
	if (t->rc == CURLE_OK)
		return t->status == 429 || t->status >= 500;
	return t->rc != CURLE_ABORTED_BY_CALLBACK &&
	       t->rc != CURLE_URL_MALFORMAT &&
	       t->rc != CURLE_UNSUPPORTED_PROTOCOL &&
	       t->rc != CURLE_OUT_OF_MEMORY;
}


/* Returns the wait before the next attempt after attempts tries: the
 * base doubled per try up to the maximum, half of it fixed and half at
 * random, so replicas that failed together do not retry together. */
static long long backoff_ms(struct alerts *al, int attempts)
{
	unsigned long long d = al->pol.set.base_ms;

	for (int i = 1; i < attempts && d < al->pol.set.max_ms; i++)
		d *= 2;
	if (d > al->pol.set.max_ms)
		d = al->pol.set.max_ms;
	return (long long)(d / 2 +
			   (unsigned long long)rand_r(&al->seed) % (d / 2 + 1));
}


/* Returns the wait before retrying d after t, or -1 when d is given up:
 * attempts used up, an answer not worth retrying, or a Retry-After
 * longer than backoff_max_ms (the receiver asked for that wait, so it
 * is not cut short). */
static long long next_wait(struct alerts *al, const struct delivery *d,
			   const struct attempt *t)
{
	long long wait;

	if (!may_retry(t) ||
	    (unsigned long long)d->attempts >= al->pol.set.attempts)
		return -1;
	wait = backoff_ms(al, d->attempts);
	if (t->rc == CURLE_OK && t->retry_after_s > 0) {
		if ((unsigned long long)t->retry_after_s * 1000 >
		    al->pol.set.max_ms)
			return -1;
		if (t->retry_after_s * 1000 > wait)
			wait = t->retry_after_s * 1000;
	}
	return wait;
}


static void log_attempt(const struct alerts *al, const struct delivery *d,
			const struct attempt *t, long long wait)
{
	if (t->rc == CURLE_OK && t->status >= 200 && t->status < 300) {
		LOG(LOG_INFO, "alert_sent", LF_S("kind", d->p->kind),
		    LF_S("severity", d->p->severity), LF_S("key", d->p->key),
		    LF_S("url", al->shown[d->url]),
		    LF_I("attempt", d->attempts), LF_I("status", t->status),
		    LF_I("ms", t->ms));
		return;
	}
	LOG(LOG_WARN, "alert_send_failed", LF_S("kind", d->p->kind),
	    LF_S("severity", d->p->severity), LF_S("key", d->p->key),
	    LF_S("url", al->shown[d->url]), LF_I("attempt", d->attempts),
	    LF_S("reason", reason_of(t)), LF_S("detail", t->detail),
	    LF_I("status", t->status), LF_I("ms", t->ms),
	    LF_I("retry_after_s", t->retry_after_s), LF_B("retry", wait >= 0),
	    LF_I("retry_in_ms", wait >= 0 ? wait : 0));
}


/* Sends the delivery due earliest, if one is due, and keeps it for a
 * retry or removes it. While stopping, an attempt gets only what is left
 * of the flush time. */
static void send_next(struct alerts *al)
{
	long long stop = atomic_load(&al->stop_at_ms);
	long long now = now_ms(), timeout = (long long)al->pol.set.total_ms;
	int i = outbox_first(al);
	struct delivery *d;
	struct attempt t;
	long long wait;
	int sent;

	if (i < 0 || al->out[i].due_ms > now)
		return;
	if (stop && stop - now < timeout)
		timeout = stop - now;
	if (timeout <= 0)
		return;
	d = &al->out[i];
	d->attempts++;
	attempt_once(al, d, (long)timeout, &t);
	sent = t.rc == CURLE_OK && t.status >= 200 && t.status < 300;
	wait = sent ? -1 : next_wait(al, d, &t);
	log_attempt(al, d, &t, wait);
	if (wait >= 0) {
		d->due_ms = now_ms() + wait;
		return;
	}
	bump(al, sent ? &al->n.sent : &al->n.failed, 1);
	outbox_remove(al, i);
}


/* ---- the thread ----------------------------------------------------- */

/* Waits for work. Returns 1 with an alert in *q, 0 when a delivery is
 * due or a committed policy waits, or -1 when the thread should end:
 * stopping, and either nothing is left or the flush time is over. */
static int next_work(struct alerts *al, struct queued *q)
{
	int rc = -1;

	pthread_mutex_lock(&al->mu);
	for (;;) {
		long long stop = atomic_load(&al->stop_at_ms);
		long long now = now_ms(), until = -1;
		int first = outbox_first(al);
		struct timespec ts;

		if (stop && (now >= stop || (!al->count && !al->nout)))
			break;
		if (al->pending) {
			rc = 0;
			break;
		}
		if (al->count) {
			*q = al->ring[al->head];
			al->head = (al->head + 1) % al->cap;
			al->count--;
			rc = 1;
			break;
		}
		if (first >= 0 && al->out[first].due_ms <= now) {
			rc = 0;
			break;
		}
		if (first >= 0)
			until = al->out[first].due_ms;
		if (stop && (until < 0 || stop < until))
			until = stop;
		if (until < 0) {
			pthread_cond_wait(&al->cv, &al->mu);
			continue;
		}
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += (until - now) / 1000;
		ts.tv_nsec += ((until - now) % 1000) * 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&al->cv, &al->mu, &ts);
	}
	pthread_mutex_unlock(&al->mu);
	return rc;
}


/* Counts and logs what the stop left unsent, and frees the outbox. */
static void abandon_rest(struct alerts *al)
{
	int queued;

	pthread_mutex_lock(&al->mu);
	queued = al->count;
	al->count = 0;
	al->n.failed +=
		(uint64_t)queued * (uint64_t)al->nurls + (uint64_t)al->nout;
	pthread_mutex_unlock(&al->mu);
	if (queued || al->nout)
		LOG(LOG_WARN, "alerts_unsent", LF_I("queued", queued),
		    LF_I("deliveries", al->nout), LF_S("reason", "stopping"));
	while (al->nout)
		outbox_remove(al, al->nout - 1);
}


/* Puts p in force in place of the policy al formats with, and frees the
 * old state. Only the thread that calls route() and format() may do
 * this, or anyone once that thread has ended or never ran. */
static void swap_in(struct alerts *al, struct alerts_policy *p)
{
	policy_close(&al->pol.policy);
	al->pol = *p;
	free(p);
	LOG(LOG_INFO, "alerts_reloaded", LF_S("format", al->pol.set.format),
	    LF_U("connect_timeout_ms", al->pol.set.connect_ms),
	    LF_U("total_timeout_ms", al->pol.set.total_ms),
	    LF_U("max_attempts", al->pol.set.attempts),
	    LF_U("queue_capacity", al->pol.set.capacity));
}


/* Grows the outbox to hold a full queue to every URL. It never shrinks:
 * the deliveries already waiting keep their place. A failed allocation
 * keeps the old size, whose overflow gives up the oldest delivery. */
static void grow_outbox(struct alerts *al)
{
	int want = (int)al->pol.set.capacity * al->nurls;
	struct delivery *out;

	if (want <= al->outcap)
		return;
	out = realloc(al->out, (size_t)want * sizeof *out);
	if (!out)
		return;
	al->out = out;
	al->outcap = want;
}


/* Swaps in what alerts_commit() left, between two alerts, so no route()
 * or format() is running on the state that closes. */
static void adopt_pending(struct alerts *al)
{
	struct alerts_policy *p;

	pthread_mutex_lock(&al->mu);
	p = al->pending;
	al->pending = NULL;
	pthread_mutex_unlock(&al->mu);
	if (!p)
		return;
	swap_in(al, p);
	grow_outbox(al);
}


static void *thread_main(void *arg)
{
	struct alerts *al = arg;
	struct queued q;
	int got;

	while ((got = next_work(al, &q)) >= 0) {
		adopt_pending(al);
		if (got)
			handle(al, &q);
		send_next(al);
	}
	abandon_rest(al);
	return NULL;
}


/* ---- lifecycle ------------------------------------------------------ */

int alerts_global_init(void)
{
	return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -EIO;
}


void alerts_global_cleanup(void)
{
	curl_global_cleanup();
}


void alerts_policy_free(struct alerts_policy *p)
{
	if (!p)
		return;
	policy_close(&p->policy);
	free(p);
}


static void free_alerts(struct alerts *al)
{
	policy_close(&al->pol.policy);
	alerts_policy_free(al->pending);
	for (int i = 0; i < al->nurls; i++)
		free(al->urls[i]);
	while (al->nout)
		outbox_remove(al, al->nout - 1);
	free(al->out);
	free(al->ring);
	if (al->multi)
		curl_multi_cleanup(al->multi);
	pthread_cond_destroy(&al->cv);
	pthread_mutex_destroy(&al->mu);
	free(al);
}


/* Runs route() and format() once on a made-up alert, so a policy that
 * cannot answer is refused at start-up rather than at the first alert. */
static int trial(struct alerts_policy *ap, char *err, size_t errlen)
{
	lua_State *L = ap->policy.L;
	struct alert_payload *p = NULL;
	struct queued q;
	struct route r;
	int rc;

	memset(&q, 0, sizeof q);
	alert_init(&q.a, "trial", "warning", "trial:1", "trial alert");
	q.raised_at = (long long)time(NULL);
	push_alert(L, &q, "trial-host");
	lua_pushvalue(L, 2);
	rc = policy_call(&ap->policy, "route", 1, err, errlen);
	if (rc == 0)
		rc = check_route(L, ap->policy.path, &r, err, errlen);
	lua_settop(L, 2);
	if (rc == 0 && (p = format_alert(&ap->policy, err, errlen)) == NULL)
		rc = -EINVAL;
	alert_payload_put(p);
	lua_settop(L, 1);
	return rc;
}


/* Loads <policy_dir>/alerts.lua into *ap and checks settings() and a
 * trial route() and format(). Returns 0, or -EINVAL with err (nothing
 * left open). */
static int load_policy(const char *policy_dir, struct alerts_policy *ap,
		       char *err, size_t errlen)
{
	int rc =
		policy_open(policy_dir, "alerts.lua", &ap->policy, err, errlen);

	if (rc == 0)
		rc = read_settings(ap, err, errlen);
	if (rc == 0)
		rc = trial(ap, err, errlen);
	if (rc < 0)
		policy_close(&ap->policy);
	return rc;
}


static int start_thread(struct alerts *al)
{
	int cap = (int)al->pol.set.capacity;

	al->cap = cap;
	al->outcap = cap * al->nurls;
	al->ring = calloc((size_t)cap, sizeof *al->ring);
	al->out = calloc((size_t)al->outcap, sizeof *al->out);
	al->multi = curl_multi_init();
	if (!al->ring || !al->out || !al->multi)
		return -ENOMEM;
	if (gethostname(al->host, sizeof al->host) < 0)
		copy_text(al->host, sizeof al->host, "unknown");
	al->host[sizeof al->host - 1] = '\0';
	al->seed = (unsigned int)time(NULL) ^ (unsigned int)getpid();
	if (pthread_create(&al->thread, NULL, thread_main, al) != 0)
		return -EAGAIN;
	al->running = 1;
	return 0;
}


static void log_started(const struct alerts *al)
{
	const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
	char shown[ALERTS_URLS_MAX * (SHOWN_URL_MAX + 2)] = "";

	for (int i = 0; i < al->nurls; i++) {
		if (i)
			strcat(shown, ", ");
		strcat(shown, al->shown[i]);
	}
	LOG(LOG_INFO, "alerts_started", LF_I("urls", al->nurls),
	    LF_S("url", shown), LF_S("format", al->pol.set.format),
	    LF_U("connect_timeout_ms", al->pol.set.connect_ms),
	    LF_U("total_timeout_ms", al->pol.set.total_ms),
	    LF_U("max_attempts", al->pol.set.attempts),
	    LF_U("queue_capacity", al->pol.set.capacity),
	    LF_S("curl", v->version),
	    LF_B("async_dns", v->features & CURL_VERSION_ASYNCHDNS));
}


int alerts_start(const char *policy_dir, const char *urls, struct alerts **out,
		 char *err, size_t errlen)
{
	struct alerts *al = calloc(1, sizeof *al);
	pthread_condattr_t attr;
	int rc;

	if (!al)
		return -ENOMEM;
	pthread_mutex_init(&al->mu, NULL);
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&al->cv, &attr);
	pthread_condattr_destroy(&attr);
	atomic_init(&al->stop_at_ms, 0);
	rc = load_policy(policy_dir, &al->pol, err, errlen);
	if (rc == 0)
		rc = parse_urls(al, urls, err, errlen);
	if (rc == 0 && al->nurls)
		rc = start_thread(al);
	if (rc < 0) {
		if (rc != -EINVAL)
			snprintf(err, errlen,
				 "cannot start the alerts "
				 "thread: %s",
				 strerror(-rc));
		free_alerts(al);
		return rc;
	}
	log_started(al);
	*out = al;
	return 0;
}


/* Asks the thread to stop and waits for it until the ALERTS_STOP_MS
 * deadline. Returns 0 once it has ended, -ETIMEDOUT otherwise. */
static int join_in_time(struct alerts *al)
{
	long long start = now_ms();
	struct timespec ts;

	pthread_mutex_lock(&al->mu);
	atomic_store(&al->stop_at_ms, start + FLUSH_MS);
	pthread_cond_signal(&al->cv);
	pthread_mutex_unlock(&al->mu);
	curl_multi_wakeup(al->multi);
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ALERTS_STOP_MS / 1000;
	ts.tv_nsec += (ALERTS_STOP_MS % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	return pthread_timedjoin_np(al->thread, NULL, &ts) == 0 ? 0
								: -ETIMEDOUT;
}


int alerts_stop(struct alerts *al)
{
	struct alerts_counters n;
	long long start = now_ms();

	if (!al)
		return 0;
	if (al->running && join_in_time(al) < 0) {
		/* The thread still uses al; it goes with the process. */
		LOG(LOG_ERROR, "alerts_stop_timeout",
		    LF_I("ms", now_ms() - start));
		return -ETIMEDOUT;
	}
	alerts_counters(al, &n);
	LOG(LOG_INFO, "alerts_stopped", LF_U("queued", n.queued),
	    LF_U("sent", n.sent), LF_U("failed", n.failed),
	    LF_U("dropped", n.dropped), LF_U("suppressed", n.suppressed),
	    LF_I("ms", now_ms() - start));
	free_alerts(al);
	return 0;
}


/* ---- reload --------------------------------------------------------- */

int alerts_prepare(const char *policy_dir, struct alerts_policy **out,
		   char *err, size_t errlen)
{
	struct alerts_policy *ap = calloc(1, sizeof *ap);
	int rc;

	if (!ap) {
		snprintf(err, errlen, "out of memory for alerts.lua");
		return -ENOMEM;
	}
	rc = load_policy(policy_dir, ap, err, errlen);
	if (rc < 0) {
		free(ap);
		return rc;
	}
	*out = ap;
	return 0;
}


/* Resizes the queue to cap, keeping the newest alerts; those that no
 * longer fit are counted and logged as dropped, as a full queue drops
 * them. A failed allocation keeps the old size. */
static void resize_queue(struct alerts *al, int cap)
{
	struct queued *ring = calloc((size_t)cap, sizeof *ring);
	uint64_t dropped;
	int keep, lost;

	if (!ring) {
		LOG(LOG_WARN, "alerts_queue_resize_failed",
		    LF_I("from", al->cap), LF_I("to", cap),
		    LF_S("reason", "out of memory; ignored"));
		return;
	}
	pthread_mutex_lock(&al->mu);
	keep = al->count < cap ? al->count : cap;
	lost = al->count - keep;
	for (int i = 0; i < keep; i++)
		ring[i] = al->ring[(al->head + lost + i) % al->cap];
	free(al->ring);
	al->ring = ring;
	al->cap = cap;
	al->head = 0;
	al->count = keep;
	dropped = al->n.dropped += (uint64_t)lost;
	pthread_mutex_unlock(&al->mu);
	if (lost)
		LOG(LOG_WARN, "alert_dropped", LF_I("alerts", lost),
		    LF_U("dropped", dropped), LF_S("reason", "queue_resized"));
}


void alerts_commit(struct alerts *al, struct alerts_policy *fresh)
{
	struct alerts_policy *old;

	if (!al) {
		alerts_policy_free(fresh);
		return;
	}
	if (!al->running) {
		swap_in(al, fresh);
		return;
	}
	if ((int)fresh->set.capacity != al->cap)
		resize_queue(al, (int)fresh->set.capacity);
	pthread_mutex_lock(&al->mu);
	old = al->pending;
	al->pending = fresh;
	pthread_cond_signal(&al->cv);
	pthread_mutex_unlock(&al->mu);
	/* Two reloads before the thread woke: the first is never used. */
	alerts_policy_free(old);
}


/* ---- raising -------------------------------------------------------- */

void alerts_raise(struct alerts *al, const struct alert *a)
{
	char kind[ALERT_KIND_MAX], severity[ALERT_SEVERITY_MAX];
	char key[ALERT_KEY_MAX];
	uint64_t dropped = 0;

	LOG(LOG_WARN, "alert", LF_S("kind", a->kind),
	    LF_S("severity", a->severity), LF_S("key", a->key),
	    LF_S("summary", a->summary));
	if (!al || !al->running)
		return;
	pthread_mutex_lock(&al->mu);
	if (al->count == al->cap) {
		const struct alert *old = &al->ring[al->head].a;

		memcpy(kind, old->kind, sizeof kind);
		memcpy(severity, old->severity, sizeof severity);
		memcpy(key, old->key, sizeof key);
		al->head = (al->head + 1) % al->cap;
		al->count--;
		dropped = ++al->n.dropped;
	}
	al->ring[(al->head + al->count) % al->cap] =
		(struct queued){ .a = *a, .raised_at = (long long)time(NULL) };
	al->count++;
	al->n.queued++;
	pthread_cond_signal(&al->cv);
	pthread_mutex_unlock(&al->mu);
	if (dropped)
		LOG(LOG_WARN, "alert_dropped", LF_S("kind", kind),
		    LF_S("severity", severity), LF_S("key", key),
		    LF_U("dropped", dropped), LF_S("reason", "queue_full"));
}


void alerts_counters(struct alerts *al, struct alerts_counters *out)
{
	memset(out, 0, sizeof *out);
	if (!al)
		return;
	pthread_mutex_lock(&al->mu);
	*out = al->n;
	pthread_mutex_unlock(&al->mu);
}
