/*
 * bench_peer.c - homestead-bench's peers. A peer is one mod or the bot: a
 * non-blocking socket in the epoll set, an input buffer in which whole
 * frames are handled in place, and an output buffer that collects frames
 * until the loop's flush sends them in one send(). It goes connect, upgrade,
 * JSON handshake, ready (and, in churn, closing); the gateway's JSON is
 * scanned, not parsed, and acks and deliveries go to bench_scenario.c.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench.h"

#define MAX_FRAME        ((size_t)64 << 20)

static void peer_close(struct peer *p, enum pstate st);
static void queue_frame(struct peer *p, int opcode, const void *data, size_t len);
static void peer_flush(struct peer *p);
static void set_pollout(struct peer *p, int on);
static void on_connected(struct peer *p);
static int on_upgrade(struct peer *p);
static void on_frames(struct peer *p);
static void on_text(struct peer *p, const char *s, size_t len);
static void on_ready(struct peer *p);

/* ---- peers ---------------------------------------------------------------- */

struct peer *peer_new(uint32_t idx, enum role role, size_t in_cap)
{
	struct peer *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	p->fd = -1;
	p->idx = idx;
	p->role = role;
	p->in_cap = in_cap;
	if (!(p->in = malloc(in_cap))) {
		free(p);
		return NULL;
	}
	return p;
}

void peer_free(struct peer *p)
{
	if (!p)
		return;
	if (p->fd >= 0)
		close(p->fd);
	free(p->in);
	free(p->out);
	free(p->recs);
	free(p->seen);
	wsc_asm_free(&p->asm_);
	free(p);
}

