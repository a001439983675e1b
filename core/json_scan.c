/*
 * The scanner walks the body once with an explicit stack of container
 * kinds instead of recursion, so a body of a million '[' costs a bounded
 * stack array and a clean "too deep" answer, never a crashed thread. Each
 * step is one of four states: expecting a value, a key, something after a
 * value, or the end of input. A top-level member's value is measured from
 * its first byte to the byte after it, which is the raw size a decoder
 * would be handed.
 */
#include "json_scan.h"

#include <stdint.h>
#include <string.h>

/* Keys longer than this cannot be limited fields; they are still
 * validated, only not compared. */
#define KEY_MAX 128

enum state { S_VALUE, S_KEY, S_AFTER, S_END };

struct scan {
	const char *p;
	const char *end;
	const char *start;
	int depth;
	unsigned char kind[JSON_SCAN_DEPTH_MAX]; /* '{' or '[' per level */
	struct json_field *fields;
	int nfields;
	int pending; /* field whose value is being measured */
	const char *value_start;
};


static void skip_ws(struct scan *s)
{
	while (s->p < s->end && (*s->p == ' ' || *s->p == '\n' ||
				 *s->p == '\r' || *s->p == '\t'))
		s->p++;
}


static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}


/* Reads 4 hex digits at p into *cp; returns 0 or -1. */
static int read_hex4(const char *p, const char *end, unsigned *cp)
{
	unsigned v = 0;

	if (end - p < 4)
		return -1;
	for (int i = 0; i < 4; i++) {
		int h = hex_value(p[i]);

		if (h < 0)
			return -1;
		v = v << 4 | (unsigned)h;
	}
	*cp = v;
	return 0;
}


/* Appends code point cp to key as UTF-8; a key that overflows is marked
 * by setting *klen past KEY_MAX so it matches nothing. */
static void key_put(char *key, size_t *klen, unsigned cp)
{
	char tmp[4];
	size_t n;

	if (cp < 0x80) {
		tmp[0] = (char)cp;
		n = 1;
	} else if (cp < 0x800) {
		tmp[0] = (char)(0xC0 | cp >> 6);
		tmp[1] = (char)(0x80 | (cp & 0x3F));
		n = 2;
	} else {
		tmp[0] = (char)(0xE0 | cp >> 12);
		tmp[1] = (char)(0x80 | (cp >> 6 & 0x3F));
		tmp[2] = (char)(0x80 | (cp & 0x3F));
		n = 3;
	}
	if (*klen + n <= KEY_MAX)
		memcpy(key + *klen, tmp, n);
	*klen += n;
}


#define ONES  0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* Nonzero when some byte of x is zero (the classic SWAR test). */
static uint64_t has_zero(uint64_t x)
{
	return (x - ONES) & ~x & HIGHS;
}


#if defined(__x86_64__) && defined(__GNUC__)
/* 32 bytes per step where the CPU has AVX2 (checked once at run time;
 * the build itself targets plain x86-64). A 1 MiB body is one long
 * string, and this loop is most of the gate's time on it. */
__attribute__((target("avx2"))) static const char *
skip_plain_avx2(const char *p, const char *end)
{
	typedef unsigned char v32 __attribute__((vector_size(32)));

	while (end - p >= 32) {
		v32 x, hit;
		uint64_t q[4];

		memcpy(&x, p, 32);
		hit = (v32)((x == '"') | (x == '\\') | (x < 0x20));
		memcpy(q, &hit, 32);
		if (q[0] | q[1] | q[2] | q[3])
			break;
		p += 32;
	}
	return p;
}


static int have_avx2(void)
{
	static int known = -1;

	if (known < 0)
		known = __builtin_cpu_supports("avx2") ? 1 : 0;
	return known;
}
#endif


/* Advances s->p over string bytes that need no attention: not a quote,
 * not a backslash, not a control byte. A byte loop dominated the profile
 * of 1 KiB messages, so plain runs are skipped in blocks. */
