/* Lua binding of inspection, results and the dead-letter queue (admin.h) on the broker
 * userdata; health and upkeep are in lupkeep.c. Misuse raises naming the argument; runtime
 * failures return nil, err. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "auxiliar.h"
#include "lbroker.h"
#include "lmethods.h"
#include "lrows.h"
#include "task.h"

#define DEFAULT_LIMIT 100

/* ---- helpers ------------------------------------------------------------------------ */

/* limit= and offset= of an optional options table at idx, which may hold only allowed. */
static void read_page(lua_State *L, int idx, const char *fn, const char *const *allowed,
                      long long *limit, long long *offset)
{
    *limit = DEFAULT_LIMIT;
    *offset = 0;
    if (!aux_opt_table(L, idx, fn, "opts")) return;
    aux_check_options(L, idx, fn, allowed);
    *limit = aux_field_integer(L, idx, "limit", fn, DEFAULT_LIMIT, 0, LLONG_MAX);
    *offset = aux_field_integer(L, idx, "offset", fn, 0, 0, LLONG_MAX);
}

/* Push the list of task rows (or nil, err) and free them. */
static int push_tasks(lua_State *L, int rc, ce_rows *rows, const ce_error *err)
{
    if (rc < 0) return aux_push_error(L, err);
    lua_createtable(L, (int)rows->nrows, 0);
    for (unsigned int i = 0; i < rows->nrows; i++) {
        lrows_push_task(L, rows, i);
        lua_rawseti(L, -2, (int)i + 1);
    }
    ce_rows_free(rows);
    return 1;
}

static int push_found(lua_State *L, int rc, int found, const ce_error *err)
{
    if (rc < 0) return aux_push_error(L, err);
    lua_pushboolean(L, found);
    return 1;
}

/* ---- inspection ----------------------------------------------------------------------- */

static int list_tasks(lua_State *L)
{
    static const char *const opts[] = {"state", "limit", "offset", "after_id", NULL};
    const char *fn = "list_tasks", *state = NULL, *after = NULL;
    lbroker *b = lbroker_check(L, fn);
    long long limit, offset;
    ce_rows rows = {0};
    ce_error err;
    int rc;
    read_page(L, 2, fn, opts, &limit, &offset);
    if (!lua_isnoneornil(L, 2)) {
        state = aux_field_string(L, 2, "state", fn, NULL);
        after = aux_field_string(L, 2, "after_id", fn, NULL);
    }
    rc = ce_list_tasks(lbroker_conn(L, b, fn), b->queue, state, after, limit, offset, &rows, &err);
    return push_tasks(L, rc, &rows, &err);
}

static int get_statistics(lua_State *L)
{
    const char *fn = "get_statistics";
    lbroker *b = lbroker_check(L, fn);
    ce_stats s;
    ce_error err;
    if (ce_get_statistics(lbroker_conn(L, b, fn), b->queue, &s, &err) < 0)
        return aux_push_error(L, &err);
    lua_createtable(L, 0, 8);
    lrows_set_count(L, s.pending, "pending");
    lrows_set_count(L, s.processing, "processing");
    lrows_set_count(L, s.completed, "completed");
    lrows_set_count(L, s.failed, "failed");
    lrows_set_count(L, s.cancelled, "cancelled");
    lrows_set_count(L, s.scheduled, "scheduled");
    lrows_set_count(L, s.dlq, "dlq");
    lrows_set_count(L, s.total, "total");
    return 1;
}

static int count_by_task_name(lua_State *L)
{
    const char *fn = "count_by_task_name";
    lbroker *b = lbroker_check(L, fn);
    const char *state = aux_opt_string(L, 2, fn, "state");
    ce_rows rows = {0};
    ce_error err;
    if (ce_count_by_task_name(lbroker_conn(L, b, fn), b->queue, state, &rows, &err) < 0)
        return aux_push_error(L, &err);
    lua_createtable(L, 0, (int)rows.nrows);
    for (unsigned int i = 0; i < rows.nrows; i++)
        lrows_set_integer(L, CE_CELL(&rows, i, 1), CE_CELL(&rows, i, 0)->data);
    ce_rows_free(&rows);
    return 1;
}

static const char *const PAGE_OPTIONS[] = {"limit", "offset", NULL};

