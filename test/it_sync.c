/*
 * it_sync.c - the /sync protocol against the real binary over real sockets:
 * auth, handshake, routing, acks, queues, validation, frames, liveness.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "itutil.h"

#define T 3000   /* ms: generous receive timeout */

static struct gw_proc gw;

static int up(void **state)
{
	(void)state;
	return gw_start(&gw, NULL);
}

static int up_many(void **state)
{
	(void)state;
	return gw_start(&gw, "max_connections = 256\n");
}

static int down(void **state)
{
	(void)state;
	gw_stop(&gw, SIGTERM, 5000);
	gw_cleanup(&gw);
	return 0;
}

static struct ws *raw(const char *path)
{
	return ws_connect(gw.port, path, NULL, T);
}

static void expect_error_then_close(struct ws *w, int code, const char *message)
{
	int cc = 0;
	json_t *j = it_recv_json(w, T, &cc);

	assert_non_null(j);
	assert_int_equal(json_integer_value(json_object_get(j, "code")), code);
	assert_string_equal(it_str(j, "message"), message);
	json_decref(j);
	assert_int_equal(ws_wait_close(w, T), 1000);
}

/* --- auth ------------------------------------------------------------ */

static void test_auth_missing_and_wrong_key(void **state)
{
	const char *paths[] = { "/sync", "/sync?api_key=", "/sync?api_key=wrong", "/sync?api_key=test-ke" };

	(void)state;
	for (size_t i = 0; i < sizeof(paths) / sizeof(*paths); i++) {
		struct ws *w = raw(paths[i]);

		assert_non_null(w);
		assert_int_equal(w->http_status, 401);
		assert_string_equal(w->http_body, "{\"message\":\"Unauthorized.\",\"code\":401}");
		ws_free(w);
	}
	assert_false(gw_log_contains(&gw, "test-key"));
	assert_false(gw_log_contains(&gw, "wrong"));
}

static void test_auth_header_and_query(void **state)
{
	struct ws *w;

	(void)state;
	w = ws_connect(gw.port, "/sync", "X-API-Key: test-key\r\n", T);
	assert_non_null(w);
	assert_int_equal(w->http_status, 101);
	ws_free(w);
	w = raw("/sync?api_key=test-key");
	assert_int_equal(w->http_status, 101);
	ws_free(w);
}

/* --- handshake -------------------------------------------------------- */

static void test_handshake_ok(void **state)
{
	struct ws *w = raw("/sync?api_key=test-key");
	json_t *j;

	(void)state;
	ws_send_text(w, "{\"type\":\"mod\",\"data\":{\"server_id\":\"s1\",\"channel_id\":\"c1\"}}");
	j = it_recv_json(w, T, NULL);
	assert_non_null(j);
	assert_string_equal(it_str(j, "status"), "connected");
	assert_string_equal(it_str(j, "type"), "mod");
	json_decref(j);
	ws_free(w);

	w = raw("/sync?api_key=test-key");
	ws_send_text(w, "{\"type\":\"bot\",\"data\":{\"bot_id\":\"b1\"}}");
	j = it_recv_json(w, T, NULL);
	assert_non_null(j);
	assert_string_equal(it_str(j, "status"), "connected");
	assert_string_equal(it_str(j, "type"), "bot");
	json_decref(j);
	ws_free(w);
}

static void test_handshake_errors(void **state)
{
	static const struct { const char *frame, *message; } cases[] = {
		{ "not json", "Malformed handshake." },
		{ "[]", "Malformed handshake." },
		{ "{\"type\":\"mod\"}", "Malformed handshake." },
		{ "{\"type\":\"mod\",\"data\":{\"server_id\":\"s1\"}}", "Malformed handshake." },
		{ "{\"type\":\"mod\",\"data\":{\"server_id\":\"\",\"channel_id\":\"c\"}}", "Malformed handshake." },
		{ "{\"type\":\"bot\",\"data\":{\"bot_id\":5}}", "Malformed handshake." },
		{ "{\"type\":\"admin\",\"data\":{}}", "Unknown handshake." },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
		struct ws *w = raw("/sync?api_key=test-key");

		ws_send_text(w, cases[i].frame);
		expect_error_then_close(w, 400, cases[i].message);
		ws_free(w);
	}
}

