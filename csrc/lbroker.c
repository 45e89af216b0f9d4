/* Lua binding of the queue operations (task.h, migrate.h) on the broker userdata. */
#include "lbroker.h"

#include <stdlib.h>
#include <string.h>

#include "auxiliar.h"
#include "handoff.h"
#include "migrate.h"
#include "task.h"

#define COUNTERS_KEY "celers.counters"
#define JSON_ENCODE_KEY "celers.json_encode"
#define JSON_DECODE_KEY "celers.json_decode"

/* ---- userdata plumbing -------------------------------------------------------------- */

static char *dup_or_raise(lua_State *L, const char *s)
{
    char *d = strdup(s);
    if (!d) luaL_error(L, "celers: out of memory");
    return d;
}

lbroker *lbroker_push(lua_State *L, shared_conn *shared, const char *queue, const char *worker_id)
{
    lbroker *b = lua_newuserdata(L, sizeof *b);
    memset(b, 0, sizeof *b);
    luaL_getmetatable(L, BROKER_MT);
    lua_setmetatable(L, -2);
    /* From here __gc owns whatever is set, so a failed strdup leaks nothing. */
    b->shared = shared;
    shared->refs++;
    b->queue = dup_or_raise(L, queue);
    b->worker_id = dup_or_raise(L, worker_id);
    return b;
}

static lbroker *to_broker(lua_State *L, const char *fn)
{
    lbroker *b = luaL_testudata(L, 1, BROKER_MT);
    if (!b)
        luaL_error(L, "celers: %s: 'self' must be a broker (call it as broker:%s(...))", fn, fn);
    return b;
}

lbroker *lbroker_check(lua_State *L, const char *fn)
{
    lbroker *b = to_broker(L, fn);
    if (!b->shared || !b->shared->conn) luaL_error(L, "celers: %s: the broker is closed", fn);
    return b;
}

static int broker_gc(lua_State *L)
{
    lbroker *b = luaL_testudata(L, 1, BROKER_MT);
    if (!b) return 0;
    if (b->shared && --b->shared->refs == 0) {
        ce_conn_close(b->shared->conn);
        free(b->shared);
    }
    b->shared = NULL;
    free(b->queue);
    free(b->worker_id);
    b->queue = b->worker_id = NULL;
    return 0;
}

