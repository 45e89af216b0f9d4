/* Reads behind the web dashboard (lua/celers/nginx.lua): every queue, throughput per
 * minute, recurring runs, and "retry now". Read-only except ce_retry_now. */
#ifndef CELERS_DASHBOARD_H
#define CELERS_DASHBOARD_H

#include "connection.h"
#include "statement.h"

/* Rows (queue, paused 0/1): every queue that has tasks, dead letters or a pause. */
int ce_dash_queues(ce_conn *c, ce_rows *out, ce_error *err);
/* Rows (kind 'enqueued'|'completed'|'failed', minute as Unix seconds, count) for queue over
 * the last `minutes` minutes, from the rows' own times: tasks' created_at, completed_at of
 * completed tasks (live and archived), failed_at of dead letters and completed_at of failed
 * tasks. */
int ce_dash_throughput(ce_conn *c, const char *queue, long long minutes, ce_rows *out,
                       ce_error *err);
/* Rows (schedule_name, last run_at, runs, last task_id, previous run_at or NULL) of queue's
 * recurring schedules. */
int ce_dash_recurring(ce_conn *c, const char *queue, ce_rows *out, ce_error *err);
/* Rows (state, worker_id, error_message, retry_count, created_at, started_at, completed_at,
 * archived_at; times as Unix seconds) of a task's archived copies in celers_task_history. */
int ce_dash_history(ce_conn *c, const char *queue, const char *task_id, ce_rows *out,
                    ce_error *err);
/* A task that waits (scheduled, pending in the future, failed, cancelled) becomes due now.
 * *found is 0 when no such task is in queue. */
int ce_retry_now(ce_conn *c, const char *queue, const char *id, int *found, ce_error *err);

#endif
