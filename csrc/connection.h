/* One connection to the server: connect, session set-up (UTC, utf8mb4, READ COMMITTED),
 * a cache of prepared statements, transactions, and bounded reconnect. */
#ifndef CELERS_CONNECTION_H
#define CELERS_CONNECTION_H

#include <mysql.h>

/* Oracle's libmysqlclient 8 dropped my_bool and the MariaDB-style TLS switches; MariaDB
 * Connector/C keeps both. */
#if !defined(MARIADB_PACKAGE_VERSION) && defined(LIBMYSQL_VERSION_ID) &&                           \
    LIBMYSQL_VERSION_ID >= 80000
#include <stdbool.h>
typedef bool my_bool;
#define CE_MYSQL_SSL_MODE 1
#endif

#include "config.h"
#include "errors.h"

#define CE_STMT_CACHE 64
#define CE_SWEEP_SLOTS 16

typedef struct ce_cached_stmt {
    char *sql;          /* owned copy of the statement text, the cache key */
    size_t len;         /* strlen(sql) */
    MYSQL_STMT *stmt;   /* owned */
    unsigned long used; /* tick of last use, for eviction */
} ce_cached_stmt;

typedef struct ce_conn {
    MYSQL *mysql;  /* owned; NULL while disconnected */
    ce_config cfg; /* owned copy */
    ce_cached_stmt cache[CE_STMT_CACHE];
    unsigned long tick;
    int in_tx;                /* a transaction we began is open */
    int broken;               /* the link is known dead: reconnect before the next statement */
    int committing;           /* a COMMIT was sent and has not been answered */
    unsigned long reconnects; /* how many times the link was re-established */
    /* An application transaction (transaction.h) is open: every operation joins it, nothing
     * begins, commits or repeats on its own; a multi-statement operation runs under a
     * savepoint so that a failed one leaves nothing behind. */
    int user_tx;
    int user_tx_dead;     /* the server ended it (deadlock, lost link): only rollback remains */
    ce_error user_tx_err; /* why it is dead */
    int op_savepoint;     /* an operation's savepoint is set inside the user transaction */
    struct {
        char queue[256];
        double at;            /* monotonic seconds */
    } sweeps[CE_SWEEP_SLOTS]; /* last lease sweep per queue (see task.c) */
    struct {
        char queue[256];
        double at;                 /* monotonic seconds */
    } stages[CE_SWEEP_SLOTS];      /* last staging step per queue (see staging.c) */
    unsigned long long swept_dead; /* tasks the claims' sweeps dead-lettered, not yet counted */
} ce_conn;

/* The client library's process-wide state, counted: the first acquire initialises it, the
 * last release frees it. Several Lua states (nginx's thread-pool VMs) may each hold it. */
void ce_library_acquire(void);
void ce_library_release(void);

/* Connect with cfg (copied). Returns NULL and fills err on failure. */
ce_conn *ce_conn_open(const ce_config *cfg, ce_error *err);
/* Close statements and the link, free everything. NULL is fine. */
void ce_conn_close(ce_conn *c);
/* Drop the link and statements, connect again: bounded tries with doubling backoff. */
int ce_conn_reconnect(ce_conn *c, ce_error *err);

/* Prepared statement for sql, from the cache or prepared now. Owned by the cache. */
MYSQL_STMT *ce_conn_prepare(ce_conn *c, const char *sql, ce_error *err);
/* Run a statement text that returns no rows (BEGIN, COMMIT, DDL). */
int ce_conn_query(ce_conn *c, const char *sql, ce_error *err);

int ce_conn_begin(ce_conn *c, ce_error *err);
int ce_conn_commit(ce_conn *c, ce_error *err);
/* Best effort; never fails the caller. */
void ce_conn_rollback(ce_conn *c);

/* How an operation may be repeated after a lost connection:
 * CE_ONCE     - it may already have taken effect: reconnect, then report "lost";
 * CE_REPEAT   - reads, and transactions that had not reached COMMIT: reconnect and run again;
 * CE_SINGLE   - part of it commits on its own (a stored procedure), so not even a deadlock
 *               is retried: the caller gets the error. */
typedef enum { CE_ONCE = 0, CE_REPEAT = 1, CE_SINGLE = 2 } ce_repeat;

typedef int (*ce_op_fn)(ce_conn *c, void *ctx, ce_error *err);
/* Run fn with the reconnect policy above, rolling back an open transaction on error and
 * retrying deadlocks and lock-wait timeouts a bounded number of times. */
int ce_conn_run(ce_conn *c, ce_repeat repeat, ce_op_fn fn, void *ctx, ce_error *err);

/* Monotonic clock in seconds, for pacing. */
double ce_monotonic(void);
void ce_sleep(double seconds);

#endif
