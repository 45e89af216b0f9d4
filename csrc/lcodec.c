/* celers.core's codecs for Lua: exact JSON (json_encode, json_decode, json_null,
 * json_array_mt), base64 and a UTF-8 check.
 *
 * Lua values <-> JSON: a Lua integer is a JSON integer; a float is written so that it reads
 * back as the same float (7.0 -> "7.0"). On LuaJIT every number is a double: whole numbers
 * below 2^63 are written as integers, and a JSON integer that no double holds exactly
 * (beyond 2^53, like 2^53+1) is refused when decoding rather than rounded. Decoded arrays
 * carry json_array_mt so that they, empty ones included, encode back as arrays; a table
 * whose metatable has __jsontype = "array" or "object" is written as that. JSON null is
 * json_null (a NULL light userdata, the same value as lua-cjson's cjson.null). */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "base64.h"
#include "compat.h"
#include "json.h"
#include "lcodec.h"

#define ARRAY_MT_KEY "celers.json.array"
#define BUFFER_MT_KEY "celers.json.buffer"
/* A buffer that grew past this is given back after use. */
#define KEEP_BUFFER_BYTES (1u << 20)

/* ---- the scratch buffer: one per Lua state, freed by the GC if a call raises --------- */

typedef struct codec_buffer {
    ce_jbuf b;
    int busy;
} codec_buffer;

static int buffer_gc(lua_State *L)
{
    codec_buffer *cb = (codec_buffer *)lua_touserdata(L, 1);
    ce_jbuf_free(&cb->b);
    return 0;
}

static codec_buffer *new_buffer(lua_State *L)
{
    codec_buffer *cb = (codec_buffer *)lua_newuserdata(L, sizeof *cb);
    memset(cb, 0, sizeof *cb);
    luaL_getmetatable(L, BUFFER_MT_KEY);
    lua_setmetatable(L, -2);
    return cb;
}

/* The shared buffer (upvalue 1), or a fresh one if a call is using it (a finalizer that
 * encodes while an encode runs). Pushes the buffer's userdata at the top of the stack. */
