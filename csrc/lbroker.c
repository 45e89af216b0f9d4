/* The broker userdata type: creation, garbage collection, close, with_queue and the
 * broker's own settings (queue, worker_id), and per-process counters. Every other method
 * is added by its binding file (lmethods.h). */
#include "lbroker.h"

#include <stdlib.h>
#include <string.h>

#include "auxiliar.h"

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

ce_conn *lbroker_conn(lua_State *L, lbroker *b, const char *fn)
{
    if (b->shared && b->shared->conn) return b->shared->conn;
    luaL_error(L, "celers: %s: the broker is closed", fn);
    return NULL;
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

/* ---- broker-level methods ------------------------------------------------------------- */

static int broker_with_queue(lua_State *L)
{
    lbroker *b = lbroker_check(L, "with_queue");
    const char *queue = aux_check_name(L, 2, "with_queue", "queue");
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

static const luaL_Reg methods[] = {
    {"with_queue", broker_with_queue},
    {"queue", broker_queue},
    {"worker_id", broker_worker_id},
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
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "__index");
    lua_remove(L, -2); /* leave the methods table */
}