static void skip_plain(struct scan *s)
{
	/* Sixteen bytes per step with the compiler's vector extension (SSE2
	 * or NEON underneath): a 1 MiB string body is most of what the gate
	 * reads, and it must cost well under a copy of it. */
	typedef unsigned char v16 __attribute__((vector_size(16)));

#if defined(__x86_64__) && defined(__GNUC__)
	if (have_avx2())
		s->p = skip_plain_avx2(s->p, s->end);
#endif
	while (s->end - s->p >= 16) {
		v16 x, hit;
		uint64_t half[2];

		memcpy(&x, s->p, 16);
		hit = (v16)((x == '"') | (x == '\\') | (x < 0x20));
		memcpy(half, &hit, 16);
		if (half[0] | half[1])
			break;
		s->p += 16;
	}
	while (s->end - s->p >= 8) {
		uint64_t x;

		memcpy(&x, s->p, 8);
		if (has_zero(x ^ (ONES * '"')) | has_zero(x ^ (ONES * '\\')) |
		    ((x - ONES * 0x20) & ~x & HIGHS))
			break;
		s->p += 8;
	}
	while (s->p < s->end) {
		unsigned char c = (unsigned char)*s->p;

		if (c == '"' || c == '\\' || c < 0x20)
			return;
		s->p++;
	}
}


/* Scans a string starting at the opening quote. When key is not NULL the
 * unescaped text is collected there (surrogate pairs are kept as two
 * 3-byte sequences: no limited field name needs them). */
static int scan_string(struct scan *s, char *key, size_t *klen)
{
	static const char escapes[] = "\"\\/bfnrt";
	static const char decoded[] = "\"\\/\b\f\n\r\t";

	s->p++;
	while (s->p < s->end) {
		unsigned char c;
		unsigned cp;
		const char *e;

		if (!key)
			skip_plain(s);
		if (s->p >= s->end)
			break;
		c = (unsigned char)*s->p;

		if (c == '"') {
			s->p++;
			return 0;
		}
		if (c < 0x20)
			return -1;
		if (c != '\\') {
			if (key) {
				if (*klen < KEY_MAX)
					key[*klen] = (char)c;
				(*klen)++;
			}
			s->p++;
			continue;
		}
		if (s->end - s->p < 2)
			return -1;
		if (s->p[1] == 'u') {
			if (read_hex4(s->p + 2, s->end, &cp) < 0)
				return -1;
			if (key)
				key_put(key, klen, cp);
			s->p += 6;
			continue;
		}
		e = memchr(escapes, s->p[1], sizeof escapes - 1);
		if (!e || !s->p[1])
			return -1;
		if (key)
			key_put(key, klen, (unsigned char)decoded[e - escapes]);
		s->p += 2;
	}
	return -1;
}


static int is_digit(const struct scan *s)
{
	return s->p < s->end && *s->p >= '0' && *s->p <= '9';
}


static void skip_digits(struct scan *s)
{
	while (is_digit(s))
		s->p++;
}


/* JSON's number grammar: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static int scan_number(struct scan *s)
{
	if (*s->p == '-')
		s->p++;
	if (!is_digit(s))
		return -1;
	if (*s->p++ != '0')
		skip_digits(s);
	if (s->p < s->end && *s->p == '.') {
		s->p++;
		if (!is_digit(s))
			return -1;
		skip_digits(s);
	}
	if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
		s->p++;
		if (s->p < s->end && (*s->p == '+' || *s->p == '-'))
			s->p++;
		if (!is_digit(s))
			return -1;
		skip_digits(s);
	}
	return 0;
}


static int scan_literal(struct scan *s)
{
	static const char *const words[] = { "true", "false", "null" };

	for (int i = 0; i < 3; i++) {
		size_t n = strlen(words[i]);

		if ((size_t)(s->end - s->p) >= n &&
		    memcmp(s->p, words[i], n) == 0) {
			s->p += n;
			return 0;
		}
	}
	return -1;
}


static int push(struct scan *s, int max_depth, unsigned char kind)
{
	if (s->depth >= max_depth)
		return JSON_SCAN_TOO_DEEP;
	s->kind[s->depth++] = kind;
	s->p++;
	return 0;
}


/* Scans one value or opens a container; returns the next state or a
 * negative status. */