static void test_handshake_timeout(void **state)
{
	struct ws *w = raw("/sync?api_key=test-key");
	int cc = 0;
	json_t *j;

	(void)state;
	/* handshake_timeout = 2 s in the harness config */
	j = it_recv_json(w, 4000, &cc);
	assert_non_null(j);
	assert_int_equal(json_integer_value(json_object_get(j, "code")), 408);
	json_decref(j);
	assert_int_equal(ws_wait_close(w, T), 1000);
	ws_free(w);
}

/* b1 is still the bot: a message of its own is acked. */
static void bot_still_works(struct ws *b1)
{
	json_t *ack;

	it_bot_send(b1, "m1", "c1", "hi");
	ack = it_wait_ack(b1, "m1", T);
	assert_non_null(ack);
	json_decref(ack);
}

static void test_bot_conflict_when_alive(void **state)
{
	struct ws *b1 = gw_bot(&gw, "b1"), *b2;
	char *t;

	(void)state;
	assert_non_null(b1);
	b2 = raw("/sync?api_key=test-key");
	ws_send_text(b2, "{\"type\":\"bot\",\"data\":{\"bot_id\":\"b2\"}}");
	/* b1 answers the probe ping (ws_recv_text pongs) */
	t = ws_recv_text(b1, 1500, NULL);
	free(t);
	expect_error_then_close(b2, 409, "Bot already connected.");
	ws_free(b2);
	/* b1 still works */
	bot_still_works(b1);
	ws_free(b1);
}

/* b1 answers the next probe ping with its pong; returns 0, or -1 if none
 * came within T. */
static int answer_probe(struct ws *b1)
{
	struct ws_frame f;

	while (ws_recv_frame(b1, &f, T) == 0) {
		int probe = f.opcode == 9;

		if (probe)
			ws_send_frame(b1, 1, 10, f.data, f.len, 1, 0);
		ws_frame_free(&f);
		if (probe)
			return 0;
	}
	return -1;
}

/* Sockets go to the reader threads in turn (reader.c): a newcomer lands on
 * the old bot's reader at least once in 8 tries (there are 2 to 8). Its
 * join waits for the old bot's pong, which that same reader must read: it
 * waits elsewhere, so the old bot answers in time every time. */
static void test_bot_conflict_same_reader(void **state)
{
	struct ws *b1 = gw_bot(&gw, "b1");

	(void)state;
	assert_non_null(b1);
	for (int i = 0; i < 8; i++) {
		struct ws *b2 = raw("/sync?api_key=test-key");

		ws_send_text(b2, "{\"type\":\"bot\",\"data\":{\"bot_id\":\"b2\"}}");
		assert_int_equal(answer_probe(b1), 0);
		expect_error_then_close(b2, 409, "Bot already connected.");
		ws_free(b2);
	}
	bot_still_works(b1);
	ws_free(b1);
}

static void test_bot_replaced_when_silent(void **state)
{
	struct ws *b1 = gw_bot(&gw, "b1"), *b2;
	json_t *j;

	(void)state;
	assert_non_null(b1);
	/* b1 never reads again: the probe goes unanswered (1 s) */
	b2 = gw_bot(&gw, "b2");
	assert_non_null(b2);
	/* the old bot's connection was ended */
	assert_int_equal(ws_wait_close(b1, T), 4003);
	struct ws *m = gw_mod(&gw, "s1", "c1");
	it_mod_send(m, "x1", "s1", "c1", "to the new bot");
	j = it_wait_msg(b2, T);
	assert_non_null(j);
	assert_string_equal(it_str(j, "content"), "to the new bot");
	json_decref(j);
	ws_free(m);
	ws_free(b1);
	ws_free(b2);
}

/* --- routing ---------------------------------------------------------- */

