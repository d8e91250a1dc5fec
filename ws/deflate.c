/*
 * ws/deflate.c — permessage-deflate (RFC 7692): Sec-WebSocket-Extensions offer parsing and negotiation, and the two raw
 * DEFLATE streams of a connection (client → server inflate, server → client deflate).
 *
 * The negotiation parser walks the header once with a cursor (RFC 6455 §9.1 grammar); an offer it cannot use is skipped
 * up to the next top-level comma, quoted-strings included, so one bad offer never hides a later good one.
 *
 * Inflate follows RFC 7692 §7.2.2: the payloads of a message are inflated as they arrive and the 00 00 FF FF tail is
 * fed at the end. Output goes straight into the caller's bounded ws_buf; once the bound is reached a one-byte probe
 * tells whether zlib still has output, which is the decompression-bomb check (DESIGN.md invariant 4) without inflating a
 * byte more than allowed. zlib ends its stream at a BFINAL block, but permessage-deflate does not (§7.2.3.4): the
 * inflater is restarted primed with its window so back-references into earlier data keep working.
 *
 * zlib cannot deflate a raw stream with an 8-bit window. When the client asks for server_max_window_bits=8 we still
 * answer 8 and compress with 9: zlib never emits a distance beyond w_size - MIN_LOOKAHEAD (512 - 262 = 250 bytes),
 * which fits the 256-byte window the client provisioned.
 */
#include "ws/deflate.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

static const uint8_t deflate_tail[4] = {0x00, 0x00, 0xff, 0xff};

/* Largest chunk handed to zlib at once (its counters are uInt). */
#define ZCHUNK_MAX ((size_t)UINT_MAX)
/* Output growth step when the caller's buffer is full. */
#define GROW_STEP 16384
/*
 * Most DEFLATE streams ended (BFINAL) inside one message. Each end restarts the inflater with a copy of its window
 * (up to 32 KiB out and back in) for 2 bytes of input: without a bound, a message of empty final blocks costs a
 * thousand times its size in CPU (issue 7). Encoders end a message's stream once at most (Z_FINISH instead of a sync
 * flush); a message with more is refused as invalid.
 */
#define MAX_STREAM_ENDS 8

struct ws_deflate {
    struct ws_deflate_params params;
    int level;
    int mem_level;
    size_t threshold;
    size_t max_message;

    z_stream *inf;        /* NULL until the first compressed message received */
    bool in_message;      /* a message is being inflated (at least one call since the last fin) */
    bool after_final;     /* zlib's stream just ended on a BFINAL block and no byte followed it yet */
    size_t msg_start_len; /* out->len when the current message started */
    size_t msg_in;        /* compressed bytes of the current message */
    unsigned msg_ends;    /* BFINAL stream ends in the current message (MAX_STREAM_ENDS) */

    z_stream *def;                /* NULL until the first message compressed without the shared stream */
    struct ws_deflate_shared *sh; /* the thread's compressor, used when we reset after every message */
};

/* One compressor for every connection of a thread that resets it after each message (ws_deflate_set_shared()). */
struct ws_deflate_shared {
    z_stream *def; /* NULL until first used */
    int bits, level, mem_level;
};

/* ---------------------------------------------------------------------------------------------------------------- */
/* Configuration                                                                                                    */

void ws_deflate_config_init(struct ws_deflate_config *cfg)
{
    *cfg = (struct ws_deflate_config){
        .enabled = true,
        .server_no_context_takeover = false,
        .client_no_context_takeover = false,
        .server_max_window_bits = 15,
        .client_max_window_bits = 15,
        .level = 6,
        .mem_level = 8,
        .threshold_bytes = 128,
        .max_message_bytes = 16u << 20,
    };
}

static bool window_bits_ok(int bits)
{
    return bits >= 8 && bits <= 15;
}

static bool config_ok(const struct ws_deflate_config *cfg)
{
    return window_bits_ok(cfg->server_max_window_bits) && window_bits_ok(cfg->client_max_window_bits) && cfg->level >= -1 &&
           cfg->level <= 9 && cfg->mem_level >= 1 && cfg->mem_level <= 9;
}

/* ---------------------------------------------------------------------------------------------------------------- */
/* Offer parsing (RFC 6455 §9.1, RFC 7692 §7.1)                                                                     */

struct cursor {
    const char *p;
    const char *end;
};

