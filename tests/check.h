#ifndef TESTS_CHECK_H
#define TESTS_CHECK_H

#include <stdio.h>
#include <string.h>

/*
 * Just enough of a test harness: each check prints expected and actual on
 * failure and counts it; a test file's main() returns check_failures.
 */

static int check_failures;
static int check_count;

#define CHECK_INT(expected, actual)                                            \
	do {                                                                   \
		long long e_ = (long long)(expected);                          \
		long long a_ = (long long)(actual);                            \
		check_count++;                                                 \
		if (e_ != a_) {                                                \
			check_failures++;                                      \
			fprintf(stderr,                                        \
				"%s:%d: %s: expected %lld, got "               \
				"%lld\n",                                      \
				__FILE__, __LINE__, #actual, e_, a_);          \
		}                                                              \
	} while (0)

#define CHECK_STR(expected, actual)                                            \
	do {                                                                   \
		const char *e_ = (expected);                                   \
		const char *a_ = (actual);                                     \
		check_count++;                                                 \
		if (!a_ || strcmp(e_, a_) != 0) {                              \
			check_failures++;                                      \
			fprintf(stderr,                                        \
				"%s:%d: %s: expected \"%s\", got "             \
				"\"%s\"\n",                                    \
				__FILE__, __LINE__, #actual, e_,               \
				a_ ? a_ : "(null)");                           \
		}                                                              \
	} while (0)

#define CHECK_CONTAINS(needle, haystack)                                       \
	do {                                                                   \
		const char *h_ = (haystack);                                   \
		check_count++;                                                 \
		if (!h_ || !strstr(h_, (needle))) {                            \
			check_failures++;                                      \
			fprintf(stderr, "%s:%d: expected \"%s\" in \"%s\"\n",  \
				__FILE__, __LINE__, (needle),                  \
				h_ ? h_ : "(null)");                           \
		}                                                              \
	} while (0)

static inline int check_report(const char *name)
{
	printf("%s: %d checks, %d failed\n", name, check_count, check_failures);
	return check_failures ? 1 : 0;
}

#endif
