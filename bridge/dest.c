/*
 * bridge/dest.c — destination parsing and formatting, subscription queue names, queue/consume arguments.
 *
 * Pure functions over caller-owned memory: everything here is testable without an event loop or a broker (see
 * tests/unit/test-bridge-dest.c). The grammar and the texts follow RabbitMQ's rabbit_routing_parser and
 * rabbit_stomp_processor so that error frames and queue names match what Web-STOMP users already see.
 */
#include "bridge/dest.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>

struct prefix {
    const char *text;
    enum dest_kind kind;
};

/* Longest first where one is a prefix of another's path ("/amq/queue/" vs "/queue/" do not overlap). */
static const struct prefix prefixes[] = {
    {"/exchange/", DEST_EXCHANGE},   {"/topic/", DEST_TOPIC},           {"/queue/", DEST_QUEUE},
    {"/amq/queue/", DEST_AMQ_QUEUE}, {"/temp-queue/", DEST_TEMP_QUEUE}, {"/reply-queue/", DEST_REPLY_QUEUE},
};
#define N_PREFIXES (sizeof(prefixes) / sizeof(prefixes[0]))

const char *dest_kind_str(enum dest_kind k)
{
    switch (k) {
    case DEST_EXCHANGE:
        return "exchange";
    case DEST_TOPIC:
        return "topic";
    case DEST_QUEUE:
        return "queue";
    case DEST_AMQ_QUEUE:
        return "amqqueue";
    case DEST_TEMP_QUEUE:
        return "temp_queue";
    case DEST_REPLY_QUEUE:
        return "reply_queue";
    }
    return "?";
}

static const struct prefix *find_prefix(const char *s, size_t len)
{
    for (size_t i = 0; i < N_PREFIXES; i++) {
        size_t pl = strlen(prefixes[i].text);
        if (len >= pl && memcmp(s, prefixes[i].text, pl) == 0)
            return &prefixes[i];
    }
    return NULL;
}

bool dest_has_known_prefix(const char *s, size_t len)
{
    return find_prefix(s, len) != NULL;
}

/* Copies s[0..len) into out, turning "%2F" (either case) into '/'. Returns -1 when the result is empty or too long. */
static int unescape_segment(const char *s, size_t len, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (o == DEST_NAME_MAX)
            return -1;
        if (s[i] == '%' && i + 2 < len && s[i + 1] == '2' && (s[i + 2] == 'F' || s[i + 2] == 'f')) {
            out[o++] = '/';
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
    return o == 0 ? -1 : 0;
}

static int invalid(struct dest *out, enum dest_kind kind, const char **reason)
{
    out->kind = kind;
    if (reason)
        *reason = "Invalid destination";
    return DEST_E_INVALID;
}

/* /exchange/X or /exchange/X/pattern: one or two segments; the pattern may be empty, X may not. */
static int parse_exchange(const char *rest, size_t len, struct dest *out, const char **reason)
{
    const char *slash = memchr(rest, '/', len);
    size_t nlen = slash ? (size_t)(slash - rest) : len;
    if (unescape_segment(rest, nlen, out->name) != 0)
        return invalid(out, DEST_EXCHANGE, reason);
    if (!slash)
        return 0;
    const char *pat = slash + 1;
    size_t plen = len - nlen - 1;
    if (memchr(pat, '/', plen))
        return invalid(out, DEST_EXCHANGE, reason);
    out->has_pattern = true;
    if (plen > 0 && unescape_segment(pat, plen, out->pattern) != 0)
        return invalid(out, DEST_EXCHANGE, reason);
    return 0;
}

int dest_parse(const char *s, size_t len, struct dest *out, const char **reason)
{
    memset(out, 0, sizeof(*out));
    if (len == 0)
        return invalid(out, DEST_QUEUE, reason);
    if (!memchr(s, '/', len)) { /* bare name: a queue */
        out->kind = DEST_QUEUE;
        return unescape_segment(s, len, out->name) == 0 ? 0 : invalid(out, DEST_QUEUE, reason);
    }
    const struct prefix *p = find_prefix(s, len);
    for (size_t i = 0; !p && i < N_PREFIXES; i++) /* "/queue": a type and no name at all, as RabbitMQ splits it */
        if (strlen(prefixes[i].text) == len + 1 && memcmp(s, prefixes[i].text, len) == 0)
            return invalid(out, prefixes[i].kind, reason);
    if (!p) {
        if (reason)
            *reason = "Unknown destination";
        return DEST_E_UNKNOWN;
    }
    size_t pl = strlen(p->text);
    const char *rest = s + pl;
    size_t rlen = len - pl;
    out->kind = p->kind;
    if (p->kind == DEST_EXCHANGE)
        return parse_exchange(rest, rlen, out, reason);
    if (p->kind != DEST_REPLY_QUEUE && memchr(rest, '/', rlen))
        return invalid(out, p->kind, reason);
    if (unescape_segment(rest, rlen, out->name) != 0)
        return invalid(out, p->kind, reason);
    return 0;
}

void dest_error_body(int err, enum dest_kind kind, const char *s, size_t len, char *buf, size_t cap)
{
    if (cap == 0)
        return;
    if (err == DEST_E_UNKNOWN) {
        int l = len > 512 ? 512 : (int)len;
        snprintf(buf, cap,
                 "'%.*s' is not a valid destination.\nValid destination types are: /temp-queue, /exchange, /topic, /queue, "
                 "/amq/queue, /reply-queue/.\n",
                 l, s);
        return;
    }
    if (len == 0) {
        snprintf(buf, cap, "Destination cannot be blank");
        return;
    }
    /* RabbitMQ quotes what follows the type: "'/bah/baz' is not a valid queue destination" for /queue/bah/baz. */
    size_t skip = 0;
    for (size_t i = 0; i < N_PREFIXES; i++) {
        size_t pl = strlen(prefixes[i].text) - 1; /* without its '/' */
        if (prefixes[i].kind == kind && len >= pl && memcmp(s, prefixes[i].text, pl) == 0)
            skip = pl;
    }
    int l = len - skip > 512 ? 512 : (int)(len - skip);
    snprintf(buf, cap, "'%.*s' is not a valid %s destination\n", l, s + skip, dest_kind_str(kind));
}

/* Appends `c` (escaped when needed) to out; returns the new needed length. */
static size_t put_escaped(const char *src, char *out, size_t cap, size_t pos)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)src; *p; p++) {
        if (*p == '/' || *p == '%' || *p < 32 || *p > 127) {
            char enc[3] = {'%', hex[*p >> 4], hex[*p & 15]};
            for (int i = 0; i < 3; i++, pos++)
                if (pos + 1 < cap)
                    out[pos] = enc[i];
        } else {
            if (pos + 1 < cap)
                out[pos] = (char)*p;
            pos++;
        }
    }
    return pos;
}