static void test_mod_to_bot_completed_shape(void **state)
{
	struct ws *b = gw_bot(&gw, "b1"), *m = gw_mod(&gw, "srv-1", "chan-1");
	json_t *ack, *j;

	(void)state;
	assert_non_null(b);
	assert_non_null(m);
	assert_int_equal(ws_send_text(m, "{\"msg_id\":\"m-1\",\"id\":\"srv-1\",\"destination\":"
	                                 "{\"channel_id\":\"chan-1\"},\"author\":{\"id\":\"p1\",\"name\":"
	                                 "\"Steve\"},\"content\":\"hello\",\"meta\":{\"world\":\"overworld\"},"
	                                 "\"ts\":\"2025-12-08T10:30:00Z\"}"), 0);
	ack = it_wait_ack(m, "m-1", T);
	assert_non_null(ack);
	assert_string_equal(it_str(ack, "status"), "completed");
	assert_string_equal(it_str(ack, "type"), "mod");
	json_decref(ack);
	j = it_wait_msg(b, T);
	assert_non_null(j);
	assert_string_equal(it_str(j, "type"), "mod");
	assert_string_equal(it_str(j, "channel_id"), "chan-1");
	assert_string_equal(it_str(j, "msg_id"), "m-1");
	assert_string_equal(it_str(j, "server_id"), "srv-1");
	assert_string_equal(it_str(json_object_get(j, "author"), "id"), "p1");
	assert_string_equal(it_str(json_object_get(j, "author"), "name"), "Steve");
	assert_string_equal(it_str(j, "content"), "hello");
	assert_string_equal(it_str(json_object_get(j, "meta"), "world"), "overworld");
	assert_string_equal(it_str(j, "ts"), "2025-12-08T10:30:00Z");
	assert_int_equal(strlen(it_str(j, "received_at")), 24);
	assert_int_equal(strlen(it_str(j, "forwarded_at")), 24);
	assert_null(json_object_get(j, "dropped"));
	json_decref(j);
	ws_free(m);
	ws_free(b);
}

static void test_bot_to_mods_fanout(void **state)
{
	struct ws *b = gw_bot(&gw, "b1");
	struct ws *m1 = gw_mod(&gw, "s1", "c1"), *m2 = gw_mod(&gw, "s2", "c1"), *m3 = gw_mod(&gw, "s3", "c2");
	json_t *ack, *j;

	(void)state;
	it_bot_send(b, "b-1", "c1", "from discord");
	ack = it_wait_ack(b, "b-1", T);
	assert_string_equal(it_str(ack, "status"), "completed");
	assert_string_equal(it_str(ack, "type"), "bot");
	json_decref(ack);
	for (int i = 0; i < 2; i++) {
		j = it_wait_msg(i ? m2 : m1, T);
		assert_non_null(j);
		assert_string_equal(it_str(j, "type"), "bot");
		assert_string_equal(it_str(j, "channel_id"), "c1");
		assert_string_equal(it_str(j, "content"), "from discord");
		assert_null(json_object_get(j, "server_id"));
		json_decref(j);
	}
	/* the other channel got nothing */
	assert_null(it_wait_msg(m3, 300));
	ws_free(m1);
	ws_free(m2);
	ws_free(m3);
	ws_free(b);
}

static void test_queued_then_flushed_in_order(void **state)
{
	struct ws *m = gw_mod(&gw, "s1", "c1"), *b;
	char id[16];
	json_t *ack, *j;

	(void)state;
	for (int i = 0; i < 5; i++) {
		snprintf(id, sizeof(id), "q%d", i);
		it_mod_send(m, id, "s1", "c1", id);
		ack = it_wait_ack(m, id, T);
		assert_string_equal(it_str(ack, "status"), "queued");
		json_decref(ack);
	}
	b = gw_bot(&gw, "b1");
	assert_non_null(b);
	for (int i = 0; i < 5; i++) {
		snprintf(id, sizeof(id), "q%d", i);
		j = it_wait_msg(b, T);
		assert_non_null(j);
		assert_string_equal(it_str(j, "msg_id"), id);
		json_decref(j);
	}
	/* and the other way: bot -> offline channel, then the mod connects */
	it_bot_send(b, "to-c9", "c9", "later");
	ack = it_wait_ack(b, "to-c9", T);
	assert_string_equal(it_str(ack, "status"), "queued");
	json_decref(ack);
	struct ws *m9 = gw_mod(&gw, "s9", "c9");
	j = it_wait_msg(m9, T);
	assert_non_null(j);
	assert_string_equal(it_str(j, "content"), "later");
	json_decref(j);
	ws_free(m9);
	ws_free(m);
	ws_free(b);
}

static void test_ring_overflow_counts_dropped(void **state)
{
	struct ws *m = gw_mod(&gw, "s1", "c1"), *b;
	char id[16];
	json_t *j;

	(void)state;
	/* queue_max = 8 (default): 12 queued, the first 4 overwritten */
	for (int i = 0; i < 12; i++) {
		snprintf(id, sizeof(id), "o%d", i);
		it_mod_send(m, id, "s1", "c1", id);
		json_decref(it_wait_ack(m, id, T));
	}
	/* one warning for the burst, not one per lost message */
	assert_true(gw_log_contains(&gw, "queue full, oldest message dropped"));
	b = gw_bot(&gw, "b1");
	j = it_wait_msg(b, T);
	assert_string_equal(it_str(j, "msg_id"), "o4");
	assert_int_equal(json_integer_value(json_object_get(j, "dropped")), 4);
	json_decref(j);
	j = it_wait_msg(b, T);
	assert_string_equal(it_str(j, "msg_id"), "o5");
	assert_null(json_object_get(j, "dropped"));
	json_decref(j);
	ws_free(m);
	ws_free(b);
}

