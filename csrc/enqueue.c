#include "enqueue.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Rows per multi-row INSERT, and the payload bytes that close a chunk early. */
#define BATCH_ROWS 500
#define BATCH_BYTES (4u << 20)

void ce_task_spec_init(ce_task_spec *t)
{
    memset(t, 0, sizeof *t);
    t->max_retries = 3;
}

/* ---- SQL ---------------------------------------------------------------------------- */

#define INSERT_COLUMNS                                                                             \
    "INSERT INTO celers_tasks (id, task_name, payload, payload_type, priority, max_retries, "      \
    "queue, scheduled_at, state, timeout_seconds, metadata, idempotency_key, created_at) VALUES "
/* eta counts from the epoch in the session's UTC (FROM_UNIXTIME stops at 2038 on MariaDB
 * before 11.5); a NULL eta falls through to now + delay. A task not yet due starts in
 * 'scheduled' (the state reads the row's scheduled_at, set just before it in the list). */
// clang-format off
#define INSERT_ROW \
    "(?, ?, ?, ?, ?, ?, ?, " \
    "COALESCE(DATE_ADD(TIMESTAMP'1970-01-01 00:00:00', " \
    "INTERVAL ROUND(1000000 * CAST(? AS DECIMAL(20, 6))) MICROSECOND), " CE_FROM_NOW("?") "), " \
    "IF(scheduled_at > NOW(6), 'scheduled', 'pending'), ?, ?, ?, NOW(6))"
// clang-format on
#define INSERT_PARAMS 12
/* The same row for a task due now: two parameters and the date arithmetic fewer per row. */
#define INSERT_ROW_NOW "(?, ?, ?, ?, ?, ?, ?, NOW(6), 'pending', ?, ?, ?, NOW(6))"
#define INSERT_PARAMS_NOW 10
#define ON_DUPLICATE_KEEP " ON DUPLICATE KEY UPDATE id = id"

/* A unique task: INSERT_ROW plus its key, hashed by the server from the caller's text and
 * the period's window on the server's clock (shift " - 1": the window before). */
// clang-format off
#define UNIQUE_KEY(shift) \
    "SHA2(CONCAT(?, '#', IFNULL(CAST(FLOOR(" CE_EPOCH("NOW(6)") " / ?) AS SIGNED)" shift ", '-')), 256)"
static const char SQL_INSERT_UNIQUE[] =
    "INSERT INTO celers_tasks (id, task_name, payload, payload_type, priority, max_retries, "
    "queue, scheduled_at, state, timeout_seconds, metadata, idempotency_key, created_at, "
    "unique_key, unique_states) VALUES "
    "(?, ?, ?, ?, ?, ?, ?, "
    "COALESCE(DATE_ADD(TIMESTAMP'1970-01-01 00:00:00', "
    "INTERVAL ROUND(1000000 * CAST(? AS DECIMAL(20, 6))) MICROSECOND), " CE_FROM_NOW("?") "), "
    "IF(scheduled_at > NOW(6), 'scheduled', 'pending'), ?, ?, ?, NOW(6), "
    UNIQUE_KEY("") ", ?)" ON_DUPLICATE_KEEP;
/* The holder of the key; the window may have turned between the insert and this read. */
static const char SQL_ID_BY_UNIQUE[] =
    "SELECT id FROM celers_tasks WHERE unique_hold IN (" UNIQUE_KEY("") ", " UNIQUE_KEY(" - 1") ") "
    "ORDER BY created_at DESC, id DESC LIMIT 1";
// clang-format on
#define UNIQUE_PARAMS 3

static const char SQL_ID_BY_KEY[] =
    "SELECT id FROM celers_tasks WHERE queue = ? AND idempotency_key = ?";

static const char SQL_RECORD_RUN[] =
    "INSERT INTO celers_recurring_runs (schedule_name, run_at, task_id, queue) "
    "VALUES (?, ?, ?, ?) ON DUPLICATE KEY UPDATE task_id = task_id";
static const char SQL_RUN_TASK[] =
    "SELECT task_id FROM celers_recurring_runs WHERE schedule_name = ? AND run_at = ?";

/* ---- helpers ------------------------------------------------------------------------ */

/* Parameters of one row; `timed` rows (INSERT_ROW) carry eta and delay, the others
 * (INSERT_ROW_NOW) do not. Returns how many were written. */