/* Starts a non-blocking connect. 0, or -1 (p failed). */
int peer_connect(struct peer *p)
{
	struct epoll_event ev;
	int one = 1, rc;

	p->state = P_CONNECTING;
	p->t0 = now_ns();
	p->in_len = p->out_len = p->out_off = 0;
	p->pollout = 1;
	B.started++;
	B.connecting++;
	p->fd = socket(B.addr->ai_family, B.addr->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
	               B.addr->ai_protocol);
	if (p->fd < 0) {
		peer_fail(p, "socket: %s", strerror(errno));
		return -1;
	}
	setsockopt(p->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	rc = connect(p->fd, B.addr->ai_addr, B.addr->ai_addrlen);
	if (rc < 0 && errno != EINPROGRESS) {
		peer_fail(p, "connect: %s", strerror(errno));
		return -1;
	}
	ev.events = EPOLLIN | EPOLLOUT;
	ev.data.ptr = p;
	if (epoll_ctl(B.epfd, EPOLL_CTL_ADD, p->fd, &ev) < 0) {
		peer_fail(p, "epoll_ctl: %s", strerror(errno));
		return -1;
	}
	return 0;
}

/* Ends p's connection (the socket is closed; the slot and its records stay). */
static void peer_close(struct peer *p, enum pstate st)
{
	if (p->state == P_CONNECTING || p->state == P_UPGRADE || p->state == P_HANDSHAKE)
		B.connecting--;
	if (p->state == P_READY && B.phase != PH_DONE && st == P_FAILED)
		B.lost_peers++;
	if (p->fd >= 0)
		close(p->fd);   /* also leaves the epoll set */
	p->fd = -1;
	p->state = st;
	p->in_len = p->out_len = p->out_off = 0;
	p->asm_.opcode = 0;
}

void peer_fail(struct peer *p, const char *fmt, ...)
{
	char why[160];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	/* the first is said and kept for the report; idle and churn count them */
	error_once("%s %s: %s", p->role == ROLE_BOT ? "bot" : "mod", p->sid, why);
	if (p->state != P_FAILED)
		B.failed++;
	peer_close(p, P_FAILED);
}

int out_reserve(struct peer *p, size_t more)
{
	size_t cap;
	unsigned char *nb;

	if (p->out_off > 0 && p->out_off == p->out_len)
		p->out_off = p->out_len = 0;
	if (p->out_len + more <= p->out_cap)
		return 0;
	if (p->out_off > 0) {   /* slide what is left to the front */
		memmove(p->out, p->out + p->out_off, p->out_len - p->out_off);
		p->out_len -= p->out_off;
		p->out_off = 0;
		if (p->out_len + more <= p->out_cap)
			return 0;
	}
	cap = p->out_cap ? p->out_cap : 4096;
	while (cap < p->out_len + more)
		cap *= 2;
	if (!(nb = realloc(p->out, cap)))
		return -1;
	p->out = nb;
	p->out_cap = cap;
	return 0;
}

void mark_dirty(struct peer *p)
{
	if (p->dirty)
		return;
	p->dirty = 1;
	p->dirty_next = B.dirty;
	B.dirty = p;
}

static void queue_frame(struct peer *p, int opcode, const void *data, size_t len)
{
	if (p->fd < 0)
		return;
	if (out_reserve(p, wsc_frame_size(len)) < 0) {
		peer_fail(p, "out of memory");
		return;
	}
	p->out_len += wsc_frame_encode(p->out + p->out_len, 1, opcode, data, len, rng_next());
	mark_dirty(p);
}

static void set_pollout(struct peer *p, int on)
{
	struct epoll_event ev;

	if (p->pollout == on || p->fd < 0)
		return;
	ev.events = EPOLLIN | (on ? EPOLLOUT : 0);
	ev.data.ptr = p;
	epoll_ctl(B.epfd, EPOLL_CTL_MOD, p->fd, &ev);
	p->pollout = on;
}

/* One send of everything p has; the rest waits for EPOLLOUT. */
static void peer_flush(struct peer *p)
{
	ssize_t n;

	if (p->fd < 0 || p->state == P_CONNECTING)
		return;
	if (p->out_off < p->out_len) {
		n = send(p->fd, p->out + p->out_off, p->out_len - p->out_off, MSG_NOSIGNAL);
		if (n < 0 && errno != EAGAIN && errno != EINTR) {
			peer_fail(p, "send: %s", strerror(errno));
			return;
		}
		if (n > 0)
			p->out_off += (size_t)n;
	}
	if (p->out_off == p->out_len)
		p->out_off = p->out_len = 0;
	set_pollout(p, p->out_len > 0);
}

void flush_dirty(void)
{
	struct peer *p;

	while ((p = B.dirty)) {
		B.dirty = p->dirty_next;
		p->dirty = 0;
		peer_flush(p);
	}
}

/* ---- input ---------------------------------------------------------------- */

void on_event(struct peer *p, uint32_t ev)
{
	ssize_t n;
	size_t cap;
	unsigned char *nb;

	if (p->fd < 0)
		return;
	if (p->state == P_CONNECTING) {
		int err = 0;
		socklen_t len = sizeof(err);

		if (getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
			err = errno;
		if (err) {
			peer_fail(p, "connect: %s", strerror(err));
			return;
		}
		if (!(ev & (EPOLLOUT | EPOLLIN | EPOLLHUP | EPOLLERR)))
			return;
		on_connected(p);
		return;
	}
	if (ev & EPOLLOUT)
		mark_dirty(p);
	if (!(ev & (EPOLLIN | EPOLLHUP | EPOLLERR)))
		return;
	if (p->in_len == p->in_cap) {   /* a frame bigger than the buffer */
		cap = p->in_cap * 2;
		if (cap > MAX_FRAME + 64 || !(nb = realloc(p->in, cap))) {
			peer_fail(p, "frame too big");
			return;
		}
		p->in = nb;
		p->in_cap = cap;
	}
	n = recv(p->fd, p->in + p->in_len, p->in_cap - p->in_len, 0);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		if (p->state == P_CLOSING) {   /* ended after our close, but no close frame */
			B.cycles_ok++;
			B.no_echo++;
			peer_close(p, P_DONE);
			return;
		}
		peer_fail(p, n == 0 ? "connection closed by the gateway" : "recv: %s",
		          strerror(errno));
		return;
	}
	p->in_len += (size_t)n;
	if (p->state == P_UPGRADE && on_upgrade(p) < 0)
		return;
	if (p->state >= P_HANDSHAKE && p->state <= P_CLOSING)
		on_frames(p);
}

static void on_connected(struct peer *p)
{
	char key[WSC_KEY_LEN + 1], req[4096];
	size_t n;

	wsc_new_key(key, p->accept);
	n = wsc_upgrade_request(req, sizeof(req), &B.o.url, key, B.o.key);
	if (n == 0 || out_reserve(p, n) < 0) {
		peer_fail(p, "cannot build the upgrade request");
		return;
	}
	memcpy(p->out + p->out_len, req, n);
	p->out_len += n;
	p->state = P_UPGRADE;
	mark_dirty(p);
}

int upgrade_take(struct peer *p, const struct wsc_http *h, char *why, size_t cap)
{
	if (h->status != 101) {
		snprintf(why, cap, "upgrade refused: HTTP %d", h->status);
		return -1;
	}
	if (!h->accept_ok || !h->upgrade_ok) {
		snprintf(why, cap, "bad upgrade answer");
		return -1;
	}
	memmove(p->in, p->in + h->head_len, p->in_len - h->head_len);
	p->in_len -= h->head_len;
	return 0;
}

int handshake_text(const struct peer *p, char *buf, size_t cap)
{
	if (p->role == ROLE_BOT)
		return snprintf(buf, cap, "{\"type\":\"bot\",\"data\":{\"bot_id\":\"%s\"}}", p->sid);
	return snprintf(buf, cap,
	                "{\"type\":\"mod\",\"data\":{\"server_id\":\"%s\",\"channel_id\":\"%s\"}}",
	                p->sid, p->chan);
}

/* 0 when upgraded (or still waiting), -1 when p failed. */
static int on_upgrade(struct peer *p)
{
	struct wsc_http h;
	enum wsc_parse pr = wsc_http_parse((const char *)p->in, p->in_len, p->accept, &h);
	char hs[256], why[64];
	int n;

	if (pr == WSC_MORE)
		return 0;
	if (pr == WSC_ERROR) {
		peer_fail(p, "answer to the upgrade is not HTTP");
		return -1;
	}
	if (upgrade_take(p, &h, why, sizeof(why)) < 0) {
		if (h.status == 401 || h.status == 403)
			B.auth_refused = 1;
		peer_fail(p, "%s", why);
		return -1;
	}
	n = handshake_text(p, hs, sizeof(hs));
	p->state = P_HANDSHAKE;
	queue_frame(p, WSC_OP_TEXT, hs, (size_t)n);
	return 0;
}

static void on_frames(struct peer *p)
{
	const unsigned char *msg;
	struct wsc_frame f;
	const char *why;
	enum wsc_parse pr;
	size_t off = 0, mlen;
	int op;

	while (p->fd >= 0) {
		pr = wsc_frame_parse(p->in + off, p->in_len - off, MAX_FRAME, &f, &why);
		if (pr == WSC_MORE) {
			if (f.frame_len > p->in_cap) {   /* grow once to the frame's size */
				size_t cap = p->in_cap;
				unsigned char *nb;

				while (cap < f.frame_len)
					cap *= 2;
				if (!(nb = realloc(p->in, cap))) {
					peer_fail(p, "out of memory");
					return;
				}
				p->in = nb;
				p->in_cap = cap;
			}
			break;
		}
		if (pr == WSC_ERROR) {
			peer_fail(p, "bad frame from the gateway: %s", why);
			return;
		}
		off += f.frame_len;
		switch (f.opcode) {
		case WSC_OP_PING:
			queue_frame(p, WSC_OP_PONG, f.payload, f.len);
			break;
		case WSC_OP_PONG:
			break;
		case WSC_OP_CLOSE:
			if (p->state == P_CLOSING) {
				B.cycles_ok++;
				peer_close(p, P_DONE);
			} else {
				peer_fail(p, "closed by the gateway (%d)", f.close_code);
			}
			return;
		default:
			if (wsc_asm_feed(&p->asm_, &f, MAX_FRAME, &msg, &mlen, &op, &why) == WSC_ERROR) {
				peer_fail(p, "bad message from the gateway: %s", why);
				return;
			}
			if (f.fin)
				on_text(p, (const char *)msg, mlen);
			break;
		}
	}
	if (p->fd < 0)
		return;
	if (off > 0) {
		memmove(p->in, p->in + off, p->in_len - off);
		p->in_len -= off;
	}
}

int reply_scan(const char *s, size_t len, struct reply *r)
{
	struct wsc_json_iter it;
	const char *k, *v;
	size_t kl, vl;
	enum wsc_json_type t;
	int rc;

	memset(r, 0, sizeof(*r));
	wsc_json_begin(&it, s, len);
	while ((rc = wsc_json_next(&it, &k, &kl, &v, &vl, &t)) == 1) {
		if (kl == 6 && memcmp(k, "status", 6) == 0 && t == WSC_JSON_STRING)
			r->status = v, r->slen = vl;
		else if (kl == 6 && memcmp(k, "msg_id", 6) == 0 && t == WSC_JSON_STRING)
			r->id = v, r->idlen = vl;
		else if (kl == 7 && memcmp(k, "content", 7) == 0 && t == WSC_JSON_STRING)
			r->content = v, r->clen = vl;
		else if (kl == 4 && memcmp(k, "code", 4) == 0)
			r->code = v;
		else if (kl == 7 && memcmp(k, "message", 7) == 0 && t == WSC_JSON_STRING)
			r->message = v, r->mlen = vl;
		else if (kl == 9 && memcmp(k, "duplicate", 9) == 0 && t == WSC_JSON_TRUE)
			r->duplicate = 1;
	}
	return rc < 0 ? -1 : 0;
}

/* One whole text message from the gateway. */
static void on_text(struct peer *p, const char *s, size_t len)
{
	struct reply r;

	if (reply_scan(s, len, &r) < 0) {
		error_once("%s %s: not JSON: %.60s", p->role == ROLE_BOT ? "bot" : "mod", p->sid, s);
		return;
	}
	if (r.code) {
		error_once("%s %s: gateway error %.*s: %.*s", p->role == ROLE_BOT ? "bot" : "mod",
		           p->sid, 3, r.code, (int)r.mlen, r.message ? r.message : "");
		if (p->state == P_HANDSHAKE)
			peer_fail(p, "handshake refused");
		return;
	}
	if (p->state == P_HANDSHAKE) {
		if (r.status && wsc_span_eq(r.status, r.slen, "connected"))
			on_ready(p);
		return;
	}
	if (r.status && r.id)
		on_ack(p, r.id, r.idlen, r.status, r.slen, r.duplicate);
	else if (r.content && r.id)
		on_delivery(p, r.id, r.idlen, r.clen, now_ns());
}

static void on_ready(struct peer *p)
{
	p->state = P_READY;
	B.connecting--;
	B.ready++;
	if (B.o.sc == SC_CHURN) {   /* and close it at once */
		unsigned char buf[WSC_HEAD_MAX + 125];
		size_t n = wsc_close_encode(buf, 1000, "Bye.", rng_next());

		if (out_reserve(p, n) == 0) {
			memcpy(p->out + p->out_len, buf, n);
			p->out_len += n;
			mark_dirty(p);
		}
		p->state = P_CLOSING;
		p->t0 = now_ns();
	}
}