static void test_same_server_id_replaces(void **state)
{
	struct ws *old = gw_mod(&gw, "s1", "c1"), *nw, *b;
	json_t *j;

	(void)state;
	assert_non_null(old);
	nw = gw_mod(&gw, "s1", "c1");
	assert_non_null(nw);
	assert_int_equal(ws_wait_close(old, T), 4000);
	b = gw_bot(&gw, "b1");
	it_bot_send(b, "r1", "c1", "only once");
	j = it_wait_msg(nw, T);
	assert_non_null(j);
	json_decref(j);
	j = it_wait_ack(b, "r1", T);
	assert_string_equal(it_str(j, "status"), "completed");
	json_decref(j);
	ws_free(old);
	ws_free(nw);
	ws_free(b);
}

/* Many mods on one channel: each server_id is found among them (the
 * registry's name table grows past its first buckets) and replaced, only
 * on its own channel. */
static void test_replace_among_many(void **state)
{
	enum { N = 150 };
	struct ws *m[N], *other, *b, *old;
	const int again[] = { 0, 77, N - 1 };
	char sid[16];
	json_t *j;

	(void)state;
	for (int i = 0; i < N; i++) {
		snprintf(sid, sizeof(sid), "s%d", i);
		m[i] = gw_mod(&gw, sid, "c1");
		assert_non_null(m[i]);
	}
	other = gw_mod(&gw, "s7", "c2");   /* the same name elsewhere: not replaced */
	assert_non_null(other);
	for (size_t k = 0; k < sizeof(again) / sizeof(again[0]); k++) {
		snprintf(sid, sizeof(sid), "s%d", again[k]);
		old = m[again[k]];
		m[again[k]] = gw_mod(&gw, sid, "c1");
		assert_non_null(m[again[k]]);
		assert_int_equal(ws_wait_close(old, T), 4000);
		ws_free(old);
	}
	ws_free(m[5]);   /* s5 leaves and comes back */
	m[5] = gw_mod(&gw, "s5", "c1");
	assert_non_null(m[5]);
	b = gw_bot(&gw, "b1");
	assert_non_null(b);
	it_bot_send(b, "many-1", "c1", "to all");
	j = it_wait_ack(b, "many-1", T);
	assert_string_equal(it_str(j, "status"), "completed");
	json_decref(j);
	for (int i = 0; i < N; i++) {
		j = it_wait_msg(m[i], T);
		assert_non_null(j);
		assert_string_equal(it_str(j, "content"), "to all");
		json_decref(j);
	}
	for (size_t k = 0; k < sizeof(again) / sizeof(again[0]); k++)
		assert_null(it_wait_msg(m[again[k]], 100));
	it_bot_send(b, "many-2", "c2", "to c2");
	j = it_wait_msg(other, T);
	assert_non_null(j);
	assert_string_equal(it_str(j, "content"), "to c2");
	json_decref(j);
	for (int i = 0; i < N; i++)
		ws_free(m[i]);
	ws_free(other);
	ws_free(b);
}