static codec_buffer *take_buffer(lua_State *L)
{
    codec_buffer *cb = (codec_buffer *)lua_touserdata(L, lua_upvalueindex(1));
    if (cb->busy) return new_buffer(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    cb->busy = 1;
    cb->b.len = 0;
    return cb;
}

static void give_back(codec_buffer *cb)
{
    cb->busy = 0;
    if (cb->b.cap > KEEP_BUFFER_BYTES) ce_jbuf_free(&cb->b);
}

/* Raise "celers: <message>" after releasing the buffer, so the next call can use it. */
static int codec_error(lua_State *L, codec_buffer *cb, const char *fmt, ...)
{
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    /* NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized): va_start is just above */
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (cb) give_back(cb);
    return luaL_error(L, "celers: %s", msg);
}

/* ---- encode ---------------------------------------------------------------------------- */

typedef struct encoder {
    lua_State *L;
    codec_buffer *cb;
    int array_mt; /* stack index of json_array_mt */
} encoder;

static void written(encoder *e, int rc)
{
    if (rc == CE_JSON_ENOMEM) codec_error(e->L, e->cb, "json_encode: out of memory");
}

static void encode_value(encoder *e, int idx, int depth);

/* 1: array, 0: object, -1: no marker. */
static int marked_kind(encoder *e, int idx)
{
    lua_State *L = e->L;
    int kind = -1;
    if (!lua_getmetatable(L, idx)) return -1;
    if (lua_rawequal(L, -1, e->array_mt)) {
        kind = 1;
    } else {
        lua_getfield(L, -1, "__jsontype");
        if (lua_type(L, -1) == LUA_TSTRING) {
            const char *t = lua_tostring(L, -1);
            if (strcmp(t, "array") == 0)
                kind = 1;
            else if (strcmp(t, "object") == 0)
                kind = 0;
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return kind;
}

/* A whole number usable as an array index or written as an object key. */
static int whole_key(lua_State *L, int idx, long long *out)
{
#if LUA_VERSION_NUM >= 503
    if (!lua_isinteger(L, idx)) return 0;
    *out = (long long)lua_tointeger(L, idx);
    return 1;
#else
    lua_Number n = lua_tonumber(L, idx);
    if (n != floor(n) || n < -9223372036854775808.0 || n >= 9223372036854775808.0) return 0;
    *out = (long long)n;
    return 1;
#endif
}

/* Without a marker: keys exactly 1..n (a few holes allowed, written as null) make an array;
 * anything else, the empty table included, an object. Returns the array length or -1. */
static long long array_length(lua_State *L, int idx)
{
    long long max = 0, count = 0, k;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TNUMBER || !whole_key(L, -1, &k) || k < 1) {
            lua_pop(L, 1);
            return -1;
        }
        if (k > max) max = k;
        count++;
    }
    if (count == 0) return -1;
    if (max > count * 2 && max > 10) return -1; /* too sparse: an object with number keys */
    return max;
}

static void encode_array(encoder *e, int idx, long long n, int depth)
{
    lua_State *L = e->L;
    written(e, ce_jbuf_put(&e->cb->b, "[", 1));
    for (long long i = 1; i <= n; i++) {
        if (i > 1) written(e, ce_jbuf_put(&e->cb->b, ",", 1));
        lua_rawgeti(L, idx, (int)i);
        encode_value(e, lua_gettop(L), depth);
        lua_pop(L, 1);
    }
    written(e, ce_jbuf_put(&e->cb->b, "]", 1));
}

static void encode_key(encoder *e, int idx)
{
    lua_State *L = e->L;
    long long k;
    char tmp[26];
    size_t bad = 0;
    int rc;
    if (lua_type(L, idx) == LUA_TSTRING) {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        rc = ce_json_put_string(&e->cb->b, s, len, &bad);
        if (rc == CE_JSON_EUTF8)
            codec_error(L, e->cb, "json_encode: a key is not valid UTF-8 (byte %zu)", bad + 1);
        written(e, rc);
        return;
    }
    if (lua_type(L, idx) == LUA_TNUMBER && whole_key(L, idx, &k)) {
        int len = snprintf(tmp, sizeof tmp, "\"%lld\"", k);
        written(e, ce_jbuf_put(&e->cb->b, tmp, (size_t)len));
        return;
    }
    codec_error(L, e->cb, "json_encode: cannot use a %s as an object key",
                lua_type(L, idx) == LUA_TNUMBER ? "fractional number" : luaL_typename(L, idx));
}

static void encode_object(encoder *e, int idx, int depth)
{
    lua_State *L = e->L;
    int first = 1;
    written(e, ce_jbuf_put(&e->cb->b, "{", 1));
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (!first) written(e, ce_jbuf_put(&e->cb->b, ",", 1));
        first = 0;
        encode_key(e, lua_gettop(L) - 1);
        written(e, ce_jbuf_put(&e->cb->b, ":", 1));
        encode_value(e, lua_gettop(L), depth);
        lua_pop(L, 1);
    }
    written(e, ce_jbuf_put(&e->cb->b, "}", 1));
}

static void encode_number(encoder *e, int idx)
{
    lua_State *L = e->L;
    lua_Number d;
#if LUA_VERSION_NUM >= 503
    if (lua_isinteger(L, idx)) {
        written(e, ce_json_put_integer(&e->cb->b, (long long)lua_tointeger(L, idx)));
        return;
    }
    d = lua_tonumber(L, idx);
#else
    d = lua_tonumber(L, idx);
    if (d == floor(d) && d >= -9223372036854775808.0 && d < 9223372036854775808.0 &&
        !(d == 0 && signbit(d))) {
        written(e, ce_json_put_integer(&e->cb->b, (long long)d));
        return;
    }
#endif
    if (ce_json_put_double(&e->cb->b, (double)d) == CE_JSON_ENUMBER)
        codec_error(L, e->cb, "json_encode: cannot encode %s (JSON has no NaN or infinity)",
                    d != d  ? "NaN"
                    : d > 0 ? "inf"
                            : "-inf");
    written(e, 0);
}