static size_t put_raw(const char *src, char *out, size_t cap, size_t pos)
{
    for (; *src; src++, pos++)
        if (pos + 1 < cap)
            out[pos] = *src;
    return pos;
}

size_t dest_format(const char *exchange, const char *routing_key, const char *topic_exchange, char *out, size_t cap)
{
    size_t pos;
    if (exchange[0] == '\0') {
        pos = put_raw("/queue/", out, cap, 0);
        pos = put_escaped(routing_key, out, cap, pos);
    } else if (topic_exchange && strcmp(exchange, topic_exchange) == 0) {
        pos = put_raw("/topic/", out, cap, 0);
        pos = put_escaped(routing_key, out, cap, pos);
    } else {
        pos = put_raw("/exchange/", out, cap, 0);
        pos = put_escaped(exchange, out, cap, pos);
        if (routing_key[0] != '\0') {
            pos = put_raw("/", out, cap, pos);
            pos = put_escaped(routing_key, out, cap, pos);
        }
    }
    if (cap > 0)
        out[pos < cap ? pos : cap - 1] = '\0';
    return pos;
}

size_t dest_base64url(const uint8_t *in, size_t n, char *out)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        size_t left = n - i;
        if (left > 1)
            v |= (uint32_t)in[i + 1] << 8;
        if (left > 2)
            v |= in[i + 2];
        out[o++] = tbl[(v >> 18) & 63];
        out[o++] = tbl[(v >> 12) & 63];
        if (left > 1)
            out[o++] = tbl[(v >> 6) & 63];
        if (left > 2)
            out[o++] = tbl[v & 63];
    }
    out[o] = '\0';
    return o;
}

/* Erlang external term format of a byte string (list of small integers), minor version 1. */
static int md5_put_string(EVP_MD_CTX *ctx, const char *s, size_t len)
{
    uint8_t hdr[5];
    if (len == 0) {
        hdr[0] = 106; /* NIL_EXT */
        return EVP_DigestUpdate(ctx, hdr, 1);
    }
    if (len <= 0xffff) {
        hdr[0] = 107; /* STRING_EXT */
        hdr[1] = (uint8_t)(len >> 8);
        hdr[2] = (uint8_t)len;
        return EVP_DigestUpdate(ctx, hdr, 3) && EVP_DigestUpdate(ctx, s, len);
    }
    hdr[0] = 108; /* LIST_EXT of SMALL_INTEGER_EXT, then NIL_EXT */
    hdr[1] = (uint8_t)(len >> 24);
    hdr[2] = (uint8_t)(len >> 16);
    hdr[3] = (uint8_t)(len >> 8);
    hdr[4] = (uint8_t)len;
    if (!EVP_DigestUpdate(ctx, hdr, 5))
        return 0;
    for (size_t i = 0; i < len; i++) {
        uint8_t el[2] = {97, (uint8_t)s[i]};
        if (!EVP_DigestUpdate(ctx, el, 2))
            return 0;
    }
    hdr[0] = 106;
    return EVP_DigestUpdate(ctx, hdr, 1);
}

