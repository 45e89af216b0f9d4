/* Task inspection: listing and counting a queue's tasks (admin.h). */
#include "admin.h"

#include <string.h>

#include "task.h"

#define SELECT_TASKS "SELECT " CE_TASK_COLUMNS " FROM celers_tasks WHERE queue = ?"
#define PAGE " ORDER BY id LIMIT ? OFFSET ?"
/* Not yet due: state 'scheduled', and rows the Rust broker wrote as 'pending' with a future
 * scheduled_at. Each is a range of idx_celers_tasks_staging (queue, state, scheduled_at). */
#define EARLY " AND state = 'pending' AND scheduled_at > NOW(6)"

/* Indexed by (state given) * 2 + (after_id given). idx_celers_tasks_queue_id serves the
 * id order; with a state the optimizer may also pick idx_celers_tasks_dequeue. */
static const char *const SQL_LIST[4] = {
    SELECT_TASKS PAGE,
    SELECT_TASKS " AND id > ?" PAGE,
    SELECT_TASKS " AND state = ?" PAGE,
    SELECT_TASKS " AND state = ? AND id > ?" PAGE,
};

/* Each part is a range of an index on (queue, state, ...) or (queue, failed_at): the counts
 * read index entries only, never table rows (EXPLAIN in docs/admin.md). '#early' rows (see
 * EARLY) count as scheduled, not pending. */
static const char SQL_STATS[] =
    "SELECT state, COUNT(*) FROM celers_tasks WHERE queue = ? GROUP BY state "
    "UNION ALL SELECT '#early', COUNT(*) FROM celers_tasks WHERE queue = ?" EARLY
    " UNION ALL SELECT '#dlq', COUNT(*) FROM celers_dead_letter_queue WHERE queue = ?";

static const char SQL_BY_NAME_LIVE[] =
    "SELECT task_name, COUNT(*) FROM celers_tasks WHERE queue = ? "
    "AND state IN ('scheduled', 'pending', 'processing') GROUP BY task_name ORDER BY task_name";
static const char SQL_BY_NAME_STATE[] =
    "SELECT task_name, COUNT(*) FROM celers_tasks WHERE queue = ? AND state = ? "
    "GROUP BY task_name ORDER BY task_name";

/* Two index-ordered ranges merged: each side reads at most limit + offset rows. */
static const char SQL_SCHEDULED[] =
    "SELECT * FROM ((" SELECT_TASKS " AND state = 'scheduled' ORDER BY scheduled_at, id "
    "LIMIT ?) UNION ALL (" SELECT_TASKS EARLY " ORDER BY scheduled_at, id LIMIT ?)) AS s "
    "ORDER BY 11, 1 LIMIT ? OFFSET ?";
static const char SQL_COUNT_SCHEDULED[] =
    "SELECT (SELECT COUNT(*) FROM celers_tasks WHERE queue = ? AND state = 'scheduled') + "
    "(SELECT COUNT(*) FROM celers_tasks WHERE queue = ?" EARLY ")";
static const char SQL_PROCESSING[] =
    SELECT_TASKS " AND state = 'processing' ORDER BY started_at, id LIMIT ? OFFSET ?";
static const char SQL_BY_WORKER[] =
    SELECT_TASKS " AND state = 'processing' AND worker_id = ? ORDER BY started_at, id";

static const char SQL_SET_WORKER[] =
    "UPDATE celers_tasks SET worker_id = ? WHERE id = ? AND queue = ?";
static const char SQL_SET_ERROR[] =
    "UPDATE celers_tasks SET error_message = ? WHERE id = ? AND queue = ?";
static const char SQL_EXISTS[] = "SELECT COUNT(*) FROM celers_tasks WHERE id = ? AND queue = ?";

int ce_list_tasks(ce_conn *c, const char *queue, const char *state, const char *after_id,
                  long long limit, long long offset, ce_rows *out, ce_error *err)
{
    ce_param p[5];
    unsigned int n = 0;
    p[n++] = ce_pstr(queue);
    if (state) p[n++] = ce_pstr(state);
    if (after_id) p[n++] = ce_pstr(after_id);
    p[n++] = ce_pint(limit);
    p[n++] = ce_pint(offset);
    return ce_run(c, CE_REPEAT, SQL_LIST[(state ? 2 : 0) + (after_id ? 1 : 0)], p, n, out, NULL,
                  err);
}