static void test_duplicate_resend_not_routed(void **state)
{
	struct ws *b = gw_bot(&gw, "b1"), *m = gw_mod(&gw, "s1", "c1");
	json_t *j;

	(void)state;
	it_mod_send(m, "d1", "s1", "c1", "once");
	j = it_wait_ack(m, "d1", T);
	assert_string_equal(it_str(j, "status"), "completed");
	assert_null(json_object_get(j, "duplicate"));
	json_decref(j);
	/* the same msg_id again, then again after a reconnect of the mod */
	for (int round = 0; round < 2; round++) {
		if (round) {
			ws_free(m);
			m = gw_mod(&gw, "s1", "c1");
		}
		it_mod_send(m, "d1", "s1", "c1", "once");
		j = it_wait_ack(m, "d1", T);
		assert_string_equal(it_str(j, "status"), "completed");
		assert_true(json_is_true(json_object_get(j, "duplicate")));
		json_decref(j);
	}
	/* another mod may use the same msg_id: its own window */
	struct ws *m2 = gw_mod(&gw, "s2", "c1");
	it_mod_send(m2, "d1", "s2", "c1", "other sender");
	j = it_wait_ack(m2, "d1", T);
	assert_null(json_object_get(j, "duplicate"));
	json_decref(j);
	/* the bot got each message exactly once */
	j = it_wait_msg(b, T);
	assert_string_equal(it_str(j, "content"), "once");
	json_decref(j);
	j = it_wait_msg(b, T);
	assert_string_equal(it_str(j, "content"), "other sender");
	json_decref(j);
	assert_null(it_wait_msg(b, 300));
	/* a queued message keeps its first status */
	ws_free(b);
	for (int i = 0; i < 200; i++) {   /* until the gateway saw the bot leave */
		char body[256];

		if (http_get(gw.port, "/health", NULL, body, sizeof(body), T) == 200 &&
		    strstr(body, "\"bot\":false"))
			break;
		usleep(10000);
	}
	it_mod_send(m, "d2", "s1", "c1", "queued once");
	j = it_wait_ack(m, "d2", T);
	assert_string_equal(it_str(j, "status"), "queued");
	json_decref(j);
	it_mod_send(m, "d2", "s1", "c1", "queued once");
	j = it_wait_ack(m, "d2", T);
	assert_string_equal(it_str(j, "status"), "queued");
	assert_true(json_is_true(json_object_get(j, "duplicate")));
	json_decref(j);
	ws_free(m);
	ws_free(m2);
}

static json_t *hello(struct ws *w, const char *hs)
{
	ws_send_text(w, hs);
	return it_recv_json(w, T, NULL);
}

static void test_presence_events(void **state)
{
	struct ws *quiet = gw_bot(&gw, "quiet"), *b, *m1, *m2;
	json_t *j, *mods;

	(void)state;
	/* without asking, nothing changes on the wire */
	m1 = gw_mod(&gw, "s1", "c1");
	assert_null(it_recv_json(quiet, 300, NULL));
	ws_send_frame(quiet, 1, 8, "\x03\xe8", 2, 1, 0);
	ws_wait_close(quiet, T);
	ws_free(quiet);
	/* the echo of its close comes before its reader has left (slow under
	 * the sanitizers): wait until the gateway says the bot is gone */
	for (int64_t until = now_ms() + T; now_ms() < until; sleep_ms(10)) {
		char body[256] = "";

		if (http_get(gw.port, "/health", NULL, body, sizeof(body), T) == 200 &&
		    strstr(body, "\"bot\":false"))
			break;
	}

	/* a mod that asks learns the bot is away, then its comings and goings */
	m2 = raw("/sync?api_key=test-key");
	j = hello(m2, "{\"type\":\"mod\",\"data\":{\"server_id\":\"s2\",\"channel_id\":\"c2\",\"events\":true}}");
	assert_string_equal(it_str(j, "status"), "connected");
	assert_true(json_is_false(json_object_get(j, "bot")));
	json_decref(j);

	/* a bot that asks gets the mods online in its connected reply */
	b = raw("/sync?api_key=test-key");
	j = hello(b, "{\"type\":\"bot\",\"data\":{\"bot_id\":\"b1\",\"events\":true}}");
	assert_string_equal(it_str(j, "status"), "connected");
	mods = json_object_get(j, "mods");
	assert_int_equal(json_array_size(mods), 2);
	json_decref(j);
	j = it_recv_json(m2, T, NULL);
	assert_string_equal(it_str(j, "type"), "event");
	assert_string_equal(it_str(j, "event"), "bot_connected");
	assert_string_equal(it_str(j, "bot_id"), "b1");
	assert_int_equal(strlen(it_str(j, "ts")), 24);
	json_decref(j);

	/* mods coming and going */
	ws_free(m1);
	j = it_recv_json(b, T, NULL);
	assert_string_equal(it_str(j, "event"), "mod_disconnected");
	assert_string_equal(it_str(j, "channel_id"), "c1");
	assert_string_equal(it_str(j, "server_id"), "s1");
	json_decref(j);
	m1 = gw_mod(&gw, "s3", "c1");
	j = it_recv_json(b, T, NULL);
	assert_string_equal(it_str(j, "event"), "mod_connected");
	assert_string_equal(it_str(j, "server_id"), "s3");
	json_decref(j);
	/* the mod without events got nothing extra */
	assert_null(it_recv_json(m1, 300, NULL));

	ws_send_frame(b, 1, 8, "\x03\xe8", 2, 1, 0);
	ws_wait_close(b, T);
	j = it_recv_json(m2, T, NULL);
	assert_string_equal(it_str(j, "event"), "bot_disconnected");
	json_decref(j);
	ws_free(b);
	ws_free(m1);
	ws_free(m2);
}

