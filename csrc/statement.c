#include "statement.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_STACK_PARAMS 32
/* Statements whose bound data exceed this are checked against the server's packet limit. */
#define BIG_STATEMENT (1ul << 20)

ce_param ce_pstr(const char *s)
{
    return ce_ptext(s, s ? (unsigned long)strlen(s) : 0);
}

void ce_rows_free(ce_rows *rows)
{
    if (!rows) return;
    free(rows->vals);
    free(rows->arena);
    rows->vals = NULL;
    rows->arena = NULL;
    rows->nrows = rows->ncols = 0;
}

/* The bytes the first ncols cells of row r take in an arena (each NUL-terminated). */
static size_t row_bytes(const ce_rows *rows, unsigned int r, unsigned int ncols)
{
    size_t n = 0;
    for (unsigned int col = 0; col < ncols; col++)
        if (CE_CELL(rows, r, col)->data) n += CE_CELL(rows, r, col)->len + 1;
    return n;
}

int ce_rows_append(ce_rows *dst, const ce_rows *src, const unsigned char *keep, unsigned int ncols)
{
    unsigned int add = 0, total, row = 0;
    size_t bytes = 0, used = 0;
    ce_value *vals;
    char *arena;
    if (dst->nrows) ncols = dst->ncols;
    if (ncols > src->ncols) return -1;
    for (unsigned int r = 0; r < src->nrows; r++)
        if (!keep || keep[r]) {
            add++;
            bytes += row_bytes(src, r, ncols);
        }
    if (add == 0) return 0;
    for (unsigned int r = 0; r < dst->nrows; r++)
        bytes += row_bytes(dst, r, ncols);
    total = dst->nrows + add;
    vals = malloc(sizeof *vals * (size_t)total * ncols);
    arena = malloc(bytes ? bytes : 1);
    if (!vals || !arena) {
        free(vals);
        free(arena);
        return -1;
    }
    for (int from_src = 0; from_src < 2; from_src++) {
        const ce_rows *rows = from_src ? src : dst;
        for (unsigned int r = 0; r < rows->nrows; r++) {
            if (from_src && keep && !keep[r]) continue;
            for (unsigned int col = 0; col < ncols; col++) {
                const ce_value *v = CE_CELL(rows, r, col);
                ce_value *to = &vals[(size_t)row * ncols + col];
                to->len = v->len;
                to->data = NULL;
                if (v->data) {
                    memcpy(arena + used, v->data, v->len);
                    arena[used + v->len] = '\0';
                    to->data = arena + used;
                    used += v->len + 1;
                }
            }
            row++;
        }
    }
    free(dst->vals);
    free(dst->arena);
    dst->vals = vals;
    dst->arena = arena;
    dst->nrows = total;
    dst->ncols = ncols;
    return 0;
}

static void bind_params(MYSQL_BIND *b, const ce_param *p, unsigned int n)
{
    memset(b, 0, sizeof *b * n);
    for (unsigned int i = 0; i < n; i++) {
        switch (p[i].type) {
        case CE_PNULL:
            b[i].buffer_type = MYSQL_TYPE_NULL;
            break;
        case CE_PINT:
            b[i].buffer_type = MYSQL_TYPE_LONGLONG;
            b[i].buffer = (void *)&p[i].i;
            break;
        case CE_PDOUBLE:
            b[i].buffer_type = MYSQL_TYPE_DOUBLE;
            b[i].buffer = (void *)&p[i].d;
            break;
        case CE_PTEXT:
            b[i].buffer_type = MYSQL_TYPE_STRING;
            b[i].buffer = (void *)(p[i].s ? p[i].s : "");
            b[i].buffer_length = p[i].len;
            b[i].length = (unsigned long *)&p[i].len;
            break;
        }
    }
}

/* Copy a stored result set into rows. Each row is fetched into a scratch buffer sized from
 * max_length, then copied at its exact length into one growing arena. */
