/*
 * tests/unit/test-conf.c — conf/: the key table, every value type, the file format and its errors, -o overrides,
 * cross-key validation, reload checks, copies, and the shipped sample conf/warren.conf (which must load and leave every
 * key at its default: a sample that drifts from the table is a documentation bug).
 *
 * The sample is found through $WARREN_SOURCE_ROOT or $MESON_SOURCE_ROOT when set, else through __FILE__, which meson
 * passes relative to the build directory that `meson test` runs tests in; argv[1] overrides both.
 */
#include "conf/conf.h"
#include "harness.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char err[512];

static const char *sample_path;

/* The default's text and the current value's text of key `name` are equal. */
static int is_default(const struct conf *c, const struct conf_key *k)
{
    char buf[1024];
    return conf_value_format(c, k, buf, sizeof(buf)) == 0 && strcmp(buf, k->def) == 0;
}

static int has(const char *hay, const char *needle)
{
    if (!strstr(hay, needle)) {
        fprintf(stderr, "  expected \"%s\" in \"%s\"\n", needle, hay);
        return 0;
    }
    return 1;
}

static void test_table(void)
{
    size_t n;
    const struct conf_key *k = conf_keys(&n);
    CHECK(n >= 50);
    for (size_t i = 0; i < n; i++) {
        size_t dl = strlen(k[i].doc);
        CHECK(conf_key_find(k[i].name) == &k[i]);
        CHECK(dl > 10 && k[i].doc[dl - 1] != '.');
        CHECK(k[i].offset < sizeof(struct conf));
        CHECK(strspn(k[i].name, "abcdefghijklmnopqrstuvwxyz0123456789_") == strlen(k[i].name));
        if (k[i].type == CONF_T_INT || k[i].type == CONF_T_SIZE)
            CHECK(k[i].min <= k[i].max);
        CHECK(strcmp(conf_type_str(k[i].type), "?") != 0);
        for (size_t j = 0; j < i; j++)
            CHECK(strcmp(k[i].name, k[j].name) != 0);
    }
    CHECK(conf_key_find("nope") == NULL);
    CHECK(conf_key_find("LISTEN_PORT") == NULL);
    CHECK(strcmp(conf_ws_frame_str(CONF_WS_FRAME_BINARY), "binary") == 0);
    CHECK(strcmp(conf_log_level_str(CONF_LOG_DEBUG), "debug") == 0);
    CHECK(strcmp(conf_log_level_str((enum conf_log_level)42), "?") == 0);
}

static void test_defaults(void)
{
    struct conf c;
    size_t n;
    const struct conf_key *k = conf_keys(&n);

    conf_init(&c);
    for (size_t i = 0; i < n; i++) {
        struct conf d;
        CHECK(is_default(&c, &k[i]));
        /* The default text parses back to the same value. */
        conf_init(&d);
        CHECK_EQ_INT(conf_set(&d, k[i].name, k[i].def, err, sizeof(err)), 0);
        CHECK(is_default(&d, &k[i]));
        conf_deinit(&d);
    }
    CHECK_EQ_INT(conf_validate(&c, err, sizeof(err)), 0);
    CHECK(strcmp(c.listen_addr, "0.0.0.0") == 0);
    CHECK_EQ_INT(c.listen_port, 15674);
    CHECK(strcmp(c.ws_path, "/ws") == 0);
    CHECK_EQ_INT(c.allow_origins.n, 0);
    CHECK_EQ_INT(c.brokers.n, 1);
    CHECK(strcmp(c.brokers.items[0], "127.0.0.1:5672") == 0);
    CHECK_EQ_INT(c.amqp_channel_max, 2047);
    CHECK_EQ_INT(c.amqp_idle_close_ms, 30000);
    CHECK_EQ_INT(c.max_message_bytes, 33558528);
    CHECK_EQ_INT(c.max_frame_bytes, 33554432);
    CHECK(c.ws_frame == CONF_WS_FRAME_TEXT);
    CHECK(c.log_level == CONF_LOG_INFO);
    CHECK(c.compression == true);
    CHECK(c.default_nack_requeue == true);
    CHECK(c.trailing_lf == false);
    CHECK_EQ_INT(c.deflate_server_max_window_bits, 13);
    CHECK_EQ_INT(c.deflate_mem_level, 6);
    CHECK(strcmp(c.default_topic_exchange, "amq.topic") == 0);
    conf_deinit(&c);
    conf_deinit(&c); /* idempotent */
    CHECK_EQ_INT(c.listen_port, 15674);
}

