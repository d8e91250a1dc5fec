/*
 * stomp/frame.c — STOMP 1.0/1.1/1.2 frame parser and serialiser.
 *
 * The parser works on the caller's contiguous buffer, which always starts at a frame boundary and may move and grow
 * between calls, so the resume state is kept as offsets, never pointers. A frame is read in two phases:
 *  1. header scan: byte by byte up to the blank line ending the header section, checking line length, header count,
 *     frame size, bare CRs and NULs as it goes (so a limit is reported as soon as it is passed, STYLE.md §3.5); when the
 *     blank line is found the command and headers are validated (escapes, content-length) without modifying the buffer,
 *     so a bad frame fails before its body is waited for;
 *  2. body scan: either wait for exactly content-length octets plus the NUL, or memchr for the NUL from where the last
 *     call stopped.
 * Only when the frame is complete are the header slices (re)built for the current buffer address and the escapes
 * decoded in place; decoding earlier would corrupt the bytes a later call re-reads.
 *
 * References are to the STOMP 1.2 specification (stomp.github.io/stomp-specification-1.2.html) unless stated.
 */
#include "stomp/frame.h"

#include <string.h>

enum {
    ST_HEADERS = 0,
    ST_BODY = 1,
    ST_FAILED = 2,
};

static const char *const cmd_names[STOMP_CMD_COUNT] = {
    [STOMP_CMD_CONNECT] = "CONNECT",
    [STOMP_CMD_STOMP] = "STOMP",
    [STOMP_CMD_SEND] = "SEND",
    [STOMP_CMD_SUBSCRIBE] = "SUBSCRIBE",
    [STOMP_CMD_UNSUBSCRIBE] = "UNSUBSCRIBE",
    [STOMP_CMD_BEGIN] = "BEGIN",
    [STOMP_CMD_COMMIT] = "COMMIT",
    [STOMP_CMD_ABORT] = "ABORT",
    [STOMP_CMD_ACK] = "ACK",
    [STOMP_CMD_NACK] = "NACK",
    [STOMP_CMD_DISCONNECT] = "DISCONNECT",
    [STOMP_CMD_CONNECTED] = "CONNECTED",
    [STOMP_CMD_MESSAGE] = "MESSAGE",
    [STOMP_CMD_RECEIPT] = "RECEIPT",
    [STOMP_CMD_ERROR] = "ERROR",
};

static const char content_length_name[] = "content-length";
#define CONTENT_LENGTH_LEN (sizeof(content_length_name) - 1)

const char *stomp_cmd_str(enum stomp_cmd cmd)
{
    if ((unsigned)cmd >= STOMP_CMD_COUNT)
        return "?";
    return cmd_names[cmd];
}

bool stomp_cmd_has_body(enum stomp_cmd cmd)
{
    return cmd == STOMP_CMD_SEND || cmd == STOMP_CMD_MESSAGE || cmd == STOMP_CMD_ERROR;
}

bool stomp_cmd_is_connect(enum stomp_cmd cmd)
{
    return cmd == STOMP_CMD_CONNECT || cmd == STOMP_CMD_STOMP || cmd == STOMP_CMD_CONNECTED;
}

bool stomp_cmd_is_server(enum stomp_cmd cmd)
{
    return cmd == STOMP_CMD_CONNECTED || cmd == STOMP_CMD_MESSAGE || cmd == STOMP_CMD_RECEIPT || cmd == STOMP_CMD_ERROR;
}

const char *stomp_version_str(enum stomp_version v)
{
    switch (v) {
    case STOMP_V1_0:
        return "1.0";
    case STOMP_V1_1:
        return "1.1";
    case STOMP_V1_2:
        return "1.2";
    }
    return "?";
}

const struct stomp_header *stomp_header_find(const struct stomp_header *h, size_t n, const char *name)
{
    size_t len = strlen(name);
    for (size_t i = 0; i < n; i++)
        if (h[i].name_len == len && memcmp(h[i].name, name, len) == 0)
            return &h[i];
    return NULL;
}

const struct stomp_header *stomp_frame_header(const struct stomp_frame *f, const char *name)
{
    return stomp_header_find(f->headers, f->n_headers, name);
}

bool stomp_header_value_is(const struct stomp_header *h, const char *value)
{
    if (!h)
        return false;
    size_t n = strlen(value);
    return h->value_len == n && (n == 0 || memcmp(h->value, value, n) == 0);
}

