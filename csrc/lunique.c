/* The `unique` option of enqueue (see sql/030_unique_jobs.sql): which fields make two tasks
 * the same, over which period, in which states. The fields are written as one canonical text
 * (tables with their keys sorted, so equal tables give equal text whatever their insertion
 * order) that the server hashes into the task's unique key. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "auxiliar.h"
#include "lunique.h"

#define MAX_DEPTH 32

static const char *const state_names[] = {"scheduled", "pending",   "processing", "completed",
                                          "failed",    "cancelled", NULL};
/* scheduled, pending, processing, completed: a task holds its key until it is done with
 * (failed or cancelled), and completed ones until they are archived or the period ends. */
#define DEFAULT_STATES 0x0Fu

static void put_canonical(lua_State *L, int idx, int depth, const char *fn);

static int compare_keys(const void *a, const void *b)
{
    const char *const *x = a, *const *y = b;
    return strcmp(*x, *y);
}

/* A table as "{" then each key (sorted) and value, or as "[" then its items when it is a
 * sequence with nothing else. Pushes one string. */
static void put_table(lua_State *L, int idx, int depth, const char *fn)
{
    size_t n = (size_t)lua_rawlen(L, idx), count = 0, k = 0;
    const char **keys;
    int parts = 0;
    if (depth > MAX_DEPTH) luaL_error(L, "celers: %s: 'unique' fields nest too deeply", fn);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        count++;
        if (lua_type(L, -2) != LUA_TSTRING && !(lua_type(L, -2) == LUA_TNUMBER && n > 0))
            luaL_error(L, "celers: %s: 'unique' fields must have string keys or be arrays", fn);
        lua_pop(L, 1);
    }
    if (count == n) { /* a sequence (an empty table is [] too) */
        lua_pushliteral(L, "[");
        parts = 1;
        for (size_t i = 1; i <= n; i++) {
            lua_rawgeti(L, idx, (int)i);
            put_canonical(L, lua_gettop(L), depth + 1, fn);
            lua_remove(L, -2);
            parts++;
        }
        lua_pushliteral(L, "]");
        lua_concat(L, parts + 1);
        return;
    }
    keys = lua_newuserdata(L, sizeof *keys * count); /* freed by the GC */
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "celers: %s: 'unique' fields mix array items and keys", fn);
        keys[k++] = lua_tostring(L, -1); /* the table keeps each key alive */
    }
    qsort(keys, count, sizeof *keys, compare_keys);
    lua_pushliteral(L, "{");
    parts = 1;
    for (size_t i = 0; i < count; i++) {
        lua_pushfstring(L, "%d:", (int)strlen(keys[i]));
        lua_pushstring(L, keys[i]);
        lua_getfield(L, idx, keys[i]);
        put_canonical(L, lua_gettop(L), depth + 1, fn);
        lua_remove(L, -2);
        parts += 3;
    }
    lua_pushliteral(L, "}");
    lua_concat(L, parts + 1);
    lua_remove(L, -2); /* the key array */
}

/* Push the canonical text of the value at idx. */
static void put_canonical(lua_State *L, int idx, int depth, const char *fn)
{
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        lua_pushliteral(L, "n");
        return;
    case LUA_TBOOLEAN:
        lua_pushstring(L, lua_toboolean(L, idx) ? "t" : "f");
        return;
    case LUA_TNUMBER: {
        lua_Number v = lua_tonumber(L, idx);
        char buf[64];
        if (!isfinite(v)) luaL_error(L, "celers: %s: 'unique' fields must be finite numbers", fn);
#if LUA_VERSION_NUM >= 503
        if (lua_isinteger(L, idx)) {
            snprintf(buf, sizeof buf, "i%lld", (long long)lua_tointeger(L, idx));
            lua_pushstring(L, buf);
            return;
        }
#endif
        /* 7 and 7.0 are the same number to JSON */
        if (v == floor(v) && fabs(v) < 9007199254740992.0)
            snprintf(buf, sizeof buf, "i%.0f", v);
        else
            snprintf(buf, sizeof buf, "d%.17g", v);
        lua_pushstring(L, buf);
        return;
    }
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        lua_pushfstring(L, "s%d:", (int)len);
        lua_pushlstring(L, s, len);
        lua_concat(L, 2);
        return;
    }
    case LUA_TTABLE:
        put_table(L, idx, depth, fn);
        return;
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL) { /* json.null */
            lua_pushliteral(L, "n");
            return;
        }
        break;
    default:
        break;
    }
    luaL_error(L, "celers: %s: 'unique' fields must be JSON values (got %s)", fn,
               luaL_typename(L, idx));
}