static int broker_close(lua_State *L)
{
    lbroker *b = to_broker(L, "close");
    /* Closes the connection for every broker sharing it; memory goes with the last __gc. */
    if (b->shared && b->shared->conn) {
        ce_conn_close(b->shared->conn);
        b->shared->conn = NULL;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int broker_tostring(lua_State *L)
{
    lbroker *b = luaL_testudata(L, 1, BROKER_MT);
    if (b && b->queue)
        lua_pushfstring(L, "celers.broker(queue=%s%s)", b->queue,
                        b->shared && b->shared->conn ? "" : ", closed");
    else
        lua_pushliteral(L, "celers.broker(closed)");
    return 1;
}

void lbroker_count(lua_State *L, const char *key, lua_Number n)
{
    lua_getfield(L, LUA_REGISTRYINDEX, COUNTERS_KEY);
    lua_getfield(L, -1, key);
    lua_pushnumber(L, lua_tonumber(L, -1) + n);
    lua_setfield(L, -3, key);
    lua_pop(L, 2);
}

static void count_by_type(lua_State *L, const char *name, lua_Number n)
{
    lua_getfield(L, LUA_REGISTRYINDEX, COUNTERS_KEY);
    lua_getfield(L, -1, "enqueued_by_type");
    lua_getfield(L, -1, name);
    lua_pushnumber(L, lua_tonumber(L, -1) + n);
    lua_setfield(L, -3, name);
    lua_pop(L, 3);
}

/* How many tasks from i on share task i's name (batches are usually one kind). */
static lua_Number count_run(const ce_task_spec *specs, size_t n, size_t i)
{
    size_t j = i + 1;
    while (j < n && specs[j].name && specs[i].name && strcmp(specs[j].name, specs[i].name) == 0)
        j++;
    return (lua_Number)(j - i);
}

/* ---- JSON through the functions init.lua registers (lua-cjson) ---------------------- */

/* Encode the table at idx; the JSON string is pushed (the caller keeps it anchored). */
static const char *encode_json(lua_State *L, int idx, const char *fn, const char *arg, size_t *len)
{
    idx = lua_absindex(L, idx);
    lua_getfield(L, LUA_REGISTRYINDEX, JSON_ENCODE_KEY);
    if (lua_isnil(L, -1))
        luaL_error(L, "celers: %s: '%s' is a table; load require \"celers\" to encode JSON", fn,
                   arg);
    lua_pushvalue(L, idx);
    if (lua_pcall(L, 1, 1, 0) != 0)
        luaL_error(L, "celers: %s: '%s' cannot be encoded as JSON: %s", fn, arg,
                   lua_tostring(L, -1));
    return lua_tolstring(L, -1, len);
}

/* Push the decoded value of s, or s itself when it is not JSON. */
static void push_decoded(lua_State *L, const char *s, size_t len)
{
    lua_getfield(L, LUA_REGISTRYINDEX, JSON_DECODE_KEY);
    lua_pushlstring(L, s, len);
    if (lua_isnil(L, -2) || lua_pcall(L, 1, 1, 0) != 0) {
        lua_pop(L, 1);
        lua_pushlstring(L, s, len);
        lua_remove(L, -2);
    }
}

const char *lbroker_encode_json(lua_State *L, int idx, const char *fn, const char *arg, size_t *len)
{
    return encode_json(L, idx, fn, arg, len);
}

void lbroker_push_decoded(lua_State *L, const char *s, size_t len)
{
    push_decoded(L, s, len);
}

/* ---- reading tasks to enqueue -------------------------------------------------------- */

/* Payload at idx: a string as is, a table as JSON (string pushed onto the stack). */
static void read_payload(lua_State *L, int idx, const char *fn, ce_task_spec *t)
{
    size_t len = 0;
    if (lua_type(L, idx) == LUA_TSTRING) {
        t->payload = lua_tolstring(L, idx, &len);
        t->payload_type = "raw";
    } else if (lua_type(L, idx) == LUA_TTABLE) {
        t->payload = encode_json(L, idx, fn, "payload", &len);
        t->payload_type = "json";
    } else {
        aux_arg_error(L, fn, "payload", "a string or a table", idx);
    }
    t->payload_len = (unsigned long)len;
}

static lua_Number number_value(lua_State *L, const char *fn, const char *key, int integer)
{
    if (lua_type(L, -1) != LUA_TNUMBER || (integer && !lua_isinteger(L, -1)))
        aux_arg_error(L, fn, key, integer ? "an integer" : "a number", -1);
    return lua_tonumber(L, -1);
}

static const char *string_value(lua_State *L, const char *fn, const char *key)
{
    if (lua_type(L, -1) != LUA_TSTRING) aux_arg_error(L, fn, key, "a string", -1);
    return lua_tostring(L, -1); /* the table keeps it alive */
}

/* One pass (lua_next) over an options table, or with `item` a batch entry that also holds
 * name and payload: each known key sets its field, any other key raises. Table payloads and
 * metadata are encoded afterwards; their JSON strings are left on the stack for the caller
 * to keep alive until the call is done. */
static void read_task_table(lua_State *L, int idx, const char *fn, ce_task_spec *t, int item)
{
    const char *ptype = NULL;
    int payload_seen = 0, meta_table = 0, has_timeout = 0;
    idx = lua_absindex(L, idx);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        const char *k;
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "celers: %s: option names must be strings", fn);
        k = lua_tostring(L, -2);
        if (item && strcmp(k, "name") == 0)
            t->name = string_value(L, fn, k);
        else if (item && strcmp(k, "payload") == 0) {
            payload_seen = 1;
            if (lua_type(L, -1) == LUA_TSTRING) {
                size_t len;
                t->payload = lua_tolstring(L, -1, &len);
                t->payload_len = (unsigned long)len;
                t->payload_type = "raw";
            } else if (lua_type(L, -1) != LUA_TTABLE) {
                aux_arg_error(L, fn, "payload", "a string or a table", -1);
            }
        } else if (strcmp(k, "id") == 0)
            t->id = string_value(L, fn, k);
        else if (strcmp(k, "queue") == 0)
            t->queue = string_value(L, fn, k);
        else if (strcmp(k, "idempotency_key") == 0)
            t->idempotency_key = string_value(L, fn, k);
        else if (strcmp(k, "priority") == 0)
            t->priority = (long long)number_value(L, fn, k, 1);
        else if (strcmp(k, "max_retries") == 0)
            t->max_retries = (long long)number_value(L, fn, k, 1);
        else if (strcmp(k, "timeout") == 0) {
            t->timeout = number_value(L, fn, k, 0);
            has_timeout = 1;
        } else if (strcmp(k, "delay") == 0) {
            t->delay = number_value(L, fn, k, 0);
            t->has_delay = 1;
        } else if (strcmp(k, "eta") == 0) {
            t->eta = number_value(L, fn, k, 0);
            t->has_eta = 1;
        } else if (strcmp(k, "payload_type") == 0)
            ptype = string_value(L, fn, k);
        else if (strcmp(k, "metadata") == 0) {
            if (lua_type(L, -1) == LUA_TSTRING)
                t->metadata = lua_tostring(L, -1);
            else if (lua_type(L, -1) == LUA_TTABLE)
                meta_table = 1;
            else
                aux_arg_error(L, fn, "metadata", "a table or a JSON string", -1);
        } else
            luaL_error(L, "celers: %s: unknown option '%s'", fn, k);
        lua_pop(L, 1);
    }
    if (t->max_retries < 0) luaL_error(L, "celers: %s: 'max_retries' must not be negative", fn);
    /* Fix (spec/errors_spec.lua): timeout = 0 was taken silently as "no timeout"; a given
     * timeout must be positive, as before the one-pass option reader. */
    if (has_timeout && !(t->timeout > 0))
        luaL_error(L, "celers: %s: 'timeout' must be positive", fn);
    if (t->has_delay && !(t->delay >= 0))
        luaL_error(L, "celers: %s: 'delay' must not be negative", fn);
    if (t->id && strlen(t->id) != CE_UUID_LEN)
        luaL_error(L, "celers: %s: 'id' must be a 36-character UUID string", fn);
    if (item && payload_seen && !t->payload) {
        size_t len = 0;
        lua_getfield(L, idx, "payload");
        t->payload = encode_json(L, -1, fn, "payload", &len);
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
        t->metadata = encode_json(L, -1, fn, "metadata", NULL);
        lua_remove(L, -2);
    }
}

