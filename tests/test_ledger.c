#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "ledger.h"

static char dir[] = "/tmp/test_ledger.XXXXXX";


static struct ledger *open_ledger(int nslots, int *counted)
{
	struct ledger *l = NULL;
	char err[256] = "";

	CHECK_INT(0,
		  ledger_open(dir, "q", nslots, &l, counted, err, sizeof err));
	CHECK_STR("", err);
	return l;
}


/* A child that starts jobs in the given slots and dies without
 * finishing them stands for a worker killed mid-job. */
static void crash_with(int nslots, const char *const *keys, int nkeys)
{
	pid_t pid = fork();
	int status = 0;

	if (pid == 0) {
		int counted;
		struct ledger *l = open_ledger(nslots, &counted);

		for (int i = 0; i < nkeys; i++)
			ledger_start(l, i, keys[i]);
		_exit(0);
	}
	CHECK_INT(pid, waitpid(pid, &status, 0));
}


static void test_clean_stop_counts_nothing(void)
{
	int counted = -1;
	struct ledger *l = open_ledger(2, &counted);

	CHECK_INT(0, counted);
	ledger_start(l, 0, "id:a");
	ledger_finish(l, 0);
	ledger_start(l, 1, "id:b");
	ledger_finish(l, 1);
	ledger_close(l);
	l = open_ledger(2, &counted);
	CHECK_INT(0, counted);
	CHECK_INT(0, ledger_crashes(l, "id:a"));
	ledger_close(l);
}


static void test_crash_counts_what_was_running(void)
{
	static const char *const running[] = { "id:poison", "id:bystander" };
	int counted = -1;
	struct ledger *l;

	/* Slot 0 ran a job to its end before the crash; its key is still in
	 * the slot's bytes but the slot is marked free. */
	crash_with(3, running, 2);
	l = open_ledger(3, &counted);
	CHECK_INT(2, counted);
	CHECK_INT(1, ledger_crashes(l, "id:poison"));
	CHECK_INT(1, ledger_crashes(l, "id:bystander"));
	CHECK_INT(0, ledger_crashes(l, "id:other"));
	ledger_close(l);

	/* A second crash with the poison alone adds to the carried count,
	 * even with fewer slots than before. */
	crash_with(1, running, 1);
	l = open_ledger(1, &counted);
	CHECK_INT(1, counted);
	CHECK_INT(2, ledger_crashes(l, "id:poison"));
	CHECK_INT(1, ledger_crashes(l, "id:bystander"));
	/* Forgiven when it runs to its end. */
	ledger_forget(l, "id:bystander");
	CHECK_INT(0, ledger_crashes(l, "id:bystander"));
	ledger_close(l);
	l = open_ledger(1, &counted);
	CHECK_INT(0, counted);
	CHECK_INT(2, ledger_crashes(l, "id:poison"));
	CHECK_INT(0, ledger_crashes(l, "id:bystander"));
	ledger_close(l);
}


/* A queue name with '/' must not lead the files out of STATE_DIR. */
static void test_queue_with_slash(void)
{
	struct ledger *l = NULL;
	char err[256] = "", path[128];
	int counted;
	struct stat st;

	CHECK_INT(0, ledger_open(dir, "../escape", 1, &l, &counted, err,
				 sizeof err));
	snprintf(path, sizeof path, "%s/.._escape.inflight", dir);
	CHECK_INT(0, stat(path, &st));
	ledger_close(l);
	snprintf(path, sizeof path, "%s/.._escape.ledger", dir);
	CHECK_INT(0, stat(path, &st));
	snprintf(path, sizeof path, "%s/../escape.ledger", dir);
	CHECK_INT(-1, stat(path, &st));
}


static void test_slot_bounds(void)
{
	int counted;
	struct ledger *l = open_ledger(1, &counted);

	/* Out of range slots and a NULL ledger are ignored, not written. */
	ledger_start(l, 1, "id:x");
	ledger_start(l, -1, "id:x");
	ledger_start(NULL, 0, "id:x");
	ledger_finish(NULL, 0);
	ledger_close(l);
	l = open_ledger(1, &counted);
	CHECK_INT(0, counted);
	ledger_close(l);
}


