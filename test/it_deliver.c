/*
 * it_deliver.c - acknowledged means delivered (SPEC 7a): every way an
 * acked message used to be lost or doubled, against the real binary, and
 * resume with "since".
 *
 *   1. a reader that pauses is dropped for write timeout; what its socket
 *      had accepted still reaches it, the rest comes on its reconnect
 *   2. a mod that held unsent messages is dropped after another mod joined
 *   3. a msg_id queued before a restart is still a duplicate after it
 *   4. a queue bigger than 64 MB (one 70 MB message) reaches its recipient
 *   5. at SIGTERM, a message is acked or never delivered, and what was acked
 *      is delivered after the restart
 *   6. a bot taking 8,000 stored messages (sync = full) stalls nobody else
 *   and resume: seq, epoch, since, resumed/missed, history limits.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "itutil.h"

#define T 5000
/* Peers here read only when the test says so: no liveness drops meanwhile
 * (slow under valgrind and the sanitizers). */
#define QUIET "[gateway]\nread_timeout = 600\nping_interval = 300\n"

/* A peer's view of what it received, in order. */
struct seen {
	char **ids;
	uint64_t *seqs;
	size_t n, cap;
};

static void seen_add(struct seen *s, json_t *j)
{
	if (s->n == s->cap) {
		s->cap = s->cap ? 2 * s->cap : 256;
		s->ids = realloc(s->ids, s->cap * sizeof(*s->ids));
		s->seqs = realloc(s->seqs, s->cap * sizeof(*s->seqs));
		assert_non_null(s->ids);
		assert_non_null(s->seqs);
	}
	s->ids[s->n] = strdup(it_str(j, "msg_id"));
	s->seqs[s->n] = (uint64_t)json_integer_value(json_object_get(j, "seq"));
	s->n++;
}

static void seen_free(struct seen *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->ids[i]);
	free(s->ids);
	free(s->seqs);
	memset(s, 0, sizeof(*s));
}

/* Every id prefix0..prefix(n-1) exactly once, in that order. */
static void seen_assert_exactly(const struct seen *s, const char *prefix, int n)
{
	char id[64];

	if (s->n != (size_t)n)
		fail_msg("received %zu messages, want %d", s->n, n);
	for (int i = 0; i < n; i++) {
		snprintf(id, sizeof(id), "%s%d", prefix, i);
		if (strcmp(s->ids[i], id) != 0)
			fail_msg("message %d is %s, want %s", i, s->ids[i], id);
	}
}

/* Reads routed messages into s until none comes for quiet_ms, the
 * connection ends, or want are there; a resuming peer drops seqs it has. */
static void collect(struct ws *w, struct seen *s, int want, int quiet_ms, int resuming)
{
	json_t *j;

	while ((int)s->n < want && (j = it_wait_msg(w, quiet_ms)) != NULL) {
		uint64_t seq = (uint64_t)json_integer_value(json_object_get(j, "seq"));

		assert_true(seq > 0 || !resuming);
		if (!resuming || s->n == 0 || seq > s->seqs[s->n - 1])
			seen_add(s, j);
		json_decref(j);
	}
}

/* Upgrade and handshake; *reply gets the "connected" reply. */
static struct ws *join(struct gw_proc *gw, const char *handshake, json_t **reply)
{
	struct ws *w = ws_connect(gw->port, "/sync?api_key=test-key", NULL, T);
	json_t *j;

	assert_non_null(w);
	assert_int_equal(w->http_status, 101);
	assert_int_equal(ws_send_text(w, handshake), 0);
	j = it_recv_json(w, T, NULL);
	assert_non_null(j);
	assert_string_equal(it_str(j, "status"), "connected");
	if (reply)
		*reply = j;
	else
		json_decref(j);
	return w;
}

/* Sends n messages of `size` content bytes as mod sid on ch (or as the bot
 * when sid is NULL), ids prefix0.., each acked with want (NULL: completed
 * or queued, as a peer dropped early under a slow sanitizer is). */
