#include "task.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "task_limits.h"
#include "staging.h"

/* Tasks moved per pass of a dead-letter sweep. */
#define SWEEP_ROWS 100

/* ---- SQL ---------------------------------------------------------------------------- */

// clang-format off
/* Settling is fenced by the claim: a NULL claim parameter matches any claim (bare id). */
#define FENCE "id = ? AND state = 'processing' AND claim_id <=> COALESCE(?, claim_id)"

/* The claim reads idx_celers_tasks_claim (queue, state, claim_rank, scheduled_at, id) in
 * order, all ascending (claim_rank = -priority; see sql/015): no filesort, and SKIP LOCKED
 * locks only the rows it returns. The hint keeps the plan fixed: a filesort under FOR UPDATE
 * would lock every ready row. scheduled_at <= NOW(6) stays for rows written by the Rust
 * broker, which keeps future tasks 'pending'. Limited names are left to the limited claim
 * (task_limits.c), which runs first. */
static const char SQL_CLAIM[] =
    "SELECT " CE_CLAIM_COLUMNS " "
    "FROM celers_tasks FORCE INDEX (idx_celers_tasks_claim) "
    "WHERE queue = ? AND state = 'pending' AND scheduled_at <= NOW(6) "
    "AND NOT EXISTS (SELECT 1 FROM celers_queue_pauses WHERE queue = ?) "
    "AND NOT EXISTS (SELECT 1 FROM celers_task_limits AS l WHERE l.task_name = celers_tasks.task_name) "
    "ORDER BY claim_rank, scheduled_at, id LIMIT ? FOR UPDATE SKIP LOCKED";

#define CLAIM_UPDATE \
    "UPDATE celers_tasks SET state = 'processing', started_at = CAST(? AS DATETIME(6)), " \
    "worker_id = ?, claim_id = ?, retry_count = retry_count + 1, " \
    "lease_expires_at = DATE_ADD(CAST(? AS DATETIME(6)), " \
    "INTERVAL ROUND(1000000 * COALESCE(timeout_seconds, ?)) MICROSECOND) WHERE id "
#define CLAIM_UPDATE_PARAMS 5

static const char SQL_ACK[] =
    "UPDATE celers_tasks SET state = 'completed', completed_at = NOW(6), lease_expires_at = NULL "
    "WHERE " FENCE;

/* The retry delay in microseconds: the caller's, else the backoff for this attempt, bounded
 * in C (see bounded_backoff): parameters delay, cap, max, base, factor. */
#define RETRY_DELAY_US \
    "ROUND(1000000 * COALESCE(?, IF(GREATEST(retry_count - 1, 0) >= ?, ?, " \
    "? * POW(?, GREATEST(retry_count - 1, 0)))))"

/* A positive delay parks the task in 'scheduled' (staging.c promotes it when due). */
static const char SQL_RETRY[] =
    "UPDATE celers_tasks SET state = IF(" RETRY_DELAY_US " > 0, 'scheduled', 'pending'), "
    "scheduled_at = DATE_ADD(NOW(6), INTERVAL " RETRY_DELAY_US " MICROSECOND), "
    "error_message = COALESCE(?, error_message), worker_id = NULL, lease_expires_at = NULL "
    "WHERE " FENCE " AND retry_count < max_retries";

/* A fenced settle that changed nothing may be a repeat after "lost": these tell whether the
 * task already is where this claim put it (claim_id stays on a completed or requeued row). */
static const char SQL_ACKED[] =
    "SELECT COUNT(*) FROM celers_tasks WHERE id = ? AND claim_id = ? AND state = 'completed'";
static const char SQL_REQUEUED[] =
    "SELECT COUNT(*) FROM celers_tasks "
    "WHERE id = ? AND claim_id = ? AND state IN ('pending', 'scheduled')";
/* (the DLQ row keeps the claim it was moved under, sql/011) */
static const char SQL_DEAD_LETTERED[] =
    "SELECT COUNT(*) FROM celers_dead_letter_queue AS d WHERE d.task_id = ? AND d.claim_id = ? "
    "AND NOT EXISTS (SELECT 1 FROM celers_tasks AS t WHERE t.id = d.task_id)";
