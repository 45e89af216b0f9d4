/* Lua binding of application transactions (transaction.h). broker:transaction itself is in
 * lua/celers/transaction.lua; these are its primitives: _tx_begin gives the handle (a broker
 * object on the same connection that alone may use it until the end), _tx_end commits or
 * rolls back, _tx_execute runs the application's statements (tx:execute; broker:execute,
 * outside a transaction, is lexecute.c's). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auxiliar.h"
#include "lbroker.h"
#include "lmethods.h"
#include "transaction.h"

static lbroker *check_handle(lua_State *L, const char *fn)
{
    lbroker *b = lbroker_check(L, fn);
    if (b->tx != LBROKER_TX_OPEN)
        luaL_error(L, "celers: %s: only inside broker:transaction (call it on the tx object)", fn);
    return b;
}

static int tx_begin(lua_State *L)
{
    lbroker *b = lbroker_check(L, "transaction");
    lbroker *h;
    ce_error err;
    if (ce_tx_begin(b->shared->conn, &err) < 0) return aux_push_error(L, &err);
    h = lbroker_push(L, b->shared, b->queue, b->worker_id);
    h->tx = LBROKER_TX_OPEN;
    b->shared->tx_open = 1;
    return 1;
}

static int tx_end(lua_State *L)
{
    lbroker *h = check_handle(L, "transaction");
    int commit = lua_toboolean(L, 2);
    ce_error err;
    h->tx = LBROKER_TX_OVER;
    h->shared->tx_open = 0;
    if (!commit) {
        ce_tx_rollback(h->shared->conn);
        lua_pushboolean(L, 1);
        return 1;
    }
    if (ce_tx_commit(h->shared->conn, &err) < 0) return aux_push_error(L, &err);
    lua_pushboolean(L, 1);
    return 1;
}

void ltransaction_abandon(lbroker *b)
{
    if (b->tx != LBROKER_TX_OPEN) return;
    b->tx = LBROKER_TX_OVER;
    if (!b->shared) return;
    b->shared->tx_open = 0;
    if (b->shared->conn) ce_tx_rollback(b->shared->conn);
}

/* Bound values: nil (and json.null) is NULL, booleans are 1/0, integers stay integers. */
static void read_param(lua_State *L, int idx, int k, ce_param *p)
{
    char arg[32];
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        *p = ce_pnull();
        return;
    case LUA_TBOOLEAN:
        *p = ce_pint(lua_toboolean(L, idx));
        return;
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        *p = ce_ptext(s, (unsigned long)len);
        return;
    }
    case LUA_TNUMBER: {
        lua_Number n = lua_tonumber(L, idx);
        if (!isfinite(n)) break;
        if (lua_isinteger(L, idx) && n >= -9223372036854775808.0 && n < 9223372036854775808.0)
#if LUA_VERSION_NUM >= 503
            *p = ce_pint((long long)lua_tointeger(L, idx));
#else
            *p = ce_pint((long long)n);
#endif
        else
            *p = ce_pdouble(n);
        return;
    }
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL) {
            *p = ce_pnull();
            return;
        }
        break;
    default:
        break;
    }
    snprintf(arg, sizeof arg, "value #%d", k);
    aux_arg_error(L, "execute", arg, "nil, a boolean, a finite number or a string", idx);
}

static void push_cell(lua_State *L, const ce_value *v, ce_col_kind kind)
{
    if (kind == CE_COL_INTEGER)
        lua_pushinteger(L, (lua_Integer)strtoll(v->data, NULL, 10));
    else if (kind == CE_COL_FLOAT)
        lua_pushnumber(L, strtod(v->data, NULL));
    else
        lua_pushlstring(L, v->data, v->len);
}

static int tx_execute(lua_State *L)
{
    lbroker *h = check_handle(L, "execute");
    const char *sql = aux_check_string(L, 2, "execute", "sql", NULL);
    int n = lua_gettop(L) - 2;
    ce_param *p = lua_newuserdata(L, sizeof *p * (size_t)(n > 0 ? n : 1));
    ce_tx_result res = {0};
    ce_error err;
    for (int k = 1; k <= n; k++)
        read_param(L, 2 + k, k, &p[k - 1]);
    if (ce_tx_execute(lbroker_conn(L, h, "execute"), sql, p, (unsigned int)n, &res, &err) < 0) {
        if (err.code == CE_EINVALID) luaL_error(L, "celers: execute: %s", err.message);
        return aux_push_error(L, &err);
    }
    if (!res.has_rows) {
        lua_pushinteger(L, (lua_Integer)res.affected);
        lua_pushinteger(L, (lua_Integer)res.insert_id);
        ce_tx_result_free(&res);
        return 2;
    }
    lua_createtable(L, (int)res.rows.nrows, 0);
    for (unsigned int r = 0; r < res.rows.nrows; r++) {
        lua_createtable(L, 0, (int)res.ncols);
        for (unsigned int col = 0; col < res.ncols; col++) {
            const ce_value *v = CE_CELL(&res.rows, r, col);
            if (!v->data) continue;
            push_cell(L, v, res.kinds[col]);
            lua_setfield(L, -2, res.names[col]);
        }
        lua_rawseti(L, -2, (int)r + 1);
    }
    ce_tx_result_free(&res);
    return 1;
}

static const luaL_Reg methods[] = {
    {"_tx_begin", tx_begin},
    {"_tx_end", tx_end},
    {"_tx_execute", tx_execute},
    {NULL, NULL},
};

void ltransaction_open(lua_State *L)
{
    luaL_setfuncs(L, methods, 0);
}
