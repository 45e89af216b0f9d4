#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <stdlib.h>
#include <string.h>

void ce_config_init(ce_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->port = 3306;
    cfg->connect_timeout = 10;
    /* No call waits forever on a silent server (migrate lifts these for its DDL). */
    cfg->read_timeout = 30;
    cfg->write_timeout = 30;
    cfg->lease = 300;
    cfg->retry_base = 1;
    cfg->retry_factor = 2;
    cfg->retry_max = 3600;
    cfg->reconnect_tries = 5;
    cfg->reconnect_backoff = 0.1;
    cfg->recover_interval = 5;
    cfg->ssl_verify = 1;
}

// clang-format off
#define STRING_FIELDS(X) \
    X(host) X(user) X(password) X(database) X(socket) X(queue) \
    X(ssl_ca) X(ssl_capath) X(ssl_cert) X(ssl_key) X(ssl_cipher)
// clang-format on

void ce_config_free(ce_config *cfg)
{
#define FREE_FIELD(f)                                                                              \
    free(cfg->f);                                                                                  \
    cfg->f = NULL;
    STRING_FIELDS(FREE_FIELD)
#undef FREE_FIELD
}

static int dup_into(char **slot, const char *value, ce_error *err)
{
    char *copy = NULL;
    if (value) {
        copy = strdup(value);
        if (!copy) return ce_error_set(err, CE_ENOMEM, "out of memory");
    }
    free(*slot);
    *slot = copy;
    return 0;
}

int ce_config_copy(ce_config *dst, const ce_config *src, ce_error *err)
{
    *dst = *src;
#define NULL_FIELD(f) dst->f = NULL;
    STRING_FIELDS(NULL_FIELD)
#undef NULL_FIELD
#define COPY_FIELD(f)                                                                              \
    if (dup_into(&dst->f, src->f, err) < 0) {                                                      \
        ce_config_free(dst);                                                                       \
        return -1;                                                                                 \
    }
    STRING_FIELDS(COPY_FIELD)
#undef COPY_FIELD
    return 0;
}

static int parse_uint(const char *key, const char *value, unsigned int *out, ce_error *err)
{
    char *end;
    unsigned long v;
    errno = 0;
    v = strtoul(value, &end, 10);
    if (errno || end == value || *end || v > 65535u * 1000u || value[0] == '-')
        return ce_error_set(err, CE_EINVALID, "option '%s' must be a non-negative integer", key);
    *out = (unsigned int)v;
    return 0;
}

static int parse_num(const char *key, const char *value, double *out, ce_error *err)
{
    char *end;
    double v;
    errno = 0;
    v = strtod(value, &end);
    if (errno || end == value || *end || !(v >= 0 && v <= DBL_MAX)) /* no NaN, no inf */
        return ce_error_set(err, CE_EINVALID, "option '%s' must be a finite non-negative number",
                            key);
    *out = v;
    return 0;
}

static int parse_bool(const char *key, const char *value, int *out, ce_error *err)
{
    if (strcmp(value, "1") == 0 || strcmp(value, "true") == 0 || strcmp(value, "yes") == 0) {
        *out = 1;
        return 0;
    }
    if (strcmp(value, "0") == 0 || strcmp(value, "false") == 0 || strcmp(value, "no") == 0) {
        *out = 0;
        return 0;
    }
    return ce_error_set(err, CE_EINVALID, "option '%s' must be true or false", key);
}

static const char *const known_keys[] = {
    "host",
    "user",
    "password",
    "database",
    "socket",
    "queue",
    "port",
    "connect_timeout",
    "read_timeout",
    "write_timeout",
    "lease",
    "retry_base",
    "retry_factor",
    "retry_max",
    "reconnect_tries",
    "reconnect_backoff",
    "recover_interval",
    "ssl",
    "ssl_verify",
    "ssl_ca",
    "ssl_capath",
    "ssl_cert",
    "ssl_key",
    "ssl_cipher",
    NULL,
};

int ce_config_known(const char *key)
{
    for (int i = 0; known_keys[i]; i++)
        if (strcmp(known_keys[i], key) == 0) return 1;
    return 0;
}