static unsigned int put_insert_params(ce_param *p, const ce_task_spec *t, const char *id,
                                      const char *queue, int timed)
{
    unsigned int k = 0;
    p[k++] = ce_pstr(id);
    p[k++] = ce_pstr(t->name);
    p[k++] = ce_ptext(t->payload ? t->payload : "", t->payload ? t->payload_len : 0);
    p[k++] = ce_pstr(t->payload_type ? t->payload_type : "raw");
    p[k++] = ce_pint(t->priority);
    p[k++] = ce_pint(t->max_retries);
    p[k++] = ce_pstr(t->queue ? t->queue : queue);
    if (timed) {
        p[k++] = t->has_eta ? ce_pdouble(t->eta) : ce_pnull();
        p[k++] = ce_pdouble(t->has_delay ? t->delay : 0);
    }
    p[k++] = t->timeout > 0 ? ce_pdouble(t->timeout) : ce_pnull();
    p[k++] = ce_pstr(t->metadata);
    p[k++] = ce_pstr(t->idempotency_key);
    return k;
}

static int is_timed(const ce_task_spec *t)
{
    return t->has_eta || (t->has_delay && t->delay > 0);
}

/* ---- enqueue ------------------------------------------------------------------------ */

typedef struct {
    const char *queue;
    const ce_task_spec *t;
    char *id;
    int *created;
    int attempts;
} enqueue_ctx;

static int key_lookup(ce_conn *c, const char *queue, const char *key, char *id, int *found,
                      ce_error *err)
{
    ce_param p[2] = {ce_pstr(queue), ce_pstr(key)};
    return ce_exec_string(c, SQL_ID_BY_KEY, p, 2, id, CE_UUID_LEN + 1, found, err);
}

static ce_param unique_period(const ce_task_spec *t)
{
    return t->unique_period > 0 ? ce_pdouble(t->unique_period) : ce_pnull();
}

static int unique_lookup(ce_conn *c, const ce_task_spec *t, char *id, int *found, ce_error *err)
{
    ce_param p[4] = {ce_ptext(t->unique_text, t->unique_text_len), unique_period(t),
                     ce_ptext(t->unique_text, t->unique_text_len), unique_period(t)};
    return ce_exec_string(c, SQL_ID_BY_UNIQUE, p, 4, id, CE_UUID_LEN + 1, found, err);
}

static int enqueue_op(ce_conn *c, void *vctx, ce_error *err)
{
    enqueue_ctx *x = vctx;
    const ce_task_spec *t = x->t;
    const char *queue = t->queue ? t->queue : x->queue;
    ce_param p[INSERT_PARAMS + UNIQUE_PARAMS];
    unsigned long long affected = 0;
    int keyed = t->idempotency_key != NULL, unique = t->unique_text != NULL;

    static const char *const sql[2][2] = {
        {INSERT_COLUMNS INSERT_ROW_NOW, INSERT_COLUMNS INSERT_ROW_NOW ON_DUPLICATE_KEEP},
        {INSERT_COLUMNS INSERT_ROW, INSERT_COLUMNS INSERT_ROW ON_DUPLICATE_KEEP}};
    int timed = is_timed(t) || unique;
    unsigned int np = put_insert_params(p, t, x->id, x->queue, timed);
    const char *insert = sql[timed][keyed];
    if (unique) {
        p[np++] = ce_ptext(t->unique_text, t->unique_text_len);
        p[np++] = unique_period(t);
        p[np++] = ce_pint((long long)t->unique_states);
        insert = SQL_INSERT_UNIQUE;
    }
    x->attempts++;
    if (ce_exec(c, insert, p, np, NULL, &affected, err) < 0) {
        /* Repeated after a lost link: our own fresh id already there means the first try landed. */
        if (err->code == CE_EDUPLICATE && x->attempts > 1 && !t->id) {
            *x->created = 1;
            return 0;
        }
        return -1;
    }
    *x->created = affected > 0;
    if (!affected) {
        char mine[CE_UUID_LEN + 1];
        int found = 0;
        memcpy(mine, x->id, sizeof mine);
        if (keyed && key_lookup(c, queue, t->idempotency_key, x->id, &found, err) < 0) return -1;
        if (!found && unique && unique_lookup(c, t, x->id, &found, err) < 0) return -1;
        if (!found)
            return ce_error_set(err, CE_EDUPLICATE, "a task with id '%s' already exists", x->id);
        /* Repeated after a lost link and the key holds our own fresh id: the first try landed. */
        if (x->attempts > 1 && !t->id && strcmp(mine, x->id) == 0) *x->created = 1;
    }
    return 0;
}

int ce_enqueue(ce_conn *c, const char *queue, const ce_task_spec *t, char id_out[CE_UUID_LEN + 1],
               int *created, ce_error *err)
{
    enqueue_ctx x = {queue, t, id_out, created, 0};
    if (t->id)
        snprintf(id_out, CE_UUID_LEN + 1, "%s", t->id);
    else
        ce_uuid7(id_out);
    /* A fresh id makes the insert safe to repeat; a caller's id or key is checked by the server. */
    return ce_conn_run(c, t->id ? CE_ONCE : CE_REPEAT, enqueue_op, &x, err);
}

