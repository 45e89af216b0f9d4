/* Module celers.core: connect, JSON hooks, ids, per-process counters, and the process
 * helpers a worker pool needs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mysql.h>

#include "auxiliar.h"
#include "config.h"
#include "connection.h"
#include "lcodec.h"
#include "lbroker.h"
#include "lmethods.h"
#include "lrows.h"
#include "process.h"
#include "uuid7.h"

#define CELERS_VERSION "0.1.0"

static const char *const CONNECT_OPTIONS[] = {
    "dsn",
    "host",
    "port",
    "user",
    "password",
    "database",
    "socket",
    "queue",
    "connect_timeout",
    "read_timeout",
    "write_timeout",
    "ssl",
    "lease",
    "retry",
    "reconnect_tries",
    "reconnect_backoff",
    "recover_interval",
    "worker_id",
    NULL,
};

/* Raise after freeing cfg: the message is copied first since it may live in cfg's error. */
static int config_fail(lua_State *L, ce_config *cfg, const char *msg)
{
    char buf[600];
    snprintf(buf, sizeof buf, "celers: connect: %s", msg);
    ce_config_free(cfg);
    return luaL_error(L, "%s", buf);
}

static int has_nul(lua_State *L, int idx)
{
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    return memchr(s, '\0', len) != NULL;
}

/* Set cfg key from the value on top of the stack (string, number or boolean); pops it. */
static void set_from_stack(lua_State *L, ce_config *cfg, const char *key, const char *name)
{
    char num[64];
    const char *value;
    ce_error err;
    int t = lua_type(L, -1);
    if (t == LUA_TNIL) {
        lua_pop(L, 1);
        return;
    }
    if (t == LUA_TBOOLEAN) {
        value = lua_toboolean(L, -1) ? "true" : "false";
    } else if (t == LUA_TNUMBER) {
        snprintf(num, sizeof num, "%.17g", (double)lua_tonumber(L, -1));
        value = num;
    } else if (t == LUA_TSTRING) {
        size_t len;
        value = lua_tolstring(L, -1, &len);
        if (memchr(value, '\0', len)) {
            char msg[200];
            snprintf(msg, sizeof msg, "'%s' must not contain NUL bytes", name);
            config_fail(L, cfg, msg);
        }
    } else {
        char msg[200];
        snprintf(msg, sizeof msg, "'%s' must be a string or a number (got %s)", name,
                 lua_typename(L, t));
        config_fail(L, cfg, msg);
        return;
    }
    if (ce_config_set(cfg, key, value, &err) < 0) config_fail(L, cfg, err.message);
    lua_pop(L, 1);
}

static void read_connect_table(lua_State *L, ce_config *cfg)
{
    static const char *const plain[] = {
        "host",
        "port",
        "user",
        "password",
        "database",
        "socket",
        "queue",
        "connect_timeout",
        "read_timeout",
        "write_timeout",
        "lease",
        "reconnect_tries",
        "reconnect_backoff",
        "recover_interval",
        NULL,
    };
    static const char *const ssl_keys[][2] = {{"ca", "ssl_ca"},         {"capath", "ssl_capath"},
                                              {"cert", "ssl_cert"},     {"key", "ssl_key"},
                                              {"cipher", "ssl_cipher"}, {"verify", "ssl_verify"}};
    static const char *const retry_keys[][2] = {
        {"base", "retry_base"}, {"factor", "retry_factor"}, {"max", "retry_max"}};
    ce_error err;

    lua_getfield(L, 1, "dsn");
    if (lua_type(L, -1) == LUA_TSTRING) {
        if (has_nul(L, -1)) config_fail(L, cfg, "'dsn' must not contain NUL bytes");
        if (ce_config_parse_dsn(cfg, lua_tostring(L, -1), &err) < 0)
            config_fail(L, cfg, err.message);
    } else if (!lua_isnil(L, -1)) {
        config_fail(L, cfg, "'dsn' must be a string");
    }
    lua_pop(L, 1);
    for (int i = 0; plain[i]; i++) {
        lua_getfield(L, 1, plain[i]);
        set_from_stack(L, cfg, plain[i], plain[i]);
    }
    lua_getfield(L, 1, "ssl");
    if (lua_istable(L, -1)) {
        lua_pushstring(L, "true");
        set_from_stack(L, cfg, "ssl", "ssl");
        for (size_t i = 0; i < sizeof ssl_keys / sizeof ssl_keys[0]; i++) {
            lua_getfield(L, -1, ssl_keys[i][0]);
            set_from_stack(L, cfg, ssl_keys[i][1], ssl_keys[i][0]);
        }
        lua_pop(L, 1);
    } else {
        set_from_stack(L, cfg, "ssl", "ssl");
    }
    lua_getfield(L, 1, "retry");
    if (lua_istable(L, -1)) {
        for (size_t i = 0; i < sizeof retry_keys / sizeof retry_keys[0]; i++) {
            lua_getfield(L, -1, retry_keys[i][0]);
            set_from_stack(L, cfg, retry_keys[i][1], retry_keys[i][0]);
        }
    } else if (!lua_isnil(L, -1)) {
        config_fail(L, cfg, "'retry' must be a table {base=, factor=, max=}");
    }
    lua_pop(L, 1);
}