/* ---- pushing results ----------------------------------------------------------------- */

static void set_string(lua_State *L, const ce_value *v, const char *key)
{
    if (!v->data) return;
    lua_pushlstring(L, v->data, v->len);
    lua_setfield(L, -2, key);
}

static void set_number(lua_State *L, const ce_value *v, const char *key)
{
    if (!v->data) return;
    lua_pushnumber(L, strtod(v->data, NULL));
    lua_setfield(L, -2, key);
}

static void set_integer(lua_State *L, const ce_value *v, const char *key)
{
    if (!v->data) return;
    lua_pushinteger(L, (lua_Integer)strtoll(v->data, NULL, 10));
    lua_setfield(L, -2, key);
}

void lbroker_push_task(lua_State *L, const void *vrows, unsigned int r)
{
    const ce_rows *rows = vrows;
    const ce_value *body = CE_CELL(rows, r, CE_T_PAYLOAD);
    const ce_value *type = CE_CELL(rows, r, CE_T_PAYLOAD_TYPE);
    const ce_value *meta = CE_CELL(rows, r, CE_T_METADATA);
    lua_createtable(L, 0, 22);
    set_string(L, CE_CELL(rows, r, CE_T_ID), "id");
    set_string(L, CE_CELL(rows, r, CE_T_NAME), "name");
    lua_pushlstring(L, body->data ? body->data : "", body->len);
    lua_setfield(L, -2, "body");
    if (type->data && strcmp(type->data, "json") == 0)
        push_decoded(L, body->data, body->len);
    else
        lua_pushlstring(L, body->data ? body->data : "", body->len);
    lua_setfield(L, -2, "payload");
    set_string(L, type, "payload_type");
    set_integer(L, CE_CELL(rows, r, CE_T_PRIORITY), "priority");
    set_integer(L, CE_CELL(rows, r, CE_T_RETRY_COUNT), "retry_count");
    set_integer(L, CE_CELL(rows, r, CE_T_MAX_RETRIES), "max_retries");
    set_string(L, CE_CELL(rows, r, CE_T_QUEUE), "queue");
    set_string(L, CE_CELL(rows, r, CE_T_STATE), "state");
    set_number(L, CE_CELL(rows, r, CE_T_CREATED_AT), "created_at");
    set_number(L, CE_CELL(rows, r, CE_T_SCHEDULED_AT), "scheduled_at");
    set_number(L, CE_CELL(rows, r, CE_T_STARTED_AT), "started_at");
    set_number(L, CE_CELL(rows, r, CE_T_COMPLETED_AT), "completed_at");
    set_string(L, CE_CELL(rows, r, CE_T_WORKER_ID), "worker_id");
    set_string(L, CE_CELL(rows, r, CE_T_ERROR), "error");
    if (meta->data) {
        push_decoded(L, meta->data, meta->len);
        lua_setfield(L, -2, "metadata");
    }
    set_string(L, CE_CELL(rows, r, CE_T_CLAIM_ID), "claim_id");
    set_number(L, CE_CELL(rows, r, CE_T_LEASE_EXPIRES_AT), "lease_expires_at");
    set_number(L, CE_CELL(rows, r, CE_T_TIMEOUT), "timeout");
    set_string(L, CE_CELL(rows, r, CE_T_IDEMPOTENCY_KEY), "idempotency_key");
}