typedef struct {
    const char *queue;
    const ce_task_spec *tasks;
    size_t n;
    int skip_existing;
    char (*ids)[CE_UUID_LEN + 1];
    unsigned long long *inserted;
    unsigned char *exists; /* per task: its idempotency key is taken (the task is not inserted) */
} batch_ctx;

/* Rows [from, to) as one multi-row INSERT. */
static int insert_chunk(ce_conn *c, batch_ctx *x, size_t from, size_t to,
                        unsigned long long *affected, ce_error *err)
{
    size_t n = to - from;
    int timed = 0, keep = x->skip_existing;
    const char *row;
    char *sql = NULL, *s;
    ce_param *p = NULL;
    unsigned int np = 0;
    int rc = -1;
    for (size_t i = from; i < to; i++)
        timed |= is_timed(&x->tasks[i]);
    row = timed ? INSERT_ROW : INSERT_ROW_NOW;
    sql = malloc(strlen(INSERT_COLUMNS) + n * (strlen(row) + 1) + strlen(ON_DUPLICATE_KEEP) + 1);
    p = malloc(sizeof *p * (n ? n : 1) * INSERT_PARAMS);
    if (!sql || !p) {
        ce_error_set(err, CE_ENOMEM, "out of memory");
        goto done;
    }
    {
        size_t head = strlen(INSERT_COLUMNS), rl = strlen(row);
        memcpy(sql, INSERT_COLUMNS, head);
        s = sql + head;
        for (size_t i = from; i < to; i++) {
            if (x->exists[i]) continue;
            if (np) *s++ = ',';
            memcpy(s, row, rl + 1); /* with its NUL; the next row or the tail overwrites it */
            s += rl;
            np += put_insert_params(p + np, &x->tasks[i], x->ids[i], x->queue, timed);
        }
        strcpy(s, keep ? ON_DUPLICATE_KEEP : "");
    }
    rc = np ? ce_exec(c, sql, p, np, NULL, affected, err) : 0;
done:
    free(sql);
    free(p);
    return rc;
}

/* Bytes a row adds to the statement: its payload and its texts, plus the fixed fields. */
static size_t row_bytes(const ce_task_spec *t)
{
    size_t n = t->payload_len + 128;
    if (t->name) n += strlen(t->name);
    if (t->metadata) n += strlen(t->metadata);
    if (t->idempotency_key) n += strlen(t->idempotency_key);
    if (t->queue) n += strlen(t->queue);
    return n;
}

/* The end of the chunk starting at from: a row joins only if the chunk stays within
 * BATCH_BYTES with it (a first row bigger than that goes alone), so rows that each fit the
 * server's packet are never refused together. */
static size_t chunk_end(const batch_ctx *x, size_t from)
{
    size_t to = from, bytes = 0;
    while (to < x->n && to - from < BATCH_ROWS) {
        size_t row = row_bytes(&x->tasks[to]);
        if (to > from && bytes + row > BATCH_BYTES) break;
        bytes += row;
        to++;
    }
    return to;
}

static int batch_op(ce_conn *c, void *vctx, ce_error *err)
{
    batch_ctx *x = vctx;
    size_t first_end = chunk_end(x, 0);
    int tx = first_end < x->n; /* one statement is atomic by itself */
    unsigned long long total = 0;

    /* Tasks whose idempotency key is taken resolve to the first task's id and are not
     * inserted; everything else must be new (a repeated id is an error, not a skip). */
    for (size_t i = 0; i < x->n; i++) {
        const ce_task_spec *t = &x->tasks[i];
        int found = 0;
        x->exists[i] = 0;
        if (t->idempotency_key && !x->skip_existing) {
            if (key_lookup(c, t->queue ? t->queue : x->queue, t->idempotency_key, x->ids[i], &found,
                           err) < 0)
                return -1;
            x->exists[i] = (unsigned char)found;
        }
    }
    if (tx && ce_conn_begin(c, err) < 0) return -1;
    for (size_t from = 0; from < x->n;) {
        size_t to = chunk_end(x, from);
        unsigned long long affected = 0;
        if (insert_chunk(c, x, from, to, &affected, err) < 0) return -1;
        total += affected;
        from = to;
    }
    /* With skip_existing, keys that were already used resolve to the first task's id. */
    if (x->skip_existing && total < x->n) {
        for (size_t i = 0; i < x->n; i++) {
            const ce_task_spec *t = &x->tasks[i];
            int found = 0;
            if (t->idempotency_key && key_lookup(c, t->queue ? t->queue : x->queue,
                                                 t->idempotency_key, x->ids[i], &found, err) < 0)
                return -1;
        }
    }
    if (tx && ce_conn_commit(c, err) < 0) return -1;
    *x->inserted = total;
    return 0;
}