#define ACKED_PAIRS "SELECT COUNT(*) FROM celers_tasks WHERE state = 'completed' AND (id, claim_id) IN ("

static const char SQL_LOCK_HELD[] = "SELECT id FROM celers_tasks WHERE " FENCE " FOR UPDATE";

/* Every column of the task goes with it (sql/011), so requeue_from_dlq can restore it. */
static const char SQL_COPY_TO_DLQ[] =
    "INSERT INTO celers_dead_letter_queue (id, task_id, task_name, payload, retry_count, "
    "error_message, failed_at, metadata, queue, priority, max_retries, payload_type, created_at, "
    "timeout_seconds, idempotency_key, state, scheduled_at, started_at, completed_at, worker_id, "
    "claim_id, lease_expires_at) "
    "SELECT ?, id, task_name, payload, retry_count, COALESCE(?, error_message), NOW(6), metadata, "
    "queue, priority, max_retries, payload_type, created_at, timeout_seconds, idempotency_key, "
    "state, scheduled_at, started_at, completed_at, worker_id, claim_id, lease_expires_at "
    "FROM celers_tasks WHERE id = ?";

static const char SQL_DELETE_TASK[] = "DELETE FROM celers_tasks WHERE id = ?";

static const char SQL_TOUCH[] =
    "UPDATE celers_tasks SET lease_expires_at = " CE_FROM_NOW("COALESCE(?, timeout_seconds, ?)") " "
    "WHERE " FENCE;

static const char SQL_CANCEL[] =
    "UPDATE celers_tasks SET state = 'cancelled', completed_at = NOW(6), lease_expires_at = NULL "
    "WHERE id = ? AND state IN ('scheduled', 'pending', 'processing')";

/* A held task is overdue when its lease ran out, or (with a threshold) it started too long ago. */
#define OVERDUE \
    "queue = ? AND state = 'processing' " \
    "AND (lease_expires_at < NOW(6) OR (? IS NOT NULL AND started_at < " CE_AGO("?") "))"

static const char SQL_RECOVER[] =
    "UPDATE celers_tasks SET state = 'pending', worker_id = NULL, claim_id = NULL, "
    "lease_expires_at = NULL, error_message = 'lease expired' "
    "WHERE " OVERDUE " AND retry_count < max_retries";

static const char SQL_OVERDUE_SPENT[] =
    "SELECT id FROM celers_tasks WHERE " OVERDUE " AND retry_count >= max_retries "
    "LIMIT 100 FOR UPDATE SKIP LOCKED";

static const char SQL_PAUSE[] =
    "INSERT INTO celers_queue_pauses (queue) VALUES (?) ON DUPLICATE KEY UPDATE queue = queue";
static const char SQL_RESUME[] = "DELETE FROM celers_queue_pauses WHERE queue = ?";
static const char SQL_IS_PAUSED[] = "SELECT COUNT(*) FROM celers_queue_pauses WHERE queue = ?";
/* Waiting tasks, due or not (two ranges of the claim index). */
static const char SQL_QUEUE_SIZE[] =
    "SELECT COUNT(*) FROM celers_tasks WHERE queue = ? AND state IN ('pending', 'scheduled')";
static const char SQL_GET_TASK[] = "SELECT " CE_TASK_COLUMNS " FROM celers_tasks WHERE id = ?";
// clang-format on

/* ---- helpers ------------------------------------------------------------------------ */

/* Variable-length IN lists are padded to one of these lengths (the last element repeated,
 * which matches nothing new), so a connection prepares at most one statement per bucket
 * instead of one per length. The largest is the chunk size of every batch statement. */
static const unsigned int BUCKETS[] = {1, 4, 16, 64, 256, CE_IN_CHUNK};

static size_t bucket(size_t n)
{
    for (size_t i = 0; i < sizeof BUCKETS / sizeof BUCKETS[0]; i++)
        if (n <= BUCKETS[i]) return BUCKETS[i];
    return CE_IN_CHUNK;
}

/* "prefix IN (?, ?, ...)" for bucket(n) placeholders, or "prefix = ?" for one. Caller frees. */
static char *in_list_sql(const char *prefix, size_t n)
{
    size_t b = bucket(n);
    char *sql = malloc(strlen(prefix) + b * 2 + 16), *p;
    if (!sql) return NULL;
    p = sql + sprintf(sql, "%s", prefix);
    if (b == 1) {
        strcpy(p, "= ?");
    } else {
        p += sprintf(p, "IN (");
        for (size_t i = 0; i < b; i++)
            p += sprintf(p, i ? ",?" : "?");
        strcpy(p, ")");
    }
    return sql;
}

