/*
 * tests/unit/harness.c — see harness.h. Guard pages with mmap/mprotect, xorshift for reproducible random splits.
 */
#include "harness.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int harness_failures;
int harness_checks;

const char *split_mode_str(enum split_mode m)
{
    switch (m) {
    case SPLIT_WHOLE:
        return "whole";
    case SPLIT_BYTES:
        return "bytes";
    case SPLIT_RANDOM:
        return "random";
    }
    return "?";
}

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s ? *s : 0x9E3779B97F4A7C15ull;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}

size_t split_next(enum split_mode m, size_t remaining, uint64_t *seed)
{
    if (remaining == 0)
        return 0;
    switch (m) {
    case SPLIT_WHOLE:
        return remaining;
    case SPLIT_BYTES:
        return 1;
    case SPLIT_RANDOM:
        return 1 + (size_t)(xorshift(seed) % remaining);
    }
    return remaining;
}

void *guard_copy(struct guard_slot *slot, const void *data, size_t len)
{
    long page = sysconf(_SC_PAGESIZE);
    size_t pages = (len + (size_t)page - 1) / (size_t)page + 1;
    guard_free(slot);
    slot->map_len = pages * (size_t)page;
    slot->map = mmap(NULL, slot->map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (slot->map == MAP_FAILED)
        abort();
    char *guard = (char *)slot->map + (pages - 1) * (size_t)page;
    if (mprotect(guard, (size_t)page, PROT_NONE) != 0)
        abort();
    char *p = guard - len;
    if (len)
        memcpy(p, data, len);
    return p;
}

void guard_free(struct guard_slot *slot)
{
    if (slot->map && slot->map != MAP_FAILED)
        munmap(slot->map, slot->map_len);
    slot->map = NULL;
    slot->map_len = 0;
}

int harness_done(void)
{
    printf("# %d checks, %d failures\n", harness_checks, harness_failures);
    return harness_failures ? 1 : 0;
}
