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
    int landed;               /* this attempt sent something that may have taken effect */
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
    /* The limited task names (task_limits.c), as the claims last read them: nlimits names one
     * after another, each NUL-terminated, in one owned buffer; refreshed when limits_at (a
     * monotonic time, 0 = now) is CE_LIMITS_INTERVAL old. */
    char *limit_names;
    unsigned int nlimits;
    double limits_at;
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
/* Close a cached statement whose run failed part-way: running it again could wait for data
 * that never comes. The next ce_conn_prepare of its text prepares it afresh. */
void ce_conn_forget(ce_conn *c, MYSQL_STMT *stmt);
/* Did a failed call provably send nothing? 2006: the library failed to send it; 2014: it
 * refused to send (commands out of sync). */
int ce_conn_unsent(unsigned int errnum);
/* Note that a statement went out (send_failed: see ce_conn_unsent).
 * Outside a transaction a statement that went out may have taken effect. */
void ce_conn_sent(ce_conn *c, int send_failed);
/* Run a statement text that returns no rows (BEGIN, COMMIT, DDL). */
int ce_conn_query(ce_conn *c, const char *sql, ce_error *err);

int ce_conn_begin(ce_conn *c, ce_error *err);
int ce_conn_commit(ce_conn *c, ce_error *err);
/* Best effort; never fails the caller. */
void ce_conn_rollback(ce_conn *c);

/* How an operation may be repeated after a lost connection. Whatever the policy, an attempt
 * that provably changed nothing (the link was found dead before sending, a statement failed
 * to go out, or only an uncommitted transaction was lost) is run again on a new link.
 * CE_ONCE     - it may already have taken effect: reconnect, then report "lost";
 * CE_REPEAT   - reads, and transactions that had not reached COMMIT: reconnect and run again;
 * CE_SINGLE   - part of it commits on its own (a stored procedure), so not even a deadlock
 *               is retried: the caller gets the error. */
typedef enum { CE_ONCE = 0, CE_REPEAT = 1, CE_SINGLE = 2 } ce_repeat;

typedef int (*ce_op_fn)(ce_conn *c, void *ctx, ce_error *err);
/* Run fn with the reconnect policy above, rolling back an open transaction on error and
 * retrying deadlocks and lock-wait timeouts a bounded number of times. */
int ce_conn_run(ce_conn *c, ce_repeat repeat, ce_op_fn fn, void *ctx, ce_error *err);

/* ---- fault seam (tests only) --------------------------------------------------------
 * Compiled in always, inert until ce_fault_arm is called (from Lua only through
 * core._inject_fault, which the specs call; nothing reads the environment). Process-wide.
 * A fault fires at one point of the nth statement whose SQL text contains op (any statement
 * when op is empty), then at the next count - 1 matching statements:
 *   CE_FAULT_BEFORE_SEND  the link is cut (socket shut down) just before the statement is sent
 *   CE_FAULT_AFTER_SEND   the statement runs and is answered, then the link is cut and the
 *                         caller sees 2013 "lost connection": it landed, the reply did not
 *   CE_FAULT_ERROR        the statement is not sent; the server error errnum is returned
 *                         instead (2006/2013 also cut the link)
 * A COMMIT passes the seam with the text "COMMIT". */
typedef enum {
    CE_FAULT_NONE = 0,
    CE_FAULT_BEFORE_SEND,
    CE_FAULT_AFTER_SEND,
    CE_FAULT_ERROR
} ce_fault_at;

typedef struct ce_fault {
    ce_fault_at at;
    char op[256];
    unsigned long nth, count; /* 1-based; 0 means 1 */
    unsigned int errnum;
} ce_fault;

void ce_fault_arm(const ce_fault *f);
/* Disarm; returns how many firings were still pending (0: the fault fired every time). */
unsigned long ce_fault_disarm(void);
/* The seam: does the armed fault fire at this point for sql? Applies it and fills err
 * (returns -1) for ERROR and AFTER_SEND; BEFORE_SEND cuts the link and returns 0 so the real
 * send fails as it would. */
int ce_fault_point(ce_conn *c, ce_fault_at at, const char *sql, ce_error *err);

/* Monotonic clock in seconds, for pacing. */
double ce_monotonic(void);
void ce_sleep(double seconds);

#endif
