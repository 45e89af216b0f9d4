/* Lua binding of claiming and settling (task.h, handoff.h, staging.h): dequeue, dequeue_batch,
 * ack_and_dequeue, ack_batch_and_dequeue, promote_scheduled, ack, ack_batch, reject, retry, touch,
 * cancel, queue control, get_task. */
#include "auxiliar.h"
#include "handoff.h"
#include "lbroker.h"
#include "lmethods.h"
#include "lrows.h"
#include "staging.h"
#include "task.h"

/* A task argument: a task table (id and claim) or a bare id string. */
static ce_task_ref read_ref(lua_State *L, int idx, const char *fn)
{
    ce_task_ref ref = {NULL, NULL};
    if (lua_type(L, idx) == LUA_TSTRING) {
        ref.id = aux_check_string(L, idx, fn, "task", NULL);
    } else if (lua_type(L, idx) == LUA_TTABLE) {
        ref.id = aux_field_string(L, idx, "id", fn, NULL);
        ref.claim_id = aux_field_string(L, idx, "claim_id", fn, NULL);
        if (!ref.id) luaL_error(L, "celers: %s: 'task' has no id", fn);
    } else {
        aux_arg_error(L, fn, "task", "a task table or an id string", idx);
    }
    return ref;
}

/* ---- dequeue ------------------------------------------------------------------------- */

/* Count what the claim's lease sweep moved to the dead-letter queue. Called right after
 * the core call, before any Lua call that could close the connection. */
static void count_swept(lua_State *L, ce_conn *c)
{
    unsigned long long n = c->swept_dead;
    c->swept_dead = 0;
    if (n) lbroker_count(L, "dead_lettered", (lua_Number)n);
}

/* lease < 0: the connection's default. */
static int claim(lua_State *L, lbroker *b, const char *fn, unsigned int n, const char *worker,
                 double lease, int as_list)
{
    ce_rows rows = {0};
    ce_error err;
    ce_conn *c = lbroker_conn(L, b, fn);
    int rc = ce_claim(c, b->queue, n, worker ? worker : b->worker_id,
                      lease < 0 ? c->cfg.lease : lease, &rows, &err);
    count_swept(L, c);
    if (rc < 0) return aux_push_error(L, &err);
    if (!as_list) {
        if (rows.nrows == 0)
            lua_pushnil(L);
        else
            lrows_push_task(L, &rows, 0);
    } else {
        lua_createtable(L, (int)rows.nrows, 0);
        for (unsigned int i = 0; i < rows.nrows; i++) {
            lrows_push_task(L, &rows, i);
            lua_rawseti(L, -2, (int)i + 1);
        }
    }
    ce_rows_free(&rows);
    return 1;
}

/* worker_id= and lease= (-1 when absent: the connection's default). */
static void read_dequeue_opts(lua_State *L, int idx, const char *fn, const char **worker,
                              double *lease)
{
    static const char *const opts[] = {"worker_id", "lease", NULL};
    *worker = NULL;
    *lease = -1;
    if (aux_opt_table(L, idx, fn, "opts")) {
        aux_check_options(L, idx, fn, opts);
        *worker = aux_field_string(L, idx, "worker_id", fn, NULL);
        *lease = aux_field_within(L, idx, "lease", fn, -1, AUX_MAX_SECONDS, 1, NULL);
    }
}

static int broker_dequeue(lua_State *L)
{
    lbroker *b = lbroker_check(L, "dequeue");
    const char *worker;
    double lease;
    read_dequeue_opts(L, 2, "dequeue", &worker, &lease);
    return claim(L, b, "dequeue", 1, worker, lease, 0);
}

static int broker_dequeue_with_worker_id(lua_State *L)
{
    lbroker *b = lbroker_check(L, "dequeue_with_worker_id");
    const char *worker = aux_check_string(L, 2, "dequeue_with_worker_id", "worker_id", NULL);
    return claim(L, b, "dequeue_with_worker_id", 1, worker, -1, 0);
}

static int broker_dequeue_batch(lua_State *L)
{
    lbroker *b = lbroker_check(L, "dequeue_batch");
    long long n = aux_check_integer(L, 2, "dequeue_batch", "n", 0, 10000);
    const char *worker;
    double lease;
    read_dequeue_opts(L, 3, "dequeue_batch", &worker, &lease);
    if (n == 0) {
        lua_newtable(L);
        return 1;
    }
    return claim(L, b, "dequeue_batch", (unsigned int)n, worker, lease, 1);
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
    int acked = 0, rc;
    ce_rows rows = {0};
    ce_error err;
    ce_conn *c;
    if (!lua_isnoneornil(L, 2)) prev = read_ref(L, 2, fn);
    read_dequeue_opts(L, 3, fn, &worker, &lease);
    c = lbroker_conn(L, b, fn);
    rc = ce_ack_and_claim(c, b->queue, prev, worker ? worker : b->worker_id,
                          lease < 0 ? c->cfg.lease : lease, &acked, &rows, &err);
    count_swept(L, c);
    if (rc < 0) {
        if (!acked) return aux_push_error(L, &err);
        /* the ack landed, the claim failed: true, nil, err */
        lbroker_count(L, "acked", 1);
        lua_pushboolean(L, 1);
        return 1 + aux_push_error(L, &err);
    }
    if (acked) lbroker_count(L, "acked", 1);
    lua_pushboolean(L, acked);
    if (rows.nrows)
        lrows_push_task(L, &rows, 0);
    else
        lua_pushnil(L);
    ce_rows_free(&rows);
    return 2;
}

