/* bridge/hash.c — see hash.h. */
#include "bridge/hash.h"

#include <openssl/rand.h>

#include "bridge/clock.h"

uint32_t hash_seed_new(void)
{
    uint32_t seed;
    if (RAND_bytes((unsigned char *)&seed, sizeof(seed)) != 1)
        seed = (uint32_t)clock_now_ms() ^ (uint32_t)(uintptr_t)&seed;
    return seed;
}

uint32_t hash_seeded(uint32_t seed, const void *key, size_t len)
{
    const uint8_t *k = key;
    uint32_t h = 2166136261u ^ seed;
    for (size_t i = 0; i < len; i++)
        h = (h ^ k[i]) * 16777619u;
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h;
}
