#include "uuid7.h"

#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uuid/uuid.h>

/* Ids made between reseeds of the generator from libuuid. */
#define RESEED_EVERY 1024

/* Last timestamp and sequence handed out by this thread. */
static _Thread_local uint64_t last_ms;
static _Thread_local unsigned int last_seq;

/* libuuid costs several system calls per id (it mixes pid, uid and time into each), so it
 * seeds a per-thread xoshiro256** generator instead, reseeded every RESEED_EVERY ids and
 * after a fork (a child must never repeat its parent's sequence). */
static _Thread_local uint64_t rng[4];
static _Thread_local unsigned int rng_left;
static _Thread_local pid_t rng_pid;

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t next_random(void)
{
    uint64_t result, t;
    pid_t pid = getpid();
    if (rng_left == 0 || pid != rng_pid) {
        uuid_t a, b;
        uuid_generate_random(a);
        uuid_generate_random(b);
        memcpy(&rng[0], a, 8);
        memcpy(&rng[1], a + 8, 8);
        memcpy(&rng[2], b, 8);
        memcpy(&rng[3], b + 8, 8);
        rng[0] |= 1; /* never the all-zero state */
        rng_left = RESEED_EVERY;
        rng_pid = pid;
    }
    rng_left--;
    result = rotl(rng[1] * 5, 7) * 9;
    t = rng[1] << 17;
    rng[2] ^= rng[0];
    rng[3] ^= rng[1];
    rng[1] ^= rng[2];
    rng[0] ^= rng[3];
    rng[2] ^= t;
    rng[3] = rotl(rng[3], 45);
    return result;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void ce_uuid7(char out[CE_UUID_LEN + 1])
{
    uint64_t r1 = next_random(), r2 = next_random();
    unsigned char rnd[16];
    unsigned char b[16];
    uint64_t ms = now_ms();
    unsigned int seq;

    memcpy(rnd, &r1, 8);
    memcpy(rnd + 8, &r2, 8);
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

    {
        static const char hex[] = "0123456789abcdef";
        char *o = out;
        for (int i = 0; i < 16; i++) {
            if (i == 4 || i == 6 || i == 8 || i == 10) *o++ = '-';
            *o++ = hex[b[i] >> 4];
            *o++ = hex[b[i] & 15];
        }
        *o = '\0';
    }
}
