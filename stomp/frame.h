/*
 * stomp/frame.h — STOMP 1.0/1.1/1.2 frame parser and serialiser (no I/O, no clock, no globals, no allocation).
 *
 * A frame is `COMMAND EOL *(header EOL) EOL body NUL`, EOL being LF or CRLF; EOLs between frames are heart-beats
 * (STOMP 1.2 "Augmented BNF", "Heart-beating"). The parser is zero-copy: header names/values and the body are slices
 * of the caller's buffer.
 *
 * Caller-buffer model (what bridge/ does):
 *     struct stomp_header hdrs[STOMP_DEFAULT_MAX_HEADERS];
 *     struct stomp_parser p;
 *     stomp_parser_init(&p, &limits, hdrs, STOMP_DEFAULT_MAX_HEADERS);
 *     // `in` holds every unconsumed byte received so far, contiguous and mutable, starting at a frame boundary.
 *     for (;;) {
 *         r = stomp_parser_feed(&p, in, in_len, &used, &frame, &reason);
 *         if (r == STOMP_NEED_MORE) break;                      // append the next WS message to `in`, call again
 *         if (r == STOMP_HEARTBEAT) { drop(used); continue; }  // inbound activity, nothing else
 *         if (r != 0) { send ERROR(message: reason); close; }
 *         handle(&frame);                                      // slices valid until the bytes are dropped
 *         drop(used);
 *     }
 * After STOMP_NEED_MORE, feed the same bytes again plus whatever arrived (the buffer may have moved: it is re-read by
 * offset, never by pointer); the parser remembers how far it scanned, so a large frame arriving in many pieces is not
 * re-scanned from the start each time.
 *
 * Rules enforced (the strict reading of STOMP 1.2, see stomp/frame.c for the section references):
 *  - commands are case-sensitive and must be one of enum stomp_cmd ("unknown command");
 *  - lines end in LF or CRLF in every version (the version is not known while CONNECT is parsed); a CR not followed
 *    by LF, or a NUL, anywhere in the command or header lines is an error;
 *  - every header line needs a ':' and a non-empty name; the first ':' splits name and value, further ':' belong to
 *    the value (tolerated in every version: 1.0 and CONNECT frames have no other way to carry them); values are never
 *    trimmed (1.1/1.2 forbid it; 1.0 "may" trim: we do not);
 *  - header escapes: none in 1.0 and none in CONNECT, STOMP and CONNECTED frames in any version; 1.1 decodes `\n`
 *    `\c` `\\`; 1.2 also `\r`; any other backslash sequence (or a lone trailing backslash) is an error. Decoding is done
 *    in place in the caller's buffer (it only shrinks), once the whole frame has arrived;
 *  - repeated headers are all kept in order; stomp_frame_header() returns the first (STOMP 1.2 "Repeated Header
 *    Entries");
 *  - `content-length` (first occurrence) is honoured on every frame: 1*DIGIT, no sign, no spaces; the body is exactly
 *    that many octets (NULs allowed) and must be followed by a NUL ("missing NUL after content-length body");
 *    without it, the body ends at the first NUL;
 *  - only SEND, MESSAGE and ERROR carry a body; on any other command a body (often a stray "\n" from a raw-socket
 *    client) is read within the same limits and dropped (the frame comes back with body_len 0), as RabbitMQ does.
 * Limits (struct stomp_limits) are checked before waiting for more input: a content-length over max_body_bytes, a
 * header line over max_header_line_bytes, one header more than allowed, or a frame growing past max_frame_bytes is
 * reported as soon as it is visible, not when the frame ends. The result never depends on how the input was chunked:
 * when a byte breaks several rules, the same one is reported whether it arrived alone or with the rest of the frame
 * (tests/fuzz/fuzz-stomp-frame.c checks this).
 *
 * Commands are parsed regardless of direction or version (the parser also reads server frames, e.g. in tests);
 * whether a command is acceptable from a client in the negotiated version (NACK/STOMP need 1.1+) is bridge's call.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "stomp/error.h"

/* Frame commands. Client frames first, then server frames. */
enum stomp_cmd {
    STOMP_CMD_CONNECT = 0,
    STOMP_CMD_STOMP = 1,
    STOMP_CMD_SEND = 2,
    STOMP_CMD_SUBSCRIBE = 3,
    STOMP_CMD_UNSUBSCRIBE = 4,
    STOMP_CMD_BEGIN = 5,
    STOMP_CMD_COMMIT = 6,
    STOMP_CMD_ABORT = 7,
    STOMP_CMD_ACK = 8,
    STOMP_CMD_NACK = 9,
    STOMP_CMD_DISCONNECT = 10,
    STOMP_CMD_CONNECTED = 11,
    STOMP_CMD_MESSAGE = 12,
    STOMP_CMD_RECEIPT = 13,
    STOMP_CMD_ERROR = 14,
};
#define STOMP_CMD_COUNT 15

