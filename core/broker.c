#include "broker.h"

#include <amqp_tcp_socket.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* How long to wait for the TCP connection before naming the broker down. */
#define BROKER_CONNECT_TIMEOUT_S 10


void broker_names_for(const char *queue, struct broker_names *out)
{
	snprintf(out->queue, sizeof out->queue, "%s", queue);
	snprintf(out->dlx, sizeof out->dlx, "%s.dlx", queue);
	snprintf(out->dlq, sizeof out->dlq, "%s.dlq", queue);
}


int broker_reply_error(amqp_rpc_reply_t r, const char *what, char *err,
		       size_t errlen)
{
	switch (r.reply_type) {
	case AMQP_RESPONSE_NORMAL:
		snprintf(err, errlen, "%s: no error", what);
		break;
	case AMQP_RESPONSE_NONE:
		snprintf(err, errlen, "%s: missing RPC reply", what);
		break;
	case AMQP_RESPONSE_LIBRARY_EXCEPTION:
		snprintf(err, errlen, "%s: %s", what,
			 amqp_error_string2(r.library_error));
		break;
	case AMQP_RESPONSE_SERVER_EXCEPTION:
		if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
			amqp_connection_close_t *m = r.reply.decoded;

			snprintf(err, errlen,
				 "%s: server closed connection "
				 "(%u): %.*s",
				 what, m->reply_code, (int)m->reply_text.len,
				 (char *)m->reply_text.bytes);
		} else if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
			amqp_channel_close_t *m = r.reply.decoded;

			snprintf(err, errlen,
				 "%s: server closed channel "
				 "(%u): %.*s",
				 what, m->reply_code, (int)m->reply_text.len,
				 (char *)m->reply_text.bytes);
		} else {
			snprintf(err, errlen, "%s: server error, method 0x%08x",
				 what, r.reply.id);
		}
		break;
	}
	return -EIO;
}


int broker_connect(const char *url, int heartbeat, amqp_connection_state_t *out,
		   char *err, size_t errlen)
{
	struct timeval tv = { BROKER_CONNECT_TIMEOUT_S, 0 };
	struct timeval rpc_tv = { BROKER_RPC_TIMEOUT_S, 0 };
	amqp_connection_state_t conn = NULL;
	struct amqp_connection_info info;
	amqp_socket_t *sock;
	char *copy = strdup(url);
	amqp_rpc_reply_t r;
	int rc = -EINVAL;
	int status;

	if (!copy)
		return -ENOMEM;
	if (amqp_parse_url(copy, &info) != AMQP_STATUS_OK) {
		snprintf(err, errlen,
			 "AMQP_URL is not an amqp:// URL: use "
			 "amqp://user:password@host:port/vhost");
		goto out;
	}
	rc = -EIO;
	conn = amqp_new_connection();
	sock = conn ? amqp_tcp_socket_new(conn) : NULL;
	if (!sock) {
		snprintf(err, errlen, "failed to create AMQP socket");
		goto out;
	}
	status = amqp_socket_open_noblock(sock, info.host, info.port, &tv);
	if (status != AMQP_STATUS_OK) {
		snprintf(err, errlen, "failed to connect to %s:%d: %s",
			 info.host, info.port, amqp_error_string2(status));
		goto out;
	}
	/* Without a bound every RPC, the closing handshake included, waits
	 * forever on a broker that stopped reading. */
	amqp_set_rpc_timeout(conn, &rpc_tv);
	r = amqp_login(conn, info.vhost, 0, AMQP_DEFAULT_FRAME_SIZE, heartbeat,
		       AMQP_SASL_METHOD_PLAIN, info.user, info.password);
	if (r.reply_type != AMQP_RESPONSE_NORMAL) {
		broker_reply_error(r, "failed to log in", err, errlen);
		goto out;
	}
	amqp_channel_open(conn, BROKER_CHANNEL);
	r = amqp_get_rpc_reply(conn);
	if (r.reply_type != AMQP_RESPONSE_NORMAL) {
		broker_reply_error(r, "failed to open channel", err, errlen);
		goto out;
	}
	*out = conn;
	conn = NULL;
	rc = 0;
out:
	if (conn)
		amqp_destroy_connection(conn);
	free(copy);
	return rc;
}


