/* Inspection, results, dead-letter queue, health and upkeep.
 * Everything acts on one queue except ce_purge_all, ce_table_sizes and ce_optimize_tables
 * (which are about whole tables). Ages are measured on the database clock (NOW(6)).
 * Bulk deletes run in chunks of CE_CHUNK_ROWS rows, each chunk its own statement/commit.
 *
 *   admin.c    chunked deletes (single statements go through ce_run, statement.h)
 *   inspect.c  task listing and counting
 *   results.c  task results
 *   dlq.c      dead-letter queue
 *   upkeep.c   health, table sizes, optimize/analyze, archiving, purges */
#ifndef CELERS_ADMIN_H
#define CELERS_ADMIN_H

#include "connection.h"
#include "statement.h"
#include "uuid7.h"

/* Rows per chunk of a bulk delete or archive (a literal: it is spliced into SQL text). */
#define CE_CHUNK_ROWS 1000
#define CE_CHUNK_ROWS_SQL "1000"

/* ---- helpers (admin.c) -------------------------------------------------------------- */

/* Run a DELETE ending in "LIMIT " CE_CHUNK_ROWS_SQL until it deletes fewer rows than that.
 * Each chunk is its own autocommit statement; *deleted counts them all. */
int ce_delete_chunked(ce_conn *c, const char *sql, const ce_param *p, unsigned int n,
                      unsigned long long *deleted, ce_error *err);

/* ---- inspection (inspect.c) --------------------------------------------------------- */

/* Tasks of queue in id order (ids are time-ordered, so this is creation order).
 * state NULL: any state; after_id NULL: from the start. Rows follow enum ce_task_col. */
int ce_list_tasks(ce_conn *c, const char *queue, const char *state, const char *after_id,
                  long long limit, long long offset, ce_rows *out, ce_error *err);

typedef struct ce_stats {
    long long pending, processing, completed, failed, cancelled;
    long long scheduled; /* not yet due: state 'scheduled', and Rust-written future 'pending' */
    long long dlq;       /* rows of the queue in the dead-letter queue */
    long long total;     /* task rows of the queue, any state (DLQ not included) */
} ce_stats;

/* One round trip; every part is an index range (see docs/admin.md for the EXPLAIN). */
int ce_get_statistics(ce_conn *c, const char *queue, ce_stats *out, ce_error *err);
/* Rows (task_name, count) of tasks of queue in state, or scheduled + pending + processing when
 * NULL. */
int ce_count_by_task_name(ce_conn *c, const char *queue, const char *state, ce_rows *out,
                          ce_error *err);
/* Tasks whose time has not come (see ce_stats.scheduled), by scheduled_at then id. */
int ce_list_scheduled(ce_conn *c, const char *queue, long long limit, long long offset,
                      ce_rows *out, ce_error *err);
int ce_count_scheduled(ce_conn *c, const char *queue, long long *n, ce_error *err);
/* Processing tasks, oldest claim first (started_at, id). */
int ce_list_processing(ce_conn *c, const char *queue, long long limit, long long offset,
                       ce_rows *out, ce_error *err);
/* Processing tasks of queue held by worker_id, oldest claim first. */
int ce_tasks_by_worker(ce_conn *c, const char *queue, const char *worker_id, ce_rows *out,
                       ce_error *err);
/* Set a task's worker_id / error_message (NULL clears); *found 0 when queue has no such id. */
int ce_set_worker_id(ce_conn *c, const char *queue, const char *id, const char *worker_id,
                     int *found, ce_error *err);
int ce_set_error_message(ce_conn *c, const char *queue, const char *id, const char *message,
                         int *found, ce_error *err);

/* ---- results (results.c) ------------------------------------------------------------ */

typedef struct ce_result_spec {
    const char *task_name; /* NULL: "" */
    const char *status;    /* "success", "failure" or "pending" */
    const char *result;    /* NULL: SQL NULL */
    unsigned long result_len;
    const char *result_type; /* "raw" or "json" */
    const char *error;
    int has_ttl;
    double ttl; /* seconds from now until the result expires */
} ce_result_spec;

