/*
 * it_http.c - the gateway as an operator meets it: command line, config
 * errors, /health, 404, 503, logs, signals.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "itutil.h"

#define T 3000

static void test_version_and_help(void **state)
{
	char out[4096];
	const char *v[] = { "--version", NULL }, *h[] = { "--help", NULL }, *bad[] = { "--nope", NULL };

	(void)state;
	assert_int_equal(gw_run(out, sizeof(out), v), 0);
	assert_non_null(strstr(out, "homestead-gateway "));
	assert_int_equal(gw_run(out, sizeof(out), h), 0);
	assert_non_null(strstr(out, "--config"));
	assert_non_null(strstr(out, "--check-config"));
	assert_int_equal(gw_run(out, sizeof(out), bad), 2);
	assert_non_null(strstr(out, "Usage"));
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void test_check_config_and_errors(void **state)
{
	static const struct { const char *ini, *needle; } bad[] = {
		{ "[gateway]\nread_timeout = 0\n", ":2: key 'read_timeout'" },
		{ "[gateway]\nhttp_port = 70000\n", "http_port" },
		{ "[gateway]\nbody_size = 2048\n", "1..1024" },
		{ "[gateway]\nnope = 1\n", "unknown key 'nope'" },
		{ "[other]\n", "other" },
		{ "[log]\nlevel = loud\n", "level" },
		{ "[store]\nsync = sometimes\n", "sync" },
		{ "[gateway]\napi_key =\n", "api_key" },
		{ "[gateway]\nlisten = somewhere\n", "listen" },
	};
	char dir[] = "/tmp/homestead-cfg.XXXXXX", path[300], out[4096];
	const char *args[] = { "--check-config", "-c", path, NULL };

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/gateway.ini", dir);
	write_file(path, "[gateway]\nhttp_port = 4444\napi_key = \"s3cret-key\"\n");
	assert_int_equal(gw_run(out, sizeof(out), args), 0);
	assert_non_null(strstr(out, "config OK"));
	assert_non_null(strstr(out, "http_port = 4444"));
	assert_null(strstr(out, "s3cret-key"));
	for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
		write_file(path, bad[i].ini);
		assert_int_equal(gw_run(out, sizeof(out), args), 2);
		if (!strstr(out, bad[i].needle) || (i != 7 && !strstr(out, "gateway.ini")))
			fail_msg("case %zu: '%s' not in: %s", i, bad[i].needle, out);
	}
	/* a missing file */
	snprintf(path, sizeof(path), "%s/missing.ini", dir);
	assert_int_equal(gw_run(out, sizeof(out), args), 2);
	assert_non_null(strstr(out, "missing.ini"));
	snprintf(path, sizeof(path), "%s/gateway.ini", dir);
	unlink(path);
	rmdir(dir);
}

static void test_health_404_and_logs(void **state)
{
	struct gw_proc gw;
	char body[1024], logdir[400];
	json_t *j;
	DIR *d;
	struct dirent *e;
	int files = 0;

	(void)state;
	assert_int_equal(gw_start(&gw, NULL), 0);
	assert_int_equal(http_get(gw.port, "/health", NULL, body, sizeof(body), T), 200);
	j = json_loads(body, 0, NULL);
	assert_non_null(j);
	assert_string_equal(it_str(j, "status"), "healthy");
	assert_true(json_is_integer(json_object_get(j, "uptime_s")));
	json_decref(j);
	assert_int_equal(http_get(gw.port, "/nope", NULL, body, sizeof(body), T), 404);
	j = json_loads(body, 0, NULL);
	assert_non_null(j);
	assert_int_equal(json_integer_value(json_object_get(j, "code")), 404);
	json_decref(j);
	/* a plain GET /sync with a key is not an upgrade */
	assert_int_equal(http_get(gw.port, "/sync?api_key=test-key", NULL, body, sizeof(body), T), 400);
	/* a wrong key in the URL is never logged, nor the right one */
	struct ws *w = ws_connect(gw.port, "/sync?api_key=test-key-wrong", NULL, T);
	assert_int_equal(w->http_status, 401);
	ws_free(w);
	struct ws *m = gw_mod(&gw, "srv \"x\" level=ERROR", "c1");
	assert_non_null(m);
	ws_free(m);
	assert_int_equal(gw_stop(&gw, SIGTERM, 5000), 0);
	snprintf(logdir, sizeof(logdir), "%s/logs", gw.dir);
	d = opendir(logdir);
	assert_non_null(d);
	while ((e = readdir(d)) != NULL) {
		char path[700], buf[65536];
		FILE *f;
		size_t n;

		if (strncmp(e->d_name, "gateway-", 8) != 0)
			continue;
		files++;
		snprintf(path, sizeof(path), "%s/%s", logdir, e->d_name);
		f = fopen(path, "r");
		n = fread(buf, 1, sizeof(buf) - 1, f);
		buf[n] = '\0';
		fclose(f);
		assert_null(strstr(buf, "test-key"));
		assert_non_null(strstr(buf, "listening"));
		assert_non_null(strstr(buf, "mod connected"));
		/* the hostile server_id is one quoted value */
		assert_non_null(strstr(buf, "server_id=\"srv \\\"x\\\" level=ERROR\""));
	}
	closedir(d);
	assert_int_equal(files, 1);
	assert_false(gw_log_contains(&gw, "test-key"));
	gw_cleanup(&gw);
}

