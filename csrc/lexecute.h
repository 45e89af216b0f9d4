/* broker:execute(sql, ...): the escape hatch for SQL the broker's own methods do not cover. */
#ifndef CELERS_LEXECUTE_H
#define CELERS_LEXECUTE_H

#include "compat.h"

/* Add execute to the broker methods table on top of the stack. */
void lexecute_register(lua_State *L);

#endif
