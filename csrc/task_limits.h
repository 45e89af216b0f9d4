/* Concurrency and rate limits per task name, enforced when tasks are claimed.
 *
 * A limit (one row of celers_task_limits, sql/031) caps a task name: at most max_running of
 * its tasks processing at once across every worker and process (or at most that many per
 * value of a payload field, partition_by), and at most rate_limit starts in any rate_period
 * seconds. The ordinary claim never takes a limited name; the limited claim below takes them
 * while it holds the limit's row, so claimers of one name take turns and count the committed
 * truth. */
#ifndef CELERS_TASK_LIMITS_H
#define CELERS_TASK_LIMITS_H

#include "connection.h"
#include "statement.h"

/* How often a connection re-reads which names are limited (seconds). A new limit holds at
 * once (the ordinary claim reads the table); its tasks start being claimed within this. */
#define CE_LIMITS_INTERVAL 1.0
/* Waiting tasks of a partitioned name one claim looks at, in claim order. */
#define CE_LIMIT_SCAN 100
/* Longest payload path (partition_by). */
#define CE_LIMIT_PATH_MAX 255

typedef struct ce_limit {
    const char *task_name;
    long long max_running;    /* < 0: none */
    const char *partition_by; /* payload field name or JSON path ("$..."); NULL: none */
    long long rate_limit;     /* < 0: none */
    double rate_period;       /* seconds, with rate_limit */
} ce_limit;

/* Create or replace the limit of l->task_name. */
int ce_set_limit(ce_conn *c, const ce_limit *l, ce_error *err);
/* Drop it; *removed is 0 when there was none. */
int ce_remove_limit(ce_conn *c, const char *task_name, int *removed, ce_error *err);
/* Every limit with its state: task_name, max_running, partition_by, rate_limit, rate_period,
 * running (processing now), started (starts in the last rate_period), waiting (pending or
 * scheduled, every queue), in name order. */
enum ce_limit_col {
    CE_L_NAME,
    CE_L_MAX_RUNNING,
    CE_L_PARTITION_BY,
    CE_L_RATE_LIMIT,
    CE_L_RATE_PERIOD,
    CE_L_RUNNING,
    CE_L_STARTED,
    CE_L_WAITING,
    CE_L_NCOLS
};
int ce_list_limits(ce_conn *c, ce_rows *out, ce_error *err);

/* The JSON path of a partition_by value into out (CE_LIMIT_PATH_MAX + 8 bytes): a path
 * starting with '$' as given, a field name quoted as $."name". -1 when a name holds '"' or
 * '\' or the result is too long. */
int ce_limit_path(const char *partition_by, char *out, size_t outlen);

/* Re-read the limited names when CE_LIMITS_INTERVAL has passed (best effort: a failure keeps
 * the old list). */
void ce_limits_refresh_if_due(ce_conn *c);

/* Inside the claim's transaction: claim up to n waiting tasks of limited names in queue, as
 * far as their limits allow, appending them to out (CE_CLAIM_COLUMNS rows) under claim_id. */
int ce_claim_limited_in_tx(ce_conn *c, const char *queue, unsigned int n, const char *worker_id,
                           const char *claim_id, double lease, ce_rows *out, ce_error *err);

#endif
