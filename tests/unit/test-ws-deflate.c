/*
 * tests/unit/test-ws-deflate.c — permessage-deflate: offer negotiation (RFC 7692 §7.1), the RFC's §7.2.3 example
 * payloads, round trips at every window size with and without context takeover, and the inflated-size bound.
 *
 * Every inflate case is fed three ways (whole, one byte at a time, random splits); the test links only ws/ and never
 * includes zlib, so the RFC's literal bytes are the independent reference.
 */
#include "harness.h"
#include "ws/deflate.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------------------------------- */
/* Negotiation                                                                                                      */

struct nego {
    int rc;
    struct ws_deflate_params p;
    char resp[WS_DEFLATE_RESPONSE_MAX];
    size_t resp_len;
};

static struct nego negotiate_cfg(const char *offer, const struct ws_deflate_config *cfg)
{
    struct nego n;
    memset(&n, 0xa5, sizeof n);
    struct guard_slot slot = {0};
    const char *in = offer ? guard_copy(&slot, offer, strlen(offer)) : NULL;
    n.rc = ws_deflate_negotiate(in, offer ? strlen(offer) : 0, cfg, &n.p, n.resp, sizeof n.resp, &n.resp_len);
    guard_free(&slot);
    return n;
}

static struct nego negotiate(const char *offer)
{
    struct ws_deflate_config cfg;
    ws_deflate_config_init(&cfg);
    return negotiate_cfg(offer, &cfg);
}

#define CHECK_ACCEPT(n_, expected)                                                                                                 \
    do {                                                                                                                           \
        CHECK_EQ_INT((n_).rc, 0);                                                                                                  \
        CHECK((n_).p.enabled);                                                                                                     \
        CHECK_EQ_INT((n_).resp_len, strlen(expected));                                                                             \
        CHECK(strcmp((n_).resp, (expected)) == 0);                                                                                 \
        if (strcmp((n_).resp, (expected)) != 0)                                                                                    \
            fprintf(stderr, "  got \"%s\"\n", (n_).resp);                                                                          \
    } while (0)

#define CHECK_DECLINE(n_)                                                                                                          \
    do {                                                                                                                           \
        CHECK_EQ_INT((n_).rc, 0);                                                                                                  \
        CHECK(!(n_).p.enabled);                                                                                                    \
        CHECK_EQ_INT((n_).resp_len, 0);                                                                                            \
        CHECK((n_).resp[0] == '\0');                                                                                               \
    } while (0)

static void test_negotiate_basic(void)
{
    struct nego n = negotiate("permessage-deflate");
    CHECK_ACCEPT(n, "permessage-deflate");
    CHECK(!n.p.server_no_context_takeover && !n.p.client_no_context_takeover);
    CHECK_EQ_INT(n.p.server_max_window_bits, 15);
    CHECK_EQ_INT(n.p.client_max_window_bits, 15);

    n = negotiate("PerMessage-Deflate");
    CHECK_ACCEPT(n, "permessage-deflate");
    n = negotiate("  permessage-deflate  ");
    CHECK_ACCEPT(n, "permessage-deflate");

    CHECK_DECLINE(negotiate(NULL));
    CHECK_DECLINE(negotiate(""));
    CHECK_DECLINE(negotiate("x-webkit-deflate-frame"));
    CHECK_DECLINE(negotiate("permessage-deflatex"));
    CHECK_DECLINE(negotiate(",,, ,"));
}

