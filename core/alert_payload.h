#ifndef CORE_ALERT_PAYLOAD_H
#define CORE_ALERT_PAYLOAD_H

#include <curl/curl.h>
#include <lua.h>
#include <stddef.h>

#include "alerts.h"

/*
 * One formatted alert: the body and headers of its POST, shared by its
 * deliveries (one per URL) and freed with the last of them.
 */
struct alert_payload {
	int refs;
	char *body;
	size_t len;
	struct curl_slist *headers;
	char kind[ALERT_KIND_MAX];
	char severity[ALERT_SEVERITY_MAX];
	char key[ALERT_KEY_MAX];
};

/* Checks format()'s answer, the table on top of L's stack, into a new
 * payload holding one reference. Returns it, or NULL with err naming the
 * policy file (path) and the field. */
struct alert_payload *alert_payload_check(lua_State *L, const char *path,
					  char *err, size_t errlen);

/* The body sent when format() fails: a's kind, severity and summary, key
 * and host, as JSON with fixed fields. Returns a new payload holding one
 * reference, or NULL when out of memory. */
struct alert_payload *alert_payload_fallback(const struct alert *a,
					     const char *key, const char *host);

/* Drops one reference; the last frees p. NULL is ignored. */
void alert_payload_put(struct alert_payload *p);

#endif
