/* Lua binding of the enqueue family (enqueue.h): enqueue, enqueue_at, enqueue_after,
 * enqueue_batch, enqueue_recurring. Tasks are read from Lua tables in one pass each. */
#include <string.h>

#include "auxiliar.h"
#include "enqueue.h"
#include "lbroker.h"
#include "lmethods.h"
#include "lrows.h"
#include "lunique.h"

static void count_by_type(lua_State *L, const char *name, lua_Number n)
{
    lua_getfield(L, LUA_REGISTRYINDEX, LBROKER_COUNTERS_KEY);
    lua_getfield(L, -1, "enqueued_by_type");
    lua_getfield(L, -1, name);
    lua_pushnumber(L, lua_tonumber(L, -1) + n);
    lua_setfield(L, -3, name);
    lua_pop(L, 3);
}

/* ---- reading tasks to enqueue -------------------------------------------------------- */

/* Payload at idx: a string as is, a table as JSON (string pushed onto the stack). */
static void read_payload(lua_State *L, int idx, const char *fn, ce_task_spec *t)
{
    size_t len = 0;
    if (lua_type(L, idx) == LUA_TSTRING) {
        t->payload = aux_check_bytes(L, idx, fn, "payload", &len);
        t->payload_type = "raw";
    } else if (lua_type(L, idx) == LUA_TTABLE) {
        t->payload = lrows_encode_json(L, idx, fn, "payload", &len);
        t->payload_type = "json";
    } else {
        aux_arg_error(L, fn, "payload", "a string or a table", idx);
    }
    t->payload_len = (unsigned long)len;
}

/* One pass (lua_next) over an options table, or with `item` a batch entry that also holds
 * name and payload: each known key sets its field, any other key raises. Table payloads and
 * metadata are encoded afterwards; their JSON strings are left on the stack for the caller
 * to keep alive until the call is done. */
static void read_task_table(lua_State *L, int idx, const char *fn, ce_task_spec *t, int item)
{
    const char *ptype = NULL;
    int payload_seen = 0, meta_table = 0;
    idx = lua_absindex(L, idx);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        const char *k;
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "celers: %s: option names must be strings", fn);
        k = lua_tostring(L, -2);
        /* Strings read here are held by the table until the call is done. */
        if (item && strcmp(k, "name") == 0)
            t->name = aux_check_name(L, -1, fn, k);
        else if (item && strcmp(k, "payload") == 0) {
            payload_seen = 1;
            if (lua_type(L, -1) == LUA_TSTRING) {
                size_t len;
                t->payload = aux_check_bytes(L, -1, fn, k, &len);
                t->payload_len = (unsigned long)len;
                t->payload_type = "raw";
            } else if (lua_type(L, -1) != LUA_TTABLE) {
                aux_arg_error(L, fn, "payload", "a string or a table", -1);
            }
        } else if (strcmp(k, "id") == 0)
            t->id = aux_check_string(L, -1, fn, k, NULL);
        else if (strcmp(k, "queue") == 0)
            t->queue = aux_check_name(L, -1, fn, k);
        else if (strcmp(k, "idempotency_key") == 0)
            t->idempotency_key = aux_check_string(L, -1, fn, k, NULL);
        else if (strcmp(k, "priority") == 0)
            t->priority = aux_check_integer(L, -1, fn, k, AUX_INT_MIN, AUX_INT_MAX);
        else if (strcmp(k, "max_retries") == 0)
            t->max_retries = aux_check_integer(L, -1, fn, k, 0, AUX_INT_MAX);
        else if (strcmp(k, "timeout") == 0) {
            t->timeout = aux_check_positive(L, -1, fn, k, AUX_MAX_SECONDS);
        } else if (strcmp(k, "delay") == 0) {
            t->delay = aux_check_seconds(L, -1, fn, k);
            t->has_delay = 1;
        } else if (strcmp(k, "eta") == 0) {
            t->eta = aux_check_within(L, -1, fn, k, AUX_MAX_UNIX_TIME);
            t->has_eta = 1;
        } else if (strcmp(k, "payload_type") == 0)
            ptype = aux_check_string(L, -1, fn, k, NULL);
        else if (strcmp(k, "metadata") == 0) {
            if (lua_type(L, -1) == LUA_TSTRING)
                t->metadata = aux_check_string(L, -1, fn, k, NULL);
            else if (lua_type(L, -1) == LUA_TTABLE)
                meta_table = 1;
            else
                aux_arg_error(L, fn, "metadata", "a table or a JSON string", -1);
        } else if (!item && strcmp(k, "unique") == 0) {
            /* read by lunique_read once the payload and queue are known */
        } else
            luaL_error(L, "celers: %s: unknown option '%s'", fn, k);
        lua_pop(L, 1);
    }
    if (t->id && strlen(t->id) != CE_UUID_LEN)
        luaL_error(L, "celers: %s: 'id' must be a 36-character UUID string", fn);
    if (item && payload_seen && !t->payload) {
        size_t len = 0;
        lua_getfield(L, idx, "payload");
        t->payload = lrows_encode_json(L, -1, fn, "payload", &len);
        t->payload_len = (unsigned long)len;
        t->payload_type = "json";
        lua_remove(L, -2);
    }
    if (item && !payload_seen)
        luaL_error(L, "celers: %s: 'payload' must be a string or a table (got nil)", fn);
    /* payload_type = "json" marks a string payload as JSON text already (bulk import keeps
     * the stored bytes and their type exactly); a table payload is always JSON. */
    if (ptype && strcmp(ptype, "raw") != 0 && strcmp(ptype, "json") != 0)
        luaL_error(L, "celers: %s: 'payload_type' must be \"raw\" or \"json\"", fn);
    if (ptype && strcmp(ptype, "json") == 0) t->payload_type = "json";
    if (meta_table) {
        lua_getfield(L, idx, "metadata");
        t->metadata = lrows_encode_json(L, -1, fn, "metadata", NULL);
        lua_remove(L, -2);
    }
}

