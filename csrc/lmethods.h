/* The binding files' open functions: each adds its methods to the broker methods table on
 * top of the stack. luaopen_celers_core (lcore.c) calls them, in the order listed there. */
#ifndef CELERS_LMETHODS_H
#define CELERS_LMETHODS_H

#include "compat.h"

void lenqueue_open(lua_State *L);     /* enqueue family */
void lclaim_open(lua_State *L);       /* claims, settles, queue control, get_task */
void ladmin_open(lua_State *L);       /* inspection, results, dead-letter queue */
void lupkeep_open(lua_State *L);      /* health, archiving, recovery, purges */
void lworkers_open(lua_State *L);     /* worker registry */
void lmigrate_open(lua_State *L);     /* migrate, list_migrations */
void ldashboard_open(lua_State *L);   /* the dashboard's reads */
void ltransaction_open(lua_State *L); /* transaction primitives: _tx_begin, _tx_end, _tx_execute */
void lsnooze_open(lua_State *L);      /* snooze */
void llimits_open(lua_State *L);      /* set_limit, remove_limit, list_limits */
void lexecute_open(lua_State *L);     /* execute: the caller's own statement (celers.celery) */

#endif
