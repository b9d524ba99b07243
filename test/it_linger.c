/*
 * it_linger.c - closes a client can read (SPEC.md §8a), against the real
 * binary: the gateway's close lingers (after its FIN it reads and discards
 * what the peer still sends, 2 s at most) instead of closing on unread
 * input, which makes the kernel answer with a reset and the client lose
 * the close frame it had not read yet. And the 101 answer never carries
 * Sec-WebSocket-Protocol (CivetWeb #1091).
 *
 * The clients here are blocking, as a plain-socket or JDK client is: one
 * send() of the whole frame, then a read. Their sockets keep the system's
 * buffer sizes. One gateway serves the group: body_size = 1 (MB),
 * max_connections = 2 (so CivetWeb runs 10 workers and reuses them).
 * Every wait is bounded.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "itutil.h"

#define T          (3000 * slack)   /* ms: generous receive timeout */
#define TRIES      20
#define BIG        (3u << 20)       /* the message: 3 MiB, body_size 1 MB */
#define LINGER_MS  2000             /* SPEC §8a: the close lingers this long at most */
#define GRACE_MS   1000             /* conn.h GW_CLOSE_GRACE_MS */

static const char config[] =
	"[gateway]\n"
	"body_size = 1\n"
	"max_connections = 2\n";

static struct gw_proc gw;
static int slack = 1;
static unsigned serial;

/* --- small tools ---------------------------------------------------------- */

/* Waits until the gateway has no websocket at all (pending ones too). */
static void wait_no_peers(void)
{
	char body[8192] = "";
	int64_t until = now_ms() + 5000 * slack;

	while (now_ms() < until) {
		if (http_get(gw.port, "/metrics", NULL, body, sizeof(body), T) == 200 &&
		    strstr(body, "homestead_connections{role=\"mod\"} 0\n") &&
		    strstr(body, "homestead_connections{role=\"bot\"} 0\n") &&
		    strstr(body, "homestead_connections{role=\"pending\"} 0\n"))
			return;
		sleep_ms(20);
	}
	fail_msg("peers still connected:\n%s", body);
}

/* Upgrades to /sync; with max_connections = 2 the previous try's
 * connection may still hold its slot a moment (closing): a 503 is tried
 * again, for 5 s at most. */
static struct ws *connect_slot(void)
{
	int64_t until = now_ms() + 5000 * slack;
	struct ws *w;

	for (;;) {
		w = ws_connect(gw.port, "/sync?api_key=test-key", NULL, T);
		if (!w || w->http_status != 503 || now_ms() >= until)
			return w;
		ws_free(w);
		sleep_ms(20);
	}
}

static char last_sid[32];

static struct ws *mod_new(void)
{
	struct ws *m;

	snprintf(last_sid, sizeof(last_sid), "linger-%u", ++serial);
	m = gw_mod(&gw, last_sid, "chan-linger");
	assert_non_null(m);
	return m;
}

/* The gateway still serves: /health answers and a mod's message is acked. */
static void assert_healthy(void)
{
	char mid[32];
	struct ws *m;
	json_t *j;

	wait_no_peers();
	assert_int_equal(http_get(gw.port, "/health", NULL, NULL, 0, T), 200);
	m = mod_new();
	snprintf(mid, sizeof(mid), "m-%u", serial);
	assert_int_equal(it_mod_send(m, mid, last_sid, "chan-linger", "hi"), 0);
	j = it_wait_ack(m, mid, T);
	ws_free(m);
	if (!j)
		fail_msg("no ack for a mod's message");
	json_decref(j);
	wait_no_peers();
}

/* Reads until the close frame; returns its code, 1006 if the connection
 * ended without one (EOF or reset), -1 on timeout. Data frames are kept in
 * *text (the first one, malloc'd) when text is not NULL. Does not answer
 * the close: the caller decides. */
