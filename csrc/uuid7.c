#include "uuid7.h"

#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <uuid/uuid.h>

/* Last timestamp and sequence handed out by this thread. */
static _Thread_local uint64_t last_ms;
static _Thread_local unsigned int last_seq;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void ce_uuid7(char out[CE_UUID_LEN + 1])
{
    uuid_t rnd;
    unsigned char b[16];
    uint64_t ms = now_ms();
    unsigned int seq;

    uuid_generate_random(rnd);
    if (ms > last_ms) {
        /* New millisecond: start the sequence low with random bits, leaving room to count. */
        seq = ((unsigned int)rnd[6] << 4 | rnd[7] >> 4) & 0x3ff;
    } else {
        /* Same (or earlier, if the clock stepped back) millisecond: keep counting. */
        ms = last_ms;
        seq = last_seq + 1;
        if (seq > 0xfff) {
            ms++;
            seq = 0;
        }
    }
    last_ms = ms;
    last_seq = seq;

    for (int i = 0; i < 6; i++)
        b[i] = (unsigned char)(ms >> (40 - 8 * i));
    b[6] = (unsigned char)(0x70 | (seq >> 8));
    b[7] = (unsigned char)(seq & 0xff);
    b[8] = (unsigned char)(0x80 | (rnd[8] & 0x3f));
    for (int i = 9; i < 16; i++)
        b[i] = rnd[i];

    snprintf(out, CE_UUID_LEN + 1,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
}