static void test_int(void)
{
    struct conf c;
    conf_init(&c);
    CHECK_EQ_INT(conf_set(&c, "listen_port", "80", err, sizeof(err)), 0);
    CHECK_EQ_INT(c.listen_port, 80);
    CHECK_EQ_INT(conf_set(&c, "listen_port", "+81", err, sizeof(err)), 0);
    CHECK_EQ_INT(c.listen_port, 81);
    CHECK_EQ_INT(conf_set(&c, "listen_port", "65535", err, sizeof(err)), 0);
    CHECK_EQ_INT(conf_set(&c, "listen_port", "65536", err, sizeof(err)), CONF_E_INVALID);
    CHECK(has(err, "listen_port: out of range (0..65535)"));
    /* max_http_headers stops at the HTTP parser's array (256 lines), not beyond it */
    CHECK_EQ_INT(conf_set(&c, "max_http_headers", "256", err, sizeof(err)), 0);
    CHECK_EQ_INT(conf_set(&c, "max_http_headers", "257", err, sizeof(err)), CONF_E_INVALID);
    CHECK(has(err, "max_http_headers: out of range (8..256)"));
    CHECK_EQ_INT(conf_set(&c, "listen_port", "-1", err, sizeof(err)), CONF_E_INVALID);
    CHECK_EQ_INT(conf_set(&c, "listen_port", "99999999999999999999999", err, sizeof(err)), CONF_E_INVALID);
    CHECK_EQ_INT(conf_set(&c, "listen_port", "-9223372036854775808", err, sizeof(err)), CONF_E_INVALID);
    CHECK_EQ_INT(conf_set(&c, "listen_port", "12a", err, sizeof(err)), CONF_E_INVALID);
    CHECK(has(err, "listen_port: not an integer"));
    CHECK_EQ_INT(conf_set(&c, "listen_port", "", err, sizeof(err)), CONF_E_INVALID);
    CHECK_EQ_INT(conf_set(&c, "listen_port", "-", err, sizeof(err)), CONF_E_INVALID);
    CHECK_EQ_INT(conf_set(&c, "listen_port", " 5", err, sizeof(err)), CONF_E_INVALID);
    CHECK_EQ_INT(c.listen_port, 65535); /* unchanged by the failures */
    CHECK_EQ_INT(conf_set(&c, "deflate_level", "0", err, sizeof(err)), CONF_E_INVALID);
    CHECK(has(err, "(1..9)"));
    CHECK_EQ_INT(conf_set(&c, "deflate_server_max_window_bits", "8", err, sizeof(err)), CONF_E_INVALID);
    CHECK_EQ_INT(conf_set(&c, "deflate_server_max_window_bits", "9", err, sizeof(err)), 0);
    CHECK_EQ_INT(conf_set(&c, "amqp_idle_close_ms", "0", err, sizeof(err)), 0); /* 0 = keep idle connections */
    CHECK_EQ_INT(c.amqp_idle_close_ms, 0);
    CHECK_EQ_INT(conf_set(&c, "amqp_idle_close_ms", "86400000", err, sizeof(err)), 0);
    CHECK_EQ_INT(conf_set(&c, "amqp_idle_close_ms", "86400001", err, sizeof(err)), CONF_E_INVALID);
    CHECK(has(err, "amqp_idle_close_ms: out of range (0..86400000)"));
    conf_deinit(&c);
}