/* Escapes are decoded on frames of 1.1+ sessions, except the CONNECT/CONNECTED exchange ("Value Encoding"). */
static bool uses_escapes(enum stomp_cmd cmd, enum stomp_version v)
{
    return v >= STOMP_V1_1 && !stomp_cmd_is_connect(cmd);
}

/* ------------------------------------------------------------------------------------------------------------------ */
/* Parser                                                                                                             */
/* ------------------------------------------------------------------------------------------------------------------ */

static void apply_limits(struct stomp_parser *p, const struct stomp_limits *limits)
{
    static const struct stomp_limits defaults = {
        .max_frame_bytes = STOMP_DEFAULT_MAX_FRAME_BYTES,
        .max_headers = STOMP_DEFAULT_MAX_HEADERS,
        .max_header_line_bytes = STOMP_DEFAULT_MAX_HEADER_LINE_BYTES,
        .max_body_bytes = STOMP_DEFAULT_MAX_BODY_BYTES,
    };
    if (!limits)
        limits = &defaults;
    p->limits.max_frame_bytes = limits->max_frame_bytes ? limits->max_frame_bytes : defaults.max_frame_bytes;
    p->limits.max_headers = limits->max_headers ? limits->max_headers : defaults.max_headers;
    p->limits.max_header_line_bytes =
        limits->max_header_line_bytes ? limits->max_header_line_bytes : defaults.max_header_line_bytes;
    p->limits.max_body_bytes = limits->max_body_bytes ? limits->max_body_bytes : defaults.max_body_bytes;
}

/* Forget the frame in progress (offsets and what was learnt from its header section). */
static void clear_frame(struct stomp_parser *p)
{
    p->state = ST_HEADERS;
    p->scan = 0;
    p->line_start = 0;
    p->n_lines = 0;
    p->body_start = 0;
    p->content_length = 0;
    p->has_content_length = false;
    p->cmd = STOMP_CMD_CONNECT;
}

void stomp_parser_init(struct stomp_parser *p, const struct stomp_limits *limits, struct stomp_header *headers, size_t headers_cap)
{
    memset(p, 0, sizeof(*p));
    apply_limits(p, limits);
    p->version = STOMP_V1_0;
    p->headers = headers;
    p->headers_cap = headers_cap;
    clear_frame(p);
}

void stomp_parser_deinit(struct stomp_parser *p)
{
    (void)p;
}

void stomp_parser_set_headers(struct stomp_parser *p, struct stomp_header *headers, size_t headers_cap)
{
    p->headers = headers;
    p->headers_cap = headers_cap;
}

void stomp_parser_set_version(struct stomp_parser *p, enum stomp_version v)
{
    p->version = v;
}

void stomp_parser_set_limits(struct stomp_parser *p, const struct stomp_limits *limits)
{
    apply_limits(p, limits);
}

void stomp_parser_reset(struct stomp_parser *p)
{
    p->error = 0;
    p->error_reason = NULL;
    clear_frame(p);
}

static int fail(struct stomp_parser *p, int err, const char *why, const char **reason)
{
    p->state = ST_FAILED;
    p->error = err;
    p->error_reason = why;
    if (reason)
        *reason = why;
    return err;
}

static size_t max_headers(const struct stomp_parser *p)
{
    return p->limits.max_headers < p->headers_cap ? p->limits.max_headers : p->headers_cap;
}

/*
 * EOLs at a frame boundary are heart-beats ("Heart-beating": "any new data"; the grammar's `NUL *( EOL )`). NULs there
 * are skipped with them, as RabbitMQ's parser does (its "noise" between frames is any mix of NUL and EOL; clients write
 * "\0" after a frame's own NUL). Returns STOMP_HEARTBEAT with their length, 0 if buf does not start with one,
 * STOMP_NEED_MORE for a lone trailing CR.
 */
static int skip_heartbeats(struct stomp_parser *p, const char *buf, size_t len, size_t *consumed, const char **reason)
{
    size_t i = 0;
    while (i < len) {
        if (buf[i] == '\n' || buf[i] == '\0') {
            i++;
        } else if (buf[i] == '\r') {
            if (i + 1 == len)
                break;
            if (buf[i + 1] != '\n') {
                if (i > 0)
                    break; /* report the heart-beats first, whatever the chunking */
                return fail(p, STOMP_E_PROTOCOL, "bare CR (not followed by LF)", reason);
            }
            i += 2;
        } else {
            break;
        }
    }
    if (i > 0) {
        *consumed = i;
        return STOMP_HEARTBEAT;
    }
    return len > 0 && buf[0] == '\r' ? STOMP_NEED_MORE : 0;
}

