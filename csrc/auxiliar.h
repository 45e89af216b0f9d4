/* Lua plumbing shared by the binding files: argument checks that name the argument,
 * option tables, and turning a ce_error into `nil, err`. */
#ifndef CELERS_AUXILIAR_H
#define CELERS_AUXILIAR_H

#include "compat.h"
#include "errors.h"

#define AUX_ERROR_MT "celers.error"

/* Raise "celers: <fn>: '<arg>' must be <what> (got <type>)". */
int aux_arg_error(lua_State *L, const char *fn, const char *arg, const char *what, int idx);
const char *aux_check_string(lua_State *L, int idx, const char *fn, const char *arg, size_t *len);
const char *aux_opt_string(lua_State *L, int idx, const char *fn, const char *arg);
lua_Number aux_check_number(lua_State *L, int idx, const char *fn, const char *arg);
lua_Number aux_check_nonneg(lua_State *L, int idx, const char *fn, const char *arg);
long long aux_check_count(lua_State *L, int idx, const char *fn, const char *arg);
/* The longest delay, lease or timeout accepted: ten years. Longer ones (or inf) would
 * overflow the server's date arithmetic into NULL. */
#define AUX_MAX_SECONDS 315360000.0
/* The latest eta: 9999-12-31 23:59:59 UTC. */
#define AUX_MAX_UNIX_TIME 253402300799.0
/* Raise unless 0 <= n <= max (NaN included). Returns n. */
lua_Number aux_check_range(lua_State *L, lua_Number n, lua_Number max, const char *fn,
                           const char *arg);
/* idx must be a table or nil (returns 0 for nil). */
int aux_opt_table(lua_State *L, int idx, const char *fn, const char *arg);
/* Raise on any key of the table at idx not in allowed (NULL-terminated). */
void aux_check_options(lua_State *L, int idx, const char *fn, const char *const *allowed);

/* Option fields of the table at idx (absent or nil -> the default). */
const char *aux_field_string(lua_State *L, int idx, const char *key, const char *fn,
                             const char *dflt);
lua_Number aux_field_number(lua_State *L, int idx, const char *key, const char *fn, lua_Number dflt,
                            int *present);
long long aux_field_integer(lua_State *L, int idx, const char *key, const char *fn, long long dflt);
int aux_field_bool(lua_State *L, int idx, const char *key, const char *fn, int dflt);

/* Push nil and an error table; returns 2. */
int aux_push_error(lua_State *L, const ce_error *err);
/* Create the error metatable (with __tostring) in the registry. */
void aux_error_open(lua_State *L);

#endif
