/* Shared plumbing of the admin binding files (ladmin.c, lupkeep.c). */
#ifndef CELERS_LADMIN_H
#define CELERS_LADMIN_H

#include "compat.h"
#include "errors.h"
#include "statement.h"

/* Push n, or nil and the error when rc < 0. */
int ladmin_push_count(lua_State *L, int rc, unsigned long long n, const ce_error *err);
/* A string argument that must not be empty. */
const char *ladmin_check_name(lua_State *L, int idx, const char *fn, const char *arg);

/* Health and upkeep methods (lupkeep.c) into the methods table on top of the stack. */
void lupkeep_register(lua_State *L);
/* Worker registry methods (lworkers.c). */
void lworkers_register(lua_State *L);
/* Dashboard reads (ldashboard.c). */
void ldashboard_register(lua_State *L);

#endif
