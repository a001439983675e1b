#ifndef CORE_GATE_H
#define CORE_GATE_H

#include <stddef.h>
#include <stdint.h>

#include "msg_limits.h"
#include "outcome.h"

/*
 * The size gates. gate_body_size() runs on the loop thread with only the
 * size from the content header, before any body byte is kept.
 * gate_fields() runs on a worker thread over the raw body, before the
 * JSON decoder or the job script sees it.
 */

struct gate_report {
	char reason[160];    /* filled when the outcome is not ok */
	int warn_field;	     /* index into limits->fields, or -1 */
	uint64_t warn_bytes; /* the measured size of that field */
};

/* OUTCOME_SIZE_LIMIT when body_size is over the limit, else OUTCOME_OK. */
enum outcome gate_body_size(uint64_t body_size, const struct limits *lim);

/* Validates body as a JSON object within the depth limit and measures the
 * limited fields. Returns OUTCOME_OK, OUTCOME_INVALID_JSON or
 * OUTCOME_FIELD_SIZE_LIMIT; report says why, and names one field above
 * its warning size when the outcome is ok. */
enum outcome gate_fields(const char *body, size_t len, const struct limits *lim,
			 struct gate_report *report);

#endif