/* Pair lists have at least 4 entries: MariaDB plans "(id, claim_id) IN ((?, ?))" with one pair
 * as a full index scan; two or more pairs (repeats included) give a primary-key range. */
static size_t pair_bucket(size_t n)
{
    return bucket(n < 2 ? 2 : n);
}

/* "<head>(?,?),(?,?)...)": pair_bucket(n) (id, claim_id) pairs for a row-constructor IN list. */
static char *pairs_sql(const char *head, size_t n)
{
    size_t b = pair_bucket(n);
    char *sql = malloc(strlen(head) + b * 6 + 2), *s;
    if (!sql) return NULL;
    s = sql + sprintf(sql, "%s", head);
    for (size_t i = 0; i < b; i++)
        s += sprintf(s, i ? ",(?,?)" : "(?,?)");
    strcpy(s, ")");
    return sql;
}

/* Parameters of pairs_sql for refs[0..n), padded with the last pair; p holds 2*pair_bucket(n). */
static unsigned int put_pairs(ce_param *p, const ce_task_ref *refs, size_t n)
{
    size_t b = pair_bucket(n);
    for (size_t i = 0; i < b; i++) {
        const ce_task_ref *r = &refs[i < n ? i : n - 1];
        p[2 * i] = ce_pstr(r->id);
        p[2 * i + 1] = ce_pstr(r->claim_id);
    }
    return (unsigned int)(2 * b);
}

/* Copy a held task to the DLQ and delete it; the caller holds the row lock in a transaction. */
static int move_to_dlq(ce_conn *c, const char *id, const char *error, ce_error *err)
{
    char dlq_id[CE_UUID_LEN + 1];
    ce_param p[3];
    ce_uuid7(dlq_id);
    p[0] = ce_pstr(dlq_id);
    p[1] = ce_pstr(error);
    p[2] = ce_pstr(id);
    if (ce_exec(c, SQL_COPY_TO_DLQ, p, 3, NULL, NULL, err) < 0) return -1;
    return ce_exec(c, SQL_DELETE_TASK, p + 2, 1, NULL, NULL, err);
}

/* ---- claim -------------------------------------------------------------------------- */

int ce_claim_mark(ce_conn *c, const ce_rows *out, unsigned int from, unsigned int k,
                  const char *worker_id, const char *claim_id, double lease, ce_error *err)
{
    size_t b = bucket(k);
    char *sql = in_list_sql(CLAIM_UPDATE, k);
    ce_param *up = malloc(sizeof *up * (CLAIM_UPDATE_PARAMS + b));
    int rc = -1;
    if (!sql || !up) {
        ce_error_set(err, CE_ENOMEM, "out of memory");
        goto done;
    }
    up[0] = ce_pstr(CE_CELL(out, 0, CE_T_NCOLS)->data); /* the server's NOW(6) */
    up[1] = ce_pstr(worker_id);
    up[2] = ce_pstr(claim_id);
    up[3] = up[0];
    up[4] = ce_pdouble(lease);
    for (size_t i = 0; i < b; i++)
        up[CLAIM_UPDATE_PARAMS + i] =
            ce_pstr(CE_CELL(out, from + (i < k ? i : k - 1), CE_T_ID)->data);
    rc = ce_exec(c, sql, up, (unsigned int)(CLAIM_UPDATE_PARAMS + b), NULL, NULL, err);
done:
    free(sql);
    free(up);
    return rc;
}

