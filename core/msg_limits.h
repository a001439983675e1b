#ifndef CORE_MSG_LIMITS_H
#define CORE_MSG_LIMITS_H

#include <stddef.h>
#include <stdint.h>

/*
 * Limits from policies/limits.lua, validated and cached in C at start-up
 * so the message path never calls Lua for a number. The maxima below are
 * what the host itself can hold; a policy asking for more is refused.
 */

#define LIMITS_FIELDS_MAX     8
#define LIMITS_FIELD_NAME_MAX 64
/* A body above 1 GiB is not a message; the broker's own cap is lower. */
#define LIMITS_MESSAGE_BYTES_MAX (1024ULL * 1024 * 1024)
#define LIMITS_LUA_MEMORY_MIN	 (1024ULL * 1024)
#define LIMITS_LUA_MEMORY_MAX	 (16ULL * 1024 * 1024 * 1024)

struct field_limit {
	char name[LIMITS_FIELD_NAME_MAX];
	size_t name_len;
	uint64_t warn_bytes; /* 0: no warning */
	uint64_t max_bytes;
};

struct limits {
	uint64_t max_message_bytes;
	int max_json_depth;
	int nfields;
	struct field_limit fields[LIMITS_FIELDS_MAX];
	uint64_t lua_memory_bytes;
	uint64_t job_timeout_ms;
	uint64_t probe_every_messages;
	uint64_t probe_every_seconds;
	uint64_t probe_min_interval_ms; /* message-count samples, at most */
	uint64_t backlog_alert;
	uint64_t trim_after_bytes;
};

/* What limits.lua is told about the running process. */
struct limits_context {
	uint64_t memory_limit_bytes; /* 0: unknown */
	int concurrency;
	int prefetch;
};

#endif