/* A task argument: a task table (id and claim) or a bare id string. */
static ce_task_ref read_ref(lua_State *L, int idx, const char *fn)
{
    ce_task_ref ref = {NULL, NULL};
    if (lua_type(L, idx) == LUA_TSTRING) {
        ref.id = lua_tostring(L, idx);
    } else if (lua_type(L, idx) == LUA_TTABLE) {
        ref.id = aux_field_string(L, idx, "id", fn, NULL);
        ref.claim_id = aux_field_string(L, idx, "claim_id", fn, NULL);
        if (!ref.id) luaL_error(L, "celers: %s: 'task' has no id", fn);
    } else {
        aux_arg_error(L, fn, "task", "a task table or an id string", idx);
    }
    return ref;
}

/* ---- enqueue ------------------------------------------------------------------------- */

/* Common tail of the enqueue family: spec in t, options table at optidx (or 0). */
static int do_enqueue(lua_State *L, lbroker *b, ce_task_spec *t)
{
    char id[CE_UUID_LEN + 1];
    int created = 0;
    ce_error err;
    if (ce_enqueue(b->shared->conn, b->queue, t, id, &created, &err) < 0)
        return aux_push_error(L, &err);
    if (created) {
        lbroker_count(L, "enqueued", 1);
        count_by_type(L, t->name, 1);
    }
    lua_pushstring(L, id);
    lua_pushboolean(L, created);
    return 2;
}

static void read_enqueue_args(lua_State *L, const char *fn, int optidx, ce_task_spec *t)
{
    ce_task_spec_init(t);
    t->name = aux_check_string(L, 2, fn, "name", NULL);
    if (!*t->name) luaL_error(L, "celers: %s: 'name' must not be empty", fn);
    read_payload(L, 3, fn, t);
    if (aux_opt_table(L, optidx, fn, "opts")) {
        read_task_table(L, optidx, fn, t, 0);
    }
}

static int broker_enqueue(lua_State *L)
{
    lbroker *b = lbroker_check(L, "enqueue");
    ce_task_spec t;
    lua_settop(L, 4);
    read_enqueue_args(L, "enqueue", 4, &t);
    return do_enqueue(L, b, &t);
}

static int broker_enqueue_at(lua_State *L)
{
    lbroker *b = lbroker_check(L, "enqueue_at");
    ce_task_spec t;
    lua_Number when;
    lua_settop(L, 5);
    when = aux_check_number(L, 4, "enqueue_at", "unix_time");
    read_enqueue_args(L, "enqueue_at", 5, &t);
    t.has_eta = 1;
    t.eta = when;
    t.has_delay = 0;
    return do_enqueue(L, b, &t);
}