int ce_claim_in_tx(ce_conn *c, const char *queue, unsigned int n, const char *worker_id,
                   double lease, ce_rows *out, ce_error *err)
{
    char claim_id[CE_UUID_LEN + 1];
    ce_rows plain = {0};
    ce_param sp[6];
    ce_uuid7(claim_id);
    if (ce_claim_limited_in_tx(c, queue, n, worker_id, claim_id, lease, out, err) < 0) return -1;
    if (out->nrows >= n) return 0;
    sp[0] = ce_pstr(worker_id);
    sp[1] = ce_pstr(claim_id);
    sp[2] = ce_pdouble(lease);
    sp[3] = ce_pstr(queue);
    sp[4] = ce_pstr(queue);
    sp[5] = ce_pint(n - out->nrows);
    if (ce_exec(c, SQL_CLAIM, sp, 6, &plain, NULL, err) < 0) goto failed;
    for (unsigned int from = 0; from < plain.nrows; from += CE_IN_CHUNK) {
        unsigned int k = plain.nrows - from < CE_IN_CHUNK ? plain.nrows - from : CE_IN_CHUNK;
        if (ce_claim_mark(c, &plain, from, k, worker_id, claim_id, lease, err) < 0) goto failed;
    }
    if (out->nrows == 0) {
        *out = plain;
        return 0;
    }
    if (ce_rows_append(out, &plain, NULL, CE_T_NCOLS + 1) < 0) {
        ce_error_set(err, CE_ENOMEM, "out of memory");
        goto failed;
    }
    ce_rows_free(&plain);
    return 0;
failed:
    ce_rows_free(&plain);
    ce_rows_free(out);
    return -1;
}

typedef struct {
    const char *queue;
    unsigned int n;
    const char *worker_id;
    double lease;
    ce_rows *out;
} claim_ctx;

static int claim_op(ce_conn *c, void *vctx, ce_error *err)
{
    claim_ctx *x = vctx;
    if (ce_conn_begin(c, err) < 0) return -1;
    if (ce_claim_in_tx(c, x->queue, x->n, x->worker_id, x->lease, x->out, err) < 0) return -1;
    if (x->out->nrows == 0) {
        ce_conn_rollback(c); /* nothing locked; no COMMIT round trip needed */
        return 0;
    }
    if (ce_conn_commit(c, err) < 0) {
        ce_rows_free(x->out);
        return -1;
    }
    return 0;
}

int ce_claim(ce_conn *c, const char *queue, unsigned int n, const char *worker_id, double lease,
             ce_rows *out, ce_error *err)
{
    claim_ctx x = {queue, n, worker_id, lease, out};
    memset(out, 0, sizeof *out);
    ce_recover_if_due(c, queue);
    ce_stage_if_due(c, queue);
    ce_limits_refresh_if_due(c);
    return ce_conn_run(c, CE_REPEAT, claim_op, &x, err);
}

/* The sweep slot of queue on c: its own, a free one, or the least recently swept. */
static int sweep_slot(ce_conn *c, const char *queue)
{
    int oldest = 0;
    for (int i = 0; i < CE_SWEEP_SLOTS; i++) {
        if (strncmp(c->sweeps[i].queue, queue, sizeof c->sweeps[i].queue) == 0) return i;
        if (c->sweeps[i].at < c->sweeps[oldest].at) oldest = i;
    }
    return oldest;
}

static void note_sweep(ce_conn *c, const char *queue)
{
    int i = sweep_slot(c, queue);
    snprintf(c->sweeps[i].queue, sizeof c->sweeps[i].queue, "%s", queue);
    c->sweeps[i].at = ce_monotonic();
}

void ce_recover_if_due(ce_conn *c, const char *queue)
{
    unsigned long long requeued, dead;
    ce_error ignored;
    int i = sweep_slot(c, queue);
    if (strncmp(c->sweeps[i].queue, queue, sizeof c->sweeps[i].queue) == 0 &&
        ce_monotonic() - c->sweeps[i].at < c->cfg.recover_interval)
        return;
    /* Best effort: a failed sweep must not fail the claim; the next one tries again later. */
    if (ce_recover_expired(c, queue, -1, &requeued, &dead, &ignored) < 0)
        note_sweep(c, queue);
    else
        c->swept_dead += dead; /* the binding adds it to the dead-lettered counter */
}

/* ---- settle ------------------------------------------------------------------------- */

/* A single fenced UPDATE: it may have landed when the link drops, so it is never repeated. */
static int settle_once(ce_conn *c, const char *sql, const ce_param *p, unsigned int n, int *ok,
                       ce_error *err)
{
    unsigned long long affected = 0;
    if (ce_run(c, CE_ONCE, sql, p, n, NULL, &affected, err) < 0) return -1;
    if (ok) *ok = affected > 0;
    return 0;
}