int ce_config_set(ce_config *cfg, const char *key, const char *value, ce_error *err)
{
#define SET_STRING(f)                                                                              \
    if (strcmp(key, #f) == 0) return dup_into(&cfg->f, value, err);
    STRING_FIELDS(SET_STRING)
#undef SET_STRING
    if (strcmp(key, "port") == 0) {
        if (parse_uint(key, value, &cfg->port, err) < 0) return -1;
        if (cfg->port == 0 || cfg->port > 65535)
            return ce_error_set(err, CE_EINVALID, "option 'port' must be within 1..65535");
        return 0;
    }
    if (strcmp(key, "connect_timeout") == 0)
        return parse_uint(key, value, &cfg->connect_timeout, err);
    if (strcmp(key, "read_timeout") == 0) return parse_uint(key, value, &cfg->read_timeout, err);
    if (strcmp(key, "write_timeout") == 0) return parse_uint(key, value, &cfg->write_timeout, err);
    if (strcmp(key, "reconnect_tries") == 0)
        return parse_uint(key, value, &cfg->reconnect_tries, err);
    if (strcmp(key, "lease") == 0) {
        if (parse_num(key, value, &cfg->lease, err) < 0) return -1;
        if (!(cfg->lease > 0 && cfg->lease <= 315360000.0))
            return ce_error_set(err, CE_EINVALID, "option 'lease' must be within 0..315360000");
        return 0;
    }
    if (strcmp(key, "retry_base") == 0) return parse_num(key, value, &cfg->retry_base, err);
    if (strcmp(key, "retry_factor") == 0) return parse_num(key, value, &cfg->retry_factor, err);
    if (strcmp(key, "retry_max") == 0) return parse_num(key, value, &cfg->retry_max, err);
    if (strcmp(key, "reconnect_backoff") == 0)
        return parse_num(key, value, &cfg->reconnect_backoff, err);
    if (strcmp(key, "recover_interval") == 0)
        return parse_num(key, value, &cfg->recover_interval, err);
    if (strcmp(key, "ssl") == 0) return parse_bool(key, value, &cfg->ssl, err);
    if (strcmp(key, "ssl_verify") == 0) return parse_bool(key, value, &cfg->ssl_verify, err);
    return ce_error_set(err, CE_EINVALID, "unknown option '%s'", key);
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    c = tolower(c);
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* Percent-decode [s, s+n) into a new string. */
static char *decode(const char *s, size_t n)
{
    char *out = malloc(n + 1), *o = out;
    if (!out) return NULL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
            *o++ = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
        } else {
            *o++ = s[i];
        }
    }
    *o = '\0';
    return out;
}

/* First c in [s, end), or NULL. */
static const char *find_char(const char *s, const char *end, char c)
{
    for (; s < end; s++)
        if (*s == c) return s;
    return NULL;
}

static int set_decoded(ce_config *cfg, const char *key, const char *s, size_t n, ce_error *err)
{
    char *v = decode(s, n);
    int rc;
    if (!v) return ce_error_set(err, CE_ENOMEM, "out of memory");
    rc = ce_config_set(cfg, key, v, err);
    free(v);
    return rc;
}

int ce_config_parse_dsn(ce_config *cfg, const char *dsn, ce_error *err)
{
    const char *p, *end, *at, *slash, *q, *colon;
    if (strncmp(dsn, "mysql://", 8) != 0 && strncmp(dsn, "mariadb://", 10) != 0)
        return ce_error_set(err, CE_EINVALID, "DSN must start with mysql:// or mariadb://");
    p = strchr(dsn, ':') + 3;
    end = p + strlen(p);
    q = strchr(p, '?');
    if (!q) q = end;
    slash = find_char(p, q, '/');
    if (!slash) slash = q;
    /* user[:password]@ -- the last '@' before the path, so passwords may contain '@' */
    at = NULL;
    for (const char *s = p; s < slash; s++)
        if (*s == '@') at = s;
    if (at) {
        colon = find_char(p, at, ':');
        if (set_decoded(cfg, "user", p, (size_t)((colon ? colon : at) - p), err) < 0) return -1;
        if (colon && set_decoded(cfg, "password", colon + 1, (size_t)(at - colon - 1), err) < 0)
            return -1;
        p = at + 1;
    }
    /* host[:port] */
    colon = find_char(p, slash, ':');
    if ((colon ? colon : slash) > p &&
        set_decoded(cfg, "host", p, (size_t)((colon ? colon : slash) - p), err) < 0)
        return -1;
    if (colon && set_decoded(cfg, "port", colon + 1, (size_t)(slash - colon - 1), err) < 0)
        return -1;
    /* /database */
    if (slash < q && q - slash > 1 &&
        set_decoded(cfg, "database", slash + 1, (size_t)(q - slash - 1), err) < 0)
        return -1;
    /* ?key=value&... */
    p = q < end ? q + 1 : end;
    while (p < end) {
        const char *amp = strchr(p, '&'), *eq;
        char *key;
        int rc;
        if (!amp) amp = end;
        eq = find_char(p, amp, '=');
        if (!eq) return ce_error_set(err, CE_EINVALID, "DSN parameter without '=' value");
        for (const char *k = p; k < eq; k++)
            if (!((*k >= 'a' && *k <= 'z') || *k == '_'))
                /* never echo the text: a malformed DSN may hold the password */
                return ce_error_set(err, CE_EINVALID, "malformed DSN parameters");
        key = decode(p, (size_t)(eq - p));
        if (!key) return ce_error_set(err, CE_ENOMEM, "out of memory");
        /* "db" is accepted as an alias of "database"; "password" is not allowed here */
        if (strcmp(key, "password") == 0) {
            free(key);
            return ce_error_set(err, CE_EINVALID, "put the password before '@' in the DSN");
        }
        rc = set_decoded(cfg, strcmp(key, "db") == 0 ? "database" : key, eq + 1,
                         (size_t)(amp - eq - 1), err);
        free(key);
        if (rc < 0) return -1;
        p = amp + 1;
    }
    return 0;
}