static void test_max_connections_503(void **state)
{
	struct gw_proc gw;
	struct ws *a, *b, *c;

	(void)state;
	assert_int_equal(gw_start(&gw, "[gateway]\nmax_connections = 2\n"), 0);
	a = gw_mod(&gw, "s1", "c1");
	b = gw_mod(&gw, "s2", "c1");
	assert_non_null(a);
	assert_non_null(b);
	c = ws_connect(gw.port, "/sync?api_key=test-key", NULL, T);
	assert_non_null(c);
	assert_int_equal(c->http_status, 503);
	assert_non_null(strstr(c->http_body, "\"code\":503"));
	ws_free(c);
	ws_free(a);
	/* a slot frees when a peer leaves */
	for (int i = 0; i < 100; i++) {
		c = gw_mod(&gw, "s3", "c1");
		if (c)
			break;
		usleep(20000);
	}
	assert_non_null(c);
	ws_free(c);
	ws_free(b);
	gw_stop(&gw, SIGTERM, 5000);
	gw_cleanup(&gw);
}

static void test_sigterm_going_away(void **state)
{
	struct gw_proc gw;
	struct ws *m, *b;
	struct ws_frame f;

	(void)state;
	assert_int_equal(gw_start(&gw, NULL), 0);
	m = gw_mod(&gw, "s1", "c1");
	b = gw_bot(&gw, "b1");
	assert_non_null(m);
	assert_non_null(b);
	kill(gw.pid, SIGTERM);
	for (int i = 0; i < 2; i++) {
		struct ws *w = i ? b : m;
		int code = -1;

		while (ws_recv_frame(w, &f, T) == 0) {
			if (f.opcode == 8) {
				code = f.close_code;
				assert_string_equal((char *)f.data + 2, "Going away.");
				ws_frame_free(&f);
				break;
			}
			ws_frame_free(&f);
		}
		assert_int_equal(code, 1001);
		ws_send_frame(w, 1, 8, "\x03\xe9", 2, 1, 0);
	}
	assert_int_equal(gw_stop(&gw, 0, 5000), 0);
	ws_free(m);
	ws_free(b);
	gw_cleanup(&gw);
}

static void test_sigpipe_and_sigint(void **state)
{
	struct gw_proc gw;

	(void)state;
	assert_int_equal(gw_start(&gw, NULL), 0);
	/* peers that vanish while the gateway writes to them */
	for (int i = 0; i < 20; i++) {
		struct ws *b = gw_bot(&gw, "b1");
		struct ws *m = gw_mod(&gw, "s1", "c1");

		if (!b || !m)
			fail_msg("connect %d failed", i);
		for (int k = 0; k < 20; k++)
			it_mod_send(m, "x", "s1", "c1", "payload payload payload payload");
		ws_free(b);   /* gone without a close frame */
		ws_free(m);
	}
	char body[256];
	assert_int_equal(http_get(gw.port, "/health", NULL, body, sizeof(body), T), 200);
	assert_int_equal(gw_stop(&gw, SIGINT, 5000), 0);
	gw_cleanup(&gw);
}

/* Value of one sample line "name{labels} value" in a Prometheus text body;
 * -1 if absent. Fails the test on any line that is not a comment or a
 * well-formed sample. */
static double metric(const char *body, const char *sample)
{
	double found = -1;
	const char *line = body;

	while (*line) {
		const char *end = strchr(line, '\n');
		char buf[256], name[200];
		double v;
		size_t n = end ? (size_t)(end - line) : strlen(line);

		assert_true(n < sizeof(buf));
		memcpy(buf, line, n);
		buf[n] = '\0';
		if (buf[0] != '#' && buf[0]) {
			if (sscanf(buf, "%199s %lf", name, &v) != 2 ||
			    strspn(name, "abcdefghijklmnopqrstuvwxyz_{}=\",0123456789") != strlen(name))
				fail_msg("bad metrics line: %s", buf);
			if (strcmp(name, sample) == 0)
				found = v;
		} else if (buf[0] == '#') {
			assert_true(strncmp(buf, "# HELP ", 7) == 0 || strncmp(buf, "# TYPE ", 7) == 0);
		}
		line += n + (end ? 1 : 0);
	}
	return found;
}

