/*
 * it_hygiene.c - hostile or unlucky clients cannot hurt anyone else, and
 * every close the gateway starts says why (SPEC 8a), against the real
 * binary:
 *
 *   1. a ping flood from peers that read slowly costs no memory
 *   2. SIGTERM: every websocket gets 1001, those opened during the stop
 *      too, and the process exits within 5 s with a peer that never reads
 *   3. a peer over rate_limit for 5 s in a row is closed with 4004
 *   4. a close frame whose reason is not UTF-8 is answered with 1007
 *   5. past output_bytes_max the peer holding the most output is dropped
 *      with 4002, and what it was not sent reaches it when it comes back
 *   6. a queue bigger than a peer's output limit is handed to it as its
 *      output drains, not all at once
 *   7. a store that cannot write (file size limit: a full disk) makes
 *      messages "failed", /health "degraded" with the reason, and recovers
 *      by itself; what was acked before is delivered
 *   8. a peer that stops reading costs each message waiting for it once
 *      (the message), not twice (the message and its rendered frame)
 *   9. a bot that reads slower than a mod sends is paced, not dropped:
 *      the mod waits, the bot gets everything, in order
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "itutil.h"

#define T 5000
/* Peers here read only when the test says so: no liveness drops meanwhile. */
#define QUIET "[gateway]\nread_timeout = 600\nping_interval = 300\n"

/* A mod sid on channel ch, or the bot "b", joined (the harness's helpers). */
static struct ws *join_mod(struct gw_proc *gw, const char *sid, const char *ch)
{
	struct ws *w = gw_mod(gw, sid, ch);

	assert_non_null(w);
	return w;
}

static struct ws *join_bot(struct gw_proc *gw)
{
	struct ws *w = gw_bot(gw, "b");

	assert_non_null(w);
	return w;
}

/* Sends a message with msg_id id to channel ch - as mod sid, or as the bot
 * when sid is NULL - and returns the status of its ack (a static buffer). */
static const char *send_acked(struct ws *w, const char *sid, const char *ch, const char *id,
                              const char *content, int tmo)
{
	static char status[32];
	json_t *ack;

	if (sid)
		assert_int_equal(it_mod_send(w, id, sid, ch, content), 0);
	else
		assert_int_equal(it_bot_send(w, id, ch, content), 0);
	ack = it_wait_ack(w, id, tmo);
	assert_non_null(ack);
	snprintf(status, sizeof(status), "%s", it_str(ack, "status"));
	json_decref(ack);
	return status;
}

static char *filler(size_t size)
{
	char *s = malloc(size + 1);

	assert_non_null(s);
	memset(s, 'x', size);
	s[size] = '\0';
	return s;
}

/* Reads frames until a close frame (its code), EOF (1006) or timeout (-1);
 * unlike ws_wait_close it sends nothing back. */
static int read_until_close(struct ws *w, int timeout_ms)
{
	struct ws_frame f;
	int64_t until = now_ms() + timeout_ms;
	int rc;

	while (now_ms() < until) {
		rc = ws_recv_frame(w, &f, (int)(until - now_ms()));
		if (rc == -2)
			return 1006;
		if (rc < 0)
			return -1;
		if (f.opcode == 8) {
			int code = f.close_code;

			ws_frame_free(&f);
			return code;
		}
		ws_frame_free(&f);
	}
	return -1;
}

/* --- 1. ping flood ------------------------------------------------------ */

struct pinger {
	struct ws *w;
	int64_t until;
	long pings;
	int fail;
};

/* Pings as fast as the socket takes them, reading 4 KB every 2 s (as the reports did). */
static void *ping_flood(void *arg)
{
	struct pinger *p = arg;
	unsigned char payload[125], buf[4096];
	int64_t next_read = now_ms() + 2000;

	memset(payload, 'p', sizeof(payload));
	while (now_ms() < p->until) {
		if (ws_send_frame(p->w, 1, 9, payload, sizeof(payload), 1, 0) < 0) {
			p->fail = 1;
			break;
		}
		p->pings++;
		if (now_ms() >= next_read) {
			(void)recv(p->w->fd, buf, sizeof(buf), MSG_DONTWAIT);
			next_read = now_ms() + 2000;
		}
	}
	return NULL;
}

