#include "json.h"

#include <errno.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- buffer ---------------------------------------------------------------------------- */

int ce_jbuf_reserve(ce_jbuf *b, size_t extra)
{
    size_t need, cap;
    char *p;
    if (b->cap - b->len >= extra) return 0;
    if (extra > SIZE_MAX / 2 - b->len) return CE_JSON_ENOMEM;
    need = b->len + extra;
    cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    p = realloc(b->data, cap);
    if (!p) return CE_JSON_ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int ce_jbuf_put(ce_jbuf *b, const char *s, size_t n)
{
    if (ce_jbuf_reserve(b, n) < 0) return CE_JSON_ENOMEM;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    return 0;
}

void ce_jbuf_free(ce_jbuf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* ---- numbers in the C locale, whatever setlocale() says ------------------------------- */

static locale_t c_locale;
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;

static void make_c_locale(void)
{
    c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
}

static double read_double(const char *text)
{
    pthread_once(&c_locale_once, make_c_locale);
    if (c_locale) return strtod_l(text, NULL, c_locale);
    return strtod(text, NULL);
}

/* %g writes the locale's decimal point; JSON wants '.'. */
static void dot_decimal_point(char *s)
{
    for (; *s; s++)
        if (!(*s >= '0' && *s <= '9') && *s != '-' && *s != '+' && *s != 'e') *s = '.';
}

/* ---- UTF-8 ----------------------------------------------------------------------------- */

/* Length of the valid sequence at s (avail bytes left), or 0. */
static size_t utf8_seq(const unsigned char *s, size_t avail)
{
    unsigned char c = s[0];
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        if (avail < 2 || (s[1] & 0xC0) != 0x80) return 0;
        return 2;
    }
    if (c >= 0xE0 && c <= 0xEF) {
        if (avail < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80) return 0;
        if (c == 0xE0 && s[1] < 0xA0) return 0; /* overlong */
        if (c == 0xED && s[1] > 0x9F) return 0; /* surrogate */
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (avail < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80)
            return 0;
        if (c == 0xF0 && s[1] < 0x90) return 0; /* overlong */
        if (c == 0xF4 && s[1] > 0x8F) return 0; /* above U+10FFFF */
        return 4;
    }
    return 0;
}

size_t ce_utf8_invalid_at(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        size_t k;
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        k = utf8_seq(u + i, n - i);
        if (!k) return i;
        i += k;
    }
    return n;
}

/* ---- writer ---------------------------------------------------------------------------- */

/* 0: as is; other: the letter after the backslash ('u' for \u00XX). */
static const char ESCAPE[256] = {
    ['\b'] = 'b',  ['\f'] = 'f', ['\n'] = 'n', ['\r'] = 'r', ['\t'] = 't', ['"'] = '"',
    ['\\'] = '\\', [0] = 'u',    [1] = 'u',    [2] = 'u',    [3] = 'u',    [4] = 'u',
    [5] = 'u',     [6] = 'u',    [7] = 'u',    [11] = 'u',   [14] = 'u',   [15] = 'u',
    [16] = 'u',    [17] = 'u',   [18] = 'u',   [19] = 'u',   [20] = 'u',   [21] = 'u',
    [22] = 'u',    [23] = 'u',   [24] = 'u',   [25] = 'u',   [26] = 'u',   [27] = 'u',
    [28] = 'u',    [29] = 'u',   [30] = 'u',   [31] = 'u',
};

static int put_char(ce_jbuf *b, char c)
{
    if (b->len == b->cap && ce_jbuf_reserve(b, 1) < 0) return CE_JSON_ENOMEM;
    b->data[b->len++] = c;
    return 0;
}

/* One pass: plain runs are copied whole, escapes written as they come, and every byte of
 * 0x80 and above must start a valid UTF-8 sequence. */