static int read_to_close(struct ws *w, int timeout_ms, char **text)
{
	int64_t until = now_ms() + timeout_ms;
	struct ws_frame f;

	for (;;) {
		int left = (int)(until - now_ms()), rc, code;

		if (left <= 0)
			return -1;
		rc = ws_recv_frame(w, &f, left);
		if (rc == -1)
			return -1;
		if (rc == -2)
			return 1006;
		if (f.opcode == 8) {
			code = f.close_code;
			ws_frame_free(&f);
			return code;
		}
		if (text && !*text && (f.opcode == 1 || f.opcode == 2)) {
			*text = (char *)f.data;
			f.data = NULL;
		}
		ws_frame_free(&f);
	}
}

/* --- an oversized message, written in one blocking send ------------------- */

/*
 * The case: a 3 MiB message with body_size = 1. The gateway
 * refuses it after its header, then reads and discards the rest, so the
 * client's send() completes (before, it failed with a reset in most tries,
 * and ws in Node saw 1006) and the client reads 1009. Every try.
 */
static void oversize_tries(size_t size, int tries)
{
	char *big = malloc(size);
	int ok = 0;

	assert_non_null(big);
	memset(big, 'a', size);
	for (int i = 0; i < tries; i++) {
		struct ws *m = mod_new();
		int64_t t0 = now_ms();
		int sent = ws_send_frame(m, 1, 1, big, size, 1, 0);
		int err = errno;
		int code = ws_wait_close(m, T);

		ws_free(m);
		if (sent != 0 || code != 1009)
			fail_msg("%zu bytes, try %d of %d: send %s, close %d after %lld ms (%d good "
			         "before)", size, i + 1, tries, sent == 0 ? "completed" : strerror(err),
			         code, (long long)(now_ms() - t0), ok);
		ok++;
	}
	free(big);
	print_message("%zu bytes: the send completed and 1009 was read in %d of %d tries\n", size,
	              ok, tries);
}

static void test_oversize_blocking_1009(void **state)
{
	(void)state;
	oversize_tries(BIG, TRIES);
	/* more than the kernel's buffers take (4 MiB send buffer here): only
	 * reading the rest of the frame lets the send complete */
	oversize_tries(8u << 20, 5);
	assert_healthy();
}

/* Fragments over body_size: the 1009 comes at a frame boundary, the
 * client is still sending; it reads the close all the same. */
static void test_oversize_fragments_1009(void **state)
{
	size_t n = 512 * 1024, total = 6 * n;
	unsigned char *burst = malloc(total + 6 * 14);
	unsigned char *p = burst;
	struct ws *m;
	int code;

	(void)state;
	assert_non_null(burst);
	for (int i = 0; i < 6; i++) {
		/* masked frame head, 64-bit length form, zero mask: payload as is */
		*p++ = (unsigned char)((i == 5 ? 0x80 : 0) | (i == 0 ? 1 : 0));
		*p++ = 0x80 | 127;
		for (int k = 0; k < 8; k++)
			*p++ = (unsigned char)((uint64_t)n >> (56 - 8 * k));
		memset(p, 0, 4);
		p += 4;
		memset(p, 'b', n);
		p += n;
	}
	for (int i = 0; i < 5; i++) {
		m = mod_new();
		assert_int_equal(ws_send_raw(m, burst, (size_t)(p - burst)), 0);
		code = ws_wait_close(m, T);
		ws_free(m);
		assert_int_equal(code, 1009);
	}
	free(burst);
	assert_healthy();
}

/* --- a close the gateway starts while the client is still sending --------- */

/*
 * A bad handshake gets {"code":400} and close 1000; the client wrote it
 * together with 4 MiB of frames, in one blocking send, and is not reading
 * meanwhile. The send completes and the client reads both.
 */
