/* Health, table sizes, OPTIMIZE/ANALYZE, archiving of completed tasks, purges (admin.h). */
#include "admin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TABLES                                                                                     \
    "celers_tasks, celers_dead_letter_queue, celers_task_history, celers_results, "                \
    "celers_queue_pauses, celers_recurring_runs, celers_workers, celers_migrations"

static const char SQL_VERSION[] = "SELECT VERSION()";
static const char SQL_SIZES[] =
    "SELECT table_name, table_rows, data_length, index_length FROM information_schema.tables "
    "WHERE table_schema = DATABASE() AND table_name LIKE 'celers\\_%' ORDER BY table_name";
static const char SQL_OPTIMIZE[] = "OPTIMIZE TABLE " TABLES;
static const char SQL_ANALYZE[] = "ANALYZE TABLE " TABLES;

// clang-format off
static const char SQL_OLD_COMPLETED[] =
    "SELECT id FROM celers_tasks "
    "WHERE queue = ? AND state = 'completed' AND completed_at < " CE_AGO("?") " "
    "LIMIT " CE_CHUNK_ROWS_SQL " FOR UPDATE SKIP LOCKED";
// clang-format on
#define TO_HISTORY                                                                                 \
    "INSERT INTO celers_task_history (task_id, task_name, state, worker_id, error_message, "       \
    "message, queue, priority, retry_count, task_created_at, started_at, completed_at, "           \
    "created_at) SELECT id, task_name, state, worker_id, error_message, error_message, queue, "    \
    "priority, retry_count, created_at, started_at, completed_at, NOW(6) FROM celers_tasks "       \
    "WHERE id IN "
#define DELETE_TASKS "DELETE FROM celers_tasks WHERE id IN "

static const char SQL_PURGE_TASKS[] = "DELETE FROM celers_tasks LIMIT " CE_CHUNK_ROWS_SQL;
static const char SQL_PURGE_DLQ[] = "DELETE FROM celers_dead_letter_queue LIMIT " CE_CHUNK_ROWS_SQL;
static const char SQL_PURGE_RESULTS[] = "DELETE FROM celers_results LIMIT " CE_CHUNK_ROWS_SQL;
static const char SQL_PURGE_STATE[] =
    "DELETE FROM celers_tasks WHERE queue = ? AND state = ? LIMIT " CE_CHUNK_ROWS_SQL;
static const char SQL_PURGE_NAME[] =
    "DELETE FROM celers_tasks WHERE queue = ? AND task_name = ? LIMIT " CE_CHUNK_ROWS_SQL;

/* ---- health --------------------------------------------------------------------------- */

typedef struct {
    ce_health *h;
} health_ctx;

static int version_op(ce_conn *c, void *vctx, ce_error *err)
{
    health_ctx *x = vctx;
    ce_rows rows = {0};
    double t0 = ce_monotonic();
    if (ce_exec(c, SQL_VERSION, NULL, 0, &rows, NULL, err) < 0) return -1;
    x->h->latency_ms = (ce_monotonic() - t0) * 1000.0;
    if (rows.nrows && CE_CELL(&rows, 0, 0)->data)
        snprintf(x->h->server_version, sizeof x->h->server_version, "%s",
                 CE_CELL(&rows, 0, 0)->data);
    ce_rows_free(&rows);
    return 0;
}

int ce_check_health(ce_conn *c, const char *queue, ce_health *h, ce_error *err)
{
    health_ctx x = {h};
    ce_stats s;
    memset(h, 0, sizeof *h);
    if (ce_conn_run(c, CE_REPEAT, version_op, &x, err) < 0) return -1;
    if (ce_get_statistics(c, queue, &s, err) < 0) return -1;
    h->pending = s.pending;
    h->processing = s.processing;
    h->dlq = s.dlq;
    return 0;
}

int ce_table_sizes(ce_conn *c, ce_rows *out, ce_error *err)
{
    return ce_run(c, CE_REPEAT, SQL_SIZES, NULL, 0, out, NULL, err);
}

int ce_optimize_tables(ce_conn *c, int analyze, ce_rows *out, ce_error *err)
{
    /* Both are safe to run again after a lost link. */
    return ce_run(c, CE_REPEAT, analyze ? SQL_ANALYZE : SQL_OPTIMIZE, NULL, 0, out, NULL, err);
}

