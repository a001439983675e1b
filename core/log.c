#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* Lines longer than this are cut; a log line is never a message body. */
#define LOG_LINE_MAX 2048

enum log_level log_threshold = LOG_INFO;

static const char *const level_names[] = { "error", "warn", "info", "debug" };


int log_parse_level(const char *name, enum log_level *out)
{
	for (int i = 0; i <= LOG_DEBUG; i++) {
		if (strcmp(name, level_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	return -EINVAL;
}


const char *log_level_name(enum log_level level)
{
	return level_names[level];
}


/* Appends s as a JSON string body (no quotes), escaping what JSON needs. */
static size_t put_escaped(char *buf, size_t pos, size_t cap, const char *s)
{
	for (; *s && pos + 7 < cap; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\') {
			buf[pos++] = '\\';
			buf[pos++] = (char)c;
		} else if (c < 0x20) {
			pos += (size_t)snprintf(buf + pos, cap - pos, "\\u%04x",
						c);
		} else {
			buf[pos++] = (char)c;
		}
	}
	return pos;
}


static size_t put_field(char *buf, size_t pos, size_t cap,
			const struct log_field *f)
{
	int n = 0;

	pos += (size_t)snprintf(buf + pos, cap - pos, ",\"");
	pos = put_escaped(buf, pos, cap, f->key);
	if (pos + 3 >= cap)
		return pos;
	buf[pos++] = '"';
	buf[pos++] = ':';
	switch (f->type) {
	case LOG_T_STR:
		if (!f->v.s) {
			n = snprintf(buf + pos, cap - pos, "null");
			break;
		}
		buf[pos++] = '"';
		pos = put_escaped(buf, pos, cap - 1, f->v.s);
		buf[pos++] = '"';
		break;
	case LOG_T_INT:
		n = snprintf(buf + pos, cap - pos, "%lld", f->v.i);
		break;
	case LOG_T_UINT:
		n = snprintf(buf + pos, cap - pos, "%llu", f->v.u);
		break;
	case LOG_T_DBL:
		n = snprintf(buf + pos, cap - pos, "%.3f", f->v.d);
		break;
	case LOG_T_BOOL:
		n = snprintf(buf + pos, cap - pos, f->v.i ? "true" : "false");
		break;
	}
	pos += (size_t)(n > 0 ? n : 0);
	return pos < cap ? pos : cap - 1;
}


void log_write(enum log_level level, const char *event,
	       const struct log_field *fields, int n)
{
	char buf[LOG_LINE_MAX];
	struct timespec ts;
	struct tm tm;
	size_t pos;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	pos = strftime(buf, sizeof buf, "{\"time\":\"%Y-%m-%dT%H:%M:%S", &tm);
	pos += (size_t)snprintf(buf + pos, sizeof buf - pos,
				".%03ldZ\",\"level\":\"%s\",\"event\":\"",
				ts.tv_nsec / 1000000, level_names[level]);
	pos = put_escaped(buf, pos, sizeof buf, event);
	buf[pos++] = '"';
	for (int i = 0; i < n; i++)
		pos = put_field(buf, pos, sizeof buf - 3, &fields[i]);
	buf[pos++] = '}';
	buf[pos++] = '\n';

	flockfile(stdout);
	fwrite(buf, 1, pos, stdout);
	fflush(stdout);
	funlockfile(stdout);
}
