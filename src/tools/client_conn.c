/*
 * client_conn.c - homestead-client's connection to the gateway: the TCP
 * connect, the upgrade and the handshake, masked frames out, frames in
 * (pings answered, the close handshake, messages reassembled and passed to
 * client_msg.c), and the drop that schedules the next attempt with
 * exponential backoff. One socket; writes block up to WRITE_MS.
 *
 * What follows a drop depends on the gateway's close code (README, "Close
 * codes"), decided in one place, close_follow(): 1008 (key revoked) ends
 * the program; 4000 (replaced by a newer connection with our server_id)
 * waits at least --replaced-backoff; 1009 (message too big) drops that
 * message from the pending ones; 4004 (rate limit) keeps the backoff
 * growing across links; anything else, or no close frame, is the usual
 * backoff.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client.h"

#define CONNECT_MS       5000     /* TCP connect and the HTTP answer */
#define WRITE_MS         5000     /* a send may block this long (as the gateway) */
#define HANDSHAKE_MS     15000    /* until "connected" (a bot may wait for a probe) */
#define CLOSE_MS         2000     /* for the gateway's close frame after ours */
#define MAX_MESSAGE      ((size_t)1 << 30)

static int tcp_connect(const struct wsc_url *u, char *err, size_t errlen);
static int send_all(int fd, const void *data, size_t len, int timeout_ms);
static int rbuf_reserve(struct client *c, size_t need);
static void close_said(struct client *c, const struct wsc_frame *f);
static void close_peek(struct client *c);
static int64_t close_follow(struct client *c, int was_ready);
static void schedule_retry(struct client *c, int64_t least_ms);

/* ---- socket --------------------------------------------------------------- */

/* Returns a connected non-blocking socket, or -1 with the reason in err. */
static int tcp_connect(const struct wsc_url *u, char *err, size_t errlen)
{
	struct addrinfo hints, *res = NULL, *ai;
	struct pollfd pfd;
	socklen_t elen;
	int fd = -1, rc, soerr = 0, one = 1;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	rc = getaddrinfo(u->host, u->port, &hints, &res);
	if (rc != 0) {
		snprintf(err, errlen, "cannot resolve %s: %s", u->host, gai_strerror(rc));
		return -1;
	}
	snprintf(err, errlen, "no address for %s", u->host);
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
		            ai->ai_protocol);
		if (fd < 0) {
			snprintf(err, errlen, "socket: %s", strerror(errno));
			continue;
		}
		rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
		if (rc < 0 && errno == EINPROGRESS) {
			pfd.fd = fd;
			pfd.events = POLLOUT;
			do
				rc = poll(&pfd, 1, CONNECT_MS);
			while (rc < 0 && errno == EINTR && !stop_signal);
			elen = sizeof(soerr);
			if (rc == 0)
				soerr = ETIMEDOUT;
			else if (rc < 0)
				soerr = errno;
			else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &elen) < 0)
				soerr = errno;
			rc = soerr ? -1 : 0;
			errno = soerr;
		}
		if (rc == 0)
			break;
		snprintf(err, errlen, "cannot connect to %s:%s: %s", u->host, u->port, strerror(errno));
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd >= 0)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

/* Sends everything within timeout_ms. 0, or -1 (errno set). */
static int send_all(int fd, const void *data, size_t len, int timeout_ms)
{
	const unsigned char *p = data;
	int64_t deadline = now_ms() + timeout_ms;
	struct pollfd pfd = { .fd = fd, .events = POLLOUT };
	ssize_t n;
	int left;

	while (len > 0) {
		n = send(fd, p, len, MSG_NOSIGNAL);
		if (n > 0) {
			p += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno != EAGAIN && errno != EINTR)
			return -1;
		left = (int)(deadline - now_ms());
		if (left <= 0) {
			errno = ETIMEDOUT;
			return -1;
		}
		if (poll(&pfd, 1, left) < 0 && errno != EINTR)
			return -1;
	}
	return 0;
}

