/* Reads behind the web dashboard (dashboard.h). */
#include "dashboard.h"

#define MINUTE_OF(col) "TIMESTAMPDIFF(SECOND, TIMESTAMP'1970-01-01 00:00:00', " col ") DIV 60 * 60"
#define SINCE(col) col " >= NOW(6) - INTERVAL ? MINUTE"

// clang-format off
static const char SQL_QUEUES[] =
    "SELECT q, MAX(p) FROM ("
    " SELECT DISTINCT queue AS q, 0 AS p FROM celers_tasks"
    " UNION ALL SELECT DISTINCT queue, 0 FROM celers_dead_letter_queue"
    " UNION ALL SELECT queue, 1 FROM celers_queue_pauses) x GROUP BY q ORDER BY q";

static const char SQL_THROUGHPUT[] =
    "SELECT 'enqueued', " MINUTE_OF("created_at") " AS m, COUNT(*) FROM celers_tasks"
    " WHERE queue = ? AND " SINCE("created_at") " GROUP BY m"
    " UNION ALL SELECT 'completed', " MINUTE_OF("completed_at") " AS m, COUNT(*) FROM celers_tasks"
    " WHERE queue = ? AND state = 'completed' AND " SINCE("completed_at") " GROUP BY m"
    " UNION ALL SELECT 'completed', " MINUTE_OF("completed_at") " AS m, COUNT(*) FROM celers_task_history"
    " WHERE queue = ? AND state = 'completed' AND " SINCE("completed_at") " GROUP BY m"
    " UNION ALL SELECT 'failed', " MINUTE_OF("failed_at") " AS m, COUNT(*) FROM celers_dead_letter_queue"
    " WHERE queue = ? AND " SINCE("failed_at") " GROUP BY m"
    " UNION ALL SELECT 'failed', " MINUTE_OF("completed_at") " AS m, COUNT(*) FROM celers_tasks"
    " WHERE queue = ? AND state = 'failed' AND " SINCE("completed_at") " GROUP BY m";

static const char SQL_RECURRING[] =
    "SELECT r.schedule_name, r.run_at, n.runs, r.task_id,"
    " (SELECT MAX(p.run_at) FROM celers_recurring_runs p"
    " WHERE p.schedule_name = r.schedule_name AND p.run_at < r.run_at)"
    " FROM celers_recurring_runs r"
    " JOIN (SELECT schedule_name, MAX(run_at) AS last, COUNT(*) AS runs FROM celers_recurring_runs"
    " WHERE queue = ? GROUP BY schedule_name) n"
    " ON n.schedule_name = r.schedule_name AND n.last = r.run_at ORDER BY r.schedule_name";

static const char SQL_HISTORY[] =
    "SELECT state, worker_id, error_message, retry_count, " CE_EPOCH("task_created_at") ", "
    CE_EPOCH("started_at") ", " CE_EPOCH("completed_at") ", " CE_EPOCH("created_at")
    " FROM celers_task_history WHERE task_id = ? AND queue = ? ORDER BY id LIMIT 100";

static const char SQL_RETRY_NOW[] =
    "UPDATE celers_tasks SET state = 'pending', scheduled_at = NOW(6), completed_at = NULL"
    " WHERE id = ? AND queue = ?"
    " AND (state IN ('scheduled', 'failed', 'cancelled') OR (state = 'pending' AND scheduled_at > NOW(6)))";
// clang-format on

int ce_dash_queues(ce_conn *c, ce_rows *out, ce_error *err)
{
    return ce_run(c, CE_REPEAT, SQL_QUEUES, NULL, 0, out, NULL, err);
}

int ce_dash_throughput(ce_conn *c, const char *queue, long long minutes, ce_rows *out,
                       ce_error *err)
{
    ce_param p[10];
    for (int i = 0; i < 5; i++) {
        p[2 * i] = ce_pstr(queue);
        p[2 * i + 1] = ce_pint(minutes);
    }
    return ce_run(c, CE_REPEAT, SQL_THROUGHPUT, p, 10, out, NULL, err);
}

int ce_dash_recurring(ce_conn *c, const char *queue, ce_rows *out, ce_error *err)
{
    ce_param p[1];
    p[0] = ce_pstr(queue);
    return ce_run(c, CE_REPEAT, SQL_RECURRING, p, 1, out, NULL, err);
}

int ce_dash_history(ce_conn *c, const char *queue, const char *task_id, ce_rows *out, ce_error *err)
{
    ce_param p[2];
    p[0] = ce_pstr(task_id);
    p[1] = ce_pstr(queue);
    return ce_run(c, CE_REPEAT, SQL_HISTORY, p, 2, out, NULL, err);
}

int ce_retry_now(ce_conn *c, const char *queue, const char *id, int *found, ce_error *err)
{
    ce_param p[2];
    unsigned long long n = 0;
    p[0] = ce_pstr(id);
    p[1] = ce_pstr(queue);
    if (ce_run(c, CE_ONCE, SQL_RETRY_NOW, p, 2, NULL, &n, err) < 0) return -1;
    *found = n > 0;
    return 0;
}