static void test_handshake_error_while_sending(void **state)
{
	const size_t fn = 64 * 1024, nframes = 64;
	unsigned char *burst = malloc(16 + nframes * (fn + 8));
	unsigned char *p = burst;

	(void)state;
	assert_non_null(burst);
	/* the handshake: not JSON */
	*p++ = 0x81;
	*p++ = 0x80 | 1;
	memset(p, 0, 4);
	p += 4;
	*p++ = '{';
	for (size_t i = 0; i < nframes; i++) {
		*p++ = 0x81;
		*p++ = 0x80 | 126;
		*p++ = (unsigned char)(fn >> 8);
		*p++ = (unsigned char)fn;
		memset(p, 0, 4);
		p += 4;
		memset(p, ' ', fn);   /* masked with 0: plain spaces */
		p += fn;
	}
	for (int i = 0; i < TRIES; i++) {
		struct ws *w = connect_slot();
		char *text = NULL;
		int sent, err, code;

		assert_non_null(w);
		assert_int_equal(w->http_status, 101);
		sent = ws_send_raw(w, burst, (size_t)(p - burst));
		err = errno;
		code = read_to_close(w, T, &text);
		ws_free(w);
		if (sent != 0 || code != 1000 || !text || !strstr(text, "\"code\":400"))
			fail_msg("try %d: send %s, reply %s, close %d", i + 1,
			         sent == 0 ? "completed" : strerror(err), text ? text : "(none)", code);
		free(text);
	}
	free(burst);
	assert_healthy();
}

/* --- the lingering is bounded --------------------------------------------- */

/*
 * After the gateway's close a client goes on sending garbage, never
 * closing. The gateway reads it for about 2 s (LINGER_MS), then closes:
 * the client's sends fail from then on. Its rate (about 6 MB/s) keeps it
 * under the byte budget (64 MiB), so the time bound is what ends it.
 */
static void test_linger_is_bounded(void **state)
{
	static char junk[64 * 1024];
	struct ws *w;
	int64_t t_close, cut = -1;
	char *text = NULL;
	int code;

	(void)state;
	memset(junk, 0x55, sizeof(junk));
	w = connect_slot();
	assert_non_null(w);
	assert_int_equal(w->http_status, 101);
	assert_int_equal(ws_send_text(w, "not a handshake"), 0);
	code = read_to_close(w, T, &text);
	t_close = now_ms();
	assert_int_equal(code, 1000);
	free(text);
	while (now_ms() - t_close < LINGER_MS + 3000 * slack) {
		if (send(w->fd, junk, sizeof(junk), MSG_NOSIGNAL | MSG_DONTWAIT) < 0 &&
		    errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
			cut = now_ms() - t_close;
			break;
		}
		sleep_ms(10);
	}
	ws_free(w);
	print_message("garbage after the close: cut after %lld ms\n", (long long)cut);
	if (cut < 0)
		fail_msg("still not cut %d ms after the close", LINGER_MS + 3000 * slack);
	/* it lingered (not cut at once), and not for long */
	assert_true(cut >= LINGER_MS / 2);
	assert_true(cut <= LINGER_MS + 1000 * slack);
	assert_healthy();
}

/*
 * A close started from elsewhere (replaced by a newer mod) that the peer never
 * finishes: it trickles a frame forever. After the close grace the gateway
 * aborts it (shutdown both ways); the reader wakes and the close does not
 * linger on top of that.
 */
static void test_abort_still_prompt(void **state)
{
	unsigned char head[14] = { 0x82, 0x80 | 127 };
	static char chunk[1024];
	struct ws *a, *b;
	int64_t t_close = -1, cut = -1, until;
	char sid[32];
	struct ws_frame f;
	int code = 0;

	(void)state;
	snprintf(sid, sizeof(sid), "linger-abort-%u", ++serial);
	a = gw_mod(&gw, sid, "chan-linger");
	assert_non_null(a);
	/* a frame of 512 KiB (under body_size) that never ends */
	head[7] = 0x08;   /* 0x80000 */
	assert_int_equal(ws_send_raw(a, head, sizeof(head)), 0);
	b = gw_mod(&gw, sid, "chan-linger");   /* replaces a: 4000 */
	assert_non_null(b);
	until = now_ms() + GRACE_MS + LINGER_MS + 4000 * slack;
	while (now_ms() < until) {
		if (t_close < 0 && ws_recv_frame(a, &f, 0) == 0) {
			if (f.opcode == 8) {
				code = f.close_code;
				t_close = now_ms();
			}
			ws_frame_free(&f);
		}
		if (send(a->fd, chunk, sizeof(chunk), MSG_NOSIGNAL | MSG_DONTWAIT) < 0 &&
		    errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
			cut = now_ms() - (t_close >= 0 ? t_close : 0);
			break;
		}
		sleep_ms(20);
	}
	ws_free(a);
	ws_free(b);
	print_message("trickling peer after %d: cut after %lld ms\n", code, (long long)cut);
	/* replaced: 4000 in SPEC §5, 1000 before that was done */
	assert_true(code == 4000 || code == 1000);
	assert_true(cut >= 0);
	/* the grace, the housekeeping tick (250 ms), and no 2 s linger */
	assert_true(cut <= GRACE_MS + 500 + 500 * slack);
	assert_healthy();
}

