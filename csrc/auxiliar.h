/* Lua plumbing shared by the binding files: every argument check (type, NUL bytes, integer
 * and seconds ranges) that names the argument, option tables, and turning a ce_error into
 * `nil, err`. The binding reads no argument any other way. */
#ifndef CELERS_AUXILIAR_H
#define CELERS_AUXILIAR_H

#include "compat.h"
#include "errors.h"

#define AUX_ERROR_MT "celers.error"

/* The longest delay, lease, timeout or age accepted: ten years. Longer ones (or inf) would
 * overflow the server's date arithmetic. */
#define AUX_MAX_SECONDS 315360000.0
/* The latest eta: 9999-12-31 23:59:59 UTC. */
#define AUX_MAX_UNIX_TIME 253402300799.0
/* An INT column. */
#define AUX_INT_MAX 2147483647LL
#define AUX_INT_MIN (-2147483647LL - 1)

/* Raise "celers: <fn>: '<arg>' must be <what> (got <type>)". */
int aux_arg_error(lua_State *L, const char *fn, const char *arg, const char *what, int idx);

/* Text (names, queues, ids, keys, worker ids, JSON text, messages): a string without NUL
 * bytes, which the server would otherwise cut or which C strings cannot carry. */
const char *aux_check_string(lua_State *L, int idx, const char *fn, const char *arg, size_t *len);
const char *aux_opt_string(lua_State *L, int idx, const char *fn, const char *arg);
/* Text that must not be empty. */
const char *aux_check_name(lua_State *L, int idx, const char *fn, const char *arg);
/* Bytes (payloads, results): any string, NUL bytes included; stored verbatim. */
const char *aux_check_bytes(lua_State *L, int idx, const char *fn, const char *arg, size_t *len);

/* A number (any, finite or not). */
lua_Number aux_check_number(lua_State *L, int idx, const char *fn, const char *arg);
/* A number within 0..max (negative: "must not be negative"; above max, inf, NaN: "must be
 * within 0..max"). */
lua_Number aux_check_within(lua_State *L, int idx, const char *fn, const char *arg, lua_Number max);
/* A number within 0 < n <= max ("must be positive" otherwise, or the range error). */
lua_Number aux_check_positive(lua_State *L, int idx, const char *fn, const char *arg,
                              lua_Number max);
/* Seconds: aux_check_within(..., AUX_MAX_SECONDS). */
lua_Number aux_check_seconds(lua_State *L, int idx, const char *fn, const char *arg);
/* An integer within min..max, read exactly (never through a double on Lua 5.3+); a float
 * with an integral value counts. */
long long aux_check_integer(lua_State *L, int idx, const char *fn, const char *arg, long long min,
                            long long max);
/* A count: an integer >= 0. */
long long aux_check_count(lua_State *L, int idx, const char *fn, const char *arg);

/* idx must be a table or nil (returns 0 for nil). */
int aux_opt_table(lua_State *L, int idx, const char *fn, const char *arg);
/* Raise on any key of the table at idx not in allowed (NULL-terminated). */
void aux_check_options(lua_State *L, int idx, const char *fn, const char *const *allowed);

/* Option fields of the table at idx, read raw (absent or nil -> the default). */
const char *aux_field_string(lua_State *L, int idx, const char *key, const char *fn,
                             const char *dflt);
/* A number within 0..max (0 excluded when positive); *present tells whether it was given. */
lua_Number aux_field_within(lua_State *L, int idx, const char *key, const char *fn, lua_Number dflt,
                            lua_Number max, int positive, int *present);
long long aux_field_integer(lua_State *L, int idx, const char *key, const char *fn, long long dflt,
                            long long min, long long max);
int aux_field_bool(lua_State *L, int idx, const char *key, const char *fn, int dflt);

/* Push n, or nil and the error when rc < 0. */
int aux_push_count(lua_State *L, int rc, unsigned long long n, const ce_error *err);
/* Push nil and an error table; returns 2. */
int aux_push_error(lua_State *L, const ce_error *err);
/* Create the error metatable (with __tostring) in the registry. */
void aux_error_open(lua_State *L);

#endif
