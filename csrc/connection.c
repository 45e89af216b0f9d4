#include "connection.h"

#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define DEADLOCK_TRIES 5
/* Attempts run again because they provably changed nothing (see ce_conn_run). */
#define UNLANDED_TRIES 2
#define CR_SERVER_GONE 2006 /* the library failed to send: nothing went out */
#define CR_OUT_OF_SYNC 2014 /* the library refused to send */
#define ER_TOO_MANY_STMTS 1461

double ce_monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void ce_sleep(double seconds)
{
    struct timespec ts;
    if (seconds <= 0) return;
    ts.tv_sec = (time_t)seconds;
    ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
    nanosleep(&ts, NULL);
}

static pthread_mutex_t library_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned long library_users;

void ce_library_acquire(void)
{
    pthread_mutex_lock(&library_lock);
    if (library_users++ == 0) mysql_library_init(0, NULL, NULL);
    pthread_mutex_unlock(&library_lock);
}

void ce_library_release(void)
{
    pthread_mutex_lock(&library_lock);
    if (library_users > 0 && --library_users == 0) mysql_library_end();
    pthread_mutex_unlock(&library_lock);
}

/* libmysqlclient wants mysql_thread_init in every thread that uses it and mysql_thread_end
 * before that thread exits (libmariadb needs neither and ignores both): done on a thread's
 * first connect, undone by a thread-specific key's destructor. */
static pthread_key_t thread_key;
static pthread_once_t thread_key_once = PTHREAD_ONCE_INIT;
static _Thread_local int thread_ready;

static void thread_end(void *unused)
{
    (void)unused;
    mysql_thread_end();
}

static void make_thread_key(void)
{
    pthread_key_create(&thread_key, thread_end);
}

static void thread_setup(void)
{
    if (thread_ready) return;
    pthread_once(&thread_key_once, make_thread_key);
    mysql_thread_init();
    pthread_setspecific(thread_key, &thread_ready);
    thread_ready = 1;
}

static void drop_statements(ce_conn *c)
{
    for (int i = 0; i < CE_STMT_CACHE; i++) {
        if (c->cache[i].stmt) mysql_stmt_close(c->cache[i].stmt);
        free(c->cache[i].sql);
        c->cache[i].stmt = NULL;
        c->cache[i].sql = NULL;
    }
}

static void drop_link(ce_conn *c)
{
    drop_statements(c);
    if (c->mysql) mysql_close(c->mysql);
    c->mysql = NULL;
    c->in_tx = 0;
}