/*
 * One LF at buf[i] ends the line that started at p->line_start. Returns 1 when it is the blank line ending the
 * header section, 0 otherwise, or an error.
 */
static int end_line(struct stomp_parser *p, const char *buf, size_t i)
{
    size_t end = i;
    if (end > p->line_start && buf[end - 1] == '\r')
        end--;
    if (end == p->line_start) {
        p->body_start = i + 1;
        return 1;
    }
    p->n_lines++;
    p->line_start = i + 1;
    return 0;
}

/*
 * Scan the header section from p->scan. Returns 0 when the blank line has been found (p->body_start set),
 * STOMP_NEED_MORE, or an error. Every limit is checked on the byte that passes it.
 */
static int scan_headers(struct stomp_parser *p, const char *buf, size_t len, const char **reason)
{
    const struct stomp_limits *l = &p->limits;
    for (size_t i = p->scan; i < len; i++) {
        char c = buf[i];
        if (c == '\n') {
            if (end_line(p, buf, i) == 1) {
                p->scan = i + 1;
                return 0;
            }
        } else if (c == '\r') {
            if (i + 1 == len) {
                p->scan = i; /* look at this CR again once its successor arrived */
                return STOMP_NEED_MORE;
            }
            if (buf[i + 1] != '\n')
                return fail(p, STOMP_E_PROTOCOL, "bare CR (not followed by LF)", reason);
        } else if (c == '\0') {
            return fail(p, STOMP_E_PROTOCOL, "NUL byte in the command or header lines", reason);
        } else {
            if (i == p->line_start && p->n_lines > max_headers(p))
                return fail(p, STOMP_E_TOO_BIG, "too many headers", reason);
            if (i - p->line_start + 1 > l->max_header_line_bytes)
                return fail(p, STOMP_E_TOO_BIG, "header line too long", reason);
        }
        if (i + 1 > l->max_frame_bytes)
            return fail(p, STOMP_E_TOO_BIG, "frame too large", reason);
    }
    p->scan = len;
    return STOMP_NEED_MORE;
}

static int parse_cmd(const char *s, size_t n, enum stomp_cmd *cmd)
{
    for (int c = 0; c < STOMP_CMD_COUNT; c++) {
        if (strlen(cmd_names[c]) == n && memcmp(cmd_names[c], s, n) == 0) {
            *cmd = (enum stomp_cmd)c;
            return 0;
        }
    }
    return -1;
}

/* Every backslash in s[0..n) starts a sequence defined for version v ("Value Encoding"). */
static int check_escapes(const char *s, size_t n, enum stomp_version v, const char **why)
{
    for (const char *e = memchr(s, '\\', n); e; e = memchr(e, '\\', (size_t)(s + n - e))) {
        if (e + 1 == s + n) {
            *why = "invalid header escape: lone backslash at the end of a header name or value";
            return -1;
        }
        char c = e[1];
        if (c == 'r' && v < STOMP_V1_2) {
            *why = "invalid header escape \\r (defined in STOMP 1.2 only)";
            return -1;
        }
        if (c != 'n' && c != 'c' && c != '\\' && c != 'r') {
            *why = v >= STOMP_V1_2 ? "invalid header escape (STOMP 1.2 defines only \\r \\n \\c \\\\)"
                                   : "invalid header escape (STOMP 1.1 defines only \\n \\c \\\\)";
            return -1;
        }
        e += 2;
        if (e == s + n)
            break;
    }
    return 0;
}

/* Decode s[0..*n) in place; the sequences were validated by check_escapes(). */
static void unescape(char *s, size_t *n)
{
    char *w = memchr(s, '\\', *n);
    if (!w)
        return;
    const char *r = w, *end = s + *n;
    while (r < end) {
        if (*r != '\\') {
            *w++ = *r++;
            continue;
        }
        char c = r[1];
        *w++ = c == 'n' ? '\n' : c == 'r' ? '\r' : c == 'c' ? ':' : '\\';
        r += 2;
    }
    *n = (size_t)(w - s);
}