static void encode_value(encoder *e, int idx, int depth)
{
    lua_State *L = e->L;
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        written(e, ce_jbuf_put(&e->cb->b, "null", 4));
        return;
    case LUA_TBOOLEAN:
        if (lua_toboolean(L, idx))
            written(e, ce_jbuf_put(&e->cb->b, "true", 4));
        else
            written(e, ce_jbuf_put(&e->cb->b, "false", 5));
        return;
    case LUA_TNUMBER:
        encode_number(e, idx);
        return;
    case LUA_TSTRING: {
        size_t len, bad = 0;
        const char *s = lua_tolstring(L, idx, &len);
        int rc = ce_json_put_string(&e->cb->b, s, len, &bad);
        if (rc == CE_JSON_EUTF8)
            codec_error(L, e->cb,
                        "json_encode: a string is not valid UTF-8 (byte %zu of %zu); "
                        "store bytes as a string payload or base64",
                        bad + 1, len);
        written(e, rc);
        return;
    }
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL) {
            written(e, ce_jbuf_put(&e->cb->b, "null", 4));
            return;
        }
        break;
    case LUA_TTABLE: {
        int kind;
        long long n;
        if (depth >= CE_JSON_MAX_DEPTH)
            codec_error(L, e->cb, "json_encode: nesting deeper than %d levels (a cycle?)",
                        CE_JSON_MAX_DEPTH);
        if (!lua_checkstack(L, 6)) codec_error(L, e->cb, "json_encode: Lua stack overflow");
        kind = marked_kind(e, idx);
        if (kind == 1)
            n = (long long)lua_rawlen(L, idx);
        else if (kind == 0)
            n = -1;
        else
            n = array_length(L, idx); /* -1: an object */
        if (n >= 0)
            encode_array(e, idx, n, depth + 1);
        else
            encode_object(e, idx, depth + 1);
        return;
    }
    default:
        break;
    }
    codec_error(L, e->cb, "json_encode: cannot encode a %s", luaL_typename(L, idx));
}

static int codec_json_encode(lua_State *L)
{
    encoder e;
    luaL_checkany(L, 1);
    lua_settop(L, 1);
    luaL_getmetatable(L, ARRAY_MT_KEY); /* 2 */
    e.L = L;
    e.array_mt = 2;
    e.cb = take_buffer(L); /* 3 */
    encode_value(&e, 1, 0);
    lua_pushlstring(L, e.cb->b.data ? e.cb->b.data : "", e.cb->b.len);
    give_back(e.cb);
    return 1;
}

/* ---- decode ---------------------------------------------------------------------------- */

typedef struct decoder {
    lua_State *L;
    codec_buffer *cb;
    int array_mt;
} decoder;

static int on_begin(void *ud, int is_array)
{
    decoder *d = (decoder *)ud;
    if (!lua_checkstack(d->L, 4)) codec_error(d->L, d->cb, "json_decode: Lua stack overflow");
    lua_newtable(d->L);
    if (is_array) {
        lua_pushvalue(d->L, d->array_mt);
        lua_setmetatable(d->L, -2);
    }
    return 0;
}

static int on_end(void *ud, int is_array)
{
    (void)ud;
    (void)is_array;
    return 0;
}

static int on_string(void *ud, const char *s, size_t n)
{
    lua_pushlstring(((decoder *)ud)->L, s, n);
    return 0;
}

static int on_integer(void *ud, long long v)
{
    decoder *d = (decoder *)ud;
#if LUA_VERSION_NUM < 503
    /* exactly a double when its significant bits (trailing zeros dropped) fit in 53 */
    unsigned long long m = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
    while (m && !(m & 1))
        m >>= 1;
    if (m >= (1ull << 53))
        codec_error(d->L, d->cb,
                    "json_decode: integer %lld cannot be held exactly by a LuaJIT "
                    "number (beyond 2^53)",
                    v);
    lua_pushnumber(d->L, (lua_Number)v);
#else
    lua_pushinteger(d->L, (lua_Integer)v);
#endif
    return 0;
}

static int on_real(void *ud, double v)
{
    lua_pushnumber(((decoder *)ud)->L, (lua_Number)v);
    return 0;
}

static int on_literal(void *ud, int which)
{
    lua_State *L = ((decoder *)ud)->L;
    if (which == 0)
        lua_pushlightuserdata(L, NULL);
    else
        lua_pushboolean(L, which == 2);
    return 0;
}

static int on_add(void *ud, int is_array, size_t index)
{
    lua_State *L = ((decoder *)ud)->L;
    if (is_array)
        lua_rawseti(L, -2, (int)index);
    else
        lua_rawset(L, -3);
    return 0;
}

static const ce_json_handler LUA_HANDLER = {on_begin,   on_end,  on_string,  on_string,
                                            on_integer, on_real, on_literal, on_add};