/* Task refs from the list at idx, in a userdata left on the stack (strings stay alive in the
 * list). */
static ce_task_ref *read_refs(lua_State *L, int idx, const char *fn, size_t *n)
{
    ce_task_ref *refs;
    if (!lua_istable(L, idx)) aux_arg_error(L, fn, "tasks", "a list of tasks", idx);
    *n = lua_rawlen(L, idx);
    refs = lua_newuserdata(L, sizeof *refs * (*n ? *n : 1));
    for (size_t i = 0; i < *n; i++) {
        lua_rawgeti(L, idx, (int)i + 1);
        refs[i] = read_ref(L, -1, fn);
        lua_pop(L, 1);
    }
    return refs;
}

/* ack_batch_and_dequeue(tasks, n, opts) -> acked count, list of up to n claimed tasks.
 * The acks (fenced per task) and the claim are one transaction with one commit. */
static int broker_ack_batch_and_dequeue(lua_State *L)
{
    const char *fn = "ack_batch_and_dequeue";
    lbroker *b = lbroker_check(L, fn);
    long long n = aux_check_integer(L, 3, fn, "n", 0, 10000);
    const char *worker;
    double lease;
    size_t nrefs;
    ce_task_ref *refs;
    unsigned long long acked = 0;
    ce_rows rows = {0};
    ce_error err;
    ce_conn *c;
    int rc;
    read_dequeue_opts(L, 4, fn, &worker, &lease);
    refs = read_refs(L, 2, fn, &nrefs);
    c = lbroker_conn(L, b, fn);
    rc = ce_ack_batch_and_claim(c, b->queue, refs, nrefs, (unsigned int)n,
                                worker ? worker : b->worker_id, lease < 0 ? c->cfg.lease : lease,
                                &acked, &rows, &err);
    count_swept(L, c);
    if (rc < 0) return aux_push_error(L, &err);
    lbroker_count(L, "acked", (lua_Number)acked);
    lua_pushinteger(L, (lua_Integer)acked);
    lua_createtable(L, (int)rows.nrows, 0);
    for (unsigned int i = 0; i < rows.nrows; i++) {
        lrows_push_task(L, &rows, i);
        lua_rawseti(L, -2, (int)i + 1);
    }
    ce_rows_free(&rows);
    return 2;
}

/* promote_scheduled([limit]) -> how many due scheduled tasks became pending now. Claims do
 * this on their own every CE_STAGE_INTERVAL seconds; this runs the step at once. */
static int broker_promote_scheduled(lua_State *L)
{
    const char *fn = "promote_scheduled";
    lbroker *b = lbroker_check(L, fn);
    long long limit =
        lua_isnoneornil(L, 2) ? CE_STAGE_ROWS : aux_check_integer(L, 2, fn, "limit", 0, 100000);
    unsigned long long promoted = 0;
    ce_error err;
    if (ce_stage_due(lbroker_conn(L, b, fn), b->queue, (unsigned int)limit, &promoted, &err) < 0)
        return aux_push_error(L, &err);
    lua_pushinteger(L, (lua_Integer)promoted);
    return 1;
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
    rc = ce_ack(lbroker_conn(L, b, "ack"), ref, &ok, &err);
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
    if (ce_ack_batch(lbroker_conn(L, b, "ack_batch"), refs, n, &acked, &err) < 0)
        return aux_push_error(L, &err);
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
        delay = aux_field_within(L, 3, "delay", fn, -1, AUX_MAX_SECONDS, 0, &has);
    }
    rc = ce_reject(lbroker_conn(L, b, fn), ref, requeue, delay, error, &outcome, &err);
    return push_outcome(L, rc, outcome, &err);
}

static int broker_retry(lua_State *L)
{
    const char *fn = "retry";
    lbroker *b = lbroker_check(L, fn);
    ce_task_ref ref = read_ref(L, 2, fn);
    double delay = lua_isnoneornil(L, 3) ? -1 : aux_check_seconds(L, 3, fn, "delay");
    const char *error = aux_opt_string(L, 4, fn, "error");
    int outcome = 0, rc;
    ce_error err;
    rc = ce_reject(lbroker_conn(L, b, fn), ref, 1, delay, error, &outcome, &err);
    return push_outcome(L, rc, outcome, &err);
}

