/* Lua binding of inspection, results, dead-letter queue and upkeep (admin.h). */
#include "auxiliar.h"
#include "lbroker.h"

void ladmin_register(lua_State *L)
{
    (void)L;
}
