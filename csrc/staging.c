#include "staging.h"

#include <stdio.h>
#include <string.h>

#include "statement.h"

/* A range of idx_celers_tasks_staging (queue, state, scheduled_at), read in index order: the
 * step reads the rows it promotes and one more entry, however many are scheduled later. Ties
 * come in id order, the index's hidden last column. The ORDER BY names the index's leading
 * columns although they are fixed: with "ORDER BY scheduled_at" (or "scheduled_at, id")
 * MariaDB 10.11 sorts on a utf8mb4 connection (EXPLAIN says "Using filesort"). */
static const char SQL_STAGE[] =
    "UPDATE celers_tasks SET state = 'pending' WHERE queue = ? AND state = 'scheduled' AND "
    "scheduled_at <= NOW(6) ORDER BY queue, state, scheduled_at LIMIT ?";

int ce_stage_due(ce_conn *c, const char *queue, unsigned int limit, unsigned long long *promoted,
                 ce_error *err)
{
    ce_param p[2] = {ce_pstr(queue), ce_pint(limit)};
    *promoted = 0;
    /* Promoting a due task twice is the same as once: safe to repeat. */
    return ce_run(c, CE_REPEAT, SQL_STAGE, p, 2, NULL, promoted, err);
}

/* The staging slot of queue on c: its own, a free one, or the least recently staged. */
static int stage_slot(ce_conn *c, const char *queue)
{
    int oldest = 0;
    for (int i = 0; i < CE_SWEEP_SLOTS; i++) {
        if (strncmp(c->stages[i].queue, queue, sizeof c->stages[i].queue) == 0) return i;
        if (c->stages[i].at < c->stages[oldest].at) oldest = i;
    }
    return oldest;
}

void ce_stage_if_due(ce_conn *c, const char *queue)
{
    unsigned long long promoted = 0;
    ce_error ignored;
    double now = ce_monotonic();
    int i = stage_slot(c, queue);
    if (strncmp(c->stages[i].queue, queue, sizeof c->stages[i].queue) == 0 &&
        now - c->stages[i].at < CE_STAGE_INTERVAL)
        return;
    snprintf(c->stages[i].queue, sizeof c->stages[i].queue, "%s", queue);
    c->stages[i].at = now;
    if (ce_stage_due(c, queue, CE_STAGE_ROWS, &promoted, &ignored) == 0 &&
        promoted >= CE_STAGE_ROWS)
        c->stages[i].at = 0; /* more are due: the next claim stages again */
}
