#include "gate.h"

#include <stdio.h>

#include "json_scan.h"


enum outcome gate_body_size(uint64_t body_size, const struct limits *lim)
{
	return body_size > lim->max_message_bytes ? OUTCOME_SIZE_LIMIT
						  : OUTCOME_OK;
}


enum outcome gate_fields(const char *body, size_t len, const struct limits *lim,
			 struct gate_report *report)
{
	struct json_field fields[LIMITS_FIELDS_MAX];
	size_t err_at = 0;
	int rc;

	report->reason[0] = '\0';
	report->warn_field = -1;
	report->warn_bytes = 0;
	for (int i = 0; i < lim->nfields; i++) {
		fields[i].name = lim->fields[i].name;
		fields[i].name_len = lim->fields[i].name_len;
	}

	rc = json_scan(body, len, lim->max_json_depth, fields, lim->nfields,
		       &err_at);
	if (rc != JSON_SCAN_OK) {
		if (rc == JSON_SCAN_TOO_DEEP)
			snprintf(report->reason, sizeof report->reason,
				 "json_too_deep: nesting over %d at byte %zu",
				 lim->max_json_depth, err_at);
		else
			snprintf(report->reason, sizeof report->reason,
				 "%s at byte %zu", json_scan_status_name(rc),
				 err_at);
		return OUTCOME_INVALID_JSON;
	}

	for (int i = 0; i < lim->nfields; i++) {
		const struct field_limit *fl = &lim->fields[i];

		if (!fields[i].found)
			continue;
		if (fields[i].value_len > fl->max_bytes) {
			snprintf(report->reason, sizeof report->reason,
				 "field %s is %zu bytes, over its maximum of "
				 "%llu",
				 fl->name, fields[i].value_len,
				 (unsigned long long)fl->max_bytes);
			return OUTCOME_FIELD_SIZE_LIMIT;
		}
		if (fl->warn_bytes && fields[i].value_len > fl->warn_bytes) {
			report->warn_field = i;
			report->warn_bytes = fields[i].value_len;
		}
	}
	return OUTCOME_OK;
}