/* --- no subprotocol ------------------------------------------------------- */

/* Sends an upgrade request (offering `protocols` unless NULL) on a raw
 * socket and reads the answer's head into head. Returns the fd. */
static int upgrade_raw(const char *protocols, char *head, size_t cap)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	char req[512];
	size_t len = 0;
	int fd = socket(AF_INET, SOCK_STREAM, 0), n;

	assert_true(fd >= 0);
	sa.sin_port = htons((uint16_t)gw.port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	n = snprintf(req, sizeof(req),
	             "GET /sync?api_key=test-key HTTP/1.1\r\nHost: 127.0.0.1\r\n"
	             "Upgrade: websocket\r\nConnection: Upgrade\r\n"
	             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	             "Sec-WebSocket-Version: 13\r\n%s%s%s\r\n",
	             protocols ? "Sec-WebSocket-Protocol: " : "", protocols ? protocols : "",
	             protocols ? "\r\n" : "");
	assert_int_equal(send(fd, req, (size_t)n, MSG_NOSIGNAL), n);
	head[0] = '\0';
	while (len + 1 < cap && !strstr(head, "\r\n\r\n")) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };

		if (poll(&pfd, 1, T) <= 0)
			break;
		n = (int)recv(fd, head + len, cap - 1 - len, 0);
		if (n <= 0)
			break;
		len += (size_t)n;
		head[len] = '\0';
	}
	return fd;
}

static void test_no_subprotocol_echo(void **state)
{
	static const char *const offers[] = { "json", NULL, "chat, json", NULL, "x-gateway",
	                                      NULL };
	char head[2048];

	(void)state;
	/* more upgrades than workers (10): the workers are reused, and one
	 * that served an offer serves one without */
	for (int i = 0; i < 36; i++) {
		const char *offer = offers[i % 6];
		int fd = upgrade_raw(offer, head, sizeof(head));

		close(fd);
		if (strncmp(head, "HTTP/1.1 101", 12) != 0)
			fail_msg("upgrade %d (offer %s): %s", i, offer ? offer : "none", head);
		if (strcasestr(head, "Sec-WebSocket-Protocol"))
			fail_msg("upgrade %d (offer %s) got a subprotocol:\n%s", i,
			         offer ? offer : "none", head);
		wait_no_peers();
	}
	assert_healthy();
}

/* --- group ---------------------------------------------------------------- */

static int group_up(void **state)
{
	(void)state;
	if (gw_start(&gw, config) != 0)
		return -1;
	slack = gw_slack(&gw);
	return 0;
}

static int group_down(void **state)
{
	int rc;

	(void)state;
	rc = gw_stop(&gw, SIGTERM, 5000);
	gw_cleanup(&gw);
	return rc == 0 ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_oversize_blocking_1009),
		cmocka_unit_test(test_oversize_fragments_1009),
		cmocka_unit_test(test_handshake_error_while_sending),
		cmocka_unit_test(test_linger_is_bounded),
		cmocka_unit_test(test_abort_still_prompt),
		cmocka_unit_test(test_no_subprotocol_echo),
	};

	signal(SIGPIPE, SIG_IGN);
	if (getenv("TEST_FILTER"))
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	return cmocka_run_group_tests_name("it_linger", tests, group_up, group_down);
}
