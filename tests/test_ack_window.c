#include "ack_window.h"
#include "check.h"

static uint64_t singles[16];


static size_t flush(struct ack_window *w, uint64_t *upto)
{
	return ack_window_flush(w, upto, singles, 16);
}


/* In-order completion: one multiple ack covers the lot. */
static void test_contiguous(void)
{
	struct ack_window w;
	uint64_t upto;

	ack_window_init(&w);
	for (uint64_t t = 1; t <= 5; t++)
		ack_window_open(&w, t);
	for (uint64_t t = 1; t <= 5; t++)
		ack_window_settle(&w, t, 1);
	CHECK_INT(0, flush(&w, &upto));
	CHECK_INT(5, upto);
	CHECK_INT(6, w.base);
	CHECK_INT(0, flush(&w, &upto));
	CHECK_INT(0, upto);
	ack_window_free(&w);
}


/* A running job holds the prefix; those after it are acked one by one,
 * and once it finishes the multiple ack goes up to it. */
static void test_gap(void)
{
	struct ack_window w;
	uint64_t upto;

	ack_window_init(&w);
	for (uint64_t t = 1; t <= 6; t++)
		ack_window_open(&w, t);
	ack_window_settle(&w, 1, 1);
	ack_window_settle(&w, 2, 0); /* rejected: no ack, but settled */
	ack_window_settle(&w, 4, 1);
	ack_window_settle(&w, 6, 1);
	CHECK_INT(2, flush(&w, &upto));
	CHECK_INT(1, upto);
	CHECK_INT(4, singles[0]);
	CHECK_INT(6, singles[1]);
	CHECK_INT(3, w.base);
	ack_window_settle(&w, 3, 1);
	CHECK_INT(0, flush(&w, &upto));
	CHECK_INT(3, upto); /* 4 was sent already; 5 still runs */
	CHECK_INT(5, w.base);
	ack_window_settle(&w, 5, 0);
	CHECK_INT(0, flush(&w, &upto));
	CHECK_INT(0, upto); /* 5 rejected, 6 acked: nothing left */
	CHECK_INT(7, w.base);
	ack_window_free(&w);
}


/* The ring grows past its first size while an old job runs. */
static void test_growth(void)
{
	struct ack_window w;
	uint64_t upto;

	ack_window_init(&w);
	for (uint64_t t = 1; t <= 1000; t++)
		CHECK_INT(0, ack_window_open(&w, t));
	for (uint64_t t = 2; t <= 1000; t++)
		ack_window_settle(&w, t, 0);
	CHECK_INT(0, flush(&w, &upto));
	CHECK_INT(0, upto);
	ack_window_settle(&w, 1, 1);
	CHECK_INT(0, flush(&w, &upto));
	CHECK_INT(1, upto);
	CHECK_INT(1001, w.base);
	ack_window_free(&w);
}


/* Skipped tags count as settled; reset starts again at 1. */
static void test_skip_and_reset(void)
{
	struct ack_window w;
	uint64_t upto;

	ack_window_init(&w);
	ack_window_open(&w, 3);
	ack_window_settle(&w, 3, 1);
	CHECK_INT(0, flush(&w, &upto));
	CHECK_INT(3, upto);
	ack_window_reset(&w);
	ack_window_open(&w, 1);
	ack_window_settle(&w, 1, 1);
	CHECK_INT(0, flush(&w, &upto));
	CHECK_INT(1, upto);
	ack_window_free(&w);
}


int main(void)
{
	test_contiguous();
	test_gap();
	test_growth();
	test_skip_and_reset();
	return check_report("test_ack_window");
}