int broker_declare(amqp_connection_state_t conn,
		   const struct broker_names *names, char *err, size_t errlen)
{
	amqp_table_entry_t arg = {
		.key = amqp_cstring_bytes("x-dead-letter-exchange"),
		.value = { .kind = AMQP_FIELD_KIND_UTF8,
			   .value.bytes = amqp_cstring_bytes(names->dlx) },
	};
	amqp_table_t args = { .num_entries = 1, .entries = &arg };
	amqp_rpc_reply_t r;

	amqp_exchange_declare(
		conn, BROKER_CHANNEL, amqp_cstring_bytes(names->dlx),
		amqp_cstring_bytes("fanout"), 0, 1, 0, 0, amqp_empty_table);
	r = amqp_get_rpc_reply(conn);
	if (r.reply_type != AMQP_RESPONSE_NORMAL)
		return broker_reply_error(r,
					  "failed to declare dead-letter "
					  "exchange",
					  err, errlen);
	amqp_queue_declare(conn, BROKER_CHANNEL, amqp_cstring_bytes(names->dlq),
			   0, 1, 0, 0, amqp_empty_table);
	r = amqp_get_rpc_reply(conn);
	if (r.reply_type != AMQP_RESPONSE_NORMAL)
		return broker_reply_error(r,
					  "failed to declare dead-letter "
					  "queue",
					  err, errlen);
	amqp_queue_bind(conn, BROKER_CHANNEL, amqp_cstring_bytes(names->dlq),
			amqp_cstring_bytes(names->dlx), amqp_cstring_bytes(""),
			amqp_empty_table);
	r = amqp_get_rpc_reply(conn);
	if (r.reply_type != AMQP_RESPONSE_NORMAL)
		return broker_reply_error(r, "failed to bind dead-letter queue",
					  err, errlen);
	/* A queue that exists with other arguments fails here with
	 * PRECONDITION_FAILED; the text says which queue to delete. */
	amqp_queue_declare(conn, BROKER_CHANNEL,
			   amqp_cstring_bytes(names->queue), 0, 1, 0, 0, args);
	r = amqp_get_rpc_reply(conn);
	if (r.reply_type != AMQP_RESPONSE_NORMAL)
		return broker_reply_error(r,
					  "failed to declare work queue "
					  "(if it exists without "
					  "x-dead-letter-exchange, delete it)",
					  err, errlen);
	return 0;
}


void broker_close(amqp_connection_state_t conn)
{
	if (!conn)
		return;
	amqp_channel_close(conn, BROKER_CHANNEL, AMQP_REPLY_SUCCESS);
	amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
	amqp_destroy_connection(conn);
}


void broker_retry_queue(const struct broker_names *names, uint64_t delay_ms,
			char *out, size_t outlen)
{
	snprintf(out, outlen, "%s.retry.%llu", names->queue,
		 (unsigned long long)delay_ms);
}


void broker_retry_declaration(const struct broker_names *names,
			      uint64_t delay_ms, struct broker_retry_queue *q)
{
	broker_retry_queue(names, delay_ms, q->name, sizeof q->name);
	q->args[0] = (amqp_table_entry_t){
		.key = amqp_cstring_bytes("x-message-ttl"),
		.value = { .kind = AMQP_FIELD_KIND_I64,
			   .value.i64 = (int64_t)delay_ms },
	};
	q->args[1] = (amqp_table_entry_t){
		.key = amqp_cstring_bytes("x-dead-letter-exchange"),
		.value = { .kind = AMQP_FIELD_KIND_UTF8,
			   .value.bytes = amqp_cstring_bytes("") },
	};
	q->args[2] = (amqp_table_entry_t){
		.key = amqp_cstring_bytes("x-dead-letter-routing-key"),
		.value = { .kind = AMQP_FIELD_KIND_UTF8,
			   .value.bytes = amqp_cstring_bytes(names->queue) },
	};
	q->declare = (amqp_queue_declare_t){
		.queue = amqp_cstring_bytes(q->name),
		.durable = 1,
		.arguments = { .num_entries = 3, .entries = q->args },
	};
}


int broker_send_retry(amqp_connection_state_t conn,
		      const struct broker_retry_queue *q,
		      const struct broker_retry *r, char *err, size_t errlen)
{
	amqp_table_entry_t header = {
		.key = amqp_cstring_bytes(BROKER_ATTEMPTS_HEADER),
		.value = { .kind = AMQP_FIELD_KIND_I32,
			   .value.i32 = r->attempts },
	};
	amqp_basic_properties_t props = {
		._flags = AMQP_BASIC_DELIVERY_MODE_FLAG |
			  AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG |
			  AMQP_BASIC_CONTENT_TYPE_FLAG,
		.delivery_mode = 2,
		.headers = { .num_entries = 1, .entries = &header },
		.message_id = amqp_cstring_bytes(r->message_id),
		.content_type = amqp_cstring_bytes(r->content_type),
	};
	amqp_bytes_t body = { .len = r->body_len, .bytes = (void *)r->body };
	int rc = amqp_basic_publish(
		conn, BROKER_RETRY_CHANNEL, amqp_empty_bytes,
		amqp_cstring_bytes(q->name), 0, 0, &props, body);

	if (rc != AMQP_STATUS_OK) {
		snprintf(err, errlen, "failed to publish a retry: %s",
			 amqp_error_string2(rc));
		return -EIO;
	}
	return 0;
}


int broker_header_int(const amqp_basic_properties_t *p, const char *key,
		      int def)
{
	size_t n = strlen(key);

	if (!(p->_flags & AMQP_BASIC_HEADERS_FLAG))
		return def;
	for (int i = 0; i < p->headers.num_entries; i++) {
		const amqp_table_entry_t *e = &p->headers.entries[i];

		if (e->key.len != n || memcmp(e->key.bytes, key, n))
			continue;
		switch (e->value.kind) {
		case AMQP_FIELD_KIND_I8:
			return e->value.value.i8;
		case AMQP_FIELD_KIND_U8:
			return e->value.value.u8;
		case AMQP_FIELD_KIND_I16:
			return e->value.value.i16;
		case AMQP_FIELD_KIND_U16:
			return e->value.value.u16;
		case AMQP_FIELD_KIND_I32:
			return e->value.value.i32;
		case AMQP_FIELD_KIND_U32:
			return (int)e->value.value.u32;
		case AMQP_FIELD_KIND_I64:
			return (int)e->value.value.i64;
		case AMQP_FIELD_KIND_U64:
			return (int)e->value.value.u64;
		default:
			return def;
		}
	}
	return def;
}