/* ---- enqueue ------------------------------------------------------------------------- */

/* Common tail of the enqueue family: spec in t, options table at optidx (or 0). */
static int do_enqueue(lua_State *L, lbroker *b, const char *fn, ce_task_spec *t)
{
    char id[CE_UUID_LEN + 1];
    int created = 0;
    ce_error err;
    if (ce_enqueue(lbroker_conn(L, b, fn), b->queue, t, id, &created, &err) < 0)
        return aux_push_error(L, &err);
    if (created) {
        lbroker_count(L, "enqueued", 1);
        count_by_type(L, t->name, 1);
    }
    lua_pushstring(L, id);
    lua_pushboolean(L, created);
    return 2;
}

/* name at index base, payload at base + 1, options table at optidx. */
static void read_enqueue_args(lua_State *L, const char *fn, int base, int optidx, ce_task_spec *t)
{
    ce_task_spec_init(t);
    t->name = aux_check_name(L, base, fn, "name");
    read_payload(L, base + 1, fn, t);
    if (aux_opt_table(L, optidx, fn, "opts")) {
        read_task_table(L, optidx, fn, t, 0);
    }
}

static int broker_enqueue(lua_State *L)
{
    lbroker *b = lbroker_check(L, "enqueue");
    ce_task_spec t;
    lua_settop(L, 4);
    read_enqueue_args(L, "enqueue", 2, 4, &t);
    lunique_read(L, 4, 3, "enqueue", b->queue, &t);
    return do_enqueue(L, b, "enqueue", &t);
}

/* enqueue_at(name, payload, unix_time, opts) and enqueue_after(name, payload, seconds, opts):
 * the third argument is the eta or the delay, and wins over the same option in opts. */
static int enqueue_timed(lua_State *L, const char *fn, const char *arg, int is_eta)
{
    lbroker *b = lbroker_check(L, fn);
    ce_task_spec t;
    lua_Number v;
    lua_settop(L, 5);
    v = aux_check_within(L, 4, fn, arg, is_eta ? AUX_MAX_UNIX_TIME : AUX_MAX_SECONDS);
    read_enqueue_args(L, fn, 2, 5, &t);
    lunique_read(L, 5, 3, fn, b->queue, &t);
    t.has_eta = is_eta;
    t.eta = is_eta ? v : 0;
    t.has_delay = !is_eta;
    t.delay = is_eta ? 0 : v;
    return do_enqueue(L, b, fn, &t);
}

static int broker_enqueue_at(lua_State *L)
{
    return enqueue_timed(L, "enqueue_at", "unix_time", 1);
}

static int broker_enqueue_after(lua_State *L)
{
    return enqueue_timed(L, "enqueue_after", "seconds", 0);
}

