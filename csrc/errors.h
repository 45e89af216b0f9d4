/* Error model of the C core: a code, the server's errno and SQLSTATE, and a message.
 * The code says what kind of failure it was; the Lua binding turns it into
 * { code=, message=, errno=, sqlstate=, retryable= }. */
#ifndef CELERS_ERRORS_H
#define CELERS_ERRORS_H

#include <mysql.h>

typedef enum {
    CE_OK = 0,
    CE_ECONNECT,   /* could not (re)connect */
    CE_ELOST,      /* connection lost or timed out; the statement may or may not have run */
    CE_ETIMEOUT,   /* the server aborted the statement (max_statement_time): it did not run */
    CE_EDUPLICATE, /* unique key violation */
    CE_ENOTFOUND,  /* the row asked for does not exist */
    CE_ETOOLARGE,  /* packet or value over the server's limit */
    CE_EDEADLOCK,  /* deadlock (1213): retrying the transaction is safe */
    CE_ELOCKWAIT,  /* lock wait timeout (1205) */
    CE_EJSON,      /* invalid JSON */
    CE_EINVALID,   /* bad input caught before reaching the server */
    CE_ENOMEM,     /* allocation failed */
    CE_ETOOMANY,   /* the server's prepared-statement limit (1461) */
    CE_ESQL        /* any other server error */
} ce_code;

typedef struct ce_error {
    ce_code code;
    unsigned int errnum; /* server/client errno, 0 when none */
    char sqlstate[6];
    char message[512];
} ce_error;

const char *ce_code_name(ce_code code);
int ce_code_retryable(ce_code code);

void ce_error_clear(ce_error *err);
/* printf-style message; always returns -1 so callers can `return ce_error_set(...)`. */
int ce_error_set(ce_error *err, ce_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Classify the last error of a connection or statement. Both return -1. */
int ce_error_from_mysql(ce_error *err, MYSQL *mysql);
int ce_error_from_stmt(ce_error *err, MYSQL_STMT *stmt);
/* Put the given pieces (NULL-terminated list) in front of the message, truncating its end. */
void ce_error_prefix(ce_error *err, ...);
/* Fill from a raw errno / sqlstate / message triple. */
int ce_error_from_parts(ce_error *err, unsigned int errnum, const char *sqlstate, const char *msg);

#endif