static int list_scheduled_tasks(lua_State *L)
{
    const char *fn = "list_scheduled_tasks";
    lbroker *b = lbroker_check(L, fn);
    long long limit, offset;
    ce_rows rows = {0};
    ce_error err;
    int rc;
    read_page(L, 2, fn, PAGE_OPTIONS, &limit, &offset);
    rc = ce_list_scheduled(lbroker_conn(L, b, fn), b->queue, limit, offset, &rows, &err);
    return push_tasks(L, rc, &rows, &err);
}

static int count_scheduled_tasks(lua_State *L)
{
    const char *fn = "count_scheduled_tasks";
    lbroker *b = lbroker_check(L, fn);
    long long n = 0;
    ce_error err;
    int rc = ce_count_scheduled(lbroker_conn(L, b, fn), b->queue, &n, &err);
    return aux_push_count(L, rc, (unsigned long long)n, &err);
}

static int get_processing_tasks(lua_State *L)
{
    const char *fn = "get_processing_tasks";
    lbroker *b = lbroker_check(L, fn);
    long long limit, offset;
    ce_rows rows = {0};
    ce_error err;
    int rc;
    read_page(L, 2, fn, PAGE_OPTIONS, &limit, &offset);
    rc = ce_list_processing(lbroker_conn(L, b, fn), b->queue, limit, offset, &rows, &err);
    return push_tasks(L, rc, &rows, &err);
}

static int get_tasks_by_worker(lua_State *L)
{
    const char *fn = "get_tasks_by_worker";
    lbroker *b = lbroker_check(L, fn);
    const char *worker = aux_check_string(L, 2, fn, "worker_id", NULL);
    ce_rows rows = {0};
    ce_error err;
    int rc = ce_tasks_by_worker(lbroker_conn(L, b, fn), b->queue, worker, &rows, &err);
    return push_tasks(L, rc, &rows, &err);
}

static int set_worker_id(lua_State *L)
{
    const char *fn = "set_worker_id";
    lbroker *b = lbroker_check(L, fn);
    const char *id = aux_check_string(L, 2, fn, "id", NULL);
    const char *worker = aux_opt_string(L, 3, fn, "worker_id");
    int found = 0;
    ce_error err;
    int rc = ce_set_worker_id(lbroker_conn(L, b, fn), b->queue, id, worker, &found, &err);
    return push_found(L, rc, found, &err);
}

static int update_error_message(lua_State *L)
{
    const char *fn = "update_error_message";
    lbroker *b = lbroker_check(L, fn);
    const char *id = aux_check_string(L, 2, fn, "id", NULL);
    const char *msg = aux_opt_string(L, 3, fn, "message");
    int found = 0;
    ce_error err;
    int rc = ce_set_error_message(lbroker_conn(L, b, fn), b->queue, id, msg, &found, &err);
    return push_found(L, rc, found, &err);
}

/* ---- results -------------------------------------------------------------------------- */

static int store_result(lua_State *L)
{
    static const char *const opts[] = {"task_name", "status", "result", "error", "ttl", NULL};
    const char *fn = "store_result";
    lbroker *b = lbroker_check(L, fn);
    const char *task_id = aux_check_name(L, 2, fn, "task_id");
    ce_result_spec r;
    size_t len = 0;
    int t;
    ce_error err;
    memset(&r, 0, sizeof r);
    lua_settop(L, 3);
    if (!lua_istable(L, 3)) aux_arg_error(L, fn, "result", "a table {status=, result=, ...}", 3);
    aux_check_options(L, 3, fn, opts);
    r.task_name = aux_field_string(L, 3, "task_name", fn, "");
    r.status = aux_field_string(L, 3, "status", fn, "success");
    if (strcmp(r.status, "success") != 0 && strcmp(r.status, "failure") != 0 &&
        strcmp(r.status, "pending") != 0)
        luaL_error(L, "celers: %s: 'status' must be \"success\", \"failure\" or \"pending\"", fn);
    r.error = aux_field_string(L, 3, "error", fn, NULL);
    r.ttl = aux_field_within(L, 3, "ttl", fn, 0, AUX_MAX_SECONDS, 1, &r.has_ttl);
    lua_getfield(L, 3, "result");
    t = lua_type(L, 4);
    if (t == LUA_TSTRING) {
        r.result = aux_check_bytes(L, 4, fn, "result", &len);
        r.result_type = "raw";
    } else if (t == LUA_TTABLE || t == LUA_TNUMBER || t == LUA_TBOOLEAN) {
        r.result = lrows_encode_json(L, 4, fn, "result", &len); /* anchored at 5 */
        r.result_type = "json";
    } else if (t != LUA_TNIL) {
        aux_arg_error(L, fn, "result", "a string, table, number or boolean", 4);
    }
    r.result_len = (unsigned long)len;
    if (ce_store_result(lbroker_conn(L, b, fn), b->queue, task_id, &r, &err) < 0)
        return aux_push_error(L, &err);
    lua_pushboolean(L, 1);
    return 1;
}

