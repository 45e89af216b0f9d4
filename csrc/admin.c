/* Chunked deletes, shared by results.c, dlq.c and upkeep.c. */
#include "admin.h"

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
