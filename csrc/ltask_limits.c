/* Lua binding of task limits (task_limits.h): set_limit, remove_limit, list_limits. */
#include "auxiliar.h"
#include "lbroker.h"
#include "task_limits.h"
#include "lmethods.h"
#include "lrows.h"

/* set_limit(name, {concurrency=, partition_by=, rate=, period=}) -> true, or nil, err.
 * At least one of concurrency and rate; period (seconds, default 1) goes with rate,
 * partition_by (a payload field or a JSON path) with concurrency. */
static int broker_set_limit(lua_State *L)
{
    static const char *const opts[] = {"concurrency", "partition_by", "rate", "period", NULL};
    const char *fn = "set_limit";
    lbroker *b = lbroker_check(L, fn);
    ce_limit l = {NULL, -1, NULL, -1, 1.0};
    char path[CE_LIMIT_PATH_MAX + 8];
    int has_period = 0;
    ce_error err;
    lua_settop(L, 3);
    l.task_name = aux_check_name(L, 2, fn, "name");
    if (!aux_opt_table(L, 3, fn, "limit"))
        aux_arg_error(L, fn, "limit", "a table {concurrency=, rate=, period=, partition_by=}", 3);
    aux_check_options(L, 3, fn, opts);
    l.max_running = aux_field_integer(L, 3, "concurrency", fn, -1, 0, AUX_INT_MAX);
    l.rate_limit = aux_field_integer(L, 3, "rate", fn, -1, 0, AUX_INT_MAX);
    l.rate_period = aux_field_within(L, 3, "period", fn, 1.0, AUX_MAX_SECONDS, 1, &has_period);
    l.partition_by = aux_field_string(L, 3, "partition_by", fn, NULL);
    if (l.max_running < 0 && l.rate_limit < 0)
        return luaL_error(L, "celers: %s: 'limit' needs 'concurrency' or 'rate'", fn);
    if (has_period && l.rate_limit < 0)
        return luaL_error(L, "celers: %s: 'period' goes with 'rate'", fn);
    if (l.partition_by && l.max_running < 0)
        return luaL_error(L, "celers: %s: 'partition_by' goes with 'concurrency'", fn);
    if (l.partition_by && ce_limit_path(l.partition_by, path, sizeof path) < 0)
        return luaL_error(L,
                          "celers: %s: 'partition_by' must be a payload field name (no '\"' or "
                          "'\\') or a JSON path starting with '$', 1..%d bytes",
                          fn, CE_LIMIT_PATH_MAX);
    if (ce_set_limit(lbroker_conn(L, b, fn), &l, &err) < 0) return aux_push_error(L, &err);
    lua_pushboolean(L, 1);
    return 1;
}

/* remove_limit(name) -> true, false (there was none), or nil, err. */
static int broker_remove_limit(lua_State *L)
{
    const char *fn = "remove_limit";
    lbroker *b = lbroker_check(L, fn);
    const char *name = aux_check_name(L, 2, fn, "name");
    int removed = 0;
    ce_error err;
    if (ce_remove_limit(lbroker_conn(L, b, fn), name, &removed, &err) < 0)
        return aux_push_error(L, &err);
    lua_pushboolean(L, removed);
    return 1;
}

/* list_limits() -> list of {name, concurrency, partition_by, rate, period, running, started,
 * waiting}. */
static int broker_list_limits(lua_State *L)
{
    const char *fn = "list_limits";
    lbroker *b = lbroker_check(L, fn);
    ce_rows rows = {0};
    ce_error err;
    if (ce_list_limits(lbroker_conn(L, b, fn), &rows, &err) < 0) return aux_push_error(L, &err);
    lua_createtable(L, (int)rows.nrows, 0);
    for (unsigned int r = 0; r < rows.nrows; r++) {
        lua_createtable(L, 0, 8);
        lrows_set_string(L, CE_CELL(&rows, r, CE_L_NAME), "name");
        lrows_set_integer(L, CE_CELL(&rows, r, CE_L_MAX_RUNNING), "concurrency");
        lrows_set_string(L, CE_CELL(&rows, r, CE_L_PARTITION_BY), "partition_by");
        lrows_set_integer(L, CE_CELL(&rows, r, CE_L_RATE_LIMIT), "rate");
        lrows_set_number(L, CE_CELL(&rows, r, CE_L_RATE_PERIOD), "period");
        lrows_set_integer(L, CE_CELL(&rows, r, CE_L_RUNNING), "running");
        lrows_set_integer(L, CE_CELL(&rows, r, CE_L_STARTED), "started");
        lrows_set_integer(L, CE_CELL(&rows, r, CE_L_WAITING), "waiting");
        lua_rawseti(L, -2, (int)r + 1);
    }
    ce_rows_free(&rows);
    return 1;
}

static const luaL_Reg methods[] = {
    {"set_limit", broker_set_limit},
    {"remove_limit", broker_remove_limit},
    {"list_limits", broker_list_limits},
    {NULL, NULL},
};

void llimits_open(lua_State *L)
{
    luaL_setfuncs(L, methods, 0);
}
