#include "snooze.h"

#include "statement.h"

/* The claim counted an attempt (retry_count + 1): a snooze gives it back. A positive delay
 * parks the task in 'scheduled' for the staging step, as a retry does. */
// clang-format off
static const char SQL_SNOOZE[] =
    "UPDATE celers_tasks SET state = IF(? > 0, 'scheduled', 'pending'), "
    "scheduled_at = " CE_FROM_NOW("?") ", retry_count = GREATEST(retry_count - 1, 0), "
    "worker_id = NULL, lease_expires_at = NULL "
    "WHERE id = ? AND state = 'processing' AND claim_id <=> COALESCE(?, claim_id)";
/* The row keeps the claim it was snoozed under (as a retry does), so a snooze repeated after
 * "lost" can tell that it already landed. */
static const char SQL_SNOOZED[] = "SELECT COUNT(*) FROM celers_tasks "
                                  "WHERE id = ? AND claim_id = ? AND state IN ('pending', 'scheduled')";
// clang-format on

int ce_snooze(ce_conn *c, ce_task_ref ref, double seconds, int *ok, ce_error *err)
{
    ce_param p[4] = {ce_pdouble(seconds), ce_pdouble(seconds), ce_pstr(ref.id),
                     ce_pstr(ref.claim_id)};
    unsigned long long affected = 0;
    /* A fenced UPDATE that may have landed when the link drops: never repeated. */
    if (ce_run(c, CE_ONCE, SQL_SNOOZE, p, 4, NULL, &affected, err) < 0) return -1;
    *ok = affected > 0;
    if (!*ok && ref.claim_id) {
        ce_param q[2] = {ce_pstr(ref.id), ce_pstr(ref.claim_id)};
        long long n = 0;
        if (ce_run_count(c, CE_REPEAT, SQL_SNOOZED, q, 2, &n, err) < 0) return -1;
        *ok = n > 0;
    }
    return 0;
}
