/*
 * wsclient.c - a blocking RFC 6455 client for the tests, on raw sockets.
 *
 * It speaks to 127.0.0.1 only. Every struct ws owns one socket and one
 * receive buffer: bytes are read into w->buf as they come and a frame is
 * consumed only once it is whole, so a timeout in the middle of a frame
 * loses nothing. Sends are single send() calls of the whole frame, which
 * keeps a frame together on the wire unless the test asks otherwise
 * (ws_send_raw). It can misbehave on purpose: unmasked frames, RSV bits,
 * any opcode; and it takes whatever a server sends (masked frames too).
 * The wire format is src/tools/wsc.c's, the tools' client primitives: the
 * key and its accept value, the response head, frame heads both ways (the
 * decoder there judges nothing), masking, SHA-1 and base64. What is here is
 * the blocking socket work around them, the receive buffer and HTTP bodies.
 * ws_sha1/ws_base64/ws_accept_key stay as names for the tests' in-process
 * server.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "wsclient.h"
#include "wsc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define WS_FRAME_MAX     ((uint64_t)1 << 30)    /* biggest frame we accept */
#define WS_BODY_MAX      ((size_t)16 << 20)     /* biggest HTTP body we read */
#define WS_SEND_TIMEOUT  10                     /* s a send may block */

static int64_t now_ms(void);
static int64_t deadline_after(int timeout_ms);
static int deadline_left(int64_t deadline);
static int tcp_connect(int port, int timeout_ms);
static int send_all(int fd, const void *data, size_t len);
static int buf_reserve(struct ws *w, size_t need);
static int buf_fill(struct ws *w, size_t need, int64_t deadline);
static void buf_consume(struct ws *w, size_t n);
static int head_read(struct ws *w, int64_t deadline, const char *accept,
                     struct wsc_http *h);
static int body_read(struct ws *w, const struct wsc_http *h, int64_t deadline,
                     char **body, size_t *body_len);
static char *request_new(const char *path, int port, const char *headers,
                         const char *extra_headers);
static void ws_refused(struct ws *w, int status, const char *why);
static void close_echo(struct ws *w, const struct ws_frame *f);

/* ---- SHA-1, base64, randomness: shared with the tools (src/tools/wsc.c) -- */

void
ws_sha1(const void *data, size_t len, unsigned char out[20])
{
	wsc_sha1(data, len, out);
}

size_t
ws_base64(const void *data, size_t len, char *out)
{
	return wsc_base64(data, len, out);
}

void
ws_accept_key(const char *key, char out[29])
{
	wsc_accept_key(key, out);
}

/* ---- time, randomness, sockets -------------------------------------- */

static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A deadline of -1 means "no limit"; timeout_ms < 0 asks for that. */
static int64_t
deadline_after(int timeout_ms)
{
	return timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
}

static int
deadline_left(int64_t deadline)
{
	int64_t left;

	if (deadline < 0)
		return -1;
	left = deadline - now_ms();
	if (left < 0)
		return 0;
	return left > 0x7fffffff ? 0x7fffffff : (int)left;
}

/* Returns a connected blocking socket to 127.0.0.1:port, or -1. */
static int
tcp_connect(int port, int timeout_ms)
{
	struct sockaddr_in sa;
	struct pollfd pfd;
	struct timeval tv = { WS_SEND_TIMEOUT, 0 };
	socklen_t elen = sizeof(int);
	int fd, rc, err = 0, one = 1, flags;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -1;
	memset(&sa, 0, sizeof sa);
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

	rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
	if (rc < 0 && errno != EINPROGRESS)
		goto fail;
	if (rc < 0) {
		pfd.fd = fd;
		pfd.events = POLLOUT;
		do
			rc = poll(&pfd, 1, timeout_ms);
		while (rc < 0 && errno == EINTR);
		if (rc <= 0)
			goto fail;
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0 || err != 0)
			goto fail;
	}
	flags = fcntl(fd, F_GETFL);
	if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0)
		goto fail;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	/* A peer that stops reading must not hang a test forever. */
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	return fd;
fail:
	close(fd);
	return -1;
}