/* content-length: 1*DIGIT ("Header content-length"); larger than max_body_bytes is reported as such. */
static int parse_content_length(struct stomp_parser *p, const char *s, size_t n, const char **reason)
{
    uint64_t v = 0;
    if (n == 0)
        return fail(p, STOMP_E_PROTOCOL, "invalid content-length header", reason);
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return fail(p, STOMP_E_PROTOCOL, "invalid content-length header", reason);
        v = v * 10 + (uint64_t)(s[i] - '0');
        if (v > p->limits.max_body_bytes || v > UINT64_MAX / 10)
            return fail(p, STOMP_E_TOO_BIG, "content-length exceeds the body size limit", reason);
    }
    p->content_length = v;
    p->has_content_length = true;
    return 0;
}

/* One header line s[0..n) (EOL excluded) into *h, raw (still escaped). */
static int parse_header_line(struct stomp_parser *p, const char *s, size_t n, struct stomp_header *h, const char **reason)
{
    const char *colon = memchr(s, ':', n);
    const char *why;
    if (!colon)
        return fail(p, STOMP_E_PROTOCOL, "header line without ':'", reason);
    if (colon == s)
        return fail(p, STOMP_E_PROTOCOL, "empty header name", reason);
    h->name = s;
    h->name_len = (size_t)(colon - s);
    h->value = colon + 1;
    h->value_len = n - h->name_len - 1;
    if (uses_escapes(p->cmd, p->version) &&
        (check_escapes(h->name, h->name_len, p->version, &why) || check_escapes(h->value, h->value_len, p->version, &why)))
        return fail(p, STOMP_E_PROTOCOL, why, reason);
    if (!p->has_content_length && h->name_len == CONTENT_LENGTH_LEN &&
        memcmp(h->name, content_length_name, CONTENT_LENGTH_LEN) == 0)
        return parse_content_length(p, h->value, h->value_len, reason);
    return 0;
}

/* Length of the line starting at s (bounded by end, which is past its LF), EOL excluded; *next = after the LF. */
static size_t line_len(const char *s, const char *end, const char **next)
{
    const char *lf = memchr(s, '\n', (size_t)(end - s));
    *next = lf + 1;
    return (size_t)(lf - s) - (lf > s && lf[-1] == '\r');
}

/*
 * Parse the command and header lines of buf[0..p->body_start) into p->cmd and p->headers (raw slices of buf) and
 * content-length. The scan guaranteed every line ends in LF and the counts are within limits.
 */
static int parse_head(struct stomp_parser *p, const char *buf, const char **reason)
{
    const char *end = buf + p->body_start, *s = buf, *next;
    size_t n = line_len(s, end, &next);
    if (parse_cmd(s, n, &p->cmd))
        return fail(p, STOMP_E_COMMAND, "unknown command", reason);
    p->has_content_length = false;
    p->content_length = 0;
    for (size_t k = 0; k + 1 < p->n_lines; k++) {
        s = next;
        n = line_len(s, end, &next);
        int r = parse_header_line(p, s, n, &p->headers[k], reason);
        if (r)
            return r;
    }
    return 0;
}

/*
 * After the header section: the checks that need the command and content-length, before waiting for the body. All of
 * them are decided by the bytes up to the blank line, so their order is the same however the input was chunked.
 */
static int start_body(struct stomp_parser *p, const char **reason)
{
    p->state = ST_BODY;
    p->scan = p->body_start;
    if (!p->has_content_length) {
        if ((uint64_t)p->body_start + 1 > p->limits.max_frame_bytes)
            return fail(p, STOMP_E_TOO_BIG, "frame too large", reason);
        return 0;
    }
    if ((uint64_t)p->body_start + p->content_length + 1 > p->limits.max_frame_bytes)
        return fail(p, STOMP_E_TOO_BIG, "frame too large", reason);
    return 0;
}

/*
 * Without content-length: the offset of the first body byte that must be the NUL, because a non-NUL byte there
 * breaks a rule (max_body_bytes, max_frame_bytes). start_body() ensured body_start < max_frame_bytes.
 */
static size_t body_stop(const struct stomp_parser *p)
{
    size_t stop = p->limits.max_frame_bytes - 1;
    if (p->limits.max_body_bytes < stop - p->body_start)
        stop = p->body_start + p->limits.max_body_bytes;
    return stop;
}

/*
 * Looks for the end of the body. Returns 0 with *frame_len, STOMP_NEED_MORE, or an error. The NUL scan stops at
 * body_stop(), so a long chunk reports the same error a byte-by-byte feed would (the first rule broken, in order).
 */
