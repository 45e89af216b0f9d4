/* Hand-off: settle the task in hand and claim the next one in a single round trip, through
 * the stored procedure celers_ack_and_claim (sql/010_ack_and_claim.sql). */
#ifndef CELERS_HANDOFF_H
#define CELERS_HANDOFF_H

#include "task.h"

/* Ack prev (prev.id NULL: nothing to ack) and claim one ready task of queue. *acked says
 * whether the ack landed; out has one row (enum ce_task_col) when a task was claimed. */
int ce_ack_and_claim(ce_conn *c, const char *queue, ce_task_ref prev, const char *worker_id,
                     double lease, int *acked, ce_rows *out, ce_error *err);

#endif