static int rbuf_reserve(struct client *c, size_t need)
{
	size_t cap = c->rcap ? c->rcap : 65536;
	unsigned char *nb;

	if (need <= c->rcap)
		return 0;
	while (cap < need)
		cap *= 2;
	if (!(nb = realloc(c->rbuf, cap)))
		return -1;
	c->rbuf = nb;
	c->rcap = cap;
	return 0;
}

/* Reads what the socket has. 1 got bytes, 0 nothing yet, -1 EOF/error. */
int recv_some(struct client *c)
{
	ssize_t n;

	if (rbuf_reserve(c, c->rlen + 16384) < 0)
		return -1;
	n = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
	if (n > 0) {
		c->rlen += (size_t)n;
		c->last_rx_ms = now_ms();
		return 1;
	}
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	if (n == 0)
		errno = ECONNRESET;
	return -1;
}

/*
 * Connects, upgrades and sends the handshake. Returns 0 (state
 * ST_HANDSHAKE), -1 to retry later (said why), or exits on a refused key.
 */
int conn_open(struct client *c)
{
	char key[WSC_KEY_LEN + 1], accept[WSC_ACCEPT_LEN + 1], req[4096], err[512];
	int64_t deadline = now_ms() + CONNECT_MS;
	struct wsc_http h;
	enum wsc_parse pr;
	struct pollfd pfd;
	size_t n, body;
	int rc;

	c->fd = tcp_connect(&c->url, err, sizeof(err));
	if (c->fd < 0) {
		conn_down(c, err);
		return -1;
	}
	c->rlen = 0;
	wsc_new_key(key, accept);
	n = wsc_upgrade_request(req, sizeof(req), &c->url, key, c->key);
	if (n == 0 || send_all(c->fd, req, n, WRITE_MS) < 0) {
		conn_down(c, "cannot send the upgrade request");
		return -1;
	}
	memset(req, 0, sizeof(req));   /* it held the key */
	pfd.fd = c->fd;
	pfd.events = POLLIN;
	for (;;) {
		pr = wsc_http_parse((const char *)c->rbuf, c->rlen, accept, &h);
		if (pr == WSC_ERROR) {
			conn_down(c, "the answer to the upgrade is not HTTP");
			return -1;
		}
		if (pr == WSC_DONE) {
			/* a refusal's JSON body, if it comes soon */
			body = h.content_len > 0 && h.content_len < 4096 ? (size_t)h.content_len : 0;
			if (h.status == 101 || c->rlen >= h.head_len + body)
				break;
		}
		rc = poll(&pfd, 1, (int)(deadline - now_ms() > 0 ? deadline - now_ms() : 0));
		if (rc < 0 && errno == EINTR && !stop_signal)
			continue;
		if (rc <= 0 || recv_some(c) < 0) {
			if (pr == WSC_DONE)
				break;
			conn_down(c, rc == 0 ? "no answer to the upgrade request" :
			          "connection lost during the upgrade");
			return -1;
		}
	}
	if (h.status != 101) {
		int len = (int)(c->rlen - h.head_len);

		if (len > 300)
			len = 300;
		say("gateway refused the upgrade: HTTP %d %.*s", h.status, len,
		    (const char *)c->rbuf + h.head_len);
		if (h.status == 401 || h.status == 403) {
			say("the key was refused: check --key / HOMESTEAD_KEY (not retrying)");
			finish(c, EXIT_AUTH);
		}
		conn_down(c, NULL);
		return -1;
	}
	if (!h.accept_ok || !h.upgrade_ok) {
		conn_down(c, "bad upgrade answer (Sec-WebSocket-Accept or Upgrade header)");
		return -1;
	}
	/* frames may have come in the same read as the head */
	memmove(c->rbuf, c->rbuf + h.head_len, c->rlen - h.head_len);
	c->rlen -= h.head_len;
	c->state = ST_HANDSHAKE;
	c->deadline_ms = now_ms() + HANDSHAKE_MS;
	c->last_rx_ms = now_ms();
	if (send_handshake(c) < 0) {
		conn_down(c, "cannot send the handshake");
		return -1;
	}
	return 0;
}

/* Drops the connection (why: said on stderr if not NULL), acts on the
 * gateway's close code (close_follow) and schedules the next attempt;
 * pending messages stay and go out again after the next handshake. */
