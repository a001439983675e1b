/*
 * host.db as a job script sees it, and what a batch does with the same
 * connection: statements run by name once prepared, commands a batch
 * defers ride with the job's next statement, and host.db.exec sends
 * statements ahead of their results (db_pipe.h). A statement still at
 * the server when the job's budget runs out is cancelled by the
 * watchdog's handler through js->cancel.
 */
#include "job_state.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db_pool.h"
#include "db_stmt.h"
#include "log.h"


static int l_db_query(lua_State *L);


static int pgres_gc(lua_State *L)
{
	struct pgres_box *box = lua_touserdata(L, 1);

	PQclear(box->r);
	box->r = NULL;
	return 0;
}

/* The cancel handle names the connection's server process, which a reset
 * in the pool changes; it is made again after the next checkout. */
void job_db_forget_cancel(struct job_state *js)
{
	PQfreeCancel(js->cancel);
	js->cancel = NULL;
}

/* Checks a connection out for the running job on first use. */
static PGconn *job_conn(lua_State *L, struct job_state *js)
{
	char err[256];

	if (js->conn)
		return js->conn;
	if (!js->env.db)
		luaL_error(L, "no database configured");
	if (db_pool_acquire(js->env.db, js->env.db_wait_ms, &js->conn, err,
			    sizeof err) < 0) {
		js->conn = NULL;
		luaL_error(L, "database unavailable: %s", err);
	}
	return js->conn;
}

/* Turns the query arguments at 2.. into libpq text parameters; numbers
 * are converted on the stack so their strings live until the call. */
/* lua-cjson decodes every JSON number as a float, so a message's 3
 * arrives as 3.0, whose text an integer column refuses (22P02). A float
 * with no fraction that an integer holds exactly is sent as that integer;
 * other floats with all 17 significant digits, which PostgreSQL reads
 * back to the same double. */
static void push_integer_text(lua_State *L, lua_Integer n)
{
	/* Digits by hand: Lua's own formatting goes through snprintf, and
	 * the default job sends three counts per message. */
	char buf[24], *p = buf + sizeof buf;
	unsigned long long u =
		n < 0 ? 0ULL - (unsigned long long)n : (unsigned long long)n;

	do {
		*--p = (char)('0' + u % 10);
		u /= 10;
	} while (u);
	if (n < 0)
		*--p = '-';
	lua_pushlstring(L, p, (size_t)(buf + sizeof buf - p));
}


static void push_number_text(lua_State *L, int idx)
{
	lua_Integer n;
	lua_Number d;

	if (lua_isinteger(L, idx)) {
		push_integer_text(L, lua_tointeger(L, idx));
		return;
	}
	d = lua_tonumber(L, idx);
	if (lua_numbertointeger(d, &n) && (lua_Number)n == d) {
		push_integer_text(L, n);
		return;
	}
	{
		char buf[32];

		snprintf(buf, sizeof buf, "%.17g", (double)d);
		lua_pushstring(L, buf);
	}
}


static int query_params(lua_State *L, const char **values)
{
	int n = lua_gettop(L) - 1;

	if (n > QUERY_PARAMS_MAX)
		luaL_error(L, "at most %d query parameters", QUERY_PARAMS_MAX);
	for (int i = 0; i < n; i++) {
		int idx = i + 2;

		switch (lua_type(L, idx)) {
		case LUA_TNIL:
			values[i] = NULL;
			break;
		case LUA_TBOOLEAN:
			values[i] = lua_toboolean(L, idx) ? "true" : "false";
			break;
		case LUA_TNUMBER:
			push_number_text(L, idx);
			lua_replace(L, idx);
			values[i] = lua_tostring(L, idx);
			break;
		case LUA_TSTRING:
			values[i] = luaL_tolstring(L, idx, NULL);
			lua_replace(L, idx);
			values[i] = lua_tostring(L, idx);
			break;
		default:
			luaL_error(L,
				   "query parameter $%d: cannot send a %s; "
				   "encode it as a string",
				   i + 1, luaL_typename(L, idx));
		}
	}
	return n;
}

