/* Base64 (RFC 4648, standard alphabet, '=' padding) for binary bytes inside JSON text. */
#ifndef CELERS_BASE64_H
#define CELERS_BASE64_H

#include <stddef.h>

/* Room needed by ce_base64_encode for n input bytes. */
#define CE_BASE64_ENCODED_LEN(n) (((n) + 2) / 3 * 4)

/* Writes CE_BASE64_ENCODED_LEN(n) characters (no NUL) into out; returns that length. */
size_t ce_base64_encode(const unsigned char *in, size_t n, char *out);

/* Decodes in (ASCII whitespace ignored) into out, which needs n / 4 * 3 bytes. Returns the
 * decoded length, or (size_t)-1 when the text is not base64 (bad character, bad length,
 * padding anywhere but at the end). */
size_t ce_base64_decode(const char *in, size_t n, unsigned char *out);

#endif