static void send_n(struct ws *w, const char *sid, const char *ch, const char *prefix, int n,
                   size_t size, const char *want)
{
	char *content = malloc(size + 1), id[64];

	assert_non_null(content);
	memset(content, 'x', size);
	content[size] = '\0';
	for (int i = 0; i < n; i++) {
		json_t *ack;

		snprintf(id, sizeof(id), "%s%d", prefix, i);
		if (sid)
			assert_int_equal(it_mod_send(w, id, sid, ch, content), 0);
		else
			assert_int_equal(it_bot_send(w, id, ch, content), 0);
		ack = it_wait_ack(w, id, T);
		assert_non_null(ack);
		if (want)
			assert_string_equal(it_str(ack, "status"), want);
		else
			assert_string_not_equal(it_str(ack, "status"), "failed");
		json_decref(ack);
	}
	free(content);
}

/* Waits until /health says needle (e.g. "\"mods\":0"). */
static void wait_health(struct gw_proc *gw, const char *needle)
{
	char body[256] = "";

	for (int i = 0; i < 250; i++) {
		if (http_get(gw->port, "/health", NULL, body, sizeof(body), T) == 200 &&
		    strstr(body, needle))
			return;
		usleep(20000);
	}
	fail_msg("/health never said %s: %s", needle, body);
}

static void wait_log(struct gw_proc *gw, const char *needle, int ms)
{
	for (int i = 0; i < ms / 20 && !gw_log_contains(gw, needle); i++)
		usleep(20000);
	assert_true(gw_log_contains(gw, needle));
}

/* A socket that takes little: the buffers fill after a few frames (not
 * less than a loopback segment, or TCP itself stalls in retransmits). */
