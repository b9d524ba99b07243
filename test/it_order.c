/*
 * it_order.c - order and completeness under concurrency and faults: many
 * mods sending at once while the bot reconnects, and a bot that stops
 * reading (it is dropped after write_timeout, nobody else waits for it, and
 * what it had not taken arrives, in order, when it comes back), and bursts
 * of frames in one write.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "itutil.h"

#define T 5000
#define MODS 4

static struct gw_proc gw;

struct sender {
	int idx, count;
	size_t content_len;
	int window;            /* unacked messages allowed */
	int64_t worst_ack_ms;  /* slowest ack seen */
	int acks, failed;
};


/* A mod that sends `count` messages with at most `window` unacked. */
static void *mod_main(void *arg)
{
	struct sender *s = arg;
	char sid[16], chan[16], id[32];
	char *content = malloc(s->content_len + 1);
	int64_t *sent_at = calloc((size_t)s->count, sizeof(*sent_at));
	struct ws *m;
	int next = 0;

	snprintf(sid, sizeof(sid), "s%d", s->idx);
	snprintf(chan, sizeof(chan), "c%d", s->idx % 2);   /* two mods per channel */
	memset(content, 'a' + s->idx, s->content_len);
	content[s->content_len] = '\0';
	m = gw_mod(&gw, sid, chan);
	if (!m) {
		s->failed = 1;
		goto out;
	}
	while (s->acks < s->count) {
		json_t *j;

		while (next < s->count && next - s->acks < s->window) {
			snprintf(id, sizeof(id), "%s-%d", sid, next);
			sent_at[next] = now_ms();
			if (it_mod_send(m, id, sid, chan, content) < 0) {
				s->failed = 1;
				goto out;
			}
			next++;
		}
		j = it_recv_json(m, T, NULL);
		if (!j || !json_object_get(j, "status")) {
			s->failed = 1;
			json_decref(j);
			goto out;
		}
		if (strcmp(it_str(j, "status"), "failed") == 0)
			s->failed = 1;
		int64_t lat = now_ms() - sent_at[s->acks];
		if (lat > s->worst_ack_ms)
			s->worst_ack_ms = lat;
		s->acks++;
		json_decref(j);
	}
out:
	ws_free(m);
	free(content);
	free(sent_at);
	return NULL;
}

/* Tracks what the bot received: per sender the next index expected. */
struct tally {
	int next[MODS];
	int total, errors;
};

static void tally_msg(struct tally *t, json_t *j)
{
	int s, i;

	if (sscanf(it_str(j, "msg_id"), "s%d-%d", &s, &i) != 2 || s < 0 || s >= MODS) {
		t->errors++;
		return;
	}
	if (i != t->next[s]) {
		print_error("sender %d: got %d, expected %d\n", s, i, t->next[s]);
		t->errors++;
	}
	t->next[s] = i + 1;
	t->total++;
}

/* Reads routed messages until the connection ends; complete frames only. */
static void drain(struct ws *b, struct tally *t, int timeout_ms)
{
	char *txt;
	int cc;

	while ((txt = ws_recv_text(b, timeout_ms, &cc)) != NULL) {
		json_t *j = json_loads(txt, 0, NULL);

		free(txt);
		if (j && json_object_get(j, "content"))
			tally_msg(t, j);
		json_decref(j);
	}
}

static void test_order_with_bot_reconnect(void **state)
{
	struct sender s[MODS];
	pthread_t th[MODS];
	struct tally t = { { 0 }, 0, 0 };
	struct ws *b;
	json_t *j;
	const int per = 250;

	(void)state;
	assert_int_equal(gw_start(&gw, "[gateway]\nqueue_max = 100000\n"), 0);
	b = gw_bot(&gw, "b1");
	assert_non_null(b);
	for (int i = 0; i < MODS; i++) {
		s[i] = (struct sender){ .idx = i, .count = per, .content_len = 64, .window = 16 };
		pthread_create(&th[i], NULL, mod_main, &s[i]);
	}
	/* take a third, then leave politely mid-stream and come back */
	while (t.total < MODS * per / 3 && (j = it_wait_msg(b, T)) != NULL) {
		tally_msg(&t, j);
		json_decref(j);
	}
	ws_send_frame(b, 1, 8, "\x03\xe8", 2, 1, 0);
	drain(b, &t, T);   /* everything sent before the server's close frame */
	ws_free(b);
	b = gw_bot(&gw, "b1");
	assert_non_null(b);
	while (t.total < MODS * per && (j = it_wait_msg(b, T)) != NULL) {
		tally_msg(&t, j);
		json_decref(j);
	}
	for (int i = 0; i < MODS; i++) {
		pthread_join(th[i], NULL);
		assert_false(s[i].failed);
		assert_int_equal(s[i].acks, per);
		assert_int_equal(t.next[i], per);
	}
	assert_int_equal(t.errors, 0);
	assert_int_equal(t.total, MODS * per);
	/* nothing more: exactly once */
	assert_null(it_wait_msg(b, 300));
	ws_free(b);
	gw_stop(&gw, SIGTERM, 5000);
	gw_cleanup(&gw);
}

