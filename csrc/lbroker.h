/* The broker userdata: one per queue, sharing a connection with its with_queue siblings. */
#ifndef CELERS_LBROKER_H
#define CELERS_LBROKER_H

#include "compat.h"
#include "connection.h"

#define BROKER_MT "celers.broker"

/* A connection shared by a broker and the brokers made from it with with_queue. */
typedef struct shared_conn {
    ce_conn *conn; /* NULL once closed */
    unsigned int refs;
} shared_conn;

typedef struct lbroker {
    shared_conn *shared; /* counted reference */
    char *queue;         /* owned */
    char *worker_id;     /* owned: default worker id of claims */
} lbroker;

/* Check argument 1 is an open broker; fn names the method in error messages. */
lbroker *lbroker_check(lua_State *L, const char *fn);
/* Push a new broker userdata over shared (taking a reference) for queue. */
lbroker *lbroker_push(lua_State *L, shared_conn *shared, const char *queue, const char *worker_id);
/* Push a task table from row r of task rows (enum ce_task_col order). */
void lbroker_push_task(lua_State *L, const void *rows, unsigned int r);
/* Encode the value at idx as JSON with the registered encoder (raises naming fn and arg);
 * the JSON string is pushed and must stay on the stack while it is used. */
const char *lbroker_encode_json(lua_State *L, int idx, const char *fn, const char *arg,
                                size_t *len);
/* Push the JSON-decoded value of s, or s itself when it does not decode. */
void lbroker_push_decoded(lua_State *L, const char *s, size_t len);
/* Bump a per-process counter in the registry table of counters. */
void lbroker_count(lua_State *L, const char *key, lua_Number n);
/* Register the broker metatable and its methods; leaves the methods table on the stack. */
void lbroker_open(lua_State *L);
/* Methods of inspection/admin (ladmin.c) added to the methods table at the top of the stack. */
void ladmin_register(lua_State *L);

#endif
