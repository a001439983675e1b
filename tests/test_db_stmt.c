#include <stdint.h>
#include <stdlib.h>

#include "check.h"
#include "db_stmt.h"

#define TEXTS 2000


static int hex_name(const char *name)
{
	if (strncmp(name, "mr_", 3) != 0 || strlen(name) != 19)
		return 0;
	return strspn(name + 3, "0123456789abcdef") == 16;
}


/* The name is what the server knows the statement by: it must follow from
 * the text alone and look the same every time. */
static void test_name_follows_text(void)
{
	char a[DB_STMT_NAME_MAX], b[DB_STMT_NAME_MAX];
	char copy[] = "SELECT $1::int";
	uint64_t ka = db_stmt_key("SELECT $1::int", a);
	uint64_t kb = db_stmt_key(copy, b);

	CHECK_INT(1, hex_name(a));
	CHECK_INT(1, ka == kb);
	CHECK_STR(a, b);
	CHECK_INT(1, hex_name(b));
	db_stmt_key("", a);
	CHECK_INT(1, hex_name(a));
}


/* Texts of every length around the eight-byte steps, differing in one
 * byte at every position, and texts that are prefixes of each other, all
 * get keys of their own. */
static void test_keys_differ(void)
{
	static uint64_t keys[TEXTS];
	char name[DB_STMT_NAME_MAX], text[64];
	int n = 0, clashes = 0;

	for (int len = 0; len < 40; len++) {
		memset(text, 'a', (size_t)len);
		text[len] = '\0';
		keys[n++] = db_stmt_key(text, name);
		for (int at = 0; at < len; at++) {
			text[at] = 'b';
			keys[n++] = db_stmt_key(text, name);
			text[at] = 'a';
		}
	}
	for (int i = 0; i < n; i++)
		for (int j = i + 1; j < n; j++)
			clashes += keys[i] == keys[j];
	CHECK_INT(40 + 40 * 39 / 2, n);
	CHECK_INT(0, clashes);
}


int main(void)
{
	test_name_follows_text();
	test_keys_differ();
	return check_report("db_stmt");
}
