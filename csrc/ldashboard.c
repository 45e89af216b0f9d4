/* Lua binding of the dashboard's reads (dashboard.h): list_queues, throughput,
 * list_recurring, task_history, retry_now, connection_id. */
#include "auxiliar.h"
#include "dashboard.h"
#include "lbroker.h"
#include "lmethods.h"
#include "lrows.h"

/* list_queues() -> list of {queue=, paused=} over the whole database, by name. */
static int list_queues(lua_State *L)
{
    const char *fn = "list_queues";
    lbroker *b = lbroker_check(L, fn);
    ce_rows rows = {0};
    ce_error err;
    if (ce_dash_queues(lbroker_conn(L, b, fn), &rows, &err) < 0) return aux_push_error(L, &err);
    lua_createtable(L, (int)rows.nrows, 0);
    for (unsigned int i = 0; i < rows.nrows; i++) {
        lua_createtable(L, 0, 2);
        lrows_set_string(L, CE_CELL(&rows, i, 0), "queue");
        lua_pushboolean(L, ce_cell_int(&rows, i, 1, 0) != 0);
        lua_setfield(L, -2, "paused");
        lua_rawseti(L, -2, (int)i + 1);
    }
    ce_rows_free(&rows);
    return 1;
}

/* throughput(minutes) -> list of {kind=, minute=, count=}: kind "enqueued", "completed" or
 * "failed", minute in Unix seconds, over the last `minutes` (1..1440, default 60); a kind and
 * minute may appear twice (live and archived rows), callers add them up. */
static int throughput(lua_State *L)
{
    const char *fn = "throughput";
    lbroker *b = lbroker_check(L, fn);
    long long minutes =
        lua_isnoneornil(L, 2) ? 60 : aux_check_integer(L, 2, fn, "minutes", 1, 1440);
    ce_rows rows = {0};
    ce_error err;
    if (ce_dash_throughput(lbroker_conn(L, b, fn), b->queue, minutes, &rows, &err) < 0)
        return aux_push_error(L, &err);
    lua_createtable(L, (int)rows.nrows, 0);
    for (unsigned int i = 0; i < rows.nrows; i++) {
        lua_createtable(L, 0, 3);
        lrows_set_string(L, CE_CELL(&rows, i, 0), "kind");
        lrows_set_integer(L, CE_CELL(&rows, i, 1), "minute");
        lrows_set_integer(L, CE_CELL(&rows, i, 2), "count");
        lua_rawseti(L, -2, (int)i + 1);
    }
    ce_rows_free(&rows);
    return 1;
}

/* list_recurring() -> list of {schedule=, last_run=, previous_run=, runs=, task_id=} of this
 * queue (previous_run absent after a single run). */
static int list_recurring(lua_State *L)
{
    const char *fn = "list_recurring";
    lbroker *b = lbroker_check(L, fn);
    ce_rows rows = {0};
    ce_error err;
    if (ce_dash_recurring(lbroker_conn(L, b, fn), b->queue, &rows, &err) < 0)
        return aux_push_error(L, &err);
    lua_createtable(L, (int)rows.nrows, 0);
    for (unsigned int i = 0; i < rows.nrows; i++) {
        lua_createtable(L, 0, 5);
        lrows_set_string(L, CE_CELL(&rows, i, 0), "schedule");
        lrows_set_integer(L, CE_CELL(&rows, i, 1), "last_run");
        lrows_set_integer(L, CE_CELL(&rows, i, 2), "runs");
        lrows_set_string(L, CE_CELL(&rows, i, 3), "task_id");
        lrows_set_integer(L, CE_CELL(&rows, i, 4), "previous_run");
        lua_rawseti(L, -2, (int)i + 1);
    }
    ce_rows_free(&rows);
    return 1;
}

/* task_history(id) -> list of {state=, worker_id=, error=, retry_count=, created_at=,
 * started_at=, completed_at=, archived_at=}: the task's archived copies, oldest first. */
static int task_history(lua_State *L)
{
    const char *fn = "task_history";
    lbroker *b = lbroker_check(L, fn);
    const char *id = aux_check_name(L, 2, "task_history", "id");
    ce_rows rows = {0};
    ce_error err;
    if (ce_dash_history(lbroker_conn(L, b, fn), b->queue, id, &rows, &err) < 0)
        return aux_push_error(L, &err);
    lua_createtable(L, (int)rows.nrows, 0);
    for (unsigned int i = 0; i < rows.nrows; i++) {
        lua_createtable(L, 0, 8);
        lrows_set_string(L, CE_CELL(&rows, i, 0), "state");
        lrows_set_string(L, CE_CELL(&rows, i, 1), "worker_id");
        lrows_set_string(L, CE_CELL(&rows, i, 2), "error");
        lrows_set_integer(L, CE_CELL(&rows, i, 3), "retry_count");
        lrows_set_number(L, CE_CELL(&rows, i, 4), "created_at");
        lrows_set_number(L, CE_CELL(&rows, i, 5), "started_at");
        lrows_set_number(L, CE_CELL(&rows, i, 6), "completed_at");
        lrows_set_number(L, CE_CELL(&rows, i, 7), "archived_at");
        lua_rawseti(L, -2, (int)i + 1);
    }
    ce_rows_free(&rows);
    return 1;
}

/* retry_now(id) -> true, or false when no waiting task (scheduled, due later, failed,
 * cancelled) has that id in this queue. */
static int retry_now(lua_State *L)
{
    const char *fn = "retry_now";
    lbroker *b = lbroker_check(L, fn);
    const char *id = aux_check_name(L, 2, "retry_now", "id");
    int found = 0;
    ce_error err;
    if (ce_retry_now(lbroker_conn(L, b, fn), b->queue, id, &found, &err) < 0)
        return aux_push_error(L, &err);
    lua_pushboolean(L, found);
    return 1;
}

/* connection_id() -> the server's id of this broker's connection (CONNECTION_ID()), no
 * round trip; nil while disconnected. Shows which connection served a call. */
static int connection_id(lua_State *L)
{
    lbroker *b = lbroker_check(L, "connection_id");
    MYSQL *m = b->shared->conn ? b->shared->conn->mysql : NULL;
    if (!m) return 0;
    lua_pushinteger(L, (lua_Integer)mysql_thread_id(m));
    return 1;
}

static const luaL_Reg methods[] = {
    {"connection_id", connection_id},
    {"list_queues", list_queues},
    {"throughput", throughput},
    {"list_recurring", list_recurring},
    {"retry_now", retry_now},
    {"task_history", task_history},
    {NULL, NULL},
};

void ldashboard_open(lua_State *L)
{
    luaL_setfuncs(L, methods, 0);
}
