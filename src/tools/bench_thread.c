/*
 * bench_thread.c - tflood and trate: flood and rate with clients shaped like
 * real mods and bots rather than like the bench's event loop, which batches
 * a window of frames into one write and serves every peer from one thread.
 *
 * DESIGN. Each mod is what a plugin with an ordinary client library is: one
 * blocking socket with TCP_NODELAY, a sender thread (the game's: it builds
 * one message and writes that one frame with one send(), never two frames
 * in a write) and a reader thread (the library's: a blocking recv, acks
 * counted, pings answered). The bot is one thread that reads. tflood: a
 * sender keeps at most --window messages unacked and sleeps on a condition
 * variable until its reader sees an ack; trate: mod i sends its k-th
 * message at t_run + (k * mods + i) / rate, acks or not, so the mods
 * together offer --rate msg/s, evenly spread (the schedule of rate's round
 * robin); a sender that falls behind sends at once, one frame at a time.
 *
 * What the threads share. The message table (struct rec in each mod's
 * struct peer) is allocated before the run for the mod's whole quota and
 * never moves: the sender writes sent_ns and then p->sent (atomic, release)
 * before the send(), the bot's thread reads them (acquire) and owns got,
 * the mod's reader owns acked. A mod's unacked count is under its lock;
 * writes to its socket (messages, pongs, the close) under its wlock.
 * Counters belong to the thread that counts them and are added up into B
 * after the joins; main only watches the atomic ones (the bot's deliveries,
 * the senders done) to know when the run is over. The gateway's CPU is
 * read over the same span as in flood: from the moment every peer is up to
 * the last delivery (or the end of --drain).
 *
 * Every wait is bounded: connects and set-up writes and reads by 5 s socket
 * timeouts, the readers by a 100 ms receive timeout against T.abort, the
 * senders' window by the end of the drain, the close by 5 s.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

#define MAX_FRAME        ((size_t)64 << 20)
#define SETUP_NS         (60 * NS_PER_S)   /* every peer up */
#define READ_POLL_MS     100               /* the readers' recv timeout */
#define FLOOD_MAX_RATE   400000.0          /* msg/s: sizes a tflood's table */

enum tstate { T_SETUP, T_READY, T_DONE, T_FAILED };   /* T_DONE: closed cleanly */

/* One mod or the bot, in threads; p is its B.peers entry (sid, chan, the
 * message table, sent, quota, the input buffer and reassembly). */
struct tpeer {
	struct peer *p;
	int fd;
	int state;               /* enum tstate; atomic (st_get, st_set): both threads */
	uint32_t rng;            /* masks (the sender's) */
	pthread_t sender, reader;   /* the bot: reader only */
	int has_sender, has_reader;
	pthread_mutex_t wlock;   /* the socket's writes: messages, pongs, the close */
	pthread_mutex_t lock;    /* unacked, failed */
	pthread_cond_t acked;    /* unacked went down, or the peer failed */
	uint32_t unacked;
	int failed;              /* atomic: no more sends or reads */
	int closing;             /* atomic: our close frame is out */
	int ended;               /* atomic: the reader is done */
	unsigned char *out;      /* one frame (the sender's) */
	unsigned char ctl[WSC_HEAD_MAX + 125];   /* a pong or the close (under wlock) */

	/* counted by this peer's threads; read after the joins */
	uint64_t acks, acks_completed, acks_other, dup_acks, foreign, bad_content, dups;
	uint64_t delivered;      /* the bot: atomic, main watches it */
	uint64_t bytes;
	int64_t t_last_rx;
	int lost;                /* failed after it was up */
	char error[200];
};

static struct {
	struct tpeer *tp;        /* mods [0, mods), the bot [mods] */
	int n;
	pthread_mutex_t lock;    /* ready, failed, go */
	pthread_cond_t cond;
	int ready, failed, go;
	int64_t t_run, t_send_end, t_drain_end;   /* set before go */
	int abort;               /* atomic: every thread gives up now */
	int senders_done;        /* atomic */
	int auth_refused;        /* atomic */
} T;

