#ifndef CORE_JOB_H
#define CORE_JOB_H

#include <stddef.h>
#include <stdint.h>

#include "ledger.h"
#include "outcome.h"

/*
 * One delivery on its way through the host. The loop thread creates it
 * with the body it read, a worker thread fills the outcome and frees the
 * body once the job succeeded or was refused (a failed job keeps it, so
 * the loop can publish a retry), and the loop thread
 * acks or rejects and frees the job. Only one thread touches a job at a
 * time; the queues between them carry the hand-over.
 */

#define JOB_ID_MAX     128
#define JOB_REASON_MAX 256

struct job {
	struct job *next;
	uint64_t delivery_tag;
	unsigned generation; /* the connection the tag belongs to */
	int redelivered;
	int attempts; /* earlier attempts, from the message header */
	char message_id[JOB_ID_MAX];
	char content_type[64];
	char ledger_key[LEDGER_KEY_MAX]; /* identity for the crash ledger */
	char *body; /* owned; kept after a job_error, for a retry */
	size_t body_len;
	enum outcome outcome;
	char reason[JOB_REASON_MAX];
	double run_ms;
};

/* Frees job and its body; NULL is fine. */
void job_free(struct job *job);

#endif