static void test_negotiate_params(void)
{
    /* Chrome's offer. */
    struct nego n = negotiate("permessage-deflate; client_max_window_bits");
    CHECK_ACCEPT(n, "permessage-deflate; client_max_window_bits=15");
    CHECK_EQ_INT(n.p.client_max_window_bits, 15);

    n = negotiate("permessage-deflate; server_no_context_takeover");
    CHECK_ACCEPT(n, "permessage-deflate; server_no_context_takeover");
    CHECK(n.p.server_no_context_takeover);

    n = negotiate("permessage-deflate; client_no_context_takeover");
    CHECK_ACCEPT(n, "permessage-deflate; client_no_context_takeover");
    CHECK(n.p.client_no_context_takeover);

    n = negotiate("permessage-deflate; server_max_window_bits=10");
    CHECK_ACCEPT(n, "permessage-deflate; server_max_window_bits=10");
    CHECK_EQ_INT(n.p.server_max_window_bits, 10);

    n = negotiate("permessage-deflate; server_max_window_bits=8");
    CHECK_ACCEPT(n, "permessage-deflate; server_max_window_bits=8");
    CHECK_EQ_INT(n.p.server_max_window_bits, 8);

    n = negotiate("permessage-deflate; client_max_window_bits=9");
    CHECK_ACCEPT(n, "permessage-deflate; client_max_window_bits=9");
    CHECK_EQ_INT(n.p.client_max_window_bits, 9);

    n = negotiate("permessage-deflate;client_no_context_takeover;server_no_context_takeover;server_max_window_bits=12;"
                  "client_max_window_bits=11");
    CHECK_ACCEPT(n, "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
                    "server_max_window_bits=12; client_max_window_bits=11");

    /* Quoted values (RFC 7692 §7.1: unquoted before checking) and OWS around '='. */
    n = negotiate("permessage-deflate; client_max_window_bits=\"10\"");
    CHECK_ACCEPT(n, "permessage-deflate; client_max_window_bits=10");
    n = negotiate("permessage-deflate; server_max_window_bits=\"1\\3\"");
    CHECK_ACCEPT(n, "permessage-deflate; server_max_window_bits=13");
    n = negotiate("permessage-deflate ; client_max_window_bits = 12 ");
    CHECK_ACCEPT(n, "permessage-deflate; client_max_window_bits=12");
    n = negotiate("Permessage-Deflate; Client_Max_Window_Bits=12");
    CHECK_ACCEPT(n, "permessage-deflate; client_max_window_bits=12");
}

static void test_negotiate_invalid(void)
{
    static const char *const bad[] = {
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=08",
        "permessage-deflate; server_max_window_bits=+9",
        "permessage-deflate; server_max_window_bits=9a",
        "permessage-deflate; server_max_window_bits=100000000000000000009",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; server_max_window_bits=",
        "permessage-deflate; server_max_window_bits=\"\"",
        "permessage-deflate; client_max_window_bits=0",
        "permessage-deflate; client_max_window_bits=\"7\"",
        "permessage-deflate; client_max_window_bits=\"10",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; client_no_context_takeover=\"\"",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
        "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
        "permessage-deflate; foo",
        "permessage-deflate; foo=bar",
        "permessage-deflate;",
        "permessage-deflate; ;",
        "permessage-deflate client_max_window_bits",
        "permessage-deflate; =10",
        "permessage-deflate; client_max_window_bits==10",
        "permessage-deflate; client_max_window_bits=1 0",
        "\"permessage-deflate\"",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct nego n = negotiate(bad[i]);
        CHECK_DECLINE(n);
        if (n.p.enabled)
            fprintf(stderr, "  accepted: %s\n", bad[i]);
    }
}

static void test_negotiate_multiple(void)
{
    /* Unknown extensions are ignored, including commas and semicolons inside their quoted values. */
    struct nego n = negotiate("x-webkit-deflate-frame, permessage-deflate; client_max_window_bits");
    CHECK_ACCEPT(n, "permessage-deflate; client_max_window_bits=15");
    n = negotiate("foo; a=\"b,c;permessage-deflate\\\"x,\", permessage-deflate; server_no_context_takeover");
    CHECK_ACCEPT(n, "permessage-deflate; server_no_context_takeover");

    /* First acceptable offer wins; bad ones are skipped. */
    n = negotiate("permessage-deflate; server_max_window_bits=10; server_max_window_bits=11, "
                  "permessage-deflate; server_max_window_bits=12, permessage-deflate");
    CHECK_ACCEPT(n, "permessage-deflate; server_max_window_bits=12");
    n = negotiate("permessage-deflate; foo, permessage-deflate; client_max_window_bits=\"9\", permessage-deflate");
    CHECK_ACCEPT(n, "permessage-deflate; client_max_window_bits=9");
    n = negotiate("permessage-deflate; x=\"a,b\", permessage-deflate; client_no_context_takeover");
    CHECK_ACCEPT(n, "permessage-deflate; client_no_context_takeover");
    n = negotiate(", , permessage-deflate; client_max_window_bits=14,");
    CHECK_ACCEPT(n, "permessage-deflate; client_max_window_bits=14");
    CHECK_DECLINE(negotiate("permessage-deflate; a, permessage-deflate; b"));
}

