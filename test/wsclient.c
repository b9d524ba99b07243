/*
 * wsclient.c - a blocking RFC 6455 client for the tests, on raw sockets.
 *
 * It speaks to 127.0.0.1 only. Every struct ws owns one socket and one
 * receive buffer: bytes are read into w->buf as they come and a frame is
 * consumed only once it is whole, so a timeout in the middle of a frame
 * loses nothing. Sends are single send() calls of the whole frame, which
 * keeps a frame together on the wire unless the test asks otherwise
 * (ws_send_raw). It can misbehave on purpose: unmasked frames, RSV bits,
 * any opcode. SHA-1, base64 and the random bytes come from src/tools/wsc.c (the
 * tools' client primitives); ws_sha1/ws_base64/ws_accept_key stay as names
 * for the tests' in-process server.
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

#define WS_HEAD_MAX      16384                  /* biggest HTTP head we read */
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
static int head_read(struct ws *w, int64_t deadline, size_t *head_len);
static int head_status(const char *head);
static const char *head_value(const char *head, const char *name, size_t *vlen);
static int body_read(struct ws *w, const char *head, size_t head_len,
                     int64_t deadline, char **body, size_t *body_len);
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

/* Reads until the blank line ending the head; *head_len includes it. */
static int
head_read(struct ws *w, int64_t deadline, size_t *head_len)
{
	size_t scanned = 0;
	unsigned char *end;
	int rc;

	for (;;) {
		if (w->len >= 4) {
			end = memmem(w->buf + scanned, w->len - scanned, "\r\n\r\n", 4);
			if (end != NULL) {
				*head_len = (size_t)(end - w->buf) + 4;
				return 0;
			}
			scanned = w->len - 3;
		}
		if (w->len >= WS_HEAD_MAX)
			return -2;
		rc = buf_fill(w, w->len + 1, deadline);
		if (rc != 0)
			return rc;
	}
}

static int
head_status(const char *head)
{
	int major, minor, status;

	if (sscanf(head, "HTTP/%d.%d %d", &major, &minor, &status) != 3)
		return -1;
	return status;
}

/* Finds header `name` (case-insensitive) in a NUL-terminated head; returns
 * its trimmed value (borrowed, not NUL-terminated) and length, or NULL. */
static const char *
head_value(const char *head, const char *name, size_t *vlen)
{
	size_t nlen = strlen(name);
	const char *line = strstr(head, "\r\n"), *v, *eol;

	while (line != NULL) {
		line += 2;
		eol = strstr(line, "\r\n");
		if (eol == NULL || eol == line)
			break;
		if (strncasecmp(line, name, nlen) == 0 && line[nlen] == ':') {
			v = line + nlen + 1;
			while (v < eol && (*v == ' ' || *v == '\t'))
				v++;
			while (eol > v && (eol[-1] == ' ' || eol[-1] == '\t'))
				eol--;
			*vlen = (size_t)(eol - v);
			return v;
		}
		line = eol;
	}
	return NULL;
}

/*
 * Reads the body that follows a head of head_len bytes in w->buf: by
 * Content-Length, chunked, or up to EOF (or the deadline). Returns 0 and a
 * new NUL-terminated *body (the caller frees it), or -1.
 */