void conn_down(struct client *c, const char *why)
{
	int was_ready = c->state == ST_READY;
	int64_t least;
	size_t i;

	if (why)
		say("%s", why);
	if (c->fd >= 0 && c->state != ST_DOWN && !c->close_code)
		close_peek(c);
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->state = ST_DOWN;
	c->rlen = 0;
	wsc_asm_free(&c->asm_);
	least = close_follow(c, was_ready);   /* may exit: 1008 */
	for (i = 0; i < c->npend; i++)
		c->pend[i].sent = 0;
	c->close_code = 0;
	schedule_retry(c, least);
}

/* Records the gateway's close frame f and says it. */
static void close_said(struct client *c, const struct wsc_frame *f)
{
	char reason[160];

	snprintf(reason, sizeof(reason), "%.*s", (int)(f->len > 2 ? f->len - 2 : 0),
	         (const char *)f->payload + 2);
	say("the gateway closed the connection: %d%s%s", f->close_code, reason[0] ? " " : "",
	    reason);
	c->close_code = f->close_code;
}

/*
 * The link broke without a close frame handled: the gateway may have sent
 * one all the same. After a 1009 it reads on for a while, then closes, and
 * the part of a big message it did not read makes that a reset which our
 * send sees first. So take what the socket still holds, without waiting,
 * and look for a close frame after the frames handled (rbuf starts at a
 * frame boundary once the upgrade is done). Data frames there are left: an
 * ack lost with them leaves its message pending, and the resend is
 * answered "duplicate".
 */
static void close_peek(struct client *c)
{
	struct wsc_frame f;
	const char *why;
	size_t off = 0;
	int n;

	for (n = 0; n < 64 && recv_some(c) > 0; n++)
		;
	while (wsc_frame_parse(c->rbuf + off, c->rlen - off, MAX_MESSAGE, &f, &why) == WSC_DONE) {
		if (f.opcode == WSC_OP_CLOSE) {
			close_said(c, &f);
			return;
		}
		off += f.frame_len;
	}
}

/*
 * What the close code of the link just dropped asks for (README, "Close
 * codes"). Returns the least delay before the next attempt (0: the usual
 * backoff); exits on a revoked key.
 */
static int64_t close_follow(struct client *c, int was_ready)
{
	switch (c->close_code) {
	case 1008:
		say("the gateway revoked the key (close 1008): check --key / HOMESTEAD_KEY "
		    "(not retrying)");
		finish(c, EXIT_AUTH);
	case 4000:
		/* the newer one holds the slot; taking it back at once would
		 * knock it off, and it would do the same to us, for ever */
		c->rate_limited = 0;
		say("replaced (close 4000): another connection with server_id %s on channel %s "
		    "took this one's place; two clients with one server_id knock each other off "
		    "for ever: is a second one running?", c->server_id ? c->server_id : "?",
		    c->channel ? c->channel : "?");
		return c->replaced_backoff_ms;
	case 1009:
		pending_drop_too_big(c);
		break;
	case 4004:
		/* it was refused for seconds on end: a reconnect at the least
		 * backoff would only start that again */
		c->rate_limited++;
		if (c->attempt < c->rate_limited)
			c->attempt = c->rate_limited;
		say("over the gateway's rate limit for too long (close 4004): send more slowly; "
		    "backing off longer");
		return 0;
	}
	if (was_ready)
		c->rate_limited = 0;
	return 0;
}

/* The next attempt after the exponential backoff, least_ms at the soonest. */
static void schedule_retry(struct client *c, int64_t least_ms)
{
	int64_t delay = c->backoff_ms;
	int i;

	for (i = 0; i < c->attempt && delay < c->backoff_max_ms; i++)
		delay *= 2;
	if (delay > c->backoff_max_ms)
		delay = c->backoff_max_ms;
	if (delay < least_ms)
		delay = least_ms;
	c->attempt++;
	c->next_try_ms = now_ms() + delay;
	if (!c->quitting || c->npend)
		say("reconnecting in %.1f s", (double)delay / 1000.0);
}