static void test_negotiate_config(void)
{
    struct ws_deflate_config cfg;
    ws_deflate_config_init(&cfg);
    cfg.server_no_context_takeover = true;
    cfg.client_no_context_takeover = true;
    cfg.server_max_window_bits = 10;
    cfg.client_max_window_bits = 9;

    struct nego n = negotiate_cfg("permessage-deflate", &cfg);
    CHECK_ACCEPT(n, "permessage-deflate; server_no_context_takeover; client_no_context_takeover");
    CHECK_EQ_INT(n.p.server_max_window_bits, 10); /* a compressor may always use a smaller window unannounced */
    CHECK_EQ_INT(n.p.client_max_window_bits, 15); /* not offered: cannot be limited (§7.1.2.2) */

    n = negotiate_cfg("permessage-deflate; server_max_window_bits=12; client_max_window_bits", &cfg);
    CHECK_ACCEPT(n, "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
                    "server_max_window_bits=10; client_max_window_bits=9");
    n = negotiate_cfg("permessage-deflate; server_max_window_bits=8; client_max_window_bits=8", &cfg);
    CHECK_ACCEPT(n, "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
                    "server_max_window_bits=8; client_max_window_bits=8");
    CHECK_EQ_INT(n.p.client_max_window_bits, 8);

    cfg.enabled = false;
    CHECK_DECLINE(negotiate_cfg("permessage-deflate", &cfg));

    ws_deflate_config_init(&cfg);
    cfg.server_max_window_bits = 16;
    CHECK_EQ_INT(negotiate_cfg("permessage-deflate", &cfg).rc, -EINVAL);
    ws_deflate_config_init(&cfg);
    cfg.level = 10;
    CHECK_EQ_INT(negotiate_cfg("permessage-deflate", &cfg).rc, -EINVAL);

    /* Response buffer too small. */
    ws_deflate_config_init(&cfg);
    struct ws_deflate_params p;
    char small[20];
    size_t len = 99;
    const char *offer = "permessage-deflate; client_max_window_bits";
    CHECK_EQ_INT(ws_deflate_negotiate(offer, strlen(offer), &cfg, &p, small, sizeof small, &len), -ENOSPC);
    CHECK(!p.enabled);
    CHECK_EQ_INT(len, 0);
    CHECK_EQ_INT(ws_deflate_negotiate(offer, strlen(offer), &cfg, NULL, small, sizeof small, &len), -EINVAL);
}

/* ---------------------------------------------------------------------------------------------------------------- */
/* Inflate                                                                                                          */

static struct ws_deflate *make(int sbits, int cbits, bool snct, bool cnct, size_t max_message)
{
    struct ws_deflate_config cfg;
    ws_deflate_config_init(&cfg);
    cfg.max_message_bytes = max_message;
    struct ws_deflate_params p = {
        .enabled = true,
        .server_no_context_takeover = snct,
        .client_no_context_takeover = cnct,
        .server_max_window_bits = sbits,
        .client_max_window_bits = cbits,
    };
    struct ws_deflate *z = NULL;
    int r = ws_deflate_new(&p, &cfg, &z);
    CHECK_EQ_INT(r, 0);
    if (r != 0)
        abort();
    return z;
}

/*
 * Inflates one message whose payload is in[0..len), cut per `mode` (the cuts stand for frame or read boundaries), fin on
 * the last chunk. Returns the first non-zero result or 0.
 */
static int inflate_msg(struct ws_deflate *z, const uint8_t *in, size_t len, enum split_mode mode, uint64_t *seed,
                       struct ws_buf *out)
{
    const char *reason = NULL;
    size_t off = 0;
    do {
        size_t n = split_next(mode, len - off, seed);
        struct guard_slot slot = {0};
        const uint8_t *chunk = n ? guard_copy(&slot, in + off, n) : in;
        int r = ws_deflate_inflate(z, chunk, n, off + n == len, out, &reason);
        guard_free(&slot);
        if (r != 0) {
            CHECK(reason != NULL);
            return r;
        }
        off += n;
    } while (off < len);
    return 0;
}

struct example {
    const char *name;
    uint8_t bytes[16];
    size_t len;
};

static bool out_is(const struct ws_buf *b, const char *s)
{
    return b->len == strlen(s) && (b->len == 0 || memcmp(b->data, s, b->len) == 0);
}

