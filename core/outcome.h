#ifndef CORE_OUTCOME_H
#define CORE_OUTCOME_H

/*
 * How a delivery ends. Every delivery gets exactly one, which decides the
 * broker action and is counted and logged (DESIGN.md, "Messages and
 * outcomes").
 */

enum outcome {
	OUTCOME_OK,
	OUTCOME_SIZE_LIMIT,
	OUTCOME_INVALID_JSON,
	OUTCOME_FIELD_SIZE_LIMIT,
	OUTCOME_INVALID_MESSAGE,
	OUTCOME_JOB_ERROR,
	OUTCOME_SHUTDOWN,
	OUTCOME_COUNT
};

static inline const char *outcome_name(enum outcome o)
{
	static const char *const names[OUTCOME_COUNT] = {
		"ok",
		"size_limit",
		"invalid_json",
		"field_size_limit",
		"invalid_message",
		"job_error",
		"shutdown",
	};
	return names[o];
}

#endif
