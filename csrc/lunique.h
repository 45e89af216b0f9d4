/* Reading enqueue's `unique` option into a task spec (binding side). */
#ifndef CELERS_LUNIQUE_H
#define CELERS_LUNIQUE_H

#include "compat.h"
#include "enqueue.h"

/* When the options table at optidx has `unique`, set t->unique_* from it and the payload at
 * payload_idx; queue is the broker's. Values it pushes must stay on the stack until the
 * enqueue is done. Raises on misuse, naming fn. */
void lunique_read(lua_State *L, int optidx, int payload_idx, const char *fn, const char *queue,
                  ce_task_spec *t);

#endif