static int core_connect(lua_State *L)
{
    ce_config cfg;
    ce_error err;
    ce_conn *conn;
    shared_conn *shared;
    char worker[300], host[256];
    const char *worker_opt = NULL;

    ce_config_init(&cfg);
    if (lua_type(L, 1) == LUA_TSTRING) {
        aux_check_string(L, 1, "connect", "dsn", NULL);
        if (ce_config_parse_dsn(&cfg, lua_tostring(L, 1), &err) < 0)
            config_fail(L, &cfg, err.message);
    } else if (lua_istable(L, 1)) {
        aux_check_options(L, 1, "connect", CONNECT_OPTIONS);
        lua_getfield(L, 1, "worker_id");
        if (!lua_isnil(L, -1)) /* anchored by the options table */
            worker_opt = aux_check_string(L, -1, "connect", "worker_id", NULL);
        lua_pop(L, 1);
        read_connect_table(L, &cfg);
    } else {
        aux_arg_error(L, "connect", "dsn", "a DSN string or an options table", 1);
    }
    if (!cfg.queue && ce_config_set(&cfg, "queue", "default", &err) < 0)
        config_fail(L, &cfg, err.message);
    if (!*cfg.queue) config_fail(L, &cfg, "'queue' must not be empty");
    if (ce_hostname(host, sizeof host) < 0) snprintf(host, sizeof host, "localhost");
    snprintf(worker, sizeof worker, "%s:%ld", host, (long)getpid());

    /* Everything that can raise is done; from here failures are returned. */
    shared = malloc(sizeof *shared);
    if (!shared) {
        ce_config_free(&cfg);
        return luaL_error(L, "celers: connect: out of memory");
    }
    conn = ce_conn_open(&cfg, &err);
    if (!conn) {
        free(shared);
        ce_config_free(&cfg);
        return aux_push_error(L, &err);
    }
    shared->conn = conn;
    shared->refs = 0;
    shared->tx_open = 0;
    /* lbroker_push takes the reference; if it raises, the userdata's __gc releases it. */
    lbroker_push(L, shared, conn->cfg.queue, worker_opt ? worker_opt : worker);
    ce_config_free(&cfg);
    return 1;
}

static int core_set_json(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_pushvalue(L, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, LROWS_JSON_ENCODE_KEY);
    lua_pushvalue(L, 2);
    lua_setfield(L, LUA_REGISTRYINDEX, LROWS_JSON_DECODE_KEY);
    return 0;
}

static int core_counters(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, LBROKER_COUNTERS_KEY);
    return 1;
}

static int core_uuid7(lua_State *L)
{
    char id[CE_UUID_LEN + 1];
    ce_uuid7(id);
    lua_pushstring(L, id);
    return 1;
}

static int core_error(lua_State *L)
{
    ce_error err;
    const char *code = aux_check_string(L, 1, "error", "code", NULL);
    const char *msg = aux_check_string(L, 2, "error", "message", NULL);
    ce_error_set(&err, CE_ESQL, "%s", msg);
    aux_push_error(L, &err);
    lua_pushstring(L, code);
    lua_setfield(L, -2, "code");
    lua_pushboolean(L, lua_toboolean(L, 3));
    lua_setfield(L, -2, "retryable");
    return 1;
}