static int fetch_all(MYSQL_STMT *stmt, MYSQL_RES *meta, ce_rows *out, ce_error *err)
{
    unsigned int ncols = mysql_num_fields(meta);
    unsigned long long nrows = mysql_stmt_num_rows(stmt);
    MYSQL_FIELD *fields = mysql_fetch_fields(meta);
    size_t nc = ncols ? ncols : 1, ncells = (size_t)nrows * ncols;
    MYSQL_BIND *binds = calloc(nc, sizeof *binds);
    unsigned long *lens = calloc(nc, sizeof *lens);
    my_bool *nulls = calloc(nc, sizeof *nulls);
    size_t *offsets = calloc(ncells ? ncells : 1, sizeof *offsets);
    size_t rowcap = 0, used = 0, cap = 256;
    char *scratch = NULL;
    int rc = -1;

    memset(out, 0, sizeof *out);
    out->ncols = ncols;
    out->vals = calloc(ncells ? ncells : 1, sizeof *out->vals);
    out->arena = malloc(cap);
    if (!binds || !lens || !nulls || !offsets || !out->vals || !out->arena) goto nomem;
    for (unsigned int i = 0; i < ncols; i++) {
        /* numbers and dates come back as text, converted by the client library */
        unsigned long w = fields[i].max_length > 64 ? fields[i].max_length : 64;
        binds[i].buffer_type = MYSQL_TYPE_STRING;
        binds[i].buffer_length = w + 1;
        binds[i].length = &lens[i];
        binds[i].is_null = &nulls[i];
        rowcap += w + 1;
    }
    scratch = malloc(rowcap ? rowcap : 1);
    if (!scratch) goto nomem;
    for (size_t i = 0, off = 0; i < ncols; off += binds[i].buffer_length, i++)
        binds[i].buffer = scratch + off;
    if (ncols && mysql_stmt_bind_result(stmt, binds)) {
        ce_error_from_stmt(err, stmt);
        goto done;
    }
    for (unsigned long long r = 0; r < nrows; r++) {
        int f = mysql_stmt_fetch(stmt);
        if (f == 1) {
            ce_error_from_stmt(err, stmt);
            goto done;
        }
        if (f == MYSQL_NO_DATA) break;
        if (f == MYSQL_DATA_TRUNCATED) {
            /* cannot happen with buffers sized from max_length; never hand out clipped data */
            ce_error_set(err, CE_ESQL, "a result column did not fit its buffer");
            goto done;
        }
        for (unsigned int i = 0; i < ncols; i++) {
            size_t cell = (size_t)r * ncols + i;
            unsigned long len;
            if (nulls[i]) {
                offsets[cell] = (size_t)-1;
                continue;
            }
            len = lens[i] < binds[i].buffer_length ? lens[i] : binds[i].buffer_length - 1;
            if (used + len + 1 > cap) {
                char *grown;
                while (used + len + 1 > cap)
                    cap *= 2;
                grown = realloc(out->arena, cap);
                if (!grown) goto nomem;
                out->arena = grown;
            }
            memcpy(out->arena + used, binds[i].buffer, len);
            out->arena[used + len] = '\0';
            offsets[cell] = used;
            out->vals[cell].len = len;
            used += len + 1;
        }
        out->nrows++;
    }
    /* The arena no longer moves: turn offsets into pointers. */
    for (size_t cell = 0; cell < (size_t)out->nrows * ncols; cell++)
        out->vals[cell].data = offsets[cell] == (size_t)-1 ? NULL : out->arena + offsets[cell];
    rc = 0;
    goto done;
nomem:
    ce_error_set(err, CE_ENOMEM, "out of memory");
done:
    free(binds);
    free(lens);
    free(nulls);
    free(offsets);
    free(scratch);
    if (rc < 0) ce_rows_free(out);
    return rc;
}