static void test_stuck_bot_dropped_others_flow(void **state)
{
	struct sender s[MODS];
	pthread_t th[MODS];
	struct tally t = { { 0 }, 0, 0 };
	struct ws *b;
	json_t *j;
	const int per = 300;
	int64_t start;

	(void)state;
	assert_int_equal(gw_start(&gw, "[gateway]\nqueue_max = 100000\nwrite_timeout = 2\n"
	                               "read_timeout = 30\nping_interval = 10\n"), 0);
	b = gw_bot(&gw, "b1");
	assert_non_null(b);
	/* the bot now stops reading; 4 x 300 x 16 KiB fill every buffer */
	start = now_ms();
	for (int i = 0; i < MODS; i++) {
		s[i] = (struct sender){ .idx = i, .count = per, .content_len = 16384, .window = 8 };
		pthread_create(&th[i], NULL, mod_main, &s[i]);
	}
	/* under valgrind or a sanitizer everything is slower, not stuck */
	int slack = gw_slack(&gw);

	for (int i = 0; i < MODS; i++) {
		pthread_join(th[i], NULL);
		assert_false(s[i].failed);
		assert_int_equal(s[i].acks, per);
		/* acks never waited for the stuck bot (write_timeout is 2 s) */
		if (s[i].worst_ack_ms > 1000 * slack)
			fail_msg("mod %d waited %lld ms for an ack", i, (long long)s[i].worst_ack_ms);
	}
	print_message("mods done in %lld ms\n", (long long)(now_ms() - start));
	/* the bot is dropped after write_timeout */
	for (int i = 0; i < 100 && !gw_log_contains(&gw, "write timeout"); i++)
		usleep(50000);
	assert_true(gw_log_contains(&gw, "write timeout"));
	/* what reached its socket before the drop, then the rest after */
	drain(b, &t, 2000);
	ws_free(b);
	b = gw_bot(&gw, "b1");
	assert_non_null(b);
	while (t.total < MODS * per && (j = it_wait_msg(b, T)) != NULL) {
		tally_msg(&t, j);
		json_decref(j);
	}
	assert_int_equal(t.errors, 0);
	assert_int_equal(t.total, MODS * per);
	assert_null(it_wait_msg(b, 300));
	ws_free(b);
	gw_stop(&gw, SIGTERM, 5000);
	gw_cleanup(&gw);
}

/* ---- bursts: several frames in one write ---------------------------------- */

#define MORE_MODS 69   /* with s1: 70 mods on one channel */

/* Appends one masked text frame carrying text to buf; returns its length. */
static size_t put_frame(unsigned char *buf, const char *text)
{
	static const unsigned char key[4] = { 0x37, 0xfa, 0x21, 0x3d };
	size_t len = strlen(text), h = 0;

	buf[h++] = 0x81;
	if (len < 126) {
		buf[h++] = (unsigned char)(0x80 | len);
	} else {
		buf[h++] = 0x80 | 126;
		buf[h++] = (unsigned char)(len >> 8);
		buf[h++] = (unsigned char)len;
	}
	memcpy(buf + h, key, 4);
	h += 4;
	for (size_t i = 0; i < len; i++)
		buf[h + i] = (unsigned char)text[i] ^ key[i & 3];
	return h + len;
}

static size_t put_mod_msg(unsigned char *buf, int i)
{
	char text[256];

	snprintf(text, sizeof(text), "{\"msg_id\":\"m%d\",\"id\":\"s1\",\"destination\":"
	         "{\"channel_id\":\"c1\"},\"author\":{\"id\":\"p\"},\"content\":\"n%d\"}", i, i);
	return put_frame(buf, text);
}

