#ifndef CORE_BROKER_H
#define CORE_BROKER_H

#include <amqp.h>
#include <stddef.h>

/*
 * Connection and topology shared by moonrabbit and the mrctl tool, so the
 * work queue is always declared with the same arguments: a durable queue
 * whose rejected messages go to <queue>.dlx and land in <queue>.dlq.
 * Errors come back as negative codes with a text in err; nothing here logs.
 */

#define BROKER_CHANNEL 1
/* Declares, qos and cancel answer in milliseconds; 30 s means gone. */
#define BROKER_RPC_TIMEOUT_S 30
#define BROKER_NAME_MAX	     256

struct broker_names {
	char queue[BROKER_NAME_MAX];
	char dlx[BROKER_NAME_MAX];
	char dlq[BROKER_NAME_MAX];
};

/* Derives the dead-letter exchange and queue names from queue. */
void broker_names_for(const char *queue, struct broker_names *out);

/* Opens a connection to url (amqp://user:pass@host:port/vhost), logs in
 * with the given heartbeat (seconds, 0 = off) and opens BROKER_CHANNEL.
 * On success *out owns the connection: close with broker_close(). */
int broker_connect(const char *url, int heartbeat, amqp_connection_state_t *out,
		   char *err, size_t errlen);

/* Declares the dead-letter exchange and queue and the work queue. */
int broker_declare(amqp_connection_state_t conn,
		   const struct broker_names *names, char *err, size_t errlen);

/* The header that carries how many times a message was attempted. */
#define BROKER_ATTEMPTS_HEADER "x-moonrabbit-attempts"
/* The channel retries are published on, in transaction mode. */
#define BROKER_RETRY_CHANNEL 2

struct broker_retry {
	const char *message_id;
	const char *content_type;
	const void *body;
	size_t body_len;
	int attempts; /* written into BROKER_ATTEMPTS_HEADER */
	uint64_t delay_ms;
};

/* The retry queue for one delay, <queue>.retry.<delay_ms>: its TTL holds
 * each message that long, then dead-letters it through the default
 * exchange back to the work queue. One queue per delay, since a queue
 * only expires the message at its head. declare points into the struct,
 * so the struct must stay put while declare is sent. */
struct broker_retry_queue {
	char name[BROKER_NAME_MAX + 32];
	amqp_table_entry_t args[3];
	amqp_queue_declare_t declare;
};

void broker_retry_declaration(const struct broker_names *names,
			      uint64_t delay_ms, struct broker_retry_queue *q);

/* Publishes a copy of a failed message to q on BROKER_RETRY_CHANNEL,
 * which the caller has opened in transaction mode and commits after:
 * only then may the original be acked. Returns 0 or -EIO with err. */
int broker_send_retry(amqp_connection_state_t conn,
		      const struct broker_retry_queue *q,
		      const struct broker_retry *r, char *err, size_t errlen);

/* Names the retry queue for one delay: <queue>.retry.<delay_ms>. */
void broker_retry_queue(const struct broker_names *names, uint64_t delay_ms,
			char *out, size_t outlen);

/* Reads an integer header from a message's properties; def if absent. */
int broker_header_int(const amqp_basic_properties_t *p, const char *key,
		      int def);

/* Closes the channel and connection, ignoring errors, and frees conn. */
void broker_close(amqp_connection_state_t conn);

/* Describes a failed RPC reply in err; returns -EIO for convenience. */
int broker_reply_error(amqp_rpc_reply_t r, const char *what, char *err,
		       size_t errlen);

#endif
