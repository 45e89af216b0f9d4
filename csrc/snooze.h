/* Snoozing a claimed task: back to waiting for `seconds` without using up an attempt. */
#ifndef CELERS_SNOOZE_H
#define CELERS_SNOOZE_H

#include "connection.h"
#include "task.h"

/* Fenced by the claim like retry: *ok is 0 (and nothing changes) when the task is no longer
 * processing under ref's claim. The attempt the claim counted is given back. */
int ce_snooze(ce_conn *c, ce_task_ref ref, double seconds, int *ok, ce_error *err);

#endif