/* Which tasks were inserted. Without skip_existing every task was, except those whose
 * idempotency key was taken. With it, a keyed task was if its key resolved to the id made for
 * it, a task with a new id always was, and tasks with caller ids share what is left of the
 * inserted count: exact when all or none of them were inserted (an import re-run). */
static void mark_created(const batch_ctx *x, char (*fresh)[CE_UUID_LEN + 1], unsigned char *created)
{
    unsigned long long left = *x->inserted;
    size_t caller_ids = 0;
    for (size_t i = 0; i < x->n; i++) {
        const ce_task_spec *t = &x->tasks[i];
        if (!x->skip_existing)
            created[i] = !x->exists[i];
        else if (t->idempotency_key || !t->id)
            created[i] = *x->inserted == x->n || strcmp(fresh[i], x->ids[i]) == 0;
        else {
            created[i] = 0;
            caller_ids++;
            continue;
        }
        left -= created[i] && left ? 1 : 0;
    }
    if (x->skip_existing && caller_ids && left == caller_ids)
        for (size_t i = 0; i < x->n; i++)
            if (!x->tasks[i].idempotency_key && x->tasks[i].id) created[i] = 1;
}

int ce_enqueue_batch(ce_conn *c, const char *queue, const ce_task_spec *tasks, size_t n,
                     int skip_existing, char (*ids)[CE_UUID_LEN + 1], unsigned long long *inserted,
                     unsigned char *created, ce_error *err)
{
    batch_ctx x = {queue, tasks, n, skip_existing, ids, inserted, NULL};
    char(*fresh)[CE_UUID_LEN + 1];
    int rc;
    *inserted = 0;
    if (n == 0) return 0;
    x.exists = calloc(n, 1);
    fresh = malloc(n * sizeof *fresh);
    if (!x.exists || !fresh) {
        free(x.exists);
        free(fresh);
        return ce_error_set(err, CE_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        if (tasks[i].id)
            snprintf(ids[i], CE_UUID_LEN + 1, "%s", tasks[i].id);
        else
            ce_uuid7(ids[i]);
    }
    memcpy(fresh, ids, n * sizeof *fresh);
    /* Several chunks run in a transaction, which is safe to repeat until COMMIT is sent. */
    rc = ce_conn_run(c, chunk_end(&x, 0) < n ? CE_REPEAT : CE_ONCE, batch_op, &x, err);
    if (rc == 0 && created) mark_created(&x, fresh, created);
    free(x.exists);
    free(fresh);
    return rc;
}

/* ---- recurring occurrences ---------------------------------------------------------- */

typedef struct {
    const char *queue, *schedule;
    long long run_at;
    const ce_task_spec *t;
    char *id;
    int *created;
} recurring_ctx;

static int recurring_op(ce_conn *c, void *vctx, ce_error *err)
{
    recurring_ctx *x = vctx;
    const char *queue = x->t->queue ? x->t->queue : x->queue;
    ce_param p[INSERT_PARAMS];
    unsigned long long affected = 0;
    ce_uuid7(x->id);
    p[0] = ce_pstr(x->schedule);
    p[1] = ce_pint(x->run_at);
    p[2] = ce_pstr(x->id);
    p[3] = ce_pstr(queue);
    if (ce_conn_begin(c, err) < 0) return -1;
    /* A second scheduler waits here on the first one's row lock, then sees its row. */
    if (ce_exec(c, SQL_RECORD_RUN, p, 4, NULL, &affected, err) < 0) return -1;
    *x->created = affected > 0;
    if (*x->created) {
        unsigned int np = put_insert_params(p, x->t, x->id, x->queue, 1);
        if (ce_exec(c, INSERT_COLUMNS INSERT_ROW, p, np, NULL, NULL, err) < 0) return -1;
    } else {
        int found = 0;
        if (ce_exec_string(c, SQL_RUN_TASK, p, 2, x->id, CE_UUID_LEN + 1, &found, err) < 0)
            return -1;
    }
    return ce_conn_commit(c, err);
}

int ce_enqueue_recurring(ce_conn *c, const char *queue, const char *schedule, long long run_at,
                         const ce_task_spec *t, char id_out[CE_UUID_LEN + 1], int *created,
                         ce_error *err)
{
    recurring_ctx x = {queue, schedule, run_at, t, id_out, created};
    return ce_conn_run(c, CE_REPEAT, recurring_op, &x, err);
}