static int broker_enqueue_batch(lua_State *L)
{
    static const char *const opts[] = {"skip_existing", NULL};
    const char *fn = "enqueue_batch";
    lbroker *b = lbroker_check(L, fn);
    size_t n;
    ce_task_spec *specs;
    char(*ids)[CE_UUID_LEN + 1];
    unsigned char *created;
    unsigned long long inserted = 0;
    int skip = 0, anchor;
    ce_error err;

    lua_settop(L, 3);
    if (!lua_istable(L, 2)) aux_arg_error(L, fn, "tasks", "a list of task tables", 2);
    if (aux_opt_table(L, 3, fn, "opts")) {
        aux_check_options(L, 3, fn, opts);
        skip = aux_field_bool(L, 3, "skip_existing", fn, 0);
    }
    n = lua_rawlen(L, 2);
    /* Userdata, not malloc: a Lua error while reading items must not leak them. */
    specs = lua_newuserdata(L, sizeof *specs * (n ? n : 1));
    ids = lua_newuserdata(L, sizeof *ids * (n ? n : 1));
    created = lua_newuserdata(L, n ? n : 1);
    lua_newtable(L); /* anchors encoded payloads and metadata */
    anchor = lua_gettop(L);
    for (size_t i = 0; i < n; i++) {
        int top, item;
        lua_rawgeti(L, 2, (int)i + 1);
        item = lua_gettop(L);
        if (!lua_istable(L, item))
            luaL_error(L, "celers: %s: 'tasks[%d]' must be a table (got %s)", fn, (int)i + 1,
                       luaL_typename(L, item));
        ce_task_spec_init(&specs[i]);
        top = lua_gettop(L);
        read_task_table(L, item, fn, &specs[i], 1);
        if (!specs[i].name)
            luaL_error(L, "celers: %s: 'tasks[%d].name' must be a non-empty string", fn,
                       (int)i + 1);
        /* move everything pushed for this item into the anchor table */
        while (lua_gettop(L) > top) {
            lua_rawseti(L, anchor, (int)lua_rawlen(L, anchor) + 1);
        }
        lua_pop(L, 1); /* item */
    }
    if (ce_enqueue_batch(lbroker_conn(L, b, fn), b->queue, specs, n, skip, ids, &inserted, created,
                         &err) < 0)
        return aux_push_error(L, &err);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        lua_pushstring(L, ids[i]);
        lua_rawseti(L, -2, (int)i + 1);
    }
    lbroker_count(L, "enqueued", (lua_Number)inserted);
    /* by name, in runs of one name (batches are usually one kind): one update per run */
    for (size_t i = 0, j; i < n; i = j) {
        size_t run = 0;
        const char *name = specs[i].name ? specs[i].name : "";
        for (j = i; j < n && specs[j].name && strcmp(specs[j].name, name) == 0; j++)
            run += created[j];
        if (j == i) j++; /* no name: cannot happen, the reader raised */
        if (run) count_by_type(L, name, (lua_Number)run);
    }
    lua_pushinteger(L, (lua_Integer)inserted);
    return 2;
}

static int broker_enqueue_recurring(lua_State *L)
{
    const char *fn = "enqueue_recurring";
    lbroker *b = lbroker_check(L, fn);
    const char *schedule;
    long long run_at;
    char id[CE_UUID_LEN + 1];
    int created = 0;
    ce_task_spec t;
    ce_error err;
    lua_settop(L, 6);
    schedule = aux_check_name(L, 2, fn, "schedule");
    run_at = aux_check_count(L, 3, fn, "run_at");
    /* The arguments stay on the stack, so the schedule name lives as long as the call. */
    read_enqueue_args(L, fn, 4, 6, &t);
    if (ce_enqueue_recurring(lbroker_conn(L, b, fn), b->queue, schedule, run_at, &t, id, &created,
                             &err) < 0)
        return aux_push_error(L, &err);
    if (created) {
        lbroker_count(L, "enqueued", 1);
        count_by_type(L, t.name, 1);
    }
    lua_pushstring(L, id);
    lua_pushboolean(L, created);
    return 2;
}

static const luaL_Reg methods[] = {
    {"enqueue", broker_enqueue},
    {"enqueue_at", broker_enqueue_at},
    {"enqueue_after", broker_enqueue_after},
    {"enqueue_batch", broker_enqueue_batch},
    {"enqueue_recurring", broker_enqueue_recurring},
    {NULL, NULL},
};

void lenqueue_open(lua_State *L)
{
    luaL_setfuncs(L, methods, 0);
}
