#include "auxiliar.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

int aux_arg_error(lua_State *L, const char *fn, const char *arg, const char *what, int idx)
{
    return luaL_error(L, "celers: %s: '%s' must be %s (got %s)", fn, arg, what,
                      luaL_typename(L, idx));
}

/* ---- strings ------------------------------------------------------------------------- */

const char *aux_check_bytes(lua_State *L, int idx, const char *fn, const char *arg, size_t *len)
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

const char *aux_check_string(lua_State *L, int idx, const char *fn, const char *arg, size_t *len)
{
    size_t n;
    const char *s = aux_check_bytes(L, idx, fn, arg, &n);
    if (memchr(s, '\0', n)) luaL_error(L, "celers: %s: '%s' must not contain NUL bytes", fn, arg);
    if (len) *len = n;
    return s;
}

const char *aux_opt_string(lua_State *L, int idx, const char *fn, const char *arg)
{
    if (lua_isnoneornil(L, idx)) return NULL;
    return aux_check_string(L, idx, fn, arg, NULL);
}

const char *aux_check_name(lua_State *L, int idx, const char *fn, const char *arg)
{
    const char *s = aux_check_string(L, idx, fn, arg, NULL);
    if (!*s) luaL_error(L, "celers: %s: '%s' must not be empty", fn, arg);
    return s;
}

/* ---- numbers ------------------------------------------------------------------------- */

lua_Number aux_check_number(lua_State *L, int idx, const char *fn, const char *arg)
{
    if (lua_type(L, idx) != LUA_TNUMBER) aux_arg_error(L, fn, arg, "a number", idx);
    return lua_tonumber(L, idx);
}

static void range_error(lua_State *L, const char *fn, const char *arg, double max)
{
    char limit[32];
    snprintf(limit, sizeof limit, "%.0f", max); /* lua_pushfstring has no %.0f */
    luaL_error(L, "celers: %s: '%s' must be within 0..%s", fn, arg, limit);
}

lua_Number aux_check_within(lua_State *L, int idx, const char *fn, const char *arg, lua_Number max)
{
    lua_Number n = aux_check_number(L, idx, fn, arg);
    if (n < 0) luaL_error(L, "celers: %s: '%s' must not be negative", fn, arg);
    if (!(n <= max)) range_error(L, fn, arg, (double)max); /* NaN and inf too */
    return n;
}

lua_Number aux_check_positive(lua_State *L, int idx, const char *fn, const char *arg,
                              lua_Number max)
{
    if (lua_type(L, idx) == LUA_TNUMBER && !(lua_tonumber(L, idx) > 0) &&
        lua_tonumber(L, idx) == lua_tonumber(L, idx))
        luaL_error(L, "celers: %s: '%s' must be positive", fn, arg);
    return aux_check_within(L, idx, fn, arg, max);
}

lua_Number aux_check_seconds(lua_State *L, int idx, const char *fn, const char *arg)
{
    return aux_check_within(L, idx, fn, arg, AUX_MAX_SECONDS);
}

/* 2^63: the first double above every long long. */
#define TWO_POW_63 9223372036854775808.0

long long aux_check_integer(lua_State *L, int idx, const char *fn, const char *arg, long long min,
                            long long max)
{
    long long v;
    int exact = 1; /* representable as a long long */
    char lo[24], hi[24];
    if (lua_type(L, idx) != LUA_TNUMBER) aux_arg_error(L, fn, arg, "an integer", idx);
#if LUA_VERSION_NUM >= 503
    if (lua_isinteger(L, idx)) {
        v = (long long)lua_tointeger(L, idx);
    } else
#endif
    {
        double d = (double)lua_tonumber(L, idx);
        if (d != d) aux_arg_error(L, fn, arg, "an integer", idx); /* NaN */
        exact = d >= -TWO_POW_63 && d < TWO_POW_63; /* beyond, every double is integral */
        v = exact ? (long long)d : (d < 0 ? LLONG_MIN : LLONG_MAX);
        if (exact && (double)v != d) aux_arg_error(L, fn, arg, "an integer", idx);
    }
    if (exact && v >= min && v <= max) return v;
    if (min == 0 && v < 0) luaL_error(L, "celers: %s: '%s' must not be negative", fn, arg);
    snprintf(lo, sizeof lo, "%lld", min);
    snprintf(hi, sizeof hi, "%lld", max);
    return luaL_error(L, "celers: %s: '%s' must be within %s..%s", fn, arg, lo, hi);
}

long long aux_check_count(lua_State *L, int idx, const char *fn, const char *arg)
{
    return aux_check_integer(L, idx, fn, arg, 0, LLONG_MAX);
}

/* ---- option tables ------------------------------------------------------------------- */

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
static int raw_field(lua_State *L, int idx, const char *key)
{
    idx = lua_absindex(L, idx);
    lua_pushstring(L, key);
    lua_rawget(L, idx);
    return !lua_isnil(L, -1);
}

const char *aux_field_string(lua_State *L, int idx, const char *key, const char *fn,
                             const char *dflt)
{
    const char *s = dflt;
    if (raw_field(L, idx, key)) s = aux_check_string(L, -1, fn, key, NULL); /* table holds it */
    lua_pop(L, 1);
    return s;
}

lua_Number aux_field_within(lua_State *L, int idx, const char *key, const char *fn, lua_Number dflt,
                            lua_Number max, int positive, int *present)
{
    lua_Number n = dflt;
    int has = raw_field(L, idx, key);
    if (has)
        n = positive ? aux_check_positive(L, -1, fn, key, max)
                     : aux_check_within(L, -1, fn, key, max);
    if (present) *present = has;
    lua_pop(L, 1);
    return n;
}

long long aux_field_integer(lua_State *L, int idx, const char *key, const char *fn, long long dflt,
                            long long min, long long max)
{
    long long n = dflt;
    if (raw_field(L, idx, key)) n = aux_check_integer(L, -1, fn, key, min, max);
    lua_pop(L, 1);
    return n;
}

int aux_field_bool(lua_State *L, int idx, const char *key, const char *fn, int dflt)
{
    int b = dflt;
    if (raw_field(L, idx, key)) {
        if (lua_type(L, -1) != LUA_TBOOLEAN) aux_arg_error(L, fn, key, "a boolean", -1);
        b = lua_toboolean(L, -1);
    }
    lua_pop(L, 1);
    return b;
}

/* ---- errors -------------------------------------------------------------------------- */

int aux_push_count(lua_State *L, int rc, unsigned long long n, const ce_error *err)
{
    if (rc < 0) return aux_push_error(L, err);
    lua_pushinteger(L, (lua_Integer)n);
    return 1;
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