static int64_t ald(const int64_t *p);
static enum tstate st_get(struct tpeer *t);
static void st_set(struct tpeer *t, enum tstate st);
static void tp_error(struct tpeer *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tp_fail(struct tpeer *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int send_all(struct tpeer *t, const void *buf, size_t len);
static int tp_send_ctl(struct tpeer *t, int opcode, const void *data, size_t len, int close_code);
static void tp_ack(struct tpeer *t, const struct reply *r);
static void tp_delivery(struct tpeer *t, const struct reply *r, int64_t now);
static void tp_text(struct tpeer *t, const char *s, size_t len, int64_t now);
static int tp_frames(struct tpeer *t, int64_t now);
static int tp_pump(struct tpeer *t);
static int tp_connect(struct tpeer *t);
static void tp_announce(int ok);
static int tp_await_go(void);
static void tp_read_loop(struct tpeer *t);
static void *tp_reader_main(void *arg);
static void *tp_bot_main(void *arg);
static int tp_wait_window(struct tpeer *t, uint32_t window, int64_t until);
static int tp_send_message(struct tpeer *t);
static void *tp_sender_main(void *arg);
static int await_ready(int want, int64_t deadline);
static void deadline_ts(int64_t ns, struct timespec *ts);
static void sleep_until(int64_t ns);
static void collect(void);

/* ---- small helpers -------------------------------------------------------- */

static int64_t ald(const int64_t *p)
{
	return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static enum tstate st_get(struct tpeer *t)
{
	return (enum tstate)__atomic_load_n(&t->state, __ATOMIC_ACQUIRE);
}

static void st_set(struct tpeer *t, enum tstate st)
{
	__atomic_store_n(&t->state, (int)st, __ATOMIC_RELEASE);
}

static void deadline_ts(int64_t ns, struct timespec *ts)
{
	ts->tv_sec = (time_t)(ns / NS_PER_S);
	ts->tv_nsec = (long)(ns % NS_PER_S);
}

static void sleep_until(int64_t ns)
{
	struct timespec ts;

	deadline_ts(ns, &ts);
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

/* Keeps t's first error for the report (said by main, after the joins). */
static void tp_error(struct tpeer *t, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (t->error[0])
		return;
	n = snprintf(t->error, sizeof(t->error), "%s %s: ",
	             t->p->role == ROLE_BOT ? "bot" : "mod", t->p->sid);
	if (n < 0 || (size_t)n >= sizeof(t->error))
		return;
	va_start(ap, fmt);
	vsnprintf(t->error + n, sizeof(t->error) - (size_t)n, fmt, ap);
	va_end(ap);
}

/* t can neither send nor read any more: its sender is woken to give up. */
static void tp_fail(struct tpeer *t, const char *fmt, ...)
{
	char why[160];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	tp_error(t, "%s", why);
	pthread_mutex_lock(&t->lock);
	if (st_get(t) == T_READY)
		t->lost = !__atomic_load_n(&t->closing, __ATOMIC_ACQUIRE);
	st_set(t, T_FAILED);
	__atomic_store_n(&t->failed, 1, __ATOMIC_RELEASE);
	pthread_cond_broadcast(&t->acked);
	pthread_mutex_unlock(&t->lock);
}

/* Writes all of buf (a blocking socket: one send() unless it is cut). 0 or
 * -1 (errno). */
static int send_all(struct tpeer *t, const void *buf, size_t len)
{
	const unsigned char *b = buf;
	ssize_t n;

	while (len > 0) {
		n = send(t->fd, b, len, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		b += n;
		len -= (size_t)n;
	}
	return 0;
}

/* A control frame (pong, or close with close_code) from any of t's threads. */
static int tp_send_ctl(struct tpeer *t, int opcode, const void *data, size_t len, int close_code)
{
	size_t n;
	int rc;
	uint32_t mask;

	pthread_mutex_lock(&t->wlock);
	mask = (uint32_t)now_ns() ^ (t->p->idx * 2654435761u);
	if (opcode == WSC_OP_CLOSE)
		n = wsc_close_encode(t->ctl, close_code, "Bye.", mask);
	else
		n = wsc_frame_encode(t->ctl, 1, opcode, data, len > 125 ? 125 : len, mask);
	if (opcode == WSC_OP_CLOSE)   /* before: the echo may be read before send() returns */
		__atomic_store_n(&t->closing, 1, __ATOMIC_RELEASE);
	rc = send_all(t, t->ctl, n);
	pthread_mutex_unlock(&t->wlock);
	return rc;
}

/* ---- what the gateway sends ----------------------------------------------- */

/* A mod's reader: the ack of one of its messages. */
static void tp_ack(struct tpeer *t, const struct reply *r)
{
	struct peer *p = t->p;
	struct rec *rec;
	uint64_t seq;
	long a;

	if (msg_id_parse(r->id, r->idlen, &a, &seq) < 0 || a != (long)p->idx ||
	    seq >= __atomic_load_n(&p->sent, __ATOMIC_ACQUIRE)) {
		t->foreign++;
		return;
	}
	rec = &p->recs[seq];
	t->acks++;
	if (rec->acked++)
		t->dup_acks++;
	if (r->duplicate)
		t->dup_acks++;
	if (wsc_span_eq(r->status, r->slen, "completed"))
		t->acks_completed++;
	else
		t->acks_other++;
	pthread_mutex_lock(&t->lock);
	if (t->unacked > 0)
		t->unacked--;
	pthread_cond_signal(&t->acked);
	pthread_mutex_unlock(&t->lock);
}

/* The bot's thread: a mod's message, received at now. */
static void tp_delivery(struct tpeer *t, const struct reply *r, int64_t now)
{
	struct peer *from;
	struct rec *rec;
	uint64_t seq;
	long a;

	if (msg_id_parse(r->id, r->idlen, &a, &seq) < 0 || a < 0 || a >= B.o.mods) {
		t->foreign++;
		return;
	}
	from = B.peers[a];
	if (seq >= __atomic_load_n(&from->sent, __ATOMIC_ACQUIRE)) {
		t->foreign++;
		return;
	}
	if (r->clen != B.o.size)
		t->bad_content++;
	t->t_last_rx = now;
	rec = &from->recs[seq];
	if (rec->got++) {
		t->dups++;
		return;
	}
	t->bytes += r->clen;
	if (SC_IS_RATE(B.o.sc) && B.nlat < B.lat_cap)   /* B.lat: this thread's until the join */
		B.lat[B.nlat++] = now - ald(&rec->sent_ns);
	__atomic_store_n(&t->delivered, t->delivered + 1, __ATOMIC_RELEASE);
}

static void tp_text(struct tpeer *t, const char *s, size_t len, int64_t now)
{
	struct reply r;

	if (reply_scan(s, len, &r) < 0) {
		tp_error(t, "not JSON: %.60s", s);
		return;
	}
	if (r.code) {
		tp_error(t, "gateway error %.3s: %.*s", r.code, (int)r.mlen, r.message ? r.message : "");
		if (st_get(t) == T_SETUP)
			tp_fail(t, "handshake refused");
		return;
	}
	if (st_get(t) == T_SETUP) {
		if (r.status && wsc_span_eq(r.status, r.slen, "connected"))
			st_set(t, T_READY);
		return;
	}
	if (r.status && r.id && t->p->role == ROLE_MOD)
		tp_ack(t, &r);
	else if (r.content && r.id && t->p->role == ROLE_BOT)
		tp_delivery(t, &r, now);
	else
		t->foreign++;
}

/* Handles every whole frame in t's input. 0, or -1 when t is done (the
 * gateway's close, or a failure). */
static int tp_frames(struct tpeer *t, int64_t now)
{
	struct peer *p = t->p;
	const unsigned char *msg;
	struct wsc_frame f;
	const char *why;
	size_t off = 0, mlen;
	int op, rc = 0;

	while (rc == 0) {
		enum wsc_parse pr = wsc_frame_parse(p->in + off, p->in_len - off, MAX_FRAME, &f, &why);

		if (pr == WSC_MORE) {
			if (f.frame_len > p->in_cap) {   /* grow once to the frame's size */
				size_t cap = p->in_cap;
				unsigned char *nb;

				while (cap < f.frame_len)
					cap *= 2;
				if (!(nb = realloc(p->in, cap))) {
					tp_fail(t, "out of memory");
					return -1;
				}
				p->in = nb;
				p->in_cap = cap;
			}
			break;
		}
		if (pr == WSC_ERROR) {
			tp_fail(t, "bad frame from the gateway: %s", why);
			return -1;
		}
		off += f.frame_len;
		switch (f.opcode) {
		case WSC_OP_PING:
			if (tp_send_ctl(t, WSC_OP_PONG, f.payload, f.len, 0) < 0) {
				tp_fail(t, "send: %s", strerror(errno));
				rc = -1;
			}
			break;
		case WSC_OP_PONG:
			break;
		case WSC_OP_CLOSE:
			if (__atomic_load_n(&t->closing, __ATOMIC_ACQUIRE))
				st_set(t, T_DONE);
			else
				tp_fail(t, "closed by the gateway (%d)", f.close_code);
			rc = -1;
			break;
		default:
			if (wsc_asm_feed(&p->asm_, &f, MAX_FRAME, &msg, &mlen, &op, &why) == WSC_ERROR) {
				tp_fail(t, "bad message from the gateway: %s", why);
				return -1;
			}
			if (f.fin)
				tp_text(t, (const char *)msg, mlen, now);
			if (st_get(t) == T_FAILED)
				rc = -1;
			break;
		}
	}
	if (off > 0) {
		memmove(p->in, p->in + off, p->in_len - off);
		p->in_len -= off;
	}
	return rc;
}

/* One recv and the frames it completes. 1 if bytes came, 0 on the receive
 * timeout, -1 when t is done. */
static int tp_pump(struct tpeer *t)
{
	struct peer *p = t->p;
	ssize_t n;

	if (p->in_len == p->in_cap) {
		tp_fail(t, "input buffer full");
		return -1;
	}
	n = recv(t->fd, p->in + p->in_len, p->in_cap - p->in_len, 0);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return 0;
	if (n <= 0) {
		if (n == 0 && __atomic_load_n(&t->closing, __ATOMIC_ACQUIRE)) {
			st_set(t, T_DONE);   /* closed after ours, without a close frame */
			return -1;
		}
		tp_fail(t, n == 0 ? "connection closed by the gateway" : "recv: %s", strerror(errno));
		return -1;
	}
	p->in_len += (size_t)n;
	/* one receive time for what one recv brought: when the client saw it */
	return tp_frames(t, now_ns()) < 0 ? -1 : 1;
}

/* ---- set-up --------------------------------------------------------------- */

/* Connect, upgrade, JSON handshake, all blocking with 5 s timeouts. 0 when
 * t is ready, -1 when it failed. */
static int tp_connect(struct tpeer *t)
{
	struct peer *p = t->p;
	struct timeval tv = { (time_t)(PEER_TIMEOUT_NS / NS_PER_S), 0 };
	struct wsc_http h;
	enum wsc_parse pr;
	char key[WSC_KEY_LEN + 1], req[4096], hs[256], why[64];
	int64_t deadline = now_ns() + PEER_TIMEOUT_NS;
	int one = 1, n;
	size_t len;

	t->fd = socket(B.addr->ai_family, B.addr->ai_socktype | SOCK_CLOEXEC, B.addr->ai_protocol);
	if (t->fd < 0) {
		tp_fail(t, "socket: %s", strerror(errno));
		return -1;
	}
	p->fd = t->fd;   /* closed by peer_free */
	setsockopt(t->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(t->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));   /* connect too */
	setsockopt(t->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(t->fd, B.addr->ai_addr, B.addr->ai_addrlen) < 0) {
		tp_fail(t, "connect: %s", strerror(errno));
		return -1;
	}
	wsc_new_key(key, p->accept);
	len = wsc_upgrade_request(req, sizeof(req), &B.o.url, key, B.o.key);
	if (len == 0 || send_all(t, req, len) < 0) {
		tp_fail(t, "cannot send the upgrade request");
		return -1;
	}
	for (;;) {
		ssize_t got = recv(t->fd, p->in + p->in_len, p->in_cap - p->in_len, 0);

		if (got <= 0) {
			tp_fail(t, "no answer to the upgrade");
			return -1;
		}
		p->in_len += (size_t)got;
		pr = wsc_http_parse((const char *)p->in, p->in_len, p->accept, &h);
		if (pr == WSC_ERROR) {
			tp_fail(t, "answer to the upgrade is not HTTP");
			return -1;
		}
		if (pr == WSC_DONE)
			break;
	}
	if (upgrade_take(p, &h, why, sizeof(why)) < 0) {
		if (h.status == 401 || h.status == 403)
			__atomic_store_n(&T.auth_refused, 1, __ATOMIC_RELEASE);
		tp_fail(t, "%s", why);
		return -1;
	}
	n = handshake_text(p, hs, sizeof(hs));
	len = wsc_frame_encode(t->out, 1, WSC_OP_TEXT, hs, (size_t)n, t->rng);
	if (send_all(t, t->out, len) < 0) {
		tp_fail(t, "cannot send the handshake: %s", strerror(errno));
		return -1;
	}
	/* the "connected" reply may have come with the 101 */
	if (p->in_len > 0 && tp_frames(t, now_ns()) < 0)
		return -1;
	while (st_get(t) == T_SETUP) {
		if (now_ns() > deadline) {
			tp_fail(t, "no answer within %lld s", PEER_TIMEOUT_NS / NS_PER_S);
			return -1;
		}
		if (tp_pump(t) < 0)
			return -1;
	}
	tv.tv_sec = 0;
	tv.tv_usec = READ_POLL_MS * 1000;
	setsockopt(t->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return 0;
}

/* Tells main that one more peer is up (ok) or failed. */
static void tp_announce(int ok)
{
	pthread_mutex_lock(&T.lock);
	if (ok)
		T.ready++;
	else
		T.failed++;
	pthread_cond_broadcast(&T.cond);
	pthread_mutex_unlock(&T.lock);
}

/* Waits for main's go: 0, or -1 if the run was called off. */
static int tp_await_go(void)
{
	int go;

	pthread_mutex_lock(&T.lock);
	while (!T.go && !__atomic_load_n(&T.abort, __ATOMIC_ACQUIRE))
		pthread_cond_wait(&T.cond, &T.lock);
	go = T.go;
	pthread_mutex_unlock(&T.lock);
	return go ? 0 : -1;
}

/* ---- the threads ---------------------------------------------------------- */

/* A reader: frames until the gateway's close (after ours), a failure, or
 * T.abort. */
static void tp_read_loop(struct tpeer *t)
{
	while (!__atomic_load_n(&T.abort, __ATOMIC_ACQUIRE))
		if (tp_pump(t) < 0)
			break;
	__atomic_store_n(&t->ended, 1, __ATOMIC_RELEASE);
}

static void *tp_reader_main(void *arg)
{
	tp_read_loop(arg);
	return NULL;
}

/* The bot: up, then it reads. */
static void *tp_bot_main(void *arg)
{
	struct tpeer *t = arg;
	int ok = tp_connect(t) == 0;

	tp_announce(ok);
	if (ok)
		tp_read_loop(t);
	else
		__atomic_store_n(&t->ended, 1, __ATOMIC_RELEASE);
	return NULL;
}

/* Sleeps until t has fewer than `window` messages unacked: 0, or -1 at
 * `until`, on a failure or T.abort. */
static int tp_wait_window(struct tpeer *t, uint32_t window, int64_t until)
{
	struct timespec ts;
	int rc = 0;

	deadline_ts(until, &ts);
	pthread_mutex_lock(&t->lock);
	while (t->unacked >= window && rc == 0) {
		if (__atomic_load_n(&t->failed, __ATOMIC_ACQUIRE) ||
		    __atomic_load_n(&T.abort, __ATOMIC_ACQUIRE))
			rc = -1;
		else if (pthread_cond_timedwait(&t->acked, &t->lock, &ts) == ETIMEDOUT)
			rc = -1;
	}
	pthread_mutex_unlock(&t->lock);
	return rc;
}

/* The next message: its record, then one send() of its one frame. 0 or -1. */
static int tp_send_message(struct tpeer *t)
{
	struct peer *p = t->p;
	uint64_t seq = p->sent;
	size_t len;
	int rc;

	t->rng ^= t->rng << 13;
	t->rng ^= t->rng >> 17;
	t->rng ^= t->rng << 5;
	len = message_encode(p, seq, t->out, t->rng);
	pthread_mutex_lock(&t->lock);
	t->unacked++;
	pthread_mutex_unlock(&t->lock);
	pthread_mutex_lock(&t->wlock);
	/* published before the bytes leave: the ack or delivery may come first */
	__atomic_store_n(&p->recs[seq].sent_ns, now_ns(), __ATOMIC_RELEASE);
	__atomic_store_n(&p->sent, seq + 1, __ATOMIC_RELEASE);
	rc = send_all(t, t->out, len);
	pthread_mutex_unlock(&t->wlock);
	if (rc < 0)
		tp_fail(t, "send: %s", strerror(errno));
	return rc;
}

/* A mod: up (and its reader started), then its messages, then it waits
 * for their acks. */
static void *tp_sender_main(void *arg)
{
	struct tpeer *t = arg;
	struct peer *p = t->p;
	int ok = tp_connect(t) == 0;

	if (ok && pthread_create(&t->reader, NULL, tp_reader_main, t) != 0) {
		tp_fail(t, "cannot start its reader thread");
		ok = 0;
	}
	t->has_reader = ok;
	tp_announce(ok);
	if (!ok || tp_await_go() < 0)
		goto out;
	if (B.o.sc == SC_TRATE) {
		uint64_t k;

		for (k = 0; p->sent < p->quota && !__atomic_load_n(&T.abort, __ATOMIC_ACQUIRE); k++) {
			int64_t due = T.t_run + (int64_t)((double)(k * (uint64_t)B.o.mods + p->idx) *
			                                  1e9 / B.o.rate);

			if (due >= T.t_send_end || __atomic_load_n(&t->failed, __ATOMIC_ACQUIRE))
				break;
			if (due > now_ns())
				sleep_until(due);
			if (tp_send_message(t) < 0)
				break;
		}
	} else {
		while (p->sent < p->quota && now_ns() < T.t_send_end) {
			if (tp_wait_window(t, (uint32_t)B.o.window, T.t_send_end) < 0 ||
			    tp_send_message(t) < 0)
				break;
		}
	}
	tp_wait_window(t, 1, T.t_drain_end);   /* every ack in */
out:
	__atomic_add_fetch(&T.senders_done, 1, __ATOMIC_ACQ_REL);
	return NULL;
}

/* ---- main's side ---------------------------------------------------------- */

/* Waits until `want` peers are up or failed: 0 if all are up, -1 if one
 * failed or the deadline passed. */
static int await_ready(int want, int64_t deadline)
{
	struct timespec ts;
	int rc = 0;

	deadline_ts(deadline, &ts);
	pthread_mutex_lock(&T.lock);
	while (T.ready + T.failed < want && rc == 0)
		if (pthread_cond_timedwait(&T.cond, &T.lock, &ts) == ETIMEDOUT)
			rc = -1;
	if (T.failed)
		rc = -1;
	pthread_mutex_unlock(&T.lock);
	return rc;
}

/* After the joins: the threads' counters and errors into B, for the report. */
static void collect(void)
{
	int i;

	for (i = 0; i < T.n; i++) {
		struct tpeer *t = &T.tp[i];
		struct peer *p = t->p;

		B.sent += p->sent;
		B.acks += t->acks;
		B.acks_completed += t->acks_completed;
		B.acks_other += t->acks_other;
		B.dup_acks += t->dup_acks;
		B.foreign += t->foreign;
		B.bad_content += t->bad_content;
		B.dups += t->dups;
		B.delivered += t->delivered;
		B.bytes_delivered += t->bytes;
		B.lost_peers += (uint64_t)t->lost;
		if (t->t_last_rx > B.t_last_rx)
			B.t_last_rx = t->t_last_rx;
		if (p->sent && (!B.t_first_send || p->recs[0].sent_ns < B.t_first_send))
			B.t_first_send = p->recs[0].sent_ns;
		if (st_get(t) == T_READY || st_get(t) == T_DONE)
			B.ready++;
		if (t->error[0])
			error_once("%s", t->error);
	}
}

int thread_run(void)
{
	pthread_condattr_t ca;
	uint64_t cap, total;
	int64_t now, deadline;
	int i, mods = B.o.mods, rc = 0;

	memset(&T, 0, sizeof(T));
	T.n = mods + 1;
	if (!(T.tp = calloc((size_t)T.n, sizeof(*T.tp))))
		return EXIT_CONNECT;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_mutex_init(&T.lock, NULL);
	pthread_cond_init(&T.cond, &ca);

	/* Each mod's table holds its whole quota, so it never moves while the
	 * bot's thread reads it: --count, else what --duration can hold. */
	total = B.o.count ? B.o.count :
	        (uint64_t)(B.o.duration * (B.o.sc == SC_TRATE ? B.o.rate : FLOOD_MAX_RATE)) + 1;
	if (SC_IS_RATE(B.o.sc)) {
		B.lat_cap = (size_t)total + 1;
		if (!(B.lat = malloc(B.lat_cap * sizeof(*B.lat))))
			return EXIT_CONNECT;
	}
	for (i = 0; i < T.n; i++) {
		struct tpeer *t = &T.tp[i];
		struct peer *p = B.peers[i];

		t->p = p;
		t->fd = -1;
		t->rng = (uint32_t)(now_ns() ^ ((uint64_t)i << 20)) | 1;
		pthread_mutex_init(&t->wlock, NULL);
		pthread_mutex_init(&t->lock, NULL);
		pthread_cond_init(&t->acked, &ca);
		if (!(t->out = malloc(message_max())))
			return EXIT_CONNECT;
		if (p->role == ROLE_BOT)
			continue;
		cap = total / (uint64_t)mods + 1;
		if (B.o.count)
			cap = B.o.count / (uint64_t)mods + (p->idx < B.o.count % (uint64_t)mods ? 1 : 0);
		p->quota = cap;
		p->rec_cap = cap ? cap : 1;
		/* calloc: pages of the table no message reaches are never touched */
		if (!(p->recs = calloc(p->rec_cap, sizeof(*p->recs))))
			return EXIT_CONNECT;
	}
	pthread_condattr_destroy(&ca);

	/* the bot first, so the mods' messages find it */
	deadline = B.t_start + SETUP_NS;
	if (pthread_create(&T.tp[mods].reader, NULL, tp_bot_main, &T.tp[mods]) != 0) {
		error_once("cannot start a thread");
		goto setup_failed;
	}
	T.tp[mods].has_reader = 1;
	if (await_ready(1, deadline) < 0)
		goto setup_failed;
	for (i = 0; i < mods; i++) {
		if (pthread_create(&T.tp[i].sender, NULL, tp_sender_main, &T.tp[i]) != 0) {
			error_once("cannot start a thread");
			goto setup_failed;
		}
		T.tp[i].has_sender = 1;
	}
	if (await_ready(mods + 1, deadline) < 0)
		goto setup_failed;
	note("all %d peers up; sending", mods + 1);

	usage_begin();
	pthread_mutex_lock(&T.lock);
	T.t_run = B.t_run = now_ns();
	T.t_send_end = B.t_send_end = T.t_run + (int64_t)(B.o.duration * 1e9);
	T.t_drain_end = T.t_send_end + (int64_t)(B.o.drain * 1e9);
	T.go = 1;
	pthread_cond_broadcast(&T.cond);
	pthread_mutex_unlock(&T.lock);

	/* until every ack and delivery is in, the drain is over, or a peer was lost */
	for (;;) {
		struct timespec ms = { 0, 1000000L };
		int lost = 0;

		nanosleep(&ms, NULL);
		now = now_ns();
		for (i = 0; i < T.n; i++)
			lost |= __atomic_load_n(&T.tp[i].failed, __ATOMIC_ACQUIRE);
		if (stop_requested()) {
			error_once("stopped by signal %d", stop_requested());
			break;
		}
		if (lost || now > T.t_drain_end)
			break;
		if (__atomic_load_n(&T.senders_done, __ATOMIC_ACQUIRE) == mods) {
			for (total = 0, i = 0; i < mods; i++)
				total += __atomic_load_n(&B.peers[i]->sent, __ATOMIC_ACQUIRE);
			if (__atomic_load_n(&T.tp[mods].delivered, __ATOMIC_ACQUIRE) >= total)
				break;
		}
	}
	usage_end();
	note("sending done; closing");

	/* close: ours, then the gateway's echo ends each reader (5 s at most) */
	for (i = 0; i < T.n; i++)
		if (!__atomic_load_n(&T.tp[i].failed, __ATOMIC_ACQUIRE) && T.tp[i].fd >= 0 &&
		    tp_send_ctl(&T.tp[i], WSC_OP_CLOSE, NULL, 0, 1000) < 0)
			tp_fail(&T.tp[i], "cannot send the close: %s", strerror(errno));
	deadline = now_ns() + PEER_TIMEOUT_NS;
	for (;;) {
		struct timespec ms = { 0, 5000000L };
		int open = 0;

		for (i = 0; i < T.n; i++)
			open += T.tp[i].has_reader && !__atomic_load_n(&T.tp[i].ended, __ATOMIC_ACQUIRE);
		if (!open || now_ns() > deadline)
			break;
		nanosleep(&ms, NULL);
	}
	goto join;

setup_failed:
	rc = EXIT_CONNECT;
join:
	__atomic_store_n(&T.abort, 1, __ATOMIC_RELEASE);
	pthread_mutex_lock(&T.lock);
	pthread_cond_broadcast(&T.cond);
	pthread_mutex_unlock(&T.lock);
	for (i = 0; i < T.n; i++) {
		struct tpeer *t = &T.tp[i];

		pthread_mutex_lock(&t->lock);
		pthread_cond_broadcast(&t->acked);
		pthread_mutex_unlock(&t->lock);
		if (t->has_sender)
			pthread_join(t->sender, NULL);
		if (t->has_reader)   /* a mod's is known once its sender is joined */
			pthread_join(t->reader, NULL);
	}
	for (i = 0; i < T.n; i++)
		if (st_get(&T.tp[i]) == T_READY && __atomic_load_n(&T.tp[i].closing, __ATOMIC_ACQUIRE))
			tp_error(&T.tp[i], "no close frame from the gateway within %lld s",
			         PEER_TIMEOUT_NS / NS_PER_S);
	collect();
	if (__atomic_load_n(&T.auth_refused, __ATOMIC_ACQUIRE)) {
		fprintf(stderr, "homestead-bench: the key was refused (HTTP 401/403)\n");
		rc = EXIT_CONNECT;
	} else if (rc == EXIT_CONNECT) {
		fprintf(stderr, "homestead-bench: set-up failed: %d of %d peers up\n", B.ready, T.n);
	} else {
		rc = report_traffic();
	}
	for (i = 0; i < T.n; i++) {
		pthread_mutex_destroy(&T.tp[i].wlock);
		pthread_mutex_destroy(&T.tp[i].lock);
		pthread_cond_destroy(&T.tp[i].acked);
		free(T.tp[i].out);
	}
	pthread_mutex_destroy(&T.lock);
	pthread_cond_destroy(&T.cond);
	free(T.tp);
	return rc;
}
