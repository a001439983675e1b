#include <stdlib.h>

#include "check.h"
#include "config.h"


static void test_mask(void)
{
	static const struct {
		const char *url;
		const char *masked;
	} rows[] = {
		{ "amqp://guest:guest@127.0.0.1:5672/%2f",
		  "amqp://guest:***@127.0.0.1:5672/%2f" },
		{ "amqp://127.0.0.1:5672/", "amqp://127.0.0.1:5672/" },
		{ "postgresql://u:s3cret@db:5432/x?sslmode=require",
		  "postgresql://u:***@db:5432/x?sslmode=require" },
		{ "postgresql://u@db/x?password=s3cret&sslmode=require",
		  "postgresql://u@db/x?password=***&sslmode=require" },
		{ "host=db password=s3cret user=u",
		  "host=db password=*** user=u" },
		{ "host=db password='a b c' user=u",
		  "host=db password=*** user=u" },
		{ "password=x", "password=***" },
		{ "host=db user=u", "host=db user=u" },
	};
	char out[256];

	for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		config_mask_url(rows[i].url, out, sizeof out);
		CHECK_STR(rows[i].masked, out);
	}
}


/* Each bad value stops start-up with a message naming the variable and
 * saying what to write instead, and never the password. */
static void test_refusals(void)
{
	static const struct {
		const char *name;
		const char *value;
		const char *message;
	} rows[] = {
		{ "AMQP_PREFETCH", "abc",
		  "AMQP_PREFETCH=\"abc\" is not usable: set it to a whole "
		  "number from 1 to 65535" },
		{ "AMQP_PREFETCH", "0", "from 1 to 65535" },
		{ "WORKER_CONCURRENCY_PER_WORKER", "8x", "from 1 to 256" },
		{ "DB_CONNECT_WAIT_SECONDS", "-1", "from 0 to 3600" },
		{ "DB_STATEMENT_CACHE", "257", "from 0 to 256" },
		{ "LOG_LEVEL", "loud",
		  "LOG_LEVEL=\"loud\" is not usable: use error, warn, info or "
		  "debug" },
		{ "AMQP_QUEUE", "a b", "AMQP_QUEUE=\"a b\" is not usable" },
		{ "AMQP_URL", "http://u:pw@host/",
		  "AMQP_URL=\"http://u:***@host/\" is not usable: write it as "
		  "amqp://" },
		{ "DATABASE_URL", "host=db password=pw nonsense",
		  "DATABASE_URL=\"host=db password=*** nonsense\" is not "
		  "usable" },
	};
	struct config cfg;
	char err[512];

	for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		setenv(rows[i].name, rows[i].value, 1);
		err[0] = '\0';
		CHECK_INT(-22, config_load(&cfg, err, sizeof err));
		CHECK_CONTAINS(rows[i].message, err);
		check_count++;
		if (strstr(err, "pw ") || strstr(err, "pw@")) {
			check_failures++;
			fprintf(stderr, "password shown: %s\n", err);
		}
		unsetenv(rows[i].name);
	}
}


static void test_defaults(void)
{
	struct config cfg;
	char err[512] = "";

	CHECK_INT(0, config_load(&cfg, err, sizeof err));
	CHECK_INT(16, cfg.prefetch);
	CHECK_INT(8, cfg.concurrency);
	CHECK_INT(8, cfg.db_pool_size);
	CHECK_INT(60, cfg.db_connect_wait_seconds);
	CHECK_INT(64, cfg.db_statement_cache);
	CHECK_STR("jobs", cfg.amqp_queue);
	CHECK_STR("info", cfg.log_level);
}


int main(void)
{
	static const char *const vars[] = {
		"AMQP_PREFETCH",      "WORKER_CONCURRENCY_PER_WORKER",
		"LOG_LEVEL",	      "AMQP_QUEUE",
		"AMQP_URL",	      "DATABASE_URL",
		"DB_POOL_SIZE",	      "DB_CONNECT_WAIT_SECONDS",
		"DB_STATEMENT_CACHE",
	};

	for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
		unsetenv(vars[i]);
	test_mask();
	test_refusals();
	test_defaults();
	return check_report("test_config");
}