int ce_json_put_string(ce_jbuf *b, const char *s, size_t n, size_t *bad_at)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, run = 0;
    if (ce_jbuf_reserve(b, n + 2) < 0) return CE_JSON_ENOMEM;
    b->data[b->len++] = '"';
    while (i < n) {
        char e, esc[6];
        size_t elen = 2;
        if (u[i] >= 0x80) {
            size_t k = utf8_seq(u + i, n - i);
            if (!k) {
                if (bad_at) *bad_at = i;
                return CE_JSON_EUTF8;
            }
            i += k;
            continue;
        }
        e = ESCAPE[u[i]];
        if (!e) {
            i++;
            continue;
        }
        if (ce_jbuf_put(b, s + run, i - run) < 0) return CE_JSON_ENOMEM;
        esc[0] = '\\';
        esc[1] = e;
        if (e == 'u') {
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[u[i] >> 4];
            esc[5] = hex[u[i] & 15];
            elen = 6;
        }
        if (ce_jbuf_put(b, esc, elen) < 0) return CE_JSON_ENOMEM;
        run = ++i;
    }
    if (ce_jbuf_put(b, s + run, n - run) < 0) return CE_JSON_ENOMEM;
    return put_char(b, '"');
}

int ce_json_put_integer(ce_jbuf *b, long long v)
{
    char tmp[24], *p = tmp + sizeof tmp;
    unsigned long long m = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
    do {
        *--p = (char)('0' + m % 10);
        m /= 10;
    } while (m);
    if (v < 0) *--p = '-';
    return ce_jbuf_put(b, p, (size_t)(tmp + sizeof tmp - p));
}

int ce_json_put_double(ce_jbuf *b, double d)
{
    char tmp[40];
    int prec, len = 0;
    if (!isfinite(d)) return CE_JSON_ENUMBER;
    /* whole numbers a double holds exactly: the digits and ".0", no formatting round trip */
    if (d == floor(d) && fabs(d) < 9007199254740992.0 && !(d == 0 && signbit(d))) {
        if (ce_json_put_integer(b, (long long)d) < 0) return CE_JSON_ENOMEM;
        return ce_jbuf_put(b, ".0", 2);
    }
    for (prec = 15; prec <= 17; prec++) {
        len = snprintf(tmp, sizeof tmp, "%.*g", prec, d);
        dot_decimal_point(tmp);
        if (read_double(tmp) == d) break;
    }
    if (!strpbrk(tmp, ".e")) {
        memcpy(tmp + len, ".0", 3);
        len += 2;
    }
    return ce_jbuf_put(b, tmp, (size_t)len);
}

/* ---- reader ---------------------------------------------------------------------------- */

typedef struct parser {
    const char *s;
    size_t n, pos;
    const ce_json_handler *h;
    void *ud;
    ce_jbuf *scratch;
    ce_json_error *err;
    int depth;
} parser;

static int fail(parser *p, const char *fmt, ...)
{
    va_list ap;
    if (p->err->message[0]) return -1; /* keep the first (innermost) message */
    p->err->pos = p->pos;
    va_start(ap, fmt);
    /* NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized): va_start is just above */
    vsnprintf(p->err->message, sizeof p->err->message, fmt, ap);
    va_end(ap);
    return -1;
}

static int stopped(parser *p)
{
    return fail(p, "stopped by the handler");
}

static void skip_space(parser *p)
{
    while (p->pos < p->n) {
        char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->pos++;
    }
}