static int
send_all(int fd, const void *data, size_t len)
{
	const unsigned char *p = data;
	ssize_t n;

	if (fd < 0)
		return -1;
	while (len > 0) {
		n = send(fd, p, len, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* ---- receive buffer ------------------------------------------------- */

static int
buf_reserve(struct ws *w, size_t need)
{
	size_t cap = w->cap ? w->cap : 4096;
	unsigned char *nb;

	/* Always leave room to read a useful chunk past `need`. */
	if (need < w->len + 4096)
		need = w->len + 4096;
	if (need <= w->cap)
		return 0;
	while (cap < need)
		cap *= 2;
	nb = realloc(w->buf, cap);
	if (nb == NULL)
		return -1;
	w->buf = nb;
	w->cap = cap;
	return 0;
}

/* Reads until w->len >= need. 0 done, -1 deadline passed, -2 EOF/error. */
static int
buf_fill(struct ws *w, size_t need, int64_t deadline)
{
	struct pollfd pfd;
	ssize_t n;
	int rc;

	while (w->len < need) {
		if (w->fd < 0 || buf_reserve(w, need) < 0)
			return -2;
		pfd.fd = w->fd;
		pfd.events = POLLIN;
		rc = poll(&pfd, 1, deadline_left(deadline));
		if (rc < 0) {
			if (errno == EINTR)
				continue;
			return -2;
		}
		if (rc == 0)
			return -1;
		n = recv(w->fd, w->buf + w->len, w->cap - w->len, 0);
		if (n == 0)
			return -2;
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return -2;
		}
		w->len += (size_t)n;
	}
	return 0;
}

static void
buf_consume(struct ws *w, size_t n)
{
	memmove(w->buf, w->buf + n, w->len - n);
	w->len -= n;
}

/* ---- HTTP ----------------------------------------------------------- */

/*
 * Reads until the whole response head is in w->buf and *h describes it
 * (wsc_http_parse; accept, if not NULL, is checked into h->accept_ok).
 * 0, -1 deadline passed, -2 EOF/error, -3 the answer is not HTTP.
 */
static int
head_read(struct ws *w, int64_t deadline, const char *accept,
          struct wsc_http *h)
{
	enum wsc_parse pr;
	int rc;

	for (;;) {
		if (w->len > 0) {
			pr = wsc_http_parse((const char *)w->buf, w->len, accept, h);
			if (pr == WSC_DONE)
				return 0;
			if (pr == WSC_ERROR)
				return -3;
		}
		rc = buf_fill(w, w->len + 1, deadline);
		if (rc != 0)
			return rc;
	}
}

/*
 * Reads the body that follows the head *h at the start of w->buf: by
 * Content-Length, chunked, or up to EOF (or the deadline). Returns 0 and a
 * new NUL-terminated *body (the caller frees it), or -1.
 */
static int
body_read(struct ws *w, const struct wsc_http *h, int64_t deadline,
          char **body, size_t *body_len)
{
	size_t head_len = h->head_len;
	const char *v;
	char *out = NULL, *crlf, *nb;
	size_t vlen, pos, out_len = 0, want;
	unsigned long long clen;
	int rc;

	*body = NULL;
	*body_len = 0;
	/* v points into w->buf: used before any buf_fill may move it */
	v = wsc_http_header((const char *)w->buf, head_len, "Transfer-Encoding",
	                    &vlen);
	if (v != NULL && vlen >= 7 && strncasecmp(v, "chunked", 7) == 0) {
		out = malloc(1);
		if (out == NULL)
			return -1;
		pos = head_len;
		for (;;) {
			/* chunk-size line, then the chunk and its CRLF */
			while ((crlf = memmem(w->buf + pos, w->len - pos, "\r\n", 2)) == NULL) {
				if (w->len - pos > 1024 ||
				    buf_fill(w, w->len + 1, deadline) != 0)
					goto done;
			}
			want = (size_t)strtoul((char *)w->buf + pos, NULL, 16);
			pos = (size_t)(crlf - (char *)w->buf) + 2;
			if (want == 0 || want > WS_BODY_MAX - out_len)
				goto done;
			rc = buf_fill(w, pos + want + 2, deadline);
			if (rc != 0)
				want = w->len - pos < want ? w->len - pos : want;
			nb = realloc(out, out_len + want + 1);
			if (nb == NULL) {
				free(out);
				return -1;
			}
			out = nb;
			memcpy(out + out_len, w->buf + pos, want);
			out_len += want;
			if (rc != 0)
				goto done;
			pos += want + 2;
		}
	}

	if (h->content_len >= 0) {
		clen = (unsigned long long)h->content_len;
		if (clen > WS_BODY_MAX)
			clen = WS_BODY_MAX;
		buf_fill(w, head_len + (size_t)clen, deadline);
		want = w->len - head_len;
		if (want > clen)
			want = (size_t)clen;
	} else {
		/* No length: the body ends with the connection (or our patience). */
		while (w->len - head_len < WS_BODY_MAX &&
		       buf_fill(w, w->len + 1, deadline) == 0)
			;
		want = w->len - head_len;
	}
	out = malloc(want + 1);
	if (out == NULL)
		return -1;
	memcpy(out, w->buf + head_len, want);
	out_len = want;
done:
	out[out_len] = '\0';
	*body = out;
	*body_len = out_len;
	return 0;
}

/* Returns a new request head, or NULL. */
static char *
request_new(const char *path, int port, const char *headers,
            const char *extra_headers)
{
	char *req = NULL;

	if (asprintf(&req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%s%s\r\n",
	             path, port, headers, extra_headers ? extra_headers : "") < 0)
		return NULL;
	return req;
}

static void
ws_refused(struct ws *w, int status, const char *why)
{
	w->http_status = status;
	if (why != NULL)
		snprintf(w->http_body, sizeof w->http_body, "%s", why);
	if (w->fd >= 0)
		close(w->fd);
	w->fd = -1;
	w->len = 0;
}

/* ---- WebSocket ------------------------------------------------------ */

struct ws *
ws_connect(int port, const char *path, const char *extra_headers,
           int timeout_ms)
{
	int64_t deadline = deadline_after(timeout_ms);
	char key[WSC_KEY_LEN + 1], expect[WSC_ACCEPT_LEN + 1], headers[256],
	     *req = NULL, *body = NULL;
	struct wsc_http h;
	size_t body_len;
	struct ws *w;
	int fd, rc;

	fd = tcp_connect(port, timeout_ms);
	if (fd < 0)
		return NULL;
	w = calloc(1, sizeof *w);
	if (w == NULL) {
		close(fd);
		return NULL;
	}
	w->fd = fd;

	wsc_new_key(key, expect);
	snprintf(headers, sizeof headers,
	         "Upgrade: websocket\r\nConnection: Upgrade\r\n"
	         "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n", key);
	req = request_new(path, port, headers, extra_headers);
	if (req == NULL || send_all(fd, req, strlen(req)) < 0) {
		ws_refused(w, 0, "could not send the upgrade request");
		goto out;
	}
	rc = head_read(w, deadline, expect, &h);
	if (rc != 0) {
		ws_refused(w, 0, rc == -3 ? "answer is not HTTP" :
		           "no HTTP answer to the upgrade request");
		goto out;
	}
	if (h.status == 101) {
		if (!h.accept_ok) {
			ws_refused(w, 0, "bad Sec-WebSocket-Accept");
			goto out;
		}
		w->http_status = 101;
		/* Frames may have come in the same read as the head. */
		buf_consume(w, h.head_len);
		goto out;
	}
	if (body_read(w, &h, deadline, &body, &body_len) == 0)
		ws_refused(w, h.status, body);
	else
		ws_refused(w, h.status, NULL);
out:
	free(req);
	free(body);
	return w;
}

void
ws_free(struct ws *w)
{
	if (w == NULL)
		return;
	if (w->fd >= 0)
		close(w->fd);
	free(w->buf);
	free(w);
}

int
ws_send_frame(struct ws *w, int fin, int opcode, const void *data, size_t len,
              int mask, int rsv)
{
	unsigned char *frame;
	uint32_t key;
	size_t n;
	int rc;

	if (w == NULL || w->fd < 0)
		return -1;
	frame = malloc(WSC_HEAD_MAX + len);
	if (frame == NULL)
		return -1;
	if (mask) {
		wsc_random(&key, sizeof key);
		n = wsc_frame_encode(frame, fin, opcode, data, len, key);
	} else {
		/* A server's frame: the same head without its mask bit and key. */
		n = wsc_frame_head(frame, fin, opcode, len, 0) - 4;
		frame[1] &= 0x7f;
		if (len > 0)
			memcpy(frame + n, data, len);
		n += len;
	}
	frame[0] |= (unsigned char)(rsv & 0x70);
	rc = send_all(w->fd, frame, n);
	free(frame);
	return rc;
}

int
ws_send_text(struct ws *w, const char *text)
{
	return ws_send_frame(w, 1, 1, text, strlen(text), 1, 0);
}

int
ws_send_raw(struct ws *w, const void *bytes, size_t len)
{
	if (w == NULL)
		return -1;
	return send_all(w->fd, bytes, len);
}

int
ws_recv_frame(struct ws *w, struct ws_frame *f, int timeout_ms)
{
	int64_t deadline = deadline_after(timeout_ms);
	struct wsc_head h;
	size_t len;
	int rc;

	memset(f, 0, sizeof *f);
	if (w == NULL)
		return -2;
	/* The head (2 to 14 bytes, its first two say how many), then the rest;
	 * nothing is consumed before the whole frame is in. */
	while (wsc_head_parse(w->buf, w->len, &h) == WSC_MORE)
		if ((rc = buf_fill(w, w->len + 1, deadline)) != 0)
			return rc;
	if (h.len > WS_FRAME_MAX)
		return -2;
	len = (size_t)h.len;
	if ((rc = buf_fill(w, h.head_len + len, deadline)) != 0)
		return rc;

	f->data = malloc(len + 1);
	if (f->data == NULL)
		return -2;
	memcpy(f->data, w->buf + h.head_len, len);
	if (h.masked)           /* servers must not mask; taken anyway */
		wsc_mask(f->data, len, h.mask);
	f->data[len] = '\0';
	f->len = len;
	f->fin = h.fin;
	f->opcode = h.opcode;
	if (f->opcode == WSC_OP_CLOSE)
		f->close_code = len >= 2 ? (f->data[0] << 8 | f->data[1]) : 1005;
	buf_consume(w, h.head_len + len);
	return 0;
}

void
ws_frame_free(struct ws_frame *f)
{
	if (f == NULL)
		return;
	free(f->data);
	f->data = NULL;
	f->len = 0;
}

/* Answers a close frame with the same code, as a well-behaved client. */
static void
close_echo(struct ws *w, const struct ws_frame *f)
{
	ws_send_frame(w, 1, 8, f->data, f->len >= 2 ? 2 : 0, 1, 0);
}

char *
ws_recv_text(struct ws *w, int timeout_ms, int *close_code)
{
	int64_t deadline = deadline_after(timeout_ms);
	struct ws_frame f;
	char *msg = NULL, *nb;
	size_t msg_len = 0;

	if (close_code != NULL)
		*close_code = 0;
	for (;;) {
		if (ws_recv_frame(w, &f, deadline_left(deadline)) != 0)
			goto fail;
		switch (f.opcode) {
		case 9:
			ws_send_frame(w, 1, 10, f.data, f.len, 1, 0);
			break;
		case 8:
			if (close_code != NULL)
				*close_code = f.close_code;
			close_echo(w, &f);
			ws_frame_free(&f);
			goto fail;
		case 0:
		case 1:
		case 2:
			nb = realloc(msg, msg_len + f.len + 1);
			if (nb == NULL) {
				ws_frame_free(&f);
				goto fail;
			}
			msg = nb;
			memcpy(msg + msg_len, f.data, f.len);
			msg_len += f.len;
			msg[msg_len] = '\0';
			if (f.fin) {
				ws_frame_free(&f);
				return msg;
			}
			break;
		default:
			break;          /* pongs and anything odd: skipped */
		}
		ws_frame_free(&f);
	}
fail:
	free(msg);
	return NULL;
}

int
ws_wait_close(struct ws *w, int timeout_ms)
{
	int64_t deadline = deadline_after(timeout_ms);
	struct ws_frame f;
	int rc, code;

	for (;;) {
		rc = ws_recv_frame(w, &f, deadline_left(deadline));
		if (rc == -1)
			return -1;
		if (rc != 0)
			return 1006;
		if (f.opcode == 8) {
			code = f.close_code;
			close_echo(w, &f);
			ws_frame_free(&f);
			return code;
		}
		if (f.opcode == 9)
			ws_send_frame(w, 1, 10, f.data, f.len, 1, 0);
		ws_frame_free(&f);
	}
}

int
http_get(int port, const char *path, const char *extra_headers,
         char *body, size_t cap, int timeout_ms)
{
	int64_t deadline = deadline_after(timeout_ms);
	struct wsc_http h;
	struct ws w;
	char *req = NULL, *data = NULL;
	size_t data_len;
	int status = -1;

	if (body != NULL && cap > 0)
		body[0] = '\0';
	memset(&w, 0, sizeof w);
	w.fd = tcp_connect(port, timeout_ms);
	if (w.fd < 0)
		return -1;
	req = request_new(path, port, "Connection: close\r\n", extra_headers);
	if (req == NULL || send_all(w.fd, req, strlen(req)) < 0)
		goto out;
	if (head_read(&w, deadline, NULL, &h) != 0)
		goto out;
	status = h.status;
	if (body_read(&w, &h, deadline, &data, &data_len) != 0)
		goto out;
	if (body != NULL && cap > 0) {
		if (data_len >= cap)
			data_len = cap - 1;
		memcpy(body, data, data_len);
		body[data_len] = '\0';
	}
out:
	close(w.fd);
	free(w.buf);
	free(req);
	free(data);
	return status;
}
