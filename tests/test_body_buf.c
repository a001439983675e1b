#include <stdint.h>
#include <stdlib.h>

#include "body_buf.h"
#include "check.h"


static void test_reuse(void)
{
	char *a = body_buf_get(1 << 20);
	char *b;

	a[(1 << 20)] = '\0'; /* the spare byte is there */
	body_buf_put(a);
	/* A body of similar size gets the same buffer back. */
	b = body_buf_get((1 << 20) - 1000);
	CHECK_INT(1, a == b);
	body_buf_put(b);
	/* A larger one does not fit it. */
	b = body_buf_get(2 << 20);
	CHECK_INT(1, a != b);
	body_buf_put(b);
	body_buf_flush();
}


static void test_small_and_bounds(void)
{
	char *kept[5];
	char *s = body_buf_get(0);

	CHECK_INT(1, s != NULL);
	s[0] = '\0';
	body_buf_put(s);
	body_buf_put(NULL);
	CHECK_INT(1, body_buf_get(SIZE_MAX) == NULL);
	/* Five 1 MiB buffers given back: three fit in the 4 MiB kept (each
	 * rounds up to 1 MiB + 64 KiB), the other two are freed, which
	 * valgrind and LSan would report if they were not. */
	for (int i = 0; i < 5; i++)
		kept[i] = body_buf_get(1 << 20);
	CHECK_INT(0, body_buf_kept());
	for (int i = 0; i < 5; i++)
		body_buf_put(kept[i]);
	CHECK_INT(3 * ((1 << 20) + (64 << 10)), body_buf_kept());
	CHECK_INT(1, body_buf_kept() <= BODY_BUF_KEEP_BYTES);
	kept[0] = body_buf_get(1 << 20);
	CHECK_INT(2 * ((1 << 20) + (64 << 10)), body_buf_kept());
	body_buf_put(kept[0]);
	body_buf_flush();
}


int main(void)
{
	test_reuse();
	test_small_and_bounds();
	return check_report("test_body_buf");
}
