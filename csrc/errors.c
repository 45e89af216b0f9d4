#include "errors.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *const code_names[] = {
    [CE_OK] = "ok",
    [CE_ECONNECT] = "connect",
    [CE_ELOST] = "lost",
    [CE_ETIMEOUT] = "timeout",
    [CE_EDUPLICATE] = "duplicate",
    [CE_ENOTFOUND] = "not_found",
    [CE_ETOOLARGE] = "too_large",
    [CE_EDEADLOCK] = "deadlock",
    [CE_ELOCKWAIT] = "lock_timeout",
    [CE_EJSON] = "json",
    [CE_EINVALID] = "invalid",
    [CE_ENOMEM] = "nomem",
    [CE_ETOOMANY] = "too_many_statements",
    [CE_ESQL] = "sql",
};

const char *ce_code_name(ce_code code)
{
    if ((unsigned)code < sizeof code_names / sizeof code_names[0] && code_names[code])
        return code_names[code];
    return "sql";
}

int ce_code_retryable(ce_code code)
{
    switch (code) {
    case CE_ECONNECT:
    case CE_ELOST:
    case CE_ETIMEOUT:
    case CE_EDEADLOCK:
    case CE_ELOCKWAIT:
    case CE_ETOOMANY:
        return 1;
    default:
        return 0;
    }
}

void ce_error_clear(ce_error *err)
{
    err->code = CE_OK;
    err->errnum = 0;
    err->sqlstate[0] = '\0';
    err->message[0] = '\0';
}

int ce_error_set(ce_error *err, ce_code code, const char *fmt, ...)
{
    va_list ap;
    err->code = code;
    err->errnum = 0;
    memcpy(err->sqlstate, "HY000", 6);
    va_start(ap, fmt);
    /* NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized): va_start is just above */
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return -1;
}

static ce_code classify(unsigned int errnum)
{
    switch (errnum) {
    case 1045: /* access denied */
    case 1049: /* unknown database */
    case 2002: /* can't connect through socket */
    case 2003: /* can't connect to server */
    case 2005: /* unknown host */
    case 1040: /* too many connections */
        return CE_ECONNECT;
    case 1053: /* server shutdown in progress */
    case 1927: /* connection was killed */
    case 2006: /* server has gone away */
    case 2013: /* lost connection during query */
    case 2014: /* commands out of sync: the link is in an unknown state, replace it */
    case 2055: /* lost connection (system error) */
    case 4031: /* disconnected by the server for inactivity */
        return CE_ELOST;
    case 1062: /* duplicate entry */
    case 1586: /* duplicate entry for key */
        return CE_EDUPLICATE;
    case 1153: /* packet bigger than max_allowed_packet */
    case 1301: /* result larger than max_allowed_packet */
    case 2020: /* client packet too large */
    case 1406: /* data too long for column */
        return CE_ETOOLARGE;
    case 1461: /* max_prepared_stmt_count reached */
        return CE_ETOOMANY;
    case 1213:
        return CE_EDEADLOCK;
    case 1205:
        return CE_ELOCKWAIT;
    case 1969: /* MariaDB max_statement_time */
    case 3024: /* MySQL max_execution_time */
        return CE_ETIMEOUT;
    case 3140: /* MySQL invalid JSON */
    case 4025: /* MariaDB CHECK constraint (JSON_VALID on a JSON column) */
    case 4038: /* MariaDB JSON syntax error */
        return CE_EJSON;
    default:
        return CE_ESQL;
    }
}

int ce_error_from_parts(ce_error *err, unsigned int errnum, const char *sqlstate, const char *msg)
{
    err->code = classify(errnum);
    err->errnum = errnum;
    snprintf(err->sqlstate, sizeof err->sqlstate, "%s", sqlstate ? sqlstate : "HY000");
    snprintf(err->message, sizeof err->message, "%s", msg && *msg ? msg : "unknown error");
    /* A read or write timeout stays "lost" (its message says timeout): the statement may have
     * run. "timeout" is kept for the server aborting a statement (1969/3024): it did not. */
    return -1;
}

int ce_error_from_mysql(ce_error *err, MYSQL *mysql)
{
    return ce_error_from_parts(err, mysql_errno(mysql), mysql_sqlstate(mysql), mysql_error(mysql));
}

int ce_error_from_stmt(ce_error *err, MYSQL_STMT *stmt)
{
    return ce_error_from_parts(err, mysql_stmt_errno(stmt), mysql_stmt_sqlstate(stmt),
                               mysql_stmt_error(stmt));
}

void ce_error_prefix(ce_error *err, ...)
{
    char buf[sizeof err->message];
    size_t used = 0, cap = sizeof buf - 1;
    const char *piece;
    va_list ap;
    va_start(ap, err);
    while ((piece = va_arg(ap, const char *)) != NULL) {
        size_t n = strlen(piece);
        if (n > cap - used) n = cap - used;
        memcpy(buf + used, piece, n);
        used += n;
    }
    va_end(ap);
    {
        size_t n = strlen(err->message);
        if (n > cap - used) n = cap - used;
        memcpy(buf + used, err->message, n);
        used += n;
    }
    buf[used] = '\0';
    memcpy(err->message, buf, used + 1);
}
