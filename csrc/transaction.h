/* Application transactions (broker:transaction): the application's own statements and the
 * broker's enqueues commit or roll back together on one connection. While one is open every
 * operation on the connection joins it (connection.c); nested transactions are refused. */
#ifndef CELERS_TRANSACTION_H
#define CELERS_TRANSACTION_H

#include "connection.h"
#include "statement.h"

/* Start the application transaction. Refused (CE_EINVALID) when one is open. */
int ce_tx_begin(ce_conn *c, ce_error *err);
/* Commit it. When the server already ended it (deadlock, lost link) nothing is committed and
 * the error that ended it is returned; a lost answer to COMMIT is "lost" (it may have landed).
 * The transaction is over either way. */
int ce_tx_commit(ce_conn *c, ce_error *err);
/* Roll it back (best effort: a dead link rolled it back already). */
void ce_tx_rollback(ce_conn *c);

/* What an application statement gave back. */
typedef enum { CE_COL_TEXT = 0, CE_COL_INTEGER, CE_COL_FLOAT } ce_col_kind;
typedef struct ce_tx_result {
    int has_rows;       /* the statement returns a result set */
    ce_rows rows;       /* its rows, when has_rows */
    unsigned int ncols; /* columns of the result set */
    char **names;       /* ncols column names (owned) */
    ce_col_kind *kinds; /* how each column reads back */
    unsigned long long affected, insert_id;
} ce_tx_result;

/* Run one application statement with bound parameters inside the open transaction.
 * CE_EINVALID when no transaction is open or the parameter count does not match. */
int ce_tx_execute(ce_conn *c, const char *sql, const ce_param *p, unsigned int n, ce_tx_result *out,
                  ce_error *err);
void ce_tx_result_free(ce_tx_result *r);

#endif
