/* The raw-SQL floors for `make bench`, straight through libmysqlclient and nothing else:
 * - OP: the module's own statements on the module's schema, prepared;
 * - min_OP: a minimal hand-written queue (table bench_min: id, queue, state, payload,
 *   claim_id; one secondary index), text protocol, the same round trips.
 *
 *   floor DSN-PARTS OP N [ARG]
 *     socket user password database queue OP N [batch|workers]
 *   OP: [min_]enqueue | [min_]enqueue_batch | [min_]claim_ack | [min_]claim_ack_batch
 * Prints "<tasks> <seconds>" on success. */
#include <mysql.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *sock, *user, *pass, *db, *queue;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(MYSQL *m, MYSQL_STMT *s, const char *what)
{
    fprintf(stderr, "floor: %s: %s\n", what, s ? mysql_stmt_error(s) : mysql_error(m));
    exit(1);
}

static MYSQL *connect_db(void)
{
    MYSQL *m = mysql_init(NULL);
    mysql_options(m, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    mysql_options(m, MYSQL_INIT_COMMAND, "SET time_zone = '+00:00'");
    mysql_options(m, MYSQL_INIT_COMMAND, "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED");
    if (!mysql_real_connect(m, NULL, user, pass, db, 0, sock, 0)) die(m, NULL, "connect");
    return m;
}

static MYSQL_STMT *prepare(MYSQL *m, const char *sql)
{
    MYSQL_STMT *s = mysql_stmt_init(m);
    if (!s || mysql_stmt_prepare(s, sql, (unsigned long)strlen(sql))) die(m, s, sql);
    return s;
}

static void bind_str(MYSQL_BIND *b, const char *s, unsigned long *len)
{
    memset(b, 0, sizeof *b);
    *len = (unsigned long)strlen(s);
    b->buffer_type = MYSQL_TYPE_STRING;
    b->buffer = (void *)s;
    b->buffer_length = *len;
    b->length = len;
}

/* Time-ordered ids, as the broker makes them, so both append to the primary key. */
static void make_id(char *out, unsigned long n)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(out, 37, "%08lx-%04lx-7%03lx-8%03x-%012lx", (unsigned long)ts.tv_sec,
             (unsigned long)(ts.tv_nsec >> 16) & 0xffff, n >> 40 & 0xfff, getpid() & 0xfff,
             n & 0xffffffffffffUL);
}

#define INSERT_HEAD                                                                                \
    "INSERT INTO celers_tasks (id, task_name, payload, queue, scheduled_at, created_at) VALUES "
#define INSERT_ROW "(?, ?, ?, ?, NOW(6), NOW(6))"

static void enqueue(int n, int batch)
{
    MYSQL *m = connect_db();
    size_t len = strlen(INSERT_HEAD) + (size_t)batch * (strlen(INSERT_ROW) + 1) + 1;
    char *sql = malloc(len), (*ids)[37] = malloc(sizeof *ids * (size_t)batch);
    MYSQL_BIND *b = calloc((size_t)batch * 4, sizeof *b);
    unsigned long *lens = calloc((size_t)batch * 4, sizeof *lens);
    MYSQL_STMT *s;
    unsigned long seq = 0;
    strcpy(sql, INSERT_HEAD);
    for (int i = 0; i < batch; i++)
        strcat(strcat(sql, i ? "," : ""), INSERT_ROW);
    s = prepare(m, sql);
    for (int done = 0; done < n; done += batch) {
        for (int i = 0; i < batch; i++) {
            make_id(ids[i], seq++);
            bind_str(&b[i * 4], ids[i], &lens[i * 4]);
            bind_str(&b[i * 4 + 1], "bench", &lens[i * 4 + 1]);
            bind_str(&b[i * 4 + 2], "{\"n\":1}", &lens[i * 4 + 2]);
            bind_str(&b[i * 4 + 3], queue, &lens[i * 4 + 3]);
        }
        if (mysql_stmt_bind_param(s, b) || mysql_stmt_execute(s)) die(m, s, "insert");
    }
    mysql_stmt_close(s);
    mysql_close(m);
    free(sql);
    free(ids);
    free(b);
    free(lens);
}

/* One worker: claim up to `batch` (SELECT ... FOR UPDATE SKIP LOCKED, UPDATE, COMMIT), then
 * ack them (one UPDATE), until the queue is empty. Returns tasks done. */