/* Waits for the acks of m<from>..m<to-1>, in order, all completed. */
static void expect_acks(struct ws *m, int from, int to)
{
	for (int i = from; i < to; i++) {
		json_t *j = it_recv_json(m, T, NULL);
		char id[16];

		snprintf(id, sizeof(id), "m%d", i);
		assert_non_null(j);
		assert_string_equal(it_str(j, "msg_id"), id);
		assert_string_equal(it_str(j, "status"), "completed");
		json_decref(j);
	}
}

static void expect_msgs(struct ws *w, int from, int to)
{
	for (int i = from; i < to; i++) {
		json_t *j = it_wait_msg(w, T);
		char want[16];

		snprintf(want, sizeof(want), "n%d", i);
		assert_non_null(j);
		assert_string_equal(it_str(j, "content"), want);
		json_decref(j);
	}
}

/* A burst of messages in one write gets every ack and delivery, in order,
 * and nothing waits for the rest of a frame that arrives only partly (the
 * gateway sends a burst's acks after its last complete frame), nor for a
 * ping that ends a burst. */
static void test_burst_not_held_back(void **state)
{
	unsigned char buf[64 * 128], *split;
	struct ws *b, *m;
	size_t n = 0, last;
	json_t *j;
	struct ws_frame f;

	(void)state;
	assert_int_equal(gw_start(&gw, "[gateway]\nmax_connections = 128\n"), 0);
	b = gw_bot(&gw, "b1");
	m = gw_mod(&gw, "s1", "c1");
	assert_non_null(b);
	assert_non_null(m);

	/* 20 complete frames and the first half of a 21st */
	for (int i = 0; i < 20; i++)
		n += put_mod_msg(buf + n, i);
	last = put_mod_msg(buf + n, 20);
	split = buf + n + last / 2;
	assert_int_equal(ws_send_raw(m, buf, n + last / 2), 0);
	expect_acks(m, 0, 20);
	expect_msgs(b, 0, 20);
	assert_int_equal(ws_send_raw(m, split, last - last / 2), 0);
	expect_acks(m, 20, 21);
	expect_msgs(b, 20, 21);

	/* 10 frames and a ping in one write: acks, deliveries and the pong */
	n = 0;
	for (int i = 21; i < 31; i++)
		n += put_mod_msg(buf + n, i);
	buf[n++] = 0x89;
	buf[n++] = 0x80 | 2;
	memset(buf + n, 0, 4);
	n += 4;
	buf[n++] = 'h';
	buf[n++] = 'i';
	assert_int_equal(ws_send_raw(m, buf, n), 0);
	expect_acks(m, 21, 31);
	assert_int_equal(ws_recv_frame(m, &f, T), 0);
	assert_int_equal(f.opcode, 10);
	ws_frame_free(&f);
	expect_msgs(b, 21, 31);

	/* the bot's burst reaches every mod of the channel, in order: more
	 * mods than a reader holds back flushes for (GW_DEFER_MAX, 64) */
	{
		struct ws *more[MORE_MODS];
		char text[256];

		for (int i = 0; i < MORE_MODS; i++) {
			snprintf(text, sizeof(text), "s%d", i + 2);
			more[i] = gw_mod(&gw, text, "c1");
			assert_non_null(more[i]);
		}
		n = 0;
		for (int i = 0; i < 30; i++) {
			snprintf(text, sizeof(text), "{\"msg_id\":\"b%d\",\"id\":\"c1\","
			         "\"author\":{\"id\":\"u\"},\"content\":\"n%d\"}", i, i);
			n += put_frame(buf + n, text);
		}
		assert_int_equal(ws_send_raw(b, buf, n), 0);
		expect_msgs(m, 0, 30);
		for (int i = 0; i < MORE_MODS; i++)
			expect_msgs(more[i], 0, 30);
		for (int i = 0; i < 30; i++) {
			char id[16];

			snprintf(id, sizeof(id), "b%d", i);
			j = it_wait_ack(b, id, T);
			assert_non_null(j);
			assert_string_equal(it_str(j, "status"), "completed");
			json_decref(j);
		}
		for (int i = 0; i < MORE_MODS; i++)
			ws_free(more[i]);
	}
	ws_free(m);
	ws_free(b);
	gw_stop(&gw, SIGTERM, 5000);
	gw_cleanup(&gw);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_order_with_bot_reconnect),
		cmocka_unit_test(test_stuck_bot_dropped_others_flow),
		cmocka_unit_test(test_burst_not_held_back),
	};

	if (getenv("TEST_FILTER"))
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	return cmocka_run_group_tests_name("it_order", tests, NULL, NULL);
}
