#include <stdlib.h>

#include "check.h"
#include "gate.h"

static struct limits lim;


static void set_defaults(void)
{
	memset(&lim, 0, sizeof lim);
	lim.max_message_bytes = 2097152;
	lim.max_json_depth = 128;
	lim.nfields = 1;
	strcpy(lim.fields[0].name, "conversation_log");
	lim.fields[0].name_len = strlen("conversation_log");
	lim.fields[0].warn_bytes = 512000;
	lim.fields[0].max_bytes = 1572864;
}


/* Case 001: the limit is "over 2 MiB", judged from the header's size. */
static void test_body_size(void)
{
	CHECK_INT(OUTCOME_OK, gate_body_size(0, &lim));
	CHECK_INT(OUTCOME_OK, gate_body_size(2097152, &lim));
	CHECK_INT(OUTCOME_SIZE_LIMIT, gate_body_size(2097153, &lim));
	CHECK_INT(OUTCOME_SIZE_LIMIT, gate_body_size(104857600, &lim));
	CHECK_INT(OUTCOME_SIZE_LIMIT, gate_body_size(UINT64_MAX, &lim));
}


/* Builds {"conversation_log":"aaa..."} whose value is value_len bytes,
 * quotes included. The caller frees it. */
static char *body_with_log(size_t value_len, size_t *len)
{
	const char *head = "{\"id\":\"x\",\"conversation_log\":\"";
	size_t hl = strlen(head);
	char *b = malloc(hl + value_len + 2);

	memcpy(b, head, hl);
	memset(b + hl, 'a', value_len - 2);
	memcpy(b + hl + value_len - 2, "\"}", 3);
	*len = hl + value_len;
	return b;
}


static void test_field_limits(void)
{
	static const struct {
		size_t value_len;
		enum outcome outcome;
		int warned;
	} rows[] = {
		{ 100, OUTCOME_OK, 0 },
		{ 512000, OUTCOME_OK, 0 },
		{ 512001, OUTCOME_OK, 1 },
		{ 1572864, OUTCOME_OK, 1 },
		{ 1572865, OUTCOME_FIELD_SIZE_LIMIT, 0 },
	};
	struct gate_report rep;

	for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		size_t len;
		char *b = body_with_log(rows[i].value_len, &len);

		CHECK_INT(rows[i].outcome, gate_fields(b, len, &lim, &rep));
		CHECK_INT(rows[i].warned ? 0 : -1, rep.warn_field);
		if (rows[i].warned)
			CHECK_INT(rows[i].value_len, rep.warn_bytes);
		free(b);
	}
	{
		size_t len;
		char *b = body_with_log(1572865, &len);

		gate_fields(b, len, &lim, &rep);
		CHECK_STR("field conversation_log is 1572865 bytes, over its "
			  "maximum of 1572864",
			  rep.reason);
		free(b);
	}
}


static void test_invalid_json(void)
{
	struct gate_report rep;
	const char *deep = "{\"a\":[[[[[[[[[[]]]]]]]]]]}";

	CHECK_INT(OUTCOME_INVALID_JSON, gate_fields("nope", 4, &lim, &rep));
	CHECK_STR("not valid JSON at byte 0", rep.reason);
	CHECK_INT(OUTCOME_INVALID_JSON, gate_fields("[1]", 3, &lim, &rep));
	CHECK_STR("not an object at byte 3", rep.reason);
	lim.max_json_depth = 8;
	CHECK_INT(OUTCOME_INVALID_JSON,
		  gate_fields(deep, strlen(deep), &lim, &rep));
	CHECK_STR("json_too_deep: nesting over 8 at byte 12", rep.reason);
	lim.max_json_depth = 11;
	CHECK_INT(OUTCOME_OK, gate_fields(deep, strlen(deep), &lim, &rep));
}


int main(void)
{
	set_defaults();
	test_body_size();
	test_field_limits();
	test_invalid_json();
	return check_report("test_gate");
}