static void test_rfc_examples(void)
{
    static const struct example hello[] = {
        {"7.2.3.1 fixed huffman", {0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00}, 7},
        {"7.2.3.3 no compression", {0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00}, 11},
        {"7.2.3.4 bfinal", {0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00}, 8},
        {"7.2.3.4 bfinal no trailer", {0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00}, 7},
        {"7.2.3.5 two blocks", {0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00}, 13},
    };
    static const uint8_t second[] = {0xf2, 0x00, 0x11, 0x00, 0x00}; /* 7.2.3.2: "Hello" again, via the window */
    for (int mode = 0; mode < SPLIT_MODES; mode++) {
        uint64_t seed = 42 + (uint64_t)mode;
        for (size_t i = 0; i < sizeof hello / sizeof hello[0]; i++) {
            struct ws_deflate *z = make(15, 15, false, false, 0);
            struct ws_buf out;
            ws_buf_init(&out, 1 << 20);
            CHECK_EQ_INT(inflate_msg(z, hello[i].bytes, hello[i].len, (enum split_mode)mode, &seed, &out), 0);
            CHECK(out_is(&out, "Hello"));
            /* Context takeover: the second message refers back to the first (also across a BFINAL restart). */
            out.len = 0;
            CHECK_EQ_INT(inflate_msg(z, second, sizeof second, (enum split_mode)mode, &seed, &out), 0);
            CHECK(out_is(&out, "Hello"));
            if (!out_is(&out, "Hello"))
                fprintf(stderr, "  %s (%s)\n", hello[i].name, split_mode_str((enum split_mode)mode));
            /* And the first form still works as a third message. */
            out.len = 0;
            CHECK_EQ_INT(inflate_msg(z, hello[i].bytes, hello[i].len, (enum split_mode)mode, &seed, &out), 0);
            CHECK(out_is(&out, "Hello"));
            ws_buf_deinit(&out);
            ws_deflate_free(z);
        }
    }
}

static void test_rfc_fragments_and_empty(void)
{
    struct ws_deflate *z = make(15, 15, false, false, 0);
    struct ws_buf out;
    ws_buf_init(&out, 1 << 20);
    const char *reason = NULL;
    /* 7.2.3.1: "Hello" split over two frames: f2 48 cd | c9 c9 07 00. */
    static const uint8_t f1[] = {0xf2, 0x48, 0xcd}, f2[] = {0xc9, 0xc9, 0x07, 0x00};
    CHECK_EQ_INT(ws_deflate_inflate(z, f1, sizeof f1, false, &out, &reason), 0);
    CHECK_EQ_INT(ws_deflate_inflate(z, f2, sizeof f2, true, &out, &reason), 0);
    CHECK(out_is(&out, "Hello"));
    /* 7.2.3.6: the empty message is a lone 00; an empty payload is accepted as the empty message too. */
    static const uint8_t empty[] = {0x00};
    out.len = 0;
    CHECK_EQ_INT(ws_deflate_inflate(z, empty, 1, true, &out, &reason), 0);
    CHECK_EQ_INT(out.len, 0);
    CHECK_EQ_INT(ws_deflate_inflate(z, NULL, 0, true, &out, &reason), 0);
    CHECK_EQ_INT(out.len, 0);
    /* Empty fragments around a message, and the window still holds "Hello". */
    static const uint8_t second[] = {0xf2, 0x00, 0x11, 0x00, 0x00};
    CHECK_EQ_INT(ws_deflate_inflate(z, NULL, 0, false, &out, &reason), 0);
    CHECK_EQ_INT(ws_deflate_inflate(z, second, sizeof second, false, &out, &reason), 0);
    CHECK_EQ_INT(ws_deflate_inflate(z, NULL, 0, true, &out, &reason), 0);
    CHECK(out_is(&out, "Hello"));
    ws_buf_deinit(&out);
    ws_deflate_free(z);
}

static void test_corrupt(void)
{
    static const uint8_t second[] = {0xf2, 0x00, 0x11, 0x00, 0x00};
    static const uint8_t hello[] = {0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00};
    static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff};
    static const uint8_t truncated[] = {0xf2, 0x48, 0xcd};
    for (int mode = 0; mode < SPLIT_MODES; mode++) {
        uint64_t seed = 7;
        struct ws_buf out;
        ws_buf_init(&out, 1 << 20);
        struct ws_deflate *z = make(15, 15, false, false, 0);
        CHECK_EQ_INT(inflate_msg(z, junk, sizeof junk, (enum split_mode)mode, &seed, &out), WS_E_PAYLOAD);
        ws_deflate_free(z);
        /* A back-reference with nothing in the window. */
        z = make(15, 15, false, false, 0);
        CHECK_EQ_INT(inflate_msg(z, second, sizeof second, (enum split_mode)mode, &seed, &out), WS_E_PAYLOAD);
        ws_deflate_free(z);
        /* Truncated message: does not end on a block boundary. */
        z = make(15, 15, false, false, 0);
        CHECK_EQ_INT(inflate_msg(z, truncated, sizeof truncated, (enum split_mode)mode, &seed, &out), WS_E_PAYLOAD);
        ws_deflate_free(z);
        /* client_no_context_takeover: the window is emptied after each message. */
        z = make(15, 15, false, true, 0);
        out.len = 0;
        CHECK_EQ_INT(inflate_msg(z, hello, sizeof hello, (enum split_mode)mode, &seed, &out), 0);
        CHECK(out_is(&out, "Hello"));
        CHECK_EQ_INT(inflate_msg(z, second, sizeof second, (enum split_mode)mode, &seed, &out), WS_E_PAYLOAD);
        ws_deflate_free(z);
        ws_buf_deinit(&out);
    }
}

