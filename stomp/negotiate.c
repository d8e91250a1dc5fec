/*
 * stomp/negotiate.c — version and heart-beat negotiation (STOMP 1.2 "Protocol Negotiation", "Heart-beating") and the
 * per-connection heart-beat tracker. Pure functions: the caller passes the time in and arms its own timer from
 * stomp_heartbeat_next_deadline().
 */
#include "stomp/negotiate.h"

#include <string.h>

/* Indexed by version mask (3 bits). */
static const char *const version_lists[8] = {
    "", "1.0", "1.1", "1.0,1.1", "1.2", "1.0,1.2", "1.1,1.2", "1.0,1.1,1.2",
};
static const char *const version_reasons[8] = {
    "No protocol version is supported",        "Supported protocol versions are 1.0",
    "Supported protocol versions are 1.1",     "Supported protocol versions are 1.0,1.1",
    "Supported protocol versions are 1.2",     "Supported protocol versions are 1.0,1.2",
    "Supported protocol versions are 1.1,1.2", "Supported protocol versions are 1.0,1.1,1.2",
};

const char *stomp_version_list_str(unsigned mask)
{
    return version_lists[mask & STOMP_VERSIONS_ALL];
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t';
}

/* Version named by token s[0..n) (surrounding blanks ignored), or -1 for anything else. */
static int token_version(const char *s, size_t n)
{
    while (n > 0 && is_space(*s)) {
        s++;
        n--;
    }
    while (n > 0 && is_space(s[n - 1]))
        n--;
    if (n != 3 || s[0] != '1' || s[1] != '.')
        return -1;
    if (s[2] >= '0' && s[2] <= '2')
        return s[2] - '0';
    return -1;
}

int stomp_version_negotiate(const char *value, size_t len, unsigned supported_mask, enum stomp_version *out, const char **reason)
{
    unsigned offered = 0;
    supported_mask &= STOMP_VERSIONS_ALL;
    if (!value) {
        offered = STOMP_VERSION_BIT(STOMP_V1_0);
    } else {
        const char *s = value, *end = value + len;
        for (;;) {
            const char *comma = memchr(s, ',', (size_t)(end - s));
            const char *tok_end = comma ? comma : end;
            int v = token_version(s, (size_t)(tok_end - s));
            if (v >= 0)
                offered |= STOMP_VERSION_BIT(v);
            if (!comma)
                break;
            s = comma + 1;
        }
    }
    unsigned common = offered & supported_mask;
    for (int v = STOMP_V1_2; v >= STOMP_V1_0; v--) {
        if (common & STOMP_VERSION_BIT(v)) {
            *out = (enum stomp_version)v;
            return 0;
        }
    }
    if (reason)
        *reason = version_reasons[supported_mask];
    return STOMP_E_VERSION;
}

/* 1*DIGIT into a uint32_t; returns the number of digits used, 0 on error (none, or overflow). */
static size_t parse_u32(const char *s, size_t n, uint32_t *out)
{
    uint64_t v = 0;
    size_t i = 0;
    while (i < n && s[i] >= '0' && s[i] <= '9') {
        v = v * 10 + (uint64_t)(s[i] - '0');
        if (v > UINT32_MAX)
            return 0;
        i++;
    }
    *out = (uint32_t)v;
    return i;
}

int stomp_heartbeat_parse(const char *value, size_t len, uint32_t *cx, uint32_t *cy, const char **reason)
{
    uint32_t x, y;
    if (!value) {
        *cx = 0;
        *cy = 0;
        return 0;
    }
    size_t a = parse_u32(value, len, &x);
    if (a == 0 || a >= len || value[a] != ',')
        goto fail;
    size_t b = parse_u32(value + a + 1, len - a - 1, &y);
    if (b == 0 || a + 1 + b != len)
        goto fail;
    *cx = x;
    *cy = y;
    return 0;
fail:
    if (reason)
        *reason = "invalid heart-beat header (expected two non-negative integers \"cx,cy\")";
    return STOMP_E_PROTOCOL;
}

static uint32_t max3(uint32_t a, uint32_t b, uint32_t c)
{
    uint32_t m = a > b ? a : b;
    return m > c ? m : c;
}

void stomp_heartbeat_negotiate(uint32_t cx, uint32_t cy, uint32_t sx, uint32_t sy, uint32_t min_ms, uint32_t *send_ms,
                               uint32_t *recv_ms)
{
    *send_ms = (sx == 0 || cy == 0) ? 0 : max3(sx, cy, min_ms);
    *recv_ms = (cx == 0 || sy == 0) ? 0 : max3(cx, sy, min_ms);
}

void stomp_heartbeat_init(struct stomp_heartbeat *hb, uint32_t send_ms, uint32_t recv_ms, unsigned tolerance_pct, uint64_t now_ms)
{
    if (tolerance_pct < 100)
        tolerance_pct = 100;
    hb->send_ms = send_ms;
    hb->recv_timeout_ms = (uint64_t)recv_ms * tolerance_pct / 100;
    hb->last_sent = now_ms;
    hb->last_received = now_ms;
}

void stomp_heartbeat_sent(struct stomp_heartbeat *hb, uint64_t now_ms)
{
    if (now_ms > hb->last_sent)
        hb->last_sent = now_ms;
}

void stomp_heartbeat_received(struct stomp_heartbeat *hb, uint64_t now_ms)
{
    if (now_ms > hb->last_received)
        hb->last_received = now_ms;
}

static uint64_t elapsed(uint64_t since, uint64_t now)
{
    return now > since ? now - since : 0;
}

int stomp_heartbeat_tick(struct stomp_heartbeat *hb, uint64_t now_ms, bool *send_beat)
{
    *send_beat = hb->send_ms != 0 && elapsed(hb->last_sent, now_ms) >= hb->send_ms;
    if (hb->recv_timeout_ms != 0 && elapsed(hb->last_received, now_ms) >= hb->recv_timeout_ms)
        return STOMP_E_HEARTBEAT_TIMEOUT;
    return 0;
}

uint64_t stomp_heartbeat_next_deadline(const struct stomp_heartbeat *hb)
{
    uint64_t d = UINT64_MAX;
    if (hb->send_ms != 0)
        d = hb->last_sent + hb->send_ms;
    if (hb->recv_timeout_ms != 0 && hb->last_received + hb->recv_timeout_ms < d)
        d = hb->last_received + hb->recv_timeout_ms;
    return d;
}