/* A fenced settle that changed nothing may be a repeat after "lost": did this claim already
 * do it? (sql takes the id and the claim; a bare id cannot tell.) */
static int settled_before(ce_conn *c, const char *sql, ce_task_ref ref, int *ok, ce_error *err)
{
    ce_param q[2] = {ce_pstr(ref.id), ce_pstr(ref.claim_id)};
    long long n = 0;
    if (*ok || !ref.claim_id) return 0;
    if (ce_run_count(c, CE_REPEAT, sql, q, 2, &n, err) < 0) return -1;
    *ok = n > 0;
    return 0;
}

/* ack_batch's count after a repeat: the tasks these claims completed, now or before. */
static int completed_pairs(ce_conn *c, const ce_task_ref *refs, size_t n, unsigned long long *acked,
                           ce_error *err)
{
    char *sql = pairs_sql(ACKED_PAIRS, n);
    ce_param *p = malloc(sizeof *p * pair_bucket(n) * 2);
    long long done = 0;
    int rc;
    if (!sql || !p) {
        free(sql);
        free(p);
        return ce_error_set(err, CE_ENOMEM, "out of memory");
    }
    rc = ce_run_count(c, CE_REPEAT, sql, p, put_pairs(p, refs, n), &done, err);
    free(sql);
    free(p);
    if (rc == 0) *acked = (unsigned long long)done;
    return rc;
}

int ce_ack(ce_conn *c, ce_task_ref ref, int *ok, ce_error *err)
{
    ce_param p[2] = {ce_pstr(ref.id), ce_pstr(ref.claim_id)};
    if (settle_once(c, SQL_ACK, p, 2, ok, err) < 0) return -1;
    return settled_before(c, SQL_ACKED, ref, ok, err);
}

int ce_ack_landed(ce_conn *c, ce_task_ref ref, int *landed, ce_error *err)
{
    *landed = 0;
    return settled_before(c, SQL_ACKED, ref, landed, err);
}

/* One UPDATE fenced per row by (id, claim_id) IN ((?, ?), ...), a range on the primary key;
 * n <= CE_IN_CHUNK. */
static int ack_pairs(ce_conn *c, const ce_task_ref *refs, size_t n, unsigned long long *acked,
                     ce_error *err)
{
    static const char head[] = "UPDATE celers_tasks SET state = 'completed', completed_at = "
                               "NOW(6), lease_expires_at = NULL WHERE state = 'processing' AND "
                               "(id, claim_id) IN (";
    char *sql = pairs_sql(head, n);
    ce_param *p = malloc(sizeof *p * pair_bucket(n) * 2);
    int rc = -1;
    if (!sql || !p) {
        ce_error_set(err, CE_ENOMEM, "out of memory");
        goto done;
    }
    rc = ce_exec(c, sql, p, put_pairs(p, refs, n), NULL, acked, err);
done:
    free(sql);
    free(p);
    return rc;
}

static int has_bare_id(const ce_task_ref *refs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!refs[i].claim_id) return 1;
    return 0;
}

int ce_ack_in_tx(ce_conn *c, const ce_task_ref *refs, size_t n, unsigned long long *acked,
                 ce_error *err)
{
    *acked = 0;
    if (has_bare_id(refs, n)) {
        /* Bare ids carry no claim: one fenced UPDATE each, fenced by state alone. */
        for (size_t i = 0; i < n; i++) {
            ce_param p[2] = {ce_pstr(refs[i].id), ce_pstr(refs[i].claim_id)};
            unsigned long long one = 0;
            if (ce_exec(c, SQL_ACK, p, 2, NULL, &one, err) < 0) return -1;
            *acked += one;
        }
        return 0;
    }
    for (size_t from = 0; from < n; from += CE_IN_CHUNK) {
        unsigned long long k = 0;
        if (ack_pairs(c, refs + from, n - from < CE_IN_CHUNK ? n - from : CE_IN_CHUNK, &k, err) < 0)
            return -1;
        *acked += k;
    }
    return 0;
}

typedef struct {
    const ce_task_ref *refs;
    size_t n;
    unsigned long long acked;
} ack_batch_ctx;

