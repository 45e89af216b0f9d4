/* Lua binding of health and upkeep (admin.h): check_health, table sizes, OPTIMIZE/ANALYZE,
 * archiving, stuck-task recovery and purges. */
#include <string.h>

#include "admin.h"
#include "auxiliar.h"
#include "lbroker.h"
#include "lmethods.h"
#include "lrows.h"
#include "task.h"

static const char *const STATES[] = {"scheduled", "pending",   "processing", "completed",
                                     "failed",    "cancelled", NULL};

/* Never raises on a failing server: healthy=false and the error instead. */
static int check_health(lua_State *L)
{
    const char *fn = "check_health";
    lbroker *b = lbroker_check(L, fn);
    ce_health h = {0};
    ce_error err;
    int rc = ce_check_health(lbroker_conn(L, b, fn), b->queue, &h, &err);
    lua_createtable(L, 0, 7);
    lua_pushboolean(L, rc == 0);
    lua_setfield(L, -2, "healthy");
    if (rc < 0) {
        aux_push_error(L, &err); /* nil, err */
        lua_setfield(L, -3, "error");
        lua_pop(L, 1);
        return 1;
    }
    lua_pushstring(L, h.server_version);
    lua_setfield(L, -2, "server_version");
    lua_pushnumber(L, h.latency_ms);
    lua_setfield(L, -2, "latency_ms");
    lrows_set_count(L, h.pending, "pending");
    lrows_set_count(L, h.processing, "processing");
    lrows_set_count(L, h.dlq, "dlq");
    return 1;
}

static int get_table_sizes(lua_State *L)
{
    const char *fn = "get_table_sizes";
    lbroker *b = lbroker_check(L, fn);
    ce_rows rows = {0};
    ce_error err;
    if (ce_table_sizes(lbroker_conn(L, b, fn), &rows, &err) < 0) return aux_push_error(L, &err);
    lua_createtable(L, 0, (int)rows.nrows);
    for (unsigned int i = 0; i < rows.nrows; i++) {
        lua_createtable(L, 0, 3);
        lua_pushinteger(L, (lua_Integer)ce_cell_int(&rows, i, 1, 0));
        lua_setfield(L, -2, "rows");
        lua_pushinteger(L, (lua_Integer)ce_cell_int(&rows, i, 2, 0));
        lua_setfield(L, -2, "data_bytes");
        lua_pushinteger(L, (lua_Integer)ce_cell_int(&rows, i, 3, 0));
        lua_setfield(L, -2, "index_bytes");
        lua_setfield(L, -2, CE_CELL(&rows, i, 0)->data);
    }
    ce_rows_free(&rows);
    return 1;
}

static int optimize(lua_State *L, const char *fn, int analyze)
{
    lbroker *b = lbroker_check(L, fn);
    ce_rows rows = {0};
    ce_error err;
    if (ce_optimize_tables(lbroker_conn(L, b, fn), analyze, &rows, &err) < 0)
        return aux_push_error(L, &err);
    lua_createtable(L, (int)rows.nrows, 0);
    for (unsigned int i = 0; i < rows.nrows && rows.ncols >= 4; i++) {
        lua_createtable(L, 0, 4);
        lrows_set_string(L, CE_CELL(&rows, i, 0), "table");
        lrows_set_string(L, CE_CELL(&rows, i, 1), "op");
        lrows_set_string(L, CE_CELL(&rows, i, 2), "msg_type");
        lrows_set_string(L, CE_CELL(&rows, i, 3), "msg_text");
        lua_rawseti(L, -2, (int)i + 1);
    }
    ce_rows_free(&rows);
    return 1;
}

static int optimize_tables(lua_State *L)
{
    return optimize(L, "optimize_tables", 0);
}

static int analyze_tables(lua_State *L)
{
    return optimize(L, "analyze_tables", 1);
}

