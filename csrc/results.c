/* Task results (admin.h): one row per task id, upserted; expired rows are never returned. */
#include "admin.h"

// clang-format off
static const char SQL_STORE[] =
    "INSERT INTO celers_results (id, task_id, task_name, result, result_type, error_message, "
    "state, queue, created_at, completed_at, expires_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, NOW(6), IF(?, NOW(6), NULL), " CE_FROM_NOW("?") ") "
    /* the new values bound again: MySQL 8 deprecates VALUES() here, MariaDB lacks the alias */
    "ON DUPLICATE KEY UPDATE task_name = ?, result = ?, result_type = ?, error_message = ?, "
    "state = ?, queue = ?, completed_at = IF(?, NOW(6), NULL), expires_at = " CE_FROM_NOW("?");

static const char SQL_GET[] =
    "SELECT task_id, task_name, state, result, result_type, error_message, "
    CE_EPOCH("created_at") ", " CE_EPOCH("completed_at") ", " CE_EPOCH("expires_at") ", queue, id "
    "FROM celers_results "
    "WHERE task_id = ? AND queue = ? AND (expires_at IS NULL OR expires_at > NOW(6))";

static const char SQL_DELETE[] = "DELETE FROM celers_results WHERE task_id = ? AND queue = ?";

static const char SQL_ARCHIVE_COMPLETED[] =
    "DELETE FROM celers_results WHERE queue = ? AND completed_at < " CE_AGO("?") " "
    "LIMIT " CE_CHUNK_ROWS_SQL;
static const char SQL_ARCHIVE_EXPIRED[] =
    "DELETE FROM celers_results WHERE queue = ? AND expires_at <= NOW(6) LIMIT " CE_CHUNK_ROWS_SQL;
// clang-format on

int ce_store_result(ce_conn *c, const char *queue, const char *task_id, const ce_result_spec *r,
                    ce_error *err)
{
    char id[CE_UUID_LEN + 1];
    ce_param p[18];
    ce_uuid7(id);
    p[0] = ce_pstr(id);
    p[1] = ce_pstr(task_id);
    p[2] = ce_pstr(r->task_name ? r->task_name : "");
    p[3] = ce_ptext(r->result, r->result_len);
    p[4] = ce_pstr(r->result_type ? r->result_type : "raw");
    p[5] = ce_pstr(r->error);
    p[6] = ce_pstr(r->status);
    p[7] = ce_pstr(queue);
    p[8] = ce_pint(r->status && r->status[0] != 'p'); /* success/failure complete it */
    p[9] = r->has_ttl ? ce_pdouble(r->ttl) : ce_pnull();
    for (int i = 2; i < 10; i++)
        p[8 + i] = p[i];
    return ce_run(c, CE_ONCE, SQL_STORE, p, 18, NULL, NULL, err);
}

int ce_get_result(ce_conn *c, const char *queue, const char *task_id, ce_rows *out, ce_error *err)
{
    ce_param p[2] = {ce_pstr(task_id), ce_pstr(queue)};
    return ce_run(c, CE_REPEAT, SQL_GET, p, 2, out, NULL, err);
}

int ce_delete_result(ce_conn *c, const char *queue, const char *task_id, int *found, ce_error *err)
{
    ce_param p[2] = {ce_pstr(task_id), ce_pstr(queue)};
    unsigned long long affected = 0;
    if (ce_run(c, CE_ONCE, SQL_DELETE, p, 2, NULL, &affected, err) < 0) return -1;
    *found = affected > 0;
    return 0;
}

int ce_archive_results(ce_conn *c, const char *queue, double older_than,
                       unsigned long long *deleted, ce_error *err)
{
    ce_param p[2] = {ce_pstr(queue), ce_pdouble(older_than)};
    unsigned long long done = 0, expired = 0;
    int rc = ce_delete_chunked(c, SQL_ARCHIVE_COMPLETED, p, 2, &done, err);
    if (rc == 0) rc = ce_delete_chunked(c, SQL_ARCHIVE_EXPIRED, p, 1, &expired, err);
    *deleted = done + expired;
    return rc;
}