static int scan_body(struct stomp_parser *p, const char *buf, size_t len, size_t *frame_len, const char **reason)
{
    if (p->has_content_length) {
        size_t end = p->body_start + (size_t)p->content_length;
        if (len <= end)
            return STOMP_NEED_MORE;
        if (buf[end] != '\0')
            return fail(p, STOMP_E_PROTOCOL, "missing NUL after content-length body", reason);
        *frame_len = end + 1;
        return 0;
    }
    size_t stop = body_stop(p);
    size_t end = len < stop + 1 ? len : stop + 1;
    const char *nul = end > p->scan ? memchr(buf + p->scan, '\0', end - p->scan) : NULL;
    if (nul) {
        *frame_len = (size_t)(nul - buf) + 1;
        return 0;
    }
    if (len <= stop) {
        p->scan = len;
        return STOMP_NEED_MORE;
    }
    if (stop - p->body_start >= p->limits.max_body_bytes)
        return fail(p, STOMP_E_TOO_BIG, "body too large", reason);
    return fail(p, STOMP_E_TOO_BIG, "frame too large", reason);
}

/* The frame is complete: decode escapes in place and fill *out. */
static void finish(struct stomp_parser *p, char *buf, size_t frame_len, struct stomp_frame *out)
{
    size_t n = p->n_lines - 1;
    if (uses_escapes(p->cmd, p->version)) {
        for (size_t k = 0; k < n; k++) {
            struct stomp_header *h = &p->headers[k];
            unescape((char *)h->name, &h->name_len);
            unescape((char *)h->value, &h->value_len);
        }
    }
    out->cmd = p->cmd;
    out->headers = p->headers;
    out->n_headers = n;
    /* A body on a command that has none (RabbitMQ reads and ignores it; raw-socket clients send "\n" there) is dropped. */
    bool body = stomp_cmd_has_body(p->cmd);
    out->body = buf + (body ? p->body_start : frame_len - 1);
    out->body_len = body ? frame_len - 1 - p->body_start : 0;
    clear_frame(p);
}

int stomp_parser_feed(struct stomp_parser *p, char *buf, size_t len, size_t *consumed, struct stomp_frame *out, const char **reason)
{
    int r;
    bool head_parsed = false;
    *consumed = 0;
    if (p->state == ST_FAILED) {
        if (reason)
            *reason = p->error_reason;
        return p->error;
    }
    if (len < p->scan)
        clear_frame(p); /* the caller gave less than last time: start over rather than trust stale offsets */
    if (p->state == ST_HEADERS) {
        if (p->scan == 0) {
            r = skip_heartbeats(p, buf, len, consumed, reason);
            if (r)
                return r;
            if (len == 0)
                return STOMP_NEED_MORE;
        }
        r = scan_headers(p, buf, len, reason);
        if (r)
            return r;
        r = parse_head(p, buf, reason);
        if (r)
            return r;
        r = start_body(p, reason);
        if (r)
            return r;
        head_parsed = true;
    }
    size_t frame_len = 0;
    r = scan_body(p, buf, len, &frame_len, reason);
    if (r)
        return r;
    if (!head_parsed && parse_head(p, buf, reason))
        return p->error; /* cannot happen: the same bytes passed before */
    finish(p, buf, frame_len, out);
    *consumed = frame_len;
    return 0;
}

/* ------------------------------------------------------------------------------------------------------------------ */
/* Serialiser                                                                                                         */
/* ------------------------------------------------------------------------------------------------------------------ */

static bool is_content_length(const struct stomp_header *h)
{
    return h->name_len == CONTENT_LENGTH_LEN && memcmp(h->name, content_length_name, CONTENT_LENGTH_LEN) == 0;
}

/* Can s[0..n) be written in this mode? `is_name`: ':' needs an escape too. */
static int check_text(const char *s, size_t n, bool is_name, bool esc, enum stomp_version v, const char **reason)
{
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '\0') {
            *reason = "NUL byte in a header";
            return STOMP_E_PROTOCOL;
        }
        if (esc) {
            if (c == '\r' && v < STOMP_V1_2) {
                *reason = "CR in a header cannot be encoded before STOMP 1.2";
                return STOMP_E_PROTOCOL;
            }
        } else if (c == '\n' || c == '\r' || (c == ':' && is_name)) {
            *reason = "header needs escaping, which this frame or version does not allow";
            return STOMP_E_PROTOCOL;
        }
    }
    return 0;
}