static void test_size(void)
{
    struct conf c;
    conf_init(&c);
    CHECK_EQ_INT(conf_set(&c, "max_frame_bytes", "4k", err, sizeof(err)), 0);
    CHECK_EQ_INT(c.max_frame_bytes, 4096);
    CHECK_EQ_INT(conf_set(&c, "max_frame_bytes", "2M", err, sizeof(err)), 0);
    CHECK_EQ_INT(c.max_frame_bytes, 2 * 1024 * 1024);
    CHECK_EQ_INT(conf_set(&c, "max_frame_bytes", "1g", err, sizeof(err)), 0);
    CHECK_EQ_INT(c.max_frame_bytes, 1024LL * 1024 * 1024);
    CHECK_EQ_INT(conf_set(&c, "max_frame_bytes", "1073741825", err, sizeof(err)), CONF_E_INVALID);
    CHECK(has(err, "max_frame_bytes: out of range (1024..1073741824)"));
    CHECK_EQ_INT(conf_set(&c, "max_frame_bytes", "2G", err, sizeof(err)), CONF_E_INVALID);
    CHECK_EQ_INT(conf_set(&c, "max_frame_bytes", "1023", err, sizeof(err)), CONF_E_INVALID);
    CHECK_EQ_INT(conf_set(&c, "max_frame_bytes", "18014398509481984k", err, sizeof(err)), CONF_E_INVALID);
    CHECK_EQ_INT(conf_set(&c, "max_frame_bytes", "k", err, sizeof(err)), CONF_E_INVALID);
    CHECK(has(err, "not a size"));
    CHECK_EQ_INT(conf_set(&c, "max_frame_bytes", "10x", err, sizeof(err)), CONF_E_INVALID);
    CHECK_EQ_INT(conf_set(&c, "max_frame_bytes", "10kb", err, sizeof(err)), CONF_E_INVALID);
    CHECK_EQ_INT(conf_set(&c, "max_frame_bytes", "-5", err, sizeof(err)), CONF_E_INVALID);
    CHECK_EQ_INT(conf_set(&c, "max_frame_bytes", "", err, sizeof(err)), CONF_E_INVALID);
    CHECK_EQ_INT(c.max_frame_bytes, 1024LL * 1024 * 1024);
    CHECK_EQ_INT(conf_set(&c, "max_body_bytes", "0", err, sizeof(err)), 0);
    CHECK_EQ_INT(c.max_body_bytes, 0);
    conf_deinit(&c);
}

static void test_bool_enum(void)
{
    static const char *const yes[] = {"true", "TRUE", "yes", "On", "1"};
    static const char *const no[] = {"false", "No", "off", "0"};
    struct conf c;
    conf_init(&c);
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        c.trailing_lf = false;
        CHECK_EQ_INT(conf_set(&c, "trailing_lf", yes[i], err, sizeof(err)), 0);
        CHECK(c.trailing_lf);
    }
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
        c.compression = true;
        CHECK_EQ_INT(conf_set(&c, "compression", no[i], err, sizeof(err)), 0);
        CHECK(!c.compression);
    }
    CHECK_EQ_INT(conf_set(&c, "compression", "maybe", err, sizeof(err)), CONF_E_INVALID);
    CHECK(has(err, "compression: not a boolean"));
    CHECK_EQ_INT(conf_set(&c, "compression", "truex", err, sizeof(err)), CONF_E_INVALID);
    CHECK_EQ_INT(conf_set(&c, "ws_frame", "BINARY", err, sizeof(err)), 0);
    CHECK(c.ws_frame == CONF_WS_FRAME_BINARY);
    CHECK_EQ_INT(conf_set(&c, "log_level", "debug", err, sizeof(err)), 0);
    CHECK(c.log_level == CONF_LOG_DEBUG);
    CHECK_EQ_INT(conf_set(&c, "log_level", "verbose", err, sizeof(err)), CONF_E_INVALID);
    CHECK(has(err, "log_level: not one of the allowed names (error|warn|info|debug)"));
    CHECK_EQ_INT(conf_set(&c, "log_level", "", err, sizeof(err)), CONF_E_INVALID);
    CHECK(c.log_level == CONF_LOG_DEBUG);
    conf_deinit(&c);
}