static int get_result(lua_State *L)
{
    const char *fn = "get_result";
    lbroker *b = lbroker_check(L, fn);
    const char *task_id = aux_check_string(L, 2, fn, "task_id", NULL);
    ce_rows rows = {0};
    ce_error err;
    const ce_value *res, *type;
    if (ce_get_result(lbroker_conn(L, b, fn), b->queue, task_id, &rows, &err) < 0)
        return aux_push_error(L, &err);
    if (rows.nrows == 0) {
        ce_rows_free(&rows);
        lua_pushnil(L);
        return 1;
    }
    res = CE_CELL(&rows, 0, CE_R_RESULT);
    type = CE_CELL(&rows, 0, CE_R_RESULT_TYPE);
    lua_createtable(L, 0, 12);
    lrows_set_string(L, CE_CELL(&rows, 0, CE_R_TASK_ID), "task_id");
    lrows_set_string(L, CE_CELL(&rows, 0, CE_R_TASK_NAME), "task_name");
    lrows_set_string(L, CE_CELL(&rows, 0, CE_R_STATUS), "status");
    if (res->data) {
        if (type->data && strcmp(type->data, "json") == 0)
            lrows_push_decoded(L, res->data, res->len);
        else
            lua_pushlstring(L, res->data, res->len);
        lua_setfield(L, -2, "result");
    }
    lrows_set_string(L, res, "body");
    lrows_set_string(L, type, "result_type");
    lrows_set_string(L, CE_CELL(&rows, 0, CE_R_ERROR), "error");
    lrows_set_number(L, CE_CELL(&rows, 0, CE_R_CREATED_AT), "created_at");
    lrows_set_number(L, CE_CELL(&rows, 0, CE_R_COMPLETED_AT), "completed_at");
    lrows_set_number(L, CE_CELL(&rows, 0, CE_R_EXPIRES_AT), "expires_at");
    lrows_set_string(L, CE_CELL(&rows, 0, CE_R_QUEUE), "queue");
    lrows_set_string(L, CE_CELL(&rows, 0, CE_R_ID), "id");
    ce_rows_free(&rows);
    return 1;
}

static int delete_result(lua_State *L)
{
    const char *fn = "delete_result";
    lbroker *b = lbroker_check(L, fn);
    const char *task_id = aux_check_string(L, 2, fn, "task_id", NULL);
    int found = 0;
    ce_error err;
    int rc = ce_delete_result(lbroker_conn(L, b, fn), b->queue, task_id, &found, &err);
    return push_found(L, rc, found, &err);
}

static int archive_results(lua_State *L)
{
    const char *fn = "archive_results";
    lbroker *b = lbroker_check(L, fn);
    double age = aux_check_seconds(L, 2, fn, "older_than_s");
    unsigned long long n = 0;
    ce_error err;
    int rc = ce_archive_results(lbroker_conn(L, b, fn), b->queue, age, &n, &err);
    return aux_push_count(L, rc, n, &err);
}

/* ---- dead-letter queue ---------------------------------------------------------------- */