/* ---- process helpers ----------------------------------------------------------------- */

static int core_fork(lua_State *L)
{
    pid_t pid = ce_fork();
    if (pid < 0) return luaL_error(L, "celers: fork failed");
    lua_pushinteger(L, (lua_Integer)pid);
    return 1;
}

static int core_wait(lua_State *L)
{
    pid_t pid =
        lua_isnoneornil(L, 1) ? -1 : (pid_t)aux_check_integer(L, 1, "wait", "pid", 1, AUX_INT_MAX);
    int nohang = lua_toboolean(L, 2);
    ce_child_status st;
    if (ce_wait(pid, nohang, &st) < 0) {
        lua_pushnil(L);
        lua_pushliteral(L, "no child");
        return 2;
    }
    if (st.pid == 0) {
        lua_pushinteger(L, 0);
        return 1;
    }
    lua_pushinteger(L, (lua_Integer)st.pid);
    lua_pushstring(L, st.exited ? "exited" : "killed");
    lua_pushinteger(L, st.code);
    return 3;
}

static int core_kill(lua_State *L)
{
    pid_t pid = (pid_t)aux_check_integer(L, 1, "kill", "pid", 1, AUX_INT_MAX);
    int sig = (int)aux_check_integer(L, 2, "kill", "signal", 0, 64);
    lua_pushboolean(L, ce_kill(pid, sig) == 0);
    return 1;
}

static int core_trap_stop_signals(lua_State *L)
{
    lua_pushboolean(L, ce_trap_stop_signals() == 0);
    return 1;
}

static int core_stop_signal(lua_State *L)
{
    int sig = ce_stop_signal();
    if (!sig) return 0;
    lua_pushinteger(L, sig);
    return 1;
}

static int core_clear_stop_signal(lua_State *L)
{
    (void)L;
    ce_clear_stop_signal();
    return 0;
}

static int core_default_stop_signals(lua_State *L)
{
    (void)L;
    ce_default_stop_signals();
    return 0;
}

static int core_sleep(lua_State *L)
{
    ce_sleep(aux_check_seconds(L, 1, "sleep", "seconds"));
    return 0;
}

static int core_time(lua_State *L)
{
    lua_pushnumber(L, ce_time());
    return 1;
}

static int core_monotonic(lua_State *L)
{
    lua_pushnumber(L, ce_monotonic());
    return 1;
}

static int core_getpid(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)getpid());
    return 1;
}

static int core_hostname(lua_State *L)
{
    char host[256];
    if (ce_hostname(host, sizeof host) < 0) snprintf(host, sizeof host, "localhost");
    lua_pushstring(L, host);
    return 1;
}

/* Test-only fault seam (connection.h): core._inject_fault{at=, op=, nth=, count=, errno=} arms,
 * core._inject_fault() disarms and returns how many firings were still pending.
 *   at    "before_send" | "after_send" | "error" | "commit" (= after_send of the COMMIT)
 *   op    a substring of the statement text ("COMMIT" for commits); any statement if absent
 *   nth   fire at the nth matching statement (default 1), then count - 1 more (default 1)
 *   errno the server error returned by at = "error" (1213, 1205, 2006, 2013, 1969, 3024, 1461) */