/* ---------------------------------------------------------------------------------------------------------------- */
/* Compress and round trips                                                                                         */

static void test_compress_rfc_bytes(void)
{
    struct ws_deflate *z = make(15, 15, false, false, 0);
    struct ws_buf out;
    ws_buf_init(&out, 1 << 20);
    const char *reason = NULL;
    static const uint8_t hello[] = {0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00};
    static const uint8_t second[] = {0xf2, 0x00, 0x11, 0x00, 0x00};
    CHECK_EQ_INT(ws_deflate_compress(z, (const uint8_t *)"Hello", 5, &out, &reason), 0);
    CHECK(out.len == sizeof hello && memcmp(out.data, hello, sizeof hello) == 0);
    out.len = 0;
    CHECK_EQ_INT(ws_deflate_compress(z, (const uint8_t *)"Hello", 5, &out, &reason), 0);
    CHECK(out.len == sizeof second && memcmp(out.data, second, sizeof second) == 0);
    out.len = 0;
    CHECK_EQ_INT(ws_deflate_compress(z, NULL, 0, &out, &reason), 0);
    CHECK(out.len == 1 && out.data[0] == 0x00);
    ws_deflate_free(z);

    /* server_no_context_takeover: every "Hello" is compressed alone. */
    z = make(15, 15, true, false, 0);
    for (int i = 0; i < 3; i++) {
        out.len = 0;
        CHECK_EQ_INT(ws_deflate_compress(z, (const uint8_t *)"Hello", 5, &out, &reason), 0);
        CHECK(out.len == sizeof hello && memcmp(out.data, hello, sizeof hello) == 0);
    }
    ws_deflate_free(z);
    ws_buf_deinit(&out);
}

/* Test data: text-like runs with repeats at distances around 250..300 (to exercise small windows) and random bytes. */
static void fill(uint8_t *buf, size_t len, uint64_t *seed, int kind)
{
    for (size_t i = 0; i < len; i++) {
        size_t r = split_next(SPLIT_RANDOM, 1u << 20, seed);
        if (kind == 0)
            buf[i] = (uint8_t)("STOMP MESSAGE destination:/topic/a\n"[r % 35]);
        else if (kind == 1 && i >= 300 && r % 4 != 0)
            buf[i] = buf[i - 250 - r % 50];
        else
            buf[i] = (uint8_t)r;
    }
}

static void round_trip(int bits, bool nct, enum split_mode mode, uint64_t *seed)
{
    /* The sender is compressing with server bits; the receiver inflates with client bits: both the same here. */
    struct ws_deflate *tx = make(bits, bits, nct, nct, 0);
    struct ws_deflate *rx = make(bits, bits, nct, nct, 0);
    static const size_t sizes[] = {0, 1, 5, 300, 4000, 70000, 5, 0, 1000};
    struct ws_buf wire, out;
    ws_buf_init(&wire, SIZE_MAX);
    ws_buf_init(&out, 1 << 20);
    const char *reason = NULL;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        uint8_t *msg = malloc(sizes[i] + 1);
        fill(msg, sizes[i], seed, (int)(i % 3));
        wire.len = 0;
        out.len = 0;
        CHECK_EQ_INT(ws_deflate_compress(tx, msg, sizes[i], &wire, &reason), 0);
        CHECK_EQ_INT(inflate_msg(rx, wire.data, wire.len, mode, seed, &out), 0);
        CHECK_EQ_INT(out.len, sizes[i]);
        CHECK(out.len == sizes[i] && (sizes[i] == 0 || memcmp(out.data, msg, sizes[i]) == 0));
        if (out.len != sizes[i])
            fprintf(stderr, "  bits %d nct %d mode %s msg %zu\n", bits, nct, split_mode_str(mode), i);
        free(msg);
    }
    ws_buf_deinit(&wire);
    ws_buf_deinit(&out);
    ws_deflate_free(tx);
    ws_deflate_free(rx);
}