static int broker_enqueue_after(lua_State *L)
{
    lbroker *b = lbroker_check(L, "enqueue_after");
    ce_task_spec t;
    lua_Number secs;
    lua_settop(L, 5);
    secs = aux_check_nonneg(L, 4, "enqueue_after", "seconds");
    read_enqueue_args(L, "enqueue_after", 5, &t);
    t.has_delay = 1;
    t.delay = secs;
    t.has_eta = 0;
    return do_enqueue(L, b, &t);
}

static int broker_enqueue_batch(lua_State *L)
{
    static const char *const opts[] = {"skip_existing", NULL};
    const char *fn = "enqueue_batch";
    lbroker *b = lbroker_check(L, fn);
    size_t n;
    ce_task_spec *specs;
    char(*ids)[CE_UUID_LEN + 1];
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
        if (!specs[i].name || !*specs[i].name)
            luaL_error(L, "celers: %s: 'tasks[%d].name' must be a non-empty string", fn,
                       (int)i + 1);
        /* move everything pushed for this item into the anchor table */
        while (lua_gettop(L) > top) {
            lua_rawseti(L, anchor, (int)lua_rawlen(L, anchor) + 1);
        }
        lua_pop(L, 1); /* item */
    }
    if (ce_enqueue_batch(b->shared->conn, b->queue, specs, n, skip, ids, &inserted, &err) < 0)
        return aux_push_error(L, &err);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        lua_pushstring(L, ids[i]);
        lua_rawseti(L, -2, (int)i + 1);
    }
    lbroker_count(L, "enqueued", (lua_Number)inserted);
    if (inserted == n) {
        const char *prev = NULL;
        for (size_t i = 0; i < n; i++) {
            const char *name = specs[i].name;
            if (name && (!prev || strcmp(name, prev) != 0))
                count_by_type(L, name, count_run(specs, n, i));
            prev = name;
        }
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
    schedule = aux_check_string(L, 2, fn, "schedule", NULL);
    run_at = aux_check_count(L, 3, fn, "run_at");
    lua_remove(L, 2);
    lua_remove(L, 2); /* now: self, name, payload, opts */
    read_enqueue_args(L, fn, 4, &t);
    if (ce_enqueue_recurring(b->shared->conn, b->queue, schedule, run_at, &t, id, &created, &err) <
        0)
        return aux_push_error(L, &err);
    if (created) {
        lbroker_count(L, "enqueued", 1);
        count_by_type(L, t.name, 1);
    }
    lua_pushstring(L, id);
    lua_pushboolean(L, created);
    return 2;
}

/* ---- dequeue ------------------------------------------------------------------------- */

static int claim(lua_State *L, lbroker *b, unsigned int n, const char *worker, double lease,
                 int as_list)
{
    ce_rows rows = {0};
    ce_error err;
    if (ce_claim(b->shared->conn, b->queue, n, worker ? worker : b->worker_id, lease, &rows, &err) <
        0)
        return aux_push_error(L, &err);
    if (!as_list) {
        if (rows.nrows == 0)
            lua_pushnil(L);
        else
            lbroker_push_task(L, &rows, 0);
    } else {
        lua_createtable(L, (int)rows.nrows, 0);
        for (unsigned int i = 0; i < rows.nrows; i++) {
            lbroker_push_task(L, &rows, i);
            lua_rawseti(L, -2, (int)i + 1);
        }
    }
    ce_rows_free(&rows);
    return 1;
}

static void read_dequeue_opts(lua_State *L, int idx, const char *fn, lbroker *b,
                              const char **worker, double *lease)
{
    static const char *const opts[] = {"worker_id", "lease", NULL};
    *worker = NULL;
    *lease = b->shared->conn->cfg.lease;
    if (aux_opt_table(L, idx, fn, "opts")) {
        int has;
        aux_check_options(L, idx, fn, opts);
        *worker = aux_field_string(L, idx, "worker_id", fn, NULL);
        *lease = aux_field_number(L, idx, "lease", fn, *lease, &has);
        if (has && !(*lease > 0)) luaL_error(L, "celers: %s: 'lease' must be positive", fn);
    }
}

static int broker_dequeue(lua_State *L)
{
    lbroker *b = lbroker_check(L, "dequeue");
    const char *worker;
    double lease;
    read_dequeue_opts(L, 2, "dequeue", b, &worker, &lease);
    return claim(L, b, 1, worker, lease, 0);
}