static int core_inject_fault(lua_State *L)
{
    static const char *const keys[] = {"at", "op", "nth", "count", "errno", NULL};
    ce_fault f;
    const char *at;
    memset(&f, 0, sizeof f);
    if (lua_isnoneornil(L, 1)) {
        lua_pushinteger(L, (lua_Integer)ce_fault_disarm());
        return 1;
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        int known = 0;
        lua_pop(L, 1);
        for (int i = 0; keys[i]; i++)
            known |= lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), keys[i]) == 0;
        if (!known) return luaL_error(L, "_inject_fault: unknown option");
    }
    lua_getfield(L, 1, "at");
    at = luaL_checkstring(L, -1);
    if (strcmp(at, "before_send") == 0)
        f.at = CE_FAULT_BEFORE_SEND;
    else if (strcmp(at, "after_send") == 0 || strcmp(at, "commit") == 0)
        f.at = CE_FAULT_AFTER_SEND;
    else if (strcmp(at, "error") == 0)
        f.at = CE_FAULT_ERROR;
    else
        return luaL_error(L,
                          "_inject_fault: 'at' must be before_send, after_send, commit or error");
    if (strcmp(at, "commit") == 0) snprintf(f.op, sizeof f.op, "COMMIT");
    lua_getfield(L, 1, "op");
    if (!lua_isnil(L, -1)) snprintf(f.op, sizeof f.op, "%s", luaL_checkstring(L, -1));
    lua_getfield(L, 1, "nth");
    f.nth = (unsigned long)luaL_optinteger(L, -1, 1);
    lua_getfield(L, 1, "count");
    f.count = (unsigned long)luaL_optinteger(L, -1, 1);
    lua_getfield(L, 1, "errno");
    f.errnum = (unsigned int)luaL_optinteger(L, -1, 0);
    if ((f.at == CE_FAULT_ERROR) != (f.errnum != 0))
        return luaL_error(L, "_inject_fault: 'errno' goes with at = \"error\" (and only there)");
    if (f.nth < 1 || f.count < 1) return luaL_error(L, "_inject_fault: nth and count must be >= 1");
    ce_fault_arm(&f);
    return 0;
}

static const luaL_Reg functions[] = {
    {"_inject_fault", core_inject_fault},
    {"connect", core_connect},
    {"set_json", core_set_json},
    {"counters", core_counters},
    {"uuid7", core_uuid7},
    {"error", core_error},
    {"fork", core_fork},
    {"wait", core_wait},
    {"kill", core_kill},
    {"trap_stop_signals", core_trap_stop_signals},
    {"stop_signal", core_stop_signal},
    {"clear_stop_signal", core_clear_stop_signal},
    {"default_stop_signals", core_default_stop_signals},
    {"sleep", core_sleep},
    {"time", core_time},
    {"monotonic", core_monotonic},
    {"getpid", core_getpid},
    {"hostname", core_hostname},
    {NULL, NULL},
};

/* Releases the client library when the Lua state closes (before the loader unloads this
 * library); the last state to close frees its process-wide state. */
static int library_gc(lua_State *L)
{
    (void)L;
    ce_library_release();
    return 0;
}

/* The client library is shared by every Lua state of the process (nginx has several):
 * each state holds one reference, and only the last to close ends the library. */
static void register_library_end(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, "celers.library");
    if (!lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return;
    }
    lua_pop(L, 1);
    ce_library_acquire();
    lua_newuserdata(L, 1);
    lua_newtable(L);
    lua_pushcfunction(L, library_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, "celers.library");
}

/* The binding files' methods, added to the broker's methods table in this order. */
static void (*const method_opens[])(lua_State *L) = {
    lenqueue_open,   lclaim_open,       ladmin_open,  lupkeep_open,  lworkers_open, lmigrate_open,
    ldashboard_open, ltransaction_open, lsnooze_open, lexecute_open, llimits_open,
};

static void open_counters(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, LBROKER_COUNTERS_KEY);
    if (lua_isnil(L, -1)) {
        lua_newtable(L);
        lua_newtable(L);
        lua_setfield(L, -2, "enqueued_by_type");
        lua_setfield(L, LUA_REGISTRYINDEX, LBROKER_COUNTERS_KEY);
    }
    lua_pop(L, 1);
}

int luaopen_celers_core(lua_State *L);
int luaopen_celers_core(lua_State *L)
{
    register_library_end(L);
    aux_error_open(L);
    open_counters(L);
    lua_newtable(L);
    luaL_setfuncs(L, functions, 0);
    lcodec_open(L);
    lbroker_open(L);
    for (size_t i = 0; i < sizeof method_opens / sizeof method_opens[0]; i++)
        method_opens[i](L);
    lua_setfield(L, -2, "broker_methods");
    lua_pushliteral(L, CELERS_VERSION);
    lua_setfield(L, -2, "version");
    lua_pushinteger(L, 15);
    lua_setfield(L, -2, "SIGTERM");
    lua_pushinteger(L, 9);
    lua_setfield(L, -2, "SIGKILL");
    lua_pushinteger(L, 2);
    lua_setfield(L, -2, "SIGINT");
    return 1;
}