static void test_keys(void)
{
	char key[LEDGER_KEY_MAX];
	char longid[300];

	ledger_key("m-1", "{}", 2, key, sizeof key);
	CHECK_STR("id:m-1", key);
	memset(longid, 'x', sizeof longid - 1);
	longid[sizeof longid - 1] = '\0';
	ledger_key(longid, "{}", 2, key, sizeof key);
	CHECK_INT(LEDGER_KEY_MAX - 1, strlen(key));
	/* Without an id, equal bodies share a key and others do not. */
	ledger_key("", "{\"a\":1}", 7, key, sizeof key);
	CHECK_CONTAINS("body:", key);
	CHECK_CONTAINS(":7", key);
	{
		char other[LEDGER_KEY_MAX];

		ledger_key(NULL, "{\"a\":2}", 7, other, sizeof other);
		CHECK_INT(1, strcmp(key, other) != 0);
		ledger_key("-", "{\"a\":1}", 7, other, sizeof other);
		CHECK_STR(key, other);
	}
}


/* The counts are carried in a line-based file: a message id holding a
 * newline must neither lose its own count across restarts (a poison
 * message would then never reach the quarantine) nor forge lines that
 * give another message crashes it never had. */
static void test_id_with_newline(void)
{
	char key[LEDGER_KEY_MAX], victim[LEDGER_KEY_MAX];
	const char *running[1] = { key };
	int counted;
	struct ledger *l;

	ledger_key("poison\n=5 id:victim", "{}", 2, key, sizeof key);
	ledger_key("victim", "{}", 2, victim, sizeof victim);
	CHECK_INT(0, strchr(key, '\n') != NULL);
	for (int crash = 1; crash <= 3; crash++) {
		crash_with(1, running, 1);
		l = open_ledger(1, &counted);
		CHECK_INT(crash, ledger_crashes(l, key));
		CHECK_INT(0, ledger_crashes(l, victim));
		ledger_close(l);
	}
	l = open_ledger(1, &counted);
	ledger_forget(l, key);
	ledger_close(l);
}


static void write_file(const char *name, const char *data, size_t len)
{
	char path[256];
	FILE *f;

	snprintf(path, sizeof path, "%s/%s", dir, name);
	f = fopen(path, "w");
	CHECK_INT(1, f != NULL);
	if (!f)
		return;
	CHECK_INT(len, fwrite(data, 1, len, f));
	fclose(f);
}


/* State files a disk error or an operator left damaged: the worker must
 * start, count what it can read, and not overflow a count. */
static void test_damaged_files(void)
{
	static char junk[LEDGER_KEY_MAX * 5 + 37];
	static const char counts[] =
		"=2147483647 id:huge\n=-7 id:negative\n=x id:nonumber\n"
		"garbage without a mark\n";
	int counted;
	struct ledger *l;

	for (size_t i = 0; i < sizeof junk; i++)
		junk[i] = (char)(i * 37 + 11);
	write_file("q.inflight", junk, sizeof junk);
	write_file("q.ledger", counts, sizeof counts - 1);
	l = open_ledger(2, &counted);
	CHECK_INT(1, counted <= 5);
	CHECK_INT(0, ledger_crashes(l, "id:negative"));
	ledger_close(l);

	/* A crash now adds to the largest count without wrapping it. */
	{
		static const char *const huge[] = { "id:huge" };

		crash_with(1, huge, 1);
	}
	l = open_ledger(1, &counted);
	CHECK_INT(1, ledger_crashes(l, "id:huge") > 0);
	ledger_forget(l, "id:huge");
	ledger_close(l);
}


int main(void)
{
	char cmd[64];

	if (!mkdtemp(dir))
		return 1;
	test_clean_stop_counts_nothing();
	test_crash_counts_what_was_running();
	test_slot_bounds();
	test_queue_with_slash();
	test_keys();
	test_id_with_newline();
	test_damaged_files();
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	if (system(cmd) != 0)
		return 1;
	return check_report("test_ledger");
}