static int
body_read(struct ws *w, const char *head, size_t head_len, int64_t deadline,
          char **body, size_t *body_len)
{
	const char *v;
	char *out = NULL, *crlf, *nb;
	size_t vlen, pos, out_len = 0, want;
	unsigned long long clen;
	int rc;

	*body = NULL;
	*body_len = 0;
	v = head_value(head, "Transfer-Encoding", &vlen);
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

	v = head_value(head, "Content-Length", &vlen);
	if (v != NULL) {
		clen = strtoull(v, NULL, 10);
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
	unsigned char nonce[16];
	char key[25], expect[29], headers[256], *req = NULL, *head = NULL,
	     *body = NULL;
	const char *accept;
	size_t head_len, body_len, alen;
	struct ws *w;
	int fd, status;

	fd = tcp_connect(port, timeout_ms);
	if (fd < 0)
		return NULL;
	w = calloc(1, sizeof *w);
	if (w == NULL) {
		close(fd);
		return NULL;
	}
	w->fd = fd;

	wsc_random(nonce, sizeof nonce);
	ws_base64(nonce, sizeof nonce, key);
	ws_accept_key(key, expect);
	snprintf(headers, sizeof headers,
	         "Upgrade: websocket\r\nConnection: Upgrade\r\n"
	         "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n", key);
	req = request_new(path, port, headers, extra_headers);
	if (req == NULL || send_all(fd, req, strlen(req)) < 0) {
		ws_refused(w, 0, "could not send the upgrade request");
		goto out;
	}
	if (head_read(w, deadline, &head_len) != 0) {
		ws_refused(w, 0, "no HTTP answer to the upgrade request");
		goto out;
	}
	head = strndup((char *)w->buf, head_len);
	if (head == NULL) {
		ws_refused(w, 0, "out of memory");
		goto out;
	}
	status = head_status(head);
	if (status < 0) {
		ws_refused(w, 0, "answer is not HTTP");
		goto out;
	}
	if (status == 101) {
		accept = head_value(head, "Sec-WebSocket-Accept", &alen);
		if (accept == NULL || alen != strlen(expect) ||
		    memcmp(accept, expect, alen) != 0) {
			ws_refused(w, 0, "bad Sec-WebSocket-Accept");
			goto out;
		}
		w->http_status = 101;
		/* Frames may have come in the same read as the head. */
		buf_consume(w, head_len);
		goto out;
	}
	if (body_read(w, head, head_len, deadline, &body, &body_len) == 0)
		ws_refused(w, status, body);
	else
		ws_refused(w, status, NULL);
out:
	free(req);
	free(head);
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
	const unsigned char *src = data;
	unsigned char *frame, key[4];
	size_t hdr = 2, i;
	int rc;

	if (w == NULL || w->fd < 0)
		return -1;
	frame = malloc(14 + len);
	if (frame == NULL)
		return -1;
	frame[0] = (unsigned char)((fin ? 0x80 : 0) | (rsv & 0x70) |
	                           (opcode & 0x0f));
	if (len < 126) {
		frame[1] = (unsigned char)len;
	} else if (len <= 0xffff) {
		frame[1] = 126;
		frame[2] = (unsigned char)(len >> 8);
		frame[3] = (unsigned char)len;
		hdr = 4;
	} else {
		frame[1] = 127;
		for (i = 0; i < 8; i++)
			frame[2 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
		hdr = 10;
	}
	if (mask) {
		frame[1] |= 0x80;
		wsc_random(key, sizeof key);
		memcpy(frame + hdr, key, 4);
		hdr += 4;
		for (i = 0; i < len; i++)
			frame[hdr + i] = src[i] ^ key[i & 3];
	} else if (len > 0) {
		memcpy(frame + hdr, src, len);
	}
	rc = send_all(w->fd, frame, hdr + len);
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
	unsigned char b0, b1, *key = NULL;
	uint64_t len;
	size_t hdr = 2, i;
	int rc;

	memset(f, 0, sizeof *f);
	if (w == NULL)
		return -2;
	rc = buf_fill(w, 2, deadline);
	if (rc != 0)
		return rc;
	b0 = w->buf[0];
	b1 = w->buf[1];
	len = b1 & 0x7f;
	if (len == 126) {
		hdr = 4;
		if ((rc = buf_fill(w, hdr, deadline)) != 0)
			return rc;
		len = (uint64_t)w->buf[2] << 8 | w->buf[3];
	} else if (len == 127) {
		hdr = 10;
		if ((rc = buf_fill(w, hdr, deadline)) != 0)
			return rc;
		len = 0;
		for (i = 0; i < 8; i++)
			len = len << 8 | w->buf[2 + i];
	}
	if (b1 & 0x80)
		hdr += 4;
	if (len > WS_FRAME_MAX)
		return -2;
	if ((rc = buf_fill(w, hdr + (size_t)len, deadline)) != 0)
		return rc;

	f->data = malloc((size_t)len + 1);
	if (f->data == NULL)
		return -2;
	memcpy(f->data, w->buf + hdr, (size_t)len);
	if (b1 & 0x80) {
		key = w->buf + hdr - 4;
		for (i = 0; i < len; i++)
			f->data[i] ^= key[i & 3];
	}
	f->data[len] = '\0';
	f->len = (size_t)len;
	f->fin = (b0 & 0x80) != 0;
	f->opcode = b0 & 0x0f;
	if (f->opcode == 8)
		f->close_code = len >= 2 ? (f->data[0] << 8 | f->data[1]) : 1005;
	buf_consume(w, hdr + (size_t)len);
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
	struct ws w;
	char *req = NULL, *head = NULL, *data = NULL;
	size_t head_len, data_len;
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
	if (head_read(&w, deadline, &head_len) != 0)
		goto out;
	head = strndup((char *)w.buf, head_len);
	if (head == NULL)
		goto out;
	status = head_status(head);
	if (status < 0)
		goto out;
	if (body_read(&w, head, head_len, deadline, &data, &data_len) != 0)
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
	free(head);
	free(data);
	return status;
}