static void test_ping_flood_costs_no_memory(void **state)
{
	enum { N = 8 };
	struct gw_proc gw;
	struct pinger p[N];
	pthread_t th[N];
	long before, after, pings = 0;
	int got_last = 0, frames = 0;
	char tail[5] = { 0 };

	(void)state;
	assert_int_equal(gw_start(&gw, QUIET "write_timeout = 600\n"), 0);
	for (int i = 0; i < N; i++) {
		char sid[16];

		snprintf(sid, sizeof(sid), "s%d", i);
		p[i] = (struct pinger){ .w = join_mod(&gw, sid, "c1"), .until = now_ms() + 3000 };
	}
	before = gw_rss_kb(&gw);
	for (int i = 0; i < N; i++)
		assert_int_equal(pthread_create(&th[i], NULL, ping_flood, &p[i]), 0);
	for (int i = 0; i < N; i++) {
		pthread_join(th[i], NULL);
		assert_false(p[i].fail);
		pings += p[i].pings;
	}
	after = gw_rss_kb(&gw);
	print_message("ping flood: %ld pings, RSS %ld -> %ld kB\n", pings, before, after);
	if (gw_runtime(&gw) == 0)
		assert_true(after - before < 16 * 1024);
	/* the latest ping is answered: a last one with its own payload, found
	 * in the raw stream (thousands of earlier pongs may be on their way) */
	assert_int_equal(ws_send_frame(p[0].w, 1, 9, "last", 4, 1, 0), 0);
	got_last = memmem(p[0].w->buf, p[0].w->len, "\x8a\x04last", 6) != NULL;
	for (int64_t until = now_ms() + T * gw_slack(&gw); !got_last && now_ms() < until;) {
		static char raw[65536 + 6];
		ssize_t n;

		memcpy(raw, tail, 5);
		n = recv(p[0].w->fd, raw + 5, sizeof(raw) - 5, 0);
		if (n <= 0)
			break;
		frames += (int)n;
		got_last = memmem(raw, (size_t)n + 5, "\x8a\x04last", 6) != NULL;
		memcpy(tail, raw + n, 5);
	}
	if (!got_last)
		fail_msg("no pong to the last ping in the %d bytes that came", frames);
	for (int i = 0; i < N; i++)
		ws_free(p[i].w);
	assert_int_equal(http_get(gw.port, "/health", NULL, NULL, 0, T), 200);
	assert_int_equal(gw_stop(&gw, SIGTERM, 10000), 0);
	gw_cleanup(&gw);
}

/* --- 2. SIGTERM --------------------------------------------------------- */

static void test_sigterm_1001_and_exit_within_5s(void **state)
{
	struct gw_proc gw;
	struct ws *stuck, *ok, *bot;
	char *big = filler(512 * 1024), id[32];
	int64_t t0, took;
	int late = 0, refused = 0, status;

	(void)state;
	assert_int_equal(gw_start(&gw, QUIET "body_size = 1\nwrite_timeout = 600\n"), 0);
	/* one mod never reads while 16 MB are sent to it: its output is stuck */
	stuck = join_mod(&gw, "stuck", "c1");
	ok = join_mod(&gw, "ok", "c2");
	bot = join_bot(&gw);
	for (int i = 0; i < 32; i++) {
		snprintf(id, sizeof(id), "big%d", i);
		(void)send_acked(bot, NULL, "c1", id, big, T * gw_slack(&gw));
	}
	t0 = now_ms();
	assert_int_equal(kill(gw.pid, SIGTERM), 0);
	/* whoever comes while it stops is refused, or told 503 or 1001 */
	while (now_ms() - t0 < 300) {
		struct ws *w = ws_connect(gw.port, "/sync?api_key=test-key", NULL, 1000);

		if (!w || w->http_status == 0) {
			/* refused, or reset from the listener's backlog as it closed */
			refused++;
			ws_free(w);
			continue;
		}
		if (w->http_status == 101) {
			int code;

			(void)ws_send_text(w, "{\"type\":\"mod\",\"data\":{\"server_id\":\"late\","
			                      "\"channel_id\":\"c3\"}}");
			code = read_until_close(w, T * gw_slack(&gw));
			if (code != 1001)
				fail_msg("a websocket opened during the stop got %d, not 1001", code);
			late++;
		} else {
			assert_int_equal(w->http_status, 503);
			refused++;
		}
		ws_free(w);
	}
	assert_int_equal(read_until_close(ok, T), 1001);
	status = gw_stop(&gw, SIGTERM, 10000 * gw_slack(&gw));
	took = now_ms() - t0;
	print_message("SIGTERM: exit %d after %lld ms; during the stop %d upgrades got 1001, "
	              "%d connects refused or 503\n", status, (long long)took, late, refused);
	assert_int_equal(status, 0);
	assert_true(took <= 5000 * gw_slack(&gw));
	ws_free(stuck);
	ws_free(ok);
	ws_free(bot);
	free(big);
	gw_cleanup(&gw);
}