static void test_rate_limit(void **state)
{
	struct gw_proc rl;
	struct ws *m;
	char id[16];
	int ok = 0, limited = 0;
	json_t *j;

	(void)state;
	assert_int_equal(gw_start(&rl, "[gateway]\nrate_limit = 5\n"), 0);
	m = gw_mod(&rl, "s1", "c1");
	for (int i = 0; i < 20; i++) {
		snprintf(id, sizeof(id), "r%d", i);
		it_mod_send(m, id, "s1", "c1", "spam");
	}
	for (int i = 0; i < 20; i++) {
		j = it_recv_json(m, T, NULL);
		assert_non_null(j);
		snprintf(id, sizeof(id), "r%d", i);
		assert_string_equal(it_str(j, "msg_id"), id);
		if (json_object_get(j, "status")) {
			ok++;
		} else {
			assert_int_equal(json_integer_value(json_object_get(j, "code")), 429);
			assert_string_equal(it_str(j, "message"), "Rate limit exceeded.");
			limited++;
		}
		json_decref(j);
	}
	/* a burst of twice the rate passes (plus what refilled meanwhile) */
	assert_true(ok >= 10 && ok <= 12);
	assert_int_equal(ok + limited, 20);
	/* the connection stays, and the bucket refills */
	usleep(450000);
	it_mod_send(m, "later", "s1", "c1", "calm");
	j = it_wait_ack(m, "later", T);
	assert_non_null(j);
	json_decref(j);
	ws_free(m);
	gw_stop(&rl, SIGTERM, 5000);
	gw_cleanup(&rl);
}

/* --- validation --------------------------------------------------------- */

static void test_malformed_messages_keep_connection(void **state)
{
	static const char *bad[] = {
		"not json",
		"{\"msg_id\":\"v1\"}",
		"{\"msg_id\":\"v2\",\"id\":\"other\",\"destination\":{\"channel_id\":\"c1\"},\"author\":{\"id\":\"p\"},\"content\":\"x\"}",
		"{\"msg_id\":\"v3\",\"id\":\"s1\",\"destination\":{\"channel_id\":\"c1\"},\"author\":{\"id\":\"p\"},\"content\":\"\"}",
		"{\"msg_id\":\"v4\",\"id\":\"s1\",\"destination\":{\"channel_id\":\"c1\"},\"author\":{\"id\":\"p\"},\"content\":5}",
		"{\"msg_id\":\"v5\",\"id\":\"s1\",\"destination\":{\"channel_id\":\"c1\"},\"author\":{\"id\":\"p\"},\"content\":\"x\",\"ts\":\"yesterday\"}",
		"{\"msg_id\":\"v6\",\"id\":\"s1\",\"destination\":{\"channel_id\":\"c1\"},\"author\":{\"id\":\"p\"},\"content\":\"x\",\"meta\":[]}",
		"{\"msg_id\":\"v7\",\"id\":\"s1\",\"author\":{\"id\":\"p\"},\"content\":\"x\"}",
	};
	static const char *ids[] = { NULL, "v1", "v2", "v3", "v4", "v5", "v6", "v7" };
	struct ws *m = gw_mod(&gw, "s1", "c1");
	json_t *j;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
		ws_send_text(m, bad[i]);
		j = it_recv_json(m, T, NULL);
		assert_non_null(j);
		assert_int_equal(json_integer_value(json_object_get(j, "code")), 400);
		assert_string_equal(it_str(j, "message"), "Malformed message.");
		if (ids[i])
			assert_string_equal(it_str(j, "msg_id"), ids[i]);
		else
			assert_true(json_is_null(json_object_get(j, "msg_id")));
		json_decref(j);
	}
	/* invalid UTF-8 in a text frame */
	ws_send_text(m, "{\"msg_id\":\"u\",\"id\":\"s1\",\"destination\":{\"channel_id\":\"c1\"},"
	                "\"author\":{\"id\":\"p\"},\"content\":\"\xff\xfe\"}");
	j = it_recv_json(m, T, NULL);
	assert_int_equal(json_integer_value(json_object_get(j, "code")), 400);
	json_decref(j);
	/* still open and working */
	it_mod_send(m, "ok", "s1", "c1", "fine");
	j = it_wait_ack(m, "ok", T);
	assert_non_null(j);
	assert_string_equal(it_str(j, "status"), "queued");
	json_decref(j);
	ws_free(m);
}

