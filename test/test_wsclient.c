/*
 * test_wsclient.c - unit tests of the tests' WebSocket client (wsclient.c)
 * against a tiny in-process server: one thread, one accepted connection,
 * the server side of the upgrade, then a behaviour chosen by the test
 * (echo with a few text commands, hand-made frames, refusals, plain HTTP).
 * Frames the server writes are built here byte by byte, so the client's
 * parser is checked against the wire format, not against itself.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "wsclient.h"

#define SRV_WAIT_MS  5000

enum srv_mode {
	SRV_ECHO,         /* echo frames; text commands: frag ping close:N ... */
	SRV_INSPECT,      /* answer each frame with a text describing its head */
	SRV_RAW,          /* send hand-made frames, some in pieces, then close */
	SRV_SPLIT,        /* send half a frame, pause, then the rest */
	SRV_GREET,        /* a text frame in the same write as the 101 */
	SRV_SILENT,       /* upgrade, then say nothing */
	SRV_REFUSE,       /* 401 with a JSON body, connection left open */
	SRV_BAD_ACCEPT,   /* 101 with a wrong Sec-WebSocket-Accept */
	SRV_HTTP,         /* plain 200 with Content-Length */
	SRV_HTTP_CHUNKED, /* plain 200, chunked */
	SRV_HTTP_EOF,     /* plain 404, body ends with the connection */
};

struct srv {
	enum srv_mode mode;
	int listen_fd;
	int port;
	pthread_t thread;
	char request[4096];      /* the client's request head */
	int client_close_code;   /* close code the client sent or echoed */
	int frames;              /* frames read from the client */
	int stopped;             /* thread joined */
};

static const char refuse_body[] = "{\"message\":\"Unauthorized.\",\"code\":401}";

static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

/* ---- server side ---------------------------------------------------- */