/* Columns of result rows. */
enum ce_result_col {
    CE_R_TASK_ID,
    CE_R_TASK_NAME,
    CE_R_STATUS,
    CE_R_RESULT,
    CE_R_RESULT_TYPE,
    CE_R_ERROR,
    CE_R_CREATED_AT,
    CE_R_COMPLETED_AT,
    CE_R_EXPIRES_AT,
    CE_R_QUEUE,
    CE_R_ID,
    CE_R_NCOLS
};

/* Insert or replace the result of task_id (completed_at is set unless status is pending). */
int ce_store_result(ce_conn *c, const char *queue, const char *task_id, const ce_result_spec *r,
                    ce_error *err);
/* The unexpired result of task_id in queue: zero or one row (enum ce_result_col). */
int ce_get_result(ce_conn *c, const char *queue, const char *task_id, ce_rows *out, ce_error *err);
int ce_delete_result(ce_conn *c, const char *queue, const char *task_id, int *found, ce_error *err);
/* Delete the queue's results completed more than older_than seconds ago, and expired ones. */
int ce_archive_results(ce_conn *c, const char *queue, double older_than,
                       unsigned long long *deleted, ce_error *err);

/* ---- dead-letter queue (dlq.c) ------------------------------------------------------ */

enum ce_dlq_col {
    CE_D_ID,
    CE_D_TASK_ID,
    CE_D_NAME,
    CE_D_PAYLOAD,
    CE_D_PAYLOAD_TYPE,
    CE_D_RETRY_COUNT,
    CE_D_MAX_RETRIES,
    CE_D_PRIORITY,
    CE_D_QUEUE,
    CE_D_ERROR,
    CE_D_FAILED_AT,
    CE_D_CREATED_AT,
    CE_D_METADATA,
    CE_D_TIMEOUT,
    CE_D_IDEMPOTENCY_KEY,
    CE_D_WORKER_ID,
    CE_D_STARTED_AT,
    CE_D_NCOLS
};

/* DLQ rows of queue, oldest failure first (failed_at, id). */
int ce_list_dlq(ce_conn *c, const char *queue, long long limit, long long offset, ce_rows *out,
                ce_error *err);
/* A fresh pending task from DLQ row dlq_id of queue, and the row's removal, in one
 * transaction. *found 0 (and nothing done) when queue has no such row. */
int ce_requeue_from_dlq(ce_conn *c, const char *queue, const char *dlq_id,
                        char id_out[CE_UUID_LEN + 1], int *found, ce_error *err);
int ce_purge_dlq(ce_conn *c, const char *queue, const char *dlq_id, int *found, ce_error *err);
int ce_purge_all_dlq(ce_conn *c, const char *queue, unsigned long long *deleted, ce_error *err);

/* ---- health and upkeep (upkeep.c) --------------------------------------------------- */

typedef struct ce_health {
    char server_version[128];
    double latency_ms; /* round trip of SELECT VERSION() */
    long long pending, processing, dlq;
} ce_health;

int ce_check_health(ce_conn *c, const char *queue, ce_health *h, ce_error *err);
/* Rows (table_name, table_rows, data_length, index_length) of the celers_* tables of the
 * connection's database, from information_schema (InnoDB row counts are estimates). */
int ce_table_sizes(ce_conn *c, ce_rows *out, ce_error *err);
/* OPTIMIZE (analyze 0) or ANALYZE (analyze 1) TABLE over the celers tables: the server's
 * rows (Table, Op, Msg_type, Msg_text). */
int ce_optimize_tables(ce_conn *c, int analyze, ce_rows *out, ce_error *err);
/* Copy the queue's tasks completed more than older_than seconds ago into
 * celers_task_history and delete them, in chunks. */
int ce_archive_completed(ce_conn *c, const char *queue, double older_than,
                         unsigned long long *archived, ce_error *err);
/* Every task of every queue, the whole DLQ and every result. */
int ce_purge_all(ce_conn *c, unsigned long long *tasks, unsigned long long *dlq,
                 unsigned long long *results, ce_error *err);
int ce_purge_state(ce_conn *c, const char *queue, const char *state, unsigned long long *deleted,
                   ce_error *err);
int ce_purge_task_name(ce_conn *c, const char *queue, const char *task_name,
                       unsigned long long *deleted, ce_error *err);

#endif