/* --- 3, 4. close codes -------------------------------------------------- */

static void test_rate_limit_persistent_4004(void **state)
{
	struct gw_proc gw;
	struct ws *m;
	char id[32];
	int code = 0, refused = 0;
	int64_t t0 = now_ms();

	(void)state;
	assert_int_equal(gw_start(&gw, QUIET "rate_limit = 2\n"), 0);
	m = join_mod(&gw, "s1", "c1");
	/* 20 messages a second against 2 allowed */
	for (int i = 0; i < 200 && !code; i++) {
		json_t *j;

		snprintf(id, sizeof(id), "r%d", i);
		if (it_mod_send(m, id, "s1", "c1", "hi") < 0)
			break;
		while ((j = it_recv_json(m, 50, &code)) != NULL) {
			refused += json_integer_value(json_object_get(j, "code")) == 429;
			json_decref(j);
		}
	}
	if (!code)
		code = read_until_close(m, T);
	print_message("rate limit: %d refused, close %d after %lld ms\n", refused, code,
	              (long long)(now_ms() - t0));
	assert_int_equal(code, 4004);
	assert_true(refused > 0);
	assert_true(now_ms() - t0 >= 3000);   /* refusals in 5 clock seconds in a row */
	assert_true(gw_log_contains(&gw, "rate limit exceeded persistently"));
	ws_free(m);
	assert_int_equal(gw_stop(&gw, SIGTERM, 10000), 0);
	gw_cleanup(&gw);
}

static void test_close_reason_not_utf8_1007(void **state)
{
	struct gw_proc gw;
	struct ws *m;
	const unsigned char bad[] = { 0x03, 0xE8, 'o', 0xFF, 'k' };

	(void)state;
	assert_int_equal(gw_start(&gw, QUIET), 0);
	m = join_mod(&gw, "s1", "c1");
	assert_int_equal(ws_send_frame(m, 1, 8, bad, sizeof(bad), 1, 0), 0);
	assert_int_equal(read_until_close(m, T), 1007);
	ws_free(m);
	/* a valid reason is echoed with its code */
	m = join_mod(&gw, "s1", "c1");
	assert_int_equal(ws_send_frame(m, 1, 8, "\x0f\xa0ok", 4, 1, 0), 0);
	assert_int_equal(read_until_close(m, T), 4000);
	ws_free(m);
	assert_int_equal(gw_stop(&gw, SIGTERM, 10000), 0);
	gw_cleanup(&gw);
}

/* --- 5, 6. output limits ------------------------------------------------ */

/* Reads routed messages until `want` arrived (their ids counted in order:
 * each must be prefix<k> with k one more than the last) or none comes for
 * quiet_ms; returns how many arrived. */
static int read_in_order(struct ws *w, const char *prefix, int first, int want, int quiet_ms)
{
	char id[32];
	int k = first;
	json_t *j;

	while (k < first + want && (j = it_wait_msg(w, quiet_ms)) != NULL) {
		snprintf(id, sizeof(id), "%s%d", prefix, k);
		if (strcmp(it_str(j, "msg_id"), id) != 0)
			fail_msg("got %s, want %s", it_str(j, "msg_id"), id);
		k++;
		json_decref(j);
	}
	return k - first;
}

