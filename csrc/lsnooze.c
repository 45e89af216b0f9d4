/* Lua binding of snooze (snooze.h): broker:snooze(task, seconds) -> true, false (the claim
 * is gone), or nil, err. */
#include "auxiliar.h"
#include "lbroker.h"
#include "lmethods.h"
#include "snooze.h"

static int broker_snooze(lua_State *L)
{
    const char *fn = "snooze";
    lbroker *b = lbroker_check(L, fn);
    ce_task_ref ref = {NULL, NULL};
    double seconds;
    int ok = 0;
    ce_error err;
    if (lua_type(L, 2) == LUA_TSTRING) {
        ref.id = aux_check_string(L, 2, fn, "task", NULL);
    } else if (lua_type(L, 2) == LUA_TTABLE) {
        ref.id = aux_field_string(L, 2, "id", fn, NULL);
        ref.claim_id = aux_field_string(L, 2, "claim_id", fn, NULL);
        if (!ref.id) luaL_error(L, "celers: %s: 'task' has no id", fn);
    } else {
        aux_arg_error(L, fn, "task", "a task table or an id string", 2);
    }
    seconds = aux_check_seconds(L, 3, fn, "seconds");
    if (ce_snooze(lbroker_conn(L, b, fn), ref, seconds, &ok, &err) < 0)
        return aux_push_error(L, &err);
    lua_pushboolean(L, ok);
    return 1;
}

static const luaL_Reg methods[] = {
    {"snooze", broker_snooze},
    {NULL, NULL},
};

void lsnooze_open(lua_State *L)
{
    luaL_setfuncs(L, methods, 0);
}