int stomp_header_check(const struct stomp_header *h, enum stomp_cmd cmd, enum stomp_version v, const char **reason)
{
    const char *why = NULL;
    bool esc = uses_escapes(cmd, v);
    int r = 0;
    if (h->name_len == 0) {
        why = "empty header name";
        r = STOMP_E_PROTOCOL;
    } else if ((r = check_text(h->name, h->name_len, true, esc, v, &why)) == 0) {
        r = check_text(h->value, h->value_len, false, esc, v, &why);
    }
    if (r && reason)
        *reason = why;
    return r;
}

/* Encoded length of s[0..n) (4 specials double when escaping). */
static size_t text_size(const char *s, size_t n, bool esc)
{
    size_t size = n;
    if (esc) {
        for (size_t i = 0; i < n; i++)
            size += s[i] == '\n' || s[i] == '\r' || s[i] == ':' || s[i] == '\\';
    }
    return size;
}

static char *put(char *w, const char *s, size_t n)
{
    if (n)
        memcpy(w, s, n);
    return w + n;
}

static char *put_text(char *w, const char *s, size_t n, bool esc)
{
    if (!esc)
        return put(w, s, n);
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        char e = c == '\n' ? 'n' : c == '\r' ? 'r' : c == ':' ? 'c' : c == '\\' ? '\\' : 0;
        if (e) {
            *w++ = '\\';
            *w++ = e;
        } else {
            *w++ = c;
        }
    }
    return w;
}

/* Decimal digits of n into buf (no NUL); returns the length. */
static size_t fmt_size(char *buf, size_t n)
{
    char tmp[24];
    size_t k = 0;
    do {
        tmp[k++] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    for (size_t i = 0; i < k; i++)
        buf[i] = tmp[k - 1 - i];
    return k;
}

/* Validates f and returns its encoded size in *size. */
static int frame_size(const struct stomp_frame *f, enum stomp_version v, unsigned flags, size_t *size, const char **reason)
{
    if ((unsigned)f->cmd >= STOMP_CMD_COUNT) {
        *reason = "unknown command";
        return STOMP_E_PROTOCOL;
    }
    if (f->body_len > 0 && !stomp_cmd_has_body(f->cmd)) {
        *reason = "this command must not have a body";
        return STOMP_E_PROTOCOL;
    }
    bool esc = uses_escapes(f->cmd, v);
    size_t n = strlen(cmd_names[f->cmd]) + 1;
    for (size_t i = 0; i < f->n_headers; i++) {
        const struct stomp_header *h = &f->headers[i];
        if (is_content_length(h))
            continue;
        int r = stomp_header_check(h, f->cmd, v, reason);
        if (r)
            return r;
        n += text_size(h->name, h->name_len, esc) + 1 + text_size(h->value, h->value_len, esc) + 1;
    }
    if (f->body_len > 0) {
        char digits[24];
        n += CONTENT_LENGTH_LEN + 1 + fmt_size(digits, f->body_len) + 1;
    }
    n += 1 + f->body_len + 1 + ((flags & STOMP_WRITE_TRAILING_LF) ? 1 : 0);
    *size = n;
    return 0;
}

int stomp_frame_write(const struct stomp_frame *f, enum stomp_version v, unsigned flags, char *out, size_t cap, size_t *len,
                      const char **reason)
{
    const char *why = NULL;
    size_t size = 0;
    int r = frame_size(f, v, flags, &size, &why);
    if (r) {
        if (reason)
            *reason = why;
        return r;
    }
    *len = size;
    if (size > cap) {
        if (reason)
            *reason = "output buffer too small";
        return STOMP_E_NOSPACE;
    }
    bool esc = uses_escapes(f->cmd, v);
    char *w = put(out, cmd_names[f->cmd], strlen(cmd_names[f->cmd]));
    *w++ = '\n';
    for (size_t i = 0; i < f->n_headers; i++) {
        const struct stomp_header *h = &f->headers[i];
        if (is_content_length(h))
            continue;
        w = put_text(w, h->name, h->name_len, esc);
        *w++ = ':';
        w = put_text(w, h->value, h->value_len, esc);
        *w++ = '\n';
    }
    if (f->body_len > 0) {
        w = put(w, "content-length:", CONTENT_LENGTH_LEN + 1);
        w += fmt_size(w, f->body_len);
        *w++ = '\n';
    }
    *w++ = '\n';
    w = put(w, f->body, f->body_len);
    *w++ = '\0';
    if (flags & STOMP_WRITE_TRAILING_LF)
        *w++ = '\n';
    return 0;
}