static int broker_dequeue_with_worker_id(lua_State *L)
{
    lbroker *b = lbroker_check(L, "dequeue_with_worker_id");
    const char *worker = aux_check_string(L, 2, "dequeue_with_worker_id", "worker_id", NULL);
    return claim(L, b, 1, worker, b->shared->conn->cfg.lease, 0);
}

static int broker_dequeue_batch(lua_State *L)
{
    lbroker *b = lbroker_check(L, "dequeue_batch");
    long long n = aux_check_count(L, 2, "dequeue_batch", "n");
    const char *worker;
    double lease;
    if (n > 10000) luaL_error(L, "celers: dequeue_batch: 'n' must be at most 10000");
    read_dequeue_opts(L, 3, "dequeue_batch", b, &worker, &lease);
    if (n == 0) {
        lua_newtable(L);
        return 1;
    }
    return claim(L, b, (unsigned int)n, worker, lease, 1);
}

/* Ack the task in hand (nil: none) and claim the next, in one round trip.
 * Returns acked (boolean) and the next task or nil. */
static int broker_ack_and_dequeue(lua_State *L)
{
    const char *fn = "ack_and_dequeue";
    lbroker *b = lbroker_check(L, fn);
    ce_task_ref prev = {NULL, NULL};
    const char *worker;
    double lease;
    int acked = 0;
    ce_rows rows = {0};
    ce_error err;
    if (!lua_isnoneornil(L, 2)) prev = read_ref(L, 2, fn);
    read_dequeue_opts(L, 3, fn, b, &worker, &lease);
    if (ce_ack_and_claim(b->shared->conn, b->queue, prev, worker ? worker : b->worker_id, lease,
                         &acked, &rows, &err) < 0)
        return aux_push_error(L, &err);
    if (acked) lbroker_count(L, "acked", 1);
    lua_pushboolean(L, acked);
    if (rows.nrows)
        lbroker_push_task(L, &rows, 0);
    else
        lua_pushnil(L);
    ce_rows_free(&rows);
    return 2;
}

/* ---- settle -------------------------------------------------------------------------- */

static int push_ok(lua_State *L, int rc, int ok, const ce_error *err)
{
    if (rc < 0) return aux_push_error(L, err);
    lua_pushboolean(L, ok);
    return 1;
}

static int broker_ack(lua_State *L)
{
    lbroker *b = lbroker_check(L, "ack");
    ce_task_ref ref = read_ref(L, 2, "ack");
    int ok = 0, rc;
    ce_error err;
    rc = ce_ack(b->shared->conn, ref, &ok, &err);
    if (rc == 0 && ok) lbroker_count(L, "acked", 1);
    return push_ok(L, rc, ok, &err);
}

static int broker_ack_batch(lua_State *L)
{
    lbroker *b = lbroker_check(L, "ack_batch");
    size_t n;
    ce_task_ref *refs;
    unsigned long long acked = 0;
    ce_error err;
    if (!lua_istable(L, 2)) aux_arg_error(L, "ack_batch", "tasks", "a list of tasks", 2);
    n = lua_rawlen(L, 2);
    refs = lua_newuserdata(L, sizeof *refs * (n ? n : 1));
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, 2, (int)i + 1);
        refs[i] = read_ref(L, -1, "ack_batch"); /* strings stay alive in the tasks list */
        lua_pop(L, 1);
    }
    if (ce_ack_batch(b->shared->conn, refs, n, &acked, &err) < 0) return aux_push_error(L, &err);
    lbroker_count(L, "acked", (lua_Number)acked);
    lua_pushinteger(L, (lua_Integer)acked);
    return 1;
}

static int push_outcome(lua_State *L, int rc, int outcome, const ce_error *err)
{
    if (rc < 0) return aux_push_error(L, err);
    if (outcome == 1) lbroker_count(L, "retried", 1);
    if (outcome == 2) lbroker_count(L, "dead_lettered", 1);
    if (outcome) lbroker_count(L, "rejected", 1);
    lua_pushboolean(L, outcome != 0);
    if (outcome == 0) return 1;
    lua_pushstring(L, outcome == 1 ? "retry" : "dead_letter");
    return 2;
}

