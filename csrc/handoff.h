/* Hand-off: settle the tasks in hand and claim the next ones in ONE transaction (one commit).
 * ack_and_claim is also one round trip, through the stored procedure celers_ack_and_claim
 * (sql/017_ack_and_claim_one_commit.sql). */
#ifndef CELERS_HANDOFF_H
#define CELERS_HANDOFF_H

#include "task.h"

/* Ack prev (prev.id NULL: nothing to ack) and claim one ready task of queue. *acked says
 * whether the ack landed; out has one row (enum ce_task_col) when a task was claimed. */
int ce_ack_and_claim(ce_conn *c, const char *queue, ce_task_ref prev, const char *worker_id,
                     double lease, int *acked, ce_rows *out, ce_error *err);

/* Ack refs (fenced per task; *acked says how many landed) and claim up to n ready tasks of
 * queue (n 0: none), one transaction and one commit. On error nothing of it landed, unless
 * the error is "lost" (the COMMIT was sent and not answered). */
int ce_ack_batch_and_claim(ce_conn *c, const char *queue, const ce_task_ref *refs, size_t nrefs,
                           unsigned int n, const char *worker_id, double lease,
                           unsigned long long *acked, ce_rows *out, ce_error *err);

#endif