static void test_round_trips(void)
{
    uint64_t seed = 1234;
    for (int bits = 8; bits <= 15; bits++)
        for (int nct = 0; nct <= 1; nct++)
            for (int mode = 0; mode < SPLIT_MODES; mode++)
                if (mode != SPLIT_BYTES || bits == 8 || bits == 15) /* byte-at-a-time is slow: two sizes suffice */
                    round_trip(bits, nct, (enum split_mode)mode, &seed);
}

/*
 * Issue 9: connections that reset their compressor after every message share their thread's stream and hold none of
 * their own (an idle one keeps no 64-256 KiB deflate state), each message still inflating on its own; connections with
 * other window bits interleaved on the same shared stream remake it without corrupting either; a connection with
 * context takeover keeps its own stream (its history), made only at its first message.
 */
static void test_shared_compressor(void)
{
    struct ws_deflate_shared *sh = ws_deflate_shared_new();
    CHECK(sh != NULL);
    struct ws_deflate *a = make(15, 15, true, false, 0), *b = make(10, 15, true, false, 0), *c = make(15, 15, false, false, 0);
    struct ws_deflate *ra = make(15, 15, false, false, 0), *rb = make(15, 10, false, false, 0), *rc = make(15, 15, false, false, 0);
    ws_deflate_set_shared(a, sh);
    ws_deflate_set_shared(b, sh);
    ws_deflate_set_shared(c, sh);
    CHECK(!ws_deflate_holds_state(a) && !ws_deflate_holds_state(c));
    struct ws_buf wire, out;
    ws_buf_init(&wire, SIZE_MAX);
    ws_buf_init(&out, 1 << 20);
    uint64_t seed = 7;
    const char *reason = NULL;
    for (int i = 0; i < 6; i++) {
        struct ws_deflate *tx = i % 3 == 0 ? a : i % 3 == 1 ? b : c, *rx = i % 3 == 0 ? ra : i % 3 == 1 ? rb : rc;
        uint8_t msg[3000];
        fill(msg, sizeof msg, &seed, i % 3);
        wire.len = 0;
        out.len = 0;
        CHECK_EQ_INT(ws_deflate_compress(tx, msg, sizeof msg, &wire, &reason), 0);
        CHECK_EQ_INT(inflate_msg(rx, wire.data, wire.len, SPLIT_WHOLE, &seed, &out), 0);
        CHECK(out.len == sizeof msg && memcmp(out.data, msg, sizeof msg) == 0);
    }
    CHECK(!ws_deflate_holds_state(a) && !ws_deflate_holds_state(b)); /* the thread's stream did the work */
    CHECK(ws_deflate_holds_state(c));                                /* its own, for its history */
    ws_buf_deinit(&wire);
    ws_buf_deinit(&out);
    ws_deflate_free(a);
    ws_deflate_free(b);
    ws_deflate_free(c);
    ws_deflate_free(ra);
    ws_deflate_free(rb);
    ws_deflate_free(rc);
    ws_deflate_shared_free(sh);
}

static void test_compress_bounds(void)
{
    struct ws_deflate *z = make(15, 15, false, false, 0);
    CHECK(!ws_deflate_wants(z, 127));
    CHECK(ws_deflate_wants(z, 128));
    uint8_t msg[5000];
    uint64_t seed = 99;
    fill(msg, sizeof msg, &seed, 2); /* random: incompressible */
    struct ws_buf small, wire, out;
    ws_buf_init(&small, 100);
    ws_buf_init(&wire, SIZE_MAX);
    ws_buf_init(&out, SIZE_MAX);
    const char *reason = NULL;
    CHECK_EQ_INT(ws_buf_reserve(&small, 10), 0);
    memset(small.data, 'x', 10);
    small.len = 10;
    CHECK_EQ_INT(ws_deflate_compress(z, msg, sizeof msg, &small, &reason), WS_E_TOO_BIG);
    CHECK_EQ_INT(small.len, 10);
    CHECK(reason != NULL);
    /* The state is still usable after the failure. */
    struct ws_deflate *rx = make(15, 15, false, false, 0);
    for (int i = 0; i < 2; i++) {
        wire.len = out.len = 0;
        CHECK_EQ_INT(ws_deflate_compress(z, msg, sizeof msg, &wire, &reason), 0);
        CHECK_EQ_INT(inflate_msg(rx, wire.data, wire.len, SPLIT_WHOLE, &seed, &out), 0);
        CHECK(out.len == sizeof msg && memcmp(out.data, msg, sizeof msg) == 0);
    }
    ws_buf_deinit(&small);
    ws_buf_deinit(&wire);
    ws_buf_deinit(&out);
    ws_deflate_free(z);
    ws_deflate_free(rx);
}