static void test_unicode_round_trip(void **state)
{
	const char *content = "h\xc3\xa9llo \xe4\xb8\x96\xe7\x95\x8c \xf0\x9f\x98\x80 e\xcc\x81 \"q\" \\ \xe2\x80\xae";
	struct ws *b = gw_bot(&gw, "b1"), *m = gw_mod(&gw, "s1", "c1");
	json_t *j;

	(void)state;
	it_mod_send(m, "\xf0\x9f\x8e\xae-id", "s1", "c1", content);
	j = it_wait_msg(b, T);
	assert_non_null(j);
	assert_string_equal(it_str(j, "content"), content);
	assert_string_equal(it_str(j, "msg_id"), "\xf0\x9f\x8e\xae-id");
	json_decref(j);
	j = it_wait_ack(m, "\xf0\x9f\x8e\xae-id", T);
	assert_non_null(j);
	json_decref(j);
	ws_free(m);
	ws_free(b);
}

static void test_fragmented_and_binary(void **state)
{
	struct ws *b = gw_bot(&gw, "b1"), *m = gw_mod(&gw, "s1", "c1");
	const char *msg = "{\"msg_id\":\"f1\",\"id\":\"s1\",\"destination\":{\"channel_id\":\"c1\"},"
	                  "\"author\":{\"id\":\"p\"},\"content\":\"fragmented\"}";
	size_t len = strlen(msg);
	json_t *j;

	(void)state;
	ws_send_frame(m, 0, 1, msg, 10, 1, 0);
	ws_send_frame(m, 1, 9, "ping", 4, 1, 0);   /* control frames may interleave */
	ws_send_frame(m, 0, 0, msg + 10, 20, 1, 0);
	ws_send_frame(m, 1, 0, msg + 30, len - 30, 1, 0);
	j = it_wait_msg(b, T);
	assert_non_null(j);
	assert_string_equal(it_str(j, "content"), "fragmented");
	json_decref(j);
	j = it_wait_ack(m, "f1", T);
	assert_non_null(j);
	json_decref(j);

	msg = "{\"msg_id\":\"bin\",\"id\":\"s1\",\"destination\":{\"channel_id\":\"c1\"},"
	      "\"author\":{\"id\":\"p\"},\"content\":\"binary\"}";
	ws_send_frame(m, 1, 2, msg, strlen(msg), 1, 0);
	j = it_wait_msg(b, T);
	assert_non_null(j);
	assert_string_equal(it_str(j, "content"), "binary");
	json_decref(j);
	ws_free(m);
	ws_free(b);
}

/* --- frames and liveness ---------------------------------------------- */

static void test_ping_pong_and_close_echo(void **state)
{
	struct ws *m = gw_mod(&gw, "s1", "c1");
	struct ws_frame f;
	int got_ping = 0;

	(void)state;
	ws_send_frame(m, 1, 9, "hey", 3, 1, 0);
	assert_int_equal(ws_recv_frame(m, &f, T), 0);
	assert_int_equal(f.opcode, 10);
	assert_int_equal(f.len, 3);
	assert_memory_equal(f.data, "hey", 3);
	ws_frame_free(&f);
	/* the server pings every ping_interval (1 s) */
	for (int i = 0; i < 5 && !got_ping; i++) {
		if (ws_recv_frame(m, &f, 1500) == 0) {
			got_ping = f.opcode == 9;
			ws_frame_free(&f);
		}
	}
	assert_true(got_ping);
	ws_send_frame(m, 1, 8, "\x0f\xa0" "bye", 5, 1, 0);   /* 4000 */
	assert_int_equal(ws_wait_close(m, T), 4000);
	ws_free(m);
}

static void test_silent_peer_dropped(void **state)
{
	struct ws *m = gw_mod(&gw, "s1", "c1");
	struct ws_frame f;
	int rc, code = 0;

	(void)state;
	/* read frames but never answer pings: read_timeout = 3 s */
	while ((rc = ws_recv_frame(m, &f, 6000)) == 0) {
		if (f.opcode == 8) {
			code = f.close_code;
			ws_frame_free(&f);
			break;
		}
		ws_frame_free(&f);
	}
	assert_true(code == 4001 || rc == -2);
	assert_true(gw_log_contains(&gw, "read timeout"));
	ws_free(m);
}