static void push_rows(lua_State *L, PGresult *r)
{
	int rows = PQntuples(r), cols = PQnfields(r);

	lua_createtable(L, rows, 0);
	for (int i = 0; i < rows; i++) {
		lua_createtable(L, 0, cols);
		for (int c = 0; c < cols; c++) {
			if (PQgetisnull(r, i, c))
				continue;
			lua_pushlstring(L, PQgetvalue(r, i, c),
					(size_t)PQgetlength(r, i, c));
			lua_setfield(L, -2, PQfname(r, c));
		}
		lua_rawseti(L, -2, i + 1);
	}
}

/* Runs the job's statement and returns its result (NULL when the
 * connection failed, as PQexecParams). A statement the connection has
 * prepared runs by name; one it has room for is prepared on the way, and
 * deferred commands and statements already queued by host.db.exec go
 * first: all in one round trip. With statements queued before it, the
 * first failure among them is what comes back. */
static PGresult *run_statement(struct job_state *js, PGconn *conn,
			       const char *sql, int n,
			       const char *const *values)
{
	if (!js->ndeferred && !js->pipe.queued) {
		char name[DB_STMT_NAME_MAX];
		uint64_t key = db_stmt_key(sql, name);
		struct db_stmts *stmts = db_stmts_of(conn);

		if (db_stmts_has(stmts, key))
			return PQexecPrepared(conn, name, n, values, NULL, NULL,
					      0);
		if (!db_stmts_room(stmts, js->env.stmt_cache))
			return PQexecParams(conn, sql, n, NULL, values, NULL,
					    NULL, 0);
	}
	db_pipe_queue(&js->pipe, conn, js->env.stmt_cache, js->deferred,
		      js->ndeferred, sql, n, values);
	js->ndeferred = 0;
	return db_pipe_sync(&js->pipe, conn);
}

/* host.db.exec(sql, ...): a statement whose rows the job does not read.
 * Inside a batch it is queued and the job goes on at once; its result is
 * read at the batch's COMMIT, and a failure makes the batch run again job
 * by job, where it is the job's own. Elsewhere it runs as query() does
 * and returns the row count. */
static int l_db_exec(lua_State *L)
{
	struct job_state *js = job_self(L);
	const char *values[QUERY_PARAMS_MAX];
	const char *sql;
	PGconn *conn;
	int n;

	if (!js->async_ok) {
		int got = l_db_query(L);

		lua_remove(L, -got);
		return got - 1;
	}
	sql = luaL_checkstring(L, 1);
	n = query_params(L, values);
	conn = job_conn(L, js);
	if (js->pipe.failed)
		return luaL_error(L,
				  "an earlier statement of this batch "
				  "failed: %s",
				  js->pipe.error);
	if (db_pipe_queue(&js->pipe, conn, js->env.stmt_cache, js->deferred,
			  js->ndeferred, sql, n, values) < 0) {
		js->ndeferred = 0;
		return luaL_error(L, "database connection lost: %s",
				  PQerrorMessage(conn));
	}
	js->ndeferred = 0;
	return 0;
}

static int l_db_query(lua_State *L)
{
	struct job_state *js = job_self(L);
	const char *values[QUERY_PARAMS_MAX];
	const char *sql = luaL_checkstring(L, 1);
	int n = query_params(L, values);
	PGconn *conn = job_conn(L, js);
	struct pgres_box *box;
	ExecStatusType st;

	box = lua_newuserdatauv(L, sizeof *box, 0);
	box->r = NULL;
	luaL_setmetatable(L, "moonrabbit.pgresult");
	if (!js->cancel)
		js->cancel = PQgetCancel(conn);
	js->in_query = 1;
	box->r = run_statement(js, conn, sql, n, values);
	js->in_query = 0;
	st = PQresultStatus(box->r);
	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
		const char *state =
			PQresultErrorField(box->r, PG_DIAG_SQLSTATE);
		const char *msg = box->r ? PQresultErrorMessage(box->r)
					 : PQerrorMessage(conn);

		if (js->overran) {
			PQclear(box->r);
			box->r = NULL;
			return luaL_error(L,
					  "job exceeded its time budget of %d "
					  "ms in a statement",
					  (int)js->env.limits.job_timeout_ms);
		}
		/* A script ran DEALLOCATE or DISCARD: the names are gone,
		 * and this job fails, but the next is prepared afresh. */
		db_stmts_note(db_stmts_of(conn), box->r);

		lua_pushfstring(L, "SQLSTATE %s: %s", state ? state : "?????",
				msg);
		PQclear(box->r);
		box->r = NULL;
		return lua_error(L);
	}
	/* The script dropped the prepared statements itself. */
	db_stmts_note(db_stmts_of(conn), box->r);
	push_rows(L, box->r);
	lua_pushinteger(L, strtoll(PQcmdTuples(box->r), NULL, 10));
	return 2;
}