/* One parsed permessage-deflate offer. Window bits: 0 = absent; client_bits -1 = present without a value. */
struct offer {
    bool server_nct;
    bool client_nct;
    int server_bits;
    int client_bits;
    unsigned seen; /* bit per parameter, to reject duplicates */
};

/* A parameter value, unquoted into a short buffer; values longer than it are never valid for our parameters. */
struct param_value {
    bool present;
    bool too_long;
    size_t len;
    char buf[8];
};

static bool is_tchar(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return true;
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')
        return true;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static void skip_ows(struct cursor *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t'))
        c->p++;
}

static size_t take_token(struct cursor *c, const char **tok)
{
    *tok = c->p;
    while (c->p < c->end && is_tchar((unsigned char)*c->p))
        c->p++;
    return (size_t)(c->p - *tok);
}

static void value_put(struct param_value *v, char ch)
{
    if (v->len < sizeof v->buf)
        v->buf[v->len] = ch;
    else
        v->too_long = true;
    v->len++;
}

/* quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE (RFC 7230 §3.2.6). Returns false when malformed. */
static bool take_quoted(struct cursor *c, struct param_value *v)
{
    c->p++; /* opening quote */
    while (c->p < c->end) {
        unsigned char ch = (unsigned char)*c->p++;
        if (ch == '"')
            return true;
        if (ch == '\\') {
            if (c->p == c->end)
                return false;
            ch = (unsigned char)*c->p++;
        }
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
            return false;
        value_put(v, (char)ch);
    }
    return false;
}

static bool take_value(struct cursor *c, struct param_value *v)
{
    v->present = true;
    if (c->p < c->end && *c->p == '"')
        return take_quoted(c, v) && v->len > 0;
    const char *tok;
    size_t n = take_token(c, &tok);
    for (size_t i = 0; i < n; i++)
        value_put(v, tok[i]);
    return n > 0;
}

/* Skips the rest of the current offer, through the next comma outside a quoted-string. */
static void skip_offer(struct cursor *c)
{
    bool quoted = false;
    while (c->p < c->end) {
        char ch = *c->p++;
        if (quoted && ch == '\\' && c->p < c->end)
            c->p++;
        else if (ch == '"')
            quoted = !quoted;
        else if (!quoted && ch == ',')
            return;
    }
}

static bool token_is(const char *tok, size_t n, const char *name)
{
    return strlen(name) == n && strncasecmp(tok, name, n) == 0;
}

/* "8".."15", decimal, no leading zero (RFC 7692 §7.1.2). Returns 0 when invalid. */
static int parse_bits(const struct param_value *v)
{
    if (v->too_long || v->len == 0 || v->len > 2 || v->buf[0] == '0')
        return 0;
    int n = 0;
    for (size_t i = 0; i < v->len; i++) {
        if (v->buf[i] < '0' || v->buf[i] > '9')
            return 0;
        n = n * 10 + (v->buf[i] - '0');
    }
    return window_bits_ok(n) ? n : 0;
}

/* Applies one parameter to the offer. Returns false when the offer must be skipped. */
static bool apply_param(struct offer *o, const char *name, size_t n, const struct param_value *v)
{
    static const char *const names[] = {"server_no_context_takeover", "client_no_context_takeover", "server_max_window_bits",
                                        "client_max_window_bits"};
    size_t i = 0;
    while (i < 4 && !token_is(name, n, names[i]))
        i++;
    if (i == 4 || (o->seen & (1u << i)))
        return false; /* unknown or duplicate (§7.1: decline) */
    o->seen |= 1u << i;
    switch (i) {
    case 0:
        o->server_nct = true;
        return !v->present;
    case 1:
        o->client_nct = true;
        return !v->present;
    case 2:
        o->server_bits = v->present ? parse_bits(v) : 0;
        return o->server_bits != 0;
    default:
        o->client_bits = v->present ? parse_bits(v) : -1;
        return o->client_bits != 0;
    }
}

/*
 * Parses the parameters of a permessage-deflate offer, the cursor being just after the extension token. Stops before
 * the comma that ends the offer (or at the end). Returns false on a syntax error or an unacceptable parameter.
 */
static bool parse_params(struct cursor *c, struct offer *o)
{
    for (;;) {
        skip_ows(c);
        if (c->p == c->end || *c->p == ',')
            return true;
        if (*c->p != ';')
            return false;
        c->p++;
        skip_ows(c);
        const char *name;
        size_t n = take_token(c, &name);
        if (n == 0)
            return false;
        skip_ows(c);
        struct param_value v = {0};
        if (c->p < c->end && *c->p == '=') {
            c->p++;
            skip_ows(c);
            if (!take_value(c, &v))
                return false;
        }
        if (!apply_param(o, name, n, &v))
            return false;
    }
}

/* ---------------------------------------------------------------------------------------------------------------- */
/* Negotiation                                                                                                      */

static int min_int(int a, int b)
{
    return a < b ? a : b;
}

/* Decides the agreed parameters for an acceptable offer and writes the response value. */
static int accept_offer(const struct offer *o, const struct ws_deflate_config *cfg, struct ws_deflate_params *p, char *response,
                        size_t cap, size_t *response_len)
{
    p->enabled = true;
    p->server_no_context_takeover = o->server_nct || cfg->server_no_context_takeover;
    p->client_no_context_takeover = o->client_nct || cfg->client_no_context_takeover;
    p->server_max_window_bits = min_int(o->server_bits ? o->server_bits : 15, cfg->server_max_window_bits);
    /* §7.1.2.2: client_max_window_bits may only be answered when offered; otherwise the client may use 15. */
    p->client_max_window_bits =
        o->client_bits ? min_int(o->client_bits > 0 ? o->client_bits : 15, cfg->client_max_window_bits) : 15;

    char sbits[32] = "", cbits[32] = "";
    /* §7.1.2.1: an offered server_max_window_bits must be answered; an unoffered one need not be announced. */
    if (o->server_bits)
        snprintf(sbits, sizeof sbits, "; server_max_window_bits=%d", p->server_max_window_bits);
    if (o->client_bits)
        snprintf(cbits, sizeof cbits, "; client_max_window_bits=%d", p->client_max_window_bits);
    int n =
        snprintf(response, cap, "%s%s%s%s%s", WS_DEFLATE_TOKEN, p->server_no_context_takeover ? "; server_no_context_takeover" : "",
                 p->client_no_context_takeover ? "; client_no_context_takeover" : "", sbits, cbits);
    if (n < 0 || (size_t)n >= cap) {
        response[0] = '\0';
        *p = (struct ws_deflate_params){0};
        return -ENOSPC;
    }
    *response_len = (size_t)n;
    return 0;
}

int ws_deflate_negotiate(const char *offer_header, size_t len, const struct ws_deflate_config *cfg, struct ws_deflate_params *out,
                         char *response, size_t cap, size_t *response_len)
{
    if (!out || !response || !response_len || !cfg)
        return -EINVAL;
    *out = (struct ws_deflate_params){0};
    *response_len = 0;
    if (cap > 0)
        response[0] = '\0';
    if (!config_ok(cfg))
        return -EINVAL;
    if (cap == 0)
        return -ENOSPC;
    if (!cfg->enabled || !offer_header)
        return 0;

    struct cursor c = {offer_header, offer_header + len};
    while (c.p < c.end) {
        skip_ows(&c);
        if (c.p < c.end && *c.p == ',') { /* empty list element (RFC 7230 §7) */
            c.p++;
            continue;
        }
        const char *tok;
        size_t n = take_token(&c, &tok);
        struct offer o = {0};
        if (n > 0 && token_is(tok, n, WS_DEFLATE_TOKEN) && parse_params(&c, &o))
            return accept_offer(&o, cfg, out, response, cap, response_len);
        skip_offer(&c);
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------------------------- */
/* Lifecycle                                                                                                        */

int ws_deflate_new(const struct ws_deflate_params *params, const struct ws_deflate_config *cfg, struct ws_deflate **out)
{
    if (!params || !cfg || !out || !params->enabled || !config_ok(cfg) || !window_bits_ok(params->server_max_window_bits) ||
        !window_bits_ok(params->client_max_window_bits))
        return -EINVAL;
    struct ws_deflate *z = calloc(1, sizeof *z);
    if (!z)
        return -ENOMEM;
    z->params = *params;
    z->level = cfg->level;
    z->mem_level = cfg->mem_level;
    z->threshold = cfg->threshold_bytes;
    z->max_message = cfg->max_message_bytes;
    *out = z;
    return 0;
}

void ws_deflate_free(struct ws_deflate *z)
{
    if (!z)
        return;
    if (z->inf) {
        inflateEnd(z->inf);
        free(z->inf);
    }
    if (z->def) {
        deflateEnd(z->def);
        free(z->def);
    }
    free(z);
}

struct ws_deflate_shared *ws_deflate_shared_new(void)
{
    return calloc(1, sizeof(struct ws_deflate_shared));
}

void ws_deflate_shared_free(struct ws_deflate_shared *sh)
{
    if (!sh)
        return;
    if (sh->def) {
        deflateEnd(sh->def);
        free(sh->def);
    }
    free(sh);
}

void ws_deflate_set_shared(struct ws_deflate *z, struct ws_deflate_shared *sh)
{
    z->sh = sh;
}

bool ws_deflate_holds_state(const struct ws_deflate *z)
{
    return z->inf || z->def;
}

const struct ws_deflate_params *ws_deflate_params(const struct ws_deflate *z)
{
    return &z->params;
}

bool ws_deflate_wants(const struct ws_deflate *z, size_t len)
{
    return len >= z->threshold;
}

static int zlib_errno(int zr)
{
    return zr == Z_MEM_ERROR ? -ENOMEM : -EIO;
}

static int set_reason(const char **reason, const char *text, int r)
{
    if (reason)
        *reason = text;
    return r;
}

/* ---------------------------------------------------------------------------------------------------------------- */
/* Inflate (RFC 7692 §7.2.2)                                                                                        */

static int inflater_start(struct ws_deflate *z)
{
    if (z->inf)
        return 0;
    z_stream *st = calloc(1, sizeof *st);
    if (!st)
        return -ENOMEM;
    int zr = inflateInit2(st, -z->params.client_max_window_bits);
    if (zr != Z_OK) {
        free(st);
        return zlib_errno(zr);
    }
    z->inf = st;
    return 0;
}

/* zlib ended its stream on a BFINAL block (§7.2.3.4): start a new raw stream that still sees the old window. */
static int inflater_restart(struct ws_deflate *z)
{
    uInt n = 1u << 15;
    Bytef *dict = malloc(n);
    if (!dict)
        return -ENOMEM;
    int zr = inflateGetDictionary(z->inf, dict, &n);
    if (zr == Z_OK)
        zr = inflateReset(z->inf);
    if (zr == Z_OK && n > 0)
        zr = inflateSetDictionary(z->inf, dict, n);
    free(dict);
    return zr == Z_OK ? 0 : zlib_errno(zr);
}

/* Bound on out->len for the current message: the buffer's max and max_message_bytes counted from the message start. */
static size_t inflate_limit(const struct ws_deflate *z, const struct ws_buf *out)
{
    size_t limit = out->max;
    if (z->max_message && z->max_message < limit - z->msg_start_len)
        limit = z->msg_start_len + z->max_message;
    return limit;
}

/*
 * Points zlib's output at free space of `out` below the limit, growing it if needed, or at a one-byte probe when the
 * limit is reached. Returns 0 or -ENOMEM.
 */
static int inflate_output(struct ws_deflate *z, struct ws_buf *out, uint8_t *probe)
{
    size_t limit = inflate_limit(z, out);
    if (out->len >= limit) {
        z->inf->next_out = probe;
        z->inf->avail_out = 1;
        return 0;
    }
    size_t room = limit - out->len;
    if (out->cap <= out->len) {
        int r = ws_buf_reserve(out, room < GROW_STEP ? room : GROW_STEP);
        if (r != 0)
            return r < 0 ? r : -EIO; /* cannot be WS_E_TOO_BIG: room is below max */
    }
    if (out->cap - out->len < room)
        room = out->cap - out->len;
    z->inf->next_out = out->data + out->len;
    z->inf->avail_out = (uInt)(room < ZCHUNK_MAX ? room : ZCHUNK_MAX);
    return 0;
}

/*
 * Runs the inflater over in[0..len) (len ≤ ZCHUNK_MAX), appending to out. `tail` marks the 00 00 FF FF tail: a stream
 * end inside it completes the message and the rest of the tail is dropped.
 */
static int inflate_chunk(struct ws_deflate *z, const uint8_t *in, size_t len, bool tail, struct ws_buf *out, const char **reason)
{
    z->inf->next_in = (Bytef *)in;
    z->inf->avail_in = (uInt)len;
    for (;;) {
        uint8_t probe;
        int r = inflate_output(z, out, &probe);
        if (r != 0)
            return set_reason(reason, "out of memory inflating message", r);
        bool probing = z->inf->next_out == &probe;
        uInt avail_in = z->inf->avail_in, avail_out = z->inf->avail_out;
        int zr = inflate(z->inf, Z_SYNC_FLUSH);
        size_t produced = avail_out - z->inf->avail_out;
        if (probing && produced > 0)
            return set_reason(reason, "inflated message too big", WS_E_TOO_BIG);
        if (!probing)
            out->len += produced;
        if (avail_in != z->inf->avail_in)
            z->after_final = false;
        if (zr == Z_STREAM_END) {
            if (++z->msg_ends > MAX_STREAM_ENDS)
                return set_reason(reason, "too many compressed stream ends in one message", WS_E_PAYLOAD);
            r = inflater_restart(z);
            if (r != 0)
                return set_reason(reason, "out of memory inflating message", r);
            z->after_final = true;
            if (tail)
                return 0;
            continue;
        }
        if (zr == Z_DATA_ERROR || zr == Z_NEED_DICT)
            return set_reason(reason, "invalid compressed data", WS_E_PAYLOAD);
        if (zr != Z_OK && zr != Z_BUF_ERROR)
            return set_reason(reason, "inflate failed", zlib_errno(zr));
        if (zr == Z_BUF_ERROR && produced == 0 && avail_in == z->inf->avail_in && avail_in > 0)
            return set_reason(reason, "inflate made no progress", -EIO); /* cannot happen: output space was given */
        if (z->inf->avail_in == 0 && (z->inf->avail_out > 0 || zr == Z_BUF_ERROR))
            return 0; /* input used up and zlib had room left: nothing pending */
    }
}

static int inflate_feed(struct ws_deflate *z, const uint8_t *in, size_t len, bool tail, struct ws_buf *out, const char **reason)
{
    do {
        size_t n = len < ZCHUNK_MAX ? len : ZCHUNK_MAX;
        int r = inflate_chunk(z, in, n, tail, out, reason);
        if (r != 0)
            return r;
        in += n;
        len -= n;
    } while (len > 0);
    return 0;
}

/* End of message: feed the tail, check the stream sits on a block boundary, apply client_no_context_takeover. */
static int inflate_finish(struct ws_deflate *z, struct ws_buf *out, const char **reason)
{
    z->in_message = false;
    if (z->msg_in == 0)
        return 0; /* empty payload: the empty message, nothing for zlib */
    if (!z->after_final) {
        int r = inflate_feed(z, deflate_tail, sizeof deflate_tail, true, out, reason);
        if (r != 0)
            return r;
        /* data_type 128: zlib stopped right after a block (the tail's empty stored block); otherwise truncated. */
        if (!z->after_final && !(z->inf->data_type & 128))
            return set_reason(reason, "compressed message does not end on a block boundary", WS_E_PAYLOAD);
    }
    z->after_final = false;
    if (z->params.client_no_context_takeover) {
        int zr = inflateReset(z->inf);
        if (zr != Z_OK)
            return set_reason(reason, "inflate reset failed", zlib_errno(zr));
    }
    return 0;
}

int ws_deflate_inflate(struct ws_deflate *z, const uint8_t *in, size_t len, bool fin, struct ws_buf *out, const char **reason)
{
    int r = inflater_start(z);
    if (r != 0)
        return set_reason(reason, "out of memory creating inflater", r);
    if (!z->in_message) {
        z->in_message = true;
        z->msg_start_len = out->len;
        z->msg_in = 0;
        z->msg_ends = 0;
    }
    if (len > 0) {
        z->msg_in += len;
        r = inflate_feed(z, in, len, false, out, reason);
        if (r != 0)
            return r;
    }
    return fin ? inflate_finish(z, out, reason) : 0;
}

/* ---------------------------------------------------------------------------------------------------------------- */
/* Deflate (RFC 7692 §7.2.1)                                                                                        */

/* A raw deflate stream for `bits` (8 → 9: see the file comment), `level`, `mem_level`; NULL on failure (*r says why). */
static z_stream *stream_new(int bits, int level, int mem_level, int *r)
{
    z_stream *st = calloc(1, sizeof *st);
    if (!st) {
        *r = -ENOMEM;
        return NULL;
    }
    int zr = deflateInit2(st, level, Z_DEFLATED, -(bits < 9 ? 9 : bits), mem_level, Z_DEFAULT_STRATEGY);
    if (zr != Z_OK) {
        free(st);
        *r = zlib_errno(zr);
        return NULL;
    }
    return st;
}

static void stream_free(z_stream *st)
{
    if (st) {
        deflateEnd(st);
        free(st);
    }
}

/*
 * The stream to compress the next message with: the thread's shared one when this connection resets its compressor after
 * every message (it then needs no history of its own), else its own. The shared one is remade when a connection with
 * other parameters (a smaller negotiated window) uses it.
 */
static z_stream *deflater_get(struct ws_deflate *z, int *r)
{
    *r = 0;
    struct ws_deflate_shared *sh = z->params.server_no_context_takeover ? z->sh : NULL;
    int bits = z->params.server_max_window_bits;
    if (!sh) {
        if (!z->def)
            z->def = stream_new(bits, z->level, z->mem_level, r);
        return z->def;
    }
    if (sh->def && (sh->bits != bits || sh->level != z->level || sh->mem_level != z->mem_level)) {
        stream_free(sh->def);
        sh->def = NULL;
    }
    if (!sh->def) {
        sh->def = stream_new(bits, z->level, z->mem_level, r);
        sh->bits = bits;
        sh->level = z->level;
        sh->mem_level = z->mem_level;
    }
    return sh->def;
}

/* Makes some free space in out: a step, or whatever is left below max. Returns 0, WS_E_TOO_BIG, -ENOMEM. */
static int grow_some(struct ws_buf *out)
{
    if (out->cap > out->len)
        return 0;
    int r = ws_buf_reserve(out, GROW_STEP);
    if (r == WS_E_TOO_BIG && out->max > out->len)
        r = ws_buf_reserve(out, out->max - out->len);
    return r;
}

/* Deflates in[0..len) with `flush` until zlib has nothing more to give for it. */
static int deflate_run(z_stream *st, const uint8_t *in, size_t len, int flush, struct ws_buf *out)
{
    st->next_in = (Bytef *)in;
    st->avail_in = (uInt)len;
    for (;;) {
        int r = grow_some(out);
        if (r != 0)
            return r;
        size_t room = out->cap - out->len;
        st->next_out = out->data + out->len;
        st->avail_out = (uInt)(room < ZCHUNK_MAX ? room : ZCHUNK_MAX);
        uInt before = st->avail_out;
        int zr = deflate(st, flush);
        out->len += before - st->avail_out;
        if (zr != Z_OK && zr != Z_BUF_ERROR)
            return zlib_errno(zr);
        if (st->avail_in == 0 && st->avail_out > 0)
            return 0;
    }
}

static int compress_message(z_stream *st, const uint8_t *in, size_t len, struct ws_buf *out)
{
    if (len == 0) {
        /* §7.2.3.6: the empty message is a lone 00 (zlib would emit nothing after a previous sync flush). */
        int r = grow_some(out);
        if (r != 0)
            return r;
        out->data[out->len++] = 0x00;
        return 0;
    }
    size_t start = out->len;
    do {
        size_t n = len < ZCHUNK_MAX ? len : ZCHUNK_MAX;
        int r = deflate_run(st, in, n, n == len ? Z_SYNC_FLUSH : Z_NO_FLUSH, out);
        if (r != 0)
            return r;
        in += n;
        len -= n;
    } while (len > 0);
    /* §7.2.1: drop the 00 00 FF FF that the sync flush ended with. */
    if (out->len - start < 4 || memcmp(out->data + out->len - 4, deflate_tail, 4) != 0)
        return -EIO;
    out->len -= 4;
    return 0;
}

int ws_deflate_compress(struct ws_deflate *z, const uint8_t *in, size_t len, struct ws_buf *out, const char **reason)
{
    int r;
    z_stream *st = deflater_get(z, &r);
    if (!st)
        return set_reason(reason, "cannot create compressor", r);
    size_t start = out->len;
    r = compress_message(st, in, len, out);
    if (r != 0 || z->params.server_no_context_takeover) {
        int zr = deflateReset(st);
        if (r == 0 && zr != Z_OK)
            r = zlib_errno(zr);
    }
    if (r != 0) {
        out->len = start;
        return set_reason(reason, r == WS_E_TOO_BIG ? "compressed message too big" : "compression failed", r);
    }
    return 0;
}