static void test_output_bytes_max_drops_the_worst(void **state)
{
	enum { N = 48 };
	struct gw_proc gw;
	struct ws *a, *b, *bot;
	char *big = filler(900 * 1024), id[32];
	int code, n;

	(void)state;
	/* 1 MB over all peers; one peer alone may hold 64 MB */
	assert_int_equal(gw_start(&gw, QUIET "body_size = 1\noutput_bytes_max = 1\n"
	                                       "write_timeout = 600\nqueue_max = 100\n"
	                                       "queue_bytes_max = 128\n"), 0);
	a = join_mod(&gw, "a", "c1");   /* never reads until the end */
	b = join_mod(&gw, "b", "c2");   /* reads all along */
	bot = join_bot(&gw);
	for (int i = 0; i < N; i++) {
		snprintf(id, sizeof(id), "a%d", i);
		assert_string_not_equal(send_acked(bot, NULL, "c1", id, big, T * gw_slack(&gw)),
		                        "failed");
		snprintf(id, sizeof(id), "b%d", i);
		(void)send_acked(bot, NULL, "c2", id, "small", T * gw_slack(&gw));
	}
	/* b was never hurt: it has every message */
	assert_int_equal(read_in_order(b, "b", 0, N, T), N);
	/* a was dropped with 4002 after what its socket had taken */
	n = 0;
	for (json_t *j; (j = it_recv_json(a, T, &code)) != NULL; json_decref(j))
		n += it_str(j, "content")[0] != '\0';
	print_message("output_bytes_max: a read %d of %d before close %d\n", n, N, code);
	assert_int_equal(code, 4002);
	assert_true(n < N);
	assert_true(gw_log_contains(&gw, "output_bytes_max reached"));
	ws_free(a);
	/* back, it gets the rest (its queue), in order */
	a = join_mod(&gw, "a", "c1");
	assert_int_equal(read_in_order(a, "a", n, N - n, T * gw_slack(&gw)), N - n);
	ws_free(a);
	ws_free(b);
	ws_free(bot);
	free(big);
	assert_int_equal(gw_stop(&gw, SIGTERM, 10000), 0);
	gw_cleanup(&gw);
}

static void test_queue_over_output_limit_is_paced(void **state)
{
	enum { N = 90 };   /* 90 x 900 KB: more than a peer's 64 MB of output */
	struct gw_proc gw;
	struct ws *m, *bot;
	char *big = filler(900 * 1024), id[32];

	(void)state;
	assert_int_equal(gw_start(&gw, QUIET "body_size = 1\nqueue_max = 100\n"
	                                       "queue_bytes_max = 128\n"), 0);
	bot = join_bot(&gw);
	for (int i = 0; i < N; i++) {
		snprintf(id, sizeof(id), "q%d", i);
		assert_string_equal(send_acked(bot, NULL, "c1", id, big, T * gw_slack(&gw)), "queued");
	}
	m = join_mod(&gw, "s1", "c1");
	assert_int_equal(read_in_order(m, "q", 0, N, T * gw_slack(&gw)), N);
	assert_false(gw_log_contains(&gw, "output limit reached"));
	ws_free(m);
	ws_free(bot);
	free(big);
	assert_int_equal(gw_stop(&gw, SIGTERM, 10000), 0);
	gw_cleanup(&gw);
}

/* --- 7. store faults ---------------------------------------------------- */

static long file_size(const char *dir, const char *name)
{
	char path[512];
	struct stat st;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return stat(path, &st) == 0 ? (long)st.st_size : 0;
}

