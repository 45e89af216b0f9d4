/* The Lua 5.1 (LuaJIT) versus 5.4 API differences the binding uses. */
#ifndef CELERS_COMPAT_H
#define CELERS_COMPAT_H

#include <lauxlib.h>
#include <lua.h>

#if LUA_VERSION_NUM < 502
#define lua_rawlen(L, i) lua_objlen(L, (i))
#define lua_absindex(L, i) ((i) > 0 || (i) <= LUA_REGISTRYINDEX ? (i) : lua_gettop(L) + (i) + 1)
#endif

#if LUA_VERSION_NUM < 503
/* A number with no fractional part counts as an integer on 5.1. */
static inline int compat_isinteger(lua_State *L, int idx)
{
    lua_Number n;
    if (lua_type(L, idx) != LUA_TNUMBER) return 0;
    n = lua_tonumber(L, idx);
    return n == (lua_Number)(long long)n;
}
#define lua_isinteger(L, i) compat_isinteger(L, (i))
#endif

#endif