static int codec_json_decode(lua_State *L)
{
    size_t len;
    const char *s;
    decoder d;
    ce_json_error err = {0, {0}};
    codec_buffer *cb;
    if (lua_type(L, 1) != LUA_TSTRING)
        return luaL_error(L, "celers: json_decode: 'text' must be a string (got %s)",
                          luaL_typename(L, 1));
    s = lua_tolstring(L, 1, &len);
    lua_settop(L, 1);
    luaL_getmetatable(L, ARRAY_MT_KEY); /* 2 */
    d.L = L;
    d.array_mt = 2;
    cb = take_buffer(L); /* 3 */
    d.cb = cb;
    if (ce_json_decode(s, len, &LUA_HANDLER, &d, &cb->b, &err) < 0)
        return codec_error(L, cb, "json_decode: %s at byte %zu", err.message, err.pos + 1);
    give_back(cb);
    return 1;
}

/* ---- base64 and UTF-8 ------------------------------------------------------------------ */

static int codec_base64_encode(lua_State *L)
{
    size_t len;
    const char *s;
    codec_buffer *cb;
    if (lua_type(L, 1) != LUA_TSTRING)
        return luaL_error(L, "celers: base64_encode: 'bytes' must be a string (got %s)",
                          luaL_typename(L, 1));
    s = lua_tolstring(L, 1, &len);
    cb = take_buffer(L);
    if (ce_jbuf_reserve(&cb->b, CE_BASE64_ENCODED_LEN(len) + 1) < 0)
        return codec_error(L, cb, "base64_encode: out of memory");
    cb->b.len = ce_base64_encode((const unsigned char *)s, len, cb->b.data);
    lua_pushlstring(L, cb->b.data, cb->b.len);
    give_back(cb);
    return 1;
}

/* Returns the bytes, or nil and a message when the text is not base64. */
static int codec_base64_decode(lua_State *L)
{
    size_t len, out;
    const char *s;
    codec_buffer *cb;
    if (lua_type(L, 1) != LUA_TSTRING)
        return luaL_error(L, "celers: base64_decode: 'text' must be a string (got %s)",
                          luaL_typename(L, 1));
    s = lua_tolstring(L, 1, &len);
    cb = take_buffer(L);
    if (ce_jbuf_reserve(&cb->b, len / 4 * 3 + 3) < 0)
        return codec_error(L, cb, "base64_decode: out of memory");
    out = ce_base64_decode(s, len, (unsigned char *)cb->b.data);
    if (out == (size_t)-1) {
        give_back(cb);
        lua_pushnil(L);
        lua_pushliteral(L, "invalid base64");
        return 2;
    }
    lua_pushlstring(L, cb->b.data, out);
    give_back(cb);
    return 1;
}

static int codec_utf8_valid(lua_State *L)
{
    size_t len;
    const char *s;
    if (lua_type(L, 1) != LUA_TSTRING)
        return luaL_error(L, "celers: utf8_valid: 'text' must be a string (got %s)",
                          luaL_typename(L, 1));
    s = lua_tolstring(L, 1, &len);
    lua_pushboolean(L, ce_utf8_invalid_at(s, len) == len);
    return 1;
}

static const luaL_Reg CODEC_FUNCTIONS[] = {
    {"json_encode", codec_json_encode},     {"json_decode", codec_json_decode},
    {"base64_encode", codec_base64_encode}, {"base64_decode", codec_base64_decode},
    {"utf8_valid", codec_utf8_valid},       {NULL, NULL},
};

void lcodec_open(lua_State *L)
{
    luaL_newmetatable(L, ARRAY_MT_KEY);
    lua_pushliteral(L, "array");
    lua_setfield(L, -2, "__jsontype");
    lua_setfield(L, -2, "json_array_mt");
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "json_null");
    lua_pushinteger(L, CE_JSON_MAX_DEPTH);
    lua_setfield(L, -2, "json_max_depth");
    if (luaL_newmetatable(L, BUFFER_MT_KEY)) {
        lua_pushcfunction(L, buffer_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    new_buffer(L);
    for (const luaL_Reg *f = CODEC_FUNCTIONS; f->name; f++) {
        lua_pushvalue(L, -1);
        lua_pushcclosure(L, f->func, 1);
        lua_setfield(L, -3, f->name);
    }
    lua_pop(L, 1);
}