static void test_store_fault_degrades_and_recovers(void **state)
{
	struct gw_proc gw;
	struct ws *m, *bot;
	char *big = filler(256 * 1024), id[32], body[2048];
	struct rlimit lim;
	long biggest = 0;
	int failed = 0, queued = 0;
	json_t *j;

	(void)state;
	assert_int_equal(gw_start(&gw, QUIET "body_size = 1\n[store]\npath = data/gateway.db\n"
	                                       "[log]\nlevel = warn\n"), 0);
	m = join_mod(&gw, "s1", "c1");
	assert_string_equal(send_acked(m, "s1", "c1", "before", "acked before the fault", T), "queued");
	/* no file of the gateway may grow past 1 MB more than the biggest now */
	for (const char *const *f = (const char *const[]){ "data/gateway.db", "data/gateway.db-wal",
	                                                   "stderr.log", NULL }; *f; f++)
		if (file_size(gw.dir, *f) > biggest)
			biggest = file_size(gw.dir, *f);
	assert_int_equal(prlimit(gw.pid, RLIMIT_FSIZE, NULL, &lim), 0);
	lim.rlim_cur = (rlim_t)biggest + (1 << 20);   /* the hard limit stays */
	assert_int_equal(prlimit(gw.pid, RLIMIT_FSIZE, &lim, NULL), 0);
	for (int i = 0; i < 40 && !failed; i++) {
		const char *st;

		snprintf(id, sizeof(id), "f%d", i);
		st = send_acked(m, "s1", "c1", id, big, T * gw_slack(&gw));
		failed += strcmp(st, "failed") == 0;
		queued += strcmp(st, "queued") == 0;
	}
	print_message("store fault: %d queued, then failed\n", queued);
	assert_int_equal(failed, 1);
	assert_int_equal(http_get(gw.port, "/health", NULL, body, sizeof(body), T), 200);
	print_message("health: %s\n", body);
	assert_non_null(strstr(body, "\"status\":\"degraded\""));
	assert_non_null(strstr(body, "\"reason\":\"store: "));
	/* space again: it recovers by itself (a probe), then messages queue */
	lim.rlim_cur = lim.rlim_max;
	assert_int_equal(prlimit(gw.pid, RLIMIT_FSIZE, &lim, NULL), 0);
	for (int64_t until = now_ms() + T * gw_slack(&gw);; sleep_ms(100)) {
		assert_int_equal(http_get(gw.port, "/health", NULL, body, sizeof(body), T), 200);
		if (strstr(body, "\"status\":\"healthy\"") || now_ms() > until)
			break;
	}
	assert_non_null(strstr(body, "\"status\":\"healthy\""));
	assert_string_equal(send_acked(m, "s1", "c1", "after", "after the fault", T), "queued");
	/* the bot gets what was acked queued, in order, and not what failed */
	bot = join_bot(&gw);
	j = it_wait_msg(bot, T);
	assert_non_null(j);
	assert_string_equal(it_str(j, "msg_id"), "before");
	json_decref(j);
	for (int i = 0; i < queued; i++) {
		snprintf(id, sizeof(id), "f%d", i);
		j = it_wait_msg(bot, T * gw_slack(&gw));
		assert_non_null(j);
		assert_string_equal(it_str(j, "msg_id"), id);
		json_decref(j);
	}
	j = it_wait_msg(bot, T);
	assert_non_null(j);
	assert_string_equal(it_str(j, "msg_id"), "after");
	json_decref(j);
	ws_free(bot);
	ws_free(m);
	free(big);
	assert_int_equal(gw_stop(&gw, SIGTERM, 10000), 0);
	gw_cleanup(&gw);
}

/* --- 8. a paused reader's output ---------------------------------------- */

