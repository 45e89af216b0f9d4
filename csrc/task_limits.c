#include "task_limits.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "task.h"

// clang-format off
/* The value a partitioned limit groups by: a scalar of a JSON payload at a path, NULL for
 * anything else (a raw payload, a missing field, an object). Parameters: path, path. */
#define PARTITION_VALUE \
    "IF(? IS NOT NULL AND payload_type = 'json' AND JSON_VALID(payload), JSON_VALUE(payload, ?), NULL)"

static const char SQL_SET[] =
    "INSERT INTO celers_task_limits (task_name, max_running, partition_by, rate_limit, rate_period) "
    "VALUES (?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE max_running = VALUES(max_running), "
    "partition_by = VALUES(partition_by), rate_limit = VALUES(rate_limit), "
    "rate_period = VALUES(rate_period), updated_at = NOW(6)";
static const char SQL_REMOVE[] = "DELETE FROM celers_task_limits WHERE task_name = ?";
static const char SQL_LIST[] =
    "SELECT l.task_name, l.max_running, l.partition_by, l.rate_limit, l.rate_period, "
    "(SELECT COUNT(*) FROM celers_tasks AS t FORCE INDEX (idx_celers_tasks_limited) "
    " WHERE t.task_name = l.task_name AND t.state = 'processing'), "
    "(SELECT COALESCE(SUM(s.started), 0) FROM celers_task_starts AS s "
    " WHERE s.task_name = l.task_name AND l.rate_period IS NOT NULL "
    " AND s.started_at > DATE_SUB(NOW(6), INTERVAL ROUND(1000000 * l.rate_period) MICROSECOND)), "
    "(SELECT COUNT(*) FROM celers_tasks AS t FORCE INDEX (idx_celers_tasks_limited) "
    " WHERE t.task_name = l.task_name AND t.state IN ('pending', 'scheduled')) "
    "FROM celers_task_limits AS l ORDER BY l.task_name";
static const char SQL_NAMES[] = "SELECT task_name FROM celers_task_limits ORDER BY task_name";

/* The limit's row, locked for the rest of the claim; another claimer holding it is skipped. */
static const char SQL_LOCK[] =
    "SELECT max_running, partition_by, rate_limit, rate_period FROM celers_task_limits "
    "WHERE task_name = ? FOR UPDATE SKIP LOCKED";
static const char SQL_RUNNING[] =
    "SELECT COUNT(*) FROM celers_tasks FORCE INDEX (idx_celers_tasks_limited) "
    "WHERE task_name = ? AND state = 'processing'";
static const char SQL_RUNNING_BY[] =
    "SELECT " PARTITION_VALUE ", COUNT(*) FROM celers_tasks FORCE INDEX (idx_celers_tasks_limited) "
    "WHERE task_name = ? AND state = 'processing' GROUP BY 1";
static const char SQL_STARTS_FORGET[] =
    "DELETE FROM celers_task_starts WHERE task_name = ? AND started_at <= " CE_AGO("?");
static const char SQL_STARTS[] =
    "SELECT COALESCE(SUM(started), 0) FROM celers_task_starts "
    "WHERE task_name = ? AND started_at > " CE_AGO("?");
static const char SQL_STARTS_ADD[] =
    "INSERT INTO celers_task_starts (task_name, started_at, started) "
    "VALUES (?, CAST(? AS DATETIME(6)), ?)";
/* The waiting tasks of one name in claim order, from idx_celers_tasks_limited, and the value
 * their partition is counted by (column CE_T_NCOLS + 1). */
static const char SQL_CANDIDATES[] =
    "SELECT " CE_CLAIM_COLUMNS ", " PARTITION_VALUE " "
    "FROM celers_tasks FORCE INDEX (idx_celers_tasks_limited) "
    "WHERE task_name = ? AND state = 'pending' AND queue = ? AND scheduled_at <= NOW(6) "
    "AND NOT EXISTS (SELECT 1 FROM celers_queue_pauses WHERE queue = ?) "
    "ORDER BY claim_rank, scheduled_at, id LIMIT ? FOR UPDATE SKIP LOCKED";
// clang-format on

#define PARTITION_COL (CE_T_NCOLS + 1)

int ce_limit_path(const char *partition_by, char *out, size_t outlen)
{
    size_t n = strlen(partition_by);
    if (n == 0 || n > CE_LIMIT_PATH_MAX || outlen < n + 8) return -1;
    if (partition_by[0] == '$') {
        memcpy(out, partition_by, n + 1);
        return 0;
    }
    if (strpbrk(partition_by, "\"\\")) return -1;
    snprintf(out, outlen, "$.\"%s\"", partition_by);
    return 0;
}

static ce_param opt_int(long long v)
{
    return v >= 0 ? ce_pint(v) : ce_pnull();
}

