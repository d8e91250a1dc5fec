/*
 * conf/conf.h — warren's configuration: the file format, `struct conf` with every setting, and the key table.
 *
 * One table (conf/keys.c, pgbouncer's CF_ABS idea) lists every key with its type, default, range, reload flag, one-line
 * doc and the offset of its field in `struct conf`; the parser, `conf_init()`, `warren --help-config`, doc/config.md
 * and the sample conf/warren.conf all follow that table (tests/checks/check-config-docs.sh fails when a key is missing
 * from the docs). Field names are the key names, and units are in the names (`_ms`, `_s`, `_bytes`, `_pct`).
 *
 * File format: one `key = value` per line; blank lines and lines whose first non-blank character is `#` are ignored;
 * a value may be wrapped in double quotes (inside them `\"` and `\\` are escapes, and `#` is literal); an unquoted value
 * ends at ` #` (a comment) and is trimmed. A key given twice is fine: the last one wins. Value syntax per type:
 *   string  any text (may be empty: `key = ""` or `key =`)
 *   int     decimal integer within the key's [min, max]
 *   bool    true/false, yes/no, on/off, 1/0 (case-insensitive)
 *   enum    one of the key's names (case-insensitive)
 *   size    decimal bytes with an optional k/m/g suffix (powers of 1024, case-insensitive), within [min, max]
 *   list    comma-separated strings, each trimmed; empty items are dropped; `""` is the empty list
 *
 * conf/ is libc only: it never logs and never exits. Errors come back as an int (0 OK, CONF_E_INVALID, or a negative
 * errno) plus a message in the caller's `err` buffer (`err` may be NULL), formatted `file:line: key: reason`.
 *
 * Ownership: strings and lists in a `struct conf` belong to it; they stay valid until the next change to that key
 * (conf_set/conf_load_*) or conf_deinit(). Read them, never free them. A `struct conf` is plain data: safe to read from
 * several threads once loading is done.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#if defined(__GNUC__)
#define CONF_MUSTCHECK __attribute__((warn_unused_result))
#else
#define CONF_MUSTCHECK
#endif

/* Positive results (negative values are -errno: -ENOMEM, or the errno of opening/reading a file). */
enum conf_result {
    CONF_OK = 0,
    CONF_E_INVALID = 1,   /* the text or the combination of values was rejected; `err` says where and why */
    CONF_E_NO_RELOAD = 2, /* conf_reload_check(): a key that needs a restart changed */
};

/* ws_frame: the WebSocket message type warren sends STOMP frames in. */
enum conf_ws_frame {
    CONF_WS_FRAME_TEXT = 0,
    CONF_WS_FRAME_BINARY = 1,
};

/* topic_fanout: who copies a /topic/ or /exchange/ delivery to the sessions subscribed to it (bridge/fanout.h). */
enum conf_topic_fanout {
    CONF_TOPIC_FANOUT_BROKER = 0, /* the broker: one queue and consumer per subscription */
    CONF_TOPIC_FANOUT_LOCAL = 1,  /* warren: one queue and consumer per binding, credential and worker */
};

/* log_level: the most verbose level logged. */
enum conf_log_level {
    CONF_LOG_ERROR = 0,
    CONF_LOG_WARN = 1,
    CONF_LOG_INFO = 2,
    CONF_LOG_DEBUG = 3,
};

/* A list value: `n` trimmed, non-empty, NUL-terminated strings (items is NULL when n == 0). */
struct conf_list {
    const char *const *items;
    size_t n;
};

struct conf {
    /* Listeners (plain WebSocket, TLS, HTTP). */
    const char *listen_addr;
    int listen_port;
    const char *ws_path;
    const char *http_root;
    struct conf_list allow_origins;
    int tls_listen_port;
    const char *tls_cert_file;
    const char *tls_key_file;
    const char *tls_ca_file;
    int max_connections;
    int max_connections_per_ip;
    size_t max_memory_bytes;
    int max_memory_pct;
    int workers;

    /* The AMQP side. */
    struct conf_list brokers;
    const char *default_user;
    const char *default_pass;
    struct conf_list loopback_users;
    const char *default_vhost;
    int amqp_heartbeat_s;
    int amqp_channel_max;
    int amqp_connect_timeout_ms;
    int amqp_reconnect_min_ms;
    int amqp_reconnect_max_ms;
    size_t amqp_frame_max_bytes;
    int amqp_idle_close_ms;
    int amqp_auth_reuse_ms;
    int amqp_max_connections;
    int amqp_max_connections_per_credential;
    int amqp_write_timeout_ms;

    /* STOMP heart-beats and timeouts. */
    int heartbeat_send_min_ms;
    int heartbeat_recv_min_ms;
    int heartbeat_timeout_pct;
    int login_timeout_ms;
    int login_failure_delay_max_ms;
    int idle_timeout_ms;

    /* Input limits (STYLE.md §3.5: every bound has its own key). */
    size_t max_handshake_bytes;
    int max_http_headers;
    size_t max_message_bytes;
    size_t max_frame_bytes;
    size_t max_frame_bytes_unauthenticated;
    int max_headers;
    size_t max_header_line_bytes;
    size_t max_body_bytes;

    /* WebSocket output and permessage-deflate (RFC 7692). */
    enum conf_ws_frame ws_frame;
    bool compression;
    size_t deflate_threshold_bytes;
    int deflate_level;
    int deflate_mem_level;
    int deflate_server_max_window_bits;
    bool deflate_server_no_context_takeover;
    int max_inflate_ratio;
    size_t max_inflate_bytes_per_sec;