static void test_string_list(void)
{
    struct conf c;
    conf_init(&c);
    CHECK_EQ_INT(conf_set(&c, "default_pass", "s3cret # not a comment", err, sizeof(err)), 0);
    CHECK(strcmp(c.default_pass, "s3cret # not a comment") == 0);
    CHECK_EQ_INT(conf_set(&c, "default_pass", "", err, sizeof(err)), 0);
    CHECK(strcmp(c.default_pass, "") == 0);
    CHECK_EQ_INT(conf_set(&c, "allow_origins", " https://a.example , http://b.example:8080,,  ", err, sizeof(err)), 0);
    CHECK_EQ_INT(c.allow_origins.n, 2);
    CHECK(strcmp(c.allow_origins.items[0], "https://a.example") == 0);
    CHECK(strcmp(c.allow_origins.items[1], "http://b.example:8080") == 0);
    CHECK_EQ_INT(conf_set(&c, "allow_origins", "", err, sizeof(err)), 0);
    CHECK_EQ_INT(c.allow_origins.n, 0);
    CHECK(c.allow_origins.items == NULL);
    CHECK_EQ_INT(conf_set(&c, "brokers", "a:1,b:2,[::1]:5672", err, sizeof(err)), 0);
    CHECK_EQ_INT(c.brokers.n, 3);
    CHECK(strcmp(c.brokers.items[2], "[::1]:5672") == 0);
    CHECK_EQ_INT(conf_set(&c, "brokers", ",", err, sizeof(err)), 0);
    CHECK_EQ_INT(c.brokers.n, 0);
    CHECK_EQ_INT(conf_set(&c, "no_such_key", "1", err, sizeof(err)), CONF_E_INVALID);
    CHECK(strcmp(err, "no_such_key: unknown key") == 0);
    CHECK_EQ_INT(conf_set(&c, "no_such_key", "1", NULL, 0), CONF_E_INVALID);
    conf_deinit(&c);
}

static int load(struct conf *c, const char *text)
{
    return conf_load_buffer(c, "t.conf", text, strlen(text), err, sizeof(err));
}

static void test_file_format(void)
{
    static const char text[] = "# a comment\n"
                               "\n"
                               "   # indented comment\n"
                               "listen_port = 1000\n"
                               "listen_port=1001   # last one wins\n"
                               "default_pass = \"pa ss#word \\\"q\\\" \\\\ \\n\"  # quoted\n"
                               "default_user = a#b\n"
                               "server_name = \t spaced out \t\r\n"
                               "http_root =\n"
                               "default_vhost = \"\"\n"
                               "tls_ca_file = # only a comment\n"
                               "\tlog_level\t=\tDEBUG\n"
                               "max_frame_bytes = 8m\n"
                               "allow_origins = \"https://x, https://y\"\n"
                               "trailing_lf = yes";
    struct conf c;
    conf_init(&c);
    CHECK_EQ_INT(load(&c, text), 0);
    CHECK_EQ_INT(c.listen_port, 1001);
    CHECK(strcmp(c.default_pass, "pa ss#word \"q\" \\ \\n") == 0);
    CHECK(strcmp(c.default_user, "a#b") == 0);
    CHECK(strcmp(c.server_name, "spaced out") == 0);
    CHECK(strcmp(c.http_root, "") == 0);
    CHECK(strcmp(c.default_vhost, "") == 0);
    CHECK(strcmp(c.tls_ca_file, "") == 0);
    CHECK(c.log_level == CONF_LOG_DEBUG);
    CHECK_EQ_INT(c.max_frame_bytes, 8 * 1024 * 1024);
    CHECK_EQ_INT(c.allow_origins.n, 2);
    CHECK(c.trailing_lf);
    /* -o overrides after the file. */
    CHECK_EQ_INT(conf_set(&c, "listen_port", "2000", err, sizeof(err)), 0);
    CHECK_EQ_INT(c.listen_port, 2000);
    /* A second file applies on top. */
    CHECK_EQ_INT(load(&c, "listen_port = 3000\n"), 0);
    CHECK_EQ_INT(c.listen_port, 3000);
    CHECK(strcmp(c.default_user, "a#b") == 0);
    CHECK_EQ_INT(load(&c, ""), 0);
    CHECK_EQ_INT(conf_load_buffer(&c, NULL, "x", 1, err, sizeof(err)), CONF_E_INVALID);
    CHECK(has(err, "<config>:1: x: unknown key"));
    conf_deinit(&c);
}