static long worker(int batch)
{
    MYSQL *m = connect_db();
    char sel[1024], upd[1024 + 40 * 100], ack[1024 + 40 * 100], claim[37], (*ids)[37];
    MYSQL_STMT *ss, *us, *as;
    MYSQL_BIND pb[2], rb[3], *ub, *ab;
    unsigned long plen[2], *ulen, *alen, rlen[3];
    char rid[40], rname[256], *rpayload = malloc(1 << 16);
    long done = 0;
    unsigned long seq = 0;

    snprintf(sel, sizeof sel,
             "SELECT id, task_name, payload FROM celers_tasks FORCE INDEX "
             "(idx_celers_tasks_claim) WHERE queue = ? AND state = 'pending' AND scheduled_at "
             "<= NOW(6) AND NOT EXISTS (SELECT 1 FROM celers_queue_pauses WHERE queue = ?) "
             "AND NOT EXISTS (SELECT 1 FROM celers_task_limits AS l "
             "WHERE l.task_name = celers_tasks.task_name) "
             "ORDER BY claim_rank, scheduled_at, id LIMIT %d FOR UPDATE SKIP LOCKED",
             batch);
    strcpy(upd, "UPDATE celers_tasks SET state = 'processing', started_at = NOW(6), worker_id = "
                "'floor', claim_id = ?, retry_count = retry_count + 1, lease_expires_at = "
                "NOW(6) + INTERVAL 300 SECOND WHERE id IN (?");
    strcpy(ack, "UPDATE celers_tasks SET state = 'completed', completed_at = NOW(6) WHERE "
                "state = 'processing' AND claim_id = ? AND id IN (?");
    for (int i = 1; i < batch; i++) {
        strcat(upd, ",?");
        strcat(ack, ",?");
    }
    strcat(upd, ")");
    strcat(ack, ")");
    ss = prepare(m, sel);
    ids = malloc(sizeof *ids * (size_t)batch);
    ub = calloc((size_t)batch + 1, sizeof *ub);
    ab = calloc((size_t)batch + 1, sizeof *ab);
    ulen = calloc((size_t)batch + 1, sizeof *ulen);
    alen = calloc((size_t)batch + 1, sizeof *alen);
    us = prepare(m, upd);
    as = prepare(m, ack);
    bind_str(&pb[0], queue, &plen[0]);
    bind_str(&pb[1], queue, &plen[1]);
    memset(rb, 0, sizeof rb);
    rb[0].buffer_type = rb[1].buffer_type = rb[2].buffer_type = MYSQL_TYPE_STRING;
    rb[0].buffer = rid;
    rb[0].buffer_length = sizeof rid;
    rb[1].buffer = rname;
    rb[1].buffer_length = sizeof rname;
    rb[2].buffer = rpayload;
    rb[2].buffer_length = 1 << 16;
    for (int i = 0; i < 3; i++)
        rb[i].length = &rlen[i];
    for (;;) {
        int got = 0;
        if (mysql_query(m, "START TRANSACTION")) die(m, NULL, "begin");
        if (mysql_stmt_bind_param(ss, pb) || mysql_stmt_execute(ss) ||
            mysql_stmt_bind_result(ss, rb) || mysql_stmt_store_result(ss))
            die(m, ss, "select");
        while (mysql_stmt_fetch(ss) == 0 && got < batch) {
            memcpy(ids[got], rid, 36);
            ids[got][36] = '\0';
            got++;
        }
        mysql_stmt_free_result(ss);
        if (got == 0) {
            mysql_rollback(m);
            break;
        }
        for (int i = got; i < batch; i++)
            memcpy(ids[i], ids[0], 37); /* pad the IN list */
        make_id(claim, seq++);
        bind_str(&ub[0], claim, &ulen[0]);
        bind_str(&ab[0], claim, &alen[0]);
        for (int i = 0; i < batch; i++) {
            bind_str(&ub[i + 1], ids[i], &ulen[i + 1]);
            bind_str(&ab[i + 1], ids[i], &alen[i + 1]);
        }
        if (mysql_stmt_bind_param(us, ub) || mysql_stmt_execute(us)) die(m, us, "claim");
        if (mysql_commit(m)) die(m, NULL, "commit");
        if (mysql_stmt_bind_param(as, ab) || mysql_stmt_execute(as)) die(m, as, "ack");
        done += got;
    }
    mysql_stmt_close(ss);
    mysql_stmt_close(us);
    mysql_stmt_close(as);
    mysql_close(m);
    free(ids);
    free(ub);
    free(ab);
    free(ulen);
    free(alen);
    free(rpayload);
    return done;
}

