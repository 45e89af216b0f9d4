#include "handoff.h"

#include <string.h>

#include "task_limits.h"
#include "staging.h"

static const char SQL_ACK_AND_CLAIM[] = "CALL celers_ack_and_claim(?, ?, ?, ?, ?, ?)";

typedef struct {
    const char *queue;
    ce_task_ref prev;
    const char *worker_id;
    double lease;
    int *acked;
    ce_rows *out;
} handoff_ctx;

static int handoff_op(ce_conn *c, void *vctx, ce_error *err)
{
    handoff_ctx *x = vctx;
    char claim_id[CE_UUID_LEN + 1];
    ce_param p[6];
    ce_rows *r = x->out;
    ce_uuid7(claim_id);
    p[0] = ce_pstr(x->prev.id);
    p[1] = ce_pstr(x->prev.claim_id);
    p[2] = ce_pstr(x->queue);
    p[3] = ce_pstr(x->worker_id);
    p[4] = ce_pstr(claim_id);
    p[5] = ce_pdouble(x->lease);
    if (ce_exec(c, SQL_ACK_AND_CLAIM, p, 6, r, NULL, err) < 0) return -1;
    if (r->nrows != 1 || r->ncols != CE_T_NCOLS + 1) {
        ce_rows_free(r);
        return ce_error_set(err, CE_ESQL,
                            "celers_ack_and_claim returned an unexpected result; "
                            "run broker:migrate()");
    }
    *x->acked = ce_cell_int(r, 0, CE_T_NCOLS, 0) > 0;
    if (!CE_CELL(r, 0, CE_T_ID)->data) r->nrows = 0; /* nothing was ready */
    return 0;
}

typedef struct {
    const char *queue;
    const ce_task_ref *refs;
    size_t nrefs;
    unsigned int n;
    const char *worker_id;
    double lease;
    unsigned long long *acked;
    ce_rows *out;
} batch_handoff_ctx;

static int batch_handoff_op(ce_conn *c, void *vctx, ce_error *err)
{
    batch_handoff_ctx *x = vctx;
    if (ce_conn_begin(c, err) < 0) return -1;
    if (ce_ack_in_tx(c, x->refs, x->nrefs, x->acked, err) < 0) return -1;
    if (x->n && ce_claim_in_tx(c, x->queue, x->n, x->worker_id, x->lease, x->out, err) < 0)
        return -1;
    if (ce_conn_commit(c, err) < 0) {
        ce_rows_free(x->out);
        return -1;
    }
    return 0;
}

int ce_ack_and_claim(ce_conn *c, const char *queue, ce_task_ref prev, const char *worker_id,
                     double lease, int *acked, ce_rows *out, ce_error *err)
{
    handoff_ctx x = {queue, prev, worker_id, lease, acked, out};
    unsigned long long n = 0;
    batch_handoff_ctx bx = {queue, &prev, prev.id ? 1 : 0, 1, worker_id, lease, &n, out};
    int rc;
    memset(out, 0, sizeof *out);
    *acked = 0;
    ce_recover_if_due(c, queue);
    ce_stage_if_due(c, queue);
    ce_limits_refresh_if_due(c);
    if (c->nlimits) {
        /* The procedure never claims a limited name: the same ack and claim as one C
         * transaction (see ce_ack_batch_and_claim for its repeat policy). */
        rc = ce_conn_run(c, CE_REPEAT, batch_handoff_op, &bx, err);
        *acked = n > 0;
    } else {
        /* Ack and claim are one transaction inside the procedure: a deadlock rolls both back
         * and may run again; a lost link may have committed both, so it reports "lost". */
        rc = ce_conn_run(c, CE_ONCE, handoff_op, &x, err);
    }
    if (rc == 0) return 0;
    /* Failed or lost: whether the ack landed is still known to the database. The caller gets
     * the error and, in *acked, the ack's outcome (unknown stays 0: `ack` is safe to repeat). */
    if (prev.id) {
        ce_error ignored;
        if (ce_ack_landed(c, prev, acked, &ignored) < 0) *acked = 0;
    }
    return -1;
}

int ce_ack_batch_and_claim(ce_conn *c, const char *queue, const ce_task_ref *refs, size_t nrefs,
                           unsigned int n, const char *worker_id, double lease,
                           unsigned long long *acked, ce_rows *out, ce_error *err)
{
    batch_handoff_ctx x = {queue, refs, nrefs, n, worker_id, lease, acked, out};
    memset(out, 0, sizeof *out);
    *acked = 0;
    if (n) {
        ce_recover_if_due(c, queue);
        ce_stage_if_due(c, queue);
        ce_limits_refresh_if_due(c);
    }
    /* Until COMMIT is sent the server rolls everything back on a lost link or deadlock, so
     * running again is safe (the acks are fenced); a COMMIT left unanswered reports "lost". */
    return ce_conn_run(c, CE_REPEAT, batch_handoff_op, &x, err);
}