int send_frame(struct client *c, int opcode, const void *data, size_t len)
{
	unsigned char small[512], *buf = small;
	size_t need = wsc_frame_size(len), n;
	uint32_t mask;
	int rc;

	if (c->fd < 0)
		return -1;
	if (need > sizeof(small) && !(buf = malloc(need)))
		return -1;
	wsc_random(&mask, sizeof(mask));
	n = wsc_frame_encode(buf, 1, opcode, data, len, mask);
	rc = send_all(c->fd, buf, n, WRITE_MS);
	if (buf != small)
		free(buf);
	return rc;
}

/* Sends a close frame and waits a little for the gateway's answer. */
void send_close(struct client *c, int code)
{
	unsigned char buf[WSC_HEAD_MAX + 125];
	int64_t deadline = now_ms() + CLOSE_MS;
	struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
	struct wsc_frame f;
	const char *why;
	uint32_t mask;
	size_t n;
	int left;

	if (c->fd < 0)
		return;
	wsc_random(&mask, sizeof(mask));
	n = wsc_close_encode(buf, code, "Bye.", mask);
	if (send_all(c->fd, buf, n, WRITE_MS) < 0)
		return;
	/* Anything still coming is printed; the close frame ends it. */
	while ((left = (int)(deadline - now_ms())) > 0) {
		while (wsc_frame_parse(c->rbuf, c->rlen, MAX_MESSAGE, &f, &why) == WSC_DONE) {
			if (f.opcode == WSC_OP_CLOSE)
				return;
			if (f.opcode == WSC_OP_TEXT || f.opcode == WSC_OP_BINARY)
				on_message(c, f.payload, f.len);
			memmove(c->rbuf, c->rbuf + f.frame_len, c->rlen - f.frame_len);
			c->rlen -= f.frame_len;
		}
		if (poll(&pfd, 1, left) <= 0 || recv_some(c) < 0)
			return;
	}
}

/* ---- frames in ------------------------------------------------------------ */

/* Handles every whole frame in the buffer. -1 when the connection ended. */
int on_frames(struct client *c)
{
	const unsigned char *msg;
	struct wsc_frame f;
	const char *why;
	enum wsc_parse pr;
	size_t off = 0, mlen;
	int op, rc = 0;

	while (rc == 0) {
		pr = wsc_frame_parse(c->rbuf + off, c->rlen - off, MAX_MESSAGE, &f, &why);
		if (pr == WSC_MORE) {
			if (f.frame_len && rbuf_reserve(c, f.frame_len) < 0) {
				conn_down(c, "out of memory for a frame");
				return -1;
			}
			break;
		}
		if (pr == WSC_ERROR) {
			say("protocol error from the gateway: %s", why);
			send_close(c, 1002);
			conn_down(c, NULL);
			return -1;
		}
		switch (f.opcode) {
		case WSC_OP_PING:
			if (send_frame(c, WSC_OP_PONG, f.payload, f.len) < 0)
				rc = -1;
			break;
		case WSC_OP_PONG:
			break;
		case WSC_OP_CLOSE:
			close_said(c, &f);
			{
				/* answer with the same code, as RFC 6455 asks */
				unsigned char buf[WSC_HEAD_MAX + 125];
				uint32_t mask;

				wsc_random(&mask, sizeof(mask));
				send_all(c->fd, buf,
				         wsc_close_encode(buf, f.close_code == 1005 ? 0 : f.close_code, NULL,
				                          mask), 1000);
			}
			rc = -1;   /* conn_down below acts on the code */
			break;
		default:
			pr = wsc_asm_feed(&c->asm_, &f, MAX_MESSAGE, &msg, &mlen, &op, &why);
			if (pr == WSC_ERROR) {
				say("protocol error from the gateway: %s", why);
				rc = -1;
			} else if (pr == WSC_DONE) {
				rc = on_message(c, msg, mlen);
			}
			break;
		}
		if (c->fd < 0)   /* dropped inside (a failed send) */
			return -1;
		off += f.frame_len;
	}
	memmove(c->rbuf, c->rbuf + off, c->rlen - off);
	c->rlen -= off;
	if (rc < 0)
		conn_down(c, NULL);
	return rc;
}