struct bad_case {
    const char *text;
    const char *msg;
};

static void test_file_errors(void)
{
    static const struct bad_case bad[] = {
        {"listen_port = 1\n\nno_such_key = 5\n", "t.conf:3: no_such_key: unknown key"},
        {"# x\nlisten_port = 70000\n", "t.conf:2: listen_port: out of range (0..65535)"},
        {"listen_port 5\n", "t.conf:1: listen_port: expected '=' after the key"},
        {"listen_port\n", "t.conf:1: listen_port: expected '=' after the key"},
        {"= 5\n", "t.conf:1: expected `key = value`"},
        {"-listen_port = 5\n", "t.conf:1: expected `key = value`"},
        {"listen-port = 5\n", "t.conf:1: listen: unknown key"},
        {"server_name = \"abc\n", "t.conf:1: server_name: unterminated quoted value"},
        {"server_name = \"abc\" def\n", "t.conf:1: server_name: text after the closing quote"},
        {"listen_port = \"1x\"\n", "t.conf:1: listen_port: not an integer"},
        {"compression = perhaps\r\n", "t.conf:1: compression: not a boolean"},
        {"ws_frame = xml\n", "t.conf:1: ws_frame: not one of the allowed names (text|binary)"},
        {"max_body_bytes = 2g\n", "t.conf:1: max_body_bytes: out of range (0..1073741824)"},
        {"a_very_long_key_name_that_goes_on_and_on_and_on_past_the_sixty_four_byte_buffer = 1\n", "t.conf:1: a_very_long_key_name"},
    };
    struct conf c;
    conf_init(&c);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK_EQ_INT(load(&c, bad[i].text), CONF_E_INVALID);
        CHECK(has(err, bad[i].msg));
    }
    /* NUL byte inside a line. */
    CHECK_EQ_INT(conf_load_buffer(&c, "t.conf", "listen_port = 1\nserver_name = a\0b\n", 32, err, sizeof(err)), CONF_E_INVALID);
    CHECK(has(err, "t.conf:2: NUL byte in line"));
    /* All or nothing: the lines before the error did not stick. */
    CHECK_EQ_INT(load(&c, "listen_port = 1\nserver_name = x\nbrokers = a:1\nbogus = 1\n"), CONF_E_INVALID);
    CHECK_EQ_INT(c.listen_port, 15674);
    CHECK(strcmp(c.server_name, "warren") == 0);
    CHECK_EQ_INT(c.brokers.n, 1);
    /* err may be NULL. */
    CHECK_EQ_INT(conf_load_buffer(&c, "t.conf", "bogus = 1", 9, NULL, 0), CONF_E_INVALID);
    conf_deinit(&c);
}

static void test_load_file(void)
{
    char path[] = "/tmp/test-conf-XXXXXX";
    static const char text[] = "listen_port = 4242\nbrokers = h1:5672, h2:5673\n";
    struct conf c;
    int fd = mkstemp(path);

    conf_init(&c);
    CHECK(fd >= 0);
    if (fd >= 0) {
        CHECK_EQ_INT(write(fd, text, sizeof(text) - 1), (long long)sizeof(text) - 1);
        close(fd);
        CHECK_EQ_INT(conf_load_file(&c, path, err, sizeof(err)), 0);
        CHECK_EQ_INT(c.listen_port, 4242);
        CHECK_EQ_INT(c.brokers.n, 2);
        CHECK(strcmp(c.brokers.items[1], "h2:5673") == 0);
        unlink(path);
    }
    CHECK_EQ_INT(conf_load_file(&c, "/nonexistent/warren.conf", err, sizeof(err)), -ENOENT);
    CHECK(has(err, "/nonexistent/warren.conf: "));
    CHECK_EQ_INT(conf_load_file(&c, "/", err, sizeof(err)), -EISDIR);
    CHECK_EQ_INT(c.listen_port, 4242);
    conf_deinit(&c);
}

