/* Running a prepared statement: bound parameters in, rows out as text.
 * Every SQL value goes through a parameter; results are copied into one
 * arena owned by ce_rows so callers never touch MYSQL_BIND. */
#ifndef CELERS_STATEMENT_H
#define CELERS_STATEMENT_H

#include <stddef.h>

#include "connection.h"

// clang-format off
/* A DATETIME(6) expression as Unix seconds with microseconds, as text. UNIX_TIMESTAMP() would
 * be shorter, but MariaDB before 11.5 answers NULL for times past 2038. */
#define CE_EPOCH(expr) \
    "CAST(TIMESTAMPDIFF(MICROSECOND, TIMESTAMP'1970-01-01 00:00:00', " expr ") AS DECIMAL(26, 6)) / 1000000"

/* NOW(6) moved by a number of seconds (an SQL expression), to the microsecond: the one
 * spelling of every lease, delay and age in the core. */
#define CE_FROM_NOW(seconds) "DATE_ADD(NOW(6), INTERVAL ROUND(1000000 * " seconds ") MICROSECOND)"
#define CE_AGO(seconds) "DATE_SUB(NOW(6), INTERVAL ROUND(1000000 * " seconds ") MICROSECOND)"
// clang-format on

typedef enum { CE_PNULL = 0, CE_PINT, CE_PDOUBLE, CE_PTEXT } ce_ptype;

typedef struct ce_param {
    ce_ptype type;
    long long i;
    double d;
    const char *s; /* borrowed; need not be NUL-terminated */
    unsigned long len;
} ce_param;

static inline ce_param ce_pnull(void)
{
    ce_param p = {CE_PNULL, 0, 0, NULL, 0};
    return p;
}
static inline ce_param ce_pint(long long v)
{
    ce_param p = {CE_PINT, v, 0, NULL, 0};
    return p;
}
static inline ce_param ce_pdouble(double v)
{
    ce_param p = {CE_PDOUBLE, 0, v, NULL, 0};
    return p;
}
static inline ce_param ce_ptext(const char *s, unsigned long len)
{
    ce_param p = {CE_PTEXT, 0, 0, s, len};
    if (!s) p.type = CE_PNULL;
    return p;
}
/* NUL-terminated string, or SQL NULL when s is NULL. */
ce_param ce_pstr(const char *s);

typedef struct ce_value {
    const char *data; /* NUL-terminated text, NULL for SQL NULL; points into the arena */
    unsigned long len;
} ce_value;

typedef struct ce_rows {
    unsigned int ncols, nrows;
    ce_value *vals; /* nrows * ncols, row-major; owned */
    char *arena;    /* owned */
} ce_rows;

#define CE_CELL(rows, r, col) (&(rows)->vals[(size_t)(r) * (rows)->ncols + (col)])

/* The statement runner: every statement reaches the server through ce_exec, and every
 * operation runs under ce_conn_run's repeat policy (connection.h).
 *
 * ce_exec: one step of an operation (inside an op function given to ce_conn_run). Prepare
 * (cached) and execute sql with params. When out is not NULL the result set is stored there
 * (free with ce_rows_free); affected, when not NULL, gets the changed rows. */
int ce_exec(ce_conn *c, const char *sql, const ce_param *params, unsigned int nparams, ce_rows *out,
            unsigned long long *affected, ce_error *err);
/* ce_exec, keeping only the first cell of the first row: an integer (0 when no row), or a string
 * copied into out (*found 0 when no row or NULL). */
int ce_exec_count(ce_conn *c, const char *sql, const ce_param *p, unsigned int n, long long *out,
                  ce_error *err);
int ce_exec_string(ce_conn *c, const char *sql, const ce_param *p, unsigned int n, char *out,
                   size_t outlen, int *found, ce_error *err);

/* An operation that is one statement: ce_exec under the repeat policy. out and affected may be
 * NULL. */
int ce_run(ce_conn *c, ce_repeat repeat, const char *sql, const ce_param *p, unsigned int n,
           ce_rows *out, unsigned long long *affected, ce_error *err);
/* ce_run keeping the first cell as an integer (ce_exec_count). */
int ce_run_count(ce_conn *c, ce_repeat repeat, const char *sql, const ce_param *p, unsigned int n,
                 long long *out, ce_error *err);

void ce_rows_free(ce_rows *rows);
/* Append to dst the rows of src whose keep[r] is non-zero (every row when keep is NULL), their
 * first ncols cells (dst's width when dst has rows). Returns -1 when out of memory or src is
 * too narrow; dst is then unchanged. */
int ce_rows_append(ce_rows *dst, const ce_rows *src, const unsigned char *keep, unsigned int ncols);

/* Helpers for reading cells. */
long long ce_cell_int(const ce_rows *rows, unsigned int r, unsigned int col, long long dflt);
double ce_cell_num(const ce_rows *rows, unsigned int r, unsigned int col, double dflt);

#endif
