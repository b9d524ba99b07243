/*
 * test_config.c - config.c: defaults, every key's valid and invalid values
 * with the exact messages, comments and quotes, the websocket alias,
 * duplicates, relative paths, GATEWAY_API_KEY, config_find.
 *
 * Run from the repository root (./build/test/test_config): the ini cases
 * under test/data/config/ are found by relative path. Table cases are
 * written to a temporary folder.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"

#define DATA "test/data/config/"

static char tmpdir[PATH_MAX];
static char cwd[PATH_MAX];

/* --- helpers --- */

/* snprintf that fails the test instead of truncating. */
__attribute__((format(printf, 3, 4)))
static void fmt(char *buf, size_t size, const char *f, ...)
{
	va_list ap;
	int n;

	va_start(ap, f);
	n = vsnprintf(buf, size, f, ap);
	va_end(ap);
	assert_true(n >= 0 && (size_t)n < size);
}

static void write_file(const char *path, const char *text, size_t len)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(fwrite(text, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

/* Writes text to tmpdir/name and returns the path (static buffer). */
static const char *tmp_ini(const char *name, const char *text)
{
	static char path[PATH_MAX];

	fmt(path, sizeof(path), "%s/%s", tmpdir, name);
	write_file(path, text, strlen(text));
	return path;
}

/* Defaults over /base, then the ini text; returns config_load's result. */
static int load_text(struct gw_config *c, const char *text, char *err,
		     size_t errlen)
{
	config_defaults(c, "/base");
	err[0] = '\0';
	return config_load(c, tmp_ini("case.ini", text), err, errlen);
}

static void expect_ok(struct gw_config *c, const char *text)
{
	char err[1024];
	int rc = load_text(c, text, err, sizeof(err));

	if (rc != 0)
		fail_msg("refused:\n%s\nerror: %s", text, err);
}

/* The text must be refused with exactly "PATH:" + suffix. */
static void expect_error(const char *text, const char *suffix)
{
	struct gw_config c;
	char err[1024], want[1024];

	assert_int_equal(load_text(&c, text, err, sizeof(err)), -1);
	fmt(want, sizeof(want), "%s/case.ini:%s", tmpdir, suffix);
	if (strcmp(err, want) != 0)
		fail_msg("for:\n%s\nwant: %s\ngot:  %s", text, want, err);
	assert_null(strchr(err, '\n'));
}

/* Field by field: struct copies need not copy padding. */
static void assert_config_equal(const struct gw_config *a,
				const struct gw_config *b)
{
	assert_string_equal(a->listen, b->listen);
	assert_int_equal(a->http_port, b->http_port);
	assert_string_equal(a->api_key, b->api_key);
	assert_string_equal(a->mod_key, b->mod_key);
	assert_string_equal(a->bot_key, b->bot_key);
	assert_int_equal(a->body_size, b->body_size);
	assert_int_equal(a->queue_max, b->queue_max);
	assert_int_equal(a->queue_bytes_max, b->queue_bytes_max);
	assert_int_equal(a->max_connections, b->max_connections);
	assert_int_equal(a->handshake_timeout, b->handshake_timeout);
	assert_int_equal(a->ping_interval, b->ping_interval);
	assert_int_equal(a->read_timeout, b->read_timeout);
	assert_int_equal(a->write_timeout, b->write_timeout);
	assert_int_equal(a->bot_probe_timeout, b->bot_probe_timeout);
	assert_int_equal(a->dedup_window, b->dedup_window);
	assert_int_equal(a->rate_limit, b->rate_limit);
	assert_int_equal(a->history, b->history);
	assert_int_equal(a->history_bytes_max, b->history_bytes_max);
	assert_int_equal(a->request_timeout, b->request_timeout);
	assert_int_equal(a->max_per_ip, b->max_per_ip);
	assert_int_equal(a->output_bytes_max, b->output_bytes_max);
	assert_int_equal(a->worker_idle, b->worker_idle);
	assert_string_equal(a->store_path, b->store_path);
	assert_int_equal(a->store_sync, b->store_sync);
	assert_int_equal(a->log_level, b->log_level);
	assert_string_equal(a->log_dir, b->log_dir);
	assert_int_equal(a->log_rotation, b->log_rotation);
	assert_string_equal(a->source, b->source);
}

static void load_file(struct gw_config *c, const char *path)
{
	char err[1024] = "";

	config_defaults(c, "/base");
	if (config_load(c, path, err, sizeof(err)) != 0)
		fail_msg("%s refused: %s", path, err);
}

/* --- setup --- */

static int group_setup(void **state)
{
	(void)state;
	fmt(tmpdir, sizeof(tmpdir), "/tmp/gw-test-config.XXXXXX");
	if (!mkdtemp(tmpdir) || !getcwd(cwd, sizeof(cwd)))
		return -1;
	unsetenv("GATEWAY_API_KEY");
	return 0;
}

static int group_teardown(void **state)
{
	char cmd[PATH_MAX + 16];

	(void)state;
	fmt(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

static int test_teardown(void **state)
{
	(void)state;
	unsetenv("GATEWAY_API_KEY");
	return 0;
}

/* --- defaults --- */

static void test_defaults(void **state)
{
	struct gw_config c;
	char err[256];

	(void)state;
	config_defaults(&c, "/opt/gw");
	assert_string_equal(c.listen, "0.0.0.0");
	assert_int_equal(c.http_port, 3333);
	assert_string_equal(c.api_key, "gateway");
	assert_string_equal(c.mod_key, "");
	assert_string_equal(c.bot_key, "");
	assert_int_equal(c.body_size, 2 * GW_MB);
	assert_int_equal(c.queue_max, 8);
	assert_int_equal(c.queue_bytes_max, 64 * GW_MB);
	assert_int_equal(c.max_connections, 1024);
	assert_int_equal(c.handshake_timeout, 60);
	assert_int_equal(c.ping_interval, 30);
	assert_int_equal(c.read_timeout, 60);
	assert_int_equal(c.write_timeout, 5);
	assert_int_equal(c.bot_probe_timeout, 5);
	assert_int_equal(c.dedup_window, 1024);
	assert_int_equal(c.rate_limit, 0);
	assert_int_equal(c.history, 1000);
	assert_int_equal(c.history_bytes_max, 64 * GW_MB);
	assert_int_equal(c.request_timeout, 10);
	assert_int_equal(c.max_per_ip, 256);
	assert_int_equal(c.output_bytes_max, 256 * GW_MB);
	assert_int_equal(c.worker_idle, 60);
	assert_string_equal(c.store_path, "/opt/gw/data/gateway.db");
	assert_int_equal(c.store_sync, GW_SYNC_NORMAL);
	assert_int_equal(c.log_level, GW_LOG_INFO);
	assert_string_equal(c.log_dir, "/opt/gw/logs");
	assert_int_equal(c.log_rotation, 3);
	assert_string_equal(c.source, "");
	assert_int_equal(config_finish(&c, err, sizeof(err)), 0);
}

static void test_defaults_relative_base(void **state)
{
	struct gw_config c;
	char want[PATH_MAX + 64];

	(void)state;
	config_defaults(&c, "some/./dir/");
	fmt(want, sizeof(want), "%s/some/dir/data/gateway.db", cwd);
	assert_string_equal(c.store_path, want);
	config_defaults(&c, NULL);
	fmt(want, sizeof(want), "%s/logs", cwd);
	assert_string_equal(c.log_dir, want);
	config_defaults(&c, "/");
	assert_string_equal(c.log_dir, "/logs");
}

/* etc/gateway.ini documents the defaults: loading it changes nothing but
 * the folder the paths resolve against, and the source. */
static void test_shipped_file_is_defaults(void **state)
{
	struct gw_config d, c;
	char err[256], etc[PATH_MAX + 16];

	(void)state;
	fmt(etc, sizeof(etc), "%s/etc", cwd);
	config_defaults(&d, etc);
	load_file(&c, "etc/gateway.ini");
	fmt(d.source, sizeof(d.source), "%s/etc/gateway.ini", cwd);
	assert_config_equal(&c, &d);
	assert_int_equal(config_finish(&c, err, sizeof(err)), 0);
}

/* --- every key --- */

static void test_full_file(void **state)
{
	struct gw_config c;
	char err[256], src[PATH_MAX + 32];

	(void)state;
	load_file(&c, DATA "full.ini");
	assert_string_equal(c.listen, "127.0.0.1");
	assert_int_equal(c.http_port, 4444);
	assert_string_equal(c.api_key, "k3y-!#$%&()*+,-./:;<=>?@[]^_`{|}~");
	assert_string_equal(c.mod_key, "mod-secret");
	assert_string_equal(c.bot_key, "bot-secret");
	assert_int_equal(c.body_size, 3 * GW_MB);
	assert_int_equal(c.queue_max, 100);
	assert_int_equal(c.queue_bytes_max, 128 * GW_MB);
	assert_int_equal(c.max_connections, 50);
	assert_int_equal(c.handshake_timeout, 10);
	assert_int_equal(c.ping_interval, 15);
	assert_int_equal(c.read_timeout, 45);
	assert_int_equal(c.write_timeout, 7);
	assert_int_equal(c.bot_probe_timeout, 3);
	assert_int_equal(c.dedup_window, 4096);
	assert_int_equal(c.rate_limit, 20);
	assert_string_equal(c.store_path, "/var/lib/homestead/queue.db");
	assert_int_equal(c.store_sync, GW_SYNC_FULL);
	assert_int_equal(c.log_level, GW_LOG_DEBUG);
	assert_string_equal(c.log_dir, "/var/log/homestead");
	assert_int_equal(c.log_rotation, 14);
	fmt(src, sizeof(src), "%s/" DATA "full.ini", cwd);
	assert_string_equal(c.source, src);
	assert_int_equal(config_finish(&c, err, sizeof(err)), 0);
}

enum field { F_INT, F_UINT, F_SIZE };

struct valid_case {
	const char *ini;
	size_t offset;
	enum field type;
	unsigned long long want;
};

#define GW(line) "[gateway]\n" line "\n"
#define OF(f) offsetof(struct gw_config, f)

/* The edges of every numeric range, and a quoted number. */
static const struct valid_case valid_cases[] = {
	{ GW("http_port = 0"), OF(http_port), F_INT, 0 },
	{ GW("http_port = 1"), OF(http_port), F_INT, 1 },
	{ GW("http_port = 65535"), OF(http_port), F_INT, 65535 },
	{ GW("http_port = 008080"), OF(http_port), F_INT, 8080 },
	{ GW("body_size = 1"), OF(body_size), F_SIZE, 1048576 },
	{ GW("body_size = 1024"), OF(body_size), F_SIZE, 1024ULL * 1048576 },
	{ GW("queue_max = 1"), OF(queue_max), F_UINT, 1 },
	{ GW("queue_max = 100000"), OF(queue_max), F_UINT, 100000 },
	{ GW("queue_bytes_max = 1"), OF(queue_bytes_max), F_SIZE, 1048576 },
	{ GW("queue_bytes_max = 1024"), OF(queue_bytes_max), F_SIZE,
	  1024ULL * 1048576 },
	{ GW("max_connections = 1"), OF(max_connections), F_UINT, 1 },
	{ GW("max_connections = 100000"), OF(max_connections), F_UINT, 100000 },
	{ GW("handshake_timeout = 1"), OF(handshake_timeout), F_INT, 1 },
	{ GW("handshake_timeout = 86400"), OF(handshake_timeout), F_INT, 86400 },
	{ GW("ping_interval = 1"), OF(ping_interval), F_INT, 1 },
	{ GW("ping_interval = 86400"), OF(ping_interval), F_INT, 86400 },
	{ GW("read_timeout = 1"), OF(read_timeout), F_INT, 1 },
	{ GW("read_timeout = 86400"), OF(read_timeout), F_INT, 86400 },
	{ GW("write_timeout = 1"), OF(write_timeout), F_INT, 1 },
	{ GW("write_timeout = 86400"), OF(write_timeout), F_INT, 86400 },
	{ GW("bot_probe_timeout = 1"), OF(bot_probe_timeout), F_INT, 1 },
	{ GW("bot_probe_timeout = 86400"), OF(bot_probe_timeout), F_INT, 86400 },
	{ GW("dedup_window = 1"), OF(dedup_window), F_UINT, 1 },
	{ GW("dedup_window = 1000000"), OF(dedup_window), F_UINT, 1000000 },
	{ GW("rate_limit = 0"), OF(rate_limit), F_UINT, 0 },
	{ GW("rate_limit = 1000000"), OF(rate_limit), F_UINT, 1000000 },
	{ GW("rate_limit = \"7\""), OF(rate_limit), F_UINT, 7 },
	{ GW("history = 0"), OF(history), F_UINT, 0 },
	{ GW("history = 100000"), OF(history), F_UINT, 100000 },
	{ GW("history_bytes_max = 1"), OF(history_bytes_max), F_SIZE, 1048576 },
	{ GW("history_bytes_max = 1024"), OF(history_bytes_max), F_SIZE, 1024ULL * 1048576 },
	{ GW("request_timeout = 1"), OF(request_timeout), F_INT, 1 },
	{ GW("request_timeout = 86400"), OF(request_timeout), F_INT, 86400 },
	{ GW("max_per_ip = 1"), OF(max_per_ip), F_UINT, 1 },
	{ GW("max_per_ip = 100000"), OF(max_per_ip), F_UINT, 100000 },
	{ GW("output_bytes_max = 1"), OF(output_bytes_max), F_SIZE, 1048576 },
	{ GW("output_bytes_max = 1024"), OF(output_bytes_max), F_SIZE, 1024ULL * 1048576 },
	{ GW("worker_idle = 1"), OF(worker_idle), F_INT, 1 },
	{ GW("worker_idle = 86400"), OF(worker_idle), F_INT, 86400 },
	{ "[log]\nrotation = 1\n", OF(log_rotation), F_INT, 1 },
	{ "[log]\nrotation = 3650\n", OF(log_rotation), F_INT, 3650 },
};

static void test_valid_numbers(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(valid_cases) / sizeof(valid_cases[0]); i++) {
		const struct valid_case *v = &valid_cases[i];
		struct gw_config c;
		const char *f;
		unsigned long long got;

		expect_ok(&c, v->ini);
		f = (const char *)&c + v->offset;
		if (v->type == F_INT)
			got = (unsigned long long)*(const int *)(const void *)f;
		else if (v->type == F_UINT)
			got = *(const unsigned *)(const void *)f;
		else
			got = *(const size_t *)(const void *)f;
		if (got != v->want)
			fail_msg("%s: want %llu got %llu", v->ini, v->want, got);
	}
}

static void test_valid_words(void **state)
{
	struct gw_config c;
	static const char *const levels[] = { "debug", "info", "warn", "error" };
	static const char *const syncs[] = { "off", "normal", "full" };
	char ini[128];
	int i;

	(void)state;
	for (i = 0; i < 4; i++) {
		fmt(ini, sizeof(ini), "[log]\nlevel = %s\n", levels[i]);
		expect_ok(&c, ini);
		assert_int_equal(c.log_level, i);
		assert_string_equal(config_level_name(c.log_level), levels[i]);
	}
	expect_ok(&c, "[log]\nlevel = WARN\n");     /* case does not matter */
	assert_int_equal(c.log_level, GW_LOG_WARN);
	for (i = 0; i < 3; i++) {
		fmt(ini, sizeof(ini), "[store]\nsync = %s\n", syncs[i]);
		expect_ok(&c, ini);
		assert_int_equal(c.store_sync, i);
		assert_string_equal(config_sync_name(c.store_sync), syncs[i]);
	}
	assert_string_equal(config_level_name((enum gw_log_level)9), "?");
	assert_string_equal(config_sync_name((enum gw_sync)9), "?");

	expect_ok(&c, GW("listen = 192.168.1.20"));
	assert_string_equal(c.listen, "192.168.1.20");
	expect_ok(&c, GW("listen = ::"));
	assert_string_equal(c.listen, "::");
	expect_ok(&c, GW("listen = 2001:db8::1"));
	assert_string_equal(c.listen, "2001:db8::1");
	expect_ok(&c, GW("listen = ::ffff:10.0.0.1"));
	assert_string_equal(c.listen, "::ffff:10.0.0.1");
	expect_ok(&c, GW("mod_key = m\nbot_key = b"));
	assert_string_equal(c.mod_key, "m");
	assert_string_equal(c.bot_key, "b");
	expect_ok(&c, GW("mod_key = m\nmod_key ="));      /* unset again */
	assert_string_equal(c.mod_key, "");
}

/* A 255-byte key is the longest accepted; 256 is refused (and not shown). */
static void test_key_length(void **state)
{
	struct gw_config c;
	char key[300], ini[400];

	(void)state;
	memset(key, 'k', 255);
	key[255] = '\0';
	fmt(ini, sizeof(ini), "[gateway]\napi_key = \"%s\"\n", key);
	expect_ok(&c, ini);
	assert_string_equal(c.api_key, key);
	strcat(key, "k");
	fmt(ini, sizeof(ini), "[gateway]\nbot_key = %s\n", key);
	expect_error(ini, "2: key 'bot_key' in [gateway]: value is not a valid "
		     "key (accepted: empty or 1..255 printable ASCII characters "
		     "without spaces)");
}

struct bad_case {
	const char *ini;
	const char *want;       /* after "FILE:" */
};

#define SECS "(accepted: 1..86400 seconds)"
#define KEYS "(accepted: 1..255 printable ASCII characters without spaces)"

static const struct bad_case bad_cases[] = {
	/* numbers: not a number, sign, junk, empty, range, overflow */
	{ GW("read_timeout = abc"),
	  "2: key 'read_timeout' in [gateway]: 'abc' is not a whole number " SECS },
	{ GW("read_timeout = 0"),
	  "2: key 'read_timeout' in [gateway]: '0' is out of range " SECS },
	{ GW("read_timeout = 86401"),
	  "2: key 'read_timeout' in [gateway]: '86401' is out of range " SECS },
	{ GW("read_timeout = -5"),
	  "2: key 'read_timeout' in [gateway]: '-5' is not a whole number " SECS },
	{ GW("read_timeout = +5"),
	  "2: key 'read_timeout' in [gateway]: '+5' is not a whole number " SECS },
	{ GW("read_timeout = 5s"),
	  "2: key 'read_timeout' in [gateway]: '5s' is not a whole number " SECS },
	{ GW("read_timeout = 1.5"),
	  "2: key 'read_timeout' in [gateway]: '1.5' is not a whole number " SECS },
	{ GW("read_timeout = 0x10"),
	  "2: key 'read_timeout' in [gateway]: '0x10' is not a whole number " SECS },
	{ GW("read_timeout = 5 0"),
	  "2: key 'read_timeout' in [gateway]: '5 0' is not a whole number " SECS },
	{ GW("read_timeout ="),
	  "2: key 'read_timeout' in [gateway]: value is empty " SECS },
	{ GW("read_timeout = \"\""),
	  "2: key 'read_timeout' in [gateway]: value is empty " SECS },
	{ GW("read_timeout = 99999999999999999999999999"),
	  "2: key 'read_timeout' in [gateway]: '99999999999999999999999999' is out "
	  "of range " SECS },
	{ GW("read_timeout = 99999999999999999999999999x"),
	  "2: key 'read_timeout' in [gateway]: '99999999999999999999999999x' is "
	  "not a whole number " SECS },
	{ GW("handshake_timeout = 0"),
	  "2: key 'handshake_timeout' in [gateway]: '0' is out of range " SECS },
	{ GW("ping_interval = 86401"),
	  "2: key 'ping_interval' in [gateway]: '86401' is out of range " SECS },
	{ GW("write_timeout = 0"),
	  "2: key 'write_timeout' in [gateway]: '0' is out of range " SECS },
	{ GW("worker_idle = 0"),
	  "2: key 'worker_idle' in [gateway]: '0' is out of range " SECS },
	{ GW("bot_probe_timeout = x"),
	  "2: key 'bot_probe_timeout' in [gateway]: 'x' is not a whole number "
	  SECS },
	{ GW("http_port = 65536"),
	  "2: key 'http_port' in [gateway]: '65536' is out of range (accepted: "
	  "0..65535, 0 = any free port)" },
	{ GW("http_port = http"),
	  "2: key 'http_port' in [gateway]: 'http' is not a whole number "
	  "(accepted: 0..65535, 0 = any free port)" },
	{ GW("body_size = 0"),
	  "2: key 'body_size' in [gateway]: '0' is out of range (accepted: "
	  "1..1024 MB)" },
	{ GW("body_size = 1025"),
	  "2: key 'body_size' in [gateway]: '1025' is out of range (accepted: "
	  "1..1024 MB)" },
	{ GW("body_size = 2MB"),
	  "2: key 'body_size' in [gateway]: '2MB' is not a whole number "
	  "(accepted: 1..1024 MB)" },
	{ GW("queue_bytes_max = 0"),
	  "2: key 'queue_bytes_max' in [gateway]: '0' is out of range "
	  "(accepted: 1..1024 MB)" },
	{ GW("queue_bytes_max = 2048"),
	  "2: key 'queue_bytes_max' in [gateway]: '2048' is out of range "
	  "(accepted: 1..1024 MB)" },
	{ GW("request_timeout = 0"),
	  "2: key 'request_timeout' in [gateway]: '0' is out of range "
	  "(accepted: 1..86400 seconds)" },
	{ GW("max_per_ip = 0"),
	  "2: key 'max_per_ip' in [gateway]: '0' is out of range (accepted: "
	  "1..100000)" },
	{ GW("output_bytes_max = 1025"),
	  "2: key 'output_bytes_max' in [gateway]: '1025' is out of range "
	  "(accepted: 1..1024 MB)" },
	{ GW("queue_max = 0"),
	  "2: key 'queue_max' in [gateway]: '0' is out of range (accepted: "
	  "1..100000)" },
	{ GW("history = 100001"),
	  "2: key 'history' in [gateway]: '100001' is out of range (accepted: "
	  "0..100000 messages per channel and direction, 0 = none)" },
	{ GW("history_bytes_max = 0"),
	  "2: key 'history_bytes_max' in [gateway]: '0' is out of range "
	  "(accepted: 1..1024 MB)" },
	{ GW("queue_max = 100001"),
	  "2: key 'queue_max' in [gateway]: '100001' is out of range (accepted: "
	  "1..100000)" },
	{ GW("max_connections = 0"),
	  "2: key 'max_connections' in [gateway]: '0' is out of range (accepted: "
	  "1..100000)" },
	{ GW("max_connections = 100001"),
	  "2: key 'max_connections' in [gateway]: '100001' is out of range "
	  "(accepted: 1..100000)" },
	{ GW("dedup_window = 0"),
	  "2: key 'dedup_window' in [gateway]: '0' is out of range (accepted: "
	  "1..1000000)" },
	{ GW("dedup_window = 1000001"),
	  "2: key 'dedup_window' in [gateway]: '1000001' is out of range "
	  "(accepted: 1..1000000)" },
	{ GW("rate_limit = 1000001"),
	  "2: key 'rate_limit' in [gateway]: '1000001' is out of range "
	  "(accepted: 0..1000000 messages/s, 0 = off)" },
	{ GW("rate_limit = -1"),
	  "2: key 'rate_limit' in [gateway]: '-1' is not a whole number "
	  "(accepted: 0..1000000 messages/s, 0 = off)" },
	{ "[log]\nrotation = 0\n",
	  "2: key 'rotation' in [log]: '0' is out of range (accepted: 1..3650 "
	  "days)" },
	{ "[log]\nrotation = 3651\n",
	  "2: key 'rotation' in [log]: '3651' is out of range (accepted: "
	  "1..3650 days)" },
	/* words */
	{ "[log]\nlevel = verbose\n",
	  "2: key 'level' in [log]: 'verbose' is not a log level (accepted: "
	  "debug, info, warn, error)" },
	{ "[log]\nlevel =\n",
	  "2: key 'level' in [log]: '' is not a log level (accepted: debug, info, "
	  "warn, error)" },
	{ "[store]\nsync = always\n",
	  "2: key 'sync' in [store]: 'always' is not a sync mode (accepted: off, "
	  "normal, full)" },
	/* listen */
	{ GW("listen = localhost"),
	  "2: key 'listen' in [gateway]: 'localhost' is not an IPv4 or IPv6 "
	  "address (accepted: an IPv4 or IPv6 address such as 0.0.0.0, "
	  "127.0.0.1 or ::)" },
	{ GW("listen = [::1]"),
	  "2: key 'listen' in [gateway]: '[::1]' is not an IPv4 or IPv6 address "
	  "(accepted: an IPv4 or IPv6 address such as 0.0.0.0, 127.0.0.1 or ::)" },
	{ GW("listen = 1.2.3.4:80"),
	  "2: key 'listen' in [gateway]: '1.2.3.4:80' is not an IPv4 or IPv6 "
	  "address (accepted: an IPv4 or IPv6 address such as 0.0.0.0, "
	  "127.0.0.1 or ::)" },
	{ GW("listen = 256.0.0.1"),
	  "2: key 'listen' in [gateway]: '256.0.0.1' is not an IPv4 or IPv6 "
	  "address (accepted: an IPv4 or IPv6 address such as 0.0.0.0, "
	  "127.0.0.1 or ::)" },
	{ GW("listen ="),
	  "2: key 'listen' in [gateway]: value is empty (accepted: an IPv4 or "
	  "IPv6 address such as 0.0.0.0, 127.0.0.1 or ::)" },
	/* keys: never echoed */
	{ GW("api_key = \"two words\""),
	  "2: key 'api_key' in [gateway]: value is not a valid key " KEYS },
	{ GW("websocket = \"tab\there\""),
	  "2: key 'websocket' in [gateway]: value is not a valid key " KEYS },
	{ GW("mod_key = \"sp ace\""),
	  "2: key 'mod_key' in [gateway]: value is not a valid key (accepted: "
	  "empty or 1..255 printable ASCII characters without spaces)" },
	{ GW("bot_key = caf\xc3\xa9"),
	  "2: key 'bot_key' in [gateway]: value is not a valid key (accepted: "
	  "empty or 1..255 printable ASCII characters without spaces)" },
	{ GW("api_key = \"unclosed"),
	  "2: key 'api_key' in [gateway]: value has no closing double quote " KEYS },
	/* quotes and paths */
	{ GW("http_port = \"80"),
	  "2: key 'http_port' in [gateway]: '\"80' has no closing double quote "
	  "(accepted: 0..65535, 0 = any free port)" },
	{ "[store]\npath = \"a\001b\"\n",
	  "2: key 'path' in [store]: 'a?b' contains a control character "
	  "(accepted: a file path, relative to this file's folder; empty = "
	  "memory only)" },
	/* structure */
	{ "; first\n[gateway]\n\nfoo = 1\n",
	  "4: unknown key 'foo' in [gateway] (accepted: listen, http_port, "
	  "api_key, websocket, mod_key, bot_key, body_size, queue_max, "
	  "queue_bytes_max, max_connections, handshake_timeout, ping_interval, "
	  "read_timeout, write_timeout, bot_probe_timeout, dedup_window, "
	  "rate_limit, history, history_bytes_max, request_timeout, max_per_ip, "
	  "output_bytes_max, worker_idle)" },
	{ "[store]\nlevel = info\n",
	  "2: unknown key 'level' in [store] (accepted: path, sync)" },
	{ "[log]\nHttp_Port = 1\n",
	  "2: unknown key 'Http_Port' in [log] (accepted: level, directory, "
	  "rotation)" },
	{ "[gateway]\n[Gateway]\n",
	  "2: unknown section 'Gateway' (accepted: [gateway], [store], [log])" },
	{ "http_port = 1\n",
	  "1: key 'http_port' is outside any section (accepted: [gateway], "
	  "[store], [log])" },
	{ "[gateway\nhttp_port = 1\n",
	  "1: syntax error: no ']' after the section name" },
	{ "[gateway] x\n", "1: syntax error: text after ']'" },
	{ "[gateway]\nhttp_port 80\n", "2: syntax error: expected 'key = value'" },
	/* no continuation lines: an indented line is a line of its own */
	{ "[gateway]\nhttp_port = 80\n   81\n",
	  "3: syntax error: expected 'key = value'" },
	/* the first error is the one reported */
	{ "[gateway]\nqueue_max = 0\nbody_size = 0\n",
	  "2: key 'queue_max' in [gateway]: '0' is out of range (accepted: "
	  "1..100000)" },
	/* a long value is cut when echoed */
	{ GW("read_timeout = 12345678901234567890123456789012345678901234567890"),
	  "2: key 'read_timeout' in [gateway]: "
	  "'1234567890123456789012345678901234567890...' is out of range " SECS },
};

static void test_bad_values(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++)
		expect_error(bad_cases[i].ini, bad_cases[i].want);
}

/* No message ever shows a key's value, whatever is wrong with it. */
static void test_keys_never_echoed(void **state)
{
	static const char *const lines[] = {
		"api_key = \"hunter2 x\"", "websocket = \"hunter2 x\"",
		"mod_key = \"hunter2 x\"", "bot_key = \"hunter2 x\"",
		"api_key = \"hunter2", "bot_key = \"hunter2\x7f\"",
	};
	struct gw_config c;
	char err[1024], ini[128];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
		fmt(ini, sizeof(ini), "[gateway]\n%s\n", lines[i]);
		assert_int_equal(load_text(&c, ini, err, sizeof(err)), -1);
		if (strstr(err, "hunter2"))
			fail_msg("key shown: %s", err);
	}
	setenv("GATEWAY_API_KEY", "hunter2 x", 1);
	config_defaults(&c, "/base");
	assert_int_equal(config_finish(&c, err, sizeof(err)), -1);
	assert_null(strstr(err, "hunter2"));
}

/* An error leaves the caller's config as it was. */
static void test_error_leaves_config(void **state)
{
	struct gw_config before, c;
	char err[256];

	(void)state;
	config_defaults(&before, "/base");
	c = before;
	assert_int_equal(config_load(&c, tmp_ini("partial.ini",
		"[gateway]\nhttp_port = 1\n[store]\npath = x\nsync = bad\n"),
		err, sizeof(err)), -1);
	assert_config_equal(&c, &before);
}

/* --- files: comments, quotes, alias, duplicates, paths --- */

static void test_unknown_key_file(void **state)
{
	struct gw_config c;
	char err[1024];

	(void)state;
	config_defaults(&c, "/base");
	assert_int_equal(config_load(&c, DATA "unknown-key.ini", err,
				     sizeof(err)), -1);
	assert_string_equal(err, DATA "unknown-key.ini:5: unknown key "
		"'max_conections' in [gateway] (accepted: listen, http_port, "
		"api_key, websocket, mod_key, bot_key, body_size, queue_max, "
		"queue_bytes_max, max_connections, handshake_timeout, "
		"ping_interval, read_timeout, write_timeout, bot_probe_timeout, "
		"dedup_window, rate_limit, history, history_bytes_max, "
		"request_timeout, max_per_ip, output_bytes_max, worker_idle)");
}

/* Refused even though the section has no keys. */
static void test_unknown_section_file(void **state)
{
	struct gw_config c;
	char err[1024];

	(void)state;
	config_defaults(&c, "/base");
	assert_int_equal(config_load(&c, DATA "unknown-section.ini", err,
				     sizeof(err)), -1);
	assert_string_equal(err, DATA "unknown-section.ini:4: unknown section "
			    "'server' (accepted: [gateway], [store], [log])");
}

static void test_comments(void **state)
{
	struct gw_config c;

	(void)state;
	load_file(&c, DATA "comments.ini");
	assert_int_equal(c.http_port, 4001);
	assert_int_equal(c.max_connections, 9);
	assert_string_equal(c.api_key, "ab#cd;ef");
}

static void test_quoted(void **state)
{
	struct gw_config c;
	char want[PATH_MAX + 64];

	(void)state;
	load_file(&c, DATA "quoted.ini");
	assert_string_equal(c.listen, "::1");
	assert_int_equal(c.http_port, 4000);
	assert_string_equal(c.api_key, "a;b#c");
	assert_string_equal(c.mod_key, "");
	fmt(want, sizeof(want), "%s/" DATA "my dir ; # x/queue.db", cwd);
	assert_string_equal(c.store_path, want);
	assert_int_equal(c.log_level, GW_LOG_WARN);
	fmt(want, sizeof(want), "%s/" DATA "log files", cwd);
	assert_string_equal(c.log_dir, want);
}

static void test_bom_crlf(void **state)
{
	struct gw_config c;

	(void)state;
	load_file(&c, DATA "bom-crlf.ini");
	assert_int_equal(c.http_port, 4002);
	assert_string_equal(c.api_key, "crlf-key");
}

static void test_websocket_alias(void **state)
{
	struct gw_config c;

	(void)state;
	load_file(&c, DATA "alias.ini");
	assert_string_equal(c.api_key, "old-name-key");
	expect_ok(&c, GW("websocket = \"gateway2\""));
	assert_string_equal(c.api_key, "gateway2");
	expect_ok(&c, GW("websocket = a\napi_key = b"));
	assert_string_equal(c.api_key, "b");
}

static void test_duplicates_later_wins(void **state)
{
	struct gw_config c;

	(void)state;
	load_file(&c, DATA "duplicates.ini");
	assert_int_equal(c.http_port, 2000);
	assert_string_equal(c.api_key, "second");
	assert_int_equal(c.log_level, GW_LOG_DEBUG);
}

static void test_relative_paths(void **state)
{
	struct gw_config c;
	char want[PATH_MAX + 64];

	(void)state;
	load_file(&c, DATA "sub/relative.ini");
	fmt(want, sizeof(want), "%s/" DATA "db/queue.db", cwd);
	assert_string_equal(c.store_path, want);
	fmt(want, sizeof(want), "%s/" DATA "sub/daily", cwd);
	assert_string_equal(c.log_dir, want);

	/* Paths the file does not set: the defaults, from the file's folder. */
	load_file(&c, DATA "sub/defaults-only.ini");
	assert_int_equal(c.http_port, 5555);
	fmt(want, sizeof(want), "%s/" DATA "sub/data/gateway.db", cwd);
	assert_string_equal(c.store_path, want);
	fmt(want, sizeof(want), "%s/" DATA "sub/logs", cwd);
	assert_string_equal(c.log_dir, want);

	/* Also through "..", and absolute ones are only cleaned. */
	load_file(&c, "test/../" DATA "sub/defaults-only.ini");
	assert_string_equal(c.log_dir, want);
	expect_ok(&c, "[store]\npath = //var/./lib//gw/../gw/q.db\n"
		  "[log]\ndirectory = /../../x/\n");
	assert_string_equal(c.store_path, "/var/lib/gw/q.db");
	assert_string_equal(c.log_dir, "/x");
}

static void test_empty_paths(void **state)
{
	struct gw_config c;

	(void)state;
	load_file(&c, DATA "empty-paths.ini");
	assert_string_equal(c.store_path, "");
	assert_string_equal(c.log_dir, "");
}

static void test_long_path(void **state)
{
	struct gw_config c;
	static char ini[2 * PATH_MAX], path[2 * PATH_MAX], want[2 * PATH_MAX];
	char err[512];

	(void)state;
	memset(path, 'p', 3000);
	path[0] = '/';
	path[3000] = '\0';
	fmt(ini, sizeof(ini), "[store]\npath = \"%s\"\n", path);
	expect_ok(&c, ini);
	assert_string_equal(c.store_path, path);

	/* Fits the line, not PATH_MAX. */
	memset(path, 'p', PATH_MAX + 1);
	path[0] = '/';
	path[PATH_MAX + 1] = '\0';
	fmt(ini, sizeof(ini), "[store]\npath = %s\n", path);
	expect_error(ini, "2: key 'path' in [store]: "
		     "'/ppppppppppppppppppppppppppppppppppppppp...' is too long "
		     "once made absolute (accepted: a file path, relative to this "
		     "file's folder; empty = memory only)");

	/* Longer than a line may be. */
	memset(path, 'p', 5000);
	path[5000] = '\0';
	fmt(ini, sizeof(ini), "[store]\npath = %s\n", path);
	assert_int_equal(load_text(&c, ini, err, sizeof(err)), -1);
	fmt(want, sizeof(want), "%s/case.ini:2: syntax error: line is "
		 "longer than %d bytes", tmpdir, PATH_MAX + 254);
	assert_string_equal(err, want);
}

static void test_nul_byte(void **state)
{
	struct gw_config c;
	char err[512], want[PATH_MAX + 64], path[PATH_MAX + 16];
	static const char text[] = "[gateway]\nhttp_port = 1\0 2\n";

	(void)state;
	fmt(path, sizeof(path), "%s/nul.ini", tmpdir);
	write_file(path, text, sizeof(text) - 1);
	config_defaults(&c, "/base");
	assert_int_equal(config_load(&c, path, err, sizeof(err)), -1);
	fmt(want, sizeof(want), "%s:2: syntax error: NUL byte in line", path);
	assert_string_equal(err, want);
}

static void test_unreadable(void **state)
{
	struct gw_config c;
	char err[512], want[PATH_MAX + 64];

	(void)state;
	config_defaults(&c, "/base");
	assert_int_equal(config_load(&c, "test/data/config/missing.ini", err,
				     sizeof(err)), -1);
	assert_string_equal(err, "test/data/config/missing.ini: cannot read: No "
			    "such file or directory");
	assert_int_equal(config_load(&c, tmpdir, err, sizeof(err)), -1);
	fmt(want, sizeof(want), "%s: cannot read: Is a directory", tmpdir);
	assert_string_equal(err, want);
}

/* --- config_finish --- */

static void test_env_overrides_key(void **state)
{
	struct gw_config c;
	char err[512];

	(void)state;
	expect_ok(&c, GW("api_key = from-file"));
	setenv("GATEWAY_API_KEY", "from-env", 1);
	assert_int_equal(config_finish(&c, err, sizeof(err)), 0);
	assert_string_equal(c.api_key, "from-env");

	/* The file's key may be empty when the environment gives one. */
	expect_ok(&c, GW("api_key ="));
	assert_int_equal(config_finish(&c, err, sizeof(err)), 0);
	assert_string_equal(c.api_key, "from-env");

	setenv("GATEWAY_API_KEY", "bad key", 1);
	expect_ok(&c, GW("api_key = from-file"));
	assert_int_equal(config_finish(&c, err, sizeof(err)), -1);
	assert_string_equal(err, "GATEWAY_API_KEY: value is not a valid key " KEYS);

	setenv("GATEWAY_API_KEY", "", 1);
	assert_int_equal(config_finish(&c, err, sizeof(err)), -1);
	assert_string_equal(err, "GATEWAY_API_KEY: value is empty " KEYS);
}

static void test_empty_key_refused(void **state)
{
	struct gw_config c;
	char err[512];

	(void)state;
	expect_ok(&c, GW("api_key = \"\""));
	assert_string_equal(c.api_key, "");
	assert_int_equal(config_finish(&c, err, sizeof(err)), -1);
	assert_string_equal(err, "api_key is empty: set a key in [gateway] or "
			    "GATEWAY_API_KEY " KEYS);
}

static void test_read_timeout_over_ping(void **state)
{
	struct gw_config c;
	char err[512], want[PATH_MAX + 256];

	(void)state;
	expect_ok(&c, GW("ping_interval = 30\nread_timeout = 30"));
	assert_int_equal(config_finish(&c, err, sizeof(err)), -1);
	fmt(want, sizeof(want), "%s/case.ini: key 'read_timeout' in "
		 "[gateway]: 30 is not greater than ping_interval 30 (accepted: "
		 "read_timeout > ping_interval)", tmpdir);
	assert_string_equal(err, want);
	expect_ok(&c, GW("ping_interval = 30\nread_timeout = 31"));
	assert_int_equal(config_finish(&c, err, sizeof(err)), 0);
}

/* --- config_find --- */

static void test_find(void **state)
{
	char dir[PATH_MAX], out[PATH_MAX + 32], want[PATH_MAX + 32];

	(void)state;
	fmt(dir, sizeof(dir), "%s/exe", tmpdir);
	assert_int_equal(mkdir(dir, 0755), 0);
	assert_int_equal(config_find(dir, out, sizeof(out)), 0);

	fmt(want, sizeof(want), "%s/gateway.ini", dir);
	assert_int_equal(mkdir(want, 0755), 0);         /* not a regular file */
	assert_int_equal(config_find(dir, out, sizeof(out)), 0);
	assert_int_equal(rmdir(want), 0);

	write_file(want, "", 0);
	assert_int_equal(config_find(dir, out, sizeof(out)), 1);
	assert_string_equal(out, want);
	assert_int_equal(config_find(dir, out, 10), 0);         /* too small */
	assert_int_equal(config_find("", out, sizeof(out)), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_defaults_relative_base),
		cmocka_unit_test(test_shipped_file_is_defaults),
		cmocka_unit_test(test_full_file),
		cmocka_unit_test(test_valid_numbers),
		cmocka_unit_test(test_valid_words),
		cmocka_unit_test(test_key_length),
		cmocka_unit_test(test_bad_values),
		cmocka_unit_test_teardown(test_keys_never_echoed, test_teardown),
		cmocka_unit_test(test_error_leaves_config),
		cmocka_unit_test(test_unknown_key_file),
		cmocka_unit_test(test_unknown_section_file),
		cmocka_unit_test(test_comments),
		cmocka_unit_test(test_quoted),
		cmocka_unit_test(test_bom_crlf),
		cmocka_unit_test(test_websocket_alias),
		cmocka_unit_test(test_duplicates_later_wins),
		cmocka_unit_test(test_relative_paths),
		cmocka_unit_test(test_empty_paths),
		cmocka_unit_test(test_long_path),
		cmocka_unit_test(test_nul_byte),
		cmocka_unit_test(test_unreadable),
		cmocka_unit_test_teardown(test_env_overrides_key, test_teardown),
		cmocka_unit_test(test_empty_key_refused),
		cmocka_unit_test(test_read_timeout_over_ping),
		cmocka_unit_test(test_find),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