static int connect_once(ce_conn *c, ce_error *err)
{
    const ce_config *cfg = &c->cfg;
    MYSQL *m;
    thread_setup();
    m = mysql_init(NULL);
    if (!m) return ce_error_set(err, CE_ENOMEM, "out of memory");
    /* Automatic reconnect stays off (both libraries' default): we reconnect ourselves and
     * re-prepare, knowing which statements may be repeated. */
    mysql_options(m, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    if (cfg->connect_timeout) mysql_options(m, MYSQL_OPT_CONNECT_TIMEOUT, &cfg->connect_timeout);
    if (cfg->read_timeout) mysql_options(m, MYSQL_OPT_READ_TIMEOUT, &cfg->read_timeout);
    if (cfg->write_timeout) mysql_options(m, MYSQL_OPT_WRITE_TIMEOUT, &cfg->write_timeout);
    /* The database clock decides, in UTC; READ COMMITTED keeps SKIP LOCKED claims free of
     * gap locks. Both run again on every reconnect. */
    mysql_options(m, MYSQL_INIT_COMMAND, "SET time_zone = '+00:00'");
    mysql_options(m, MYSQL_INIT_COMMAND, "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED");
    if (cfg->ssl || cfg->ssl_ca || cfg->ssl_cert) {
        if (cfg->ssl_key) mysql_options(m, MYSQL_OPT_SSL_KEY, cfg->ssl_key);
        if (cfg->ssl_cert) mysql_options(m, MYSQL_OPT_SSL_CERT, cfg->ssl_cert);
        if (cfg->ssl_ca) mysql_options(m, MYSQL_OPT_SSL_CA, cfg->ssl_ca);
        if (cfg->ssl_capath) mysql_options(m, MYSQL_OPT_SSL_CAPATH, cfg->ssl_capath);
        if (cfg->ssl_cipher) mysql_options(m, MYSQL_OPT_SSL_CIPHER, cfg->ssl_cipher);
#ifdef CE_MYSQL_SSL_MODE
        {
            unsigned int mode = cfg->ssl_verify ? SSL_MODE_VERIFY_IDENTITY : SSL_MODE_REQUIRED;
            mysql_options(m, MYSQL_OPT_SSL_MODE, &mode);
        }
#else
        {
            my_bool enforce = 1, verify = cfg->ssl_verify ? 1 : 0;
            mysql_options(m, MYSQL_OPT_SSL_ENFORCE, &enforce);
            mysql_options(m, MYSQL_OPT_SSL_VERIFY_SERVER_CERT, &verify);
        }
#endif
    }
    if (!mysql_real_connect(m, cfg->socket ? NULL : (cfg->host ? cfg->host : "localhost"),
                            cfg->user, cfg->password, cfg->database, cfg->port, cfg->socket, 0)) {
        ce_error_from_mysql(err, m);
        if (err->code == CE_ELOST || err->code == CE_ESQL || err->code == CE_ETIMEOUT)
            err->code = CE_ECONNECT;
        mysql_close(m);
        return -1;
    }
    c->mysql = m;
    c->broken = 0;
    return 0;
}

ce_conn *ce_conn_open(const ce_config *cfg, ce_error *err)
{
    ce_conn *c = calloc(1, sizeof *c);
    if (!c) {
        ce_error_set(err, CE_ENOMEM, "out of memory");
        return NULL;
    }
    if (ce_config_copy(&c->cfg, cfg, err) < 0) {
        free(c);
        return NULL;
    }
    if (connect_once(c, err) < 0) {
        ce_config_free(&c->cfg);
        free(c);
        return NULL;
    }
    return c;
}

void ce_conn_close(ce_conn *c)
{
    if (!c) return;
    drop_link(c);
    ce_config_free(&c->cfg);
    free(c->limit_names);
    free(c);
}

int ce_conn_reconnect(ce_conn *c, ce_error *err)
{
    double pause = c->cfg.reconnect_backoff;
    unsigned int tries = c->cfg.reconnect_tries ? c->cfg.reconnect_tries : 1;
    drop_link(c);
    c->broken = 1;
    for (unsigned int i = 0; i < tries; i++) {
        if (i > 0) {
            ce_sleep(pause);
            pause = pause * 2 > 5 ? 5 : pause * 2;
        }
        if (connect_once(c, err) == 0) {
            c->reconnects++;
            return 0;
        }
    }
    return -1;
}

MYSQL_STMT *ce_conn_prepare(ce_conn *c, const char *sql, ce_error *err)
{
    int slot = -1;
    unsigned long oldest = (unsigned long)-1;
    my_bool update_max = 1;
    MYSQL_STMT *stmt;
    char *copy;

    size_t len = strlen(sql);
    c->tick++;
    for (int i = 0; i < CE_STMT_CACHE; i++) {
        if (c->cache[i].sql && c->cache[i].len == len && memcmp(c->cache[i].sql, sql, len) == 0) {
            c->cache[i].used = c->tick;
            return c->cache[i].stmt;
        }
        if (!c->cache[i].sql) {
            if (oldest) { /* prefer a free slot */
                slot = i;
                oldest = 0;
            }
        } else if (c->cache[i].used < oldest) {
            slot = i;
            oldest = c->cache[i].used;
        }
    }
    if (!c->mysql) {
        ce_error_set(err, CE_ELOST, "not connected");
        return NULL;
    }
    stmt = mysql_stmt_init(c->mysql);
    if (!stmt) {
        ce_error_from_mysql(err, c->mysql);
        return NULL;
    }
    if (mysql_stmt_prepare(stmt, sql, (unsigned long)len)) {
        ce_error_from_stmt(err, stmt);
        mysql_stmt_close(stmt);
        return NULL;
    }
    /* Lets result buffers be sized exactly after mysql_stmt_store_result. */
    mysql_stmt_attr_set(stmt, STMT_ATTR_UPDATE_MAX_LENGTH, &update_max);
    copy = strdup(sql);
    if (!copy) {
        mysql_stmt_close(stmt);
        ce_error_set(err, CE_ENOMEM, "out of memory");
        return NULL;
    }
    if (c->cache[slot].stmt) mysql_stmt_close(c->cache[slot].stmt);
    free(c->cache[slot].sql);
    c->cache[slot].sql = copy;
    c->cache[slot].len = len;
    c->cache[slot].stmt = stmt;
    c->cache[slot].used = c->tick;
    return stmt;
}

void ce_conn_forget(ce_conn *c, MYSQL_STMT *stmt)
{
    for (int i = 0; i < CE_STMT_CACHE; i++) {
        if (c->cache[i].stmt != stmt) continue;
        mysql_stmt_close(stmt);
        free(c->cache[i].sql);
        c->cache[i].stmt = NULL;
        c->cache[i].sql = NULL;
        return;
    }
}

int ce_conn_unsent(unsigned int errnum)
{
    return errnum == CR_SERVER_GONE || errnum == CR_OUT_OF_SYNC;
}

void ce_conn_sent(ce_conn *c, int send_failed)
{
    if (!send_failed && !c->in_tx) c->landed = 1;
}

int ce_conn_query(ce_conn *c, const char *sql, ce_error *err)
{
    MYSQL_RES *res;
    if (!c->mysql) return ce_error_set(err, CE_ELOST, "not connected");
    if (ce_fault_point(c, CE_FAULT_BEFORE_SEND, sql, err) < 0) return -1;
    if (mysql_real_query(c->mysql, sql, (unsigned long)strlen(sql))) {
        ce_conn_sent(c, ce_conn_unsent(mysql_errno(c->mysql)));
        return ce_error_from_mysql(err, c->mysql);
    }
    ce_conn_sent(c, 0);
    res = mysql_store_result(c->mysql);
    if (res)
        mysql_free_result(res);
    else if (mysql_field_count(c->mysql))
        return ce_error_from_mysql(err, c->mysql);
    /* DDL and CALL text may leave more results: never leave the link out of sync. */
    while (mysql_more_results(c->mysql)) {
        if (mysql_next_result(c->mysql) != 0) return ce_error_from_mysql(err, c->mysql);
        res = mysql_store_result(c->mysql);
        if (res) mysql_free_result(res);
    }
    return ce_fault_point(c, CE_FAULT_AFTER_SEND, sql, err);
}

int ce_conn_begin(ce_conn *c, ce_error *err)
{
    int landed, rc;
    if (c->user_tx) {
        if (ce_conn_query(c, "SAVEPOINT celers_op", err) < 0) return -1;
        c->op_savepoint = 1;
        return 0;
    }
    landed = c->landed; /* START TRANSACTION changes nothing by itself */
    rc = ce_conn_query(c, "START TRANSACTION", err);
    c->landed = landed;
    if (rc < 0) return -1;
    c->in_tx = 1;
    return 0;
}

int ce_conn_commit(ce_conn *c, ce_error *err)
{
    if (c->user_tx) { /* the operation's work stays in the application's transaction */
        c->op_savepoint = 0;
        return 0;
    }
    c->in_tx = 0;
    if (!c->mysql) return ce_error_set(err, CE_ELOST, "not connected");
    if (ce_fault_point(c, CE_FAULT_BEFORE_SEND, "COMMIT", err) < 0) {
        c->in_tx = 1;
        return -1;
    }
    c->committing = 1;
    if (mysql_commit(c->mysql)) {
        int unsent = ce_conn_unsent(mysql_errno(c->mysql));
        ce_conn_sent(c, unsent);
        if (unsent) c->committing = 0;
        c->in_tx = 1; /* still open unless the link is gone: the caller's rollback ends it */
        return ce_error_from_mysql(err, c->mysql);
    }
    ce_conn_sent(c, 0);
    /* An answer lost after COMMIT leaves committing set: the caller must not repeat it. */
    if (ce_fault_point(c, CE_FAULT_AFTER_SEND, "COMMIT", err) < 0) return -1;
    c->committing = 0;
    return 0;
}

void ce_conn_rollback(ce_conn *c)
{
    if (c->user_tx) { /* undo the failed operation only; the application decides the rest */
        ce_error ignored;
        if (c->op_savepoint && c->mysql)
            ce_conn_query(c, "ROLLBACK TO SAVEPOINT celers_op", &ignored);
        c->op_savepoint = 0;
        return;
    }
    if (c->in_tx && c->mysql) mysql_rollback(c->mysql);
    c->in_tx = 0;
}

/* A link the server closed while it sat idle (KILL, wait_timeout, a restart) is readable: EOF
 * or an error packet. A live idle link has nothing to say; when it does (a TLS record), a ping
 * decides. One poll() per operation, no round trip. */
static int link_dead(ce_conn *c)
{
    struct pollfd p;
    p.fd = (int)mysql_get_socket(c->mysql);
    p.events = POLLIN;
    p.revents = 0;
    if (p.fd < 0) return 1;
    if (poll(&p, 1, 0) <= 0) return 0;
    return mysql_ping(c->mysql) != 0;
}

/* The link is unusable: lost, timed out (a client error), or out of sync. A statement
 * timeout (1969/3024, CE_ETIMEOUT) is the server's answer on a live link. */
static int link_lost(const ce_error *err)
{
    return err->code == CE_ELOST;
}

/* Inside an application transaction an operation runs once: its statements cannot be
 * repeated without the application's, and a deadlock or a lost link ends the whole
 * transaction on the server, which is remembered so that nothing runs outside it. */
static int run_in_user_tx(ce_conn *c, ce_op_fn fn, void *ctx, ce_error *err)
{
    if (c->user_tx_dead || !c->mysql) {
        if (!c->user_tx_dead) {
            ce_error_set(&c->user_tx_err, CE_ELOST, "not connected");
            c->user_tx_dead = 1;
        }
        *err = c->user_tx_err;
        ce_error_prefix(err, "the transaction was already rolled back: ", (const char *)NULL);
        return -1;
    }
    ce_error_clear(err);
    if (fn(c, ctx, err) == 0) return 0;
    if (link_lost(err)) {
        drop_link(c);
        c->broken = 1;
        c->user_tx_dead = 1;
    } else if (err->code == CE_EDEADLOCK) {
        c->user_tx_dead = 1; /* InnoDB rolled the whole transaction back */
    } else {
        ce_conn_rollback(c);
    }
    c->op_savepoint = 0;
    if (c->user_tx_dead) c->user_tx_err = *err;
    return -1;
}

int ce_conn_run(ce_conn *c, ce_repeat repeat, ce_op_fn fn, void *ctx, ce_error *err)
{
    int lost_retried = 0, unlanded = 0, deadlocks = 0, flushed = 0;
    if (c->user_tx) return run_in_user_tx(c, fn, ctx, err);
    for (;;) {
        int was_committing, landed;
        if (c->broken || !c->mysql || link_dead(c)) {
            if (ce_conn_reconnect(c, err) < 0) return -1; /* nothing was sent */
        }
        ce_error_clear(err);
        c->landed = 0;
        c->committing = 0;
        if (fn(c, ctx, err) == 0) return 0;
        was_committing = c->committing;
        landed = c->landed;
        c->committing = 0;
        ce_conn_rollback(c);
        if (link_lost(err)) {
            ce_error saved = *err;
            /* The link is unusable either way; bring it back for the next call. */
            if (ce_conn_reconnect(c, err) < 0) {
                if (landed) *err = saved; /* it may have taken effect: still "lost" */
                return -1;
            }
            /* Nothing of this attempt can have taken effect: run it again. */
            if (!landed && ++unlanded <= UNLANDED_TRIES) continue;
            /* A COMMIT whose answer was lost may have taken effect: never repeat it. */
            if (repeat == CE_REPEAT && !lost_retried && !was_committing) {
                lost_retried = 1;
                continue;
            }
            *err = saved;
            return -1;
        }
        /* The server's prepared-statement limit: give back ours and try once more. */
        if (err->errnum == ER_TOO_MANY_STMTS && !landed && !flushed) {
            flushed = 1;
            drop_statements(c);
            continue;
        }
        /* InnoDB rolled the statement or transaction back: running it again is safe. */
        if ((err->code == CE_EDEADLOCK || err->code == CE_ELOCKWAIT) && repeat != CE_SINGLE &&
            ++deadlocks < DEADLOCK_TRIES) {
            ce_sleep(0.002 * deadlocks);
            continue;
        }
        return -1;
    }
}

/* ---- fault seam (tests only; see connection.h) -------------------------------------- */

static ce_fault armed;
static unsigned long seen, pending;

void ce_fault_arm(const ce_fault *f)
{
    armed = *f;
    armed.op[sizeof armed.op - 1] = '\0';
    if (!armed.nth) armed.nth = 1;
    seen = 0;
    pending = armed.at ? (f->count ? f->count : 1) : 0;
}

unsigned long ce_fault_disarm(void)
{
    unsigned long left = pending;
    memset(&armed, 0, sizeof armed);
    seen = pending = 0;
    return left;
}

static void cut_link(ce_conn *c)
{
    int fd = c->mysql ? (int)mysql_get_socket(c->mysql) : -1;
    if (fd >= 0) shutdown(fd, SHUT_RDWR);
}

static const char *sqlstate_of(unsigned int errnum)
{
    switch (errnum) {
    case 1213:
        return "40001";
    case 1461:
        return "42000";
    case 1969:
        return "70100";
    default:
        return "HY000";
    }
}

int ce_fault_point(ce_conn *c, ce_fault_at at, const char *sql, ce_error *err)
{
    char msg[128];
    if (!pending) return 0;
    if ((at == CE_FAULT_AFTER_SEND) != (armed.at == CE_FAULT_AFTER_SEND)) return 0;
    if (armed.op[0] && !strstr(sql, armed.op)) return 0;
    if (++seen < armed.nth) return 0;
    pending--;
    switch (armed.at) {
    case CE_FAULT_BEFORE_SEND:
        cut_link(c);
        return 0;
    case CE_FAULT_AFTER_SEND:
        cut_link(c);
        return ce_error_from_parts(err, 2013, "HY000",
                                   "Lost connection to server during query (injected fault)");
    default:
        if (armed.errnum == 2006 || armed.errnum == 2013) cut_link(c);
        snprintf(msg, sizeof msg, "injected fault: server error %u", armed.errnum);
        return ce_error_from_parts(err, armed.errnum, sqlstate_of(armed.errnum), msg);
    }
}