static int ack_batch_op(ce_conn *c, void *vctx, ce_error *err)
{
    ack_batch_ctx *x = vctx;
    return ack_pairs(c, x->refs, x->n, &x->acked, err);
}

int ce_ack_batch(ce_conn *c, const ce_task_ref *refs, size_t n, unsigned long long *acked,
                 ce_error *err)
{
    *acked = 0;
    if (has_bare_id(refs, n)) {
        /* Bare ids carry no claim: settle them one by one, fenced by state alone. */
        for (size_t k = 0; k < n; k++) {
            int ok = 0;
            if (ce_ack(c, refs[k], &ok, err) < 0) return -1;
            *acked += (unsigned long long)ok;
        }
        return 0;
    }
    /* Each chunk commits on its own: one that may have landed is never repeated. */
    for (size_t from = 0; from < n; from += CE_IN_CHUNK) {
        ack_batch_ctx x = {refs + from, n - from < CE_IN_CHUNK ? n - from : CE_IN_CHUNK, 0};
        if (ce_conn_run(c, CE_ONCE, ack_batch_op, &x, err) < 0) return -1;
        if (x.acked < x.n && completed_pairs(c, x.refs, x.n, &x.acked, err) < 0) return -1;
        *acked += x.acked;
    }
    return 0;
}

typedef struct {
    ce_task_ref ref;
    const char *error;
    int moved;
} dlq_ctx;

/* The longest retry delay, whatever the settings: ten years, as every other delay. */
#define RETRY_DELAY_LIMIT 315360000.0
#define RETRY_CAP_STEPS 100000

/* The retry backoff base * factor^(attempt - 1), capped at max, with every term bounded in C:
 * from attempt exponent `cap` on the delay is max, and below it base * factor^n < max, so the
 * server never computes a power that overflows a DOUBLE or a date (factor = 1e6, max = 1e12). */
typedef struct {
    double base, factor, max;
    long long cap;
} backoff;

static backoff bounded_backoff(const ce_config *cfg)
{
    backoff b = {cfg->retry_base, cfg->retry_factor, cfg->retry_max, 0};
    double d;
    if (!(b.max >= 0) || b.max > RETRY_DELAY_LIMIT) b.max = RETRY_DELAY_LIMIT; /* NaN too */
    if (!(b.base >= 0) || b.base > b.max) b.base = b.max;
    if (!(b.factor >= 0)) b.factor = 1;
    if (b.base == 0) b.max = 0; /* 0 * factor^n is 0 */
    /* A factor at or below 1 never grows past base; a factor barely above 1 reaches max so
     * late that stopping the count at RETRY_CAP_STEPS attempts changes nothing in practice. */
    for (d = b.base; d < b.max && b.factor > 1 && b.cap < RETRY_CAP_STEPS; d *= b.factor)
        b.cap++;
    if (b.factor <= 1 && b.base < b.max) b.cap = RETRY_CAP_STEPS;
    return b;
}

static int dead_letter_op(ce_conn *c, void *vctx, ce_error *err)
{
    dlq_ctx *x = vctx;
    ce_param p[2] = {ce_pstr(x->ref.id), ce_pstr(x->ref.claim_id)};
    ce_rows held = {0};
    x->moved = 0;
    if (ce_conn_begin(c, err) < 0) return -1;
    if (ce_exec(c, SQL_LOCK_HELD, p, 2, &held, NULL, err) < 0) return -1;
    x->moved = held.nrows > 0;
    ce_rows_free(&held);
    if (x->moved && move_to_dlq(c, x->ref.id, x->error, err) < 0) return -1;
    return ce_conn_commit(c, err);
}

