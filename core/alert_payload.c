/*
 * The HTTP request an alert becomes. format() in alerts.lua answers with
 * a table; its content type, headers and body are checked here, field by
 * field, before any of it reaches libcurl, and an error names the policy
 * file and the field. When format() fails, a fixed JSON body is built
 * here instead, escaped by hand, so the alert about a problem is not
 * lost to a second problem.
 */
#include "alert_payload.h"

#include <errno.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The fallback body holds fixed fields of bounded size; every byte of
 * them escapes to at most 6, so this always fits. */
#define FALLBACK_MAX	8192
#define HEADERS_MAX	16
#define HEADER_LINE_MAX 1152


struct jbuf {
	char p[FALLBACK_MAX];
	size_t len;
};


static void jb_put(struct jbuf *b, const char *s, size_t n)
{
	if (b->len + n >= sizeof b->p)
		return;
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}


/* Returns the length of the UTF-8 sequence at s, or 0 when the bytes
 * there are not one (a strict JSON parser refuses such a body). */
static int utf8_len(const unsigned char *s)
{
	unsigned char lo = 0x80, hi = 0xbf;
	int n;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		n = 2;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		n = 3;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		n = 4;
	else
		return 0;
	if (s[0] == 0xe0)
		lo = 0xa0;
	else if (s[0] == 0xed)
		hi = 0x9f;
	else if (s[0] == 0xf0)
		lo = 0x90;
	else if (s[0] == 0xf4)
		hi = 0x8f;
	if (s[1] < lo || s[1] > hi)
		return 0;
	for (int i = 2; i < n; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	return n;
}


/* Appends s as a JSON string: quotes, backslashes and control bytes
 * escaped, bytes that are not UTF-8 replaced by U+FFFD. */
static void jb_string(struct jbuf *b, const char *s)
{
	const unsigned char *u = (const unsigned char *)s;
	char esc[8];

	jb_put(b, "\"", 1);
	while (*u) {
		int n = utf8_len(u);

		if (n == 0) {
			jb_put(b, "\\ufffd", 6);
			n = 1;
		} else if (*u == '"' || *u == '\\') {
			esc[0] = '\\';
			esc[1] = (char)*u;
			jb_put(b, esc, 2);
		} else if (*u < 0x20 || *u == 0x7f) {
			snprintf(esc, sizeof esc, "\\u%04x", *u);
			jb_put(b, esc, 6);
		} else {
			jb_put(b, (const char *)u, (size_t)n);
		}
		u += n;
	}
	jb_put(b, "\"", 1);
}


static void jb_field(struct jbuf *b, const char *name, const char *value)
{
	jb_put(b, b->len > 1 ? ",\"" : "\"", b->len > 1 ? 2 : 1);
	jb_put(b, name, strlen(name));
	jb_put(b, "\":", 2);
	jb_string(b, value);
}


static int is_token(const char *s)
{
	static const char extra[] = "!#$%&'*+-.^_`|~";

	if (!*s)
		return 0;
	for (; *s; s++)
		if (!(*s >= 'a' && *s <= 'z') && !(*s >= 'A' && *s <= 'Z') &&
		    !(*s >= '0' && *s <= '9') && !strchr(extra, *s))
			return 0;
	return 1;
}


/* True when s may stand in a header: no control bytes but tab. */
static int is_header_text(const char *s, size_t n)
{
	if (strlen(s) != n)
		return 0;
	for (; *s; s++)
		if (((unsigned char)*s < 0x20 && *s != '\t') || *s == 0x7f)
			return 0;
	return 1;
}


/* Appends "name: value" to *list after checking both. */
static int add_header(struct curl_slist **list, const char *name,
		      const char *value, size_t vlen, const char *path,
		      char *err, size_t errlen)
{
	char line[HEADER_LINE_MAX];
	struct curl_slist *next;

	if (!is_token(name) || strlen(name) > 64 ||
	    !strcasecmp(name, "Content-Length") ||
	    !strcasecmp(name, "Transfer-Encoding") || vlen > 1024 ||
	    !is_header_text(value, vlen)) {
		snprintf(err, errlen,
			 "%s: format field 'headers.%.64s': expected a header "
			 "name (not Content-Length or Transfer-Encoding) and "
			 "a value of at most 1024 bytes without control "
			 "characters",
			 path, name);
		return -EINVAL;
	}
	snprintf(line, sizeof line, "%s: %s", name, value);
	next = curl_slist_append(*list, line);
	if (!next) {
		snprintf(err, errlen, "out of memory for a header");
		return -ENOMEM;
	}
	*list = next;
	return 0;
}


static int read_content_type(lua_State *L, const char *path,
			     struct curl_slist **list, char *err, size_t errlen)
{
	const char *v = NULL;
	size_t n = 0;
	int rc;

	lua_getfield(L, -1, "content_type");
	if (lua_type(L, -1) == LUA_TSTRING)
		v = lua_tolstring(L, -1, &n);
	if (!v || n == 0) {
		snprintf(err, errlen,
			 "%s: format field 'content_type': expected a "
			 "string, got %s",
			 path, luaL_typename(L, -1));
		lua_pop(L, 1);
		return -EINVAL;
	}
	rc = add_header(list, "Content-Type", v, n, path, err, errlen);
	lua_pop(L, 1);
	return rc;
}


/* Checks the name (at -2) and value (at -1) of the count-th header. */
static int header_pair(lua_State *L, const char *path, struct curl_slist **list,
		       int count, char *err, size_t errlen)
{
	const char *value;
	size_t n = 0;

	if (count > HEADERS_MAX || lua_type(L, -2) != LUA_TSTRING ||
	    lua_type(L, -1) != LUA_TSTRING) {
		snprintf(err, errlen,
			 "%s: format field 'headers': expected at most %d "
			 "string names with string values",
			 path, HEADERS_MAX);
		return -EINVAL;
	}
	value = lua_tolstring(L, -1, &n);
	return add_header(list, lua_tostring(L, -2), value, n, path, err,
			  errlen);
}


static int read_headers(lua_State *L, const char *path,
			struct curl_slist **list, char *err, size_t errlen)
{
	int count = 0, rc = 0;

	lua_getfield(L, -1, "headers");
	if (lua_isnil(L, -1)) {
		lua_pop(L, 1);
		return 0;
	}
	if (!lua_istable(L, -1)) {
		snprintf(err, errlen,
			 "%s: format field 'headers': expected a table of "
			 "name to value, got %s",
			 path, luaL_typename(L, -1));
		lua_pop(L, 1);
		return -EINVAL;
	}
	lua_pushnil(L);
	while (lua_next(L, -2)) {
		rc = header_pair(L, path, list, ++count, err, errlen);
		lua_pop(L, rc == 0 ? 1 : 2);
		if (rc < 0)
			break;
	}
	lua_pop(L, 1);
	return rc;
}


static struct alert_payload *payload_new(const char *body, size_t len,
					 struct curl_slist *headers)
{
	struct alert_payload *p = calloc(1, sizeof *p);

	if (!p)
		return NULL;
	p->body = malloc(len + 1);
	if (!p->body) {
		free(p);
		return NULL;
	}
	memcpy(p->body, body, len);
	p->body[len] = '\0';
	p->len = len;
	p->headers = headers;
	p->refs = 1;
	return p;
}


void alert_payload_put(struct alert_payload *p)
{
	if (!p || --p->refs > 0)
		return;
	curl_slist_free_all(p->headers);
	free(p->body);
	free(p);
}


struct alert_payload *alert_payload_check(lua_State *L, const char *path,
					  char *err, size_t errlen)
{
	struct curl_slist *h = NULL;
	struct alert_payload *p = NULL;
	const char *body = NULL;
	size_t len = 0;

	if (!lua_istable(L, -1)) {
		snprintf(err, errlen, "%s: format must return a table, got %s",
			 path, luaL_typename(L, -1));
		return NULL;
	}
	if (read_content_type(L, path, &h, err, errlen) < 0 ||
	    read_headers(L, path, &h, err, errlen) < 0 ||
	    (h = curl_slist_append(h, "Expect:")) == NULL)
		goto out;
	lua_getfield(L, -1, "body");
	if (lua_type(L, -1) == LUA_TSTRING)
		body = lua_tolstring(L, -1, &len);
	if (!body || len == 0 || len > ALERTS_BODY_MAX)
		snprintf(err, errlen,
			 "%s: format field 'body': expected a string of 1 to "
			 "%d bytes, got %s of %zu bytes",
			 path, ALERTS_BODY_MAX, luaL_typename(L, -1), len);
	else if ((p = payload_new(body, len, h)) != NULL)
		h = NULL;
	else
		snprintf(err, errlen, "out of memory for a body");
	lua_pop(L, 1);
out:
	curl_slist_free_all(h);
	return p;
}


/* "text" makes the fallback body readable in Slack too. */
struct alert_payload *alert_payload_fallback(const struct alert *a,
					     const char *key, const char *host)
{
	static const char tail[] =
		",\"fallback\":true,\"notes\":[\"alert_encode_failed\"]}";
	char text[ALERT_SEVERITY_MAX + ALERT_KIND_MAX + ALERT_SUMMARY_MAX + 8];
	struct curl_slist *h = NULL, *next;
	struct alert_payload *p = NULL;
	struct jbuf b = { .len = 0 };

	snprintf(text, sizeof text, "[%s] %s: %s", a->severity, a->kind,
		 a->summary);
	jb_put(&b, "{", 1);
	jb_field(&b, "text", text);
	jb_field(&b, "kind", a->kind);
	jb_field(&b, "severity", a->severity);
	jb_field(&b, "summary", a->summary);
	jb_field(&b, "key", key);
	jb_field(&b, "host", host);
	jb_put(&b, tail, sizeof tail - 1);
	h = curl_slist_append(NULL, "Content-Type: application/json");
	next = h ? curl_slist_append(h, "Expect:") : NULL;
	if (next)
		p = payload_new(b.p, b.len, next);
	if (!p)
		curl_slist_free_all(h);
	return p;
}
