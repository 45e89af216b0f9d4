/* broker:execute(sql, ...): one statement of the caller's own, values bound as parameters
 * (never spliced into the text), run once (never repeated after a lost connection).
 * Answers rows, affected: rows is an array of rows, each an array of the cells as strings
 * (the bytes the server sent, binary safe; nil for SQL NULL) with n = the column count.
 * celers.celery uses it for Celery's tables; applications may too. */
#include "lmethods.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auxiliar.h"
#include "lbroker.h"
#include "statement.h"

#define MAX_PARAMS 1000

/* Turn argument idx into a parameter: nil and json.null (a NULL light userdata) are SQL
 * NULL; booleans are 1/0; strings are bound with their length. */
static ce_param to_param(lua_State *L, int idx, int argn)
{
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        return ce_pnull();
    case LUA_TBOOLEAN:
        return ce_pint(lua_toboolean(L, idx));
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) {
#if LUA_VERSION_NUM >= 503
            return ce_pint((long long)lua_tointeger(L, idx));
#else
            lua_Number n = lua_tonumber(L, idx);
            if (n >= -9007199254740992.0 && n <= 9007199254740992.0) return ce_pint((long long)n);
#endif
        }
        return ce_pdouble((double)lua_tonumber(L, idx));
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        return ce_ptext(s, (unsigned long)len);
    }
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL) return ce_pnull();
        /* fall through */
    default: {
        char name[32];
        snprintf(name, sizeof name, "parameter %d", argn);
        aux_arg_error(L, "execute", name, "nil, a boolean, a number or a string", idx);
        return ce_pnull();
    }
    }
}

static int broker_execute(lua_State *L)
{
    lbroker *b = lbroker_check(L, "execute");
    const char *sql = aux_check_string(L, 2, "execute", "sql", NULL);
    int top = lua_gettop(L), n = top - 2;
    ce_param stack[16], *params = stack;
    ce_rows rows = {0};
    unsigned long long affected = 0;
    ce_error err;
    int rc;

    if (n > MAX_PARAMS) luaL_error(L, "celers: execute: at most %d parameters", MAX_PARAMS);
    if (n > (int)(sizeof stack / sizeof stack[0])) {
        params = lua_newuserdata(L, sizeof *params * (size_t)n); /* freed by the GC */
    }
    for (int i = 0; i < n; i++)
        params[i] = to_param(L, 3 + i, i + 1);
    rc = ce_run(b->shared->conn, CE_ONCE, sql, params, (unsigned int)n, &rows, &affected, &err);
    if (rc < 0) {
        if (err.code == CE_EINVALID) { /* wrong parameter count: misuse */
            const char *msg = err.message;
            if (strncmp(msg, "internal: ", 10) == 0) msg += 10;
            return luaL_error(L, "celers: execute: %s", msg);
        }
        return aux_push_error(L, &err);
    }
    lua_createtable(L, (int)rows.nrows, 0);
    for (unsigned int r = 0; r < rows.nrows; r++) {
        lua_createtable(L, (int)rows.ncols, 1);
        for (unsigned int c = 0; c < rows.ncols; c++) {
            const ce_value *v = CE_CELL(&rows, r, c);
            if (!v->data) continue;
            lua_pushlstring(L, v->data, v->len);
            lua_rawseti(L, -2, (int)c + 1);
        }
        lua_pushinteger(L, (lua_Integer)rows.ncols);
        lua_setfield(L, -2, "n");
        lua_rawseti(L, -2, (int)r + 1);
    }
    /* a SELECT has no affected count: answer the rows it returned */
    if (affected == (unsigned long long)-1) affected = rows.nrows;
    lua_pushinteger(L, (lua_Integer)affected);
    ce_rows_free(&rows);
    return 2;
}

void lexecute_open(lua_State *L)
{
    lua_pushcfunction(L, broker_execute);
    lua_setfield(L, -2, "execute");
}