    /* Flow control and per-session bounds. */
    int default_prefetch_count;
    int max_prefetch_count;
    size_t client_send_buffer_bytes;
    size_t client_send_limit_bytes;
    int max_subscriptions;
    enum conf_topic_fanout topic_fanout;
    int topic_fanout_from;
    int max_transactions;
    int max_transaction_frames;
    size_t max_transaction_bytes;
    int max_unconfirmed;
    size_t max_unconfirmed_bytes;
    int max_pending_ops;
    bool default_nack_requeue;
    const char *default_topic_exchange;
    bool trailing_lf;

    /* Identity and logging. */
    const char *server_name;
    bool hide_server_info;
    enum conf_log_level log_level;
};

enum conf_type {
    CONF_T_STRING = 0,
    CONF_T_INT = 1,
    CONF_T_BOOL = 2,
    CONF_T_ENUM = 3,
    CONF_T_SIZE = 4,
    CONF_T_LIST = 5,
};

/* conf_key.flags */
#define CONF_F_RELOADABLE 0x1u /* a reload (SIGHUP) may change it; it applies to connections accepted afterwards */

/* One row of the key table. All pointers are static. */
struct conf_key {
    const char *name;              /* key name == field name in struct conf */
    enum conf_type type;           /* value syntax, see the file comment */
    unsigned flags;                /* CONF_F_* */
    const char *def;               /* default, in config-file syntax (as printed by conf_value_format) */
    long long min, max;            /* CONF_T_INT and CONF_T_SIZE: inclusive range */
    const char *const *enum_names; /* CONF_T_ENUM: NULL-terminated, index == enum value */
    const char *doc;               /* one line, no trailing period */
    size_t offset;                 /* offsetof(struct conf, <name>) */
    const char *const *def_items;  /* CONF_T_LIST: the default, pre-split (internal) */
    size_t def_n;                  /* CONF_T_LIST: number of def_items (internal) */
};

/* The key table, in documentation order; *n gets the number of keys. Never fails. */
const struct conf_key *conf_keys(size_t *n);
/* The row for `name` (exact, case-sensitive), or NULL. */
const struct conf_key *conf_key_find(const char *name);
/* "string", "int", "bool", "enum", "size", "list". Never NULL. */
const char *conf_type_str(enum conf_type t);
/* "text"/"binary"; "error"/"warn"/"info"/"debug". Never NULL ("?" when out of range). */
const char *conf_ws_frame_str(enum conf_ws_frame f);
const char *conf_log_level_str(enum conf_log_level l);

/* Fills `c` with every default. Allocates nothing and cannot fail. */
void conf_init(struct conf *c);
/* Frees what `c` owns and resets it to the defaults. Idempotent; safe on a conf_init()ed struct. */
void conf_deinit(struct conf *c);
/* Makes `dst` (not initialised yet) an independent deep copy of `src`. 0 or -ENOMEM (then dst holds the defaults). */
CONF_MUSTCHECK int conf_copy(struct conf *dst, const struct conf *src);

/*
 * Sets one key from its text form, as `-o key=value` on the command line does. The value is taken literally (no quotes,
 * no comments; lists are still split and trimmed). Returns 0, CONF_E_INVALID (unknown key, bad value, out of range;
 * err = "key: reason") or -ENOMEM. On failure `c` is unchanged.
 */
CONF_MUSTCHECK int conf_set(struct conf *c, const char *key, const char *value, char *err, size_t errlen);

/*
 * Applies a whole config text on top of `c` (start from conf_init() for a fresh load). `name` is used in messages
 * ("file:line: key: reason"). All or nothing: on any error `c` is unchanged. The buffer need not be NUL-terminated and
 * may contain any bytes (a NUL byte is an error). Returns 0, CONF_E_INVALID or -ENOMEM.
 * Does not run conf_validate(): call it after the last conf_load_*()/conf_set().
 */
CONF_MUSTCHECK int conf_load_buffer(struct conf *c, const char *name, const char *buf, size_t len, char *err, size_t errlen);

/*
 * conf_load_buffer() on the contents of `path` (at most 1 MiB). Returns 0, CONF_E_INVALID, -ENOMEM, -EFBIG, or the
 * negative errno of open/read (err = "path: strerror"). On failure `c` is unchanged.
 */
CONF_MUSTCHECK int conf_load_file(struct conf *c, const char *path, char *err, size_t errlen);

/*
 * Cross-key checks, run once everything is loaded: max_body_bytes, max_frame_bytes_unauthenticated and
 * max_header_line_bytes <= max_frame_bytes; tls_cert_file and tls_key_file both set or both empty, and both set when
 * tls_listen_port != 0; at least one listener, and listen_port != tls_listen_port; at least one broker, each
 * "host:port" (IPv6 as "[addr]:port"); amqp_reconnect_min_ms <= amqp_reconnect_max_ms; default_prefetch_count <=
 * max_prefetch_count; client_send_buffer_bytes <= client_send_limit_bytes; ws_path starts with '/'. Returns 0 or
 * CONF_E_INVALID (err = "key: reason").
 */
CONF_MUSTCHECK int conf_validate(const struct conf *c, char *err, size_t errlen);

/*
 * For a reload: 0 when every key that differs between `old` and `new` is CONF_F_RELOADABLE, else CONF_E_NO_RELOAD with
 * *changed (if not NULL) set to the first such key. Then keep the old config (STYLE.md §3.4) or restart.
 */
CONF_MUSTCHECK int conf_reload_check(const struct conf *old, const struct conf *new, const struct conf_key **changed);

/*
 * Writes the current value of `k` in `c` into buf (NUL-terminated), in config-file syntax that conf_set() accepts back
 * (sizes in plain bytes, lists comma-joined). Returns 0, or -ENOSPC when it did not fit (buf then holds a truncated,
 * terminated prefix). For `warren --help-config` and config dumps.
 */
int conf_value_format(const struct conf *c, const struct conf_key *k, char *buf, size_t len);