int ce_get_statistics(ce_conn *c, const char *queue, ce_stats *s, ce_error *err)
{
    ce_param p[3] = {ce_pstr(queue), ce_pstr(queue), ce_pstr(queue)};
    ce_rows rows = {0};
    long long early = 0;
    memset(s, 0, sizeof *s);
    if (ce_run(c, CE_REPEAT, SQL_STATS, p, 3, &rows, NULL, err) < 0) return -1;
    for (unsigned int i = 0; i < rows.nrows; i++) {
        const char *k = CE_CELL(&rows, i, 0)->data;
        long long v = ce_cell_int(&rows, i, 1, 0);
        if (!k) continue;
        if (strcmp(k, "#early") == 0) {
            early = v;
            continue;
        }
        if (strcmp(k, "#dlq") == 0) {
            s->dlq = v;
            continue;
        }
        s->total += v; /* states written by others count in total only */
        if (strcmp(k, "pending") == 0)
            s->pending = v;
        else if (strcmp(k, "processing") == 0)
            s->processing = v;
        else if (strcmp(k, "completed") == 0)
            s->completed = v;
        else if (strcmp(k, "failed") == 0)
            s->failed = v;
        else if (strcmp(k, "cancelled") == 0)
            s->cancelled = v;
        else if (strcmp(k, "scheduled") == 0)
            s->scheduled += v;
    }
    s->pending -= early;
    s->scheduled += early;
    ce_rows_free(&rows);
    return 0;
}

int ce_count_by_task_name(ce_conn *c, const char *queue, const char *state, ce_rows *out,
                          ce_error *err)
{
    ce_param p[2] = {ce_pstr(queue), ce_pstr(state)};
    return ce_run(c, CE_REPEAT, state ? SQL_BY_NAME_STATE : SQL_BY_NAME_LIVE, p, state ? 2 : 1, out,
                  NULL, err);
}

int ce_list_scheduled(ce_conn *c, const char *queue, long long limit, long long offset,
                      ce_rows *out, ce_error *err)
{
    ce_param p[6] = {ce_pstr(queue),          ce_pint(limit + offset), ce_pstr(queue),
                     ce_pint(limit + offset), ce_pint(limit),          ce_pint(offset)};
    return ce_run(c, CE_REPEAT, SQL_SCHEDULED, p, 6, out, NULL, err);
}

int ce_count_scheduled(ce_conn *c, const char *queue, long long *n, ce_error *err)
{
    ce_param p[2] = {ce_pstr(queue), ce_pstr(queue)};
    return ce_run_count(c, CE_REPEAT, SQL_COUNT_SCHEDULED, p, 2, n, err);
}

int ce_list_processing(ce_conn *c, const char *queue, long long limit, long long offset,
                       ce_rows *out, ce_error *err)
{
    ce_param p[3] = {ce_pstr(queue), ce_pint(limit), ce_pint(offset)};
    return ce_run(c, CE_REPEAT, SQL_PROCESSING, p, 3, out, NULL, err);
}

int ce_tasks_by_worker(ce_conn *c, const char *queue, const char *worker_id, ce_rows *out,
                       ce_error *err)
{
    ce_param p[2] = {ce_pstr(queue), ce_pstr(worker_id)};
    return ce_run(c, CE_REPEAT, SQL_BY_WORKER, p, 2, out, NULL, err);
}

/* An UPDATE of one column; a row that already held the value counts as found. */
static int set_column(ce_conn *c, const char *sql, const char *queue, const char *id,
                      const char *value, int *found, ce_error *err)
{
    ce_param p[3] = {ce_pstr(value), ce_pstr(id), ce_pstr(queue)};
    unsigned long long affected = 0;
    long long n = 0;
    /* Setting a value twice is the same as once: safe to repeat. */
    if (ce_run(c, CE_ONCE, sql, p, 3, NULL, &affected, err) < 0) return -1;
    if (affected) {
        *found = 1;
        return 0;
    }
    if (ce_run_count(c, CE_REPEAT, SQL_EXISTS, p + 1, 2, &n, err) < 0) return -1;
    *found = n > 0;
    return 0;
}

int ce_set_worker_id(ce_conn *c, const char *queue, const char *id, const char *worker_id,
                     int *found, ce_error *err)
{
    return set_column(c, SQL_SET_WORKER, queue, id, worker_id, found, err);
}

int ce_set_error_message(ce_conn *c, const char *queue, const char *id, const char *message,
                         int *found, ce_error *err)
{
    return set_column(c, SQL_SET_ERROR, queue, id, message, found, err);
}