int ce_reject(ce_conn *c, ce_task_ref ref, int requeue, double delay, const char *error,
              int *outcome, ce_error *err)
{
    dlq_ctx d = {ref, error, 0};
    *outcome = 0;
    if (requeue) {
        backoff b = bounded_backoff(&c->cfg);
        ce_param d = delay >= 0 ? ce_pdouble(delay) : ce_pnull();
        ce_param p[13] = {d,
                          ce_pint(b.cap),
                          ce_pdouble(b.max),
                          ce_pdouble(b.base),
                          ce_pdouble(b.factor),
                          d,
                          ce_pint(b.cap),
                          ce_pdouble(b.max),
                          ce_pdouble(b.base),
                          ce_pdouble(b.factor),
                          ce_pstr(error),
                          ce_pstr(ref.id),
                          ce_pstr(ref.claim_id)};
        int ok = 0;
        if (settle_once(c, SQL_RETRY, p, 13, &ok, err) < 0) return -1;
        if (settled_before(c, SQL_REQUEUED, ref, &ok, err) < 0) return -1;
        if (ok) {
            *outcome = 1;
            return 0;
        }
        /* Not requeued: either the claim is gone or the retries are spent. */
    }
    if (ce_conn_run(c, CE_REPEAT, dead_letter_op, &d, err) < 0) return -1;
    if (settled_before(c, SQL_DEAD_LETTERED, ref, &d.moved, err) < 0) return -1;
    *outcome = d.moved ? 2 : 0;
    return 0;
}

int ce_touch(ce_conn *c, ce_task_ref ref, double seconds, int *ok, ce_error *err)
{
    ce_param p[4] = {seconds >= 0 ? ce_pdouble(seconds) : ce_pnull(), ce_pdouble(c->cfg.lease),
                     ce_pstr(ref.id), ce_pstr(ref.claim_id)};
    return settle_once(c, SQL_TOUCH, p, 4, ok, err);
}

typedef struct {
    const ce_task_ref *refs;
    size_t n;
    double seconds;
    unsigned char *held;
} touch_batch_ctx;

static int touch_batch_op(ce_conn *c, void *vctx, ce_error *err)
{
    // clang-format off
    static const char update[] =
        "UPDATE celers_tasks SET lease_expires_at = " CE_FROM_NOW("COALESCE(?, timeout_seconds, ?)") " "
        "WHERE state = 'processing' AND (id, claim_id) IN (";
    // clang-format on
    static const char still[] =
        "SELECT id, claim_id FROM celers_tasks WHERE state = 'processing' AND "
        "(id, claim_id) IN (";
    touch_batch_ctx *x = vctx;
    char *usql = pairs_sql(update, x->n), *ssql = pairs_sql(still, x->n);
    ce_param *p = malloc(sizeof *p * (pair_bucket(x->n) * 2 + 2));
    unsigned int np;
    unsigned long long affected = 0;
    ce_rows rows = {0};
    int rc = -1;
    if (!usql || !ssql || !p) {
        ce_error_set(err, CE_ENOMEM, "out of memory");
        goto done;
    }
    p[0] = x->seconds >= 0 ? ce_pdouble(x->seconds) : ce_pnull();
    p[1] = ce_pdouble(c->cfg.lease);
    np = put_pairs(p + 2, x->refs, x->n);
    if (ce_exec(c, usql, p, np + 2, NULL, &affected, err) < 0) goto done;
    memset(x->held, affected == x->n, x->n);
    /* Some leases were lost: ask which tasks are still ours (rare, one more round trip). */
    if (affected < x->n) {
        if (ce_exec(c, ssql, p + 2, np, &rows, NULL, err) < 0) goto done;
        for (unsigned int r = 0; r < rows.nrows; r++)
            for (size_t i = 0; i < x->n; i++)
                if (CE_CELL(&rows, r, 1)->data &&
                    strcmp(CE_CELL(&rows, r, 0)->data, x->refs[i].id) == 0 &&
                    strcmp(CE_CELL(&rows, r, 1)->data, x->refs[i].claim_id) == 0)
                    x->held[i] = 1;
    }
    rc = 0;
done:
    ce_rows_free(&rows);
    free(usql);
    free(ssql);
    free(p);
    return rc;
}

int ce_touch_batch(ce_conn *c, const ce_task_ref *refs, size_t n, double seconds,
                   unsigned char *held, ce_error *err)
{
    for (size_t i = 0; i < n; i++) {
        if (!refs[i].claim_id) {
            /* Bare ids carry no claim: one by one, fenced by state alone. */
            for (size_t k = 0; k < n; k++) {
                int ok = 0;
                if (ce_touch(c, refs[k], seconds, &ok, err) < 0) return -1;
                held[k] = (unsigned char)ok;
            }
            return 0;
        }
    }
    for (size_t from = 0; from < n; from += CE_IN_CHUNK) {
        touch_batch_ctx x = {refs + from, n - from < CE_IN_CHUNK ? n - from : CE_IN_CHUNK, seconds,
                             held + from};
        /* Extending a lease again is harmless: safe to repeat after a lost link. */
        if (ce_conn_run(c, CE_REPEAT, touch_batch_op, &x, err) < 0) return -1;
    }
    return 0;
}