/* Fix (spec/enqueue_spec.lua "too_large"): a statement larger than the server's
 * max_allowed_packet made the server drop the link, so the caller saw "lost" (and CE_REPEAT
 * operations sent the whole payload a second time) instead of "too_large". Big statements
 * (over 1 MiB of bound data; the extra round trip is nothing next to sending them) are
 * measured against @@max_allowed_packet first and refused without being sent. */
static int check_packet_size(ce_conn *c, const char *sql, const ce_param *params,
                             unsigned int nparams, ce_error *err)
{
    static const char q[] = "SELECT @@max_allowed_packet";
    unsigned long long total = strlen(sql) + 64, limit = 0;
    MYSQL_RES *res;
    MYSQL_ROW row;
    for (unsigned int i = 0; i < nparams; i++)
        total += params[i].len + 9; /* value, length prefix and type bytes */
    if (total <= BIG_STATEMENT || !c->mysql) return 0;
    if (mysql_real_query(c->mysql, q, (unsigned long)(sizeof q - 1)))
        return ce_error_from_mysql(err, c->mysql);
    res = mysql_store_result(c->mysql);
    if (!res) return ce_error_from_mysql(err, c->mysql);
    row = mysql_fetch_row(res);
    if (row && row[0]) limit = strtoull(row[0], NULL, 10);
    mysql_free_result(res);
    if (limit && total > limit)
        return ce_error_set(err, CE_ETOOLARGE,
                            "statement of %llu bytes exceeds the server's max_allowed_packet "
                            "(%llu bytes)",
                            total, limit);
    return 0;
}

/* Read and drop what a CALL (or a failed run) left on the link, so the next command is not
 * refused with 2014 "commands out of sync". */
static int drain(MYSQL_STMT *stmt, MYSQL *mysql, ce_error *err)
{
    int rc = 0;
    mysql_stmt_free_result(stmt);
    while (mysql_more_results(mysql)) {
        int next = mysql_stmt_next_result(stmt);
        /* a later result set may fail part-way: storing it surfaces that error */
        if (next == 0 && mysql_stmt_field_count(stmt) && mysql_stmt_store_result(stmt)) next = 1;
        if (next > 0 && rc == 0 && err) rc = ce_error_from_stmt(err, stmt);
        if (next != 0) break;
        mysql_stmt_free_result(stmt);
    }
    return rc;
}

int ce_exec(ce_conn *c, const char *sql, const ce_param *params, unsigned int nparams, ce_rows *out,
            unsigned long long *affected, ce_error *err)
{
    MYSQL_BIND stack[MAX_STACK_PARAMS];
    MYSQL_BIND *binds = stack;
    MYSQL_STMT *stmt;
    MYSQL_RES *meta;
    int rc = -1, ran = 0;

    if (out) memset(out, 0, sizeof *out);
    if (ce_fault_point(c, CE_FAULT_BEFORE_SEND, sql, err) < 0) return -1;
    stmt = ce_conn_prepare(c, sql, err);
    if (!stmt) return -1;
    if (mysql_stmt_param_count(stmt) != nparams)
        return ce_error_set(err, CE_EINVALID, "internal: statement wants %lu parameters, got %u",
                            mysql_stmt_param_count(stmt), nparams);
    if (check_packet_size(c, sql, params, nparams, err) < 0) return -1;
    if (nparams > MAX_STACK_PARAMS) {
        binds = malloc(sizeof *binds * nparams);
        if (!binds) return ce_error_set(err, CE_ENOMEM, "out of memory");
    }
    if (nparams) {
        bind_params(binds, params, nparams);
        if (mysql_stmt_bind_param(stmt, binds)) {
            ce_error_from_stmt(err, stmt);
            goto done;
        }
    }
    ran = 1;
    if (mysql_stmt_execute(stmt)) {
        ce_conn_sent(c, ce_conn_unsent(mysql_stmt_errno(stmt)));
        ce_error_from_stmt(err, stmt);
        goto done;
    }
    ce_conn_sent(c, 0);
    if (affected) *affected = mysql_stmt_affected_rows(stmt);
    meta = mysql_stmt_result_metadata(stmt);
    if (meta) {
        if (mysql_stmt_store_result(stmt)) {
            ce_error_from_stmt(err, stmt);
            mysql_free_result(meta);
            goto done;
        }
        rc = out ? fetch_all(stmt, meta, out, err) : 0;
        mysql_free_result(meta);
        if (rc < 0) goto done;
        rc = -1;
    }
    /* A CALL answers with its result sets and a final status: consume them all. */
    if (drain(stmt, c->mysql, err) < 0) goto done;
    rc = ce_fault_point(c, CE_FAULT_AFTER_SEND, sql, err);
done:
    if (rc < 0) {
        if (out) ce_rows_free(out);
        /* A run that failed part-way may leave rows or results behind: read what is left and
         * close the statement, so neither it nor the next command waits on stale state. */
        if (ran && c->mysql) {
            drain(stmt, c->mysql, NULL);
            ce_conn_forget(c, stmt);
        }
    }
    if (binds != stack) free(binds);
    return rc;
}