static int hex4(parser *p, size_t at, unsigned *out)
{
    unsigned v = 0;
    if (p->n - at < 4) return -1;
    for (size_t i = at; i < at + 4; i++) {
        char c = p->s[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

static size_t put_utf8(char *out, unsigned cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* One escape after the backslash at p->pos, appended to the scratch buffer. */
static int unescape(parser *p)
{
    char out[4];
    size_t len = 1;
    unsigned cp, lo;
    char c;
    if (p->pos + 1 >= p->n) return fail(p, "unfinished escape");
    c = p->s[p->pos + 1];
    switch (c) {
    case '"':
    case '\\':
    case '/':
        out[0] = c;
        break;
    case 'b':
        out[0] = '\b';
        break;
    case 'f':
        out[0] = '\f';
        break;
    case 'n':
        out[0] = '\n';
        break;
    case 'r':
        out[0] = '\r';
        break;
    case 't':
        out[0] = '\t';
        break;
    case 'u':
        if (hex4(p, p->pos + 2, &cp) < 0) return fail(p, "bad \\u escape");
        if (cp >= 0xDC00 && cp <= 0xDFFF) return fail(p, "lone low surrogate in \\u escape");
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (p->pos + 12 > p->n || p->s[p->pos + 6] != '\\' || p->s[p->pos + 7] != 'u' ||
                hex4(p, p->pos + 8, &lo) < 0 || lo < 0xDC00 || lo > 0xDFFF)
                return fail(p, "lone high surrogate in \\u escape");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            p->pos += 6;
        }
        len = put_utf8(out, cp);
        p->pos += 4;
        break;
    default:
        return fail(p, "bad escape \\%c", c);
    }
    p->pos += 2;
    if (ce_jbuf_put(p->scratch, out, len) < 0) return fail(p, "out of memory");
    return 0;
}

/* The string starting at the quote at p->pos; *s and *len point into the input when it has no
 * escapes, else into the scratch buffer. */
static int read_string(parser *p, const char **s, size_t *len)
{
    const unsigned char *u = (const unsigned char *)p->s;
    size_t start = ++p->pos, run;
    int copied = 0;
    p->scratch->len = 0;
    run = start;
    for (;;) {
        unsigned char c;
        if (p->pos >= p->n) return fail(p, "unfinished string");
        c = u[p->pos];
        if (c == '"') break;
        if (c < 0x20) return fail(p, "control character in string");
        if (c == '\\') {
            if (ce_jbuf_put(p->scratch, p->s + run, p->pos - run) < 0)
                return fail(p, "out of memory");
            if (unescape(p) < 0) return -1;
            copied = 1;
            run = p->pos;
        } else if (c < 0x80) {
            p->pos++;
        } else {
            size_t k = utf8_seq(u + p->pos, p->n - p->pos);
            if (!k) return fail(p, "invalid UTF-8 in string");
            p->pos += k;
        }
    }
    if (copied) {
        if (ce_jbuf_put(p->scratch, p->s + run, p->pos - run) < 0) return fail(p, "out of memory");
        *s = p->scratch->data;
        *len = p->scratch->len;
    } else {
        *s = p->s + start;
        *len = p->pos - start;
    }
    p->pos++;
    return 0;
}

static int digits(parser *p)
{
    size_t start = p->pos;
    while (p->pos < p->n && p->s[p->pos] >= '0' && p->s[p->pos] <= '9')
        p->pos++;
    return p->pos > start;
}

static int read_number(parser *p)
{
    size_t start = p->pos;
    int neg = 0, is_real = 0;
    if (p->s[p->pos] == '-') {
        neg = 1;
        p->pos++;
    }
    if (p->pos < p->n && p->s[p->pos] == '0') {
        p->pos++;
        if (p->pos < p->n && p->s[p->pos] >= '0' && p->s[p->pos] <= '9')
            return fail(p, "leading zero in number");
    } else if (!digits(p)) {
        return fail(p, "bad number");
    }
    if (p->pos < p->n && p->s[p->pos] == '.') {
        p->pos++;
        is_real = 1;
        if (!digits(p)) return fail(p, "bad number: no digit after '.'");
    }
    if (p->pos < p->n && (p->s[p->pos] == 'e' || p->s[p->pos] == 'E')) {
        p->pos++;
        is_real = 1;
        if (p->pos < p->n && (p->s[p->pos] == '+' || p->s[p->pos] == '-')) p->pos++;
        if (!digits(p)) return fail(p, "bad number: no digit in exponent");
    }
    if (!is_real) {
        unsigned long long v = 0, limit = neg ? (unsigned long long)INT64_MAX + 1 : INT64_MAX;
        for (size_t i = start + (size_t)neg; i < p->pos; i++) {
            unsigned d = (unsigned)(p->s[i] - '0');
            if (v > (limit - d) / 10) {
                p->pos = start;
                return fail(p, "integer %.*s does not fit in 64 bits",
                            (int)(i - start + 1) > 40 ? 40 : (int)(i - start + 1), p->s + start);
            }
            v = v * 10 + d;
        }
        /* -v computed in unsigned arithmetic, then brought back without overflow */
        long long iv = neg ? (v ? -(long long)(v - 1) - 1 : 0) : (long long)v;
        return p->h->integer(p->ud, iv) ? stopped(p) : 0;
    }
    {
        size_t len = p->pos - start;
        double d;
        p->scratch->len = 0;
        if (ce_jbuf_put(p->scratch, p->s + start, len) < 0 || ce_jbuf_put(p->scratch, "", 1) < 0)
            return fail(p, "out of memory");
        d = read_double(p->scratch->data);
        if (!isfinite(d)) {
            p->pos = start;
            return fail(p, "number %.*s is beyond the range of a double", len > 40 ? 40 : (int)len,
                        p->s + start);
        }
        return p->h->real(p->ud, d) ? stopped(p) : 0;
    }
}

static int literal(parser *p, const char *word, size_t len, int which)
{
    if (p->n - p->pos < len || memcmp(p->s + p->pos, word, len) != 0)
        return fail(p, "unexpected character '%c'", p->s[p->pos]);
    p->pos += len;
    return p->h->literal(p->ud, which) ? stopped(p) : 0;
}

static int value(parser *p);

static int container(parser *p, int is_array)
{
    char close = is_array ? ']' : '}';
    size_t index = 0;
    if (++p->depth > CE_JSON_MAX_DEPTH)
        return fail(p, "nesting deeper than %d levels", CE_JSON_MAX_DEPTH);
    if (p->h->begin(p->ud, is_array)) return stopped(p);
    p->pos++;
    skip_space(p);
    if (p->pos < p->n && p->s[p->pos] == close) {
        p->pos++;
        p->depth--;
        return p->h->end(p->ud, is_array) ? stopped(p) : 0;
    }
    for (;;) {
        if (!is_array) {
            const char *k = NULL;
            size_t klen = 0;
            if (p->pos >= p->n || p->s[p->pos] != '"') return fail(p, "expected a string key");
            if (read_string(p, &k, &klen) < 0) return -1;
            if (p->h->key(p->ud, k, klen)) return stopped(p);
            skip_space(p);
            if (p->pos >= p->n || p->s[p->pos] != ':') return fail(p, "expected ':'");
            p->pos++;
        }
        if (value(p) < 0) return -1;
        if (p->h->add(p->ud, is_array, ++index)) return stopped(p);
        skip_space(p);
        if (p->pos >= p->n) return fail(p, "unfinished %s", is_array ? "array" : "object");
        if (p->s[p->pos] == close) break;
        if (p->s[p->pos] != ',') return fail(p, "expected ',' or '%c'", close);
        p->pos++;
        skip_space(p);
    }
    p->pos++;
    p->depth--;
    return p->h->end(p->ud, is_array) ? stopped(p) : 0;
}

static int value(parser *p)
{
    skip_space(p);
    if (p->pos >= p->n) return fail(p, "unexpected end of text");
    switch (p->s[p->pos]) {
    case '{':
        return container(p, 0);
    case '[':
        return container(p, 1);
    case '"': {
        const char *s = NULL;
        size_t len = 0;
        if (read_string(p, &s, &len) < 0) return -1;
        return p->h->string(p->ud, s, len) ? stopped(p) : 0;
    }
    case 't':
        return literal(p, "true", 4, 2);
    case 'f':
        return literal(p, "false", 5, 1);
    case 'n':
        return literal(p, "null", 4, 0);
    default:
        if (p->s[p->pos] == '-' || (p->s[p->pos] >= '0' && p->s[p->pos] <= '9'))
            return read_number(p);
        return fail(p, "unexpected character '%c'", p->s[p->pos]);
    }
}

int ce_json_decode(const char *s, size_t n, const ce_json_handler *h, void *ud, ce_jbuf *scratch,
                   ce_json_error *err)
{
    parser p = {s, n, 0, h, ud, scratch, err, 0};
    err->pos = 0;
    err->message[0] = '\0';
    if (value(&p) < 0) return -1;
    skip_space(&p);
    if (p.pos < n) return fail(&p, "unexpected text after the value");
    return 0;
}