static int
srv_write(int fd, const void *data, size_t len)
{
	const unsigned char *p = data;
	ssize_t n;

	while (len > 0) {
		n = send(fd, p, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int
srv_read(int fd, void *data, size_t len)
{
	unsigned char *p = data;
	ssize_t n;

	while (len > 0) {
		n = recv(fd, p, len, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Builds an unmasked frame head into hdr; returns its length. */
static size_t
srv_frame_head(unsigned char *hdr, int fin, int opcode, size_t len)
{
	int i;

	hdr[0] = (unsigned char)((fin ? 0x80 : 0) | opcode);
	if (len < 126) {
		hdr[1] = (unsigned char)len;
		return 2;
	}
	if (len <= 0xffff) {
		hdr[1] = 126;
		hdr[2] = (unsigned char)(len >> 8);
		hdr[3] = (unsigned char)len;
		return 4;
	}
	hdr[1] = 127;
	for (i = 0; i < 8; i++)
		hdr[2 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
	return 10;
}

static int
srv_send_frame(int fd, int fin, int opcode, const void *data, size_t len)
{
	unsigned char hdr[10];
	size_t hlen = srv_frame_head(hdr, fin, opcode, len);

	if (srv_write(fd, hdr, hlen) < 0)
		return -1;
	return len > 0 ? srv_write(fd, data, len) : 0;
}

static int
srv_send_text(int fd, const char *text)
{
	return srv_send_frame(fd, 1, 1, text, strlen(text));
}

static int
srv_send_close(int fd, int code, const char *reason)
{
	unsigned char payload[125];
	size_t rlen = strlen(reason);

	payload[0] = (unsigned char)(code >> 8);
	payload[1] = (unsigned char)code;
	memcpy(payload + 2, reason, rlen);
	return srv_send_frame(fd, 1, 8, payload, 2 + rlen);
}

struct srv_frame {
	int fin, rsv, opcode, masked, len7;
	unsigned char *data;     /* unmasked, NUL-terminated */
	size_t len;
};

static int
srv_read_frame(int fd, struct srv_frame *f)
{
	unsigned char h[2], ext[8], key[4] = { 0, 0, 0, 0 };
	uint64_t len;
	size_t i;

	memset(f, 0, sizeof *f);
	if (srv_read(fd, h, 2) < 0)
		return -1;
	f->fin = h[0] >> 7;
	f->rsv = (h[0] >> 4) & 7;
	f->opcode = h[0] & 15;
	f->masked = h[1] >> 7;
	f->len7 = h[1] & 127;
	len = (uint64_t)f->len7;
	if (f->len7 == 126) {
		if (srv_read(fd, ext, 2) < 0)
			return -1;
		len = (uint64_t)ext[0] << 8 | ext[1];
	} else if (f->len7 == 127) {
		if (srv_read(fd, ext, 8) < 0)
			return -1;
		len = 0;
		for (i = 0; i < 8; i++)
			len = len << 8 | ext[i];
	}
	if (len > (64u << 20))
		return -1;
	if (f->masked && srv_read(fd, key, 4) < 0)
		return -1;
	f->data = malloc((size_t)len + 1);
	if (f->data == NULL || srv_read(fd, f->data, (size_t)len) < 0) {
		free(f->data);
		f->data = NULL;
		return -1;
	}
	for (i = 0; i < len; i++)
		f->data[i] ^= key[i & 3];
	f->data[len] = '\0';
	f->len = (size_t)len;
	return 0;
}

/* Reads the request head into s->request; 0 or -1. */
static int
srv_read_head(struct srv *s, int fd)
{
	size_t len = 0;
	ssize_t n;

	while (len + 1 < sizeof s->request) {
		n = recv(fd, s->request + len, 1, 0);
		if (n <= 0)
			return -1;
		len++;
		s->request[len] = '\0';
		if (len >= 4 && memcmp(s->request + len - 4, "\r\n\r\n", 4) == 0)
			return 0;
	}
	return -1;
}

/* Waits for the client to close its end (or SRV_WAIT_MS). */
static void
srv_drain(int fd)
{
	char junk[4096];

	while (recv(fd, junk, sizeof junk, 0) > 0)
		;
}

static int
srv_upgrade(struct srv *s, int fd, const char *after, size_t after_len)
{
	const char *k = strcasestr(s->request, "\r\nSec-WebSocket-Key:");
	char key[64] = "", accept[29], head[256 + 64];
	size_t n;

	if (k != NULL) {
		k += strlen("\r\nSec-WebSocket-Key:");
		k += strspn(k, " ");
		n = strcspn(k, "\r");
		snprintf(key, sizeof key, "%.*s", (int)n, k);
	}
	ws_accept_key(key, accept);
	if (s->mode == SRV_BAD_ACCEPT)
		accept[3] = accept[3] == 'A' ? 'B' : 'A';
	n = (size_t)snprintf(head, sizeof head,
	                     "HTTP/1.1 101 Switching Protocols\r\n"
	                     "Upgrade: websocket\r\nConnection: Upgrade\r\n"
	                     "Sec-WebSocket-Accept: %s\r\n\r\n", accept);
	if (after != NULL) {
		/* One write: the frame rides in the same segment as the head. */
		memcpy(head + n, after, after_len);
		n += after_len;
	}
	return srv_write(fd, head, n);
}

/* Echo mode. Returns when the client closes or asks for a close. */
static void
srv_echo(struct srv *s, int fd)
{
	struct srv_frame f;
	char reply[256];
	int code;

	while (srv_read_frame(fd, &f) == 0) {
		s->frames++;
		if (s->mode == SRV_INSPECT) {
			snprintf(reply, sizeof reply,
			         "fin=%d rsv=%d op=%d masked=%d len7=%d len=%zu",
			         f.fin, f.rsv, f.opcode, f.masked, f.len7, f.len);
			srv_send_text(fd, reply);
		} else if (f.opcode == 8) {
			s->client_close_code = f.len >= 2 ? f.data[0] << 8 | f.data[1] : 1005;
			srv_send_frame(fd, 1, 8, f.data, f.len);
			free(f.data);
			return;
		} else if (f.opcode == 10) {
			snprintf(reply, sizeof reply, "pong:%s", (char *)f.data);
			srv_send_text(fd, reply);
		} else if (f.opcode == 1 && strcmp((char *)f.data, "frag") == 0) {
			srv_send_frame(fd, 0, 1, "hel", 3);
			srv_send_frame(fd, 1, 9, "p1", 2);      /* control frames may */
			srv_send_frame(fd, 0, 0, "lo ", 3);     /* come in between    */
			srv_send_frame(fd, 1, 10, "x", 1);
			srv_send_frame(fd, 1, 0, "world", 5);
		} else if (f.opcode == 1 && strcmp((char *)f.data, "ping") == 0) {
			srv_send_frame(fd, 1, 9, "are you there", 13);
		} else if (f.opcode == 1 && sscanf((char *)f.data, "close:%d", &code) == 1) {
			srv_send_close(fd, code, "bye");
			/* The client should answer with its own close frame. */
			free(f.data);
			if (srv_read_frame(fd, &f) == 0 && f.opcode == 8)
				s->client_close_code = f.len >= 2 ? f.data[0] << 8 | f.data[1] : 1005;
			free(f.data);
			return;
		} else if (f.opcode == 1 && strcmp((char *)f.data, "close-empty") == 0) {
			srv_send_frame(fd, 1, 8, NULL, 0);
			free(f.data);
			if (srv_read_frame(fd, &f) == 0 && f.opcode == 8)
				s->client_close_code = f.len >= 2 ? f.data[0] << 8 | f.data[1] : 1005;
			free(f.data);
			return;
		} else if (f.opcode == 1 && strcmp((char *)f.data, "drop") == 0) {
			free(f.data);
			return;
		} else {
			srv_send_frame(fd, f.fin, f.opcode, f.data, f.len);
		}
		free(f.data);
	}
}

/* Hand-made frames, the first written a byte at a time. */
static void
srv_raw(struct srv *s, int fd)
{
	static const unsigned char hello[] = { 0x81, 0x05, 'h', 'e', 'l', 'l', 'o' };
	static unsigned char mid[4 + 126], big[10 + 65536];
	static const unsigned char bye[] = { 0x88, 0x05, 0x03, 0xe9, 'b', 'y', 'e' };
	struct srv_frame f;
	size_t i;

	for (i = 0; i < sizeof hello; i++) {
		srv_write(fd, hello + i, 1);
		sleep_ms(2);
	}
	mid[0] = 0x82;
	mid[1] = 126;
	mid[2] = 0x00;
	mid[3] = 0x7e;
	memset(mid + 4, 'm', 126);
	srv_write(fd, mid, sizeof mid);
	big[0] = 0x82;
	big[1] = 127;
	memset(big + 2, 0, 8);
	big[7] = 0x01;          /* 0x0000000000010000 = 65536 */
	for (i = 0; i < 65536; i++)
		big[10 + i] = (unsigned char)i;
	srv_write(fd, big, sizeof big);
	srv_write(fd, bye, sizeof bye);
	if (srv_read_frame(fd, &f) == 0 && f.opcode == 8)
		s->client_close_code = f.len >= 2 ? f.data[0] << 8 | f.data[1] : 1005;
	free(f.data);
}

static void
srv_http(struct srv *s, int fd)
{
	static const char ok[] =
	    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
	    "Content-Length: 20\r\nConnection: close\r\n\r\n"
	    "{\"status\":\"healthy\"}";
	static const char chunked[] =
	    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
	    "5\r\n{\"sta\r\n"
	    "a\r\ntus\":\"ok\"}\r\n"
	    "0\r\n\r\n";
	static const char eof[] = "HTTP/1.0 404 Not Found\r\n\r\nnothing here";

	if (s->mode == SRV_HTTP)
		srv_write(fd, ok, strlen(ok));
	else if (s->mode == SRV_HTTP_CHUNKED)
		srv_write(fd, chunked, strlen(chunked));
	else
		srv_write(fd, eof, strlen(eof));
}

static void *
srv_main(void *arg)
{
	struct srv *s = arg;
	struct pollfd pfd = { .fd = s->listen_fd, .events = POLLIN };
	struct timeval tv = { SRV_WAIT_MS / 1000, 0 };
	unsigned char greet[7] = { 0x81, 0x05, 'h', 'e', 'l', 'l', 'o' };
	char refuse[256];
	int fd, n;

	if (poll(&pfd, 1, SRV_WAIT_MS) <= 0)
		return NULL;
	fd = accept(s->listen_fd, NULL, NULL);
	if (fd < 0)
		return NULL;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	if (srv_read_head(s, fd) < 0)
		goto out;

	switch (s->mode) {
	case SRV_HTTP:
	case SRV_HTTP_CHUNKED:
	case SRV_HTTP_EOF:
		srv_http(s, fd);
		goto out;
	case SRV_REFUSE:
		n = snprintf(refuse, sizeof refuse,
		             "HTTP/1.1 401 Unauthorized\r\n"
		             "Content-Type: application/json\r\n"
		             "Content-Length: %zu\r\n\r\n%s",
		             strlen(refuse_body), refuse_body);
		srv_write(fd, refuse, (size_t)n);
		srv_drain(fd);          /* keep-alive: the client must not wait */
		goto out;
	case SRV_GREET:
		srv_upgrade(s, fd, (const char *)greet, sizeof greet);
		srv_drain(fd);
		goto out;
	default:
		if (srv_upgrade(s, fd, NULL, 0) < 0)
			goto out;
		break;
	}

	switch (s->mode) {
	case SRV_ECHO:
	case SRV_INSPECT:
		srv_echo(s, fd);
		break;
	case SRV_RAW:
		srv_raw(s, fd);
		break;
	case SRV_SPLIT:
		srv_write(fd, "\x81\x0bhello", 7);
		sleep_ms(300);
		srv_write(fd, " world", 6);
		srv_drain(fd);
		break;
	default:
		srv_drain(fd);
		break;
	}
out:
	close(fd);
	return NULL;
}

/* Binds fd to a loopback port below 32768 (above is the kernel's ephemeral
 * range, where any client's connect may take a port): 0 or -1. */
static int
bind_low(int fd, struct sockaddr_in *sa)
{
	static unsigned seed;

	if (!seed)
		seed = (unsigned)getpid() ^ (unsigned)time(NULL);
	for (int i = 0; i < 200; i++) {
		seed = seed * 1103515245u + 12345u;
		memset(sa, 0, sizeof *sa);
		sa->sin_family = AF_INET;
		sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		sa->sin_port = htons((uint16_t)(20000 + (seed >> 8) % 12000));
		if (bind(fd, (struct sockaddr *)sa, sizeof *sa) == 0)
			return 0;
	}
	return -1;
}

static struct srv *
srv_start(enum srv_mode mode)
{
	struct sockaddr_in sa;
	socklen_t len = sizeof sa;
	struct srv *s = calloc(1, sizeof *s);

	assert_non_null(s);
	s->mode = mode;
	s->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(s->listen_fd >= 0);
	assert_int_equal(bind_low(s->listen_fd, &sa), 0);
	assert_int_equal(listen(s->listen_fd, 4), 0);
	assert_int_equal(getsockname(s->listen_fd, (struct sockaddr *)&sa, &len), 0);
	s->port = ntohs(sa.sin_port);
	assert_int_equal(pthread_create(&s->thread, NULL, srv_main, s), 0);
	return s;
}

/* Joins the server thread; after this its results may be read. */
static void
srv_stop(struct srv *s)
{
	if (s->stopped)
		return;
	pthread_join(s->thread, NULL);
	close(s->listen_fd);
	s->stopped = 1;
}

static int
srv_teardown(void **state)
{
	struct srv *s = *state;

	if (s != NULL) {
		srv_stop(s);
		free(s);
	}
	*state = NULL;
	return 0;
}

static struct ws *
connect_ok(void **state, enum srv_mode mode)
{
	struct srv *s = srv_start(mode);
	struct ws *w;

	*state = s;
	w = ws_connect(s->port, "/sync?api_key=k", NULL, 2000);
	assert_non_null(w);
	assert_int_equal(w->http_status, 101);
	assert_true(w->fd >= 0);
	return w;
}

/* ---- SHA-1, base64, accept key -------------------------------------- */

static void
hex(const unsigned char *d, size_t n, char *out)
{
	size_t i;

	for (i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", d[i]);
}

static void
test_sha1_vectors(void **state)
{
	static const struct { const char *in, *out; } v[] = {
		{ "", "da39a3ee5e6b4b0d3255bfef95601890afd80709" },
		{ "abc", "a9993e364706816aba3e25717850c26c9cd0d89d" },
		{ "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
		  "84983e441c3bd26ebaae4aa1f95129e5e54670f1" },
		{ "The quick brown fox jumps over the lazy dog",
		  "2fd4e1c67a2d28fced849ee1bb76e7391b93eb12" },
	};
	unsigned char d[20];
	char h[41];
	char *million;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof v / sizeof v[0]; i++) {
		ws_sha1(v[i].in, strlen(v[i].in), d);
		hex(d, 20, h);
		assert_string_equal(h, v[i].out);
	}
	million = malloc(1000000);
	assert_non_null(million);
	memset(million, 'a', 1000000);
	ws_sha1(million, 1000000, d);
	free(million);
	hex(d, 20, h);
	assert_string_equal(h, "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
}

static void
test_base64_vectors(void **state)
{
	static const char *v[][2] = {
		{ "", "" }, { "f", "Zg==" }, { "fo", "Zm8=" }, { "foo", "Zm9v" },
		{ "foob", "Zm9vYg==" }, { "fooba", "Zm9vYmE=" },
		{ "foobar", "Zm9vYmFy" },
	};
	char out[16];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof v / sizeof v[0]; i++) {
		assert_int_equal(ws_base64(v[i][0], strlen(v[i][0]), out),
		                 strlen(v[i][1]));
		assert_string_equal(out, v[i][1]);
	}
}

static void
test_accept_key_rfc6455(void **state)
{
	char out[29];

	(void)state;
	/* RFC 6455 section 1.3 (verified with an independent SHA-1 too). */
	ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", out);
	assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

/* ---- handshake ------------------------------------------------------ */

static void
test_upgrade_request(void **state)
{
	struct srv *s = srv_start(SRV_ECHO);
	struct ws *w;
	const char *k;

	*state = s;
	w = ws_connect(s->port, "/sync?api_key=k", "X-API-Key: abc\r\n", 2000);
	assert_non_null(w);
	assert_int_equal(w->http_status, 101);
	ws_free(w);
	srv_stop(s);
	assert_non_null(strstr(s->request, "GET /sync?api_key=k HTTP/1.1\r\n"));
	assert_non_null(strcasestr(s->request, "\r\nHost: 127.0.0.1:"));
	assert_non_null(strcasestr(s->request, "\r\nUpgrade: websocket\r\n"));
	assert_non_null(strcasestr(s->request, "\r\nConnection: Upgrade\r\n"));
	assert_non_null(strcasestr(s->request, "\r\nSec-WebSocket-Version: 13\r\n"));
	assert_non_null(strstr(s->request, "\r\nX-API-Key: abc\r\n\r\n"));
	k = strcasestr(s->request, "\r\nSec-WebSocket-Key: ");
	assert_non_null(k);
	k += strlen("\r\nSec-WebSocket-Key: ");
	assert_int_equal(strcspn(k, "\r"), 24);     /* 16 bytes in base64 */
	assert_int_equal(k[22], '=');
	free(s);
	*state = NULL;
}

static void
test_refused_upgrade(void **state)
{
	struct srv *s = srv_start(SRV_REFUSE);
	struct ws *w;
	int64_t t0 = now_ms();

	*state = s;
	w = ws_connect(s->port, "/sync", NULL, 3000);
	assert_non_null(w);
	assert_int_equal(w->http_status, 401);
	assert_string_equal(w->http_body, refuse_body);
	assert_int_equal(w->fd, -1);
	/* Content-Length was honoured: no wait for the server to hang up. */
	assert_true(now_ms() - t0 < 1500);
	ws_free(w);
}

static void
test_bad_accept(void **state)
{
	struct srv *s = srv_start(SRV_BAD_ACCEPT);
	struct ws *w;

	*state = s;
	w = ws_connect(s->port, "/sync", NULL, 2000);
	assert_non_null(w);
	assert_int_equal(w->http_status, 0);
	assert_int_equal(w->fd, -1);
	assert_non_null(strstr(w->http_body, "Accept"));
	ws_free(w);
}

static void
test_connect_refused(void **state)
{
	struct sockaddr_in sa;
	socklen_t len = sizeof sa;
	char body[16];
	int fd, port;

	(void)state;
	/* A port that was just free and has no listener. */
	fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(bind_low(fd, &sa), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	port = ntohs(sa.sin_port);
	close(fd);
	assert_null(ws_connect(port, "/sync", NULL, 500));
	assert_int_equal(http_get(port, "/health", NULL, body, sizeof body, 500), -1);
}

static void
test_frame_right_after_101(void **state)
{
	struct ws *w = connect_ok(state, SRV_GREET);
	char *text = ws_recv_text(w, 2000, NULL);

	assert_non_null(text);
	assert_string_equal(text, "hello");
	free(text);
	ws_free(w);
}

/* ---- frames --------------------------------------------------------- */

static void
test_text_round_trip(void **state)
{
	struct ws *w = connect_ok(state, SRV_ECHO);
	char *text;
	int code = -1;

	assert_int_equal(ws_send_text(w, "{\"hello\":\"world\"}"), 0);
	text = ws_recv_text(w, 2000, &code);
	assert_non_null(text);
	assert_string_equal(text, "{\"hello\":\"world\"}");
	assert_int_equal(code, 0);
	free(text);
	ws_free(w);
}

static void
test_payload_lengths(void **state)
{
	static const size_t lens[] = { 0, 1, 125, 126, 127, 65535, 65536,
	                               1u << 20 };
	struct ws *w = connect_ok(state, SRV_ECHO);
	struct ws_frame f;
	unsigned char *data;
	size_t i, j;

	data = malloc(1u << 20);
	assert_non_null(data);
	for (j = 0; j < (1u << 20); j++)
		data[j] = (unsigned char)(j * 7 + 3);
	for (i = 0; i < sizeof lens / sizeof lens[0]; i++) {
		assert_int_equal(ws_send_frame(w, 1, 2, data, lens[i], 1, 0), 0);
		assert_int_equal(ws_recv_frame(w, &f, 5000), 0);
		assert_int_equal(f.opcode, 2);
		assert_int_equal(f.fin, 1);
		assert_int_equal(f.len, lens[i]);
		if (lens[i] > 0)
			assert_memory_equal(f.data, data, lens[i]);
		assert_int_equal(f.data[f.len], '\0');
		ws_frame_free(&f);
		assert_null(f.data);
	}
	free(data);
	ws_free(w);
}

static void
test_send_head_encoding(void **state)
{
	static const struct { size_t len; const char *want; } v[] = {
		{ 125, "fin=1 rsv=0 op=2 masked=1 len7=125 len=125" },
		{ 126, "fin=1 rsv=0 op=2 masked=1 len7=126 len=126" },
		{ 65535, "fin=1 rsv=0 op=2 masked=1 len7=126 len=65535" },
		{ 65536, "fin=1 rsv=0 op=2 masked=1 len7=127 len=65536" },
	};
	struct ws *w = connect_ok(state, SRV_INSPECT);
	unsigned char *data = calloc(1, 65536);
	char *text;
	size_t i;

	assert_non_null(data);
	for (i = 0; i < sizeof v / sizeof v[0]; i++) {
		assert_int_equal(ws_send_frame(w, 1, 2, data, v[i].len, 1, 0), 0);
		text = ws_recv_text(w, 2000, NULL);
		assert_non_null(text);
		assert_string_equal(text, v[i].want);
		free(text);
	}
	/* Hostile frames: unmasked, RSV1, not final, reserved opcode. */
	assert_int_equal(ws_send_frame(w, 1, 1, "x", 1, 0, 0x40), 0);
	text = ws_recv_text(w, 2000, NULL);
	assert_string_equal(text, "fin=1 rsv=4 op=1 masked=0 len7=1 len=1");
	free(text);
	assert_int_equal(ws_send_frame(w, 0, 3, "ab", 2, 1, 0x70), 0);
	text = ws_recv_text(w, 2000, NULL);
	assert_string_equal(text, "fin=0 rsv=7 op=3 masked=1 len7=2 len=2");
	free(text);
	/* Raw bytes go out untouched: a masked empty ping. */
	assert_int_equal(ws_send_raw(w, "\x89\x80\x01\x02\x03\x04", 6), 0);
	text = ws_recv_text(w, 2000, NULL);
	assert_string_equal(text, "fin=1 rsv=0 op=9 masked=1 len7=0 len=0");
	free(text);
	free(data);
	ws_free(w);
}

static void
test_hand_made_frames(void **state)
{
	struct ws *w = connect_ok(state, SRV_RAW);
	struct srv *s = *state;
	struct ws_frame f;
	size_t i;
	int code = 0;

	assert_int_equal(ws_recv_frame(w, &f, 2000), 0);
	assert_int_equal(f.opcode, 1);
	assert_int_equal(f.fin, 1);
	assert_int_equal(f.len, 5);
	assert_string_equal((char *)f.data, "hello");
	ws_frame_free(&f);

	assert_int_equal(ws_recv_frame(w, &f, 2000), 0);
	assert_int_equal(f.opcode, 2);
	assert_int_equal(f.len, 126);
	for (i = 0; i < 126; i++)
		assert_int_equal(f.data[i], 'm');
	ws_frame_free(&f);

	assert_int_equal(ws_recv_frame(w, &f, 2000), 0);
	assert_int_equal(f.len, 65536);
	for (i = 0; i < 65536; i++)
		if (f.data[i] != (unsigned char)i)
			fail_msg("byte %zu", i);
	ws_frame_free(&f);

	/* The close frame: 1001 "bye"; the client echoes it. */
	assert_null(ws_recv_text(w, 2000, &code));
	assert_int_equal(code, 1001);
	srv_stop(s);
	assert_int_equal(s->client_close_code, 1001);
	ws_free(w);
	free(s);
	*state = NULL;
}

static void
test_partial_frame_survives_timeout(void **state)
{
	struct ws *w = connect_ok(state, SRV_SPLIT);
	struct ws_frame f;

	assert_int_equal(ws_recv_frame(w, &f, 50), -1);
	assert_null(f.data);
	assert_int_equal(ws_recv_frame(w, &f, 2000), 0);
	assert_int_equal(f.len, 11);
	assert_string_equal((char *)f.data, "hello world");
	ws_frame_free(&f);
	ws_free(w);
}

static void
test_fragmented_receive(void **state)
{
	struct ws *w = connect_ok(state, SRV_ECHO);
	char *text;

	assert_int_equal(ws_send_text(w, "frag"), 0);
	text = ws_recv_text(w, 2000, NULL);
	assert_non_null(text);
	assert_string_equal(text, "hello world");
	free(text);
	/* The ping between the fragments was answered with its payload. */
	text = ws_recv_text(w, 2000, NULL);
	assert_non_null(text);
	assert_string_equal(text, "pong:p1");
	free(text);
	ws_free(w);
}

static void
test_ping_answered(void **state)
{
	struct ws *w = connect_ok(state, SRV_ECHO);
	char *text;

	assert_int_equal(ws_send_text(w, "ping"), 0);
	text = ws_recv_text(w, 2000, NULL);
	assert_non_null(text);
	assert_string_equal(text, "pong:are you there");
	free(text);
	ws_free(w);
}

static void
test_close_code(void **state)
{
	struct ws *w = connect_ok(state, SRV_ECHO);
	struct srv *s = *state;
	struct ws_frame f;
	int code = 0;

	assert_int_equal(ws_send_text(w, "close:4001"), 0);
	assert_null(ws_recv_text(w, 2000, &code));
	assert_int_equal(code, 4001);
	srv_stop(s);
	assert_int_equal(s->client_close_code, 4001);
	/* The server hung up after the close handshake. */
	assert_int_equal(ws_recv_frame(w, &f, 1000), -2);
	ws_free(w);
	free(s);
	*state = NULL;
}

static void
test_close_frame_fields(void **state)
{
	struct ws *w = connect_ok(state, SRV_ECHO);
	struct ws_frame f;
	unsigned char close[] = { 0x0f, 0xa0, 'o', 'k' };   /* 4000 "ok" */

	/* Echoed back by the server: parsed as a close frame with its code. */
	assert_int_equal(ws_send_frame(w, 1, 8, close, sizeof close, 1, 0), 0);
	assert_int_equal(ws_recv_frame(w, &f, 2000), 0);
	assert_int_equal(f.opcode, 8);
	assert_int_equal(f.close_code, 4000);
	assert_int_equal(f.len, 4);
	assert_string_equal((char *)f.data + 2, "ok");
	ws_frame_free(&f);
	ws_free(w);
}

static void
test_wait_close_no_code(void **state)
{
	struct ws *w = connect_ok(state, SRV_ECHO);
	struct srv *s = *state;

	assert_int_equal(ws_send_text(w, "close-empty"), 0);
	assert_int_equal(ws_wait_close(w, 2000), 1005);
	srv_stop(s);
	assert_int_equal(s->client_close_code, 1005);
	ws_free(w);
	free(s);
	*state = NULL;
}

static void
test_wait_close_skips_data(void **state)
{
	struct ws *w = connect_ok(state, SRV_ECHO);

	assert_int_equal(ws_send_text(w, "some data"), 0);
	assert_int_equal(ws_send_text(w, "close:1000"), 0);
	assert_int_equal(ws_wait_close(w, 2000), 1000);
	ws_free(w);
}

static void
test_wait_close_eof(void **state)
{
	struct ws *w = connect_ok(state, SRV_ECHO);

	assert_int_equal(ws_send_text(w, "drop"), 0);
	assert_int_equal(ws_wait_close(w, 2000), 1006);
	ws_free(w);
}

static void
test_recv_eof(void **state)
{
	struct ws *w = connect_ok(state, SRV_ECHO);
	struct ws_frame f;
	int code = -1;

	assert_int_equal(ws_send_text(w, "drop"), 0);
	assert_null(ws_recv_text(w, 2000, &code));
	assert_int_equal(code, 0);
	assert_int_equal(ws_recv_frame(w, &f, 2000), -2);
	ws_free(w);
}

static void
test_timeouts(void **state)
{
	struct ws *w = connect_ok(state, SRV_SILENT);
	struct ws_frame f;
	int64_t t0;
	int code = -1;

	t0 = now_ms();
	assert_int_equal(ws_recv_frame(w, &f, 100), -1);
	assert_true(now_ms() - t0 >= 90);
	assert_true(now_ms() - t0 < 1000);
	assert_null(ws_recv_text(w, 100, &code));
	assert_int_equal(code, 0);
	assert_int_equal(ws_wait_close(w, 100), -1);
	assert_int_equal(ws_recv_frame(w, &f, 0), -1);
	ws_free(w);
}

/* ---- plain HTTP ----------------------------------------------------- */

static void
test_http_get(void **state)
{
	struct srv *s = srv_start(SRV_HTTP);
	char body[64];

	*state = s;
	assert_int_equal(http_get(s->port, "/health", NULL, body, sizeof body,
	                          2000), 200);
	assert_string_equal(body, "{\"status\":\"healthy\"}");
	srv_stop(s);
	assert_non_null(strstr(s->request, "GET /health HTTP/1.1\r\n"));
	assert_non_null(strcasestr(s->request, "\r\nConnection: close\r\n"));
	free(s);
	*state = NULL;
}

static void
test_http_get_truncates(void **state)
{
	struct srv *s = srv_start(SRV_HTTP);
	char body[8];

	*state = s;
	assert_int_equal(http_get(s->port, "/health", NULL, body, sizeof body,
	                          2000), 200);
	assert_string_equal(body, "{\"statu");
}

static void
test_http_get_chunked(void **state)
{
	struct srv *s = srv_start(SRV_HTTP_CHUNKED);
	char body[64];

	*state = s;
	assert_int_equal(http_get(s->port, "/x", NULL, body, sizeof body, 2000), 200);
	assert_string_equal(body, "{\"status\":\"ok\"}");
}

static void
test_http_get_until_eof(void **state)
{
	struct srv *s = srv_start(SRV_HTTP_EOF);
	char body[64];

	*state = s;
	assert_int_equal(http_get(s->port, "/nope", NULL, body, sizeof body, 2000),
	                 404);
	assert_string_equal(body, "nothing here");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sha1_vectors),
		cmocka_unit_test(test_base64_vectors),
		cmocka_unit_test(test_accept_key_rfc6455),
		cmocka_unit_test_teardown(test_upgrade_request, srv_teardown),
		cmocka_unit_test_teardown(test_refused_upgrade, srv_teardown),
		cmocka_unit_test_teardown(test_bad_accept, srv_teardown),
		cmocka_unit_test(test_connect_refused),
		cmocka_unit_test_teardown(test_frame_right_after_101, srv_teardown),
		cmocka_unit_test_teardown(test_text_round_trip, srv_teardown),
		cmocka_unit_test_teardown(test_payload_lengths, srv_teardown),
		cmocka_unit_test_teardown(test_send_head_encoding, srv_teardown),
		cmocka_unit_test_teardown(test_hand_made_frames, srv_teardown),
		cmocka_unit_test_teardown(test_partial_frame_survives_timeout,
		                          srv_teardown),
		cmocka_unit_test_teardown(test_fragmented_receive, srv_teardown),
		cmocka_unit_test_teardown(test_ping_answered, srv_teardown),
		cmocka_unit_test_teardown(test_close_code, srv_teardown),
		cmocka_unit_test_teardown(test_close_frame_fields, srv_teardown),
		cmocka_unit_test_teardown(test_wait_close_no_code, srv_teardown),
		cmocka_unit_test_teardown(test_wait_close_skips_data, srv_teardown),
		cmocka_unit_test_teardown(test_wait_close_eof, srv_teardown),
		cmocka_unit_test_teardown(test_recv_eof, srv_teardown),
		cmocka_unit_test_teardown(test_timeouts, srv_teardown),
		cmocka_unit_test_teardown(test_http_get, srv_teardown),
		cmocka_unit_test_teardown(test_http_get_truncates, srv_teardown),
		cmocka_unit_test_teardown(test_http_get_chunked, srv_teardown),
		cmocka_unit_test_teardown(test_http_get_until_eof, srv_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
