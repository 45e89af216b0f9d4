/* Staging: tasks whose time has not come wait in state 'scheduled', outside the claim's index
 * range, so a poll never reads them. This step promotes the ones that are due to 'pending',
 * oldest first, a bounded number at a time; claims run it at most every CE_STAGE_INTERVAL
 * seconds per queue and connection (the way the lease sweep runs). */
#ifndef CELERS_STAGING_H
#define CELERS_STAGING_H

#include "connection.h"

/* Rows promoted per step, and the pause between two steps of one queue on one connection:
 * a due task waits at most about this long (plus the poll interval) before it is ready. */
#define CE_STAGE_ROWS 500
#define CE_STAGE_INTERVAL 0.1

/* Promote up to limit due scheduled tasks of queue; *promoted says how many. */
int ce_stage_due(ce_conn *c, const char *queue, unsigned int limit, unsigned long long *promoted,
                 ce_error *err);

/* The step above when CE_STAGE_INTERVAL has passed since the last one for queue on c (at once
 * again when the last one was full). Best effort: a failing step is left for the next claim. */
void ce_stage_if_due(ce_conn *c, const char *queue);

#endif