static int step_value(struct scan *s, int max_depth)
{
	int rc;

	skip_ws(s);
	if (s->p >= s->end)
		return JSON_SCAN_SYNTAX;
	switch (*s->p) {
	case '{':
	case '[':
		rc = push(s, max_depth, (unsigned char)*s->p);
		if (rc < 0)
			return rc;
		skip_ws(s);
		if (s->p < s->end && (*s->p == '}' || *s->p == ']'))
			return S_AFTER; /* the closer is checked there */
		return s->kind[s->depth - 1] == '{' ? S_KEY : S_VALUE;
	case '"':
		rc = scan_string(s, NULL, NULL);
		break;
	case 't':
	case 'f':
	case 'n':
		rc = scan_literal(s);
		break;
	default:
		rc = scan_number(s);
		break;
	}
	return rc < 0 ? JSON_SCAN_SYNTAX : S_AFTER;
}


static void match_key(struct scan *s, const char *key, size_t klen)
{
	s->pending = -1;
	for (int i = 0; i < s->nfields; i++) {
		if (s->fields[i].name_len == klen &&
		    memcmp(s->fields[i].name, key, klen) == 0) {
			s->pending = i;
			return;
		}
	}
}


static int step_key(struct scan *s)
{
	char key[KEY_MAX];
	size_t klen = 0;
	int top = s->depth == 1;

	skip_ws(s);
	if (s->p >= s->end || *s->p != '"')
		return JSON_SCAN_SYNTAX;
	if (scan_string(s, top ? key : NULL, &klen) < 0)
		return JSON_SCAN_SYNTAX;
	skip_ws(s);
	if (s->p >= s->end || *s->p != ':')
		return JSON_SCAN_SYNTAX;
	s->p++;
	if (top) {
		match_key(s, key, klen);
		skip_ws(s);
		s->value_start = s->p;
	}
	return S_VALUE;
}


static void finish_member(struct scan *s)
{
	struct json_field *f;
	size_t n;

	if (s->depth != 1 || s->pending < 0)
		return;
	f = &s->fields[s->pending];
	n = (size_t)(s->p - s->value_start);
	f->found = 1;
	if (n > f->value_len)
		f->value_len = n;
	s->pending = -1;
}


/* After a value: a comma, the closer of the current container, or, at
 * depth 0, the end of input. */
static int step_after(struct scan *s)
{
	unsigned char open;

	if (s->depth == 0)
		return S_END;
	finish_member(s);
	skip_ws(s);
	if (s->p >= s->end)
		return JSON_SCAN_SYNTAX;
	open = s->kind[s->depth - 1];
	if (*s->p == ',') {
		s->p++;
		return open == '{' ? S_KEY : S_VALUE;
	}
	if ((open == '{' && *s->p == '}') || (open == '[' && *s->p == ']')) {
		s->p++;
		s->depth--;
		return S_AFTER;
	}
	return JSON_SCAN_SYNTAX;
}


/* Runs the state machine to the end of input; returns a status. */
static int run(struct scan *s, int max_depth)
{
	int st = S_VALUE;

	while (st >= 0 && st != S_END) {
		if (st == S_VALUE)
			st = step_value(s, max_depth);
		else if (st == S_KEY)
			st = step_key(s);
		else
			st = step_after(s);
	}
	if (st < 0)
		return st;
	skip_ws(s);
	return s->p == s->end ? JSON_SCAN_OK : JSON_SCAN_SYNTAX;
}


int json_scan(const char *buf, size_t len, int max_depth,
	      struct json_field *fields, int nfields, size_t *err_at)
{
	static const struct scan zero;
	struct scan s = zero;
	int is_object;
	int rc;

	s.p = s.start = buf;
	s.end = buf + len;
	s.fields = fields;
	s.nfields = nfields;
	s.pending = -1;
	if (max_depth > JSON_SCAN_DEPTH_MAX)
		max_depth = JSON_SCAN_DEPTH_MAX;
	for (int i = 0; i < nfields; i++) {
		fields[i].found = 0;
		fields[i].value_len = 0;
	}

	skip_ws(&s);
	is_object = s.p < s.end && *s.p == '{';
	rc = run(&s, max_depth);
	*err_at = (size_t)(s.p - s.start);
	/* Whole valid JSON that is not an object gets its own answer. */
	if (rc == JSON_SCAN_OK && !is_object)
		return JSON_SCAN_NOT_OBJECT;
	return rc;
}


const char *json_scan_status_name(int status)
{
	switch (status) {
	case JSON_SCAN_OK:
		return "ok";
	case JSON_SCAN_NOT_OBJECT:
		return "not an object";
	case JSON_SCAN_TOO_DEEP:
		return "nested too deep";
	default:
		return "not valid JSON";
	}
}
