#include "workers.h"

/* Portable upsert: MySQL 8 deprecates VALUES() in ON DUPLICATE KEY UPDATE and MariaDB lacks
 * the row alias, so the new values are bound a second time. */
static const char SQL_BEAT[] =
    "INSERT INTO celers_workers (worker_id, queue, hostname, pid, processed, failed, info, "
    "started_at, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, NOW(6), NOW(6)) "
    "ON DUPLICATE KEY UPDATE queue = ?, hostname = ?, pid = ?, processed = ?, failed = ?, "
    "info = ?, last_seen = NOW(6)";

// clang-format off
static const char SQL_LIST[] =
    "SELECT worker_id, queue, hostname, pid, " CE_EPOCH("started_at") ", " CE_EPOCH("last_seen") ", "
    "processed, failed, info, TIMESTAMPDIFF(MICROSECOND, last_seen, NOW(6)) / 1000000 "
    "FROM celers_workers "
    "WHERE queue = ? AND (? IS NULL OR last_seen >= " CE_AGO("?") ") "
    "ORDER BY last_seen DESC";
// clang-format on

static const char SQL_REMOVE[] = "DELETE FROM celers_workers WHERE worker_id = ?";

static const char SQL_PRUNE[] =
    "DELETE FROM celers_workers WHERE queue = ? AND last_seen < " CE_AGO("?");

int ce_worker_heartbeat(ce_conn *c, const ce_worker_beat *w, ce_error *err)
{
    ce_param p[13];
    p[0] = ce_pstr(w->worker_id);
    p[1] = ce_pstr(w->queue);
    p[2] = ce_pstr(w->hostname);
    p[3] = ce_pint(w->pid);
    p[4] = ce_pint(w->processed);
    p[5] = ce_pint(w->failed);
    p[6] = ce_pstr(w->info);
    for (int i = 1; i <= 6; i++)
        p[6 + i] = p[i];
    /* An upsert of the same values: safe to repeat after a lost link. */
    return ce_run(c, CE_REPEAT, SQL_BEAT, p, 13, NULL, NULL, err);
}

int ce_list_workers(ce_conn *c, const char *queue, double stale_after, ce_rows *out, ce_error *err)
{
    ce_param p[3];
    p[0] = ce_pstr(queue);
    p[1] = stale_after >= 0 ? ce_pdouble(stale_after) : ce_pnull();
    p[2] = p[1];
    return ce_run(c, CE_REPEAT, SQL_LIST, p, 3, out, NULL, err);
}

int ce_remove_worker(ce_conn *c, const char *worker_id, int *ok, ce_error *err)
{
    ce_param p[1] = {ce_pstr(worker_id)};
    unsigned long long affected = 0;
    if (ce_run(c, CE_REPEAT, SQL_REMOVE, p, 1, NULL, &affected, err) < 0) return -1;
    *ok = affected > 0;
    return 0;
}

int ce_prune_workers(ce_conn *c, const char *queue, double older_than, unsigned long long *n,
                     ce_error *err)
{
    ce_param p[2] = {ce_pstr(queue), ce_pdouble(older_than)};
    return ce_run(c, CE_REPEAT, SQL_PRUNE, p, 2, NULL, n, err);
}