static int broker_touch(lua_State *L)
{
    lbroker *b = lbroker_check(L, "touch");
    ce_task_ref ref = read_ref(L, 2, "touch");
    double secs = lua_isnoneornil(L, 3) ? -1 : aux_check_seconds(L, 3, "touch", "seconds");
    int ok = 0, rc;
    ce_error err;
    rc = ce_touch(lbroker_conn(L, b, "touch"), ref, secs, &ok, &err);
    return push_ok(L, rc, ok, &err);
}

/* touch_batch(tasks, seconds) -> number still held, list of booleans (one per task) */
static int broker_touch_batch(lua_State *L)
{
    const char *fn = "touch_batch";
    lbroker *b = lbroker_check(L, fn);
    double secs = -1;
    size_t n;
    ce_task_ref *refs;
    unsigned char *held;
    int count = 0;
    ce_error err;
    if (!lua_istable(L, 2)) aux_arg_error(L, fn, "tasks", "a list of tasks", 2);
    if (!lua_isnoneornil(L, 3)) secs = aux_check_seconds(L, 3, fn, "seconds");
    n = lua_rawlen(L, 2);
    refs = lua_newuserdata(L, sizeof *refs * (n ? n : 1));
    held = lua_newuserdata(L, n ? n : 1);
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, 2, (int)i + 1);
        refs[i] = read_ref(L, -1, fn); /* strings stay alive in the tasks list */
        lua_pop(L, 1);
    }
    if (n && ce_touch_batch(lbroker_conn(L, b, fn), refs, n, secs, held, &err) < 0)
        return aux_push_error(L, &err);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        lua_pushboolean(L, held[i]);
        lua_rawseti(L, -2, (int)i + 1);
        count += held[i];
    }
    lua_pushinteger(L, count);
    lua_insert(L, -2);
    return 2;
}

static int broker_cancel(lua_State *L)
{
    lbroker *b = lbroker_check(L, "cancel");
    ce_task_ref ref = read_ref(L, 2, "cancel");
    int ok = 0, rc;
    ce_error err;
    rc = ce_cancel(lbroker_conn(L, b, "cancel"), ref.id, &ok, &err);
    return push_ok(L, rc, ok, &err);
}

/* ---- queue control ------------------------------------------------------------------- */

static int broker_pause(lua_State *L)
{
    lbroker *b = lbroker_check(L, "pause");
    ce_error err;
    return push_ok(L, ce_pause(lbroker_conn(L, b, "pause"), b->queue, &err), 1, &err);
}

static int broker_resume(lua_State *L)
{
    lbroker *b = lbroker_check(L, "resume");
    ce_error err;
    return push_ok(L, ce_resume(lbroker_conn(L, b, "resume"), b->queue, &err), 1, &err);
}

static int broker_is_paused(lua_State *L)
{
    lbroker *b = lbroker_check(L, "is_paused");
    int paused = 0, rc;
    ce_error err;
    rc = ce_is_paused(lbroker_conn(L, b, "is_paused"), b->queue, &paused, &err);
    return push_ok(L, rc, paused, &err);
}

static int broker_queue_size(lua_State *L)
{
    lbroker *b = lbroker_check(L, "queue_size");
    long long size = 0;
    ce_error err;
    if (ce_queue_size(lbroker_conn(L, b, "queue_size"), b->queue, &size, &err) < 0)
        return aux_push_error(L, &err);
    lua_pushinteger(L, (lua_Integer)size);
    return 1;
}

static int broker_recover_expired(lua_State *L)
{
    lbroker *b = lbroker_check(L, "recover_expired");
    unsigned long long requeued = 0, dead = 0;
    ce_error err;
    if (ce_recover_expired(lbroker_conn(L, b, "recover_expired"), b->queue, -1, &requeued, &dead,
                           &err) < 0)
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
    if (ce_get_task(lbroker_conn(L, b, "get_task"), id, &rows, &err) < 0)
        return aux_push_error(L, &err);
    if (rows.nrows)
        lrows_push_task(L, &rows, 0);
    else
        lua_pushnil(L);
    ce_rows_free(&rows);
    return 1;
}

static const luaL_Reg methods[] = {
    {"dequeue", broker_dequeue},
    {"dequeue_with_worker_id", broker_dequeue_with_worker_id},
    {"dequeue_batch", broker_dequeue_batch},
    {"ack_and_dequeue", broker_ack_and_dequeue},
    {"ack_batch_and_dequeue", broker_ack_batch_and_dequeue},
    {"promote_scheduled", broker_promote_scheduled},
    {"ack", broker_ack},
    {"ack_batch", broker_ack_batch},
    {"reject", broker_reject},
    {"retry", broker_retry},
    {"touch", broker_touch},
    {"touch_batch", broker_touch_batch},
    {"cancel", broker_cancel},
    {"pause", broker_pause},
    {"resume", broker_resume},
    {"is_paused", broker_is_paused},
    {"queue_size", broker_queue_size},
    {"recover_expired", broker_recover_expired},
    {"get_task", broker_get_task},
    {NULL, NULL},
};

void lclaim_open(lua_State *L)
{
    luaL_setfuncs(L, methods, 0);
}