/* Gives the job's connection back and says what cleaning it took. A
 * transaction the job left open or failed means its work was never
 * committed, so a job that claimed success fails instead: acking it
 * would lose it. */
void job_db_release(struct job_state *js, struct job *job)
{
	unsigned flags;

	if (!js->conn)
		return;
	job_db_forget_cancel(js);
	flags = db_pool_release(js->env.db, js->conn);
	js->conn = NULL;
	if (flags & (DB_RELEASE_ROLLBACK_INTRANS | DB_RELEASE_ROLLBACK_INERROR))
		LOG(LOG_WARN, "db_rollback_on_release",
		    LF_S("message_id", job->message_id),
		    LF_B("left_open", flags & DB_RELEASE_ROLLBACK_INTRANS),
		    LF_B("failed", flags & DB_RELEASE_ROLLBACK_INERROR));
	if (flags & DB_RELEASE_RESET)
		LOG(LOG_WARN, "db_connection_reset",
		    LF_S("message_id", job->message_id),
		    LF_B("cancelled", flags & DB_RELEASE_CANCELLED),
		    LF_B("ok", !(flags & DB_RELEASE_RESET_FAILED)));
	if ((flags &
	     (DB_RELEASE_ROLLBACK_INTRANS | DB_RELEASE_ROLLBACK_INERROR)) &&
	    job->outcome == OUTCOME_OK) {
		job->outcome = OUTCOME_JOB_ERROR;
		snprintf(job->reason, sizeof job->reason,
			 "job returned with its transaction %s; rolled back",
			 flags & DB_RELEASE_ROLLBACK_INTRANS ? "open"
							     : "failed");
	}
}

void job_state_defer(struct job_state *js, const char *sql)
{
	if (js->ndeferred < JOB_DEFERRED_MAX)
		js->deferred[js->ndeferred++] = sql;
}

int job_state_deferred(const struct job_state *js)
{
	return js->ndeferred;
}

void job_state_undefer(struct job_state *js)
{
	if (js->ndeferred > 0)
		js->ndeferred--;
}

int job_state_exec(struct job_state *js, const char *sql, char *err,
		   size_t errlen)
{
	PGresult *r;
	int ok;

	if (!js->conn && db_pool_acquire(js->env.db, js->env.db_wait_ms,
					 &js->conn, err, errlen) < 0) {
		js->conn = NULL;
		return -EIO;
	}
	r = PQexec(js->conn, sql);
	ok = PQresultStatus(r) == PGRES_COMMAND_OK;
	if (!ok)
		snprintf(err, errlen, "%s: %.*s", sql,
			 (int)strcspn(PQerrorMessage(js->conn), "\n"),
			 PQerrorMessage(js->conn));
	PQclear(r);
	return ok ? 0 : -EIO;
}

int job_state_in_transaction(const struct job_state *js)
{
	PGTransactionStatusType t =
		js->conn ? PQtransactionStatus(js->conn) : PQTRANS_IDLE;

	if (t == PQTRANS_INTRANS)
		return 1;
	return t == PQTRANS_IDLE ? 0 : -1;
}

void job_state_pipe(struct job_state *js, int on)
{
	db_pipe_reset(&js->pipe);
	js->async_ok = on;
}

int job_state_pipe_failed(const struct job_state *js, char *err, size_t errlen)
{
	if (js->pipe.failed)
		snprintf(err, errlen, "%s", js->pipe.error);
	return js->pipe.failed;
}

int job_state_pipe_pending(const struct job_state *js)
{
	return js->pipe.queued;
}