static int archive_completed_tasks(lua_State *L)
{
    const char *fn = "archive_completed_tasks";
    lbroker *b = lbroker_check(L, fn);
    double age = aux_check_seconds(L, 2, fn, "older_than_s");
    unsigned long long n = 0;
    ce_error err;
    int rc = ce_archive_completed(lbroker_conn(L, b, fn), b->queue, age, &n, &err);
    return aux_push_count(L, rc, n, &err);
}

static int recover_stuck_tasks(lua_State *L)
{
    const char *fn = "recover_stuck_tasks";
    lbroker *b = lbroker_check(L, fn);
    double threshold = aux_check_seconds(L, 2, fn, "threshold_s");
    unsigned long long requeued = 0, dead = 0;
    ce_error err;
    if (ce_recover_expired(lbroker_conn(L, b, fn), b->queue, threshold, &requeued, &dead, &err) < 0)
        return aux_push_error(L, &err);
    lbroker_count(L, "dead_lettered", (lua_Number)dead);
    lua_pushinteger(L, (lua_Integer)requeued);
    lua_pushinteger(L, (lua_Integer)dead);
    return 2;
}

static int purge_all(lua_State *L)
{
    const char *fn = "purge_all";
    lbroker *b = lbroker_check(L, fn);
    unsigned long long tasks = 0, dlq = 0, results = 0;
    ce_error err;
    if (ce_purge_all(lbroker_conn(L, b, fn), &tasks, &dlq, &results, &err) < 0)
        return aux_push_error(L, &err);
    lua_pushinteger(L, (lua_Integer)tasks);
    lua_pushinteger(L, (lua_Integer)dlq);
    lua_pushinteger(L, (lua_Integer)results);
    return 3;
}

static int purge_state(lua_State *L, lbroker *b, const char *fn, const char *state)
{
    unsigned long long n = 0;
    ce_error err;
    int rc = ce_purge_state(lbroker_conn(L, b, fn), b->queue, state, &n, &err);
    return aux_push_count(L, rc, n, &err);
}

static int purge_by_state(lua_State *L)
{
    const char *fn = "purge_by_state";
    lbroker *b = lbroker_check(L, fn);
    const char *state = aux_check_string(L, 2, fn, "state", NULL);
    int known = 0;
    for (int i = 0; STATES[i]; i++)
        if (strcmp(STATES[i], state) == 0) known = 1;
    if (!known)
        luaL_error(L,
                   "celers: %s: 'state' must be one of scheduled, pending, processing, "
                   "completed, failed, cancelled (got '%s')",
                   fn, state);
    return purge_state(L, b, fn, state);
}

static int purge_completed(lua_State *L)
{
    return purge_state(L, lbroker_check(L, "purge_completed"), "purge_completed", "completed");
}

static int purge_failed(lua_State *L)
{
    return purge_state(L, lbroker_check(L, "purge_failed"), "purge_failed", "failed");
}

static int purge_cancelled(lua_State *L)
{
    return purge_state(L, lbroker_check(L, "purge_cancelled"), "purge_cancelled", "cancelled");
}

static int purge_by_task_name(lua_State *L)
{
    const char *fn = "purge_by_task_name";
    lbroker *b = lbroker_check(L, fn);
    const char *name = aux_check_name(L, 2, fn, "task_name");
    unsigned long long n = 0;
    ce_error err;
    int rc = ce_purge_task_name(lbroker_conn(L, b, fn), b->queue, name, &n, &err);
    return aux_push_count(L, rc, n, &err);
}

static const luaL_Reg methods[] = {
    {"check_health", check_health},
    {"get_table_sizes", get_table_sizes},
    {"optimize_tables", optimize_tables},
    {"analyze_tables", analyze_tables},
    {"archive_completed_tasks", archive_completed_tasks},
    {"recover_stuck_tasks", recover_stuck_tasks},
    {"purge_all", purge_all},
    {"purge_by_state", purge_by_state},
    {"purge_completed", purge_completed},
    {"purge_failed", purge_failed},
    {"purge_cancelled", purge_cancelled},
    {"purge_by_task_name", purge_by_task_name},
    {NULL, NULL},
};

void lupkeep_open(lua_State *L)
{
    luaL_setfuncs(L, methods, 0);
}
