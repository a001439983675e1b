#include "db_stmt.h"

#include <stdlib.h>
#include <string.h>

struct db_stmts {
	int n;
	uint64_t key[DB_STMT_MAX];
};


static int on_event(PGEventId id, void *info, void *pass)
{
	(void)pass;
	if (id == PGEVT_CONNRESET) {
		PGconn *c = ((PGEventConnReset *)info)->conn;

		db_stmts_clear(PQinstanceData(c, on_event));
	} else if (id == PGEVT_CONNDESTROY) {
		PGconn *c = ((PGEventConnDestroy *)info)->conn;

		free(PQinstanceData(c, on_event));
	}
	return 1;
}


struct db_stmts *db_stmts_of(PGconn *conn)
{
	struct db_stmts *s = PQinstanceData(conn, on_event);

	if (s)
		return s;
	s = calloc(1, sizeof *s);
	if (!s)
		return NULL;
	if (!PQregisterEventProc(conn, on_event, "moonrabbit statements",
				 NULL) ||
	    !PQsetInstanceData(conn, on_event, s)) {
		free(s);
		return NULL;
	}
	return s;
}


/* One multiply and shift per step, as the finaliser of MurmurHash3 mixes;
 * enough to spread every input bit over the key. */
static uint64_t mix(uint64_t h)
{
	h *= 0xff51afd7ed558ccdULL;
	return h ^ (h >> 33);
}


_Static_assert(DB_STMT_NAME_MAX >= 20, "mr_ and 16 hex digits");

/* Names only need to differ between the few statements a job script
 * holds, and only within this process; 64 bits make a clash between two
 * of them unthinkable. It runs for every statement a job sends, so it
 * takes the text eight bytes at a time (a byte-wise hash and a printf
 * were 2 % of the default job). */
uint64_t db_stmt_key(const char *sql, char *name)
{
	static const char hex[] = "0123456789abcdef";
	size_t len = strlen(sql), i;
	uint64_t h = mix(0x9e3779b97f4a7c15ULL ^ len), w;

	for (i = 0; i + 8 <= len; i += 8) {
		memcpy(&w, sql + i, 8);
		h = mix(h ^ w);
	}
	w = 0;
	memcpy(&w, sql + i, len - i);
	h = mix(h ^ w);

	memcpy(name, "mr_", 3);
	for (int k = 0; k < 16; k++)
		name[3 + k] = hex[(h >> (60 - 4 * k)) & 15];
	name[19] = '\0';
	return h;
}


int db_stmts_has(const struct db_stmts *s, uint64_t key)
{
	for (int i = 0; s && i < s->n; i++)
		if (s->key[i] == key)
			return 1;
	return 0;
}


int db_stmts_room(const struct db_stmts *s, int limit)
{
	return s && s->n < limit && s->n < DB_STMT_MAX;
}


void db_stmts_add(struct db_stmts *s, uint64_t key)
{
	if (db_stmts_room(s, DB_STMT_MAX) && !db_stmts_has(s, key))
		s->key[s->n++] = key;
}


void db_stmts_clear(struct db_stmts *s)
{
	if (s)
		s->n = 0;
}


void db_stmts_note(struct db_stmts *s, const PGresult *r)
{
	const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
	const char *cmd = PQcmdStatus((PGresult *)r);

	/* A plain DEALLOCATE drops one name, most likely the script's own
	 * from an SQL PREPARE: forgetting ours then would prepare them
	 * again under names the server still holds (SQLSTATE 42P05), on
	 * every job. If it was one of ours, its next use says so. */
	if ((state && !strcmp(state, "26000")) ||
	    (cmd &&
	     (!strcmp(cmd, "DEALLOCATE ALL") || !strcmp(cmd, "DISCARD ALL"))))
		db_stmts_clear(s);
}
