/* The registry of live workers (celers_workers): each worker reports now and then; a row
 * whose last_seen is old belongs to a worker that died. */
#ifndef CELERS_WORKERS_H
#define CELERS_WORKERS_H

#include "connection.h"
#include "statement.h"

typedef struct ce_worker_beat {
    const char *worker_id;
    const char *queue;
    const char *hostname;
    long long pid;
    long long processed, failed; /* totals so far, as the worker counts them */
    const char *info;            /* JSON text or NULL */
} ce_worker_beat;

/* Columns of the rows ce_list_workers returns. */
enum ce_worker_col {
    CE_W_ID,
    CE_W_QUEUE,
    CE_W_HOSTNAME,
    CE_W_PID,
    CE_W_STARTED_AT,
    CE_W_LAST_SEEN,
    CE_W_PROCESSED,
    CE_W_FAILED,
    CE_W_INFO,
    CE_W_AGE,
    CE_W_NCOLS
};

/* Insert or refresh the worker's row; last_seen is the database's NOW(6). */
int ce_worker_heartbeat(ce_conn *c, const ce_worker_beat *w, ce_error *err);
/* Workers of queue, most recently seen first; stale_after >= 0 keeps only those seen within
 * that many seconds. */
int ce_list_workers(ce_conn *c, const char *queue, double stale_after, ce_rows *out, ce_error *err);
int ce_remove_worker(ce_conn *c, const char *worker_id, int *ok, ce_error *err);
/* Delete the rows of queue not seen for older_than seconds. */
int ce_prune_workers(ce_conn *c, const char *queue, double older_than, unsigned long long *n,
                     ce_error *err);

#endif