/* ---------------------------------------------------------------------------------------------------------------- */
/* Decompression bombs                                                                                              */

static void bomb(size_t size, struct ws_buf *wire)
{
    struct ws_deflate *tx = make(15, 15, false, false, 0);
    uint8_t *zeros = calloc(1, size);
    const char *reason = NULL;
    CHECK_EQ_INT(ws_deflate_compress(tx, zeros, size, wire, &reason), 0);
    free(zeros);
    ws_deflate_free(tx);
}

static void test_bomb(void)
{
    const size_t limit = 1 << 20;
    struct ws_buf wire;
    ws_buf_init(&wire, SIZE_MAX);
    bomb(16u << 20, &wire);
    CHECK(wire.len < 64 * 1024); /* 16 MiB of zeros shrink to a few KiB */
    for (int mode = 0; mode < SPLIT_MODES; mode++) {
        if (mode == SPLIT_BYTES)
            continue;
        uint64_t seed = 5;
        /* Bound from max_message_bytes. */
        struct ws_deflate *rx = make(15, 15, false, false, limit);
        struct ws_buf out;
        ws_buf_init(&out, SIZE_MAX);
        CHECK_EQ_INT(inflate_msg(rx, wire.data, wire.len, (enum split_mode)mode, &seed, &out), WS_E_TOO_BIG);
        CHECK(out.len <= limit);
        CHECK(out.cap <= limit);
        ws_buf_deinit(&out);
        ws_deflate_free(rx);
        /* Bound from the buffer's max. */
        rx = make(15, 15, false, false, 0);
        ws_buf_init(&out, limit);
        CHECK_EQ_INT(inflate_msg(rx, wire.data, wire.len, (enum split_mode)mode, &seed, &out), WS_E_TOO_BIG);
        CHECK(out.len <= limit);
        ws_buf_deinit(&out);
        ws_deflate_free(rx);
    }
    /* Exactly at the bound is fine; one byte over is not. */
    for (size_t size = limit - 1; size <= limit + 1; size++) {
        wire.len = 0;
        bomb(size, &wire);
        struct ws_deflate *rx = make(15, 15, false, false, limit);
        struct ws_buf out;
        ws_buf_init(&out, SIZE_MAX);
        uint64_t seed = 1;
        CHECK_EQ_INT(inflate_msg(rx, wire.data, wire.len, SPLIT_RANDOM, &seed, &out), size > limit ? WS_E_TOO_BIG : 0);
        ws_buf_deinit(&out);
        ws_deflate_free(rx);
    }
    /* The byte-at-a-time feed is checked on a smaller bomb (it is slow). */
    wire.len = 0;
    bomb(200000, &wire);
    struct ws_deflate *rx = make(15, 15, false, false, 65536);
    struct ws_buf out;
    ws_buf_init(&out, SIZE_MAX);
    uint64_t seed = 3;
    CHECK_EQ_INT(inflate_msg(rx, wire.data, wire.len, SPLIT_BYTES, &seed, &out), WS_E_TOO_BIG);
    CHECK(out.len <= 65536);
    ws_buf_deinit(&out);
    ws_deflate_free(rx);
    ws_buf_deinit(&wire);
}

/*
 * Issue 7: the decoder's bound before login caps the real inflater too. An unfinished compressed frame (its header
 * announces more than follows) of a 4 MiB zero bomb, against a 64 KiB bound: refused with WS_E_TOO_BIG, and the
 * message buffer never grew past the bound; the same frame under a 16 MiB bound with the ratio check refuses it on
 * the ratio. Fed whole and in random pieces.
 */