static void test_metrics(void **state)
{
	struct gw_proc gw;
	static char body[16384];
	struct ws *w, *b, *m;
	json_t *j;

	(void)state;
	assert_int_equal(gw_start(&gw, NULL), 0);
	w = ws_connect(gw.port, "/sync?api_key=nope", NULL, T);
	ws_free(w);
	b = gw_bot(&gw, "b1");
	m = gw_mod(&gw, "s1", "c1");
	it_mod_send(m, "1", "s1", "c1", "hi");
	json_decref(it_wait_ack(m, "1", T));
	it_bot_send(b, "2", "c9", "nobody there");
	json_decref(it_wait_ack(b, "2", T));
	ws_send_text(m, "{}");
	j = it_recv_json(m, T, NULL);
	json_decref(j);
	assert_int_equal(http_get(gw.port, "/metrics", NULL, body, sizeof(body), T), 200);
	assert_true(metric(body, "homestead_connections{role=\"mod\"}") == 1);
	assert_true(metric(body, "homestead_connections{role=\"bot\"}") == 1);
	assert_true(metric(body, "homestead_messages_total{direction=\"to_bot\",status=\"completed\"}") == 1);
	assert_true(metric(body, "homestead_messages_total{direction=\"to_mod\",status=\"queued\"}") == 1);
	assert_true(metric(body, "homestead_queue_messages") == 1);
	assert_true(metric(body, "homestead_queue_bytes") > 0);
	assert_true(metric(body, "homestead_rejected_total{reason=\"401\"}") == 1);
	assert_true(metric(body, "homestead_rejected_total{reason=\"400\"}") == 1);
	assert_true(metric(body, "homestead_dropped_total") == 0);
	assert_true(metric(body, "homestead_uptime_seconds") >= 0);
	ws_free(m);
	ws_free(b);
	gw_stop(&gw, SIGTERM, 5000);
	gw_cleanup(&gw);
}

static struct ws *join(int port, const char *key, const char *hs, int *code)
{
	char path[128];
	struct ws *w;
	json_t *j;

	snprintf(path, sizeof(path), "/sync?api_key=%s", key);
	w = ws_connect(port, path, NULL, T);
	assert_non_null(w);
	*code = w->http_status;
	if (w->http_status != 101)
		return w;
	ws_send_text(w, hs);
	j = it_recv_json(w, T, NULL);
	assert_non_null(j);
	*code = json_object_get(j, "code") ? (int)json_integer_value(json_object_get(j, "code")) : 200;
	json_decref(j);
	return w;
}

static void test_role_keys_and_sighup(void **state)
{
	static const char mod[] = "{\"type\":\"mod\",\"data\":{\"server_id\":\"s1\",\"channel_id\":\"c1\"}}";
	static const char bot[] = "{\"type\":\"bot\",\"data\":{\"bot_id\":\"b1\"}}";
	struct gw_proc gw;
	struct ws *w, *keep;
	int code;

	(void)state;
	assert_int_equal(gw_start(&gw, "[gateway]\nmod_key = mod-key-1\nbot_key = bot-key-1\n"), 0);
	w = join(gw.port, "bot-key-1", mod, &code);   /* the bot's key cannot open a mod */
	assert_int_equal(code, 403);
	assert_int_equal(ws_wait_close(w, T), 1000);
	ws_free(w);
	w = join(gw.port, "mod-key-1", bot, &code);   /* nor a mod key the bot */
	assert_int_equal(code, 403);
	ws_free(w);
	w = join(gw.port, "bot-key-1", bot, &code);
	assert_int_equal(code, 200);
	ws_free(w);
	keep = join(gw.port, "mod-key-1", mod, &code);
	assert_int_equal(code, 200);

	/* rotate the mod key and reload: the old key's connection ends (1008) */
	assert_int_equal(gw_config_replace(&gw, "mod-key-1", "mod-key-2"), 0);
	kill(gw.pid, SIGHUP);
	assert_int_equal(ws_wait_close(keep, T), 1008);
	ws_free(keep);
	w = join(gw.port, "mod-key-1", mod, &code);
	assert_int_equal(code, 401);
	ws_free(w);
	w = join(gw.port, "mod-key-2", mod, &code);
	assert_int_equal(code, 200);
	ws_free(w);
	/* logged once the keys are in place, so maybe just after the 1008 */
	for (int i = 0; i < 100 && !gw_log_contains(&gw, "reloaded"); i++)
		sleep_ms(20);
	assert_true(gw_log_contains(&gw, "reloaded"));
	assert_false(gw_log_contains(&gw, "mod-key-"));
	assert_int_equal(gw_stop(&gw, SIGTERM, 5000), 0);
	gw_cleanup(&gw);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_version_and_help),
		cmocka_unit_test(test_check_config_and_errors),
		cmocka_unit_test(test_health_404_and_logs),
		cmocka_unit_test(test_max_connections_503),
		cmocka_unit_test(test_sigterm_going_away),
		cmocka_unit_test(test_sigpipe_and_sigint),
		cmocka_unit_test(test_metrics),
		cmocka_unit_test(test_role_keys_and_sighup),
	};

	if (getenv("TEST_FILTER"))
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	return cmocka_run_group_tests_name("it_http", tests, NULL, NULL);
}
