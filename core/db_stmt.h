#ifndef CORE_DB_STMT_H
#define CORE_DB_STMT_H

#include <libpq-events.h>
#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Named prepared statements, per connection. A job's statement is sent
 * as text with its parameters each time, and the server parsed and
 * planned the default job's upsert anew for every message: about 70 us
 * of its ~165. The first time a connection sees a statement it is
 * prepared (in the same round trip as its first execution) under a name
 * derived from its text; later runs on that connection execute the
 * name. What a connection has prepared is tracked beside it with
 * libpq's event hooks, so a reset or a close forgets it.
 */

#define DB_STMT_MAX	 256 /* per connection; later ones run unnamed */
#define DB_STMT_NAME_MAX 24

struct db_stmts;

/* The statements conn has prepared, tracking it from now on; NULL when
 * that cannot be (out of memory): run everything unnamed then. */
struct db_stmts *db_stmts_of(PGconn *conn);

/* The name sql is prepared under, in name (DB_STMT_NAME_MAX bytes). */
uint64_t db_stmt_key(const char *sql, char *name);

int db_stmts_has(const struct db_stmts *s, uint64_t key);

/* Room for one more under limit. */
int db_stmts_room(const struct db_stmts *s, int limit);

void db_stmts_add(struct db_stmts *s, uint64_t key);

/* Forgets every statement: the server no longer has them (a script ran
 * DEALLOCATE or DISCARD). */
void db_stmts_clear(struct db_stmts *s);

/* Follows what a statement's result says about the names the server
 * holds: a DEALLOCATE ALL or DISCARD ALL dropped them, an unknown name
 * (SQLSTATE 26000) means some were dropped. */
void db_stmts_note(struct db_stmts *s, const PGresult *r);

#endif
