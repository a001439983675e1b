#ifndef CORE_LOG_H
#define CORE_LOG_H

#include <stdint.h>

/*
 * One JSON object per line on stdout: time, level, event, then the fields
 * the caller names. A line is built on the stack and written with one
 * fwrite under the stdio lock, so lines from worker threads never
 * interleave. Disabled levels cost one comparison.
 */

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };

enum log_type { LOG_T_STR, LOG_T_INT, LOG_T_UINT, LOG_T_DBL, LOG_T_BOOL };

struct log_field {
	const char *key;
	enum log_type type;
	union {
		const char *s;
		long long i;
		unsigned long long u;
		double d;
	} v;
};

#define LF_S(k, x) ((struct log_field){ (k), LOG_T_STR, { .s = (x) } })
#define LF_I(k, x) ((struct log_field){ (k), LOG_T_INT, { .i = (x) } })
#define LF_U(k, x) ((struct log_field){ (k), LOG_T_UINT, { .u = (x) } })
#define LF_D(k, x) ((struct log_field){ (k), LOG_T_DBL, { .d = (x) } })
#define LF_B(k, x) ((struct log_field){ (k), LOG_T_BOOL, { .i = !!(x) } })

extern enum log_level log_threshold;

/* Writes one line; use LOG() so disabled levels skip building fields. */
void log_write(enum log_level level, const char *event,
	       const struct log_field *fields, int n);

/* Parses "error", "warn", "info" or "debug"; returns -EINVAL otherwise. */
int log_parse_level(const char *name, enum log_level *out);

/* Names a level for output; "alert" is a warn line with its own name. */
const char *log_level_name(enum log_level level);

#define LOG(level, event, ...)                                                 \
	do {                                                                   \
		if ((level) <= log_threshold) {                                \
			const struct log_field lf_[] = { __VA_ARGS__ };        \
			log_write((level), (event), lf_,                       \
				  (int)(sizeof lf_ / sizeof lf_[0]));          \
		}                                                              \
	} while (0)

#define LOG0(level, event)                                                     \
	do {                                                                   \
		if ((level) <= log_threshold)                                  \
			log_write((level), (event), NULL, 0);                  \
	} while (0)

#endif
