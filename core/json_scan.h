#ifndef CORE_JSON_SCAN_H
#define CORE_JSON_SCAN_H

#include <stddef.h>

/*
 * A validating JSON scanner that allocates nothing and does not recurse.
 * It checks that a body is one JSON object, no deeper than a limit, and
 * measures the raw bytes of chosen top-level members' values, so the
 * field gate can refuse a message before anything decodes it. Strings are
 * checked for escapes and control bytes, not for valid UTF-8 (the job
 * script's utf8 functions catch that).
 */

/* lua-cjson refuses nesting past 1000; the scanner never allows more. */
#define JSON_SCAN_DEPTH_MAX 1000

struct json_field {
	const char *name; /* key to look for, unescaped */
	size_t name_len;
	size_t value_len; /* raw bytes of the value, largest if repeated */
	int found;
};

enum json_scan_status {
	JSON_SCAN_OK = 0,
	JSON_SCAN_SYNTAX = -1,	   /* not JSON */
	JSON_SCAN_NOT_OBJECT = -2, /* JSON, but not an object */
	JSON_SCAN_TOO_DEEP = -3,   /* nesting over the limit */
};

/* Scans buf[0..len). Fills found/value_len of each of the nfields fields
 * that occur as top-level keys, and sets *err_at to the byte offset of the
 * first problem. Returns a json_scan_status. max_depth counts every
 * object and array, the outer object included, and is capped at
 * JSON_SCAN_DEPTH_MAX. */
int json_scan(const char *buf, size_t len, int max_depth,
	      struct json_field *fields, int nfields, size_t *err_at);

/* A short name for a status, for logs: "ok", "syntax", ... */
const char *json_scan_status_name(int status);

#endif