static int broker_reject(lua_State *L)
{
    static const char *const opts[] = {"requeue", "error", "delay", NULL};
    const char *fn = "reject";
    lbroker *b = lbroker_check(L, fn);
    ce_task_ref ref = read_ref(L, 2, fn);
    int requeue = 1, outcome = 0, rc, has = 0;
    double delay = -1;
    const char *error = NULL;
    ce_error err;
    if (aux_opt_table(L, 3, fn, "opts")) {
        aux_check_options(L, 3, fn, opts);
        requeue = aux_field_bool(L, 3, "requeue", fn, 1);
        error = aux_field_string(L, 3, "error", fn, NULL);
        delay = aux_field_number(L, 3, "delay", fn, -1, &has);
        if (has && !(delay >= 0)) luaL_error(L, "celers: %s: 'delay' must not be negative", fn);
    }
    rc = ce_reject(b->shared->conn, ref, requeue, delay, error, &outcome, &err);
    return push_outcome(L, rc, outcome, &err);
}

static int broker_retry(lua_State *L)
{
    const char *fn = "retry";
    lbroker *b = lbroker_check(L, fn);
    ce_task_ref ref = read_ref(L, 2, fn);
    double delay = lua_isnoneornil(L, 3) ? -1 : aux_check_nonneg(L, 3, fn, "delay");
    const char *error = aux_opt_string(L, 4, fn, "error");
    int outcome = 0, rc;
    ce_error err;
    rc = ce_reject(b->shared->conn, ref, 1, delay, error, &outcome, &err);
    return push_outcome(L, rc, outcome, &err);
}

static int broker_touch(lua_State *L)
{
    lbroker *b = lbroker_check(L, "touch");
    ce_task_ref ref = read_ref(L, 2, "touch");
    double secs = lua_isnoneornil(L, 3) ? -1 : aux_check_nonneg(L, 3, "touch", "seconds");
    int ok = 0, rc;
    ce_error err;
    rc = ce_touch(b->shared->conn, ref, secs, &ok, &err);
    return push_ok(L, rc, ok, &err);
}

static int broker_cancel(lua_State *L)
{
    lbroker *b = lbroker_check(L, "cancel");
    ce_task_ref ref = read_ref(L, 2, "cancel");
    int ok = 0, rc;
    ce_error err;
    rc = ce_cancel(b->shared->conn, ref.id, &ok, &err);
    return push_ok(L, rc, ok, &err);
}

/* ---- queue control ------------------------------------------------------------------- */

static int broker_pause(lua_State *L)
{
    lbroker *b = lbroker_check(L, "pause");
    ce_error err;
    return push_ok(L, ce_pause(b->shared->conn, b->queue, &err), 1, &err);
}

static int broker_resume(lua_State *L)
{
    lbroker *b = lbroker_check(L, "resume");
    ce_error err;
    return push_ok(L, ce_resume(b->shared->conn, b->queue, &err), 1, &err);
}

static int broker_is_paused(lua_State *L)
{
    lbroker *b = lbroker_check(L, "is_paused");
    int paused = 0, rc;
    ce_error err;
    rc = ce_is_paused(b->shared->conn, b->queue, &paused, &err);
    return push_ok(L, rc, paused, &err);
}

static int broker_queue_size(lua_State *L)
{
    lbroker *b = lbroker_check(L, "queue_size");
    long long size = 0;
    ce_error err;
    if (ce_queue_size(b->shared->conn, b->queue, &size, &err) < 0) return aux_push_error(L, &err);
    lua_pushinteger(L, (lua_Integer)size);
    return 1;
}

static int broker_recover_expired(lua_State *L)
{
    lbroker *b = lbroker_check(L, "recover_expired");
    unsigned long long requeued = 0, dead = 0;
    ce_error err;
    if (ce_recover_expired(b->shared->conn, b->queue, -1, &requeued, &dead, &err) < 0)
        return aux_push_error(L, &err);
    lbroker_count(L, "dead_lettered", (lua_Number)dead);
    lua_pushinteger(L, (lua_Integer)requeued);
    lua_pushinteger(L, (lua_Integer)dead);
    return 2;
}