/* Reads the sample into a heap buffer (NUL-terminated); NULL on failure. */
static char *read_sample(void)
{
    FILE *f = fopen(sample_path, "rb");
    char *buf = NULL;
    size_t len;
    if (!f)
        return NULL;
    buf = calloc(1, 1 << 20);
    len = buf ? fread(buf, 1, (1 << 20) - 1, f) : 0;
    fclose(f);
    if (buf)
        buf[len] = '\0';
    return buf;
}

/*
 * Every key appears in the sample as a commented-out "# key = default" line, and that line, uncommented, loads and
 * leaves the key at its default: the sample shows each default in a form the parser takes.
 */
static void test_sample_uncommented(void)
{
    size_t n;
    const struct conf_key *k = conf_keys(&n);
    char *text = read_sample(), *save = NULL;
    unsigned char *seen = calloc(n, 1);

    CHECK(text != NULL && seen != NULL);
    if (!text || !seen)
        goto out;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        const struct conf_key *key;
        struct conf c;
        char name[64];
        if (sscanf(line, "# %63[a-z0-9_] =", name) != 1 || strncmp(line + 2, name, strlen(name)) != 0 ||
            strncmp(line + 2 + strlen(name), " = ", 3) != 0 || !(key = conf_key_find(name)))
            continue;
        seen[key - k] = 1;
        conf_init(&c);
        if (load(&c, line + 2) != 0)
            fprintf(stderr, "  sample line \"%s\": %s\n", line, err);
        CHECK_EQ_INT(load(&c, line + 2), 0);
        if (!is_default(&c, key))
            fprintf(stderr, "  sample line \"%s\" is not the default %s\n", line, key->def);
        CHECK(is_default(&c, key));
        conf_deinit(&c);
    }
    for (size_t i = 0; i < n; i++) {
        if (!seen[i])
            fprintf(stderr, "  sample lacks \"# %s = ...\"\n", k[i].name);
        CHECK(seen[i]);
    }
out:
    free(text);
    free(seen);
}

static void test_sample(void)
{
    struct conf c;
    size_t n;
    const struct conf_key *k = conf_keys(&n);

    conf_init(&c);
    fprintf(stderr, "  sample: %s\n", sample_path);
    err[0] = '\0';
    CHECK_EQ_INT(conf_load_file(&c, sample_path, err, sizeof(err)), 0);
    if (err[0])
        fprintf(stderr, "  %s\n", err);
    for (size_t i = 0; i < n; i++) {
        if (!is_default(&c, &k[i]))
            fprintf(stderr, "  sample changes %s\n", k[i].name);
        CHECK(is_default(&c, &k[i]));
    }
    CHECK_EQ_INT(conf_validate(&c, err, sizeof(err)), 0);
    conf_deinit(&c);
    test_sample_uncommented();
}

/* Applies `set` ("key=value;key=value") to defaults and returns conf_validate()'s result. */
static int validate_with(const char *set)
{
    struct conf c;
    char buf[512], *save = NULL;
    int r;

    conf_init(&c);
    snprintf(buf, sizeof(buf), "%s", set);
    for (char *kv = strtok_r(buf, ";", &save); kv; kv = strtok_r(NULL, ";", &save)) {
        char *eq = strchr(kv, '=');
        *eq = '\0';
        r = conf_set(&c, kv, eq + 1, err, sizeof(err));
        CHECK_EQ_INT(r, 0);
    }
    err[0] = '\0';
    r = conf_validate(&c, err, sizeof(err));
    conf_deinit(&c);
    return r;
}

