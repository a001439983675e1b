#ifndef CORE_ALERTS_H
#define CORE_ALERTS_H

#include <lua.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Alerts leave the process from a thread of their own. alerts_raise()
 * copies an alert into a bounded queue and returns at once, from any
 * thread: no network and no Lua run on the caller's thread, so a slow or
 * dead receiver never stalls intake. The alerts thread owns a sandboxed
 * state of policies/alerts.lua, which names the de-duplication key and
 * repeat interval (route) and builds the HTTP request (format); it sends
 * with libcurl to every URL of ALERT_WEBHOOK_URL, with connect and total
 * timeouts, and retries 429 and 5xx answers and network failures with
 * backoff that honours Retry-After. What cannot be queued or sent is
 * counted and logged. Every raised alert is also logged (event "alert").
 */

/* Sizes of an alert's parts; longer text is cut to fit. */
#define ALERT_KIND_MAX	    32
#define ALERT_SEVERITY_MAX  16
#define ALERT_KEY_MAX	    64
#define ALERT_SUMMARY_MAX   256
#define ALERT_FACTS_MAX	    24
#define ALERT_FACT_NAME_MAX 32
#define ALERT_FACT_TEXT_MAX 96
/* At most this many receivers, and this long a URL. */
#define ALERTS_URLS_MAX 8
#define ALERTS_URL_MAX	2048
/* A body format() returns may be this large. */
#define ALERTS_BODY_MAX (64 * 1024)
/* alerts_stop() returns within this many milliseconds. */
#define ALERTS_STOP_MS 2000

enum alert_fact_type { ALERT_FACT_STR, ALERT_FACT_INT, ALERT_FACT_NUM };

/* One fact: a name and a string, whole number or other number. */
struct alert_fact {
	char name[ALERT_FACT_NAME_MAX];
	enum alert_fact_type type;
	long long i;
	double d; /* may be NaN or infinite; the policy copes */
	char s[ALERT_FACT_TEXT_MAX];
};

struct alert_facts {
	int n;
	struct alert_fact v[ALERT_FACTS_MAX];
};

/* An alert as a caller raises it. severity is warning, critical, info or
 * resolved; key may be empty. Plain data: copy it freely. */
struct alert {
	char kind[ALERT_KIND_MAX];
	char severity[ALERT_SEVERITY_MAX];
	char key[ALERT_KEY_MAX];
	char summary[ALERT_SUMMARY_MAX];
	struct alert_facts facts;
};

/* Totals since start. queued: accepted by alerts_raise(); dropped:
 * pushed out of a full queue; suppressed: not sent because the same
 * alert went out within its repeat interval, a resolve had nothing to
 * resolve, or the policy mutes the kind. sent and failed count deliveries,
 * one per alert and URL: failed ones were given up (an answer that is not
 * retried, attempts used up, or still unsent at stop). */
struct alerts_counters {
	uint64_t queued;
	uint64_t sent;
	uint64_t failed;
	uint64_t dropped;
	uint64_t suppressed;
};

struct alerts;

/* alerts.lua loaded and checked by alerts_prepare(), not yet in force. */
struct alerts_policy;

/* ---- process set-up ------------------------------------------------ */

/* Initialises libcurl. Call once, before any thread starts. Returns 0 or
 * -EIO. */
int alerts_global_init(void);

void alerts_global_cleanup(void);

/* ---- lifecycle ----------------------------------------------------- */

/* Loads <policy_dir>/alerts.lua, checks settings() and a trial route()
 * and format(), splits urls (ALERT_WEBHOOK_URL: http or https URLs
 * separated by commas or spaces; empty means alerts are only logged) and
 * starts the alerts thread when there is a URL. On success *out is an
 * object to release with alerts_stop(). Returns 0 or -EINVAL (the file
 * and field, or the variable, named in err) or -ENOMEM. */
int alerts_start(const char *policy_dir, const char *urls, struct alerts **out,
		 char *err, size_t errlen);

/* Gives the thread up to a second to send what is queued, then ends it
 * (a send in progress is abandoned), logs the totals and frees al.
 * Returns 0 within ALERTS_STOP_MS, or -ETIMEDOUT if the thread has not
 * ended by then: al is then left to the exiting process, and libcurl is
 * still in use. al may be NULL. */
int alerts_stop(struct alerts *al);

/* ---- reload (the thread that started al) --------------------------- */

/* Loads <policy_dir>/alerts.lua into a fresh state and checks it as
 * alerts_start() does, leaving what is in force alone. On success *out
 * owns it: pass it to alerts_commit() or alerts_policy_free(). Returns 0,
 * -EINVAL with the file and line or field named in err, or -ENOMEM. */
int alerts_prepare(const char *policy_dir, struct alerts_policy **out,
		   char *err, size_t errlen);

/* Takes fresh and puts it in force. The alerts thread swaps it in before
 * it routes its next alert and closes the old state then, so no route()
 * or format() runs on a closed state; alerts still queued go out in the
 * new format. De-duplication and the counters carry over; a new
 * queue_capacity resizes the queue at once (the oldest alerts that no
 * longer fit are dropped and counted). al may be NULL: fresh is freed. */
void alerts_commit(struct alerts *al, struct alerts_policy *fresh);

/* Frees a prepared policy that is not committed. p may be NULL. */
void alerts_policy_free(struct alerts_policy *p);

/* ---- raising (any thread) ------------------------------------------ */

/* Fills a with the texts and no facts. Texts are cut to fit; a key too
 * long keeps its head and ends in a hash of the whole, so long keys stay
 * distinct. key may be NULL. */
void alert_init(struct alert *a, const char *kind, const char *severity,
		const char *key, const char *summary);

/* Appends the fact name = value to a (name and text cut to fit).
 * Returns 0, or -ENOSPC when a holds ALERT_FACTS_MAX facts already. */
int alert_fact_int(struct alert *a, const char *name, long long value);
int alert_fact_str(struct alert *a, const char *name, const char *value);

/* Logs a (event "alert") and, when al has receivers, queues a copy;
 * when the queue is full the oldest alert is dropped and logged. Never
 * blocks on the network. al may be NULL: the alert is only logged. */
void alerts_raise(struct alerts *al, const struct alert *a);

/* Copies the totals into *out under the lock; zeros when al is NULL. */
void alerts_counters(struct alerts *al, struct alerts_counters *out);

/* ---- facts from a policy ------------------------------------------- */

/* Reads the table on top of L as facts: string keys of 1 to
 * ALERT_FACT_NAME_MAX - 1 bytes, string or number values, at most
 * ALERT_FACTS_MAX. Returns 0 with *out filled, or -EINVAL with err
 * naming path and prefix..name. Leaves the stack as it found it. */
int alert_facts_read(lua_State *L, const char *path, const char *prefix,
		     struct alert_facts *out, char *err, size_t errlen);

#endif