/* ---- archiving ------------------------------------------------------------------------ */

typedef struct {
    const char *queue;
    double older_than;
    char *insert_sql, *delete_sql; /* "... IN (?,...,?)" with CE_CHUNK_ROWS placeholders */
    ce_param *ids;                 /* CE_CHUNK_ROWS */
    unsigned long long total;
} archive_ctx;

static char *with_in_list(const char *prefix)
{
    size_t len = strlen(prefix) + 2 * CE_CHUNK_ROWS + 3;
    char *sql = malloc(len), *p;
    if (!sql) return NULL;
    p = sql + sprintf(sql, "%s(", prefix);
    for (int i = 0; i < CE_CHUNK_ROWS; i++)
        p += sprintf(p, i ? ",?" : "?");
    strcpy(p, ")");
    return sql;
}

static int archive_op(ce_conn *c, void *vctx, ce_error *err)
{
    archive_ctx *x = vctx;
    ce_param p[2] = {ce_pstr(x->queue), ce_pdouble(x->older_than)};
    /* total is kept across a repeat: the chunks before a lost link committed. */
    for (;;) {
        ce_rows rows = {0};
        unsigned int n;
        int rc;
        if (ce_conn_begin(c, err) < 0) return -1;
        if (ce_exec(c, SQL_OLD_COMPLETED, p, 2, &rows, NULL, err) < 0) return -1;
        n = rows.nrows;
        if (n == 0) {
            ce_rows_free(&rows);
            ce_conn_rollback(c);
            return 0;
        }
        /* One statement text for every chunk: short chunks repeat their last id. */
        for (unsigned int i = 0; i < CE_CHUNK_ROWS; i++)
            x->ids[i] = ce_pstr(CE_CELL(&rows, i < n ? i : n - 1, 0)->data);
        rc = ce_exec(c, x->insert_sql, x->ids, CE_CHUNK_ROWS, NULL, NULL, err);
        if (rc == 0) rc = ce_exec(c, x->delete_sql, x->ids, CE_CHUNK_ROWS, NULL, NULL, err);
        if (rc == 0) rc = ce_conn_commit(c, err);
        ce_rows_free(&rows);
        if (rc < 0) return -1;
        x->total += n;
        if (n < CE_CHUNK_ROWS) return 0;
    }
}

int ce_archive_completed(ce_conn *c, const char *queue, double older_than,
                         unsigned long long *archived, ce_error *err)
{
    archive_ctx x = {queue,
                     older_than,
                     with_in_list(TO_HISTORY),
                     with_in_list(DELETE_TASKS),
                     malloc(sizeof(ce_param) * CE_CHUNK_ROWS),
                     0};
    int rc;
    if (!x.insert_sql || !x.delete_sql || !x.ids) {
        rc = ce_error_set(err, CE_ENOMEM, "out of memory");
    } else {
        rc = ce_conn_run(c, CE_REPEAT, archive_op, &x, err);
    }
    free(x.insert_sql);
    free(x.delete_sql);
    free(x.ids);
    *archived = x.total;
    return rc;
}

/* ---- purges --------------------------------------------------------------------------- */

int ce_purge_all(ce_conn *c, unsigned long long *tasks, unsigned long long *dlq,
                 unsigned long long *results, ce_error *err)
{
    *tasks = *dlq = *results = 0;
    if (ce_delete_chunked(c, SQL_PURGE_TASKS, NULL, 0, tasks, err) < 0) return -1;
    if (ce_delete_chunked(c, SQL_PURGE_DLQ, NULL, 0, dlq, err) < 0) return -1;
    return ce_delete_chunked(c, SQL_PURGE_RESULTS, NULL, 0, results, err);
}

int ce_purge_state(ce_conn *c, const char *queue, const char *state, unsigned long long *deleted,
                   ce_error *err)
{
    ce_param p[2] = {ce_pstr(queue), ce_pstr(state)};
    return ce_delete_chunked(c, SQL_PURGE_STATE, p, 2, deleted, err);
}

int ce_purge_task_name(ce_conn *c, const char *queue, const char *task_name,
                       unsigned long long *deleted, ce_error *err)
{
    ce_param p[2] = {ce_pstr(queue), ce_pstr(task_name)};
    return ce_delete_chunked(c, SQL_PURGE_NAME, p, 2, deleted, err);
}