static void test_validate(void)
{
    static const struct bad_case bad[] = {
        {"max_body_bytes=33m", "max_body_bytes: 34603008 is above max_frame_bytes (33554432)"},
        {"max_frame_bytes_unauthenticated=40m", "max_frame_bytes_unauthenticated:"},
        {"max_frame_bytes=2k", "max_body_bytes:"},
        {"max_header_line_bytes=40m", "max_header_line_bytes:"},
        {"client_send_buffer_bytes=80m", "client_send_buffer_bytes:"},
        {"default_prefetch_count=200;max_prefetch_count=100", "default_prefetch_count:"},
        {"tls_cert_file=/c.pem", "tls_cert_file: set without tls_key_file"},
        {"tls_key_file=/k.pem", "tls_key_file: set without tls_cert_file"},
        {"tls_listen_port=15673", "tls_listen_port: needs tls_cert_file"},
        {"tls_listen_port=15674;tls_cert_file=c;tls_key_file=k", "tls_listen_port: 15674 is also listen_port"},
        {"listen_port=0", "listen_port: no listener"},
        {"ws_path=ws", "ws_path: must start with '/'"},
        {"brokers=", "brokers: no broker given"},
        {"brokers=localhost", "brokers: 'localhost' is not host:port"},
        {"brokers=h:1,h:", "brokers: 'h:' is not host:port"},
        {"brokers=h:0", "brokers:"},
        {"brokers=h:65536", "brokers:"},
        {"brokers=h:123456", "brokers:"},
        {"brokers=h:1x", "brokers:"},
        {"brokers=:5672", "brokers:"},
        {"brokers=::1:5672", "brokers:"},
        {"brokers=[::1:5672", "brokers:"},
        {"brokers=[]:5672", "brokers:"},
        {"brokers=[::1]x:5672", "brokers:"},
        {"amqp_reconnect_min_ms=40000", "amqp_reconnect_min_ms: 40000 is above amqp_reconnect_max_ms (30000)"},
    };
    static const char *const good[] = {
        "listen_port=0;tls_listen_port=443;tls_cert_file=c;tls_key_file=k",
        "tls_cert_file=c;tls_key_file=k",
        "brokers=rabbit-1.example:5672,[::1]:5672,10.0.0.1:1",
        "max_frame_bytes=64k;max_body_bytes=64k;max_header_line_bytes=64k;max_frame_bytes_unauthenticated=1k",
        "amqp_reconnect_min_ms=100;amqp_reconnect_max_ms=100",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK_EQ_INT(validate_with(bad[i].text), CONF_E_INVALID);
        CHECK(has(err, bad[i].msg));
    }
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        CHECK_EQ_INT(validate_with(good[i]), 0);
        if (err[0])
            fprintf(stderr, "  %s: %s\n", good[i], err);
    }
}

static void test_reload_copy(void)
{
    struct conf a, b;
    const struct conf_key *changed = NULL;

    conf_init(&a);
    CHECK_EQ_INT(conf_set(&a, "server_name", "x", err, sizeof(err)), 0);
    CHECK_EQ_INT(conf_set(&a, "brokers", "h:1,h:2", err, sizeof(err)), 0);
    CHECK_EQ_INT(conf_copy(&b, &a), 0);
    /* Deep copy: changing a does not touch b. */
    CHECK_EQ_INT(conf_set(&a, "server_name", "y", err, sizeof(err)), 0);
    CHECK(strcmp(b.server_name, "x") == 0);
    CHECK(b.brokers.items != a.brokers.items);
    CHECK(strcmp(b.brokers.items[1], "h:2") == 0);
    CHECK(strcmp(b.listen_addr, "0.0.0.0") == 0);
    /* Reloadable keys may differ... */
    CHECK_EQ_INT(conf_reload_check(&a, &b, &changed), 0);
    CHECK_EQ_INT(conf_set(&b, "max_frame_bytes", "1m", err, sizeof(err)), 0);
    CHECK_EQ_INT(conf_reload_check(&a, &b, NULL), 0);
    /* ... restart-only ones may not. */
    CHECK_EQ_INT(conf_set(&b, "brokers", "h:1,h:3", err, sizeof(err)), 0);
    CHECK_EQ_INT(conf_reload_check(&a, &b, &changed), CONF_E_NO_RELOAD);
    CHECK(changed && strcmp(changed->name, "brokers") == 0);
    CHECK_EQ_INT(conf_set(&b, "brokers", "h:1,h:2", err, sizeof(err)), 0);
    CHECK_EQ_INT(conf_set(&b, "brokers", "h:1,h:2", err, sizeof(err)), 0);
    CHECK_EQ_INT(conf_set(&b, "listen_port", "1", err, sizeof(err)), 0);
    CHECK_EQ_INT(conf_reload_check(&a, &b, &changed), CONF_E_NO_RELOAD);
    CHECK(changed == conf_key_find("listen_port"));
    conf_deinit(&a);
    conf_deinit(&b);
}