static void test_paused_reader_costs_each_message_once(void **state)
{
	enum { N = 40, SIZE = 900 * 1024 };
	struct gw_proc gw;
	struct ws *m, *bot;
	char *big = filler(SIZE), id[32];
	long before, after;
	int sz = 65536;
	json_t *j;

	(void)state;
	/* no history: the bot's output is all that holds the messages */
	assert_int_equal(gw_start(&gw, QUIET "write_timeout = 600\nhistory = 0\n"), 0);
	bot = join_bot(&gw);
	setsockopt(bot->fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
	m = join_mod(&gw, "s1", "c1");
	(void)send_acked(m, "s1", "c1", "warm", "x", T * gw_slack(&gw));
	j = it_wait_msg(bot, T);   /* "warm": the bot reads no more until the end */
	assert_non_null(j);
	json_decref(j);
	before = gw_rss_kb(&gw);
	for (int i = 0; i < N; i++) {
		snprintf(id, sizeof(id), "p%d", i);
		assert_string_equal(send_acked(m, "s1", "c1", id, big, T * gw_slack(&gw)),
		                    "completed");
	}
	after = gw_rss_kb(&gw);
	print_message("paused reader: %d x %d KB waiting, RSS %ld -> %ld kB\n", N, SIZE / 1024,
	              before, after);
	/* the messages themselves, 36 MB, and a little: not their frames too */
	if (gw_runtime(&gw) == 0)
		assert_true(after - before < (long)N * SIZE / 1024 * 3 / 2);
	assert_int_equal(read_in_order(bot, "p", 0, N, T * gw_slack(&gw)), N);
	assert_false(gw_log_contains(&gw, "output limit reached"));
	ws_free(m);
	ws_free(bot);
	free(big);
	assert_int_equal(gw_stop(&gw, SIGTERM, 10000), 0);
	gw_cleanup(&gw);
}

/* --- 9. a bot slower than its mod ---------------------------------------- */

struct slow_bot {
	struct ws *w;
	int n, got, bad;
};

/* Reads the n messages p0.. in order, 30 ms after each (about 30 MB/s). */
static void *slow_bot_main(void *arg)
{
	struct slow_bot *b = arg;
	char id[32];
	json_t *j;

	while (b->got < b->n && (j = it_wait_msg(b->w, 3 * T)) != NULL) {
		snprintf(id, sizeof(id), "p%d", b->got);
		b->bad += strcmp(it_str(j, "msg_id"), id) != 0;
		b->got++;
		json_decref(j);
		usleep(30000);
	}
	return NULL;
}

static void test_slow_bot_paced_not_dropped(void **state)
{
	enum { N = 120, SIZE = 900 * 1024 };   /* 108 MB: over a peer's 64 MB */
	struct gw_proc gw;
	struct slow_bot b = { .n = N };
	struct ws *m;
	char *big = filler(SIZE), id[32];
	static char body[16384];
	pthread_t th;
	int64_t t0;

	(void)state;
	assert_int_equal(gw_start(&gw, QUIET "write_timeout = 30\n"), 0);
	b.w = join_bot(&gw);
	m = join_mod(&gw, "s1", "c1");
	assert_int_equal(pthread_create(&th, NULL, slow_bot_main, &b), 0);
	t0 = now_ms();
	for (int i = 0; i < N; i++) {
		snprintf(id, sizeof(id), "p%d", i);
		assert_string_equal(send_acked(m, "s1", "c1", id, big, 3 * T * gw_slack(&gw)),
		                    "completed");
	}
	print_message("slow bot: the mod sent %d x %d KB in %lld ms\n", N, SIZE / 1024,
	              (long long)(now_ms() - t0));
	pthread_join(th, NULL);
	assert_int_equal(b.got, N);
	assert_int_equal(b.bad, 0);
	assert_false(gw_log_contains(&gw, "dropping peer"));
	/* and it was the pacing that kept it (under a sanitizer or valgrind
	 * the gateway may read no faster than the bot, and need none) */
	assert_int_equal(http_get(gw.port, "/metrics", NULL, body, sizeof(body), T), 200);
	assert_non_null(strstr(body, "homestead_paced_total "));
	if (gw_runtime(&gw) == 0)
		assert_null(strstr(body, "homestead_paced_total 0\n"));
	ws_free(m);
	ws_free(b.w);
	free(big);
	assert_int_equal(gw_stop(&gw, SIGTERM, 10000), 0);
	gw_cleanup(&gw);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ping_flood_costs_no_memory),
		cmocka_unit_test(test_sigterm_1001_and_exit_within_5s),
		cmocka_unit_test(test_rate_limit_persistent_4004),
		cmocka_unit_test(test_close_reason_not_utf8_1007),
		cmocka_unit_test(test_output_bytes_max_drops_the_worst),
		cmocka_unit_test(test_queue_over_output_limit_is_paced),
		cmocka_unit_test(test_store_fault_degrades_and_recovers),
		cmocka_unit_test(test_paused_reader_costs_each_message_once),
		cmocka_unit_test(test_slow_bot_paced_not_dropped),
	};

	if (getenv("TEST_FILTER"))
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	return cmocka_run_group_tests_name("it_hygiene", tests, NULL, NULL);
}