int ce_cancel(ce_conn *c, const char *id, int *ok, ce_error *err)
{
    ce_param p[1] = {ce_pstr(id)};
    return settle_once(c, SQL_CANCEL, p, 1, ok, err);
}

/* ---- lease recovery ----------------------------------------------------------------- */

typedef struct {
    const char *queue;
    double older_than;
    unsigned long long requeued, dead;
} recover_ctx;

static void overdue_params(ce_param *p, const recover_ctx *x)
{
    p[0] = ce_pstr(x->queue);
    p[1] = x->older_than >= 0 ? ce_pdouble(x->older_than) : ce_pnull();
    p[2] = p[1];
}

static int recover_op(ce_conn *c, void *vctx, ce_error *err)
{
    recover_ctx *x = vctx;
    ce_param p[3];
    unsigned long long requeued = 0;
    overdue_params(p, x);
    /* Counts add up across repeats: each step commits on its own, and a repeat after a lost
     * link finds only what the first try had not done. */
    if (ce_exec(c, SQL_RECOVER, p, 3, NULL, &requeued, err) < 0) return -1;
    x->requeued += requeued;
    for (;;) {
        ce_rows spent = {0};
        unsigned int n;
        if (ce_conn_begin(c, err) < 0) return -1;
        if (ce_exec(c, SQL_OVERDUE_SPENT, p, 3, &spent, NULL, err) < 0) return -1;
        n = spent.nrows;
        for (unsigned int i = 0; i < n; i++) {
            if (move_to_dlq(c, CE_CELL(&spent, i, 0)->data, "lease expired", err) < 0) {
                ce_rows_free(&spent);
                return -1;
            }
        }
        ce_rows_free(&spent);
        if (ce_conn_commit(c, err) < 0) return -1;
        x->dead += n;
        if (n < SWEEP_ROWS) return 0;
    }
}

int ce_recover_expired(ce_conn *c, const char *queue, double older_than,
                       unsigned long long *requeued, unsigned long long *dead, ce_error *err)
{
    recover_ctx x = {queue, older_than, 0, 0};
    /* Each step commits on its own, so repeating after a lost link only redoes what is left. */
    if (ce_conn_run(c, CE_REPEAT, recover_op, &x, err) < 0) return -1;
    note_sweep(c, queue);
    *requeued = x.requeued;
    *dead = x.dead;
    return 0;
}

/* ---- queue control and lookups ------------------------------------------------------ */

int ce_pause(ce_conn *c, const char *queue, ce_error *err)
{
    ce_param p[1] = {ce_pstr(queue)};
    /* Pausing twice is the same as once: safe to repeat. */
    return ce_run(c, CE_REPEAT, SQL_PAUSE, p, 1, NULL, NULL, err);
}

int ce_resume(ce_conn *c, const char *queue, ce_error *err)
{
    ce_param p[1] = {ce_pstr(queue)};
    return ce_run(c, CE_REPEAT, SQL_RESUME, p, 1, NULL, NULL, err);
}

int ce_is_paused(ce_conn *c, const char *queue, int *paused, ce_error *err)
{
    ce_param p[1] = {ce_pstr(queue)};
    long long n = 0;
    if (ce_run_count(c, CE_REPEAT, SQL_IS_PAUSED, p, 1, &n, err) < 0) return -1;
    *paused = n > 0;
    return 0;
}

int ce_queue_size(ce_conn *c, const char *queue, long long *size, ce_error *err)
{
    ce_param p[1] = {ce_pstr(queue)};
    return ce_run_count(c, CE_REPEAT, SQL_QUEUE_SIZE, p, 1, size, err);
}

int ce_get_task(ce_conn *c, const char *id, ce_rows *out, ce_error *err)
{
    ce_param p[1] = {ce_pstr(id)};
    return ce_run(c, CE_REPEAT, SQL_GET_TASK, p, 1, out, NULL, err);
}
