/* The broker userdata: one per queue, sharing a connection with its with_queue siblings. */
#ifndef CELERS_LBROKER_H
#define CELERS_LBROKER_H

#include "compat.h"
#include "connection.h"

#define BROKER_MT "celers.broker"
/* Registry table of per-process counters (see lbroker_count). */
#define LBROKER_COUNTERS_KEY "celers.counters"

/* A connection shared by a broker and the brokers made from it with with_queue. */
typedef struct shared_conn {
    ce_conn *conn; /* NULL once closed */
    unsigned int refs;
    int tx_open; /* broker:transaction is running: only its tx object may use the link */
} shared_conn;

typedef struct lbroker {
    shared_conn *shared; /* counted reference */
    char *queue;         /* owned */
    char *worker_id;     /* owned: default worker id of claims */
    int tx;              /* LBROKER_TX_*: whether this object is a transaction's handle */
} lbroker;

#define LBROKER_TX_NONE 0
#define LBROKER_TX_OPEN 1 /* the handle of the open transaction */
#define LBROKER_TX_OVER 2 /* its transaction committed or rolled back */

/* Check argument 1 is an open broker; fn names the method in error messages. */
lbroker *lbroker_check(lua_State *L, const char *fn);
/* The broker's connection, taken once every argument has been read: reading arguments can
 * run Lua code (a JSON encoder, a finalizer) that closes the broker. Raises if it is closed.
 * Nothing that can run Lua code may come between this call and the core call using it. */
ce_conn *lbroker_conn(lua_State *L, lbroker *b, const char *fn);
/* Push a new broker userdata over shared (taking a reference) for queue. */
lbroker *lbroker_push(lua_State *L, shared_conn *shared, const char *queue, const char *worker_id);
/* Bump a per-process counter in the registry table of counters. */
void lbroker_count(lua_State *L, const char *key, lua_Number n);
/* Register the broker type (metatable, __gc, close, with_queue, queue, worker_id) and push
 * its methods table, to which the other binding files add theirs (lmethods.h). */
void lbroker_open(lua_State *L);
/* Roll back the transaction of a handle being collected without having ended it. */
void ltransaction_abandon(lbroker *b);

#endif