int ce_set_limit(ce_conn *c, const ce_limit *l, ce_error *err)
{
    ce_param p[5] = {ce_pstr(l->task_name), opt_int(l->max_running), ce_pstr(l->partition_by),
                     opt_int(l->rate_limit),
                     l->rate_limit >= 0 ? ce_pdouble(l->rate_period) : ce_pnull()};
    c->limits_at = 0; /* this connection's next claim sees it */
    /* An upsert of the same values: safe to repeat. */
    return ce_run(c, CE_REPEAT, SQL_SET, p, 5, NULL, NULL, err);
}

int ce_remove_limit(ce_conn *c, const char *task_name, int *removed, ce_error *err)
{
    ce_param p[1] = {ce_pstr(task_name)};
    unsigned long long affected = 0;
    c->limits_at = 0;
    /* Repeated after it landed it would say "there was none": run once. */
    if (ce_run(c, CE_ONCE, SQL_REMOVE, p, 1, NULL, &affected, err) < 0) return -1;
    *removed = affected > 0;
    return 0;
}

int ce_list_limits(ce_conn *c, ce_rows *out, ce_error *err)
{
    return ce_run(c, CE_REPEAT, SQL_LIST, NULL, 0, out, NULL, err);
}

void ce_limits_refresh_if_due(ce_conn *c)
{
    ce_rows rows = {0};
    ce_error ignored;
    size_t bytes = 0;
    char *names, *p;
    double now = ce_monotonic();
    if (c->limits_at > 0 && now - c->limits_at < CE_LIMITS_INTERVAL) return;
    c->limits_at = now;
    if (ce_run(c, CE_REPEAT, SQL_NAMES, NULL, 0, &rows, NULL, &ignored) < 0) return;
    for (unsigned int r = 0; r < rows.nrows; r++)
        bytes += CE_CELL(&rows, r, 0)->len + 1;
    names = malloc(bytes ? bytes : 1);
    if (!names) {
        ce_rows_free(&rows);
        return;
    }
    p = names;
    for (unsigned int r = 0; r < rows.nrows; r++) {
        const ce_value *v = CE_CELL(&rows, r, 0);
        memcpy(p, v->data, v->len + 1);
        p += v->len + 1;
    }
    free(c->limit_names);
    c->limit_names = names;
    c->nlimits = rows.nrows;
    ce_rows_free(&rows);
}

/* The limit of one name as read under its lock. */
typedef struct {
    long long max_running, rate_limit;
    double rate_period;
    char path[CE_LIMIT_PATH_MAX + 8];
    int partitioned;
} held_limit;

/* Lock the limit of name; *found is 0 when it is gone or another claimer holds it. */
static int lock_limit(ce_conn *c, const char *name, held_limit *l, int *found, ce_error *err)
{
    ce_param p[1] = {ce_pstr(name)};
    ce_rows rows = {0};
    *found = 0;
    if (ce_exec(c, SQL_LOCK, p, 1, &rows, NULL, err) < 0) return -1;
    if (rows.nrows == 1) {
        const ce_value *by = CE_CELL(&rows, 0, 1);
        *found = 1;
        l->max_running = ce_cell_int(&rows, 0, 0, -1);
        l->rate_limit = ce_cell_int(&rows, 0, 2, -1);
        l->rate_period = ce_cell_num(&rows, 0, 3, 0);
        l->partitioned = by->data && l->max_running >= 0 &&
                         ce_limit_path(by->data, l->path, sizeof l->path) == 0;
    }
    ce_rows_free(&rows);
    return 0;
}

/* How many more tasks of name may start now, at most cap: the rate's room, then (without a
 * partition) the concurrency's. */
static int room(ce_conn *c, const char *name, const held_limit *l, long long cap, long long *out,
                ce_error *err)
{
    if (l->rate_limit >= 0) {
        ce_param p[2] = {ce_pstr(name), ce_pdouble(l->rate_period)};
        long long started = 0;
        if (ce_exec(c, SQL_STARTS_FORGET, p, 2, NULL, NULL, err) < 0) return -1;
        if (ce_exec_count(c, SQL_STARTS, p, 2, &started, err) < 0) return -1;
        if (l->rate_limit - started < cap) cap = l->rate_limit - started;
    }
    if (cap > 0 && l->max_running >= 0 && !l->partitioned) {
        ce_param p[1] = {ce_pstr(name)};
        long long running = 0;
        if (ce_exec_count(c, SQL_RUNNING, p, 1, &running, err) < 0) return -1;
        if (l->max_running - running < cap) cap = l->max_running - running;
    }
    *out = cap;
    return 0;
}

static int same_value(const ce_value *a, const ce_value *b)
{
    if (!a->data || !b->data) return !a->data && !b->data;
    return a->len == b->len && memcmp(a->data, b->data, a->len) == 0;
}

