/* The dead-letter queue of one queue: list, requeue, purge (admin.h). */
#include "admin.h"

/* The task's metadata as it was: without the _celers_origin key that sql/024 adds for the
 * Rust broker's requeue (and NULL when the task had none). */
#define DLQ_METADATA                                                                               \
    "IF(JSON_UNQUOTE(JSON_EXTRACT(metadata, '$._celers_origin.metadata_null')) = '1', NULL, "      \
    "JSON_REMOVE(metadata, '$._celers_origin'))"

// clang-format off
static const char SQL_LIST[] =
    "SELECT id, task_id, task_name, payload, payload_type, retry_count, max_retries, priority, "
    "queue, error_message, " CE_EPOCH("failed_at") ", " CE_EPOCH("created_at") ", " DLQ_METADATA ", "
    "timeout_seconds, idempotency_key, worker_id, " CE_EPOCH("started_at") " "
    "FROM celers_dead_letter_queue WHERE queue = ? ORDER BY failed_at, id LIMIT ? OFFSET ?";
// clang-format on

static const char SQL_LOCK[] =
    "SELECT id FROM celers_dead_letter_queue WHERE id = ? AND queue = ? FOR UPDATE";

/* The task as it was enqueued (timeout, idempotency key, creation time included), with its
 * attempts reset and due now. */
static const char SQL_REQUEUE[] =
    "INSERT INTO celers_tasks (id, task_name, payload, payload_type, priority, retry_count, "
    "max_retries, queue, metadata, timeout_seconds, idempotency_key, state, created_at, "
    "scheduled_at) "
    "SELECT ?, task_name, payload, payload_type, priority, 0, max_retries, queue, metadata, "
    "timeout_seconds, idempotency_key, 'pending', COALESCE(created_at, NOW(6)), NOW(6) "
    "FROM celers_dead_letter_queue WHERE id = ?";

static const char SQL_DELETE_ONE[] = "DELETE FROM celers_dead_letter_queue WHERE id = ?";
static const char SQL_PURGE_ONE[] =
    "DELETE FROM celers_dead_letter_queue WHERE id = ? AND queue = ?";
static const char SQL_PURGE_QUEUE[] =
    "DELETE FROM celers_dead_letter_queue WHERE queue = ? LIMIT " CE_CHUNK_ROWS_SQL;

int ce_list_dlq(ce_conn *c, const char *queue, long long limit, long long offset, ce_rows *out,
                ce_error *err)
{
    ce_param p[3] = {ce_pstr(queue), ce_pint(limit), ce_pint(offset)};
    return ce_run(c, CE_REPEAT, SQL_LIST, p, 3, out, NULL, err);
}

typedef struct {
    const char *queue, *dlq_id;
    const char *task_id;
    int found;
} requeue_ctx;

static int requeue_op(ce_conn *c, void *vctx, ce_error *err)
{
    requeue_ctx *x = vctx;
    ce_param p[2] = {ce_pstr(x->dlq_id), ce_pstr(x->queue)};
    ce_param ins[2] = {ce_pstr(x->task_id), ce_pstr(x->dlq_id)};
    ce_rows held = {0};
    if (ce_conn_begin(c, err) < 0) return -1;
    if (ce_exec(c, SQL_LOCK, p, 2, &held, NULL, err) < 0) return -1;
    x->found = held.nrows > 0;
    ce_rows_free(&held);
    if (!x->found) {
        ce_conn_rollback(c);
        return 0;
    }
    if (ce_exec(c, SQL_REQUEUE, ins, 2, NULL, NULL, err) < 0) return -1;
    if (ce_exec(c, SQL_DELETE_ONE, p, 1, NULL, NULL, err) < 0) return -1;
    return ce_conn_commit(c, err);
}

int ce_requeue_from_dlq(ce_conn *c, const char *queue, const char *dlq_id,
                        char id_out[CE_UUID_LEN + 1], int *found, ce_error *err)
{
    requeue_ctx x = {queue, dlq_id, id_out, 0};
    ce_uuid7(id_out);
    /* A transaction that had not reached COMMIT is safe to run again (same new id). */
    if (ce_conn_run(c, CE_REPEAT, requeue_op, &x, err) < 0) return -1;
    *found = x.found;
    return 0;
}

int ce_purge_dlq(ce_conn *c, const char *queue, const char *dlq_id, int *found, ce_error *err)
{
    ce_param p[2] = {ce_pstr(dlq_id), ce_pstr(queue)};
    unsigned long long affected = 0;
    if (ce_run(c, CE_ONCE, SQL_PURGE_ONE, p, 2, NULL, &affected, err) < 0) return -1;
    *found = affected > 0;
    return 0;
}

int ce_purge_all_dlq(ce_conn *c, const char *queue, unsigned long long *deleted, ce_error *err)
{
    ce_param p[1] = {ce_pstr(queue)};
    return ce_delete_chunked(c, SQL_PURGE_QUEUE, p, 1, deleted, err);
}
