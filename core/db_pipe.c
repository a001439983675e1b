#include "db_pipe.h"

#include <stdio.h>
#include <string.h>

#include "db_stmt.h"


void db_pipe_reset(struct db_pipe *p)
{
	memset(p, 0, sizeof *p);
}


static int pending_prepare(const struct db_pipe *p, uint64_t key)
{
	for (int i = 0; i < p->nprep; i++)
		if (p->prep_key[i] == key)
			return 1;
	return 0;
}


int db_pipe_queue(struct db_pipe *p, PGconn *conn, int stmt_limit,
		  const char *const *pre, int npre, const char *sql, int n,
		  const char *const *values)
{
	char name[DB_STMT_NAME_MAX];
	struct db_stmts *stmts = stmt_limit < 0 ? NULL : db_stmts_of(conn);
	uint64_t key = stmts ? db_stmt_key(sql, name) : 0;
	int named =
		stmts && (db_stmts_has(stmts, key) || pending_prepare(p, key));
	int prepare = stmts && !named && db_stmts_room(stmts, stmt_limit) &&
		      p->nprep < DB_PIPE_PREPARES_MAX;
	int ok = PQpipelineStatus(conn) != PQ_PIPELINE_OFF ||
		 PQenterPipelineMode(conn);

	for (int i = 0; ok && i < npre; i++, p->queued++)
		ok = PQsendQueryParams(conn, pre[i], 0, NULL, NULL, NULL, NULL,
				       0);
	if (ok && prepare) {
		p->prep_at[p->nprep] = p->queued++;
		p->prep_key[p->nprep++] = key;
		ok = PQsendPrepare(conn, name, sql, n, NULL);
	}
	if (ok) {
		ok = named || prepare
			     ? PQsendQueryPrepared(conn, name, n, values, NULL,
						   NULL, 0)
			     : PQsendQueryParams(conn, sql, n, NULL, values,
						 NULL, NULL, 0);
		p->queued++;
	}
	return ok ? 0 : -1;
}


/* A name the server already holds (SQLSTATE 42P05) is the same text
 * prepared before we lost track of it: it is there to use. */
static int prepared(const PGresult *r)
{
	const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);

	return PQresultStatus(r) == PGRES_COMMAND_OK ||
	       (state && !strcmp(state, "42P05"));
}


/* One command's results up to its end: the first is kept. */
static PGresult *next_result(PGconn *conn)
{
	PGresult *first = PQgetResult(conn);
	PGresult *more;

	if (!first || PQresultStatus(first) == PGRES_PIPELINE_SYNC)
		return first;
	while ((more = PQgetResult(conn)) != NULL)
		PQclear(more);
	return first;
}


/* Keeps the first failure in the form host.db.query raises it, so
 * failure.lua's patterns judge it the same way. */
static void note_failure(struct db_pipe *p, PGconn *conn, const PGresult *r)
{
	const char *msg = r ? PQresultErrorMessage(r) : PQerrorMessage(conn);
	const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;

	if (p->failed)
		return;
	p->failed = 1;
	if (!*msg)
		msg = "skipped after an earlier failure";
	snprintf(p->error, sizeof p->error, "SQLSTATE %s: %.*s",
		 state ? state : "?????", (int)strcspn(msg, "\n"), msg);
}


PGresult *db_pipe_sync(struct db_pipe *p, PGconn *conn)
{
	struct db_stmts *stmts = db_stmts_of(conn);
	PGresult *failed = NULL, *last = NULL;
	int mine = p->queued - 1; /* the caller's own command */
	int ok = p->queued > 0 && PQpipelineSync(conn);

	for (int i = 0; ok; i++) {
		PGresult *r = next_result(conn);
		ExecStatusType st = PQresultStatus(r);

		if (!r || st == PGRES_PIPELINE_SYNC) {
			ok = r != NULL;
			PQclear(r);
			break;
		}
		/* Statements sent ahead (host.db.exec) can drop the names
		 * too, and no job reads their results but this. */
		db_stmts_note(stmts, r);
		for (int k = 0; k < p->nprep; k++)
			if (p->prep_at[k] == i && prepared(r))
				db_stmts_add(stmts, p->prep_key[k]);
		if (st == PGRES_FATAL_ERROR || st == PGRES_PIPELINE_ABORTED) {
			/* The caller hands its own command's failure to the
			 * job that ran it; one sent ahead has no job left to
			 * tell, so the pipe keeps it. */
			if (i != mine)
				note_failure(p, conn, r);
			if (!failed) {
				failed = r;
				continue;
			}
		}
		PQclear(last);
		last = r;
	}
	if (!ok)
		note_failure(p, conn, NULL);
	p->queued = 0;
	p->nprep = 0;
	PQexitPipelineMode(conn);
	if (failed || !ok) {
		PQclear(last);
		return failed;
	}
	return last;
}
