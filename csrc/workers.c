#include "workers.h"

/* Portable upsert: MySQL 8 deprecates VALUES() in ON DUPLICATE KEY UPDATE and MariaDB lacks
 * the row alias, so the new values are bound a second time. */
static const char SQL_BEAT[] =
    "INSERT INTO celers_workers (worker_id, queue, hostname, pid, processed, failed, info, "
    "started_at, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, NOW(6), NOW(6)) "
    "ON DUPLICATE KEY UPDATE queue = ?, hostname = ?, pid = ?, processed = ?, failed = ?, "
    "info = ?, last_seen = NOW(6)";

static const char SQL_LIST[] =
    "SELECT worker_id, queue, hostname, pid, " CE_EPOCH("started_at") ", " CE_EPOCH(
        "last_seen") ", processed, failed, info, "
                     "TIMESTAMPDIFF(MICROSECOND, last_seen, NOW(6)) / 1000000 "
                     "FROM celers_workers WHERE queue = ? AND (? IS NULL OR "
                     "last_seen >= DATE_SUB(NOW(6), INTERVAL ROUND(1000000 * ?) MICROSECOND)) "
                     "ORDER BY last_seen DESC";

static const char SQL_REMOVE[] = "DELETE FROM celers_workers WHERE worker_id = ?";

static const char SQL_PRUNE[] =
    "DELETE FROM celers_workers WHERE queue = ? AND "
    "last_seen < DATE_SUB(NOW(6), INTERVAL ROUND(1000000 * ?) MICROSECOND)";

typedef struct {
    const char *sql;
    ce_param p[13];
    unsigned int np;
    ce_rows *out;
    unsigned long long affected;
} worker_ctx;

static int worker_op(ce_conn *c, void *vctx, ce_error *err)
{
    worker_ctx *x = vctx;
    return ce_exec(c, x->sql, x->p, x->np, x->out, &x->affected, err);
}

int ce_worker_heartbeat(ce_conn *c, const ce_worker_beat *w, ce_error *err)
{
    worker_ctx x = {SQL_BEAT, {{0}}, 13, NULL, 0};
    x.p[0] = ce_pstr(w->worker_id);
    x.p[1] = ce_pstr(w->queue);
    x.p[2] = ce_pstr(w->hostname);
    x.p[3] = ce_pint(w->pid);
    x.p[4] = ce_pint(w->processed);
    x.p[5] = ce_pint(w->failed);
    x.p[6] = ce_pstr(w->info);
    for (int i = 1; i <= 6; i++)
        x.p[6 + i] = x.p[i];
    /* An upsert of the same values: safe to repeat after a lost link. */
    return ce_conn_run(c, CE_REPEAT, worker_op, &x, err);
}

int ce_list_workers(ce_conn *c, const char *queue, double stale_after, ce_rows *out, ce_error *err)
{
    worker_ctx x = {SQL_LIST, {{0}}, 3, out, 0};
    x.p[0] = ce_pstr(queue);
    x.p[1] = stale_after >= 0 ? ce_pdouble(stale_after) : ce_pnull();
    x.p[2] = x.p[1];
    return ce_conn_run(c, CE_REPEAT, worker_op, &x, err);
}

int ce_remove_worker(ce_conn *c, const char *worker_id, int *ok, ce_error *err)
{
    worker_ctx x = {SQL_REMOVE, {{0}}, 1, NULL, 0};
    x.p[0] = ce_pstr(worker_id);
    if (ce_conn_run(c, CE_REPEAT, worker_op, &x, err) < 0) return -1;
    *ok = x.affected > 0;
    return 0;
}

int ce_prune_workers(ce_conn *c, const char *queue, double older_than, unsigned long long *n,
                     ce_error *err)
{
    worker_ctx x = {SQL_PRUNE, {{0}}, 2, NULL, 0};
    x.p[0] = ce_pstr(queue);
    x.p[1] = ce_pdouble(older_than);
    if (ce_conn_run(c, CE_REPEAT, worker_op, &x, err) < 0) return -1;
    *n = x.affected;
    return 0;
}
