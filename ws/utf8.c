/*
 * ws/utf8.c — incremental UTF-8 validator (RFC 3629 §4 syntax), see ws/utf8.h.
 *
 * The DFA states name what the next byte must be. The restricted second-byte ranges after E0, ED, F0 and F4 are what
 * reject overlong 3/4-byte forms, surrogates and code points above U+10FFFF; C0, C1 and F5..FF can never start a
 * character (overlong 2-byte forms, beyond U+10FFFF). While at a boundary, ASCII is skipped eight bytes at a time.
 */
#include "ws/utf8.h"

#include <string.h>

enum utf8_state {
    U8_ACCEPT = 0, /* at a character boundary */
    U8_REJECT = 1, /* sticky failure */
    U8_TAIL1 = 2,  /* one more 80..BF */
    U8_TAIL2 = 3,  /* two more 80..BF */
    U8_TAIL3 = 4,  /* three more 80..BF */
    U8_E0 = 5,     /* A0..BF then TAIL1 (no overlong 3-byte) */
    U8_ED = 6,     /* 80..9F then TAIL1 (no surrogates) */
    U8_F0 = 7,     /* 90..BF then TAIL2 (no overlong 4-byte) */
    U8_F4 = 8,     /* 80..8F then TAIL2 (≤ U+10FFFF) */
};

static uint32_t lead_byte(uint8_t c)
{
    if (c < 0x80)
        return U8_ACCEPT;
    if (c < 0xC2)
        return U8_REJECT; /* stray continuation, or overlong C0/C1 */
    if (c < 0xE0)
        return U8_TAIL1;
    if (c == 0xE0)
        return U8_E0;
    if (c == 0xED)
        return U8_ED;
    if (c < 0xF0)
        return U8_TAIL2;
    if (c == 0xF0)
        return U8_F0;
    if (c < 0xF4)
        return U8_TAIL3;
    if (c == 0xF4)
        return U8_F4;
    return U8_REJECT;
}

static uint32_t step(uint32_t s, uint8_t c)
{
    switch (s) {
    case U8_ACCEPT:
        return lead_byte(c);
    case U8_TAIL1:
        return c >= 0x80 && c <= 0xBF ? U8_ACCEPT : U8_REJECT;
    case U8_TAIL2:
        return c >= 0x80 && c <= 0xBF ? U8_TAIL1 : U8_REJECT;
    case U8_TAIL3:
        return c >= 0x80 && c <= 0xBF ? U8_TAIL2 : U8_REJECT;
    case U8_E0:
        return c >= 0xA0 && c <= 0xBF ? U8_TAIL1 : U8_REJECT;
    case U8_ED:
        return c >= 0x80 && c <= 0x9F ? U8_TAIL1 : U8_REJECT;
    case U8_F0:
        return c >= 0x90 && c <= 0xBF ? U8_TAIL2 : U8_REJECT;
    case U8_F4:
        return c >= 0x80 && c <= 0x8F ? U8_TAIL2 : U8_REJECT;
    }
    return U8_REJECT;
}

void ws_utf8_init(struct ws_utf8 *u)
{
    u->state = U8_ACCEPT;
}

/* Index of the first non-ASCII byte in p[i..len), skipping whole 8-byte words while they are pure ASCII. */
static size_t skip_ascii(const uint8_t *p, size_t i, size_t len)
{
    while (len - i >= 8) {
        uint64_t w;
        memcpy(&w, p + i, sizeof(w));
        if (w & 0x8080808080808080ull)
            break;
        i += 8;
    }
    while (i < len && p[i] < 0x80)
        i++;
    return i;
}

int ws_utf8_feed(struct ws_utf8 *u, const uint8_t *p, size_t len, size_t *bad_offset)
{
    uint32_t s = u->state;
    if (s == U8_REJECT) {
        if (bad_offset)
            *bad_offset = 0;
        return WS_E_UTF8;
    }
    size_t i = 0;
    while (i < len) {
        if (s == U8_ACCEPT) {
            i = skip_ascii(p, i, len);
            if (i == len)
                break;
        }
        s = step(s, p[i]);
        if (s == U8_REJECT) {
            u->state = s;
            if (bad_offset)
                *bad_offset = i;
            return WS_E_UTF8;
        }
        i++;
    }
    u->state = s;
    return 0;
}

bool ws_utf8_complete(const struct ws_utf8 *u)
{
    return u->state == U8_ACCEPT;
}

bool ws_utf8_valid(const uint8_t *p, size_t len)
{
    struct ws_utf8 u = WS_UTF8_INIT;
    return ws_utf8_feed(&u, p, len, NULL) == 0 && ws_utf8_complete(&u);
}

size_t ws_utf8_prefix(const uint8_t *p, size_t len, size_t max)
{
    uint32_t s = U8_ACCEPT;
    size_t boundary = 0;
    for (size_t i = 0; i < len && i < max; i++) {
        s = step(s, p[i]);
        if (s == U8_REJECT)
            break;
        if (s == U8_ACCEPT)
            boundary = i + 1;
    }
    return boundary;
}