static void test_oversized_message_1009(void **state)
{
	struct ws *m = gw_mod(&gw, "s1", "c1");
	unsigned char hdr[14] = { 0x81, 0xFF, 0, 0, 0, 0, 0x7F, 0, 0, 0, 1, 2, 3, 4 };

	(void)state;
	/* a single header announcing 2 GiB: refused unread */
	ws_send_raw(m, hdr, sizeof(hdr));
	assert_int_equal(ws_wait_close(m, T), 1009);
	ws_free(m);

	/* fragments that add up to more than body_size (2 MB) */
	m = gw_mod(&gw, "s1", "c1");
	{
		size_t n = 1024 * 1024;
		char *big = malloc(n);

		memset(big, 'a', n);
		ws_send_frame(m, 0, 1, big, n, 1, 0);
		ws_send_frame(m, 0, 0, big, n, 1, 0);
		ws_send_frame(m, 1, 0, big, n, 1, 0);
		free(big);
	}
	assert_int_equal(ws_wait_close(m, T), 1009);
	ws_free(m);
}

static void test_protocol_violations_1002(void **state)
{
	struct ws *m;

	(void)state;
	m = gw_mod(&gw, "s1", "c1");
	ws_send_frame(m, 1, 1, "{}", 2, 0, 0);  /* unmasked */
	assert_int_equal(ws_wait_close(m, T), 1002);
	ws_free(m);
	m = gw_mod(&gw, "s1", "c1");
	ws_send_frame(m, 1, 1, "{}", 2, 1, 0x40);  /* RSV1 */
	assert_int_equal(ws_wait_close(m, T), 1002);
	ws_free(m);
	m = gw_mod(&gw, "s1", "c1");
	ws_send_frame(m, 1, 3, "{}", 2, 1, 0);  /* reserved opcode */
	assert_int_equal(ws_wait_close(m, T), 1002);
	ws_free(m);
	m = gw_mod(&gw, "s1", "c1");
	ws_send_frame(m, 1, 0, "{}", 2, 1, 0);  /* orphan continuation */
	assert_int_equal(ws_wait_close(m, T), 1002);
	ws_free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_auth_missing_and_wrong_key, up, down),
		cmocka_unit_test_setup_teardown(test_auth_header_and_query, up, down),
		cmocka_unit_test_setup_teardown(test_handshake_ok, up, down),
		cmocka_unit_test_setup_teardown(test_handshake_errors, up, down),
		cmocka_unit_test_setup_teardown(test_handshake_timeout, up, down),
		cmocka_unit_test_setup_teardown(test_bot_conflict_when_alive, up, down),
		cmocka_unit_test_setup_teardown(test_bot_conflict_same_reader, up, down),
		cmocka_unit_test_setup_teardown(test_bot_replaced_when_silent, up, down),
		cmocka_unit_test_setup_teardown(test_mod_to_bot_completed_shape, up, down),
		cmocka_unit_test_setup_teardown(test_bot_to_mods_fanout, up, down),
		cmocka_unit_test_setup_teardown(test_queued_then_flushed_in_order, up, down),
		cmocka_unit_test_setup_teardown(test_ring_overflow_counts_dropped, up, down),
		cmocka_unit_test_setup_teardown(test_same_server_id_replaces, up, down),
		cmocka_unit_test_setup_teardown(test_replace_among_many, up_many, down),
		cmocka_unit_test_setup_teardown(test_duplicate_resend_not_routed, up, down),
		cmocka_unit_test_setup_teardown(test_presence_events, up, down),
		cmocka_unit_test(test_rate_limit),
		cmocka_unit_test_setup_teardown(test_malformed_messages_keep_connection, up, down),
		cmocka_unit_test_setup_teardown(test_unicode_round_trip, up, down),
		cmocka_unit_test_setup_teardown(test_fragmented_and_binary, up, down),
		cmocka_unit_test_setup_teardown(test_ping_pong_and_close_echo, up, down),
		cmocka_unit_test_setup_teardown(test_silent_peer_dropped, up, down),
		cmocka_unit_test_setup_teardown(test_oversized_message_1009, up, down),
		cmocka_unit_test_setup_teardown(test_protocol_violations_1002, up, down),
	};

	if (getenv("TEST_FILTER"))
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	return cmocka_run_group_tests_name("it_sync", tests, NULL, NULL);
}