static void test_format(void)
{
    struct conf c;
    char buf[64], tiny[4];
    const struct conf_key *k = conf_key_find("brokers");

    conf_init(&c);
    CHECK_EQ_INT(conf_set(&c, "brokers", " a:1 , b:2 ", err, sizeof(err)), 0);
    CHECK_EQ_INT(conf_value_format(&c, k, buf, sizeof(buf)), 0);
    CHECK(strcmp(buf, "a:1,b:2") == 0);
    CHECK_EQ_INT(conf_value_format(&c, k, tiny, sizeof(tiny)), -ENOSPC);
    CHECK(strlen(tiny) < sizeof(tiny));
    CHECK_EQ_INT(conf_value_format(&c, conf_key_find("server_name"), tiny, sizeof(tiny)), -ENOSPC);
    CHECK(strcmp(tiny, "war") == 0);
    CHECK_EQ_INT(conf_value_format(&c, conf_key_find("server_name"), tiny, 0), -ENOSPC);
    CHECK_EQ_INT(conf_value_format(&c, conf_key_find("ws_frame"), buf, sizeof(buf)), 0);
    CHECK(strcmp(buf, "text") == 0);
    CHECK_EQ_INT(conf_set(&c, "max_message_bytes", "1m", err, sizeof(err)), 0);
    CHECK_EQ_INT(conf_value_format(&c, conf_key_find("max_message_bytes"), buf, sizeof(buf)), 0);
    CHECK(strcmp(buf, "1048576") == 0);
    conf_deinit(&c);
}

/* Finds conf/warren.conf: argv[1], then the environment, then relative to __FILE__ (see the file comment). */
static const char *find_sample(int argc, char **argv)
{
    static char path[4096];
    const char *root = getenv("WARREN_SOURCE_ROOT");
    const char *suffix = "tests/unit/test-conf.c";
    size_t fl = strlen(__FILE__), sl = strlen(suffix);

    if (argc > 1)
        return argv[1];
    if (!root)
        root = getenv("MESON_SOURCE_ROOT");
    if (root) {
        snprintf(path, sizeof(path), "%s/conf/warren.conf", root);
        return path;
    }
    if (fl >= sl && strcmp(&__FILE__[fl - sl], suffix) == 0) {
        snprintf(path, sizeof(path), "%.*sconf/warren.conf", (int)(fl - sl), __FILE__);
        return path;
    }
    return "conf/warren.conf";
}

int main(int argc, char **argv)
{
    sample_path = find_sample(argc, argv);
    RUN(test_table);
    RUN(test_defaults);
    RUN(test_int);
    RUN(test_size);
    RUN(test_bool_enum);
    RUN(test_string_list);
    RUN(test_file_format);
    RUN(test_file_errors);
    RUN(test_load_file);
    RUN(test_sample);
    RUN(test_validate);
    RUN(test_reload_copy);
    RUN(test_format);
    return harness_done();
}
