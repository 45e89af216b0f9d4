/* Lua binding of the schema migrations (migrate.h): migrate, list_migrations. */
#include "auxiliar.h"
#include "lbroker.h"
#include "lmethods.h"
#include "lrows.h"
#include "migrate.h"

static int broker_migrate(lua_State *L)
{
    lbroker *b = lbroker_check(L, "migrate");
    int *applied = lua_newuserdata(L, sizeof *applied * (ce_migrations_count + 1));
    int k = 0;
    ce_error err;
    if (ce_migrate(lbroker_conn(L, b, "migrate"), applied, &err) < 0)
        return aux_push_error(L, &err);
    lua_newtable(L);
    for (unsigned int i = 0; i < ce_migrations_count; i++) {
        if (!applied[i]) continue;
        lua_pushfstring(L, "%s_%s", ce_migrations[i].version, ce_migrations[i].name);
        lua_rawseti(L, -2, ++k);
    }
    return 1;
}

static int broker_list_migrations(lua_State *L)
{
    lbroker *b = lbroker_check(L, "list_migrations");
    ce_rows rows = {0};
    ce_error err;
    if (ce_list_migrations(lbroker_conn(L, b, "list_migrations"), &rows, &err) < 0)
        return aux_push_error(L, &err);
    lua_createtable(L, (int)rows.nrows, 0);
    for (unsigned int i = 0; i < rows.nrows; i++) {
        lua_createtable(L, 0, 3);
        lrows_set_string(L, CE_CELL(&rows, i, 0), "version");
        lrows_set_string(L, CE_CELL(&rows, i, 1), "name");
        lrows_set_number(L, CE_CELL(&rows, i, 2), "applied_at");
        lua_rawseti(L, -2, (int)i + 1);
    }
    ce_rows_free(&rows);
    return 1;
}

static const luaL_Reg methods[] = {
    {"migrate", broker_migrate},
    {"list_migrations", broker_list_migrations},
    {NULL, NULL},
};

void lmigrate_open(lua_State *L)
{
    luaL_setfuncs(L, methods, 0);
}