int dest_sub_queue_name_durable(const struct dest *d, const char *id, size_t id_len, char *out)
{
    static const uint8_t head[] = {131, 104, 2};                                             /* version, SMALL_TUPLE_EXT, arity 2 */
    static const uint8_t undef[] = {100, 0, 9, 'u', 'n', 'd', 'e', 'f', 'i', 'n', 'e', 'd'}; /* ATOM_EXT */
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    int ok = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx)
        return -EIO;
    if (!EVP_DigestInit_ex(ctx, EVP_md5(), NULL) || !EVP_DigestUpdate(ctx, head, sizeof(head)))
        goto done;
    const char *name = d->kind == DEST_EXCHANGE ? d->pattern : d->name;
    if (d->kind == DEST_EXCHANGE && !d->has_pattern) {
        if (!EVP_DigestUpdate(ctx, undef, sizeof(undef)))
            goto done;
    } else if (!md5_put_string(ctx, name, strlen(name))) {
        goto done;
    }
    ok = md5_put_string(ctx, id, id_len) && EVP_DigestFinal_ex(ctx, md, &mdlen) && mdlen == 16;
done:
    EVP_MD_CTX_free(ctx);
    if (!ok)
        return -EIO;
    memcpy(out, DEST_SUB_QUEUE_PREFIX, sizeof(DEST_SUB_QUEUE_PREFIX));
    dest_base64url(md, 16, out + strlen(DEST_SUB_QUEUE_PREFIX));
    return 0;
}

void dest_sub_queue_name_random(const uint8_t rnd[16], char *out)
{
    memcpy(out, DEST_SUB_QUEUE_PREFIX, sizeof(DEST_SUB_QUEUE_PREFIX));
    dest_base64url(rnd, 16, out + strlen(DEST_SUB_QUEUE_PREFIX));
}

bool dest_header_bool(const struct stomp_header *h, size_t n, const char *name, bool def)
{
    const struct stomp_header *x = stomp_header_find(h, n, name);
    if (stomp_header_value_is(x, "true") || stomp_header_value_is(x, "True"))
        return true;
    if (stomp_header_value_is(x, "false") || stomp_header_value_is(x, "False"))
        return false;
    return def;
}

bool dest_header_durable(const struct stomp_header *h, size_t n)
{
    return dest_header_bool(h, n, "durable", false) || dest_header_bool(h, n, "persistent", false);
}