/* ---- the minimal hand-written queue (text protocol) --------------------------------- */

static void query(MYSQL *m, const char *sql)
{
    MYSQL_RES *r;
    if (mysql_query(m, sql)) die(m, NULL, sql);
    r = mysql_store_result(m);
    if (r) mysql_free_result(r);
}

static void min_enqueue(int n, int batch)
{
    MYSQL *m = connect_db();
    char *sql = malloc(256 + (size_t)batch * 128), id[37];
    unsigned long seq = 0;
    for (int done = 0; done < n; done += batch) {
        char *p = sql + sprintf(sql, "INSERT INTO bench_min (id, queue, payload) VALUES ");
        for (int i = 0; i < batch; i++) {
            make_id(id, seq++);
            p += sprintf(p, "%s('%s','%s','{\\\"n\\\":1}')", i ? "," : "", id, queue);
        }
        query(m, sql);
    }
    mysql_close(m);
    free(sql);
}

/* Claim up to batch (SELECT ... SKIP LOCKED, UPDATE, COMMIT), then ack them (one UPDATE). */
static long min_worker(int batch)
{
    MYSQL *m = connect_db();
    char *sql = malloc(512 + (size_t)batch * 48), *ids = malloc((size_t)batch * 48), claim[37];
    unsigned long seq = 0;
    long done = 0;
    for (;;) {
        MYSQL_RES *r;
        MYSQL_ROW row;
        int got = 0;
        char *p = ids;
        query(m, "START TRANSACTION");
        snprintf(sql, 512,
                 "SELECT id, payload FROM bench_min WHERE queue = '%s' AND state = 0 ORDER BY id "
                 "LIMIT %d FOR UPDATE SKIP LOCKED",
                 queue, batch);
        if (mysql_query(m, sql) || !(r = mysql_store_result(m))) die(m, NULL, "min select");
        while ((row = mysql_fetch_row(r)))
            p += sprintf(p, "%s'%s'", got++ ? "," : "", row[0]);
        mysql_free_result(r);
        if (got == 0) {
            query(m, "ROLLBACK");
            break;
        }
        make_id(claim, seq++);
        sprintf(sql, "UPDATE bench_min SET state = 1, claim_id = '%s' WHERE id IN (%s)", claim,
                ids);
        query(m, sql);
        query(m, "COMMIT");
        sprintf(sql, "UPDATE bench_min SET state = 2 WHERE claim_id = '%s' AND id IN (%s)", claim,
                ids);
        query(m, sql);
        done += got;
    }
    mysql_close(m);
    free(sql);
    free(ids);
    return done;
}

int main(int argc, char **argv)
{
    double t0;
    long n;
    int arg;
    if (argc < 8) {
        fprintf(stderr, "usage: floor socket user password database queue OP N [ARG]\n");
        return 2;
    }
    sock = argv[1];
    user = argv[2];
    pass = argv[3];
    db = argv[4];
    queue = argv[5];
    n = atol(argv[7]);
    arg = argc > 8 ? atoi(argv[8]) : 1;
    t0 = now();
    if (!strcmp(argv[6], "min_enqueue")) {
        min_enqueue((int)n, 1);
    } else if (!strcmp(argv[6], "min_enqueue_batch")) {
        min_enqueue((int)n, arg);
    } else if (!strcmp(argv[6], "min_claim_ack") || !strcmp(argv[6], "claim_ack")) {
        /* arg = worker processes, each claiming one task at a time */
        int minimal = argv[6][0] == 'm';
        for (int i = 0; i < arg; i++) {
            if (fork() == 0) {
                long d = minimal ? min_worker(1) : worker(1);
                _exit(d > 0 ? 0 : 3);
            }
        }
        for (int i = 0; i < arg; i++) {
            int st;
            wait(&st);
        }
    } else if (!strcmp(argv[6], "min_claim_ack_batch")) {
        min_worker(arg);
    } else if (!strcmp(argv[6], "enqueue")) {
        enqueue((int)n, 1);
    } else if (!strcmp(argv[6], "enqueue_batch")) {
        enqueue((int)n, arg);
    } else if (!strcmp(argv[6], "claim_ack_batch")) {
        worker(arg);
    } else {
        fprintf(stderr, "floor: unknown op %s\n", argv[6]);
        return 2;
    }
    printf("%ld %.6f\n", n, now() - t0);
    return 0;
}
