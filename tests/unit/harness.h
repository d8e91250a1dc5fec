/*
 * tests/unit/harness.h — the small test harness every unit test uses.
 *
 * CHECK() records a failure and carries on, so one run shows every broken rule; harness_done() gives the exit code.
 * guard_copy() places input right before a PROT_NONE page (picohttpparser's test.c trick): a parser that reads one byte
 * past what it was given crashes instead of passing by luck. split_points() gives the cut points for the three ways every
 * parser is fed: whole, one byte at a time, and random splits from a fixed seed (reproducible).
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

extern int harness_failures;
extern int harness_checks;

#define CHECK(cond)                                                                                                                \
    do {                                                                                                                           \
        harness_checks++;                                                                                                          \
        if (!(cond)) {                                                                                                             \
            harness_failures++;                                                                                                    \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);                                               \
        }                                                                                                                          \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                                                         \
    do {                                                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                                                        \
        harness_checks++;                                                                                                          \
        if (a_ != b_) {                                                                                                            \
            harness_failures++;                                                                                                    \
            fprintf(stderr, "%s:%d: CHECK failed: %s == %s (%lld != %lld)\n", __FILE__, __LINE__, #a, #b, a_, b_);                 \
        }                                                                                                                          \
    } while (0)

/* Runs fn(name) and prints a TAP-like line. */
#define RUN(fn)                                                                                                                    \
    do {                                                                                                                           \
        int before_ = harness_failures;                                                                                            \
        fn();                                                                                                                      \
        printf("%s %s\n", harness_failures == before_ ? "ok" : "not ok", #fn);                                                     \
    } while (0)

/* How an input is cut into chunks. */
enum split_mode {
    SPLIT_WHOLE = 0,
    SPLIT_BYTES = 1,
    SPLIT_RANDOM = 2,
};
#define SPLIT_MODES 3

const char *split_mode_str(enum split_mode m);

/*
 * Next chunk length for feeding `remaining` bytes in mode `m`; always >= 1 when remaining >= 1.
 * SPLIT_RANDOM draws from *seed (xorshift), so the same seed gives the same cuts.
 */
size_t split_next(enum split_mode m, size_t remaining, uint64_t *seed);

/*
 * Copy `len` bytes so that they end exactly at a PROT_NONE page. Returns a pointer to the copy (valid until
 * guard_free()); aborts on failure. Only one guarded buffer at a time per call site is expected; each call frees the
 * previous one made through the same `slot`.
 */
struct guard_slot {
    void *map;
    size_t map_len;
};
void *guard_copy(struct guard_slot *slot, const void *data, size_t len);
void guard_free(struct guard_slot *slot);

/* Prints the summary and returns the process exit code. */
int harness_done(void);
