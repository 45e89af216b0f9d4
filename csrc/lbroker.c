/* The broker userdata: creation, garbage collection and close, per-process counters, and
 * the broker-level methods (with_queue, queue, worker_id, migrate, list_migrations); the
 * queue operations are bound in lenqueue.c, lclaim.c, ladmin.c, lupkeep.c and lworkers.c. */
#include "lbroker.h"

#include <stdlib.h>
#include <string.h>

#include "auxiliar.h"
#include "lrows.h"
#include "migrate.h"

/* ---- userdata plumbing -------------------------------------------------------------- */

static char *dup_or_raise(lua_State *L, const char *s)
{
    char *d = strdup(s);
    if (!d) luaL_error(L, "celers: out of memory");
    return d;
}

lbroker *lbroker_push(lua_State *L, shared_conn *shared, const char *queue, const char *worker_id)
{
    lbroker *b = lua_newuserdata(L, sizeof *b);
    memset(b, 0, sizeof *b);
    luaL_getmetatable(L, BROKER_MT);
    lua_setmetatable(L, -2);
    /* From here __gc owns whatever is set, so a failed strdup leaks nothing. */
    b->shared = shared;
    shared->refs++;
    b->queue = dup_or_raise(L, queue);
    b->worker_id = dup_or_raise(L, worker_id);
    return b;
}

static lbroker *to_broker(lua_State *L, const char *fn)
{
    lbroker *b = luaL_testudata(L, 1, BROKER_MT);
    if (!b)
        luaL_error(L, "celers: %s: 'self' must be a broker (call it as broker:%s(...))", fn, fn);
    return b;
}

lbroker *lbroker_check(lua_State *L, const char *fn)
{
    lbroker *b = to_broker(L, fn);
    if (!b->shared || !b->shared->conn)
        luaL_error(L, "celers: %s: the broker is closed", fn);
    else if (b->tx == LBROKER_TX_OVER)
        luaL_error(L, "celers: %s: the transaction is over", fn);
    else if (b->shared->tx_open && b->tx != LBROKER_TX_OPEN)
        luaL_error(L,
                   "celers: %s: a transaction is open on this connection (nested transactions "
                   "are not supported; inside it, call the tx object)",
                   fn);
    return b;
}

static int broker_gc(lua_State *L)
{
    lbroker *b = luaL_testudata(L, 1, BROKER_MT);
    if (!b) return 0;
    ltransaction_abandon(b);
    if (b->shared && --b->shared->refs == 0) {
        ce_conn_close(b->shared->conn);
        free(b->shared);
    }
    b->shared = NULL;
    free(b->queue);
    free(b->worker_id);
    b->queue = b->worker_id = NULL;
    return 0;
}

static int broker_close(lua_State *L)
{
    lbroker *b = to_broker(L, "close");
    /* Closes the connection for every broker sharing it; memory goes with the last __gc. */
    if (b->shared && b->shared->conn) {
        ce_conn_close(b->shared->conn);
        b->shared->conn = NULL;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int broker_tostring(lua_State *L)
{
    lbroker *b = luaL_testudata(L, 1, BROKER_MT);
    if (b && b->queue)
        lua_pushfstring(L, "celers.broker(queue=%s%s)", b->queue,
                        b->shared && b->shared->conn ? "" : ", closed");
    else
        lua_pushliteral(L, "celers.broker(closed)");
    return 1;
}

void lbroker_count(lua_State *L, const char *key, lua_Number n)
{
    lua_getfield(L, LUA_REGISTRYINDEX, LBROKER_COUNTERS_KEY);
    lua_getfield(L, -1, key);
    lua_pushnumber(L, lua_tonumber(L, -1) + n);
    lua_setfield(L, -3, key);
    lua_pop(L, 2);
}

/* ---- broker, queue, migrations ------------------------------------------------------- */

static int broker_with_queue(lua_State *L)
{
    lbroker *b = lbroker_check(L, "with_queue");
    const char *queue = aux_check_string(L, 2, "with_queue", "queue", NULL);
    if (!*queue) luaL_error(L, "celers: with_queue: 'queue' must not be empty");
    lbroker_push(L, b->shared, queue, b->worker_id);
    return 1;
}

static int broker_queue(lua_State *L)
{
    lbroker *b = to_broker(L, "queue");
    lua_pushstring(L, b->queue ? b->queue : "");
    return 1;
}

static int broker_worker_id(lua_State *L)
{
    lbroker *b = lbroker_check(L, "worker_id");
    if (!lua_isnoneornil(L, 2)) {
        char *w = dup_or_raise(L, aux_check_string(L, 2, "worker_id", "worker_id", NULL));
        free(b->worker_id);
        b->worker_id = w;
    }
    lua_pushstring(L, b->worker_id);
    return 1;
}

static int broker_migrate(lua_State *L)
{
    lbroker *b = lbroker_check(L, "migrate");
    int *applied = lua_newuserdata(L, sizeof *applied * (ce_migrations_count + 1));
    int k = 0;
    ce_error err;
    if (ce_migrate(b->shared->conn, applied, &err) < 0) return aux_push_error(L, &err);
    lua_newtable(L);
    for (unsigned int i = 0; i < ce_migrations_count; i++) {
        if (!applied[i]) continue;
        lua_pushfstring(L, "%s_%s", ce_migrations[i].version, ce_migrations[i].name);
        lua_rawseti(L, -2, ++k);
    }
    return 1;
}

static int broker_list_migrations(lua_State *L)
{
    lbroker *b = lbroker_check(L, "list_migrations");
    ce_rows rows = {0};
    ce_error err;
    if (ce_list_migrations(b->shared->conn, &rows, &err) < 0) return aux_push_error(L, &err);
    lua_createtable(L, (int)rows.nrows, 0);
    for (unsigned int i = 0; i < rows.nrows; i++) {
        lua_createtable(L, 0, 3);
        lrows_set_string(L, CE_CELL(&rows, i, 0), "version");
        lrows_set_string(L, CE_CELL(&rows, i, 1), "name");
        lrows_set_number(L, CE_CELL(&rows, i, 2), "applied_at");
        lua_rawseti(L, -2, (int)i + 1);
    }
    ce_rows_free(&rows);
    return 1;
}

static const luaL_Reg methods[] = {
    {"with_queue", broker_with_queue},
    {"queue", broker_queue},
    {"worker_id", broker_worker_id},
    {"migrate", broker_migrate},
    {"list_migrations", broker_list_migrations},
    {"close", broker_close},
    {NULL, NULL},
};

void lbroker_open(lua_State *L)
{
    luaL_newmetatable(L, BROKER_MT);
    lua_pushcfunction(L, broker_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, broker_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lenqueue_register(L);
    lclaim_register(L);
    ladmin_register(L);
    ltransaction_register(L);
    lsnooze_register(L);
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "__index");
    lua_remove(L, -2); /* leave the methods table */
    /* per-process counters for metrics */
    lua_getfield(L, LUA_REGISTRYINDEX, LBROKER_COUNTERS_KEY);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_newtable(L);
        lua_setfield(L, -2, "enqueued_by_type");
        lua_setfield(L, LUA_REGISTRYINDEX, LBROKER_COUNTERS_KEY);
    } else {
        lua_pop(L, 1);
    }
}
