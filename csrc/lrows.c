#include "lrows.h"

#include <stdlib.h>
#include <string.h>

#include "auxiliar.h"
#include "task.h"

void lrows_set_string(lua_State *L, const ce_value *v, const char *key)
{
    if (!v->data) return;
    lua_pushlstring(L, v->data, v->len);
    lua_setfield(L, -2, key);
}

void lrows_set_number(lua_State *L, const ce_value *v, const char *key)
{
    if (!v->data) return;
    lua_pushnumber(L, strtod(v->data, NULL));
    lua_setfield(L, -2, key);
}

void lrows_set_integer(lua_State *L, const ce_value *v, const char *key)
{
    if (!v->data) return;
    lua_pushinteger(L, (lua_Integer)strtoll(v->data, NULL, 10));
    lua_setfield(L, -2, key);
}

void lrows_set_count(lua_State *L, long long n, const char *key)
{
    lua_pushinteger(L, (lua_Integer)n);
    lua_setfield(L, -2, key);
}

const char *lrows_encode_json(lua_State *L, int idx, const char *fn, const char *arg, size_t *len)
{
    idx = lua_absindex(L, idx);
    lua_getfield(L, LUA_REGISTRYINDEX, LROWS_JSON_ENCODE_KEY);
    if (lua_isnil(L, -1))
        luaL_error(L, "celers: %s: '%s' is a table; load require \"celers\" to encode JSON", fn,
                   arg);
    lua_pushvalue(L, idx);
    if (lua_pcall(L, 1, 1, 0) != 0)
        luaL_error(L, "celers: %s: '%s' cannot be encoded as JSON: %s", fn, arg,
                   lua_tostring(L, -1));
    if (lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "celers: %s: '%s': the JSON encoder returned a %s", fn, arg,
                   luaL_typename(L, -1));
    /* Without len the caller keeps it as C text, which a raw NUL byte would cut. */
    return len ? lua_tolstring(L, -1, len) : aux_check_string(L, -1, fn, arg, NULL);
}

void lrows_push_decoded(lua_State *L, const char *s, size_t len)
{
    lua_getfield(L, LUA_REGISTRYINDEX, LROWS_JSON_DECODE_KEY);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1); /* no decoder registered */
    } else {
        lua_pushlstring(L, s, len);
        if (lua_pcall(L, 1, 1, 0) == 0) return;
        lua_pop(L, 1); /* the error message; the function and argument are gone */
    }
    lua_pushlstring(L, s, len);
}

void lrows_set_json(lua_State *L, const ce_value *v, const char *key)
{
    if (!v->data) return;
    lrows_push_decoded(L, v->data, v->len);
    lua_setfield(L, -2, key);
}

void lrows_set_payload(lua_State *L, const ce_value *body, const ce_value *type)
{
    const char *bytes = body->data ? body->data : "";
    lua_pushlstring(L, bytes, body->len);
    lua_setfield(L, -2, "body");
    if (type->data && strcmp(type->data, "json") == 0)
        lrows_push_decoded(L, bytes, body->len);
    else
        lua_pushlstring(L, bytes, body->len);
    lua_setfield(L, -2, "payload");
    lrows_set_string(L, type, "payload_type");
}

void lrows_push_task(lua_State *L, const ce_rows *rows, unsigned int r)
{
    lua_createtable(L, 0, 22);
    lrows_set_string(L, CE_CELL(rows, r, CE_T_ID), "id");
    lrows_set_string(L, CE_CELL(rows, r, CE_T_NAME), "name");
    lrows_set_payload(L, CE_CELL(rows, r, CE_T_PAYLOAD), CE_CELL(rows, r, CE_T_PAYLOAD_TYPE));
    lrows_set_integer(L, CE_CELL(rows, r, CE_T_PRIORITY), "priority");
    lrows_set_integer(L, CE_CELL(rows, r, CE_T_RETRY_COUNT), "retry_count");
    lrows_set_integer(L, CE_CELL(rows, r, CE_T_MAX_RETRIES), "max_retries");
    lrows_set_string(L, CE_CELL(rows, r, CE_T_QUEUE), "queue");
    lrows_set_string(L, CE_CELL(rows, r, CE_T_STATE), "state");
    lrows_set_number(L, CE_CELL(rows, r, CE_T_CREATED_AT), "created_at");
    lrows_set_number(L, CE_CELL(rows, r, CE_T_SCHEDULED_AT), "scheduled_at");
    lrows_set_number(L, CE_CELL(rows, r, CE_T_STARTED_AT), "started_at");
    lrows_set_number(L, CE_CELL(rows, r, CE_T_COMPLETED_AT), "completed_at");
    lrows_set_string(L, CE_CELL(rows, r, CE_T_WORKER_ID), "worker_id");
    lrows_set_string(L, CE_CELL(rows, r, CE_T_ERROR), "error");
    lrows_set_json(L, CE_CELL(rows, r, CE_T_METADATA), "metadata");
    lrows_set_string(L, CE_CELL(rows, r, CE_T_CLAIM_ID), "claim_id");
    lrows_set_number(L, CE_CELL(rows, r, CE_T_LEASE_EXPIRES_AT), "lease_expires_at");
    lrows_set_number(L, CE_CELL(rows, r, CE_T_TIMEOUT), "timeout");
    lrows_set_string(L, CE_CELL(rows, r, CE_T_IDEMPOTENCY_KEY), "idempotency_key");
}
