/*
 * ws/utf8.h — incremental UTF-8 validation (RFC 3629), as RFC 6455 §8.1 requires for text messages.
 *
 * A small DFA whose state is carried across chunks, so a message can be validated as its frames (or inflated pieces)
 * arrive and rejected at the first invalid byte. Rejects overlong forms, UTF-16 surrogates (U+D800..U+DFFF) and code
 * points above U+10FFFF. Runs of ASCII are skipped eight bytes at a time. Used by the frame decoder, and by bridge/ to
 * decide whether an outgoing STOMP frame can be a text message (otherwise it must go as binary).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ws/error.h"

/* Validator state: embed by value; WS_UTF8_INIT or ws_utf8_init() starts at a character boundary. */
struct ws_utf8 {
    uint32_t state; /* private */
};

#define WS_UTF8_INIT                                                                                                               \
    {                                                                                                                              \
        0                                                                                                                          \
    }

void ws_utf8_init(struct ws_utf8 *u);

/*
 * Validates the next chunk. Returns 0 when every byte so far is valid (the chunk may end inside a character), or
 * WS_E_UTF8 at the first invalid byte; then, when bad_offset is not NULL, *bad_offset is that byte's index in p, and the
 * state stays failed (every later call returns WS_E_UTF8 with *bad_offset 0).
 */
int ws_utf8_feed(struct ws_utf8 *u, const uint8_t *p, size_t len, size_t *bad_offset) WS_MUSTCHECK;

/* True when the bytes fed so far are valid and end on a character boundary (the check at the end of a message). */
bool ws_utf8_complete(const struct ws_utf8 *u);

/* One-shot: true when p[0..len) is complete, valid UTF-8. */
bool ws_utf8_valid(const uint8_t *p, size_t len);

/*
 * Longest prefix of p[0..len) that is at most `max` bytes, valid, and ends on a character boundary (for truncating a
 * close reason). Stops at the first invalid byte.
 */
size_t ws_utf8_prefix(const uint8_t *p, size_t len, size_t max);