static void test_decoder_unauthenticated_bound(void)
{
    struct ws_buf wire;
    ws_buf_init(&wire, SIZE_MAX);
    bomb(4u << 20, &wire);
    CHECK(wire.len < 8192);
    static const uint8_t mask[4] = {1, 2, 3, 4};
    size_t cap = wire.len + 64;
    uint8_t *frame = malloc(cap);
    size_t n = ws_frame_client_encode(frame, cap, WS_OP_BINARY, true, 4, mask, wire.data, wire.len);
    CHECK(n > 0 && n > wire.len);
    /* announce 1000 bytes more than are sent: the length is 16-bit here (wire.len + 1000 < 65536) */
    CHECK_EQ_INT(frame[1] & 0x7f, 126);
    uint16_t announced = (uint16_t)(wire.len + 1000);
    frame[2] = (uint8_t)(announced >> 8);
    frame[3] = (uint8_t)announced;
    struct {
        struct ws_limits lim;
        const char *reason;
    } cases[] = {
        {{.max_message_bytes = 65536}, "inflated message too big"},
        {{.max_message_bytes = 16u << 20, .max_inflate_ratio = 256, .inflate_ratio_min_bytes = 1u << 20},
         "compression ratio too high"},
    };
    for (size_t c = 0; c < 2; c++) {
        for (int mode = 0; mode < SPLIT_MODES; mode++) {
            if (mode == SPLIT_BYTES)
                continue; /* slow; the split logic is the same */
            struct ws_deflate *rx = make(15, 15, false, false, 16u << 20);
            struct ws_decoder d;
            ws_decoder_init(&d, &cases[c].lim);
            ws_decoder_set_inflate(&d, ws_deflate_inflate, rx);
            uint64_t seed = 7;
            size_t pos = 0;
            int r = WS_NEED_MORE;
            const char *reason = NULL;
            while (pos < n && r == WS_NEED_MORE) {
                size_t k = split_next((enum split_mode)mode, n - pos, &seed);
                size_t used = 0;
                struct ws_event ev;
                r = ws_decoder_feed(&d, frame + pos, k, &used, &ev, &reason);
                pos += used;
                CHECK(d.msg.cap <= cases[c].lim.max_message_bytes);
            }
            CHECK_EQ_INT(r, WS_E_TOO_BIG);
            CHECK(reason && strcmp(reason, cases[c].reason) == 0);
            ws_decoder_deinit(&d);
            ws_deflate_free(rx);
        }
    }
    free(frame);
    ws_buf_deinit(&wire);
}

/*
 * Issue 7: each BFINAL block restarts the inflater with a copy of its window; more than 8 stream ends in one message
 * are refused (WS_E_PAYLOAD), 8 are fine, and the count starts again with the next message.
 */
static void test_stream_ends_bounded(void)
{
    /* 03 00: an empty final block with fixed Huffman codes (BFINAL 1, BTYPE 01, end-of-block) */
    uint8_t msg[2 * 9];
    for (size_t i = 0; i < sizeof(msg); i += 2) {
        msg[i] = 0x03;
        msg[i + 1] = 0x00;
    }
    for (int mode = 0; mode < SPLIT_MODES; mode++) {
        uint64_t seed = 11;
        struct ws_deflate *rx = make(15, 15, false, false, 1 << 20);
        struct ws_buf out;
        ws_buf_init(&out, SIZE_MAX);
        CHECK_EQ_INT(inflate_msg(rx, msg, 16, (enum split_mode)mode, &seed, &out), 0);
        CHECK_EQ_INT(out.len, 0);
        CHECK_EQ_INT(inflate_msg(rx, msg, 16, (enum split_mode)mode, &seed, &out), 0);
        CHECK_EQ_INT(inflate_msg(rx, msg, sizeof(msg), (enum split_mode)mode, &seed, &out), WS_E_PAYLOAD);
        ws_buf_deinit(&out);
        ws_deflate_free(rx);
    }
}

static void test_new_args(void)
{
    struct ws_deflate_config cfg;
    ws_deflate_config_init(&cfg);
    struct ws_deflate_params p = {.enabled = false, .server_max_window_bits = 15, .client_max_window_bits = 15};
    struct ws_deflate *z = NULL;
    CHECK_EQ_INT(ws_deflate_new(&p, &cfg, &z), -EINVAL);
    p.enabled = true;
    p.client_max_window_bits = 7;
    CHECK_EQ_INT(ws_deflate_new(&p, &cfg, &z), -EINVAL);
    p.client_max_window_bits = 8;
    CHECK_EQ_INT(ws_deflate_new(&p, &cfg, &z), 0);
    CHECK(ws_deflate_params(z)->client_max_window_bits == 8);
    ws_deflate_free(z);
    ws_deflate_free(NULL);
}

int main(void)
{
    RUN(test_negotiate_basic);
    RUN(test_negotiate_params);
    RUN(test_negotiate_invalid);
    RUN(test_negotiate_multiple);
    RUN(test_negotiate_config);
    RUN(test_rfc_examples);
    RUN(test_rfc_fragments_and_empty);
    RUN(test_corrupt);
    RUN(test_compress_rfc_bytes);
    RUN(test_round_trips);
    RUN(test_compress_bounds);
    RUN(test_shared_compressor);
    RUN(test_bomb);
    RUN(test_decoder_unauthenticated_bound);
    RUN(test_stream_ends_bounded);
    RUN(test_new_args);
    return harness_done();
}
