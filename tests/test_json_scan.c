#include <stdlib.h>

#include "check.h"
#include "json_scan.h"

#define LOG_FIELD "conversation_log"

static struct json_field field;


/* Scans s for the conversation_log field; returns the status. */
static int scan(const char *s, int depth)
{
	size_t at;

	field.name = LOG_FIELD;
	field.name_len = strlen(LOG_FIELD);
	return json_scan(s, strlen(s), depth, &field, 1, &at);
}


static void test_field_positions(void)
{
	static const struct {
		const char *body;
		int found;
		size_t len;
	} rows[] = {
		/* first, last, alone */
		{ "{\"conversation_log\":[1,2],\"id\":\"x\"}", 1, 5 },
		{ "{\"id\":\"x\",\"conversation_log\":[1,2]}", 1, 5 },
		{ "{ \"conversation_log\" :  \"abc\"  }", 1, 5 },
		/* a value with nested containers is measured whole */
		{ "{\"conversation_log\":[{\"a\":[1,{\"b\":2}]}],\"z\":1}", 1,
		  19 },
		/* the same name nested deeper is not the top-level field */
		{ "{\"meta\":{\"conversation_log\":[1,2,3]}}", 0, 0 },
		{ "{\"a\":[{\"conversation_log\":1}]}", 0, 0 },
		/* absent */
		{ "{\"id\":\"x\"}", 0, 0 },
		{ "{}", 0, 0 },
		/* escaped key that decodes to the name */
		{ "{\"conversation\\u005flog\":\"ab\"}", 1, 4 },
		{ "{\"conversation_lo\\u0067\":[]}", 1, 2 },
		/* escaped quotes and brackets inside the value count as
		 * raw bytes */
		{ "{\"conversation_log\":\"a\\\"]}\\\\\"}", 1, 9 },
		/* a key that only starts like the name */
		{ "{\"conversation_logs\":[1]}", 0, 0 },
		/* repeated: the larger of the two is kept */
		{ "{\"conversation_log\":[1],\"conversation_log\":[1,2,3]}", 1,
		  7 },
	};

	for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		CHECK_INT(JSON_SCAN_OK, scan(rows[i].body, 64));
		CHECK_INT(rows[i].found, field.found);
		CHECK_INT(rows[i].len, field.value_len);
	}
}


static void test_invalid(void)
{
	static const struct {
		const char *body;
		int status;
	} rows[] = {
		{ "", JSON_SCAN_SYNTAX },
		{ "not json", JSON_SCAN_SYNTAX },
		{ "{", JSON_SCAN_SYNTAX },
		{ "{\"a\":1", JSON_SCAN_SYNTAX },
		{ "{\"a\" 1}", JSON_SCAN_SYNTAX },
		{ "{\"a\":1,}", JSON_SCAN_SYNTAX },
		{ "{\"a\":[1,]}", JSON_SCAN_SYNTAX },
		{ "{\"a\":01}", JSON_SCAN_SYNTAX },
		{ "{\"a\":1.}", JSON_SCAN_SYNTAX },
		{ "{\"a\":-}", JSON_SCAN_SYNTAX },
		{ "{\"a\":NaN}", JSON_SCAN_SYNTAX },
		{ "{\"a\":tru}", JSON_SCAN_SYNTAX },
		{ "{\"a\":\"\\x\"}", JSON_SCAN_SYNTAX },
		{ "{\"a\":\"\\u12\"}", JSON_SCAN_SYNTAX },
		{ "{\"a\":\"tab\there\"}", JSON_SCAN_SYNTAX },
		{ "{\"a\":[}", JSON_SCAN_SYNTAX },
		{ "{\"a\":1}}", JSON_SCAN_SYNTAX },
		{ "{\"a\":1} x", JSON_SCAN_SYNTAX },
		{ "{1:2}", JSON_SCAN_SYNTAX },
		{ "[1,2]", JSON_SCAN_NOT_OBJECT },
		{ "\"str\"", JSON_SCAN_NOT_OBJECT },
		{ "42", JSON_SCAN_NOT_OBJECT },
		{ "null", JSON_SCAN_NOT_OBJECT },
		{ " {\"a\":-1.5e+3,\"b\":[true,false,null]} \n", JSON_SCAN_OK },
	};

	for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
		CHECK_INT(rows[i].status, scan(rows[i].body, 64));
}


/* Builds open^n close^n around mid; the caller frees it. */
static char *nest(int n, const char *open, const char *mid, const char *close)
{
	size_t lo = strlen(open), lm = strlen(mid), lc = strlen(close);
	char *s = malloc((size_t)n * (lo + lc) + lm + 1);
	char *p = s;

	for (int i = 0; i < n; i++, p += lo)
		memcpy(p, open, lo);
	memcpy(p, mid, lm);
	p += lm;
	for (int i = 0; i < n; i++, p += lc)
		memcpy(p, close, lc);
	*p = '\0';
	return s;
}


/* Case 006: deep nesting is refused as too deep, never a crash. */
static void test_depth(void)
{
	char *a = nest(100000, "[", "", "]");
	char *b = nest(50000, "{\"a\":", "1", "}");
	char *c = nest(5000, "[", "", "]");
	char *c_body = malloc(strlen(c) + 32);
	char *d = nest(64, "{\"a\":", "1", "}");
	char *e = nest(65, "{\"a\":", "1", "}");

	sprintf(c_body, "{\"conversation_log\":%s}", c);
	CHECK_INT(JSON_SCAN_TOO_DEEP, scan(a, 128));
	CHECK_INT(JSON_SCAN_TOO_DEEP, scan(b, 128));
	CHECK_INT(JSON_SCAN_TOO_DEEP, scan(c_body, 128));
	/* 64 nested objects, the outer one included, fit a limit of 64 */
	CHECK_INT(JSON_SCAN_OK, scan(d, 64));
	CHECK_INT(JSON_SCAN_TOO_DEEP, scan(e, 64));
	/* the cap holds whatever the caller asks */
	CHECK_INT(JSON_SCAN_TOO_DEEP, scan(a, 1000000));
	free(a);
	free(b);
	free(c);
	free(c_body);
	free(d);
	free(e);
}


/* The string scanner skips 32, 16 or 8 bytes at a time; an escape, a
 * quote or a control byte must be found at every offset within those
 * blocks and in the bytes after the last whole one. */
static void test_every_offset(void)
{
	char body[256];
	static const char head[] = "{\"conversation_log\":\"";

	for (int len = 0; len < 100; len++) {
		for (int at = 0; at < len; at++) {
			char text[128];

			memset(text, 'a', (size_t)len);
			text[len] = '\0';
			text[at] = '\\';
			if (at + 1 < len)
				text[at + 1] = 'n';
			else
				text[at] = 'b';
			snprintf(body, sizeof body, "%s%s\"}", head, text);
			CHECK_INT(JSON_SCAN_OK, scan(body, 8));
			CHECK_INT(len + 2, field.value_len);

			memset(text, 'a', (size_t)len);
			text[at] = '\t';
			snprintf(body, sizeof body, "%s%s\"}", head, text);
			CHECK_INT(JSON_SCAN_SYNTAX, scan(body, 8));
		}
	}
}


int main(void)
{
	test_field_positions();
	test_invalid();
	test_depth();
	test_every_offset();
	return check_report("test_json_scan");
}