int dest_parse_int(const char *s, size_t len, int64_t *out)
{
    bool neg = len > 0 && s[0] == '-';
    size_t i = neg ? 1 : 0;
    if (len == i || len - i > 19)
        return -EINVAL;
    uint64_t v = 0;
    for (; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -EINVAL;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (v > (uint64_t)INT64_MAX)
        return -EINVAL;
    *out = neg ? -(int64_t)v : (int64_t)v;
    return 0;
}

static int args_add_str(struct dest_args *a, const char *key, const char *v, size_t len)
{
    if (a->n == DEST_MAX_ARGS || len > DEST_NAME_MAX || a->arena_used + len + 1 > sizeof(a->arena))
        return -1;
    char *dst = a->arena + a->arena_used;
    memcpy(dst, v, len);
    dst[len] = '\0';
    a->arena_used += len + 1;
    a->v[a->n++] = (struct upstream_arg){.key = key, .type = UPSTREAM_ARG_STR, .str = dst};
    return 0;
}

static int args_add_num(struct dest_args *a, const char *key, enum upstream_arg_type type, int64_t v)
{
    if (a->n == DEST_MAX_ARGS)
        return -1;
    a->v[a->n++] = (struct upstream_arg){.key = key, .type = type, .num = v};
    return 0;
}

static int bad_header(const char *name, const char **reason, const char **bad)
{
    if (reason)
        *reason = "Invalid header";
    if (bad)
        *bad = name;
    return DEST_E_HEADER;
}

static const char *const queue_str_args[] = {"x-dead-letter-exchange", "x-dead-letter-routing-key", "x-max-age", "x-queue-type"};
static const char *const queue_int_args[] = {"x-expires",
                                             "x-message-ttl",
                                             "x-max-length",
                                             "x-max-length-bytes",
                                             "x-max-priority",
                                             "x-stream-max-segment-size-bytes",
                                             "x-stream-filter-size-bytes"};

static int queue_args_parse(const struct stomp_header *h, size_t n, struct dest_args *a, const char **reason, const char **bad)
{
    for (size_t i = 0; i < sizeof(queue_str_args) / sizeof(queue_str_args[0]); i++) {
        const struct stomp_header *x = stomp_header_find(h, n, queue_str_args[i]);
        if (x && args_add_str(a, queue_str_args[i], x->value, x->value_len) != 0)
            return bad_header(queue_str_args[i], reason, bad);
    }
    for (size_t i = 0; i < sizeof(queue_int_args) / sizeof(queue_int_args[0]); i++) {
        const struct stomp_header *x = stomp_header_find(h, n, queue_int_args[i]);
        int64_t v;
        if (!x)
            continue;
        if (dest_parse_int(x->value, x->value_len, &v) != 0 || args_add_num(a, queue_int_args[i], UPSTREAM_ARG_INT, v) != 0)
            return bad_header(queue_int_args[i], reason, bad);
    }
    return 0;
}

int dest_queue_opts_parse(enum dest_kind kind, const struct stomp_header *h, size_t n, struct dest_queue_opts *out,
                          const char **reason, const char **bad)
{
    bool durable, exclusive, auto_delete;
    memset(out, 0, sizeof(*out));
    /* Never exclusive by default: AMQP connections are shared by sessions, and Web-STOMP's own defaults leave these
     * queues visible to other connections (an exclusive queue is RESOURCE_LOCKED for everyone else). */
    exclusive = false;
    if (kind == DEST_QUEUE) {
        durable = dest_header_bool(h, n, "durable", dest_header_bool(h, n, "persistent", true));
        auto_delete = !durable;
    } else {
        durable = dest_header_durable(h, n);
        auto_delete = true;
    }
    auto_delete = dest_header_bool(h, n, "auto-delete", auto_delete);
    exclusive = dest_header_bool(h, n, "exclusive", exclusive);
    const struct stomp_header *qt = stomp_header_find(h, n, "x-queue-type");
    if (stomp_header_value_is(qt, "quorum") || stomp_header_value_is(qt, "stream")) {
        durable = true;
        exclusive = false;
        auto_delete = false;
    }
    out->flags =
        (durable ? UPSTREAM_Q_DURABLE : 0u) | (exclusive ? UPSTREAM_Q_EXCLUSIVE : 0u) | (auto_delete ? UPSTREAM_Q_AUTO_DELETE : 0u);
    return queue_args_parse(h, n, &out->args, reason, bad);
}

static int stream_offset_parse(const struct stomp_header *x, struct dest_args *a)
{
    static const char key[] = "x-stream-offset";
    int64_t v;
    if (stomp_header_value_is(x, "first") || stomp_header_value_is(x, "last") || stomp_header_value_is(x, "next"))
        return args_add_str(a, key, x->value, x->value_len);
    if (x->value_len > 7 && memcmp(x->value, "offset=", 7) == 0 && dest_parse_int(x->value + 7, x->value_len - 7, &v) == 0)
        return args_add_num(a, key, UPSTREAM_ARG_INT, v);
    /* A time, not an offset: RabbitMQ streams read x-stream-offset as a point in time only when it is an AMQP timestamp
     * (field type 'T', seconds), as Web-STOMP sends it; an integer would be taken as the offset T. */
    if (x->value_len > 10 && memcmp(x->value, "timestamp=", 10) == 0 && dest_parse_int(x->value + 10, x->value_len - 10, &v) == 0 &&
        v >= 0)
        return args_add_num(a, key, UPSTREAM_ARG_TIMESTAMP, v);
    return -1;
}

int dest_consume_args_parse(const struct stomp_header *h, size_t n, struct dest_args *out, const char **reason, const char **bad)
{
    const struct stomp_header *x;
    int64_t v;
    memset(out, 0, sizeof(*out));
    if ((x = stomp_header_find(h, n, "x-priority")) &&
        (dest_parse_int(x->value, x->value_len, &v) != 0 || args_add_num(out, "x-priority", UPSTREAM_ARG_INT, v) != 0))
        return bad_header("x-priority", reason, bad);
    if ((x = stomp_header_find(h, n, "x-stream-offset")) && stream_offset_parse(x, out) != 0)
        return bad_header("x-stream-offset", reason, bad);
    if ((x = stomp_header_find(h, n, "x-stream-filter")) && args_add_str(out, "x-stream-filter", x->value, x->value_len) != 0)
        return bad_header("x-stream-filter", reason, bad);
    if ((x = stomp_header_find(h, n, "x-stream-match-unfiltered"))) {
        bool b = dest_header_bool(h, n, "x-stream-match-unfiltered", false);
        if (args_add_num(out, "x-stream-match-unfiltered", UPSTREAM_ARG_BOOL, b) != 0)
            return bad_header("x-stream-match-unfiltered", reason, bad);
    }
    return 0;
}
