/*
 * tests/fuzz/fuzz-stomp-frame.c — fuzz target for the STOMP frame parser and serialiser (stomp/frame.h).
 *
 * The input is a raw STOMP byte stream (corpus files are readable frames). It is parsed the way bridge/ does it, with a
 * pending buffer that grows and is re-fed from the frame start, each feed getting an exact-size heap copy so ASan sees
 * any read past `len`. Properties checked (a violation traps):
 *  1. split invariance: feeding the stream whole and at data-derived random splits gives the same sequence of frames,
 *     heart-beat bytes and errors (hashed);
 *  2. bookkeeping: consumed counts are within the buffer, a frame's body is followed by its NUL, heart-beats consume;
 *  3. round trip: every parsed frame is serialised again for the same version (which must succeed: whatever the parser
 *     produced is representable) and parsing that output yields the same command, headers (content-length aside: the
 *     writer replaces it) and body.
 * Runs: versions 1.0, 1.1, 1.2 with default limits; the bridge flow (1.0 until CONNECT, then 1.2); and tight limits.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "stomp/frame.h"

#define MAX_HDRS 64

#define REQUIRE(c)                                                                                                                 \
    do {                                                                                                                           \
        if (!(c))                                                                                                                  \
            __builtin_trap();                                                                                                      \
    } while (0)

struct cfg {
    struct stomp_limits limits;
    size_t headers_cap;
    enum stomp_version v0, v1; /* v1 applies after a CONNECT/STOMP/CONNECTED frame */
    bool split;
    bool roundtrip;
    uint64_t seed;
};

static void mix(uint64_t *h, const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++)
        *h = (*h ^ s[i]) * 0x100000001b3ull;
}

