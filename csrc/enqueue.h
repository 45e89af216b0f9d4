/* Enqueueing: one task, a batch (all or nothing), and a recurring occurrence (recorded and
 * enqueued in one transaction). */
#ifndef CELERS_ENQUEUE_H
#define CELERS_ENQUEUE_H

#include "connection.h"
#include "statement.h"
#include "uuid7.h"

/* What enqueue needs of one task. Strings are borrowed. */
typedef struct ce_task_spec {
    const char *name;
    const char *payload;
    unsigned long payload_len;
    const char *payload_type; /* "raw" or "json"; NULL = "raw" */
    const char *id;           /* NULL: a new time-ordered id */
    const char *queue;        /* NULL: the broker's queue */
    long long priority;
    long long max_retries;
    double timeout; /* lease for this task, seconds; <= 0: the broker default */
    int has_delay, has_eta;
    double delay, eta;    /* seconds from now / Unix time */
    const char *metadata; /* JSON text or NULL */
    const char *idempotency_key;
    /* unique jobs (sql/030_unique_jobs.sql): what makes two tasks the same, as text the server
     * hashes (NULL: not unique); the window in seconds (<= 0: none); states holding the key */
    const char *unique_text;
    unsigned long unique_text_len;
    double unique_period;
    unsigned int unique_states;
} ce_task_spec;

void ce_task_spec_init(ce_task_spec *t);

/* Enqueue one task; id_out gets its id. With an idempotency key already used in the queue, or
 * a unique key held by another task, id_out gets that task's id and *created is 0. */
int ce_enqueue(ce_conn *c, const char *queue, const ce_task_spec *t, char id_out[CE_UUID_LEN + 1],
               int *created, ce_error *err);
/* Enqueue n tasks all-or-nothing. ids must hold n ids. With skip_existing, rows whose id or
 * idempotency key exists are left alone and *inserted counts the new ones. created (n flags,
 * or NULL) tells which tasks were inserted; with skip_existing and caller ids it is exact only
 * when every such task was inserted or none was (see enqueue.c). */
int ce_enqueue_batch(ce_conn *c, const char *queue, const ce_task_spec *tasks, size_t n,
                     int skip_existing, char (*ids)[CE_UUID_LEN + 1], unsigned long long *inserted,
                     unsigned char *created, ce_error *err);

/* Record a recurring occurrence and enqueue its task in one transaction; when the occurrence
 * was already recorded (by this or another scheduler) *created is 0 and id_out is its task. */
int ce_enqueue_recurring(ce_conn *c, const char *queue, const char *schedule, long long run_at,
                         const ce_task_spec *t, char id_out[CE_UUID_LEN + 1], int *created,
                         ce_error *err);

#endif