static int broker_get_task(lua_State *L)
{
    lbroker *b = lbroker_check(L, "get_task");
    const char *id = aux_check_string(L, 2, "get_task", "id", NULL);
    ce_rows rows = {0};
    ce_error err;
    if (ce_get_task(b->shared->conn, id, &rows, &err) < 0) return aux_push_error(L, &err);
    if (rows.nrows)
        lbroker_push_task(L, &rows, 0);
    else
        lua_pushnil(L);
    ce_rows_free(&rows);
    return 1;
}

/* ---- broker, queue, migrations ------------------------------------------------------- */

static int broker_with_queue(lua_State *L)
{
    lbroker *b = lbroker_check(L, "with_queue");
    const char *queue = aux_check_string(L, 2, "with_queue", "queue", NULL);
    if (!*queue) luaL_error(L, "celers: with_queue: 'queue' must not be empty");
    lbroker_push(L, b->shared, queue, b->worker_id);
    return 1;
}

static int broker_queue(lua_State *L)
{
    lbroker *b = to_broker(L, "queue");
    lua_pushstring(L, b->queue ? b->queue : "");
    return 1;
}

static int broker_worker_id(lua_State *L)
{
    lbroker *b = lbroker_check(L, "worker_id");
    if (!lua_isnoneornil(L, 2)) {
        char *w = dup_or_raise(L, aux_check_string(L, 2, "worker_id", "worker_id", NULL));
        free(b->worker_id);
        b->worker_id = w;
    }
    lua_pushstring(L, b->worker_id);
    return 1;
}

static int broker_migrate(lua_State *L)
{
    lbroker *b = lbroker_check(L, "migrate");
    int *applied = lua_newuserdata(L, sizeof *applied * (ce_migrations_count + 1));
    int k = 0;
    ce_error err;
    if (ce_migrate(b->shared->conn, applied, &err) < 0) return aux_push_error(L, &err);
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
    if (ce_list_migrations(b->shared->conn, &rows, &err) < 0) return aux_push_error(L, &err);
    lua_createtable(L, (int)rows.nrows, 0);
    for (unsigned int i = 0; i < rows.nrows; i++) {
        lua_createtable(L, 0, 3);
        set_string(L, CE_CELL(&rows, i, 0), "version");
        set_string(L, CE_CELL(&rows, i, 1), "name");
        set_number(L, CE_CELL(&rows, i, 2), "applied_at");
        lua_rawseti(L, -2, (int)i + 1);
    }
    ce_rows_free(&rows);
    return 1;
}

static const luaL_Reg methods[] = {
    {"enqueue", broker_enqueue},
    {"enqueue_at", broker_enqueue_at},
    {"enqueue_after", broker_enqueue_after},
    {"enqueue_batch", broker_enqueue_batch},
    {"enqueue_recurring", broker_enqueue_recurring},
    {"dequeue", broker_dequeue},
    {"dequeue_with_worker_id", broker_dequeue_with_worker_id},
    {"dequeue_batch", broker_dequeue_batch},
    {"ack_and_dequeue", broker_ack_and_dequeue},
    {"ack", broker_ack},
    {"ack_batch", broker_ack_batch},
    {"reject", broker_reject},
    {"retry", broker_retry},
    {"touch", broker_touch},
    {"cancel", broker_cancel},
    {"pause", broker_pause},
    {"resume", broker_resume},
    {"is_paused", broker_is_paused},
    {"queue_size", broker_queue_size},
    {"recover_expired", broker_recover_expired},
    {"get_task", broker_get_task},
    {"with_queue", broker_with_queue},
    {"queue", broker_queue},
    {"worker_id", broker_worker_id},
    {"migrate", broker_migrate},
    {"list_migrations", broker_list_migrations},
    {"close", broker_close},
    {NULL, NULL},
};

void lbroker_open(lua_State *L)
{
    luaL_newmetatable(L, BROKER_MT);
    lua_pushcfunction(L, broker_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, broker_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    ladmin_register(L);
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "__index");
    lua_remove(L, -2); /* leave the methods table */
    /* per-process counters for metrics */
    lua_getfield(L, LUA_REGISTRYINDEX, COUNTERS_KEY);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_newtable(L);
        lua_setfield(L, -2, "enqueued_by_type");
        lua_setfield(L, LUA_REGISTRYINDEX, COUNTERS_KEY);
    } else {
        lua_pop(L, 1);
    }
}