static void mix_u64(uint64_t *h, uint64_t v)
{
    mix(h, &v, sizeof(v));
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

static bool is_content_length(const struct stomp_header *h)
{
    return h->name_len == 14 && memcmp(h->name, "content-length", 14) == 0;
}

/* Serialise f, parse the result, compare. */
static void roundtrip(const struct stomp_frame *f, enum stomp_version v, unsigned flags)
{
    size_t need = 0, len = 0, used = 0;
    const char *reason = NULL;
    REQUIRE(stomp_frame_write(f, v, flags, NULL, 0, &need, &reason) == STOMP_E_NOSPACE);
    char *out = malloc(need);
    REQUIRE(out != NULL);
    REQUIRE(stomp_frame_write(f, v, flags, out, need, &len, &reason) == 0 && len == need);

    struct stomp_header hdrs[MAX_HDRS + 1];
    struct stomp_parser p;
    struct stomp_frame g;
    struct stomp_limits big = {SIZE_MAX, MAX_HDRS + 1, SIZE_MAX, SIZE_MAX};
    stomp_parser_init(&p, &big, hdrs, MAX_HDRS + 1);
    stomp_parser_set_version(&p, v);
    REQUIRE(stomp_parser_feed(&p, out, len, &used, &g, &reason) == 0);
    REQUIRE(used == len - ((flags & STOMP_WRITE_TRAILING_LF) ? 1 : 0));
    REQUIRE(g.cmd == f->cmd && g.body_len == f->body_len && memcmp(g.body, f->body, f->body_len) == 0);
    size_t k = 0;
    for (size_t i = 0; i < f->n_headers; i++) {
        const struct stomp_header *a = &f->headers[i];
        if (is_content_length(a))
            continue;
        REQUIRE(k < g.n_headers);
        const struct stomp_header *b = &g.headers[k++];
        REQUIRE(a->name_len == b->name_len && memcmp(a->name, b->name, a->name_len) == 0);
        REQUIRE(a->value_len == b->value_len && memcmp(a->value, b->value, a->value_len) == 0);
    }
    REQUIRE(g.n_headers == k + (f->body_len > 0));
    free(out);
}

static void hash_frame(uint64_t *h, const struct stomp_frame *f)
{
    mix_u64(h, (uint64_t)f->cmd);
    mix_u64(h, f->n_headers);
    for (size_t i = 0; i < f->n_headers; i++) {
        mix_u64(h, f->headers[i].name_len);
        mix(h, f->headers[i].name, f->headers[i].name_len);
        mix_u64(h, f->headers[i].value_len);
        mix(h, f->headers[i].value, f->headers[i].value_len);
    }
    mix_u64(h, f->body_len);
    mix(h, f->body, f->body_len);
}

struct stream {
    struct stomp_parser p;
    struct stomp_header hdrs[MAX_HDRS];
    char *pending;
    size_t plen;
    size_t hb;
    uint64_t hash;
};

/* One feed of the pending bytes. Returns the parser result. */
static int feed_once(struct stream *s, const struct cfg *c)
{
    char *buf = malloc(s->plen ? s->plen : 1);
    size_t used = 0;
    struct stomp_frame f;
    const char *reason = NULL;
    REQUIRE(buf != NULL);
    if (s->plen)
        memcpy(buf, s->pending, s->plen);
    int r = stomp_parser_feed(&s->p, buf, s->plen, &used, &f, &reason);
    if (r == STOMP_HEARTBEAT) {
        REQUIRE(used > 0 && used <= s->plen);
        s->hb += used;
    } else if (r != STOMP_NEED_MORE && s->hb) {
        mix_u64(&s->hash, 0x4842 + s->hb);
        s->hb = 0;
    }
    if (r == 0) {
        REQUIRE(used > 0 && used <= s->plen && f.body + f.body_len < buf + s->plen && f.body[f.body_len] == '\0');
        hash_frame(&s->hash, &f);
        if (c->roundtrip)
            roundtrip(&f, s->p.version, (unsigned)(s->hash & 1));
        if (stomp_cmd_is_connect(f.cmd))
            stomp_parser_set_version(&s->p, c->v1);
    } else if (r == STOMP_NEED_MORE) {
        REQUIRE(used == 0);
    } else if (r != STOMP_HEARTBEAT) {
        REQUIRE(reason != NULL && used == 0);
        mix_u64(&s->hash, 0xE000 + (uint64_t)r);
    }
    free(buf);
    if (r == 0 || r == STOMP_HEARTBEAT) {
        memmove(s->pending, s->pending + used, s->plen - used);
        s->plen -= used;
    }
    return r;
}

static uint64_t run(const uint8_t *data, size_t size, const struct cfg *c)
{
    struct stream *s = calloc(1, sizeof(*s));
    uint64_t seed = c->seed;
    size_t off = 0;
    int r = STOMP_NEED_MORE;
    REQUIRE(s != NULL);
    s->pending = malloc(size ? size : 1);
    s->hash = 0xcbf29ce484222325ull;
    stomp_parser_init(&s->p, &c->limits, s->hdrs, c->headers_cap);
    stomp_parser_set_version(&s->p, c->v0);
    while (off < size && (r == STOMP_NEED_MORE || r == 0 || r == STOMP_HEARTBEAT)) {
        size_t rest = size - off, n = rest;
        if (c->split) {
            uint64_t x = xorshift(&seed);
            n = 1 + (size_t)((x >> 8) % ((x & 1) ? (rest < 8 ? rest : 8) : rest));
        }
        memcpy(s->pending + s->plen, data + off, n);
        s->plen += n;
        off += n;
        do
            r = feed_once(s, c);
        while (r == 0 || r == STOMP_HEARTBEAT);
    }
    if (s->hb)
        mix_u64(&s->hash, 0x4842 + s->hb);
    mix_u64(&s->hash, r == STOMP_NEED_MORE ? s->plen : 0);
    uint64_t h = s->hash;
    free(s->pending);
    free(s);
    return h;
}

static void check_split_invariance(const uint8_t *data, size_t size, struct cfg *c)
{
    c->split = false;
    c->roundtrip = true;
    uint64_t whole = run(data, size, c);
    c->split = true;
    c->roundtrip = false;
    REQUIRE(run(data, size, c) == whole);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint64_t h = 0xcbf29ce484222325ull;
    mix(&h, data, size);
    struct cfg c = {.headers_cap = MAX_HDRS, .seed = h | 1};
    for (int v = STOMP_V1_0; v <= STOMP_V1_2; v++) {
        c.v0 = c.v1 = (enum stomp_version)v;
        check_split_invariance(data, size, &c);
    }
    c.v0 = STOMP_V1_0;
    c.v1 = STOMP_V1_2;
    check_split_invariance(data, size, &c);
    /* Tight limits, chosen from the data so the boundaries get hit. */
    c.limits.max_frame_bytes = 8 + (h >> 8) % 120;
    c.limits.max_headers = 1 + (h >> 16) % 6;
    c.limits.max_header_line_bytes = 1 + (h >> 24) % 40;
    c.limits.max_body_bytes = 1 + (h >> 32) % 64;
    c.headers_cap = 1 + (h >> 40) % 8;
    c.v0 = c.v1 = (enum stomp_version)((h >> 48) % 3);
    check_split_invariance(data, size, &c);
    return 0;
}
