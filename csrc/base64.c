#include "base64.h"

static const char ALPHABET[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t ce_base64_encode(const unsigned char *in, size_t n, char *out)
{
    char *o = out;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
        *o++ = ALPHABET[v >> 18];
        *o++ = ALPHABET[(v >> 12) & 63];
        *o++ = ALPHABET[(v >> 6) & 63];
        *o++ = ALPHABET[v & 63];
    }
    if (n - i == 1) {
        unsigned v = (unsigned)in[i] << 16;
        *o++ = ALPHABET[v >> 18];
        *o++ = ALPHABET[(v >> 12) & 63];
        *o++ = '=';
        *o++ = '=';
    } else if (n - i == 2) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8;
        *o++ = ALPHABET[v >> 18];
        *o++ = ALPHABET[(v >> 12) & 63];
        *o++ = ALPHABET[(v >> 6) & 63];
        *o++ = '=';
    }
    return (size_t)(o - out);
}

/* 0-63 for alphabet characters, 64 for '=', 65 for whitespace, 66 for anything else. */
static unsigned char sextet(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return (unsigned char)(c - 'A');
    if (c >= 'a' && c <= 'z') return (unsigned char)(c - 'a' + 26);
    if (c >= '0' && c <= '9') return (unsigned char)(c - '0' + 52);
    if (c == '+') return 62;
    if (c == '/') return 63;
    if (c == '=') return 64;
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') return 65;
    return 66;
}

size_t ce_base64_decode(const char *in, size_t n, unsigned char *out)
{
    unsigned char *o = out;
    unsigned char q[4];
    size_t k = 0, pad = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char v = sextet((unsigned char)in[i]);
        if (v == 65) continue;
        if (v == 66) return (size_t)-1;
        if (v == 64) {
            if (k < 2) return (size_t)-1; /* "=" may only end a quartet, after two sextets */
            pad++;
            v = 0;
        } else if (pad) {
            return (size_t)-1; /* data after padding */
        }
        q[k++] = v;
        if (k == 4) {
            unsigned w = (unsigned)q[0] << 18 | (unsigned)q[1] << 12 | (unsigned)q[2] << 6 | q[3];
            *o++ = (unsigned char)(w >> 16);
            if (pad < 2) *o++ = (unsigned char)(w >> 8);
            if (pad < 1) *o++ = (unsigned char)w;
            k = 0;
            if (pad) {
                /* only whitespace may follow the padded quartet */
                for (i++; i < n; i++)
                    if (sextet((unsigned char)in[i]) != 65) return (size_t)-1;
                break;
            }
        }
    }
    if (k != 0) return (size_t)-1;
    return (size_t)(o - out);
}