/* Wire name of a command ("CONNECT", ...); "?" for a value outside the enum. Never NULL. */
const char *stomp_cmd_str(enum stomp_cmd cmd);
/* true for SEND, MESSAGE and ERROR: the only commands that may carry a body (STOMP 1.2 "Frames and Headers"). */
bool stomp_cmd_has_body(enum stomp_cmd cmd);
/* true for CONNECT, STOMP and CONNECTED: frames whose headers are never escaped (STOMP 1.2 "Value Encoding"). */
bool stomp_cmd_is_connect(enum stomp_cmd cmd);
/* true for CONNECTED, MESSAGE, RECEIPT and ERROR. */
bool stomp_cmd_is_server(enum stomp_cmd cmd);

/* Protocol versions; the value is the bit index used in version masks (stomp/negotiate.h). */
enum stomp_version {
    STOMP_V1_0 = 0,
    STOMP_V1_1 = 1,
    STOMP_V1_2 = 2,
};
#define STOMP_VERSION_BIT(v) (1u << (unsigned)(v))
#define STOMP_VERSIONS_ALL   (STOMP_VERSION_BIT(STOMP_V1_0) | STOMP_VERSION_BIT(STOMP_V1_1) | STOMP_VERSION_BIT(STOMP_V1_2))

/* "1.0", "1.1", "1.2"; "?" outside the enum. Never NULL. */
const char *stomp_version_str(enum stomp_version v);

/*
 * One header. Slices of the parsed buffer (already unescaped), NOT NUL-terminated; `value` may contain NUL bytes only
 * if the peer escaped nothing of the sort (the parser rejects raw NULs in headers, so in practice it never does).
 */
struct stomp_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

/*
 * A parsed frame, or one to serialise. When produced by stomp_parser_feed(), `headers` points into the parser's
 * caller-supplied array and every slice borrows the fed buffer: valid until the caller drops the consumed bytes or
 * feeds again. `body` is never NULL for a parsed frame (it points at the terminating NUL when body_len is 0).
 */
struct stomp_frame {
    enum stomp_cmd cmd;
    struct stomp_header *headers;
    size_t n_headers;
    const char *body;
    size_t body_len;
};

/* First header named exactly `name` (case-sensitive, NUL-terminated) in h[0..n), or NULL. */
const struct stomp_header *stomp_header_find(const struct stomp_header *h, size_t n, const char *name);
/* First header of `f` named exactly `name`, or NULL (stomp_header_find() over its headers). */
const struct stomp_header *stomp_frame_header(const struct stomp_frame *f, const char *name);
/* true when `h` is non-NULL and its value equals the NUL-terminated `value` exactly. */
bool stomp_header_value_is(const struct stomp_header *h, const char *value);

/*
 * Parser bounds. Every field must be non-zero (stomp_parser_init() replaces a 0 with the STOMP_DEFAULT_* value).
 *  max_frame_bytes:       command line through the terminating NUL, inclusive (heart-beat EOLs around frames excluded);
 *  max_headers:           header lines per frame (the effective bound is min(max_headers, header array capacity));
 *  max_header_line_bytes: bytes of the command line or one header line, excluding its EOL, before unescaping;
 *  max_body_bytes:        body octets, excluding the NUL.
 * "At the limit" is accepted, one over is STOMP_E_TOO_BIG.
 */
struct stomp_limits {
    size_t max_frame_bytes;
    size_t max_headers;
    size_t max_header_line_bytes;
    size_t max_body_bytes;
};
#define STOMP_DEFAULT_MAX_FRAME_BYTES       ((size_t)4 * 1024 * 1024 + 64 * 1024)
#define STOMP_DEFAULT_MAX_HEADERS           100
#define STOMP_DEFAULT_MAX_HEADER_LINE_BYTES ((size_t)16 * 1024)
#define STOMP_DEFAULT_MAX_BODY_BYTES        ((size_t)4 * 1024 * 1024)

/* Parser state. Embed it; fields are private (read only `version` if you must). */
struct stomp_parser {
    struct stomp_limits limits;
    enum stomp_version version;
    struct stomp_header *headers;
    size_t headers_cap;
    /* --- resume state of the frame in progress (private) --- */
    int state; /* 0 idle/header scan, 1 body scan, 2 failed */
    int error; /* sticky result after a failure */
    const char *error_reason;
    size_t scan;       /* header section: offset scanned so far; body: offset of the next byte to look at */
    size_t line_start; /* offset of the current line (header scan) */
    size_t n_lines;    /* complete lines seen so far (command line included) */
    size_t body_start; /* offset of the first body byte */
    uint64_t content_length;
    bool has_content_length;
    enum stomp_cmd cmd;
};

/*
 * Initialise `p` with `limits` (copied; NULL → all defaults; 0 fields → defaults) and the caller's header array of
 * `headers_cap` entries (kept, must outlive `p`; headers_cap 0 means no header is accepted). The parser starts with
 * STOMP 1.0 semantics (no escapes), which is what a CONNECT frame needs anyway.
 */
