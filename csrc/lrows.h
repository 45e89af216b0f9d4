/* Turning rows from the core into Lua tables, and JSON through the encoder and decoder
 * that init.lua registers (lua-cjson). Shared by every binding file. */
#ifndef CELERS_LROWS_H
#define CELERS_LROWS_H

#include "compat.h"
#include "statement.h"

#define LROWS_JSON_ENCODE_KEY "celers.json_encode"
#define LROWS_JSON_DECODE_KEY "celers.json_decode"

/* Set field key of the table on top from a cell (nothing for SQL NULL). */
void lrows_set_string(lua_State *L, const ce_value *v, const char *key);
void lrows_set_number(lua_State *L, const ce_value *v, const char *key);
void lrows_set_integer(lua_State *L, const ce_value *v, const char *key);
void lrows_set_count(lua_State *L, long long n, const char *key);
/* Set body (the stored bytes), payload (decoded when type is "json") and payload_type. */
void lrows_set_payload(lua_State *L, const ce_value *body, const ce_value *type);
/* Set key to the decoded JSON of a cell (its text when it does not decode). */
void lrows_set_json(lua_State *L, const ce_value *v, const char *key);

/* Encode the value at idx as JSON (raises naming fn and arg); the JSON string is pushed and
 * must stay on the stack while it is used. */
const char *lrows_encode_json(lua_State *L, int idx, const char *fn, const char *arg, size_t *len);
/* Push the JSON-decoded value of s, or s itself when it does not decode. */
void lrows_push_decoded(lua_State *L, const char *s, size_t len);

/* Push a task table from row r of task rows (enum ce_task_col order). */
void lrows_push_task(lua_State *L, const ce_rows *rows, unsigned int r);

#endif