/* Keep the candidates whose partition has room, in order, at most cap: a partition's count is
 * its processing tasks plus the candidates kept before. */
static int keep_by_partition(ce_conn *c, const char *name, const held_limit *l, const ce_rows *cand,
                             long long cap, unsigned char *keep, ce_error *err)
{
    ce_param p[3] = {ce_pstr(l->path), ce_pstr(l->path), ce_pstr(name)};
    ce_rows running = {0};
    long long kept = 0;
    if (ce_exec(c, SQL_RUNNING_BY, p, 3, &running, NULL, err) < 0) return -1;
    for (unsigned int r = 0; r < cand->nrows && kept < cap; r++) {
        const ce_value *v = CE_CELL(cand, r, PARTITION_COL);
        long long busy = 0;
        for (unsigned int i = 0; i < running.nrows; i++)
            if (same_value(CE_CELL(&running, i, 0), v)) busy += ce_cell_int(&running, i, 1, 0);
        for (unsigned int i = 0; i < r; i++)
            if (keep[i] && same_value(CE_CELL(cand, i, PARTITION_COL), v)) busy++;
        keep[r] = busy < l->max_running;
        kept += keep[r];
    }
    ce_rows_free(&running);
    return 0;
}

/* Claim what the limit of name allows (at most cap) into out. */
static int claim_name(ce_conn *c, const char *name, const char *queue, long long cap,
                      const char *worker_id, const char *claim_id, double lease, ce_rows *out,
                      ce_error *err)
{
    held_limit l;
    ce_rows cand = {0}, taken = {0};
    unsigned char *keep = NULL;
    ce_param p[9];
    int found = 0, rc = -1;
    if (lock_limit(c, name, &l, &found, err) < 0) return -1;
    if (!found) return 0;
    if (room(c, name, &l, cap, &cap, err) < 0) return -1;
    if (cap <= 0) return 0;
    p[0] = ce_pstr(worker_id);
    p[1] = ce_pstr(claim_id);
    p[2] = ce_pdouble(lease);
    p[3] = l.partitioned ? ce_pstr(l.path) : ce_pnull();
    p[4] = p[3];
    p[5] = ce_pstr(name);
    p[6] = ce_pstr(queue);
    p[7] = ce_pstr(queue);
    p[8] = ce_pint(l.partitioned ? CE_LIMIT_SCAN : cap);
    if (ce_exec(c, SQL_CANDIDATES, p, 9, &cand, NULL, err) < 0) return -1;
    if (cand.nrows == 0) {
        ce_rows_free(&cand); /* an empty result still owns its buffers */
        return 0;
    }
    keep = calloc(cand.nrows, 1);
    if (!keep) {
        ce_error_set(err, CE_ENOMEM, "out of memory");
        goto done;
    }
    if (l.partitioned) {
        if (keep_by_partition(c, name, &l, &cand, cap, keep, err) < 0) goto done;
    } else {
        memset(keep, 1, cand.nrows);
    }
    if (ce_rows_append(&taken, &cand, keep, CE_T_NCOLS + 1) < 0) {
        ce_error_set(err, CE_ENOMEM, "out of memory");
        goto done;
    }
    if (taken.nrows == 0) {
        rc = 0;
        goto done;
    }
    if (ce_claim_mark(c, &taken, 0, taken.nrows, worker_id, claim_id, lease, err) < 0) goto done;
    if (l.rate_limit >= 0) {
        ce_param s[3] = {ce_pstr(name), ce_pstr(CE_CELL(&taken, 0, CE_T_NCOLS)->data),
                         ce_pint(taken.nrows)};
        if (ce_exec(c, SQL_STARTS_ADD, s, 3, NULL, NULL, err) < 0) goto done;
    }
    if (ce_rows_append(out, &taken, NULL, CE_T_NCOLS + 1) < 0) {
        ce_error_set(err, CE_ENOMEM, "out of memory");
        goto done;
    }
    rc = 0;
done:
    free(keep);
    ce_rows_free(&cand);
    ce_rows_free(&taken);
    return rc;
}

int ce_claim_limited_in_tx(ce_conn *c, const char *queue, unsigned int n, const char *worker_id,
                           const char *claim_id, double lease, ce_rows *out, ce_error *err)
{
    const char *name = c->limit_names;
    for (unsigned int i = 0; i < c->nlimits && out->nrows < n; i++, name += strlen(name) + 1) {
        long long cap = (long long)n - out->nrows;
        if (cap > CE_IN_CHUNK) cap = CE_IN_CHUNK;
        if (claim_name(c, name, queue, cap, worker_id, claim_id, lease, out, err) < 0) {
            ce_rows_free(out);
            return -1;
        }
    }
    return 0;
}