void stomp_parser_init(struct stomp_parser *p, const struct stomp_limits *limits, struct stomp_header *headers, size_t headers_cap);
/* Nothing to release; provided for symmetry. Idempotent. */
void stomp_parser_deinit(struct stomp_parser *p);
/*
 * Set the version whose escaping rules apply to the following frames (bridge calls it once CONNECTED is decided).
 * Call between frames, i.e. not after STOMP_NEED_MORE with a frame half-read (a half-read frame keeps the old rules
 * until stomp_parser_reset()). Same for stomp_parser_set_limits(), which tightens or relaxes the bounds (e.g. a smaller
 * limit before login).
 */
void stomp_parser_set_version(struct stomp_parser *p, enum stomp_version v);
/*
 * Replace the header array (between feeds, also after STOMP_NEED_MORE). The parser keeps nothing in it from one feed to
 * the next: the headers of a frame are filled in by the feed that returns it (a frame in progress is re-read from its
 * bytes), so an array need only live through one feed and the use of the frame it returned. bridge/ lends one array per
 * thread to every session this way.
 */
void stomp_parser_set_headers(struct stomp_parser *p, struct stomp_header *headers, size_t headers_cap);
void stomp_parser_set_limits(struct stomp_parser *p, const struct stomp_limits *limits);
/* Forget any half-read frame and a sticky error; the next feed starts at a frame boundary. Keeps version and limits. */
void stomp_parser_reset(struct stomp_parser *p);

/*
 * Parse one frame from `buf[0..len)`, which starts at a frame boundary (the first byte after what earlier calls
 * consumed). `buf` is written to: header escapes are decoded in place when a frame is returned.
 * Returns:
 *   0                 one frame in *out; *consumed = its length up to and including the NUL (EOLs after the NUL are
 *                     left for the next call, which reports them as STOMP_HEARTBEAT);
 *   STOMP_HEARTBEAT   buf starts with EOLs (LF or CRLF) or NULs between frames: *consumed = their number; drop them and
 *                     call again;
 *   STOMP_NEED_MORE   no complete frame yet and no limit passed; *consumed = 0. Call again with the same bytes first
 *                     plus more; a shorter buffer than last time restarts the scan from the beginning;
 *   STOMP_E_COMMAND, STOMP_E_PROTOCOL, STOMP_E_TOO_BIG
 *                     the command line is not a command / any other malformed input / a limit was passed;
 *                     *reason is a static string for the ERROR frame; the parser stays failed (every later call
 *                     returns the same code and reason) until stomp_parser_reset().
 * *out is only written on 0; *reason only on errors (may be NULL if the caller does not want it).
 */
STOMP_MUSTCHECK int stomp_parser_feed(struct stomp_parser *p, char *buf, size_t len, size_t *consumed, struct stomp_frame *out,
                                      const char **reason);

/* Serialiser flags. */
#define STOMP_WRITE_TRAILING_LF 0x1u /* append "\n" after the NUL (Web-STOMP's `trailing_lf`; off by default) */

/*
 * Serialise `f` for a peer speaking version `v` into out[0..cap). Works for any command.
 *  - Headers are written in order, escaped per `v`: 1.2 `\r \n \c \\`, 1.1 `\n \c \\` (a CR is not representable),
 *    none in 1.0 and none for CONNECT/STOMP/CONNECTED frames (there LF, CR and, in names, ':' are not representable).
 *  - Any header the caller named `content-length` is skipped; when body_len > 0 a correct `content-length:<body_len>`
 *    is written after the caller's headers. (Bridge copies AMQP headers onto MESSAGE frames; a stale content-length
 *    there must never desynchronise the client's framing.)
 *  - The frame ends with a NUL, plus "\n" with STOMP_WRITE_TRAILING_LF.
 * Returns:
 *   0                 *len = bytes written;
 *   STOMP_E_NOSPACE   cap is too small: *len = the size needed (nothing useful written; call with cap 0 and out NULL
 *                     to size a buffer);
 *   STOMP_E_PROTOCOL  the frame cannot be represented (empty header name; NUL in a header; CR/LF or a ':' in a name
 *                     where escaping is not available; CR where `v` has no `\r` escape; a body on a command that may not
 *                     carry one; cmd outside the enum). *reason says which; see stomp_header_check().
 */
STOMP_MUSTCHECK int stomp_frame_write(const struct stomp_frame *f, enum stomp_version v, unsigned flags, char *out, size_t cap,
                                      size_t *len, const char **reason);

/*
 * Whether header `h` can be written on a `cmd` frame in version `v` (the same checks stomp_frame_write() does): 0, or
 * STOMP_E_PROTOCOL with *reason. Bridge uses it to drop AMQP headers that a STOMP 1.0 client could not be sent.
 */
STOMP_MUSTCHECK int stomp_header_check(const struct stomp_header *h, enum stomp_cmd cmd, enum stomp_version v, const char **reason);