int ce_exec_count(ce_conn *c, const char *sql, const ce_param *p, unsigned int n, long long *out,
                  ce_error *err)
{
    ce_rows rows = {0};
    if (ce_exec(c, sql, p, n, &rows, NULL, err) < 0) return -1;
    *out = rows.nrows ? ce_cell_int(&rows, 0, 0, 0) : 0;
    ce_rows_free(&rows);
    return 0;
}

int ce_exec_string(ce_conn *c, const char *sql, const ce_param *p, unsigned int n, char *out,
                   size_t outlen, int *found, ce_error *err)
{
    ce_rows rows = {0};
    if (ce_exec(c, sql, p, n, &rows, NULL, err) < 0) return -1;
    *found = rows.nrows > 0 && CE_CELL(&rows, 0, 0)->data;
    if (*found) snprintf(out, outlen, "%s", CE_CELL(&rows, 0, 0)->data);
    ce_rows_free(&rows);
    return 0;
}

typedef struct {
    const char *sql;
    const ce_param *p;
    unsigned int n;
    ce_rows *out;
    unsigned long long affected;
    long long *count; /* ce_run_count: keep the first cell only */
} run_ctx;

static int run_op(ce_conn *c, void *vctx, ce_error *err)
{
    run_ctx *x = vctx;
    if (x->count) return ce_exec_count(c, x->sql, x->p, x->n, x->count, err);
    return ce_exec(c, x->sql, x->p, x->n, x->out, &x->affected, err);
}

int ce_run(ce_conn *c, ce_repeat repeat, const char *sql, const ce_param *p, unsigned int n,
           ce_rows *out, unsigned long long *affected, ce_error *err)
{
    run_ctx x = {sql, p, n, out, 0, NULL};
    if (out) memset(out, 0, sizeof *out);
    if (ce_conn_run(c, repeat, run_op, &x, err) < 0) return -1;
    if (affected) *affected = x.affected;
    return 0;
}

int ce_run_count(ce_conn *c, ce_repeat repeat, const char *sql, const ce_param *p, unsigned int n,
                 long long *out, ce_error *err)
{
    run_ctx x = {sql, p, n, NULL, 0, out};
    *out = 0;
    return ce_conn_run(c, repeat, run_op, &x, err);
}

long long ce_cell_int(const ce_rows *rows, unsigned int r, unsigned int col, long long dflt)
{
    const ce_value *v = CE_CELL(rows, r, col);
    return v->data ? strtoll(v->data, NULL, 10) : dflt;
}

double ce_cell_num(const ce_rows *rows, unsigned int r, unsigned int col, double dflt)
{
    const ce_value *v = CE_CELL(rows, r, col);
    return v->data ? strtod(v->data, NULL) : dflt;
}
