/* Connection and broker settings, filled from a DSN
 * (mysql://user:pass@host:port/db?queue=..&socket=..) or key by key. */
#ifndef CELERS_CONFIG_H
#define CELERS_CONFIG_H

#include "errors.h"

typedef struct ce_config {
    char *host, *user, *password, *database, *socket, *queue;
    unsigned int port;
    unsigned int connect_timeout, read_timeout, write_timeout; /* seconds, 0 = library default */
    double lease;                               /* default lease of a claim, seconds */
    double retry_base, retry_factor, retry_max; /* default backoff of reject/retry */
    unsigned int reconnect_tries;               /* attempts after a lost connection */
    double reconnect_backoff;                   /* first pause between attempts, seconds */
    double recover_interval;                    /* min seconds between lease sweeps on dequeue */
    int ssl;                                    /* 1 = require TLS */
    int ssl_verify;                             /* 1 = verify the server certificate */
    char *ssl_ca, *ssl_capath, *ssl_cert, *ssl_key, *ssl_cipher;
} ce_config;

/* Defaults, no strings set. */
void ce_config_init(ce_config *cfg);
void ce_config_free(ce_config *cfg);
/* Deep copy; returns -1 on allocation failure. */
int ce_config_copy(ce_config *dst, const ce_config *src, ce_error *err);
/* Set one setting by name from its text form. Unknown names and bad values fail
 * with CE_EINVALID naming the setting (never echoing a password). */
int ce_config_set(ce_config *cfg, const char *key, const char *value, ce_error *err);
/* Parse a mysql:// DSN on top of the current values. */
int ce_config_parse_dsn(ce_config *cfg, const char *dsn, ce_error *err);
/* Is `key` a setting name (including ssl_* ones)? */
int ce_config_known(const char *key);

#endif
