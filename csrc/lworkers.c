/* Lua binding of the worker registry (workers.h): heartbeat_worker, list_workers,
 * remove_worker, prune_workers. */
#include <limits.h>
#include <string.h>
#include <unistd.h>

#include "auxiliar.h"
#include "lbroker.h"
#include "lmethods.h"
#include "lrows.h"
#include "process.h"
#include "workers.h"

/* heartbeat_worker{worker_id=, hostname=, pid=, processed=, failed=, info=} -> true.
 * Defaults: the broker's worker id, this host and process; info is a table or JSON text. */
static int heartbeat_worker(lua_State *L)
{
    static const char *const opts[] = {"worker_id", "hostname", "pid", "processed",
                                       "failed",    "info",     NULL};
    const char *fn = "heartbeat_worker";
    lbroker *b = lbroker_check(L, fn);
    char host[256];
    ce_worker_beat w;
    ce_error err;
    memset(&w, 0, sizeof w);
    lua_settop(L, 2);
    if (ce_hostname(host, sizeof host) < 0) strcpy(host, "localhost");
    w.queue = b->queue;
    w.hostname = host;
    w.pid = (long long)getpid();
    if (aux_opt_table(L, 2, fn, "opts")) {
        aux_check_options(L, 2, fn, opts);
        w.worker_id = aux_field_string(L, 2, "worker_id", fn, NULL);
        w.hostname = aux_field_string(L, 2, "hostname", fn, w.hostname);
        w.pid = aux_field_integer(L, 2, "pid", fn, w.pid, 0, AUX_INT_MAX);
        w.processed = aux_field_integer(L, 2, "processed", fn, 0, 0, LLONG_MAX);
        w.failed = aux_field_integer(L, 2, "failed", fn, 0, 0, LLONG_MAX);
        lua_getfield(L, 2, "info");
        if (lua_istable(L, -1))
            w.info = lrows_encode_json(L, -1, fn, "info", NULL);
        else if (lua_type(L, -1) == LUA_TSTRING)
            w.info = aux_check_string(L, -1, fn, "info", NULL);
        else if (!lua_isnil(L, -1))
            aux_arg_error(L, fn, "info", "a table or JSON text", -1);
    }
    /* The broker's worker id only now: Lua code run above may have replaced (freed) it. */
    if (!w.worker_id) w.worker_id = b->worker_id;
    if (ce_worker_heartbeat(lbroker_conn(L, b, fn), &w, &err) < 0) return aux_push_error(L, &err);
    lua_pushboolean(L, 1);
    return 1;
}

/* list_workers{stale_after=} -> list of {worker_id, queue, hostname, pid, started_at,
 * last_seen, age, processed, failed, info} */
static int list_workers(lua_State *L)
{
    static const char *const opts[] = {"stale_after", NULL};
    const char *fn = "list_workers";
    lbroker *b = lbroker_check(L, fn);
    double stale_after = -1;
    ce_rows rows = {0};
    ce_error err;
    if (aux_opt_table(L, 2, fn, "opts")) {
        aux_check_options(L, 2, fn, opts);
        stale_after = aux_field_within(L, 2, "stale_after", fn, -1, AUX_MAX_SECONDS, 0, NULL);
    }
    if (ce_list_workers(lbroker_conn(L, b, fn), b->queue, stale_after, &rows, &err) < 0)
        return aux_push_error(L, &err);
    lua_createtable(L, (int)rows.nrows, 0);
    for (unsigned int i = 0; i < rows.nrows; i++) {
        lua_createtable(L, 0, 10);
        lrows_set_string(L, CE_CELL(&rows, i, CE_W_ID), "worker_id");
        lrows_set_string(L, CE_CELL(&rows, i, CE_W_QUEUE), "queue");
        lrows_set_string(L, CE_CELL(&rows, i, CE_W_HOSTNAME), "hostname");
        lrows_set_integer(L, CE_CELL(&rows, i, CE_W_PID), "pid");
        lrows_set_number(L, CE_CELL(&rows, i, CE_W_STARTED_AT), "started_at");
        lrows_set_number(L, CE_CELL(&rows, i, CE_W_LAST_SEEN), "last_seen");
        lrows_set_number(L, CE_CELL(&rows, i, CE_W_AGE), "age");
        lrows_set_integer(L, CE_CELL(&rows, i, CE_W_PROCESSED), "processed");
        lrows_set_integer(L, CE_CELL(&rows, i, CE_W_FAILED), "failed");
        lrows_set_json(L, CE_CELL(&rows, i, CE_W_INFO), "info");
        lua_rawseti(L, -2, (int)i + 1);
    }
    ce_rows_free(&rows);
    return 1;
}

static int remove_worker(lua_State *L)
{
    const char *fn = "remove_worker";
    lbroker *b = lbroker_check(L, fn);
    const char *id =
        lua_isnoneornil(L, 2) ? b->worker_id : aux_check_string(L, 2, fn, "worker_id", NULL);
    int ok = 0;
    ce_error err;
    if (ce_remove_worker(lbroker_conn(L, b, fn), id, &ok, &err) < 0) return aux_push_error(L, &err);
    lua_pushboolean(L, ok);
    return 1;
}

static int prune_workers(lua_State *L)
{
    const char *fn = "prune_workers";
    lbroker *b = lbroker_check(L, fn);
    double older = aux_check_seconds(L, 2, fn, "older_than_s");
    unsigned long long n = 0;
    ce_error err;
    if (ce_prune_workers(lbroker_conn(L, b, fn), b->queue, older, &n, &err) < 0)
        return aux_push_error(L, &err);
    lua_pushinteger(L, (lua_Integer)n);
    return 1;
}

static const luaL_Reg methods[] = {
    {"heartbeat_worker", heartbeat_worker},
    {"list_workers", list_workers},
    {"remove_worker", remove_worker},
    {"prune_workers", prune_workers},
    {NULL, NULL},
};

void lworkers_open(lua_State *L)
{
    luaL_setfuncs(L, methods, 0);
}
