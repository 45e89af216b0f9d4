/* Helpers shared by inspect.c, results.c, dlq.c and upkeep.c. */
#include "admin.h"

#include <string.h>

typedef struct {
    const char *sql;
    const ce_param *p;
    unsigned int n;
    ce_rows *out;
    unsigned long long affected;
} stmt_ctx;

static int stmt_op(ce_conn *c, void *vctx, ce_error *err)
{
    stmt_ctx *x = vctx;
    return ce_exec(c, x->sql, x->p, x->n, x->out, &x->affected, err);
}

int ce_read(ce_conn *c, const char *sql, const ce_param *p, unsigned int n, ce_rows *out,
            ce_error *err)
{
    stmt_ctx x = {sql, p, n, out, 0};
    memset(out, 0, sizeof *out);
    return ce_conn_run(c, CE_REPEAT, stmt_op, &x, err);
}

int ce_read_count(ce_conn *c, const char *sql, const ce_param *p, unsigned int n, long long *out,
                  ce_error *err)
{
    ce_rows rows = {0};
    if (ce_read(c, sql, p, n, &rows, err) < 0) return -1;
    *out = rows.nrows ? ce_cell_int(&rows, 0, 0, 0) : 0;
    ce_rows_free(&rows);
    return 0;
}

int ce_write(ce_conn *c, const char *sql, const ce_param *p, unsigned int n,
             unsigned long long *affected, ce_error *err)
{
    stmt_ctx x = {sql, p, n, NULL, 0};
    if (ce_conn_run(c, CE_ONCE, stmt_op, &x, err) < 0) return -1;
    if (affected) *affected = x.affected;
    return 0;
}

typedef struct {
    const char *sql;
    const ce_param *p;
    unsigned int n;
    unsigned long long total;
} chunk_ctx;

static int chunk_op(ce_conn *c, void *vctx, ce_error *err)
{
    chunk_ctx *x = vctx;
    /* total is kept across a repeat after a lost link: the chunks before it committed. */
    for (;;) {
        unsigned long long affected = 0;
        if (ce_exec(c, x->sql, x->p, x->n, NULL, &affected, err) < 0) return -1;
        x->total += affected;
        if (affected < CE_CHUNK_ROWS) return 0;
    }
}

int ce_delete_chunked(ce_conn *c, const char *sql, const ce_param *p, unsigned int n,
                      unsigned long long *deleted, ce_error *err)
{
    chunk_ctx x = {sql, p, n, 0};
    /* Deleting what is left is safe to repeat. */
    int rc = ce_conn_run(c, CE_REPEAT, chunk_op, &x, err);
    *deleted = x.total;
    return rc;
}