/* One `by` entry: "name", "queue", "payload" or "payload.<field>". Pushes its text. */
static void put_field(lua_State *L, const char *by, int payload_idx, const char *fn,
                      const ce_task_spec *t, const char *queue)
{
    lua_pushfstring(L, "%s=", by);
    if (strcmp(by, "name") == 0) {
        lua_pushfstring(L, "%d:%s", (int)strlen(t->name), t->name);
    } else if (strcmp(by, "queue") == 0) {
        const char *q = t->queue ? t->queue : queue;
        lua_pushfstring(L, "%d:%s", (int)strlen(q), q);
    } else if (strcmp(by, "payload") == 0) {
        put_canonical(L, payload_idx, 0, fn);
    } else if (strncmp(by, "payload.", 8) == 0 && by[8]) {
        if (lua_type(L, payload_idx) != LUA_TTABLE)
            luaL_error(L, "celers: %s: unique by '%s' needs a table payload", fn, by);
        lua_getfield(L, payload_idx, by + 8);
        put_canonical(L, lua_gettop(L), 0, fn);
        lua_remove(L, -2);
    } else {
        luaL_error(L,
                   "celers: %s: unique 'by' entries are \"name\", \"queue\", \"payload\" or "
                   "\"payload.<field>\" (got \"%s\")",
                   fn, by);
    }
    lua_concat(L, 2);
    lua_pushliteral(L, ";");
    lua_concat(L, 2);
}

static unsigned int read_states(lua_State *L, int idx, const char *fn)
{
    unsigned int bits = 0;
    size_t n;
    if (lua_type(L, idx) != LUA_TTABLE) aux_arg_error(L, fn, "unique.states", "a table", idx);
    n = (size_t)lua_rawlen(L, idx);
    if (n == 0) luaL_error(L, "celers: %s: 'unique.states' must list at least one state", fn);
    for (size_t i = 1; i <= n; i++) {
        const char *s;
        int found = 0;
        lua_rawgeti(L, idx, (int)i);
        if (lua_type(L, -1) != LUA_TSTRING)
            aux_arg_error(L, fn, "unique.states", "a list of state names", -1);
        s = lua_tostring(L, -1);
        for (unsigned int k = 0; state_names[k]; k++)
            if (strcmp(s, state_names[k]) == 0) {
                bits |= 1u << k;
                found = 1;
            }
        if (!found) luaL_error(L, "celers: %s: unknown state '%s' in 'unique.states'", fn, s);
        lua_pop(L, 1);
    }
    return bits;
}

void lunique_read(lua_State *L, int optidx, int payload_idx, const char *fn, const char *queue,
                  ce_task_spec *t)
{
    static const char *const allowed[] = {"period", "by", "states", NULL};
    int uidx, parts = 0;
    optidx = lua_absindex(L, optidx);
    payload_idx = lua_absindex(L, payload_idx);
    if (lua_type(L, optidx) != LUA_TTABLE) return;
    lua_getfield(L, optidx, "unique");
    if (lua_isnil(L, -1) || (lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1))) {
        lua_pop(L, 1);
        return;
    }
    uidx = lua_gettop(L);
    t->unique_states = DEFAULT_STATES;
    t->unique_period = 0;
    if (lua_type(L, uidx) == LUA_TBOOLEAN) { /* unique = true: every default */
        lua_pushnil(L);
    } else {
        if (lua_type(L, uidx) != LUA_TTABLE)
            aux_arg_error(L, fn, "unique", "a table or true", uidx);
        aux_check_options(L, uidx, fn, allowed);
        lua_getfield(L, uidx, "period");
        if (!lua_isnil(L, -1))
            t->unique_period =
                aux_check_positive(L, lua_gettop(L), fn, "unique.period", AUX_MAX_SECONDS);
        lua_pop(L, 1);
        lua_getfield(L, uidx, "states");
        if (!lua_isnil(L, -1)) t->unique_states = read_states(L, lua_gettop(L), fn);
        lua_pop(L, 1);
        lua_getfield(L, uidx, "by");
    }
    /* the canonical text, left on the stack (below the `by` value) while the task is sent */
    if (lua_isnil(L, -1)) {
        static const char *const dflt[] = {"name", "queue", "payload"};
        for (int i = 0; i < 3; i++, parts++)
            put_field(L, dflt[i], payload_idx, fn, t, queue);
    } else {
        int byidx = lua_gettop(L);
        size_t n;
        if (lua_type(L, byidx) != LUA_TTABLE)
            aux_arg_error(L, fn, "unique.by", "a list of field names", byidx);
        n = (size_t)lua_rawlen(L, byidx);
        if (n == 0) luaL_error(L, "celers: %s: 'unique.by' must name at least one field", fn);
        for (size_t i = 1; i <= n; i++, parts++) {
            lua_rawgeti(L, byidx, (int)i);
            if (lua_type(L, -1) != LUA_TSTRING)
                aux_arg_error(L, fn, "unique.by", "a list of field names", -1);
            put_field(L, lua_tostring(L, -1), payload_idx, fn, t, queue);
            lua_remove(L, -2);
        }
    }
    lua_concat(L, parts);
    {
        size_t len;
        t->unique_text = lua_tolstring(L, -1, &len);
        t->unique_text_len = (unsigned long)len;
    }
    /* the stack keeps: unique value, by value, text; all live until the enqueue returns */
}
