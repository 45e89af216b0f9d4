/* Exact JSON: integers stay 64-bit integers, doubles keep every bit, text is UTF-8.
 * No Lua here: the writer appends to a growable buffer, the reader calls a handler for
 * each value, so any C program can build its own values from JSON text. */
#ifndef CELERS_JSON_H
#define CELERS_JSON_H

#include <stddef.h>

/* Deeper nesting is refused by both directions (it is a hostile document or a cycle). */
#define CE_JSON_MAX_DEPTH 1000

typedef struct ce_jbuf {
    char *data;
    size_t len;
    size_t cap;
} ce_jbuf;

/* Every writer returns 0, CE_JSON_ENOMEM, or for bad values CE_JSON_EUTF8 / CE_JSON_ENUMBER. */
#define CE_JSON_ENOMEM (-1)
#define CE_JSON_EUTF8 (-2)
#define CE_JSON_ENUMBER (-3)

int ce_jbuf_reserve(ce_jbuf *b, size_t extra);
int ce_jbuf_put(ce_jbuf *b, const char *s, size_t n);
void ce_jbuf_free(ce_jbuf *b);

/* The offset of the first byte that is not part of valid UTF-8 (no overlongs, no
 * surrogates, at most U+10FFFF), or n when all of s is valid. */
size_t ce_utf8_invalid_at(const char *s, size_t n);

/* A quoted, escaped string; invalid UTF-8 is refused (*bad_at says where). */
int ce_json_put_string(ce_jbuf *b, const char *s, size_t n, size_t *bad_at);
int ce_json_put_integer(ce_jbuf *b, long long v);
/* The shortest of %.15g/%.16g/%.17g that reads back as the same double, with ".0" added
 * when it would read as an integer; NaN and infinities are refused. */
int ce_json_put_double(ce_jbuf *b, double d);

/* The reader's callbacks; each returns 0 to go on, anything else stops the parse.
 * Strings are passed as pointer and length (NUL bytes included), valid during the call. */
typedef struct ce_json_handler {
    int (*begin)(void *ud, int is_array);
    int (*end)(void *ud, int is_array);
    int (*key)(void *ud, const char *s, size_t n);
    int (*string)(void *ud, const char *s, size_t n);
    int (*integer)(void *ud, long long v);
    int (*real)(void *ud, double v);
    int (*literal)(void *ud, int which); /* 0 null, 1 false, 2 true */
    /* A member is complete: element `index` (from 1) of an array, or key then value. */
    int (*add)(void *ud, int is_array, size_t index);
} ce_json_handler;

typedef struct ce_json_error {
    size_t pos;
    char message[160];
} ce_json_error;

/* Parse exactly one JSON value (RFC 8259; surrounding whitespace allowed). Numbers without
 * fraction or exponent are integers and must fit 64 bits; others are correctly rounded
 * doubles and must be finite. Unescaped strings go through scratch. 0 or -1 (err set). */
int ce_json_decode(const char *s, size_t n, const ce_json_handler *h, void *ud, ce_jbuf *scratch,
                   ce_json_error *err);

#endif