/* Reads the results of the statements host.db.exec sent ahead, which may
 * still be running at the server after their jobs returned: they get a
 * time budget of their own, or a pg_sleep() sent ahead would hold the
 * worker for as long as it likes. A cancelled statement fails the
 * transaction, so the batch runs again job by job, where each has the
 * budget to itself. With sql, that statement runs under the budget
 * instead: a COMMIT runs the deferred triggers of every job in it. */
static PGresult *sync_in_budget(struct job_state *js, const char *sql)
{
	PGresult *r;

	if (!js->cancel)
		js->cancel = PQgetCancel(js->conn);
	js->in_sync = 1;
	job_budget_start(js);
	r = sql ? PQexec(js->conn, sql) : db_pipe_sync(&js->pipe, js->conn);
	watchdog_disarm(&js->watch);
	js->in_sync = 0;
	return r;
}

/* Queues sql behind what is in the pipe, or runs it when nothing is. */
static int control(struct job_state *js, const char *sql, PGresult **r)
{
	*r = NULL;
	if (!js->pipe.queued)
		return 0;
	if (db_pipe_queue(&js->pipe, js->conn, -1, NULL, 0, sql, 0, NULL) < 0)
		return -EIO;
	return 1;
}

int job_state_rollback_job(struct job_state *js, const char *sql, char *err,
			   size_t errlen)
{
	PGresult *r;
	int queued = control(js, sql, &r);

	if (queued < 0) {
		snprintf(err, errlen, "%s: connection lost", sql);
		return -EIO;
	}
	return queued ? 0 : job_state_exec(js, sql, err, errlen);
}

/* Says why a COMMIT failed, in the form host.db.query raises errors
 * ("SQLSTATE xxxxx: ..."), so failure.lua judges it the same way: a
 * serialisation conflict found at COMMIT is as passing as one found by a
 * statement. */
static void commit_failure(const struct job_state *js, const PGresult *r,
			   char *err, size_t errlen)
{
	const char *why =
		js->pipe.failed ? js->pipe.error : PQerrorMessage(js->conn);
	const char *state = r && !js->pipe.failed
				    ? PQresultErrorField(r, PG_DIAG_SQLSTATE)
				    : NULL;

	if (!*why)
		why = "the server rolled the transaction back";
	if (js->overran) {
		why = "the COMMIT (deferred triggers, statements sent ahead) "
		      "outlived the time budget";
		state = NULL;
	}
	if (state)
		snprintf(err, errlen, "COMMIT: SQLSTATE %s: %.*s", state,
			 (int)strcspn(why, "\n"), why);
	else
		snprintf(err, errlen, "COMMIT: %.*s", (int)strcspn(why, "\n"),
			 why);
}

int job_state_commit(struct job_state *js, char *err, size_t errlen)
{
	PGresult *r = NULL;
	int ok;

	if (!js->conn) {
		snprintf(err, errlen, "COMMIT: no connection");
		return -EIO;
	}
	if (js->pipe.queued) {
		if (control(js, "COMMIT", &r) > 0)
			r = sync_in_budget(js, NULL);
	} else {
		r = sync_in_budget(js, "COMMIT");
	}
	ok = PQresultStatus(r) == PGRES_COMMAND_OK && !js->pipe.failed &&
	     !strcmp(PQcmdStatus(r), "COMMIT");
	if (!ok)
		commit_failure(js, r, err, errlen);
	PQclear(r);
	return ok ? 0 : -EIO;
}

void job_state_release(struct job_state *js)
{
	PGresult *r;

	/* Whatever is still queued is read and dropped; the pool then rolls
	 * back the transaction it belonged to. */
	if (js->conn && js->pipe.queued) {
		r = sync_in_budget(js, NULL);
		PQclear(r);
	}
	js->async_ok = 0;
	job_db_forget_cancel(js);
	if (js->conn)
		db_pool_release(js->env.db, js->conn);
	js->conn = NULL;
}


void job_db_install(lua_State *L, struct job_state *js)
{
	luaL_newmetatable(L, "moonrabbit.pgresult");
	lua_pushcfunction(L, pgres_gc);
	lua_setfield(L, -2, "__gc");
	lua_pop(L, 1);
	lua_createtable(L, 0, 2);
	job_set_fn(L, js, "query", l_db_query);
	job_set_fn(L, js, "exec", l_db_exec);
}
