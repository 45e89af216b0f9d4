#include "transaction.h"

#include <stdlib.h>
#include <string.h>

static int begin_op(ce_conn *c, void *ctx, ce_error *err)
{
    (void)ctx;
    return ce_conn_begin(c, err);
}

int ce_tx_begin(ce_conn *c, ce_error *err)
{
    if (c->user_tx) return ce_error_set(err, CE_EINVALID, "a transaction is already open");
    /* Nothing has run yet: a lost link here is reconnected and START TRANSACTION sent again. */
    if (ce_conn_run(c, CE_REPEAT, begin_op, NULL, err) < 0) return -1;
    c->user_tx = 1;
    c->user_tx_dead = 0;
    c->op_savepoint = 0;
    ce_error_clear(&c->user_tx_err);
    return 0;
}

static void end_user_tx(ce_conn *c)
{
    c->user_tx = 0;
    c->user_tx_dead = 0;
    c->op_savepoint = 0;
}

int ce_tx_commit(ce_conn *c, ce_error *err)
{
    int dead = c->user_tx_dead;
    if (!c->user_tx) return ce_error_set(err, CE_EINVALID, "no transaction is open");
    if (dead) *err = c->user_tx_err;
    end_user_tx(c);
    if (dead) {
        ce_conn_rollback(c);
        ce_error_prefix(err, "the transaction was rolled back: ", (const char *)NULL);
        return -1;
    }
    if (ce_conn_commit(c, err) == 0) return 0;
    c->committing = 0;
    if (err->code == CE_ELOST || err->code == CE_ETIMEOUT) {
        c->broken = 1; /* the next operation reconnects */
        c->in_tx = 0;
        ce_error_prefix(
            err, "COMMIT got no answer (the transaction may have committed): ", (const char *)NULL);
        return -1;
    }
    ce_conn_rollback(c);
    return -1;
}

void ce_tx_rollback(ce_conn *c)
{
    if (!c->user_tx) return;
    end_user_tx(c);
    ce_conn_rollback(c);
}

void ce_tx_result_free(ce_tx_result *r)
{
    if (r->names)
        for (unsigned int i = 0; i < r->ncols; i++)
            free(r->names[i]);
    free(r->names);
    free(r->kinds);
    ce_rows_free(&r->rows);
    memset(r, 0, sizeof *r);
}

static ce_col_kind kind_of(const MYSQL_FIELD *f)
{
    switch (f->type) {
    case MYSQL_TYPE_TINY:
    case MYSQL_TYPE_SHORT:
    case MYSQL_TYPE_LONG:
    case MYSQL_TYPE_INT24:
    case MYSQL_TYPE_YEAR:
        return CE_COL_INTEGER;
    case MYSQL_TYPE_LONGLONG: /* an unsigned one may not fit a signed 64-bit integer */
        return (f->flags & UNSIGNED_FLAG) ? CE_COL_TEXT : CE_COL_INTEGER;
    case MYSQL_TYPE_FLOAT:
    case MYSQL_TYPE_DOUBLE:
        return CE_COL_FLOAT;
    default:
        return CE_COL_TEXT;
    }
}

typedef struct {
    const char *sql;
    const ce_param *p;
    unsigned int n;
    ce_tx_result *out;
} exec_ctx;

/* Column names and kinds come from the prepared statement's metadata, before it runs. */
static int describe(MYSQL_STMT *stmt, ce_tx_result *out, ce_error *err)
{
    MYSQL_RES *meta = mysql_stmt_result_metadata(stmt);
    unsigned int ncols;
    MYSQL_FIELD *fields;
    if (!meta) return 0;
    ncols = mysql_num_fields(meta);
    fields = mysql_fetch_fields(meta);
    out->has_rows = 1;
    out->ncols = ncols;
    out->names = calloc(ncols ? ncols : 1, sizeof *out->names);
    out->kinds = calloc(ncols ? ncols : 1, sizeof *out->kinds);
    if (!out->names || !out->kinds) {
        mysql_free_result(meta);
        return ce_error_set(err, CE_ENOMEM, "out of memory");
    }
    for (unsigned int i = 0; i < ncols; i++) {
        out->names[i] = strdup(fields[i].name ? fields[i].name : "");
        out->kinds[i] = kind_of(&fields[i]);
        if (!out->names[i]) {
            mysql_free_result(meta);
            return ce_error_set(err, CE_ENOMEM, "out of memory");
        }
    }
    mysql_free_result(meta);
    return 0;
}

static int execute_op(ce_conn *c, void *vctx, ce_error *err)
{
    exec_ctx *x = vctx;
    MYSQL_STMT *stmt = ce_conn_prepare(c, x->sql, err);
    if (!stmt) return -1;
    if (mysql_stmt_param_count(stmt) != x->n)
        return ce_error_set(err, CE_EINVALID, "the statement has %lu placeholders, got %u values",
                            mysql_stmt_param_count(stmt), x->n);
    if (describe(stmt, x->out, err) < 0) return -1;
    if (ce_exec(c, x->sql, x->p, x->n, x->out->has_rows ? &x->out->rows : NULL, &x->out->affected,
                err) < 0)
        return -1;
    /* ce_exec found the same cached statement */
    x->out->insert_id = mysql_stmt_insert_id(stmt);
    if (x->out->has_rows && x->out->rows.ncols != x->out->ncols)
        return ce_error_set(err, CE_ESQL, "the result set changed shape while running");
    return 0;
}

int ce_tx_execute(ce_conn *c, const char *sql, const ce_param *p, unsigned int n, ce_tx_result *out,
                  ce_error *err)
{
    exec_ctx x = {sql, p, n, out};
    memset(out, 0, sizeof *out);
    if (!c->user_tx) return ce_error_set(err, CE_EINVALID, "no transaction is open");
    if (ce_conn_run(c, CE_ONCE, execute_op, &x, err) < 0) {
        ce_tx_result_free(out);
        return -1;
    }
    return 0;
}
