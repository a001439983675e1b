#ifndef CORE_LEDGER_H
#define CORE_LEDGER_H

#include <stddef.h>

/*
 * The crash ledger. A message that kills the process (an OOM kill, a
 * segfault in a library) comes back and kills the next one, and classic
 * queues keep no delivery count to notice. So each job is written to an
 * append-only file when a worker starts it and again when the loop
 * settles it. At start-up, every job started and never settled was in
 * flight when the previous process died: its crash count goes up. A
 * message whose count reaches the limit from failure.lua is dead-lettered
 * on its next delivery without being run.
 *
 * Records are written with plain write(2) on an O_APPEND descriptor: a
 * process crash leaves them in the kernel's page cache, which is all a
 * process crash needs. (A machine crash loses the tail; it also loses
 * the process, and the broker redelivers.)
 */

#define LEDGER_KEY_MAX 160

struct ledger;

/* Opens <dir>/<queue>.ledger, counts the crashes the previous run left
 * behind, and starts a fresh log. Returns 0, or -errno with err naming
 * STATE_DIR. *counted is how many messages gained a crash. */
int ledger_open(const char *dir, const char *queue, struct ledger **out,
		int *counted, char *err, size_t errlen);

/* Fills key with the message's identity: its message id, or a hash of
 * its body when it has none. */
void ledger_key(const char *message_id, const char *body, size_t len, char *key,
		size_t keylen);

/* Crashes recorded for key. */
int ledger_crashes(struct ledger *l, const char *key);

/* A worker is about to run key. Safe from any thread. */
void ledger_start(struct ledger *l, const char *key);

/* The worker finished running key, whatever the outcome: a job that
 * returned did not kill the process. Safe from any thread. */
void ledger_finish(struct ledger *l, const char *key);

/* key ran to its end: its crash count is forgotten. Safe from any
 * thread. */
void ledger_forget(struct ledger *l, const char *key);

/* A clean stop: nothing is in flight, the log is emptied. NULL is ok. */
void ledger_close(struct ledger *l);

#endif