static void push_dlq_row(lua_State *L, const ce_rows *rows, unsigned int r)
{
    lua_createtable(L, 0, 19);
    lrows_set_string(L, CE_CELL(rows, r, CE_D_ID), "id");
    lrows_set_string(L, CE_CELL(rows, r, CE_D_TASK_ID), "task_id");
    lrows_set_string(L, CE_CELL(rows, r, CE_D_NAME), "name");
    lrows_set_payload(L, CE_CELL(rows, r, CE_D_PAYLOAD), CE_CELL(rows, r, CE_D_PAYLOAD_TYPE));
    lrows_set_integer(L, CE_CELL(rows, r, CE_D_RETRY_COUNT), "retry_count");
    lrows_set_integer(L, CE_CELL(rows, r, CE_D_MAX_RETRIES), "max_retries");
    lrows_set_integer(L, CE_CELL(rows, r, CE_D_PRIORITY), "priority");
    lrows_set_string(L, CE_CELL(rows, r, CE_D_QUEUE), "queue");
    lrows_set_string(L, CE_CELL(rows, r, CE_D_ERROR), "error");
    lrows_set_number(L, CE_CELL(rows, r, CE_D_FAILED_AT), "failed_at");
    lrows_set_number(L, CE_CELL(rows, r, CE_D_CREATED_AT), "created_at");
    lrows_set_json(L, CE_CELL(rows, r, CE_D_METADATA), "metadata");
    lrows_set_number(L, CE_CELL(rows, r, CE_D_TIMEOUT), "timeout");
    lrows_set_string(L, CE_CELL(rows, r, CE_D_IDEMPOTENCY_KEY), "idempotency_key");
    lrows_set_string(L, CE_CELL(rows, r, CE_D_WORKER_ID), "worker_id");
    lrows_set_number(L, CE_CELL(rows, r, CE_D_STARTED_AT), "started_at");
}

static int list_dlq(lua_State *L)
{
    const char *fn = "list_dlq";
    lbroker *b = lbroker_check(L, fn);
    long long limit, offset;
    ce_rows rows = {0};
    ce_error err;
    read_page(L, 2, fn, PAGE_OPTIONS, &limit, &offset);
    if (ce_list_dlq(lbroker_conn(L, b, fn), b->queue, limit, offset, &rows, &err) < 0)
        return aux_push_error(L, &err);
    lua_createtable(L, (int)rows.nrows, 0);
    for (unsigned int i = 0; i < rows.nrows; i++) {
        push_dlq_row(L, &rows, i);
        lua_rawseti(L, -2, (int)i + 1);
    }
    ce_rows_free(&rows);
    return 1;
}

static int requeue_from_dlq(lua_State *L)
{
    const char *fn = "requeue_from_dlq";
    lbroker *b = lbroker_check(L, fn);
    const char *dlq_id = aux_check_string(L, 2, fn, "dlq_id", NULL);
    char id[CE_UUID_LEN + 1];
    int found = 0;
    ce_error err;
    if (ce_requeue_from_dlq(lbroker_conn(L, b, fn), b->queue, dlq_id, id, &found, &err) < 0)
        return aux_push_error(L, &err);
    if (!found) {
        lua_pushboolean(L, 0);
        return 1;
    }
    lua_pushstring(L, id);
    return 1;
}

static int purge_dlq(lua_State *L)
{
    const char *fn = "purge_dlq";
    lbroker *b = lbroker_check(L, fn);
    const char *dlq_id = aux_check_string(L, 2, fn, "dlq_id", NULL);
    int found = 0;
    ce_error err;
    int rc = ce_purge_dlq(lbroker_conn(L, b, fn), b->queue, dlq_id, &found, &err);
    return push_found(L, rc, found, &err);
}

static int purge_all_dlq(lua_State *L)
{
    const char *fn = "purge_all_dlq";
    lbroker *b = lbroker_check(L, fn);
    unsigned long long n = 0;
    ce_error err;
    int rc = ce_purge_all_dlq(lbroker_conn(L, b, fn), b->queue, &n, &err);
    return aux_push_count(L, rc, n, &err);
}

static const luaL_Reg methods[] = {
    {"list_tasks", list_tasks},
    {"get_statistics", get_statistics},
    {"count_by_task_name", count_by_task_name},
    {"list_scheduled_tasks", list_scheduled_tasks},
    {"count_scheduled_tasks", count_scheduled_tasks},
    {"get_processing_tasks", get_processing_tasks},
    {"get_tasks_by_worker", get_tasks_by_worker},
    {"set_worker_id", set_worker_id},
    {"update_error_message", update_error_message},
    {"store_result", store_result},
    {"get_result", get_result},
    {"delete_result", delete_result},
    {"archive_results", archive_results},
    {"list_dlq", list_dlq},
    {"requeue_from_dlq", requeue_from_dlq},
    {"purge_dlq", purge_dlq},
    {"purge_all_dlq", purge_all_dlq},
    {NULL, NULL},
};

void ladmin_open(lua_State *L)
{
    luaL_setfuncs(L, methods, 0);
}