static void small_rcvbuf(struct ws *w)
{
	int sz = 65536;

	setsockopt(w->fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
}

/* ---- 1. a paused reader ---------------------------------------------------- */

/* The bot stops reading, is dropped for write timeout, and reads again
 * seconds later (answering the pings it finds, as clients do): it gets
 * every frame its socket had accepted and the close frame, not a reset;
 * what had not left comes on its reconnect. Exactly once, in order. */
static void paused_reader(int resuming)
{
	struct gw_proc gw;
	struct seen got = { 0 };
	struct ws *m, *b;
	json_t *reply;
	char hs[256], epoch[80];
	const int n = 200;
	int code = 0;

	assert_int_equal(gw_start(&gw, "[gateway]\nqueue_max = 1000\nwrite_timeout = 1\n"
	                               "read_timeout = 20\nping_interval = 1\n"), 0);
	b = join(&gw, "{\"type\":\"bot\",\"data\":{\"bot_id\":\"b1\"}}", &reply);
	snprintf(epoch, sizeof(epoch), "%s", it_str(reply, "epoch"));
	assert_true(strlen(epoch) > 0 || !resuming);
	json_decref(reply);
	small_rcvbuf(b);
	m = gw_mod(&gw, "s1", "c1");
	send_n(m, "s1", "c1", "p", n, 65536, NULL);
	wait_log(&gw, "write timeout", 5000 * gw_slack(&gw));
	sleep_ms(1500);   /* still paused after the drop */
	for (;;) {        /* read what it had: pings answered on the way */
		char *text = ws_recv_text(b, 3000, &code);
		json_t *j;

		if (!text)
			break;
		j = json_loads(text, 0, NULL);
		free(text);
		if (j && json_object_get(j, "content"))
			seen_add(&got, j);
		json_decref(j);
	}
	if (code != 4002)
		fail_msg("read %zu of %d, then close %d (4002 wanted: nothing reset)", got.n, n, code);
	assert_true(got.n > 0 && got.n < (size_t)n);
	ws_free(b);
	if (resuming) {
		snprintf(hs, sizeof(hs), "{\"type\":\"bot\",\"data\":{\"bot_id\":\"b1\",\"since\":"
		         "{\"epoch\":\"%s\",\"channels\":{\"c1\":%llu}}}}", epoch,
		         (unsigned long long)got.seqs[got.n - 1]);
		b = join(&gw, hs, &reply);
		assert_true(json_is_true(json_object_get(reply, "resumed")));
		json_decref(reply);
	} else {
		b = gw_bot(&gw, "b1");
	}
	collect(b, &got, n, 2000, resuming);
	seen_assert_exactly(&got, "p", n);
	assert_null(it_wait_msg(b, 200));
	seen_free(&got);
	ws_free(b);
	ws_free(m);
	assert_int_equal(gw_stop(&gw, SIGTERM, 5000), 0);
	gw_cleanup(&gw);
}

static void test_paused_reader_keeps_what_it_was_sent(void **state)
{
	(void)state;
	paused_reader(0);
}

static void test_paused_reader_resumes(void **state)
{
	(void)state;
	paused_reader(1);
}

/* ---- 2. a mod dropped after another joined -------------------------------- */

/* Mod A is alone on c1 and holds unsent messages (it stopped reading); mod
 * B joins; A is dropped (its link resets). What only A had goes back to
 * the queue and reaches A's next connection; B gets what came after it
 * joined. */
static void test_mod_dropped_after_another_joined(void **state)
{
	struct gw_proc gw;
	struct seen got_a = { 0 }, got_b = { 0 };
	struct ws *a, *b, *bot;
	char body[256];
	const int before = 120, after = 5;

	(void)state;
	assert_int_equal(gw_start(&gw, "[gateway]\nqueue_max = 1000\nwrite_timeout = 60\n"
	                               "read_timeout = 60\nping_interval = 5\n"), 0);
	bot = gw_bot(&gw, "b1");
	a = gw_mod(&gw, "sa", "c1");
	small_rcvbuf(a);
	send_n(bot, NULL, "c1", "m", before, 131072, "completed");
	b = gw_mod(&gw, "sb", "c1");
	send_n(bot, NULL, "c1", "n", after, 10, "completed");
	/* A's link resets: what its socket held is lost with it */
	setsockopt(a->fd, SOL_SOCKET, SO_LINGER, &(struct linger){ 1, 0 }, sizeof(struct linger));
	ws_free(a);
	wait_health(&gw, "\"mods\":1");
	assert_int_equal(http_get(gw.port, "/health", NULL, body, sizeof(body), T), 200);
	assert_null(strstr(body, "\"queued\":0"));   /* not lost: queued */
	collect(b, &got_b, after, 2000, 0);
	seen_assert_exactly(&got_b, "n", after);
	a = gw_mod(&gw, "sa", "c1");   /* A again, without since: the queue */
	collect(a, &got_a, before, 2000, 0);
	/* what its old socket had accepted went with it; the rest is here,
	 * in order, each once, ending with the last one sent before B came */
	assert_true(got_a.n > 0);
	assert_string_equal(got_a.ids[got_a.n - 1], "m119");
	for (size_t i = 1; i < got_a.n; i++)
		assert_true(got_a.seqs[i] == got_a.seqs[i - 1] + 1);
	assert_null(it_wait_msg(a, 200));
	seen_free(&got_a);
	seen_free(&got_b);
	ws_free(a);
	ws_free(b);
	ws_free(bot);
	assert_int_equal(gw_stop(&gw, SIGTERM, 5000), 0);
	gw_cleanup(&gw);
}

/* ---- 3. dedup across a restart -------------------------------------------- */

static void test_queued_duplicate_survives_restart(void **state)
{
	struct gw_proc gw;
	struct seen got = { 0 };
	struct ws *m, *b;
	json_t *ack;

	(void)state;
	assert_int_equal(gw_start(&gw, QUIET "[store]\npath = data/gw.db\n"), 0);
	m = gw_mod(&gw, "s1", "c1");
	send_n(m, "s1", "c1", "d", 3, 10, "queued");
	ws_free(m);
	assert_int_equal(gw_stop(&gw, SIGKILL, 5000), 128 + SIGKILL);
	assert_int_equal(gw_restart(&gw), 0);
	m = gw_mod(&gw, "s1", "c1");
	assert_int_equal(it_mod_send(m, "d1", "s1", "c1", "xxxxxxxxxx"), 0);
	ack = it_wait_ack(m, "d1", T);
	assert_non_null(ack);
	assert_string_equal(it_str(ack, "status"), "queued");
	assert_true(json_is_true(json_object_get(ack, "duplicate")));
	json_decref(ack);
	b = gw_bot(&gw, "b1");
	collect(b, &got, 3, 1000, 0);
	seen_assert_exactly(&got, "d", 3);
	assert_null(it_wait_msg(b, 300));
	seen_free(&got);
	ws_free(m);
	ws_free(b);
	assert_int_equal(gw_stop(&gw, SIGTERM, 5000), 0);
	gw_cleanup(&gw);
}

/* ---- 4. a queue bigger than 64 MB ---------------------------------------- */

static void test_queue_over_64mb_reaches_its_recipient(void **state)
{
	struct gw_proc gw;
	struct ws *m, *b;
	json_t *j;
	const size_t size = 70u << 20;

	(void)state;
	assert_int_equal(gw_start(&gw, "[gateway]\nbody_size = 100\nqueue_bytes_max = 200\n"
	                               "read_timeout = 30\nwrite_timeout = 10\n"), 0);
	m = gw_mod(&gw, "s1", "c1");
	send_n(m, "s1", "c1", "big", 1, size, "queued");
	b = gw_bot(&gw, "b1");   /* connected first, then the 70 MB */
	j = it_wait_msg(b, 30000 * gw_slack(&gw));
	assert_non_null(j);
	assert_string_equal(it_str(j, "msg_id"), "big0");
	assert_int_equal(strlen(it_str(j, "content")), size);
	json_decref(j);
	ws_free(m);
	ws_free(b);
	assert_false(gw_log_contains(&gw, "output limit reached"));
	assert_int_equal(gw_stop(&gw, SIGTERM, 5000), 0);
	gw_cleanup(&gw);
}

/* ---- 5. SIGTERM: acked or never delivered --------------------------------- */

struct flood {
	struct gw_proc *gw;
	struct ws *m;
	int sent;
	char **acked;     /* msg_ids acked completed or queued */
	int nacked;
};

/* Sends as fast as acks come back (a window of 32) until the connection
 * ends; records every acked msg_id. */
static void *flood_main(void *arg)
{
	struct flood *f = arg;
	char id[32];
	int inflight = 0;

	f->acked = calloc(200000, sizeof(*f->acked));
	for (;;) {
		json_t *j;

		while (inflight < 32 && f->sent < 200000) {
			snprintf(id, sizeof(id), "f%d", f->sent++);
			if (it_mod_send(f->m, id, "s1", "c1", "flood") < 0)
				return NULL;
			inflight++;
		}
		j = it_recv_json(f->m, 3000, NULL);
		if (!j)
			return NULL;
		if (json_object_get(j, "status") && strcmp(it_str(j, "status"), "failed") != 0)
			f->acked[f->nacked++] = strdup(it_str(j, "msg_id"));
		inflight -= json_object_get(j, "status") != NULL;
		json_decref(j);
	}
}

static int acked_has(const struct flood *f, const char *id)
{
	for (int i = f->nacked; i-- > 0;)
		if (strcmp(f->acked[i], id) == 0)
			return 1;
	return 0;
}

static void test_sigterm_acked_or_never_delivered(void **state)
{
	struct gw_proc gw;
	struct flood f = { .gw = &gw };
	struct seen got = { 0 };
	pthread_t th;
	struct ws *b;

	(void)state;
	assert_int_equal(gw_start(&gw, QUIET "queue_max = 100000\n[store]\npath = data/gw.db\n"),
	                 0);
	b = gw_bot(&gw, "b1");
	f.m = gw_mod(&gw, "s1", "c1");
	pthread_create(&th, NULL, flood_main, &f);
	collect(b, &got, 3000, T, 0);
	kill(gw.pid, SIGTERM);
	collect(b, &got, 1000000, 2000, 0);   /* what was on its way, until the close */
	pthread_join(th, NULL);
	ws_free(b);
	ws_free(f.m);
	assert_true(got.n >= 3000);
	for (size_t i = 0; i < got.n; i++)
		if (!acked_has(&f, got.ids[i]))
			fail_msg("%s was delivered but never acked", got.ids[i]);
	assert_int_equal(gw_stop(&gw, SIGTERM, 5000), 0);
	/* every acked message arrives, after the restart at the latest */
	assert_int_equal(gw_restart(&gw), 0);
	b = gw_bot(&gw, "b1");
	collect(b, &got, f.nacked, 2000, 0);
	for (int i = 0; i < f.nacked; i++) {
		size_t k = 0;

		while (k < got.n && strcmp(got.ids[k], f.acked[i]) != 0)
			k++;
		if (k == got.n)
			fail_msg("%s was acked but never delivered", f.acked[i]);
	}
	for (int i = 0; i < f.nacked; i++)
		free(f.acked[i]);
	free(f.acked);
	seen_free(&got);
	ws_free(b);
	assert_int_equal(gw_stop(&gw, SIGTERM, 5000), 0);
	gw_cleanup(&gw);
}

/* The same when a SIGHUP revokes the flooding mod's key (1008): the bot
 * stays, so what the mod's reader had already read used to be routed to
 * it without an ack. */
static void test_revoked_acked_or_never_delivered(void **state)
{
	struct gw_proc gw;
	struct flood f = { .gw = &gw };
	struct seen got = { 0 };
	pthread_t th;
	struct ws *b;

	(void)state;
	assert_int_equal(gw_start(&gw, QUIET "queue_max = 100000\nmod_key = mod-key-1\n"), 0);
	b = gw_bot(&gw, "b1");
	f.m = ws_connect(gw.port, "/sync?api_key=mod-key-1", NULL, T);
	assert_non_null(f.m);
	assert_int_equal(ws_send_text(f.m, "{\"type\":\"mod\",\"data\":{\"server_id\":\"s1\","
	                                   "\"channel_id\":\"c1\"}}"), 0);
	json_decref(it_recv_json(f.m, T, NULL));
	pthread_create(&th, NULL, flood_main, &f);
	collect(b, &got, 3000, T, 0);
	assert_int_equal(gw_config_replace(&gw, "mod-key-1", "mod-key-2"), 0);
	kill(gw.pid, SIGHUP);
	pthread_join(th, NULL);   /* ends with the 1008 */
	collect(b, &got, 1000000, 1000, 0);
	assert_true(got.n >= 3000);
	for (size_t i = 0; i < got.n; i++)
		if (!acked_has(&f, got.ids[i]))
			fail_msg("%s was delivered but never acked", got.ids[i]);
	for (int i = 0; i < f.nacked; i++)
		free(f.acked[i]);
	free(f.acked);
	seen_free(&got);
	ws_free(b);
	ws_free(f.m);
	assert_int_equal(gw_stop(&gw, SIGTERM, 5000), 0);
	gw_cleanup(&gw);
}

/* ---- 6. a big delivered batch with sync = full stalls nobody -------------- */

static void test_big_flush_stalls_nobody(void **state)
{
	struct gw_proc gw;
	struct seen got = { 0 };
	struct ws *m, *b, *m2;
	int64_t worst = 0;
	const int n = 8000;

	(void)state;
	/* m2 stays silent meanwhile: no read timeout for it */
	assert_int_equal(gw_start(&gw, "[gateway]\nqueue_max = 10000\nread_timeout = 600\n"
	                               "ping_interval = 300\n[store]\npath = data/gw.db\nsync = full\n"),
	                 0);
	m = gw_mod(&gw, "s1", "c1");
	m2 = gw_mod(&gw, "s2", "c2");
	/* 8,000 queued for an absent bot, 200 per write */
	for (int i = 0; i < n; i += 200) {
		for (int k = 0; k < 200; k++) {
			char id[32];

			snprintf(id, sizeof(id), "q%d", i + k);
			assert_int_equal(it_mod_send(m, id, "s1", "c1", "x"), 0);
		}
		for (int k = 0; k < 200; k++) {
			json_t *j = it_recv_json(m, T * gw_slack(&gw), NULL);

			assert_non_null(j);
			json_decref(j);
		}
	}
	b = gw_bot(&gw, "b1");
	/* while the bot takes them (and their rows are marked), another mod's
	 * messages get their acks at once */
	for (int i = 0; i < 50; i++) {
		char id[32];
		int64_t t0 = now_ms();
		json_t *ack;

		snprintf(id, sizeof(id), "o%d", i);
		assert_int_equal(it_mod_send(m2, id, "s2", "c2", "y"), 0);
		ack = it_wait_ack(m2, id, 3 * T * gw_slack(&gw));
		if (!ack && getenv("IT_DEBUG")) {
			char cmd[400];

			snprintf(cmd, sizeof(cmd), "grep -v civetweb %s | tail -30 >&2", gw.log_path);
			if (system(cmd) != 0)
				perror("system");
		}
		assert_non_null(ack);
		json_decref(ack);
		worst = now_ms() - t0 > worst ? now_ms() - t0 : worst;
	}
	collect(b, &got, n + 50, 3000, 0);
	print_message("worst ack %lld ms while %zu were taken\n", (long long)worst, got.n);
	assert_int_equal(got.n, (size_t)n + 50);
	/* one fsync per message, not one per row marked delivered under a
	 * connection's lock (8,000 of them stalled everyone for seconds); a
	 * shared disk's fsync can take a while on its own */
	if (gw_runtime(&gw) == 0)
		assert_true(worst < 3000);
	seen_free(&got);
	ws_free(m);
	ws_free(m2);
	ws_free(b);
	assert_int_equal(gw_stop(&gw, SIGTERM, 5000), 0);
	gw_cleanup(&gw);
}

/* ---- resume ---------------------------------------------------------------- */

/* seq counts per channel and direction from 1; a mod resuming from a seq
 * gets what came after it (kept or queued), resumed:true; from another
 * epoch everything held, resumed:false; past the history, missed:K. */
static void test_resume_mod(void **state)
{
	struct gw_proc gw;
	struct seen got = { 0 };
	struct ws *m, *bot;
	json_t *reply;
	char epoch[80], hs[300];

	(void)state;
	assert_int_equal(gw_start(&gw, QUIET "history = 5\n"), 0);
	m = join(&gw, "{\"type\":\"mod\",\"data\":{\"server_id\":\"s1\",\"channel_id\":\"c1\"}}",
	         &reply);
	snprintf(epoch, sizeof(epoch), "%s", it_str(reply, "epoch"));
	assert_null(json_object_get(reply, "resumed"));   /* no since: seed reply */
	json_decref(reply);
	bot = gw_bot(&gw, "b1");
	send_n(bot, NULL, "c1", "r", 4, 10, "completed");
	collect(m, &got, 4, 1000, 0);
	seen_assert_exactly(&got, "r", 4);
	for (size_t i = 0; i < 4; i++)
		assert_int_equal(got.seqs[i], i + 1);
	seen_free(&got);
	ws_free(m);
	wait_health(&gw, "\"mods\":0");
	send_n(bot, NULL, "c1", "q", 2, 10, "queued");   /* seq 5, 6: nobody there */

	/* it had processed up to seq 2: 3 and 4 from the history, 5 and 6
	 * from the queue */
	snprintf(hs, sizeof(hs), "{\"type\":\"mod\",\"data\":{\"server_id\":\"s1\",\"channel_id\":"
	         "\"c1\",\"since\":{\"epoch\":\"%s\",\"seq\":2}}}", epoch);
	m = join(&gw, hs, &reply);
	assert_string_equal(it_str(reply, "epoch"), epoch);
	assert_true(json_is_true(json_object_get(reply, "resumed")));
	json_decref(reply);
	collect(m, &got, 4, 1000, 0);
	assert_int_equal(got.n, 4);
	assert_string_equal(got.ids[0], "r2");
	assert_string_equal(got.ids[3], "q1");
	assert_int_equal(got.seqs[0], 3);
	assert_int_equal(got.seqs[3], 6);
	seen_free(&got);
	ws_free(m);

	/* history = 5: seq 1 is gone; from 0 one is missed */
	snprintf(hs, sizeof(hs), "{\"type\":\"mod\",\"data\":{\"server_id\":\"s1\",\"channel_id\":"
	         "\"c1\",\"since\":{\"epoch\":\"%s\",\"seq\":0}}}", epoch);
	m = join(&gw, hs, &reply);
	assert_true(json_is_false(json_object_get(reply, "resumed")));
	assert_int_equal(json_integer_value(json_object_get(reply, "missed")), 1);
	json_decref(reply);
	collect(m, &got, 5, 1000, 0);
	assert_int_equal(got.n, 5);
	assert_int_equal(got.seqs[0], 2);
	seen_free(&got);
	ws_free(m);

	/* another epoch: everything held, resumed:false */
	m = join(&gw, "{\"type\":\"mod\",\"data\":{\"server_id\":\"s1\",\"channel_id\":\"c1\","
	         "\"since\":{\"epoch\":\"old\",\"seq\":4}}}", &reply);
	assert_true(json_is_false(json_object_get(reply, "resumed")));
	json_decref(reply);
	collect(m, &got, 5, 1000, 0);
	assert_int_equal(got.n, 5);
	seen_free(&got);
	ws_free(m);
	ws_free(bot);
	assert_int_equal(gw_stop(&gw, SIGTERM, 5000), 0);
	gw_cleanup(&gw);
}

/* A bot resumes per channel after a kill -9: the epoch and the history
 * were on disk. */
static void test_resume_bot_after_kill9(void **state)
{
	struct gw_proc gw;
	struct seen got = { 0 };
	struct ws *m1, *m2, *b;
	json_t *reply;
	char epoch[80], hs[300];

	(void)state;
	assert_int_equal(gw_start(&gw, QUIET "[store]\npath = data/gw.db\n"), 0);
	b = join(&gw, "{\"type\":\"bot\",\"data\":{\"bot_id\":\"b1\"}}", &reply);
	snprintf(epoch, sizeof(epoch), "%s", it_str(reply, "epoch"));
	json_decref(reply);
	m1 = gw_mod(&gw, "s1", "c1");
	m2 = gw_mod(&gw, "s2", "c2");
	send_n(m1, "s1", "c1", "a", 5, 10, "completed");
	send_n(m2, "s2", "c2", "b", 3, 10, "completed");
	ws_free(m1);
	ws_free(m2);
	ws_free(b);
	assert_int_equal(gw_stop(&gw, SIGKILL, 5000), 128 + SIGKILL);
	assert_int_equal(gw_restart(&gw), 0);
	/* it had processed c1 up to 3 and c2 up to 1 */
	snprintf(hs, sizeof(hs), "{\"type\":\"bot\",\"data\":{\"bot_id\":\"b1\",\"since\":"
	         "{\"epoch\":\"%s\",\"channels\":{\"c1\":3,\"c2\":1}}}}", epoch);
	b = join(&gw, hs, &reply);
	assert_string_equal(it_str(reply, "epoch"), epoch);
	assert_true(json_is_true(json_object_get(reply, "resumed")));
	json_decref(reply);
	collect(b, &got, 4, 1000, 0);
	assert_int_equal(got.n, 4);
	for (size_t i = 0; i < got.n; i++) {
		const char *id = got.ids[i];

		assert_true(strcmp(id, "a3") == 0 || strcmp(id, "a4") == 0 ||
		            strcmp(id, "b1") == 0 || strcmp(id, "b2") == 0);
	}
	assert_null(it_wait_msg(b, 300));
	/* numbering goes on where it stopped */
	m1 = gw_mod(&gw, "s1", "c1");
	send_n(m1, "s1", "c1", "z", 1, 10, "completed");
	seen_free(&got);
	collect(b, &got, 1, 1000, 0);
	assert_int_equal(got.seqs[0], 6);
	seen_free(&got);
	ws_free(m1);
	ws_free(b);
	assert_int_equal(gw_stop(&gw, SIGTERM, 5000), 0);
	gw_cleanup(&gw);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_paused_reader_keeps_what_it_was_sent),
		cmocka_unit_test(test_paused_reader_resumes),
		cmocka_unit_test(test_mod_dropped_after_another_joined),
		cmocka_unit_test(test_queued_duplicate_survives_restart),
		cmocka_unit_test(test_queue_over_64mb_reaches_its_recipient),
		cmocka_unit_test(test_sigterm_acked_or_never_delivered),
		cmocka_unit_test(test_revoked_acked_or_never_delivered),
		cmocka_unit_test(test_big_flush_stalls_nobody),
		cmocka_unit_test(test_resume_mod),
		cmocka_unit_test(test_resume_bot_after_kill9),
	};

	if (getenv("TEST_FILTER"))
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	return cmocka_run_group_tests_name("it_deliver", tests, NULL, NULL);
}
