/* Time-ordered ids: UUIDv7 layout (48-bit Unix milliseconds, version, 12-bit
 * sequence, variant, 62 random bits seeded from libuuid). Ids made by one thread sort in
 * the order they were made, so primary-key inserts append and FIFO ties break by id. */
#ifndef CELERS_UUID7_H
#define CELERS_UUID7_H

#define CE_UUID_LEN 36

/* Writes 36 characters plus a NUL into out. */
void ce_uuid7(char out[CE_UUID_LEN + 1]);

#endif
