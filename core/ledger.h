#ifndef CORE_LEDGER_H
#define CORE_LEDGER_H

#include <stddef.h>

/*
 * The crash ledger. A message that kills the process (an OOM kill, a
 * segfault in a library) comes back and kills the next one, and classic
 * queues keep no delivery count to notice. So each worker thread writes
 * the key of the job it runs into its own slot of a small file mapped
 * into memory, and clears it when the job returns. At start-up, every
 * slot still set names a job that was in flight when the previous process
 * died: its crash count goes up. A message whose count reaches the limit
 * from failure.lua is dead-lettered on its next delivery without being
 * run.
 *
 * The slots are a shared file mapping: a process crash leaves the stores
 * in the kernel's page cache, which is all a process crash needs, and a
 * job costs no system call. (A machine crash may lose them; it also loses
 * the process, and the broker redelivers.) Crash counts carried from run
 * to run live beside them in a short text file.
 */
#define LEDGER_KEY_MAX 160

struct ledger;

/* Opens <dir>/<queue>.ledger and <queue>.inflight with nslots slots,
 * counts the crashes the previous run left behind, and clears the slots.
 * Returns 0, or -errno with err naming STATE_DIR. *counted is how many messages
 * gained a crash. */
int ledger_open(const char *dir, const char *queue, int nslots,
		struct ledger **out, int *counted, char *err, size_t errlen);

/* Fills key with the message's identity: its message id, or a hash of
 * its body when it has none. */
void ledger_key(const char *message_id, const char *body, size_t len, char *key,
		size_t keylen);

/* Crashes recorded for key. */
int ledger_crashes(struct ledger *l, const char *key);

/* The worker that owns slot is about to run key. One thread per slot. */
void ledger_start(struct ledger *l, int slot, const char *key);

/* The worker that owns slot finished its job, whatever the outcome: a
 * job that returned did not kill the process. */
void ledger_finish(struct ledger *l, int slot);

/* key ran to its end: its crash count is forgotten. Safe from any
 * thread. */
void ledger_forget(struct ledger *l, const char *key);

/* A clean stop: nothing is in flight, the log is emptied. NULL is ok. */
void ledger_close(struct ledger *l);

#endif
