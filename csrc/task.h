/* The queue operations on tasks already stored: claim, settle (fenced by the claim), lease
 * recovery, pause, lookup. Enqueueing is in enqueue.h.
 * Tasks come back as ce_rows whose columns follow CE_TASK_COLUMNS (see enum ce_task_col). */
#ifndef CELERS_TASK_H
#define CELERS_TASK_H

#include "connection.h"
#include "statement.h"
#include "uuid7.h"

/* Column order of every task row returned by the core. */
enum ce_task_col {
    CE_T_ID,
    CE_T_NAME,
    CE_T_PAYLOAD,
    CE_T_PAYLOAD_TYPE,
    CE_T_PRIORITY,
    CE_T_RETRY_COUNT,
    CE_T_MAX_RETRIES,
    CE_T_QUEUE,
    CE_T_STATE,
    CE_T_CREATED_AT,
    CE_T_SCHEDULED_AT,
    CE_T_STARTED_AT,
    CE_T_COMPLETED_AT,
    CE_T_WORKER_ID,
    CE_T_ERROR,
    CE_T_METADATA,
    CE_T_CLAIM_ID,
    CE_T_LEASE_EXPIRES_AT,
    CE_T_TIMEOUT,
    CE_T_IDEMPOTENCY_KEY,
    CE_T_NCOLS
};

// clang-format off
/* SELECT list producing those columns from celers_tasks; times as Unix seconds (CE_EPOCH). */
#define CE_TASK_COLUMNS \
    "id, task_name, payload, payload_type, priority, retry_count, max_retries, queue, state, " \
    CE_EPOCH("created_at") ", " CE_EPOCH("scheduled_at") ", " CE_EPOCH("started_at") ", " \
    CE_EPOCH("completed_at") ", worker_id, error_message, metadata, claim_id, " \
    CE_EPOCH("lease_expires_at") ", timeout_seconds, idempotency_key"

/* The claim's SELECT list: a task row (enum ce_task_col) as the claim leaves it, then the
 * server's NOW(6) (column CE_T_NCOLS, the started_at ce_claim_mark writes). Parameters:
 * worker_id, claim_id, lease. */
#define CE_CLAIM_COLUMNS \
    "id, task_name, payload, payload_type, priority, retry_count + 1, max_retries, queue, " \
    "'processing', " CE_EPOCH("created_at") ", " CE_EPOCH("scheduled_at") ", " CE_EPOCH("NOW(6)") ", " \
    "NULL, ?, error_message, metadata, " \
    "?, " CE_EPOCH(CE_FROM_NOW("COALESCE(timeout_seconds, ?)")) ", " \
    "timeout_seconds, idempotency_key, NOW(6)"
// clang-format on

/* Reference to a claimed task: the id and the claim that fences settling.
 * claim_id NULL fences on state alone (the caller passed a bare id). */
typedef struct ce_task_ref {
    const char *id;
    const char *claim_id;
} ce_task_ref;

/* Claim up to n ready tasks of queue for worker_id with a lease of `lease` seconds (per-task
 * timeouts win). Rows follow enum ce_task_col, already showing the claimed state. */
int ce_claim(ce_conn *c, const char *queue, unsigned int n, const char *worker_id, double lease,
             ce_rows *out, ce_error *err);

/* Longest IN list of one statement (1000 parameters for pairs, far below the protocol's
 * 65535); longer batches run in chunks of this size. */
#define CE_IN_CHUNK 500

/* Building blocks for hand-offs (handoff.c), run inside the caller's open transaction:
 * claim up to n tasks as ce_claim does; ack refs fenced per task (*acked: how many landed). */
int ce_claim_in_tx(ce_conn *c, const char *queue, unsigned int n, const char *worker_id,
                   double lease, ce_rows *out, ce_error *err);
int ce_ack_in_tx(ce_conn *c, const ce_task_ref *refs, size_t n, unsigned long long *acked,
                 ce_error *err);
/* Mark rows [from, from + k) of claimed (CE_CLAIM_COLUMNS rows, k <= CE_IN_CHUNK) as held by
 * claim_id for worker_id: one UPDATE, inside the claim's transaction. */
int ce_claim_mark(ce_conn *c, const ce_rows *claimed, unsigned int from, unsigned int k,
                  const char *worker_id, const char *claim_id, double lease, ce_error *err);

/* Settling: *ok is 1 when the task was still held under that claim and changed. */
int ce_ack(ce_conn *c, ce_task_ref ref, int *ok, ce_error *err);
/* Is ref completed under its claim (an ack, or ack_and_claim's ack, landed)? 0 for a bare id. */
int ce_ack_landed(ce_conn *c, ce_task_ref ref, int *landed, ce_error *err);
int ce_ack_batch(ce_conn *c, const ce_task_ref *refs, size_t n, unsigned long long *acked,
                 ce_error *err);
/* Failed attempt. requeue with retries left: back to pending after delay (< 0: the broker's
 * backoff; a positive delay waits in 'scheduled'); otherwise to the dead-letter queue. *outcome: 0
 * unchanged, 1 requeued, 2 dead. */
int ce_reject(ce_conn *c, ce_task_ref ref, int requeue, double delay, const char *error,
              int *outcome, ce_error *err);
/* Extend the lease by seconds (< 0: the task's timeout or the broker's lease). */
int ce_touch(ce_conn *c, ce_task_ref ref, double seconds, int *ok, ce_error *err);
/* Extend the leases of n held tasks in one statement (seconds < 0: each task's timeout or the
 * broker's lease); held[i] is set to 1 when task i is still held under its claim. */
int ce_touch_batch(ce_conn *c, const ce_task_ref *refs, size_t n, double seconds,
                   unsigned char *held, ce_error *err);
/* Cancel a pending or processing task. */
int ce_cancel(ce_conn *c, const char *id, int *ok, ce_error *err);

/* Expired leases of queue go back to pending, or to the DLQ when retries are spent.
 * older_than >= 0 also takes tasks started more than that many seconds ago. */
int ce_recover_expired(ce_conn *c, const char *queue, double older_than,
                       unsigned long long *requeued, unsigned long long *dead, ce_error *err);

/* The sweep above for queue when recover_interval seconds have passed since its last one on
 * c (tracked per queue); claims call it so crashed workers' tasks come back without a
 * separate job. Best effort: a failing sweep is left for the next claim. */
void ce_recover_if_due(ce_conn *c, const char *queue);

int ce_pause(ce_conn *c, const char *queue, ce_error *err);
int ce_resume(ce_conn *c, const char *queue, ce_error *err);
int ce_is_paused(ce_conn *c, const char *queue, int *paused, ce_error *err);
int ce_queue_size(ce_conn *c, const char *queue, long long *size, ce_error *err);

/* One task by id (any queue); *found 0 when there is none. */
int ce_get_task(ce_conn *c, const char *id, ce_rows *out, ce_error *err);

#endif
