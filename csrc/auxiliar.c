#include "auxiliar.h"

#include <stdio.h>
#include <string.h>

int aux_arg_error(lua_State *L, const char *fn, const char *arg, const char *what, int idx)
{
    return luaL_error(L, "celers: %s: '%s' must be %s (got %s)", fn, arg, what,
                      luaL_typename(L, idx));
}

const char *aux_check_string(lua_State *L, int idx, const char *fn, const char *arg, size_t *len)
{
    size_t n;
    const char *s;
    if (lua_type(L, idx) != LUA_TSTRING) aux_arg_error(L, fn, arg, "a string", idx);
    s = lua_tolstring(L, idx, &n);
    if (len)
        *len = n;
    else if (strlen(s) != n) /* used as a C string: refuse rather than cut at the NUL */
        aux_arg_error(L, fn, arg, "a string without NUL bytes", idx);
    return s;
}

const char *aux_opt_string(lua_State *L, int idx, const char *fn, const char *arg)
{
    if (lua_isnoneornil(L, idx)) return NULL;
    return aux_check_string(L, idx, fn, arg, NULL);
}

lua_Number aux_check_number(lua_State *L, int idx, const char *fn, const char *arg)
{
    if (lua_type(L, idx) != LUA_TNUMBER) aux_arg_error(L, fn, arg, "a number", idx);
    return lua_tonumber(L, idx);
}

lua_Number aux_check_nonneg(lua_State *L, int idx, const char *fn, const char *arg)
{
    lua_Number n = aux_check_number(L, idx, fn, arg);
    if (!(n >= 0)) luaL_error(L, "celers: %s: '%s' must not be negative", fn, arg);
    return n;
}

long long aux_check_count(lua_State *L, int idx, const char *fn, const char *arg)
{
    if (!lua_isinteger(L, idx)) aux_arg_error(L, fn, arg, "an integer", idx);
    if (lua_tonumber(L, idx) < 0) luaL_error(L, "celers: %s: '%s' must not be negative", fn, arg);
    return (long long)lua_tonumber(L, idx);
}

lua_Number aux_check_range(lua_State *L, lua_Number n, lua_Number max, const char *fn,
                           const char *arg)
{
    if (!(n >= 0 && n <= max)) {
        char limit[32];
        snprintf(limit, sizeof limit, "%.0f", (double)max); /* lua_pushfstring has no %.0f */
        luaL_error(L, "celers: %s: '%s' must be within 0..%s", fn, arg, limit);
    }
    return n;
}

int aux_opt_table(lua_State *L, int idx, const char *fn, const char *arg)
{
    if (lua_isnoneornil(L, idx)) return 0;
    if (!lua_istable(L, idx)) aux_arg_error(L, fn, arg, "a table", idx);
    return 1;
}

void aux_check_options(lua_State *L, int idx, const char *fn, const char *const *allowed)
{
    idx = lua_absindex(L, idx);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        int ok = 0;
        lua_pop(L, 1);
        if (lua_type(L, -1) == LUA_TSTRING) {
            const char *key = lua_tostring(L, -1);
            for (int i = 0; allowed[i]; i++)
                if (strcmp(allowed[i], key) == 0) ok = 1;
            if (!ok) luaL_error(L, "celers: %s: unknown option '%s'", fn, key);
        } else {
            luaL_error(L, "celers: %s: option names must be strings", fn);
        }
    }
}

/* Push t[key] without metamethods: a string read from an options table must be held by the
 * table itself, not computed by __index and gone once popped. */
static void raw_field(lua_State *L, int idx, const char *key)
{
    idx = lua_absindex(L, idx);
    lua_pushstring(L, key);
    lua_rawget(L, idx);
}

const char *aux_field_string(lua_State *L, int idx, const char *key, const char *fn,
                             const char *dflt)
{
    const char *s = dflt;
    raw_field(L, idx, key);
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TSTRING) aux_arg_error(L, fn, key, "a string", -1);
        s = lua_tostring(L, -1); /* kept alive by the options table */
    }
    lua_pop(L, 1);
    return s;
}

lua_Number aux_field_number(lua_State *L, int idx, const char *key, const char *fn, lua_Number dflt,
                            int *present)
{
    lua_Number n = dflt;
    raw_field(L, idx, key);
    if (present) *present = !lua_isnil(L, -1);
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TNUMBER) aux_arg_error(L, fn, key, "a number", -1);
        n = lua_tonumber(L, -1);
    }
    lua_pop(L, 1);
    return n;
}

long long aux_field_integer(lua_State *L, int idx, const char *key, const char *fn, long long dflt)
{
    long long n = dflt;
    raw_field(L, idx, key);
    if (!lua_isnil(L, -1)) {
        if (!lua_isinteger(L, -1)) aux_arg_error(L, fn, key, "an integer", -1);
        n = (long long)lua_tonumber(L, -1);
    }
    lua_pop(L, 1);
    return n;
}

int aux_field_bool(lua_State *L, int idx, const char *key, const char *fn, int dflt)
{
    int b = dflt;
    raw_field(L, idx, key);
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TBOOLEAN) aux_arg_error(L, fn, key, "a boolean", -1);
        b = lua_toboolean(L, -1);
    }
    lua_pop(L, 1);
    return b;
}

int aux_push_error(lua_State *L, const ce_error *err)
{
    lua_pushnil(L);
    lua_createtable(L, 0, 5);
    lua_pushstring(L, ce_code_name(err->code));
    lua_setfield(L, -2, "code");
    lua_pushstring(L, err->message);
    lua_setfield(L, -2, "message");
    lua_pushinteger(L, (lua_Integer)err->errnum);
    lua_setfield(L, -2, "errno");
    lua_pushstring(L, err->sqlstate[0] ? err->sqlstate : "HY000");
    lua_setfield(L, -2, "sqlstate");
    lua_pushboolean(L, ce_code_retryable(err->code));
    lua_setfield(L, -2, "retryable");
    luaL_getmetatable(L, AUX_ERROR_MT);
    lua_setmetatable(L, -2);
    return 2;
}

static int error_tostring(lua_State *L)
{
    lua_getfield(L, 1, "code");
    lua_getfield(L, 1, "message");
    lua_pushfstring(L, "celers: %s: %s", lua_tostring(L, -2) ? lua_tostring(L, -2) : "error",
                    lua_tostring(L, -1) ? lua_tostring(L, -1) : "");
    return 1;
}

void aux_error_open(lua_State *L)
{
    if (luaL_newmetatable(L, AUX_ERROR_MT)) {
        lua_pushcfunction(L, error_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_pop(L, 1);
}
